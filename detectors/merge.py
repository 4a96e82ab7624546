"""Event-time order across partitions, so the verdict does not depend on how records arrive.

Kafka keeps order within a partition only; a consumer reading four partitions may get a
minute of partition 0 before a second of partition 1. Event-time windows fed in arrival order
would then count partition 1's events in the wrong window, and the result would depend on the
number of detector processes and on fetch timing. :class:`PartitionMerger` holds events back
and releases them in event-time order up to the *watermark*: the earliest of the newest event
times seen on each partition that is still delivering. A partition that has delivered nothing
for ``quiet_s`` seconds (wall clock), or that the consumer has read to the end of its log,
stops holding the others back, so live traffic is not delayed by idle partitions.

It also says how far each partition may be committed: up to, not including, the first record
it still holds, so a crash loses nothing that was not yet detected and stored.

>>> m = PartitionMerger(quiet_s=5.0)
>>> m.add(0, 10, 100.0, "a", now=0.0); m.add(0, 11, 160.0, "b", now=0.0)
>>> m.add(1, 7, 130.0, "c", now=0.0)
>>> m.release(now=1.0)        # watermark = min(160, 130): "b" waits for partition 1
['a', 'c']
>>> m.positions()
{0: 11, 1: 8}
>>> m.add(0, 12, 170.0, "d", now=9.0)
>>> m.release(now=9.0)        # partition 1 has been quiet for 9 s: it no longer holds 0 back
['b', 'd']
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Partition(Generic[T]):
    pending: list[tuple[float, int, T]] = field(default_factory=list)  # (ts, offset, item) heap
    newest_ts: float = float("-inf")
    next_offset: int | None = None  # None until it delivers: its committed position is not ours to move
    last_delivery: float = 0.0


class PartitionMerger(Generic[T]):
    """Buffers items per partition and releases them in event-time order up to the watermark."""

    def __init__(self, quiet_s: float) -> None:
        self.quiet_s = quiet_s
        self._parts: dict[int, _Partition[T]] = {}

    def add(self, partition: int, offset: int, ts: float, item: T, now: float) -> None:
        """Hold ``item``, read at ``offset`` of ``partition`` at wall time ``now``; event time ``ts``."""
        part = self._touch(partition, offset, now)
        heapq.heappush(part.pending, (ts, offset, item))
        part.newest_ts = max(part.newest_ts, ts)

    def skip(self, partition: int, offset: int, now: float) -> None:
        """A record that carries no event (it was dead-lettered): only its offset counts."""
        self._touch(partition, offset, now)

    def _touch(self, partition: int, offset: int, now: float) -> _Partition[T]:
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = _Partition()
        part.next_offset = offset + 1 if part.next_offset is None else max(part.next_offset, offset + 1)
        part.last_delivery = now
        return part

    def release(self, now: float, caught_up: Iterable[int] = ()) -> list[T]:
        """Items whose event time is at or before the watermark, oldest first.

        ``caught_up`` names partitions read to the end of their log. When their newest event is
        live (within ``quiet_s`` of the wall clock), whatever they deliver next is newer than
        anything held, so, like quiet ones, they do not hold the others back.
        """
        done = set(caught_up)
        active = [p for n, p in self._parts.items()
                  if now - p.last_delivery < self.quiet_s and not (n in done and self._live(p, now))]
        if not active:
            return self.flush()
        watermark = min(p.newest_ts for p in active)
        return self._take(lambda ts: ts <= watermark)

    def _live(self, part: _Partition[T], now: float) -> bool:
        # Read to the end only means "what comes next is newer" for live traffic, whose event
        # times follow the wall clock. A backfill of old events being written right now can
        # still deliver older times; there only quietness releases the others.
        return part.newest_ts >= now - self.quiet_s

    def flush(self) -> list[T]:
        """Everything still held, oldest first (end of input, or every partition went quiet)."""
        return self._take(lambda ts: True)

    def _take(self, take: Callable[[float], bool]) -> list[T]:
        runs: list[Iterable[tuple[float, int, int, T]]] = []
        for number, part in self._parts.items():
            out: list[tuple[float, int, int, T]] = []
            while part.pending and take(part.pending[0][0]):
                ts, offset, item = heapq.heappop(part.pending)
                out.append((ts, number, offset, item))
            runs.append(out)
        return [item for _, _, _, item in heapq.merge(*runs, key=lambda r: r[:3])]

    def positions(self) -> dict[int, int]:
        """Per partition, the offset to commit: the first record still held, or past the last.

        A partition assigned but not yet delivering is left out: committing anything for it
        would move the group's position (a restart reading a partition already read to its end
        would otherwise commit offset 0 and rewind it).
        """
        return {number: min((o for _, o, _ in part.pending), default=part.next_offset)
                for number, part in self._parts.items() if part.next_offset is not None}

    def assign(self, partitions: Iterable[int], now: float) -> None:
        """The consumer's current partitions: a new one holds the others back until it delivers
        or goes quiet; one no longer assigned is dropped (its records go to the new owner)."""
        assigned = set(partitions)
        for number in [n for n in self._parts if n not in assigned]:
            del self._parts[number]
        for number in assigned - set(self._parts):
            self._parts[number] = _Partition(last_delivery=now)

    def held(self) -> int:
        """How many items are held back."""
        return sum(len(p.pending) for p in self._parts.values())
