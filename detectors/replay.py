"""``inferwatch replay``: the live detectors over a file of events, by event time.

Replay is deterministic: the same file and settings give the same incidents with the same ids,
and an incident's ``first_seen``/``last_seen`` are the event times it was seen at.

When every detector takes views (:class:`~inferwatch.detectors.base.ViewDetector`, e.g. the
drift detector) and no events are kept, lines are read with the fast reader
(:func:`~inferwatch.collectors.fast_event.decode_view`) and go through
:meth:`Pipeline.detect_views <inferwatch.detectors.pipeline.Pipeline.detect_views>`: the same
incidents and the same malformed lines with the same reasons, several times faster.

Events whose ``input`` or ``output`` carry keys the event model does not define (``input.prompt``
for ``input.text``) are counted in :attr:`ReplayResult.unread_keys`. Only lines that leave the fast
reader can carry them, so the count costs the fast path nothing.
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

from inferwatch.collectors.event import (
    MAX_EVENT_BYTES,
    EventView,
    InferenceEvent,
    MalformedEvent,
    decode_event,
    oversized,
    salvage_agent,
)
from inferwatch.collectors.unread_keys import UnreadKeys, unread_keys
from inferwatch.detectors.base import Finding
from inferwatch.detectors.incidents import Incident
from inferwatch.detectors.pipeline import Pipeline
from inferwatch.detectors.sources import UNREADABLE, Source, open_source, stored_size
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
    return late_in_files([path], window_s)


def late_in_files(paths: Sequence[Path], window_s: float) -> tuple[int, int]:
    """:func:`late_in_file` over several files read one after the other as one stream (each
    plain or compressed, see :mod:`.sources`; a compressed file that ends early counts up to there)."""
    heads: dict[bytes, float] = {}
    timed = late = 0
    newest = -math.inf
    for path in paths:
        with open_source(path) as source:
            readline = source.stream.readline
            while True:
                try:
                    line = readline(MAX_EVENT_BYTES + 1)
                except UNREADABLE:
                    break
                if not line:
                    break
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
    """``(line number, reason)``; with several files the numbers run on across them (``files``)."""
    files: list[tuple[str, int]] = field(default_factory=list)
    """Each file read, with the number of lines read before it: see :meth:`where`."""
    late: int = 0
    """Events older than the window open when they were read (the file is not in time order):
    windowed detectors counted them in that window, not in their own."""
    untouched: int = 0
    """Incidents already in the store that no finding of this replay opened, added to or matched
    (not listed)."""
    unread_keys: UnreadKeys = field(default_factory=UnreadKeys)
    """Events that carried input or output keys no built-in detector reads, and those keys."""
    event_time: datetime | None = None
    """The newest event time of the events replayed (:attr:`events`), their findings stored."""

    def where(self, number: int) -> tuple[str, int]:
        """The file a line number of :attr:`malformed` is in, and its number in that file."""
        name, before = next(((name, before) for name, before in reversed(self.files) if before < number),
                            ("", 0))
        return name, number - before


def replay_file(
    path: Path,
    pipeline: Pipeline,
    store: IncidentStore,
    *,
    progress: ProgressFn | None = None,
) -> ReplayResult:
    """:func:`replay_files` of one file."""
    return replay_files([path], pipeline, store, progress=progress)


def replay_files(
    paths: Sequence[Path],
    pipeline: Pipeline,
    store: IncidentStore,
    *,
    progress: ProgressFn | None = None,
) -> ReplayResult:
    """Replay JSONL files of events (one per line; ``-`` is standard input; gzip, bzip2 and xz
    files are read as they are) through ``pipeline``, one after the other as one stream; the result
    lists the incidents its findings opened or added to (others already in ``store`` are only
    counted).

    Incidents' ``updated_at`` is event time (the newest event read), so a replay is
    deterministic. Malformed lines are reported in the result with their line numbers and skipped;
    a compressed file that ends early or is corrupt is read up to there and reported the same way.
    ``progress(bytes_read, total_bytes)`` (bytes as stored) is called every batch when given.
    """
    result = ReplayResult(incidents=[])
    before = {i.id: _state(i) for i in store.list_incidents(IncidentQuery(limit=1_000_000))}
    seen = _FindingTimes()
    # A replay is history: an incident "changed" when its events happened, not when it ran.
    pipeline.manager.clock = pipeline.event_time
    def decode_noting(line: bytes) -> InferenceEvent:
        event = decode_event(line)
        if event.model_extra or event.input.model_extra or event.output.model_extra:
            result.unread_keys.add(unread_keys(event), event)
        return event

    decode = _fast_reader(decode_noting) if pipeline.takes_views and pipeline.event_store is None else None
    views = decode is not None
    # What exists now (modules, models, references) lives through the replay: leave it out of
    # the garbage collector's full passes, which otherwise rescan it every few thousand events
    # (about 5 % of a replay's time, half of sealing a window's sample). Not when the process
    # froze objects itself (e.g. before forking): unfreezing at the end would undo that.
    froze = gc.get_freeze_count() == 0
    if froze:
        gc.freeze()
    late_before = pipeline.stats.late_events
    reading = _Reading(paths, result)
    try:
        for batch in _batches(reading.lines(), result, decode or decode_noting, pipeline.refused):
            detected = pipeline.detect_views(batch) if views else pipeline.detect(batch)
            seen.note(detected.findings)
            pipeline.store(detected)
            result.events += len(batch)
            result.event_time = pipeline.event_time()
            if progress is not None:
                progress(*reading.progress())
        last = pipeline.close_open_window(final=True)
        seen.note(last.findings)
        pipeline.store(last)
        result.late = pipeline.stats.late_events - late_before
    except KeyboardInterrupt:
        raise ReplayInterrupted(result) from None
    finally:
        reading.close()
        if froze:
            gc.unfreeze()
    held = store.list_incidents(IncidentQuery(limit=1_000_000))
    changed = [i for i in held if before.get(i.id) != _state(i) or seen.within(i)]
    result.untouched = len(held) - len(changed)
    result.incidents = sorted(changed, key=lambda i: (i.first_seen, i.id))
    return result


class ReplayInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`replay_files`: what was replayed, and stored, before it (``result``:
    its :attr:`~ReplayResult.events` and :attr:`~ReplayResult.event_time`; incidents not listed).
    A ``KeyboardInterrupt``, so that whatever stops on one stops on it."""

    def __init__(self, result: ReplayResult) -> None:
        super().__init__()
        self.result = result


@dataclass(frozen=True, slots=True)
class _FileStart:
    """Where the next file's lines begin (its line numbers go on from the last file's)."""

    name: str


class _Reading:
    """The lines of several files in turn, and how far in they are."""

    def __init__(self, paths: Sequence[Path], result: ReplayResult) -> None:
        self.paths, self.result = list(paths), result
        self.sizes = [stored_size(path) for path in self.paths]
        self.total = sum(self.sizes)
        self.done = 0  # stored bytes of the files already read
        self.current: Source | None = None

    def lines(self) -> Iterator[bytes | int | str | _FileStart]:
        """Each file's lines (an ``int``: a line too long, see :func:`_lines`), each file's
        preceded by a :class:`_FileStart`; a file that ends early or is corrupt gives a ``str``,
        the reason, after its last whole line."""
        for path, size in zip(self.paths, self.sizes, strict=True):
            self.current = source = open_source(path)
            try:
                yield _FileStart(str(path))
                yield from _lines(source.stream, MAX_EVENT_BYTES + 2, source.compression)
            finally:
                self.current = None
                source.close()
                self.done += size

    def progress(self) -> tuple[int, int]:
        position = self.current.position() if self.current is not None else 0
        return self.done + position, self.total

    def close(self) -> None:
        if self.current is not None:
            self.current.close()


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


def _fast_reader(slow: Callable[[bytes], InferenceEvent]) -> Callable[[bytes], EventView] | None:
    """The fast reader (:func:`~inferwatch.collectors.fast_event.view_reader`) handing the lines it
    does not take to ``slow``, or ``None`` without msgspec (it comes with the ``detector`` extra; a
    light install replays on the per-event path)."""
    try:
        from inferwatch.collectors.fast_event import view_reader
    except ImportError:
        return None
    return view_reader(slow)


def _lines(fh: IO[bytes], limit: int, compression: str | None = None) -> Iterator[bytes | int | str]:
    """The file's lines; a line longer than ``limit`` bytes is read past in pieces and given as
    its length instead (an ``int``), so one huge line never sits in memory whole. A compressed
    file that ends early or is corrupt ends with the reason (a ``str``)."""
    readline = fh.readline
    try:
        while line := readline(limit):
            if len(line) < limit or line.endswith(b"\n"):
                yield line
                continue
            size = len(line)
            while (piece := readline(limit)) and not piece.endswith(b"\n"):
                size += len(piece)
            yield size + len(piece)
    except UNREADABLE as exc:
        if compression is None:
            raise
        yield (f"the {compression} data ends early or is corrupt here ({type(exc).__name__}: {exc}); "
               "the lines before it were read")


def _batches(lines: Iterator[bytes | int | str | _FileStart], result: ReplayResult,
             decode: Callable[[bytes], Any],
             refused: Callable[[str, int, str], None] | None = None) -> Iterator[list[Any]]:
    batch: list[Any] = []
    number = 0
    for line in lines:
        if line.__class__ is not bytes:  # rare: a file begins, a line too long, a cut-off file
            if isinstance(line, _FileStart):
                result.files.append((line.name, number))
                continue
            number += 1
            # an int: the reason decode_event gives, without holding the line
            result.malformed.append((number, oversized(line) if isinstance(line, int) else str(line)))
            continue
        number += 1
        if not line or line.isspace():
            continue
        try:
            batch.append(decode(line))
        except MalformedEvent as exc:
            result.malformed.append((number, exc.reason))
            if refused is not None:
                salvaged = salvage_agent(line)
                if salvaged is not None:
                    refused(*salvaged, exc.reason)
        if len(batch) >= _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
