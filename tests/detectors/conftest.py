"""Shared pieces for the detector tests: an event factory and a window driver.

Events come from :func:`inferwatch.testing.make_event`, the factory the project ships to users,
so these tests build events the way third-party detector authors will. :func:`drive` closes
tumbling event-time windows the way the detector service does (aligned to the epoch, closed
before the first event past the boundary is observed, and once more at the end).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import pytest

from inferwatch.collectors.event import InferenceEvent
from inferwatch.detectors.base import Detector, Finding
from inferwatch.testing import make_event as _make_event

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a window boundary for any window that divides a day

EventFactory = Callable[..., InferenceEvent]
Driver = Callable[..., list[Finding]]


def at(ts: float) -> datetime:
    """Unix seconds as the aware datetime ``close_window`` takes."""
    return datetime.fromtimestamp(ts, UTC)


def drive(detector: Detector, events: Iterable[InferenceEvent], window_s: float = 60.0) -> list[Finding]:
    """Feed events in order, closing each window as event time crosses its end, and the last one."""
    findings: list[Finding] = []
    open_end: float | None = None
    for event in events:
        end = (math.floor(event.ts / window_s) + 1) * window_s
        if open_end is not None and event.ts >= open_end:
            findings += detector.close_window(at(open_end))
        if open_end is None or event.ts >= open_end:
            open_end = end
        findings += detector.observe(event)
    if open_end is not None:
        findings += detector.close_window(at(open_end))
    return findings


@pytest.fixture
def make_event() -> EventFactory:
    """``make_event(ts, principal=..., model=..., features=..., text=..., client_ip=..., **fields)``."""
    return _make_event


@pytest.fixture
def run() -> Driver:
    """``run(detector, events, window_s=60.0)``: all findings from driving the detector over events."""
    return drive
