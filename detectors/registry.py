"""Finding and building detectors through the ``inferwatch.detectors`` entry-point group."""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import TypeAdapter, ValidationError

from inferwatch.collectors.durations import parse_duration
from inferwatch.collectors.settings import shown_value
from inferwatch.detectors.base import Detector

ENTRY_POINT_GROUP = "inferwatch.detectors"


class DetectorConfigError(ValueError):
    """A detector named in the settings is unknown, fails to load, or rejects its options.

    ``problems`` lists each one (``detect.options.<name>...: what is wrong``); the message is the
    problem itself when there is one, else ``invalid detector settings:`` and one line per problem.
    """

    def __init__(self, message: str | None = None, *, problems: Sequence[str] = ()) -> None:
        self.problems = list(problems) or [message or ""]
        if message is None:
            message = (self.problems[0] if len(self.problems) == 1 else
                       "invalid detector settings:\n" + "\n".join(f"  {p}" for p in self.problems))
        super().__init__(message)


def available() -> dict[str, EntryPoint]:
    """Registered detectors by name (this package's and third parties')."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def did_you_mean(unknown: Sequence[str], registered: Sequence[str]) -> str:
    """`` (did you mean drift for drfit?)`` for the unknown names close to a registered one, or ``""``."""
    guesses = {n: difflib.get_close_matches(n, list(registered), n=1, cutoff=0.75) for n in set(unknown)}
    meant = "; ".join(f"did you mean {g[0]} for {n}?" for n, g in sorted(guesses.items()) if g)
    return f" ({meant})" if meant else ""


def build_detectors(
    enabled: Sequence[str] | None = None, options: Mapping[str, Mapping[str, Any]] | None = None
) -> list[Detector]:
    """Instantiate the enabled detectors (all registered ones when ``enabled`` is None).

    Each is built as ``cls(**options[name])``. Every problem is found before any is reported: an
    unknown name, a detector that fails to load, and each bad option of every detector raise one
    :class:`DetectorConfigError` naming each settings key to fix (a detector's own constructor
    names its first complaint).
    """
    registry = available()
    options = options or {}
    names = sorted(registry) if enabled is None else list(enabled)
    if not all(n.strip() for n in names):
        raise DetectorConfigError(f"detect.enabled holds an empty name ({names!r}); "
                                  f"registered: {', '.join(sorted(registry))}")
    problems: list[str] = []
    unknown = [n for n in [*names, *options] if n not in registry]
    if unknown:
        problems.append(
            f"unknown detector(s) {', '.join(sorted(set(unknown)))} in detect.enabled/detect.options"
            + did_you_mean(unknown, list(registry)) + f"; registered: {', '.join(sorted(registry))}"
        )
    detectors: list[Detector] = []
    for name in names:
        if name not in registry:
            continue
        try:
            detectors.append(_build(registry[name], name, dict(options.get(name, {}))))
        except DetectorConfigError as exc:
            problems += exc.problems
    if problems:
        raise DetectorConfigError(problems=problems)
    return detectors


def _build(entry: EntryPoint, name: str, given: dict[str, Any]) -> Detector:
    """One detector from its entry point and options; :class:`DetectorConfigError` naming what is wrong."""
    try:
        cls = entry.load()
    except Exception as exc:  # a broken plug-in must name itself
        raise DetectorConfigError(f"detector {name!r} failed to load: {exc}") from exc
    try:
        detector = cls(**_checked_options(cls, name, given))
    except (TypeError, ValueError) as exc:
        if isinstance(exc, DetectorConfigError):
            raise
        raise DetectorConfigError(f"detect.options.{name}: {exc}") from exc
    if not isinstance(detector, Detector):
        raise DetectorConfigError(f"detector {name!r} lacks observe()/close_window()/name")
    return detector


def _checked_options(cls: type, name: str, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` checked against the parameters of ``cls``'s constructor: each unknown name, and
    each value that is not of its parameter's type, is named as ``detect.options.<detector>.<option>``
    in one :class:`DetectorConfigError`; values are converted as the settings are (``"50"`` for an
    ``int`` is 50). A plug-in whose annotations cannot be resolved is passed ``given`` as is.
    """
    try:
        params = inspect.signature(cls).parameters
        hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except (TypeError, ValueError, NameError):
        return given
    problems: list[str] = []
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        named = ", ".join(sorted(k for k, p in params.items()
                                 if p.kind is not inspect.Parameter.VAR_POSITIONAL))
        for key in given:
            if key in params:
                continue
            close = difflib.get_close_matches(str(key), list(params), n=1, cutoff=0.75)
            meant = f"did you mean {close[0]}? " if close else ""
            problems.append(f"detect.options.{name}.{key}: no such option; {meant}"
                            f"{name} takes {named or 'none'}")
    out = dict(given)
    for key, value in given.items():
        if key not in hints:
            continue
        if key.endswith("_s") and isinstance(value, str):  # seconds, also written 30s, 5m or 1h30m
            try:
                value = parse_duration(value)
            except ValueError as exc:
                problems.append(f"detect.options.{name}.{key}: {exc}")
                continue
        try:
            out[key] = TypeAdapter(hints[key]).validate_python(value)
        except ValidationError as exc:
            problem = exc.errors(include_url=False)[0]["msg"]
            problems.append(f"detect.options.{name}.{key}: {problem}{shown_value(key, value)}")
        except Exception:  # a type pydantic cannot check (a plug-in's own class): left to the detector
            continue
    if problems:
        raise DetectorConfigError(problems=problems)
    return out
