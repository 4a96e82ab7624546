"""The detection pipeline shared by the live service and ``inferwatch replay``.

Events go through the detectors in event time; findings become incidents. Detection and
storing are two steps on purpose: when the store is down, the service retries storing the same
findings (detectors must not see an event twice) and commits nothing until they are stored.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from inferwatch.collectors.event import EventView, InferenceEvent
from inferwatch.detectors import checkpoint
from inferwatch.detectors.base import Detector, Finding, ViewDetector
from inferwatch.detectors.incidents import Incident, IncidentManager
from inferwatch.detectors.store import EventStore
from inferwatch.detectors.windows import WindowClock

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """Events and the findings detectors drew from them, waiting to be stored."""

    events: Sequence[InferenceEvent]
    findings: list[Finding] = field(default_factory=list)


@dataclass
class PipelineStats:
    """Counters a person can read to see the pipeline is alive."""

    events: int = 0
    findings: int = 0
    windows_closed: int = 0
    late_events: int = 0
    """Events older than the start of the window open when they came: windowed detectors count
    them in that window, not in their own (a file replayed out of time order, a partition far
    behind the others)."""
    detector_errors: Counter[str] = field(default_factory=Counter)


class Pipeline:
    """Runs detectors over events by event time and files what they find."""

    def __init__(
        self,
        detectors: Sequence[Detector],
        manager: IncidentManager,
        *,
        window_s: float = 60.0,
        event_store: EventStore | None = None,
        on_incident: Callable[[Incident], None] | None = None,
    ) -> None:
        self.detectors = list(detectors)
        self.manager = manager
        self.clock = WindowClock(window_s)
        self.event_store = event_store
        self.on_incident = on_incident
        self.stats = PipelineStats()
        # The end of the newest window closed and not yet used to auto-resolve quiet incidents.
        self._resolve_at: datetime | None = None
        self._watermark: float | None = None  # the newest event time seen
        # Each detector as built (its options): a checkpoint is restored only into the same.
        self._built = [checkpoint.built_fingerprint(d) for d in self.detectors]
        self._unwritable: set[str] = set()

    def checkpoint(self, max_bytes: int | None = None) -> bytes:
        """What the detectors hold — per-caller state and baselines, the open window, carried
        windows — and the event-time clock, as bytes for :meth:`restore` (:mod:`.checkpoint`).
        A detector whose state cannot be written is left out (logged once): it starts afresh
        after a restore. :class:`~.checkpoint.CheckpointTooLarge` as soon as the whole would take
        about more than ``max_bytes`` (writing stops there)."""
        detectors: dict[str, list[Any]] = {}
        used = 0
        for detector, built in zip(self.detectors, self._built, strict=True):
            budget = None if max_bytes is None else max_bytes - used
            try:
                data = checkpoint.dump(checkpoint.state_of(detector), max_bytes=budget)
                detectors[detector.name] = [built, data]
                used += len(data)
            except checkpoint.NotCheckpointable as exc:
                if detector.name not in self._unwritable:
                    self._unwritable.add(detector.name)
                    log.warning("detector %s is not checkpointed (it starts afresh after a restart): %s",
                                detector.name, exc)
        return checkpoint.dump({"window_s": self.clock.size_s, "open_end": self.clock.open_end,
                                "watermark": self._watermark, "resolve_at": self._resolve_at,
                                "detectors": detectors})

    def restore(self, data: bytes) -> list[str]:
        """Take back what :meth:`checkpoint` wrote (into a pipeline built afresh, before any
        event); returns a note per detector that starts afresh instead, and why. Nothing is
        restored when the window length changed; a detector whose options or ``CHECKPOINT_VERSION``
        changed starts afresh (:func:`.checkpoint.built_fingerprint`)."""
        saved = checkpoint.load(data)
        if saved["window_s"] != self.clock.size_s:
            return [f"the window length changed ({saved['window_s']:g} s in the checkpoint, "
                    f"{self.clock.size_s:g} s now): every detector starts afresh"]
        notes = []
        states = []  # every state read before any is set: a bad checkpoint changes nothing
        for detector, built in zip(self.detectors, self._built, strict=True):
            entry = saved["detectors"].get(detector.name)
            if entry is None:
                notes.append(f"{detector.name}: not in the checkpoint, starts afresh")
            elif entry[0] != built:
                notes.append(f"{detector.name}: its options or the layout of its state changed since the "
                             "checkpoint, starts afresh")
            else:
                states.append((detector, checkpoint.load(entry[1])))
        open_end, watermark, resolve_at = saved["open_end"], saved["watermark"], saved["resolve_at"]
        for detector, state in states:
            checkpoint.restore_into(detector, state)
        self.clock.open_end = open_end
        self._watermark = watermark
        self._resolve_at = resolve_at
        return notes

    def detect(self, events: Sequence[InferenceEvent]) -> Batch:
        """Feed ``events`` to the detectors (closing windows as event time passes)."""
        batch = Batch(events)
        if events:
            newest = max(e.ts for e in events)
            self._watermark = newest if self._watermark is None else max(self._watermark, newest)
        clock = self.clock
        for event in events:
            if clock.open_end is not None and event.ts < clock.open_end - clock.size_s:
                self.stats.late_events += 1
            for end in clock.advance(event.ts):
                batch.findings.extend(self._close(end))
            for detector in self.detectors:
                batch.findings.extend(self._call(detector, detector.observe, event))
        self.stats.events += len(events)
        self.stats.findings += len(batch.findings)
        return batch

    @property
    def takes_views(self) -> bool:
        """Whether every detector takes views (then :meth:`detect_views` may be used): it has
        ``observe_views``, defined by the same class as its ``observe`` or a subclass of it (a
        subclass that changes only ``observe`` must have its ``observe`` called)."""
        return all(_takes_views(d) for d in self.detectors)

    def detect_views(self, events: Sequence[EventView]) -> Batch:
        """:meth:`detect` for pipelines whose detectors all take views (:attr:`takes_views`).

        Each detector gets the events in runs that no window boundary splits, through
        ``observe_views``; windows close between runs exactly where :meth:`detect` closes them.
        The events themselves are not kept in the batch (there must be no event store).
        """
        if self.event_store is not None or not self.takes_views:
            raise TypeError("detect_views needs detectors that all take views and no event store")
        batch = Batch(())
        if not events:
            return batch
        clock = self.clock
        size = clock.size_s
        newest = self._watermark if self._watermark is not None else events[0].ts
        start = 0
        for i, event in enumerate(events):
            ts = event.ts
            if ts > newest:
                newest = ts
            open_end = clock.open_end
            if open_end is not None and ts < open_end:
                if ts < open_end - size:
                    self.stats.late_events += 1
                continue
            ends = clock.advance(ts)
            if ends:
                self._observe_run(events[start:i], batch)
                start = i
                for end in ends:
                    batch.findings.extend(self._close(end))
        self._observe_run(events[start:], batch)
        self._watermark = newest
        self.stats.events += len(events)
        self.stats.findings += len(batch.findings)
        return batch

    def _observe_run(self, run: Sequence[EventView], batch: Batch) -> None:
        if run:
            for detector in self.detectors:
                observe_views = cast(ViewDetector, detector).observe_views  # takes_views checked it
                batch.findings.extend(self._call(detector, observe_views, run))

    @property
    def has_events(self) -> bool:
        """Whether any event has been seen."""
        return self._watermark is not None

    @property
    def watermark(self) -> float | None:
        """The newest event time seen (Unix seconds), if any."""
        return self._watermark

    def resolve_quiet(self, now: datetime) -> list[Incident]:
        """Auto-resolve incidents quiet at event time ``now`` (the service calls this while
        no events arrive); the resolved ones go to ``on_incident`` like any other change."""
        resolved = self.manager.resolve_quiet(now)
        if self.on_incident is not None:
            for incident in resolved:
                self.on_incident(incident)
        return resolved

    def idle(self, now: datetime) -> Batch:
        """No event has come for a while; event time is taken to have reached ``now``. Detectors
        that judge an absence (their optional ``idle(now)``: a service gone silent) are asked."""
        batch = Batch([], self._ask("idle", now))
        self.stats.findings += len(batch.findings)
        return batch

    def refused(self, agent_id: str, seq: int, reason: str) -> None:
        """An event of agent ``agent_id`` numbered ``seq`` was refused as malformed (dead-lettered,
        or a replay's bad line): detectors that account for an agent's events (their optional
        ``refused``) count it as refused rather than lost."""
        self._tell("refused", agent_id, seq, reason)

    def partitions_changed(self, owned: Sequence[int], complete: bool) -> list[str]:
        """Tell detectors (their optional ``partitions_changed``) that this process now reads
        partitions ``owned`` of the event topic, all of them when ``complete``: judging gaps in
        ``agent.seq`` needs every event, and a service's habits were learnt on another share.
        Returns the names of the detectors told."""
        return self._tell("partitions_changed", owned, complete)

    def _tell(self, method: str, *args: Any) -> list[str]:
        """Call the optional ``method`` of every detector that has it; a failure is counted and
        logged, as for ``observe``. Returns the names of those that have it."""
        told = []
        for detector in self.detectors:
            tell = getattr(detector, method, None)
            if tell is not None:
                told.append(detector.name)
                try:
                    tell(*args)
                except Exception:
                    self.stats.detector_errors[detector.name] += 1
                    log.exception("detector=%s failed in %s", detector.name, method)
        return told

    def event_time(self) -> datetime:
        """The newest event time seen (the wall clock before any event): the clock a replay
        gives the incident manager, so that two replays of one file write the same incidents."""
        if self._watermark is None:
            return datetime.now(UTC)
        return datetime.fromtimestamp(self._watermark, UTC)

    def close_open_window(self, *, final: bool = False) -> Batch:
        """Close the open window (end of input, or the live stream went quiet). ``final``: the
        input has ended (a replay, a batch run), so detectors that carry data over windows are
        asked to judge what they hold (their optional ``finish(end)``)."""
        batch = Batch([])
        for end in self.clock.close_open():
            batch.findings.extend(self._close(end))
            if final:
                batch.findings.extend(self._ask("finish", datetime.fromtimestamp(end, UTC)))
        self.stats.findings += len(batch.findings)
        return batch

    def store(self, batch: Batch) -> list[Incident]:
        """Store the batch's events and incidents; may raise ``StoreUnavailable`` (then retry)."""
        if self.event_store is not None and batch.events:
            self.event_store.add_events(batch.events)
        incidents = self.manager.apply(batch.findings)
        if self._resolve_at is not None:
            incidents.extend(self.manager.resolve_quiet(self._resolve_at))
            self._resolve_at = None
        if self.on_incident is not None:
            for incident in incidents:
                self.on_incident(incident)
        return incidents

    def process(self, events: Sequence[InferenceEvent]) -> list[Incident]:
        """:meth:`detect` then :meth:`store`, for callers that need no retry."""
        return self.store(self.detect(events))

    def _close(self, end_ts: float) -> list[Finding]:
        self.stats.windows_closed += 1
        end = datetime.fromtimestamp(end_ts, UTC)
        self._resolve_at = end
        out: list[Finding] = []
        for detector in self.detectors:
            out.extend(self._call(detector, detector.close_window, end))
        return out

    def _ask(self, method: str, arg: object) -> list[Finding]:
        """The findings of every detector's optional ``method(arg)`` (``finish``, ``idle``)."""
        found: list[Finding] = []
        for detector in self.detectors:
            ask = getattr(detector, method, None)
            if ask is not None:
                found.extend(self._call(detector, ask, arg))
        return found

    def _call(self, detector: Detector, method: Callable[..., list[Finding]], arg: object) -> list[Finding]:
        # One faulty detector must not stop the others or the service: count and log it.
        try:
            return list(method(arg))
        except Exception:
            self.stats.detector_errors[detector.name] += 1
            if self.stats.detector_errors[detector.name] <= 5:
                log.exception("detector=%s failed; its result for this input is skipped", detector.name)
            return []


def _takes_views(detector: Detector) -> bool:
    if not isinstance(detector, ViewDetector):
        return False
    for klass in type(detector).__mro__:  # the nearest class defining either method decides
        if "observe_views" in vars(klass):
            return True
        if "observe" in vars(klass):
            return False
    return False
