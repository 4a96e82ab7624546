"""Replay's fast path (fast reader + ``observe_views``) gives exactly what the per-event path gives.

The same JSONL file — shifts that open incidents, several models, text and outputs, late events,
a long silence, duplicate ids, blank and malformed lines, lines only pydantic reads (unknown
fields, a status written as "200") — is replayed twice through the drift detector: once as
shipped (every detector takes views, so replay uses the fast path) and once wrapped so that it
does not (the per-event path). Everything must match: the malformed lines and their reasons,
the incidents, and every window summary the detector built.
"""

from __future__ import annotations

import json
import random
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from inferwatch.collectors.event import EventOutput, InferenceEvent, encode_event
from inferwatch.detectors import replay
from inferwatch.detectors.base import Finding, ViewDetector
from inferwatch.detectors.drift.detector import DriftDetector
from inferwatch.detectors.drift.sketch import WindowSummary
from inferwatch.detectors.incidents import IncidentManager
from inferwatch.detectors.pipeline import Pipeline
from inferwatch.detectors.replay import ReplayResult, replay_file
from inferwatch.detectors.sqlite_store import SQLiteStore
from inferwatch.testing import make_event

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
PROMPTS = ["what is the weather in {}", "translate {} into French", "summarise the report on {}",
           "Quelle heure est-il à {} ?", "¿Dónde está {}?", "東京の{}について教えて"]


class PerEvent:
    """The drift detector without ``observe_views``: the pipeline feeds it one event at a time."""

    name = "drift"

    def __init__(self, inner: DriftDetector) -> None:
        self.inner = inner

    def observe(self, event: InferenceEvent) -> list[Finding]:
        return self.inner.observe(event)

    def close_window(self, end: datetime) -> list[Finding]:
        return self.inner.close_window(end)


def _events(rng: random.Random) -> list[bytes]:
    lines: list[bytes] = []
    ts = T0
    for i in range(9_000):
        ts += rng.expovariate(1 / 0.3)
        if i == 6_000:
            ts += 3_600.0  # a long silence: the window it interrupted closes, the clock jumps
        late = i % 97 == 5
        shifted = i > 4_500
        model = rng.choice(["tabular", "tabular", "chat", "scorer", f"rare-{i % 7}"])
        when = ts - 200.0 if late else ts
        kwargs: dict[str, Any] = {"id": f"e{i}" if i % 211 else "dup", "model": model,
                                  "duration_ms": rng.lognormvariate(3.0 + (0.8 if shifted else 0.0), 0.3)}
        if i % 13 == 0:
            kwargs["trace_id"] = f"{i:032x}"
        if model == "tabular" or model.startswith("rare"):
            features: dict[str, Any] = {
                "x": rng.gauss(2.0 if shifted else 0.0, 1.0), "n": rng.randint(0, 9),
                "seg": rng.choice("abc" if not shifted else "abcd"), "flag": rng.random() < 0.2,
                "gap": None if rng.random() < 0.1 else rng.random()}
            event = make_event(when, features=features, **kwargs)
        elif model == "chat":
            text = rng.choice(PROMPTS).format(rng.choice(["Paris", "Kyoto", "Lima", "the budget"]))
            reply = "I can't help with that." if shifted and rng.random() < 0.3 else "Sure: " + text[::-1]
            event = make_event(when, text=text, output=EventOutput(
                text=reply, tokens=rng.randint(5, 60), finish_reason=rng.choice(["stop", "length"])),
                model_version="v2" if i > 7_000 else "v1", **kwargs)
        else:
            event = make_event(when, features={"x": rng.random()}, output=EventOutput(
                label=rng.choice([0, 1, "spam", True]), score=rng.random()),
                status=rng.choice([200, 200, 503]), **kwargs)
        line = encode_event(event)
        if i % 401 == 0:  # an unknown field: only the pydantic reader keeps it
            line = line[:-1] + b',"future_field":{"a":1}}'
        if i % 503 == 0:  # a status as a string: pydantic's lax mode reads it, msgspec does not
            line = line.replace(b'"status":200', b'"status":"200"')
        lines.append(line)
        if i % 1_000 == 17:
            lines.append(b"")
            lines.append(b'{"id": "broken", "time": ')
            lines.append(json.dumps({"id": "x", "time": "2026-01-01T00:00:00", "model": "m"}).encode())
            lines.append(json.dumps({"id": "", "time": "2026-01-01T00:00:00Z"}).encode())
    return lines


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("views") / "events.jsonl"
    path.write_bytes(b"\n".join(_events(random.Random(7))) + b"\n")
    return path


def _detector() -> DriftDetector:
    return DriftDetector(reference_events=600, min_events=50, sample_size=300, reference_sample_size=600,
                         max_models=4)


def _replay(path: Path, *, views: bool, publish: bool = False) -> tuple[ReplayResult, list[Any]]:
    inner = _detector()
    published: list[Any] = []
    if publish:
        def keep(end_ts: float, summaries: dict[str, WindowSummary]) -> None:
            published.append((end_ts, {m: s.to_dict() for m, s in sorted(summaries.items())}))
        inner.publish = keep
    detector = inner if views else PerEvent(inner)
    store = SQLiteStore(":memory:")
    pipeline = Pipeline([detector], IncidentManager(store), window_s=60)
    assert pipeline.takes_views is views
    return replay_file(path, pipeline, store), published


def test_the_fast_path_finds_the_same_incidents(events_file: Path) -> None:
    fast, _ = _replay(events_file, views=True)
    slow, _ = _replay(events_file, views=False)
    assert fast.events == slow.events > 8_000
    assert fast.malformed == slow.malformed
    assert len(fast.malformed) == 27  # 9 x (truncated line, time without an offset, empty id)
    assert [i.public_dict() for i in fast.incidents] == [i.public_dict() for i in slow.incidents]
    assert {i.kind for i in fast.incidents} == {"drift"}  # the shift of model "tabular"


def test_the_fast_path_builds_the_same_window_summaries(events_file: Path) -> None:
    _, fast = _replay(events_file, views=True, publish=True)
    _, slow = _replay(events_file, views=False, publish=True)
    assert len(fast) > 40
    assert fast == slow


def test_the_drift_detector_takes_views() -> None:
    assert isinstance(_detector(), ViewDetector)
    assert not isinstance(PerEvent(_detector()), ViewDetector)


def test_without_msgspec_replay_takes_the_per_event_path(events_file: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """msgspec comes with the detector extra; a light install still replays (more slowly)."""
    fast, _ = _replay(events_file, views=True)
    monkeypatch.setitem(sys.modules, "msgspec", None)  # import msgspec -> ImportError
    monkeypatch.delitem(sys.modules, "inferwatch.collectors.fast_event", raising=False)
    decoded: list[str] = []
    real = replay.decode_event

    def counting(line: bytes) -> InferenceEvent:
        decoded.append("x")
        return real(line)

    monkeypatch.setattr(replay, "decode_event", counting)
    slow, _ = _replay(events_file, views=True)
    assert len(decoded) > 8_000  # every line went through pydantic
    assert [i.public_dict() for i in slow.incidents] == [i.public_dict() for i in fast.incidents]
    assert slow.malformed == fast.malformed


def test_a_subclass_that_changes_observe_is_fed_through_observe() -> None:
    class ProdOnly(DriftDetector):
        def observe(self, event: InferenceEvent) -> list[Finding]:
            return super().observe(event) if event.service == "prod" else []

    class ProdOnlyViews(ProdOnly):
        def observe_views(self, events: Any) -> list[Finding]:
            return super().observe_views([e for e in events if e.service == "prod"])

    store = SQLiteStore(":memory:")
    assert not Pipeline([ProdOnly()], IncidentManager(store)).takes_views
    assert Pipeline([ProdOnlyViews()], IncidentManager(store)).takes_views
    assert Pipeline([_detector()], IncidentManager(store)).takes_views


def test_a_detector_failing_on_a_run_is_counted_and_the_others_go_on() -> None:
    class Failing(DriftDetector):
        name = "failing"  # type: ignore[misc]

        def observe_views(self, events: Any) -> list[Finding]:
            raise RuntimeError("bug")

    good = _detector()
    store = SQLiteStore(":memory:")
    pipeline = Pipeline([Failing(), good], IncidentManager(store))
    events = [make_event(T0 + i, features={"x": float(i)}) for i in range(10)]
    pipeline.detect_views(events)
    assert pipeline.stats.detector_errors["failing"] == 1
    assert sum(s.events for s in good._open.values()) == 10
