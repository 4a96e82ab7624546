"""``@monitor``: record each call of a plain predict function, sync or async.

::

    @monitor(model="churn")
    def predict(features: dict) -> dict:
        return {"label": "stay", "score": 0.91}

Features come from the arguments: the first mapping argument (``predict({"age": 41})``,
or ``**kwargs``), else a DataFrame-like (``to_dict(orient="records")``), a 2-D array or a list
of rows (a batch, one event per row), else the scalar arguments by parameter name
(``predict(age=41, plan="pro")``); string values follow the capture mode like any feature
(under ``none``, a free-text argument such as ``prompt: str`` is shipped as ``[TEXT]``).
The output comes from the return value: a number with a fraction (a regression, a probability)
is the score, another scalar the label, a mapping gives ``label``/``score``, class
probabilities give the top class; a batch's return value is matched to its rows by position.
Rows given by position (a NumPy array) have features ``"0"``, ``"1"``... unless
``feature_names`` names them.

An exception is recorded (status 500, ``error`` = its type name) and re-raised unchanged; a
successful call has status 200. Failures inside inferwatch are swallowed and counted. Inside
the function, :func:`~inferwatch.agent.set_principal` and the rest of
:mod:`inferwatch.agent.context` name the caller, the model and extra attributes of the call; a
call made inside ``with context(...)`` takes that block's values.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast, overload

from inferwatch.agent.content import CallContent, mapping_features
from inferwatch.agent.core import Agent, AgentLookup, Call
from inferwatch.agent.tabular import FeatureRow, pair_rows, prediction, row_features
from inferwatch.collectors.event import EventOutput
from inferwatch.collectors.settings import CaptureMode

P = ParamSpec("P")
R = TypeVar("R")
_SKIPPED_PARAMETERS = frozenset({"self", "cls"})


@overload
def monitor(func: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def monitor(
    *, model: str | None = None, operation: str = "predict", agent: Agent | None = None,
    feature_names: Sequence[str] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def monitor(
    func: Callable[P, R] | None = None,
    /,
    *,
    model: str | None = None,
    operation: str = "predict",
    agent: Agent | None = None,
    feature_names: Sequence[str] | None = None,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Record every call of the decorated function as inference events.

    Use as ``@monitor`` or ``@monitor(model=..., operation=..., agent=...)``; ``agent``
    defaults to :func:`~inferwatch.agent.get_agent` at call time. ``feature_names`` names the
    columns of rows given by position (a NumPy array, a list of lists), which are otherwise
    named ``"0"``, ``"1"``...: give the names of the training data, so a drift baseline of it
    (``inferwatch baseline set``) matches.
    """
    if isinstance(feature_names, str):
        raise TypeError("feature_names must be a sequence of names, not one string")
    names = tuple(str(n) for n in feature_names) if feature_names is not None else None

    def decorate(target: Callable[P, R]) -> Callable[P, R]:
        recorder = _Recorder(target, model=model, operation=operation, agent=agent, feature_names=names)
        if inspect.iscoroutinefunction(target):
            return cast(Callable[P, R], _async_wrapper(cast(Callable[P, Awaitable[Any]], target), recorder))
        return _sync_wrapper(target, recorder)

    return decorate(func) if func is not None else decorate


def _sync_wrapper(func: Callable[P, R], recorder: _Recorder) -> Callable[P, R]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        started = recorder.start()
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            recorder.finish(started, args, kwargs, None, exc)
            raise
        recorder.finish(started, args, kwargs, result, None)
        return result

    return wrapper


def _async_wrapper(func: Callable[P, Awaitable[Any]], recorder: _Recorder) -> Callable[P, Awaitable[Any]]:
    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
        started = recorder.start()
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            recorder.finish(started, args, kwargs, None, exc)
            raise
        recorder.finish(started, args, kwargs, result, None)
        return result

    return wrapper


@dataclass(slots=True)
class _Started:
    agent: Agent
    call: Call | None = None
    token: Any = None


class _Recorder:
    """The inferwatch side of one decorated function; never raises into the caller."""

    def __init__(
        self, func: Callable[..., Any], *, model: str | None, operation: str, agent: Agent | None,
        feature_names: tuple[str, ...] | None = None,
    ) -> None:
        self.feature_names = feature_names
        self.model = model
        self.operation = operation
        self.agent = AgentLookup(agent)
        self.endpoint = f"{func.__module__}.{func.__qualname__}"
        try:
            self.signature: inspect.Signature | None = inspect.signature(func)
        except (TypeError, ValueError):  # some builtins and C extensions have none
            self.signature = None

    def start(self) -> _Started | None:
        agent = self.agent()
        if agent is None:  # no usable agent: run the function unmonitored (said once in the log)
            return None
        started = _Started(agent)
        with agent.guard():
            started.call = agent.begin(operation=self.operation, model=self.model, endpoint=self.endpoint)
            started.token = started.call.attach()
        return started

    def finish(
        self,
        started: _Started | None,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        result: Any,
        failure: BaseException | None,
    ) -> None:
        if started is None:
            return
        agent = started.agent
        if started.token is not None:
            with agent.guard():
                Call.detach(started.token)
        if started.call is None:
            return
        with agent.guard():
            mode = agent.settings.capture
            inputs = self._inputs(args, kwargs, mode)
            outputs = None if failure is not None else _outputs(result, len(inputs or []))
            content = CallContent(rows=pair_rows(inputs, outputs))
            status = 200 if failure is None else (500 if isinstance(failure, Exception) else None)
            error = type(failure).__name__ if failure is not None else None
            # The features are read now (the caller may reuse its arguments); the event is
            # built, and the span ended, on the shipper thread.
            agent.record(started.call, lambda: content, status=status, error=error)

    def _inputs(self, args: Sequence[Any], kwargs: Mapping[str, Any], mode: CaptureMode) -> list[FeatureRow]:
        arguments = self._arguments(args, kwargs)
        for _, value in arguments:
            rows = _rows(value, mode)
            if rows is not None:
                names = self.feature_names
                return rows if names is None else [_named(row, names) for row in rows]
        scalars = mapping_features(dict(arguments), mode)
        return [scalars] if scalars else []

    def _arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[tuple[str, Any]]:
        if self.signature is not None:
            try:
                bound = self.signature.bind_partial(*args, **kwargs)
            except TypeError:
                pass
            else:
                return [(k, v) for k, v in bound.arguments.items() if k not in _SKIPPED_PARAMETERS]
        return [(str(i), v) for i, v in enumerate(args)] + list(kwargs.items())


def _rows(value: Any, mode: CaptureMode) -> list[FeatureRow] | None:
    """Rows if ``value`` is a table-like argument (mapping, DataFrame, 2-D array, list of rows)."""
    if isinstance(value, Mapping):
        return [mapping_features(value, mode)]
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict) and hasattr(value, "columns"):  # a pandas DataFrame, without pandas
        value = to_dict(orient="records")
    elif callable(to_dict) and hasattr(value, "index") and getattr(value, "ndim", 0) == 1:
        return [mapping_features(to_dict(), mode)]  # a pandas Series (a row of iterrows()): by name
    elif callable(getattr(value, "tolist", None)) and getattr(value, "ndim", 0) in (1, 2):
        value = value.tolist()
        if value and not isinstance(value[0], list):
            value = [value]  # a 1-D array is one row of features
    if isinstance(value, list) and value and all(isinstance(r, Mapping | list | tuple) for r in value):
        return [row_features(row, mode) for row in value]
    return None


def _named(row: FeatureRow, names: tuple[str, ...]) -> FeatureRow:
    """A row's positional keys (``"0"``, ``"1"``...) as ``names`` give them; other keys as they are."""
    return {names[int(key)] if key.isdigit() and int(key) < len(names) else key: value
            for key, value in row.items()}


def _outputs(result: Any, rows: int) -> list[EventOutput]:
    if callable(getattr(result, "tolist", None)):
        result = result.tolist()  # NumPy arrays and pandas Series, without importing either
    if isinstance(result, list | tuple) and rows > 1 and len(result) == rows:
        return [_output(item) for item in result]
    if isinstance(result, list | tuple) and len(result) == 1:
        return [_output(result[0])]  # model.predict([row]) answers [label]
    return [_output(result)]


def _output(item: Any) -> EventOutput:
    """A returned value as the output: a number with a fraction (a regression, a probability) is
    the ``score``, which drift compares as a number; anything else as :func:`prediction` reads it
    (a whole number or a string is the ``label``, a category)."""
    if isinstance(item, float) and math.isfinite(item) and not item.is_integer():
        return EventOutput(score=item)
    return prediction(item)
