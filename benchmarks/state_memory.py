"""Memory held by the detectors' per-caller state: one million distinct callers within 1 GB?

Every registered detector is built with its per-key bound raised above the number of callers
(``max_principals``, ``max_keys``, ... — the defaults bound state at 100,000 keys, which is the
point of the bound), then ``--callers`` distinct principals each send a short chat request and a
tabular request, ``--per-window`` of them in each window, and every window is closed, so every
caller has a learnt baseline. What stays is the long-lived state an attacker can make the
service hold by rotating keys.

Two measurements, side by side in one run:

* per detector, on ``--sample`` callers all in one window, with ``tracemalloc``: bytes per caller
  still held after the window closed, and at the peak while the window was open (this includes
  a batch of 5,000 events, about 725 bytes per caller at 20,000 callers and less with more);
* all detectors together on ``--callers`` callers: the growth of the process's resident memory
  (RSS), which is what the 1 GB target (read as 10^9 bytes) is about.

    python benchmarks/state_memory.py                       # 1,000,000 callers (a few minutes)
    python benchmarks/state_memory.py --callers 200000      # quicker
"""

from __future__ import annotations

import argparse
import gc
import inspect
import os
import sys
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from inferwatch.collectors.event import EventInput, EventOutput, InferenceEvent
from inferwatch.detectors.base import Detector
from inferwatch.detectors.incidents import IncidentManager
from inferwatch.detectors.pipeline import Pipeline
from inferwatch.detectors.registry import available, build_detectors
from inferwatch.testing import memory_store

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC).timestamp()
WINDOW_S = 60.0
BOUND_OPTIONS = ("max_principals", "max_keys", "max_callers", "max_subjects")
PROMPTS = ("What is the capital of {}?", "Summarise ticket {} in one line.", "Translate order {} to French.")


def options_for(callers: int) -> dict[str, dict[str, Any]]:
    """Each detector's per-key bounds raised above ``callers`` (other options at defaults)."""
    out: dict[str, dict[str, Any]] = {}
    for name, entry in available().items():
        params = inspect.signature(entry.load().__init__).parameters
        out[name] = {p: int(callers * 1.1) for p in BOUND_OPTIONS if p in params}
    return out


def events(first: int, callers: int, window: int) -> Iterator[InferenceEvent]:
    """Two requests (a chat turn and a tabular prediction) from each of callers
    ``first .. first + callers - 1`` in window ``window``."""
    base = START + window * WINDOW_S
    step = (WINDOW_S - 1.0) / max(callers, 1)
    for k in range(callers):
        i = first + k
        t = datetime.fromtimestamp(base + k * step, UTC)
        principal = f"key-{i:07d}"
        ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        text = PROMPTS[i % 3].format(i)
        yield InferenceEvent(
            id=f"w{window}-c{i}", time=t, service="svc", model="chat", principal=principal, client_ip=ip,
            status=200, input=EventInput(text=text, chars=len(text), tokens=12),
            output=EventOutput(text="Sure, here it is.", chars=17, tokens=6),
        )
        yield InferenceEvent(
            id=f"w{window}-t{i}", time=t, service="svc", model="tabular", principal=principal, client_ip=ip,
            status=200, input=EventInput(features={"a": (i % 97) / 10, "b": (i % 89) / 7, "c": (i % 83) / 3}),
            output=EventOutput(label="yes"),
        )


def drive(detectors: list[Detector], callers: int, per_window: int) -> Pipeline:
    """``callers`` distinct callers, ``per_window`` of them active in each window, windows closed."""
    pipeline = Pipeline(detectors, IncidentManager(memory_store()), window_s=WINDOW_S)
    for window, first in enumerate(range(0, callers, per_window)):
        batch: list[InferenceEvent] = []
        for event in events(first, min(per_window, callers - first), window):
            batch.append(event)
            if len(batch) == 5000:
                pipeline.detect(batch)
                batch = []
        pipeline.detect(batch)
    pipeline.close_open_window()
    return pipeline


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def per_detector(sample: int) -> list[tuple[str, float, float]]:
    """Per detector, by tracemalloc: bytes per caller still held after the windows closed, and
    at the peak (every caller active in one open window)."""
    out = []
    for name in sorted(available()):
        detectors = build_detectors([name], options_for(sample))
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        pipeline = drive(detectors, sample, sample)
        del pipeline
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out.append((name, (current - before) / sample, (peak - before) / sample))
        del detectors
    return out


def together(callers: int, per_window: int) -> tuple[float, float, float]:
    """RSS growth (bytes) of all detectors holding ``callers`` callers, bytes per caller, events/s."""
    detectors = build_detectors(None, options_for(callers))
    gc.collect()
    before = rss_bytes()
    began = time.perf_counter()
    pipeline = drive(detectors, callers, per_window)
    elapsed = time.perf_counter() - began
    gc.collect()
    grown = rss_bytes() - before
    rate = pipeline.stats.events / elapsed
    del pipeline
    return grown, grown / callers, rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callers", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=50_000, help="callers for the per-detector figures")
    parser.add_argument("--per-window", type=int, default=20_000,
                        help="callers active in each window of the all-detectors run (default 20,000)")
    args = parser.parse_args(argv)
    print(f"per detector, {args.sample:,} callers, tracemalloc, bytes per caller:")
    print("| detector | held after the windows closed | peak, all callers in one open window |")
    print("|---|---:|---:|")
    rows = per_detector(args.sample)
    for name, held, peak in rows:
        print(f"| {name} | {held:,.0f} | {peak:,.0f} |")
    print(f"| **sum** | {sum(r[1] for r in rows):,.0f} | {sum(r[2] for r in rows):,.0f} |")
    grown, per, rate = together(args.callers, args.per_window)
    print(f"\nall {len(rows)} detectors together, {args.callers:,} distinct callers "
          f"({args.per_window:,} active per window): RSS grew "
          f"{grown / 2**20:,.0f} MiB ({per:,.0f} bytes per caller; {rate:,.0f} events/s while filling)")
    projected = per * 1_000_000
    verdict = "within" if projected <= 1e9 else "OVER"
    print(f"{verdict} the 1 GB target (10^9 bytes) for one million callers "
          f"(projected {projected / 1e9:.3f} GB, {projected / 2**20:,.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
