"""Helpers for testing detectors and integrations, for users as much as for this project.

>>> from inferwatch.testing import make_event, run_detector
>>> ev = make_event(ts=0.0, principal="p1", features={"x": 1.0})
>>> ev.principal, ev.input.features
('p1', {'x': 1.0})
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from inferwatch.collectors.event import AgentInfo, EventInput, EventOutput, InferenceEvent, Scalar
from inferwatch.detectors.base import Detector, Finding
from inferwatch.detectors.incidents import Incident, IncidentManager
from inferwatch.detectors.pipeline import Pipeline
from inferwatch.detectors.sqlite_store import SQLiteStore
from inferwatch.detectors.store import IncidentQuery

_seq = itertools.count()


def make_event(
    ts: float = 0.0,
    *,
    principal: str | None = "p_test",
    model: str | None = "model-a",
    service: str = "svc",
    features: Mapping[str, Scalar] | None = None,
    text: str | None = None,
    status: int | None = 200,
    client_ip: str | None = None,
    **fields: Any,
) -> InferenceEvent:
    """An event at Unix time ``ts`` with an id unique within this process (``ev-000000000``,
    ``ev-000000001``, …); other event fields as keywords.

    Two processes number from the same start: when several write to one store (synthetic traffic
    from two scripts), pass ``id=`` with a prefix of each one's own, or the store keeps the first
    event of each id and drops the others as redeliveries, silently.
    """
    n = next(_seq)
    return InferenceEvent(
        id=fields.pop("id", f"ev-{n:09d}"),
        time=datetime.fromtimestamp(ts, UTC),
        service=service,
        model=model,
        principal=principal,
        client_ip=client_ip,
        status=status,
        input=EventInput(features=dict(features) if features else None, text=text,
                         chars=len(text) if text else None),
        output=fields.pop("output", EventOutput()),
        agent=fields.pop("agent", AgentInfo(id="agent-test", seq=n)),
        **fields,
    )


def run_detector(
    detector: Detector, events: Iterable[InferenceEvent], window_s: float = 60.0
) -> list[Finding]:
    """Drive one detector over events by event time, closing windows; return all findings."""
    pipeline = Pipeline([detector], IncidentManager(memory_store()), window_s=window_s)
    findings = pipeline.detect(list(events)).findings
    findings += pipeline.close_open_window(final=True).findings  # the end of the events: end of input
    return findings


def run_pipeline(
    detectors: Iterable[Detector], events: Iterable[InferenceEvent], window_s: float = 60.0
) -> list[Incident]:
    """Drive detectors and the incident manager over events; return the incidents filed."""
    store = memory_store()
    pipeline = Pipeline(list(detectors), IncidentManager(store), window_s=window_s)
    pipeline.process(list(events))
    pipeline.store(pipeline.close_open_window(final=True))
    return store.list_incidents(IncidentQuery(limit=100_000))


def memory_store() -> SQLiteStore:
    """A throw-away incident and event store in memory."""
    return SQLiteStore(":memory:")
