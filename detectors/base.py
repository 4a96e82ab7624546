"""The detector contract: plain objects driven by event time, with no I/O.

A detector receives events through :meth:`Detector.observe` and is told when an event-time
window closes through :meth:`Detector.close_window`; both return :class:`Finding` objects. The
detector service owns consuming, storing and committing, so the same detector runs unchanged
live, in ``inferwatch replay`` and in tests. Third-party detectors register a class under the
``inferwatch.detectors`` entry-point group; it is built with the keyword options found under
``detect.options.<name>`` in the settings.

Example, a detector that flags every 5xx response::

    class ServerErrors:
        name = "server_errors"

        def observe(self, event: InferenceEvent) -> list[Finding]:
            if (event.status or 0) < 500:
                return []
            return [Finding(detector=self.name, kind="operational", severity="low", score=0.5,
                            title="server error", summary=f"status {event.status}",
                            subject=f"model:{event.model}", time=event.time,
                            model=event.model, service=event.service, event_ids=[event.id])]

        def close_window(self, end: datetime) -> list[Finding]:
            return []
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from inferwatch.collectors.event import EventView, InferenceEvent

Kind = Literal["drift", "abuse", "operational", "integrity"]
Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITY_ORDER: dict[str, int] = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
MAX_SAMPLE_IDS = 20


class Finding(BaseModel):
    """What a detector saw, with the evidence a person needs to judge it.

    ``subject`` names what the finding is about, as ``principal:<id>``, ``ip:<addr>`` or
    ``model:<name>``; ``time`` is the event time it refers to (never the wall clock).
    """

    model_config = ConfigDict(frozen=True)

    detector: str
    kind: Kind
    severity: Severity
    score: float = Field(ge=0.0, le=1.0)
    title: str
    summary: str
    subject: str
    time: datetime
    service: str | None = None
    model: str | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)
    event_ids: list[str] = Field(default_factory=list)
    trace_ids: list[str] = Field(default_factory=list)
    escalates: bool = True
    """Whether repeating this finding raises its incident's severity (``abuse`` and ``integrity``
    incidents, see :func:`~inferwatch.detectors.incidents.escalated_severity`). ``False`` for a
    finding that is a condition lasting while it is seen, not an attempt repeated (an address
    many keys use with none refused: a gateway looks like that): its own severity still counts."""


@runtime_checkable
class Detector(Protocol):
    """A plain object that turns events into findings. See the module docstring."""

    name: str

    def observe(self, event: InferenceEvent) -> list[Finding]:
        """Take one event (in roughly event-time order); return findings it completes."""
        ...

    def close_window(self, end: datetime) -> list[Finding]:
        """The event-time window ending at ``end`` is closed; return window findings."""
        ...


@runtime_checkable
class ViewDetector(Detector, Protocol):
    """A detector that can also take events in bulk as :class:`EventView` (optional).

    ``observe_views(events)`` gets a run of events (in order, all inside one event-time window:
    no window closes between them) and must do what :meth:`Detector.observe` on each would.
    When every detector of a pipeline has it, ``inferwatch replay`` decodes lines with the fast
    reader (:mod:`inferwatch.collectors.fast_event`) and skips building :class:`InferenceEvent`
    objects, several times faster (docs/detectors/drift.md, throughput). It must not raise
    for one odd event: an exception skips the rest of the run for this detector (counted as one
    error), where ``observe`` would have skipped only that event. A subclass that overrides
    ``observe`` but not ``observe_views`` is fed through ``observe``.
    """

    def observe_views(self, events: Sequence[EventView]) -> list[Finding]:
        """Take a run of events inside one window; return the findings they complete."""
        ...
