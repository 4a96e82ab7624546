"""``inferwatch replay``: the live detectors over a file of events, by event time.

Replay is deterministic: the same file and settings give the same incidents with the same ids,
and an incident's ``first_seen``/``last_seen`` are the event times it was seen at.

When every detector takes views (:class:`~inferwatch.detectors.base.ViewDetector`, e.g. the
drift detector) and no events are kept, lines are read with the fast reader
(:func:`~inferwatch.collectors.fast_event.decode_view`) and go through
:meth:`Pipeline.detect_views <inferwatch.detectors.pipeline.Pipeline.detect_views>`: the same
incidents and the same malformed lines with the same reasons, several times faster.
"""

from __future__ import annotations

import gc
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from inferwatch.collectors.event import MAX_EVENT_BYTES, EventView, MalformedEvent, decode_event, oversized
from inferwatch.detectors.base import Finding
from inferwatch.detectors.incidents import Incident
from inferwatch.detectors.pipeline import Pipeline
from inferwatch.detectors.store import IncidentQuery, IncidentStore

ProgressFn = Callable[[int, int], None]
_BATCH = 2000
_TIME_FIELD = re.compile(rb'"time"\s*:\s*"([0-9T:.+Z-]{19,40})"')


def late_in_file(path: Path, window_s: float) -> tuple[int, int]:
    """``(lines with a time, those a replay would find late)`` from the lines' ``time`` fields
    alone: late is older than the window already opened by an earlier line, as
    :meth:`Pipeline.detect` counts it. About a microsecond a line, so a replay into a store can
    refuse a file out of time order before it writes anything.
    """
    heads: dict[bytes, float] = {}
    timed = late = 0
    newest = -math.inf
    with path.open("rb") as fh:
        for line in iter(lambda: fh.readline(MAX_EVENT_BYTES + 1), b""):
            found = _TIME_FIELD.search(line)
            if found is None:
                continue
            raw = found.group(1)
            if len(raw) >= 20 and raw.endswith(b"Z"):  # the common form: one parse per second
                head = raw[:19]
                second = heads.get(head)
                if second is None:
                    second = heads[head] = _epoch(head + b"Z")
                ts = second
            else:
                ts = _epoch(raw)
            if math.isnan(ts):
                continue
            window = math.floor(ts / window_s)
            timed += 1
            if window < newest:
                late += 1
            else:
                newest = window
    return timed, late


def _epoch(raw: bytes) -> float:
    try:
        parsed = datetime.fromisoformat(raw.decode("ascii"))
    except ValueError:
        return math.nan
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


@dataclass
class ReplayResult:
    """What a replay found: the incidents, how many events it read, and the bad lines."""

    incidents: list[Incident]
    events: int = 0
    malformed: list[tuple[int, str]] = field(default_factory=list)
    late: int = 0
    """Events older than the window open when they were read (the file is not in time order):
    windowed detectors counted them in that window, not in their own."""
    untouched: int = 0
    """Incidents already in the store that no finding of this replay opened, added to or matched
    (not listed)."""


def replay_file(
    path: Path,
    pipeline: Pipeline,
    store: IncidentStore,
    *,
    progress: ProgressFn | None = None,
) -> ReplayResult:
    """Replay a JSONL file of events (one per line) through ``pipeline``; the result lists the
    incidents its findings opened or added to (others already in ``store`` are only counted).

    Incidents' ``updated_at`` is event time (the newest event read), so a replay is
    deterministic. Malformed lines are reported in the result with their line numbers and skipped.
    ``progress(bytes_read, total_bytes)`` is called every batch when given.
    """
    total = path.stat().st_size
    result = ReplayResult(incidents=[])
    before = {i.id: _state(i) for i in store.list_incidents(IncidentQuery(limit=1_000_000))}
    seen = _FindingTimes()
    # A replay is history: an incident "changed" when its events happened, not when it ran.
    pipeline.manager.clock = pipeline.event_time
    decode = _fast_reader() if pipeline.takes_views and pipeline.event_store is None else None
    views = decode is not None
    # What exists now (modules, models, references) lives through the replay: leave it out of
    # the garbage collector's full passes, which otherwise rescan it every few thousand events
    # (about 5 % of a replay's time, half of sealing a window's sample). Not when the process
    # froze objects itself (e.g. before forking): unfreezing at the end would undo that.
    froze = gc.get_freeze_count() == 0
    if froze:
        gc.freeze()
    late_before = pipeline.stats.late_events
    try:
        with path.open("rb") as fh:
            for batch, done in _batches(fh, result, decode or decode_event):
                detected = pipeline.detect_views(batch) if views else pipeline.detect(batch)
                seen.note(detected.findings)
                pipeline.store(detected)
                result.events += len(batch)
                if progress is not None:
                    progress(done, total)
        last = pipeline.close_open_window(final=True)
        seen.note(last.findings)
        pipeline.store(last)
        result.late = pipeline.stats.late_events - late_before
    finally:
        if froze:
            gc.unfreeze()
    held = store.list_incidents(IncidentQuery(limit=1_000_000))
    changed = [i for i in held if before.get(i.id) != _state(i) or seen.within(i)]
    result.untouched = len(held) - len(changed)
    result.incidents = sorted(changed, key=lambda i: (i.first_seen, i.id))
    return result


def _state(incident: Incident) -> tuple[Any, ...]:
    """What a finding changes in an incident (a replay moving time on may also resolve it)."""
    return (incident.count, incident.last_seen, incident.severity)


class _FindingTimes:
    """When the replay's findings happened, per (detector, subject, model): an incident that holds
    one of them is this file's even when it had it already (the same file replayed again)."""

    def __init__(self) -> None:
        self._times: dict[tuple[str, str, str | None], list[float]] = {}

    def note(self, findings: Sequence[Finding]) -> None:
        for f in findings:
            self._times.setdefault((f.detector, f.subject, f.model), []).append(f.time.timestamp())

    def within(self, incident: Incident) -> bool:
        times = self._times.get((incident.detector, incident.subject, incident.model))
        if not times:
            return False
        low, high = incident.first_seen.timestamp(), incident.last_seen.timestamp()
        return any(low <= t <= high for t in times)


def _fast_reader() -> Callable[[bytes], EventView] | None:
    """:func:`~inferwatch.collectors.fast_event.decode_view`, or ``None`` without msgspec (it
    comes with the ``detector`` extra; a light install replays on the per-event path)."""
    try:
        from inferwatch.collectors.fast_event import decode_view
    except ImportError:
        return None
    return decode_view


def _lines(fh: IO[bytes], limit: int) -> Iterator[bytes | int]:
    """The file's lines; a line longer than ``limit`` bytes is read past in pieces and given as
    its length instead (an ``int``), so one huge line never sits in memory whole."""
    readline = fh.readline
    while line := readline(limit):
        if len(line) < limit or line.endswith(b"\n"):
            yield line
            continue
        size = len(line)
        while (piece := readline(limit)) and not piece.endswith(b"\n"):
            size += len(piece)
        yield size + len(piece)


def _batches(fh: IO[bytes], result: ReplayResult,
             decode: Callable[[bytes], Any]) -> Iterator[tuple[list[Any], int]]:
    batch: list[Any] = []
    done = 0
    for number, line in enumerate(_lines(fh, MAX_EVENT_BYTES + 2), start=1):
        if isinstance(line, int):  # the reason decode_event gives, without holding the line
            done += line
            result.malformed.append((number, oversized(line)))
            continue
        done += len(line)
        if not line or line.isspace():
            continue
        try:
            batch.append(decode(line))
        except MalformedEvent as exc:
            result.malformed.append((number, exc.reason))
        if len(batch) >= _BATCH:
            yield batch, done
            batch = []
    if batch:
        yield batch, done
