"""Event-time windows: when a window closes is decided by event time, never the wall clock."""

from __future__ import annotations

import math


class WindowClock:
    """Tumbling event-time windows of ``size_s`` seconds, aligned to the Unix epoch.

    :meth:`advance` takes an event's time and returns the ends of the windows that time has
    closed. Late events (before the open window) close nothing. A long silence closes the
    window it interrupted and jumps, rather than emitting every empty window in between.

    >>> clock = WindowClock(60)
    >>> clock.advance(30.0), clock.advance(59.0), clock.advance(61.0)
    ([], [], [60.0])
    >>> clock.advance(1000.0)
    [120.0]
    >>> clock.open_end
    1020.0
    """

    def __init__(self, size_s: float) -> None:
        if size_s <= 0:
            raise ValueError("window size must be positive")
        self.size_s = float(size_s)
        self.open_end: float | None = None

    def _end_for(self, ts: float) -> float:
        return (math.floor(ts / self.size_s) + 1) * self.size_s

    def advance(self, ts: float) -> list[float]:
        """Move event time to ``ts``; return the ends of windows that are now closed."""
        if self.open_end is None:
            self.open_end = self._end_for(ts)
            return []
        if ts < self.open_end:
            return []
        closed = [self.open_end]
        self.open_end = self._end_for(ts)
        if self.open_end - closed[0] == self.size_s * 2:
            closed.append(closed[0] + self.size_s)  # the window right after stayed empty
        return closed

    def close_open(self) -> list[float]:
        """Close the open window (end of a replay, or a long idle spell); return its end."""
        if self.open_end is None:
            return []
        end = self.open_end
        self.open_end = None
        return [end]
