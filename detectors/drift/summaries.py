"""Scale-out drift: partial window summaries on a topic keyed by model, merged before judging.

With N detector processes in one consumer group each sees the events of its partitions only.
Per-principal detectors are fine with that (a principal's events share a partition); drift is
per model, and a model's events are spread over every partition. So in scale-out mode each
process does not judge drift itself: when it closes a window it publishes

1. one **partial** per model it saw — the model's :class:`WindowSummary` of that window from
   its partitions — keyed by model (so one judge owns each model), then
2. one **marker** to every partition of the summaries topic: "window W is closed for event
   partitions {p…}" (sent after its partials, on the same ordered producer).

A :class:`SummaryCollector` (in every process, in its own consumer group) reads its share of the
summaries topic. When the markers it has read for window W cover every partition of the events
topic — on every summaries partition it reads: each process sends its marker to all of them —
every partial for W of the models it owns has arrived (they precede the markers in each
partition); it merges them — exactly, see :mod:`.sketch` — and judges them with the same
:class:`DriftJudge` a single process uses, in window order. A window's verdict is therefore the
one a single process would reach, whatever N is. Offsets are committed only up to the oldest
record of a window not yet judged and stored.

A process whose partitions carry no events closes no windows and sends no markers; a window
still incomplete ``max_wait_s`` (wall clock) after its first record is therefore judged with the
partials that did arrive, and the coverage it had is written in the evidence's log line.

A partial that arrives for a window already judged (a redelivery after a crash) is dropped and
counted; a process that restarts re-publishes the windows it had not committed, and the
collector keeps one partial per (window, model, partition set).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from inferwatch.collectors.bus import BusRecord, BusUnavailable
from inferwatch.detectors.base import Finding
from inferwatch.detectors.drift.detector import DriftJudge
from inferwatch.detectors.drift.sketch import WindowSummary
from inferwatch.detectors.state import iso_utc

log = logging.getLogger(__name__)
FORMAT = 1


class SummaryProducer(Protocol):
    def send(self, value: bytes, key: str | None = None) -> None: ...

    def send_to_every_partition(self, value: bytes) -> int: ...

    def flush(self, timeout: float | None = None) -> None: ...


class SummaryConsumer(Protocol):
    def poll(self, max_records: int = 500, timeout: float = 1.0) -> Sequence[BusRecord]: ...

    def commit(self, positions: Mapping[int, int]) -> None: ...


def encode(message: Mapping[str, Any]) -> bytes:
    """A summaries-topic record: zlib-compressed JSON (a 2,000-event sample is ~400 kB as text)."""
    return zlib.compress(json.dumps(message, separators=(",", ":")).encode(), 6)


def decode(value: bytes) -> dict[str, Any]:
    data = json.loads(zlib.decompress(value))
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"not a drift summary record of format {FORMAT}")
    return data


class SummaryPublisher:
    """Installed as ``DriftDetector.publish`` in scale-out mode (see the module docstring)."""

    def __init__(self, producer: SummaryProducer, partitions: Callable[[], set[int]]) -> None:
        self.producer = producer
        self.partitions = partitions
        self.published = 0

    def __call__(self, end_ts: float, summaries: Mapping[str, WindowSummary]) -> None:
        """Publish, retrying while the bus is down: a partial lost would make the verdict wrong."""
        delay = 0.5
        while True:
            try:
                self._publish(end_ts, summaries)
                return
            except BusUnavailable as exc:
                log.warning("drift summaries not published, retrying in %.1fs: %s", delay, exc)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _publish(self, end_ts: float, summaries: Mapping[str, WindowSummary]) -> None:
        covered = sorted(self.partitions())
        for model in sorted(summaries):
            summary = summaries[model]
            summary.partitions = set(covered)
            self.producer.send(encode({"format": FORMAT, "type": "partial", "end": end_ts,
                                       "summary": summary.to_dict()}), key=model)
        self.producer.send_to_every_partition(encode({"format": FORMAT, "type": "marker", "end": end_ts,
                                                      "partitions": covered}))
        # The partials must be on the bus before the events they summarise are committed.
        self.producer.flush()
        self.published += 1


@dataclass
class _Window:
    covered: dict[int, set[int]] = field(default_factory=dict)
    """Per summaries partition, the event partitions whose markers for this window were read there."""
    partials: dict[tuple[str, tuple[int, ...]], WindowSummary] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)
    """Per summaries partition, the first offset holding a record of this window."""
    first_seen: float = 0.0


class SummaryCollector:
    """Reads the summaries topic, merges each window's partials, judges complete windows."""

    def __init__(self, consumer: SummaryConsumer, judge: DriftJudge, event_partitions: int, *,
                 max_wait_s: float = 120.0, wall_clock: Callable[[], float] = time.time) -> None:
        self.consumer = consumer
        self.judge = judge
        self.event_partitions = event_partitions
        self.max_wait_s = max_wait_s
        self.wall_clock = wall_clock
        self.incomplete = 0
        """Windows judged after ``max_wait_s`` without markers for every event partition."""
        self._windows: dict[float, _Window] = {}
        self._judged_through: float | None = None
        self._read: dict[int, int] = {}
        self.late = 0
        self.malformed = 0

    @property
    def waiting(self) -> int:
        """Summaries not judged yet: windows read and waiting for the markers of every event
        partition (for at most ``max_wait_s``), plus records on the summaries topic after the
        group's committed positions (not read yet, by this process or the owner of their
        partition — which may still be joining the group)."""
        pending = len(self._windows)
        lag = getattr(self.consumer, "lag", None)
        if lag is not None:
            with contextlib.suppress(BusUnavailable):  # unknown: judged by what was read
                pending += int(lag())
        return pending

    def poll(self, timeout: float = 0.1) -> list[Finding]:
        """Read what has arrived; findings of the windows that became complete (in window order)."""
        for record in self.consumer.poll(100, timeout):
            self._read[record.partition] = record.offset + 1
            self._take(record)
        findings: list[Finding] = []
        now = self.wall_clock()
        assignment = getattr(self.consumer, "assignment", None)
        owned: set[int] = set(assignment()) if assignment is not None else set()
        ends = sorted(self._windows)
        for i, end in enumerate(ends):
            window = self._windows[end]
            closed = self._closed(window, [self._windows[e] for e in ends[i + 1:]], owned)
            if closed < self.event_partitions:
                if now - window.first_seen < self.max_wait_s:
                    break  # later windows wait for this one: references and change detectors go in order
                self.incomplete += 1
                log.warning("drift window ending %s judged with markers for %d of %d event partitions "
                            "after %.0fs", iso_utc(end), closed, self.event_partitions, self.max_wait_s)
            del self._windows[end]
            merged: dict[str, WindowSummary] = {}
            for (model, _), partial in sorted(window.partials.items()):
                merged[model] = partial if model not in merged else merged[model].merge(partial)
            findings.extend(self.judge.judge(end, merged))
            self._judged_through = end
        return findings

    @staticmethod
    def _closed(window: _Window, later: Sequence[_Window], owned: set[int]) -> int:
        """How many event partitions the window is known closed for on *every* summaries
        partition this member reads (those it owns, or those the window's records came from).

        Per summaries partition, because a model's partials precede each process's marker only on
        the partition they were sent to: a marker read on one partition says nothing of a
        partial still unread on another (a poll can return one partition's records before
        another's), and judging then would leave that model out of the window. Markers of a
        later window read on a partition close this one there too: what came before them was
        read, or committed by the partition's previous owner, who judged its models."""
        parts = owned or set(window.offsets)
        return min((max(len(w.covered.get(p, ())) for w in (window, *later)) for p in parts), default=0)

    def finish(self) -> list[Finding]:
        """End of input (a batch run's end): judge what each model this member owns carries over
        (windows short of ``min_events``), as a single process does at the end of a replay."""
        end = self._judged_through if self._judged_through is not None else self.wall_clock()
        return self.judge.finish(end)

    def commit_positions(self) -> dict[int, int]:
        """Offsets safe to commit once the findings of :meth:`poll` are stored.

        Only for partitions this member owns now (when the consumer says which): after a
        rebalance a partition read here belongs to another member, and committing what was
        read of it here could move that member's position back or past what it stored.
        """
        positions = dict(self._read)
        for window in self._windows.values():
            for partition, offset in window.offsets.items():
                positions[partition] = min(positions.get(partition, offset), offset)
        assignment = getattr(self.consumer, "assignment", None)
        if assignment is not None:
            owned = assignment()
            positions = {p: o for p, o in positions.items() if p in owned}
        return positions

    def commit(self) -> None:
        positions = self.commit_positions()
        if positions:
            self.consumer.commit(positions)

    def _take(self, record: BusRecord) -> None:
        try:
            message = decode(record.value)
            end = float(message["end"])
            if self._judged_through is not None and end <= self._judged_through:
                self.late += 1
                return
            window = self._windows.get(end)
            if window is None:
                window = self._windows[end] = _Window(first_seen=self.wall_clock())
            window.offsets.setdefault(record.partition, record.offset)
            if message["type"] == "marker":
                closed = window.covered.setdefault(record.partition, set())
                closed.update(int(p) for p in message["partitions"])
            else:
                summary = WindowSummary.from_dict(message["summary"])
                window.partials.setdefault((summary.model, tuple(sorted(summary.partitions))), summary)
        except (ValueError, KeyError, TypeError, zlib.error) as exc:
            self.malformed += 1
            log.warning("drift summary record skipped partition=%d offset=%d: %s",
                        record.partition, record.offset, exc)
