"""What a checkpoint of the detectors' state costs: bytes, and seconds to write and read, by callers.

The state of ``state_memory.py`` (every registered detector, its per-key bounds raised, each
caller sending a chat and a tabular request and every window closed) for 1,000, 10,000 and
100,000 callers (``--callers``), checkpointed with ``Pipeline.checkpoint`` and restored into a
pipeline built afresh, side by side in one run; per detector at the largest size. Times are the
best of ``--repeat`` (a shared machine's slower repetitions measure its neighbours). The service
saves at most every ``detect.checkpoint_interval_s`` (60 s) and skips a state over
``MAX_CHECKPOINT_BYTES`` (64 MB).

    python benchmarks/checkpoint_cost.py                    # about two minutes
    python benchmarks/checkpoint_cost.py --callers 1000,20000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from state_memory import WINDOW_S, drive, options_for

from inferwatch.detectors import checkpoint
from inferwatch.detectors.incidents import IncidentManager
from inferwatch.detectors.pipeline import Pipeline
from inferwatch.detectors.registry import build_detectors
from inferwatch.detectors.service import MAX_CHECKPOINT_BYTES
from inferwatch.testing import memory_store


def measure(callers: int, repeat: int) -> tuple[int, float, float, dict[str, int]]:
    """Bytes of the checkpoint, best seconds to write and to restore it, bytes per detector."""
    options = options_for(callers)
    pipeline = drive(build_detectors(options=options), callers, per_window=min(callers, 20_000))
    write, read, data = float("inf"), float("inf"), b""
    for _ in range(repeat):
        began = time.perf_counter()
        data = pipeline.checkpoint()
        write = min(write, time.perf_counter() - began)
        fresh = Pipeline(build_detectors(options=options), IncidentManager(memory_store()), window_s=WINDOW_S)
        began = time.perf_counter()
        notes = fresh.restore(data)
        read = min(read, time.perf_counter() - began)
        assert notes == [], notes
    parts = {name: len(entry[1]) for name, entry in checkpoint.load(data)["detectors"].items()}
    return len(data), write, read, parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", default="1000,10000,100000", help="comma-separated caller counts")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.callers.split(",")]
    print("| callers | checkpoint | per caller | write | read | write per caller | under the 64 MB cap |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    parts: dict[str, int] = {}
    base: float | None = None
    for callers in sizes:
        size, write, read, parts = measure(callers, args.repeat)
        base = base or write / callers
        print(f"| {callers:,} | {size / 2**20:,.1f} MiB | {size / callers:,.0f} B | {write:.2f} s "
              f"| {read:.2f} s | {write / callers * 1e6:.1f} µs ({write / callers / base:.2f}x the smallest) "
              f"| {'yes' if size <= MAX_CHECKPOINT_BYTES else 'no: not saved'} |")
    print(f"\nPer detector at {sizes[-1]:,} callers:\n")
    print("| detector | bytes | per caller |")
    print("|---|---:|---:|")
    for name, size in sorted(parts.items(), key=lambda item: -item[1]):
        print(f"| {name} | {size:,} | {size / sizes[-1]:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
