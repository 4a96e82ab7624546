"""``@monitor`` on plain predict functions, sync and async."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from inferwatch.agent import monitor
from inferwatch.collectors.event import InferenceEvent

if TYPE_CHECKING:
    from conftest import AgentFactory, ListProducer

    from inferwatch.agent import Agent


class ScoringError(ValueError):
    pass


def shipped(agent: Agent, producer: ListProducer) -> list[InferenceEvent]:
    assert agent.flush(timeout=5.0)
    return producer.events()


def test_sync_dict_argument_gives_features_and_dict_result_gives_label(
    make_agent: AgentFactory, list_producer: ListProducer, spans: InMemorySpanExporter
) -> None:
    agent = make_agent(list_producer)

    @monitor(model="churn", agent=agent)
    def predict(features: dict[str, Any]) -> dict[str, Any]:
        return {"label": "stay", "score": 0.93}

    assert predict({"age": 41, "plan": "pro"}) == {"label": "stay", "score": 0.93}
    (event,) = shipped(agent, list_producer)
    assert event.input.features == {"age": 41, "plan": "pro"}
    assert (event.output.label, event.output.score) == ("stay", 0.93)
    assert (event.status, event.operation, event.model) == (200, "predict", "churn")
    assert event.endpoint is not None
    assert event.endpoint.endswith("predict")
    (span,) = spans.get_finished_spans()
    assert (span.name, span.kind) == ("predict churn", SpanKind.INTERNAL)
    assert event.trace_id == format(span.context.trace_id, "032x")


def test_scalar_keyword_arguments_give_features_and_scalar_result_the_label(
    make_agent: AgentFactory, list_producer: ListProducer
) -> None:
    agent = make_agent(list_producer)

    @monitor(agent=agent, operation="classify")
    def classify(age: int, plan: str, *, active: bool = True) -> int:
        return 1

    assert classify(41, plan="pro", active=False) == 1
    (event,) = shipped(agent, list_producer)
    assert event.input.features == {"age": 41, "plan": "pro", "active": False}
    assert (event.output.label, event.operation) == (1, "classify")


def test_list_of_rows_is_a_batch(make_agent: AgentFactory, list_producer: ListProducer) -> None:
    agent = make_agent(list_producer)

    @monitor(agent=agent)
    def predict_many(rows: list[dict[str, int]]) -> list[str]:
        return ["a" if r["x"] else "b" for r in rows]

    predict_many([{"x": 1}, {"x": 0}])
    events = shipped(agent, list_producer)
    assert [(e.input.features, e.output.label) for e in events] == [({"x": 1}, "a"), ({"x": 0}, "b")]
    assert events[0].trace_id == events[1].trace_id


def test_async_function(make_agent: AgentFactory, list_producer: ListProducer) -> None:
    agent = make_agent(list_producer)

    @monitor(model="scorer", agent=agent)
    async def score(features: dict[str, float]) -> float:
        await asyncio.sleep(0)
        return 0.25

    assert asyncio.run(score({"x": 2.0})) == 0.25
    (event,) = shipped(agent, list_producer)
    # a number with a fraction is the score (drift compares it as a number), not a label
    assert (event.input.features, event.output.score, event.output.label, event.status) == \
        ({"x": 2.0}, 0.25, None, 200)


def test_exception_is_recorded_and_reraised_unchanged(
    make_agent: AgentFactory, list_producer: ListProducer
) -> None:
    agent = make_agent(list_producer)
    raised = ScoringError("bad row")

    @monitor(agent=agent)
    def predict(features: dict[str, int]) -> int:
        raise raised

    with pytest.raises(ScoringError) as caught:
        predict({"x": 1})
    assert caught.value is raised
    (event,) = shipped(agent, list_producer)
    assert (event.status, event.error, event.input.features) == (500, "ScoringError", {"x": 1})


def test_async_exception_is_reraised_unchanged(make_agent: AgentFactory, list_producer: ListProducer) -> None:
    agent = make_agent(list_producer)

    @monitor(agent=agent)
    async def predict(features: dict[str, int]) -> int:
        raise ScoringError("async bad row")

    with pytest.raises(ScoringError, match="async bad row"):
        asyncio.run(predict({"x": 1}))
    (event,) = shipped(agent, list_producer)
    assert (event.status, event.error) == (500, "ScoringError")


def test_decorated_function_keeps_its_name_and_docs(make_agent: AgentFactory) -> None:
    @monitor(agent=make_agent())
    def predict(features: dict[str, int]) -> int:
        """Predict things."""
        return 0

    assert (predict.__name__, predict.__doc__) == ("predict", "Predict things.")



def test_a_mis_configured_agent_runs_the_function_unmonitored_says_so_once_and_is_not_rebuilt(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, make_agent: AgentFactory,
    list_producer: ListProducer,
) -> None:
    from inferwatch.agent import core

    monkeypatch.setattr(core, "_agent", None)
    monkeypatch.setenv("INFERWATCH_AGENT__CAPTURE", "everything")  # not a capture mode
    builds = []
    real = core.configure
    monkeypatch.setattr(core, "configure", lambda *a, **k: builds.append(1) or real(*a, **k))

    @monitor(model="m")
    def predict(x: float) -> float:
        return x * 2

    with caplog.at_level("WARNING", logger="inferwatch.agent"):
        assert [predict(i) for i in range(5)] == [0, 2, 4, 6, 8]
    assert len(builds) == 1  # tried once, not on every call
    warnings = [r.getMessage() for r in caplog.records if "event=agent_unavailable" in r.getMessage()]
    assert len(warnings) == 1
    assert "INFERWATCH_AGENT__CAPTURE" in warnings[0]
    # An agent configured afterwards (configure() sets the process-wide one) is picked up.
    agent = make_agent(list_producer)
    monkeypatch.setattr(core, "_agent", agent)
    assert predict(21) == 42
    assert [e.model for e in shipped(agent, list_producer)] == ["m"]


class _Row:
    """What ``@monitor`` reads of a pandas Series (a row of ``DataFrame.iterrows()``): pandas is
    not a dependency, so its shape stands in, as the decorator never imports pandas either."""

    ndim = 1

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values
        self.index = list(values)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def tolist(self) -> list[Any]:
        return list(self._values.values())


def test_a_row_of_a_data_frame_keeps_its_column_names(make_agent: AgentFactory,
                                                      list_producer: ListProducer) -> None:
    agent = make_agent(list_producer)

    @monitor(agent=agent)
    def predict(row: Any) -> str:
        return "stay"

    predict(_Row({"amount": 12.5, "country": "GB"}))
    (event,) = shipped(agent, list_producer)
    assert event.input.features == {"amount": 12.5, "country": "GB"}  # not {"0": 12.5, "1": "GB"}


class _Array:
    """What @monitor reads of a NumPy array (tolist, ndim), without importing NumPy."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows, self.ndim = rows, 2 if rows and isinstance(rows[0], list) else 1

    def tolist(self) -> list[Any]:
        return self.rows


def test_positional_rows_take_the_feature_names_given_and_a_fraction_is_the_score(
        make_agent: AgentFactory, list_producer: ListProducer) -> None:
    # An ML engineer's walk-through: a NumPy array gave features "0".."5", which no baseline CSV
    # of named columns matches, and a regressor's float was recorded as a label (a category).
    agent = make_agent(list_producer)

    @monitor(agent=agent, feature_names=["period", "nswprice", "nswdemand"])
    def predict(x: Any) -> Any:
        return _Array([0.73, 1.0, 2.0])

    predict(_Array([[0.1, 0.05, 0.4], [0.2, 0.06, 0.5], [0.3, 0.07, 0.6, 9.0]]))
    events = shipped(agent, list_producer)
    assert [e.input.features for e in events] == [
        {"period": 0.1, "nswprice": 0.05, "nswdemand": 0.4},
        {"period": 0.2, "nswprice": 0.06, "nswdemand": 0.5},
        {"period": 0.3, "nswprice": 0.07, "nswdemand": 0.6, "3": 9.0},  # past the names: its index
    ]
    assert [(e.output.label, e.output.score) for e in events] == [(None, 0.73), (1.0, None), (2.0, None)]
    with pytest.raises(TypeError, match="feature_names must be a sequence of names"):
        monitor(feature_names="period")
