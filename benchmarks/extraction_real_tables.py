"""model_extraction on real tables: ordinary callers of elec and weather, and extraction attacks.

``caller_scenarios.py`` tests the per-caller detectors on an iris-shaped synthetic table. Real
tables are harder for PRADA's distance test: discrete steps, long runs of one value and heavy
tails give ordinary callers near-duplicate queries and queries far from all their others. Here a
model is fitted on each real stream of ``shared/datasets/streams`` (a logistic regression on all
its numeric columns, which gives ``output.label``), and for an hour of 60 s windows:

* ``--callers`` ordinary callers (50) send rows drawn at random from the table, each at its own
  rate between 2 and 40 a minute, and ``--sequential`` more (25) send consecutive rows from a
  random start, as a client scoring a stream in order does (elec's rows are half-hours);
* from the 20th window on, attackers send for 30 windows at 20 a minute: Jacobian-style
  augmentation (Papernot et al.: ten seeds from the table, each known point stepped by +-lambda
  standard deviations per feature, lambda 0.05 / 0.1 / 0.3), a line sweep (one feature stepped
  across its range from a real row, 40 steps a line), and uniform random queries over the
  feature ranges.

All of it goes through ``ModelExtractionDetector`` at its defaults, as ``inferwatch replay``
runs it (60 s windows), and again side by side with its distance test as it was before
2026-11-27 (Shapiro-Wilk W of all the log distances, no repeated-step test; otherwise the same
detector): the variant row ``untrimmed W``.
The script prints, per table, how many ordinary callers were flagged (target 0), which attackers
were caught and after how many of their queries, and the lowest Shapiro-Wilk W among the ordinary
callers' findings.

    python benchmarks/extraction_real_tables.py             # both tables, seeds 1-3 (about a minute)
    python benchmarks/extraction_real_tables.py --seeds 1 --json

The streams come from ``shared/datasets/streams`` beside the repository (``INFERWATCH_DATASETS``
points at another copy of ``datasets``). Nothing in the detector was tuned on these runs except
where docs/detectors/abuse.md says so.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import shapiro
from sklearn.linear_model import LogisticRegression

from inferwatch.collectors.event import EventOutput, InferenceEvent
from inferwatch.detectors import query_distances
from inferwatch.detectors.base import Finding
from inferwatch.detectors.model_extraction import ModelExtractionDetector
from inferwatch.testing import make_event, run_detector

STREAMS = Path(os.environ.get("INFERWATCH_DATASETS",
                              Path(__file__).resolve().parents[2] / "shared" / "datasets")) / "streams"
TABLES = {"elec": "class", "weather": "target"}
"""Stream file stem -> its label column (the rest are the model's numeric features)."""
T0 = 1_767_225_600.0
WINDOW_S = 60.0
WINDOWS = 60
ATTACK_START, ATTACK_WINDOWS, ATTACK_RATE = 20, 30, 20

Matrix = npt.NDArray[np.float64]
Attack = Callable[[np.random.Generator, int], Matrix]


class _Scaled:
    """A logistic regression fitted on the standardised table; predicts from raw rows."""

    def __init__(self, x: Matrix, y: Matrix) -> None:
        self.mean, self.sd = x.mean(axis=0), x.std(axis=0)
        self.model = LogisticRegression(max_iter=1000).fit((x - self.mean) / self.sd, y)

    def predict(self, x: Matrix) -> Any:
        return self.model.predict((x - self.mean) / self.sd)


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    rows: Matrix
    model: _Scaled

    @property
    def sd(self) -> Matrix:
        return np.asarray(self.rows.std(axis=0))

    def labels(self, x: Matrix) -> list[str]:
        return [str(v) for v in self.model.predict(x)]


def load(name: str) -> Table:
    path = STREAMS / f"{name}.csv"
    if not path.exists():
        sys.exit(f"{path} not found: the streams come from shared/datasets/streams "
                 "(set INFERWATCH_DATASETS to the datasets folder)")
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        data = np.array([[float(cell) for cell in row] for row in reader])
    label = header.index(TABLES[name])
    features = [i for i in range(len(header)) if i != label]
    x, y = data[:, features], data[:, label]
    return Table(name, tuple(header[i] for i in features), x, _Scaled(x, y))


def attacks(table: Table) -> dict[str, Attack]:
    low, high, sd = table.rows.min(axis=0), table.rows.max(axis=0), table.sd

    def jacobian(step: float) -> Attack:
        def rows(rng: np.random.Generator, n: int) -> Matrix:
            known = list(table.rows[rng.integers(len(table.rows), size=10)])
            out: list[Matrix] = []
            while len(out) < n:
                new = [x + step * sd * np.sign(rng.normal(size=len(sd))) for x in known]
                out += new
                known += new
            return np.array(out[:n])
        return rows

    def line(rng: np.random.Generator, n: int) -> Matrix:
        out: list[Matrix] = []
        while len(out) < n:
            base, j = table.rows[rng.integers(len(table.rows))], int(rng.integers(len(sd)))
            for value in np.linspace(low[j], high[j], 40):
                out.append(base.copy())
                out[-1][j] = value
        return np.array(out[:n])

    def uniform(rng: np.random.Generator, n: int) -> Matrix:
        return rng.uniform(low, high, (n, len(sd)))

    return {"jacobian 0.05 sd": jacobian(0.05), "jacobian 0.1 sd": jacobian(0.1),
            "jacobian 0.3 sd": jacobian(0.3), "line sweep": line, "uniform random": uniform}


def events(table: Table, callers: int, seed: int,
           sequential: int = 0) -> tuple[list[InferenceEvent], dict[str, str]]:
    """The hour's events in time order, and each principal's kind ("ordinary" or the attack)."""
    rng = np.random.default_rng(seed)
    timed: list[tuple[float, str, Matrix]] = []
    kinds: dict[str, str] = {}

    def send(principal: str, rows: Matrix, first: int, windows: int) -> None:
        times = np.sort(rng.uniform(T0 + first * WINDOW_S, T0 + (first + windows) * WINDOW_S, len(rows)))
        timed.extend((float(t), principal, x) for t, x in zip(times, rows, strict=True))

    for i in range(callers):
        kinds[f"app{i:02d}"] = "ordinary"
        n = int(rng.integers(2, 41)) * WINDOWS
        send(f"app{i:02d}", table.rows[rng.integers(len(table.rows), size=n)], 0, WINDOWS)
    for i in range(sequential):
        kinds[f"seq{i:02d}"] = "ordinary"
        n = int(rng.integers(2, 41)) * WINDOWS
        start = int(rng.integers(len(table.rows) - n))
        send(f"seq{i:02d}", table.rows[start : start + n], 0, WINDOWS)
    for k, (kind, attack) in enumerate(attacks(table).items()):
        kinds[f"thief{k}"] = kind
        send(f"thief{k}", attack(rng, ATTACK_RATE * ATTACK_WINDOWS), ATTACK_START, ATTACK_WINDOWS)
    timed.sort(key=lambda item: item[0])
    labels = table.labels(np.array([x for _, _, x in timed]))
    return [make_event(t, principal=p, model=table.name, features=dict(zip(table.columns, map(float, x),
                                                                          strict=True)),
                       output=EventOutput(label=label))
            for (t, p, x), label in zip(timed, labels, strict=True)], kinds


def _untrimmed_w(logs: Matrix) -> float:
    return float(shapiro(logs).statistic) if np.ptp(logs) > 0 else 1.0


def detect(stream: list[InferenceEvent], variant: str) -> list[Finding]:
    """The detector at its defaults (``ours``), or with W on every log distance and no
    repeated-step test (``untrimmed W``: the distance test before 2026-11-27)."""
    if variant == "ours":
        return run_detector(ModelExtractionDetector(), stream, window_s=WINDOW_S)
    saved = query_distances.trimmed_w, query_distances.REPEATED_STEP_SHARE
    query_distances.trimmed_w, query_distances.REPEATED_STEP_SHARE = _untrimmed_w, 2.0  # type: ignore[misc]
    try:
        return run_detector(ModelExtractionDetector(), stream, window_s=WINDOW_S)
    finally:
        query_distances.trimmed_w, query_distances.REPEATED_STEP_SHARE = saved  # type: ignore[misc]


def evaluate(table: Table, callers: int, seed: int, variant: str, sequential: int = 0) -> dict[str, Any]:
    stream, kinds = events(table, callers, seed, sequential)
    started = time.perf_counter()
    findings = detect(stream, variant)
    seconds = time.perf_counter() - started
    first: dict[str, Finding] = {}
    for finding in sorted(findings, key=lambda f: f.time):
        first.setdefault(finding.subject.removeprefix("principal:"), finding)
    sent: dict[str, list[float]] = {}
    for event in stream:
        sent.setdefault(event.principal or "", []).append(event.ts)
    ordinary_flagged = [p for p in first if kinds[p] == "ordinary"]
    ordinary_w = [model["shapiro_w_log_distance"] for f in findings
                  if kinds[f.subject.removeprefix("principal:")] == "ordinary"
                  for model in f.evidence["tabular"] if model["shapiro_w_log_distance"] is not None]
    attackers = {}
    for principal, kind in kinds.items():
        if kind == "ordinary":
            continue
        found = first.get(principal)
        attackers[kind] = None if found is None else {
            "queries_until_found": sum(t <= found.time.timestamp() for t in sent[principal]),
            "signals": found.evidence["signals"],
        }
    return {"table": table.name, "seed": seed, "variant": variant, "events": len(stream),
            "ordinary_callers": callers + sequential,
            "ordinary_flagged_sequential": sum(p.startswith("seq") for p in ordinary_flagged),
            "ordinary_flagged": len(ordinary_flagged), "ordinary_lowest_w": min(ordinary_w, default=None),
            "attackers": attackers, "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", default=",".join(TABLES), help="comma-separated: elec,weather")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds, one run each")
    parser.add_argument("--callers", type=int, default=50, help="ordinary callers per run (50)")
    parser.add_argument("--sequential", type=int, default=25,
                        help="more ordinary callers, sending consecutive rows (25)")
    parser.add_argument("--json", action="store_true", help="one JSON object per run")
    args = parser.parse_args(argv)
    results = []
    for name in args.tables.split(","):
        table = load(name)
        for seed in (int(s) for s in args.seeds.split(",")):
            for variant in ("ours", "untrimmed W"):
                result = evaluate(table, args.callers, seed, variant, args.sequential)
                results.append(result)
                if args.json:
                    print(json.dumps(result), flush=True)
    if args.json:
        return 0
    kinds = list(attacks(load(results[0]["table"])))
    print("| table | seed | events | test | ordinary callers flagged (of them sequential) | "
          "lowest W of their findings | "
          + " | ".join(kinds) + " | seconds |")
    print("|---|---:|---:|---|---:|---:|" + "---:|" * len(kinds) + "---:|")
    for r in results:
        cells = [("missed" if r["attackers"][k] is None else
                  f"{r['attackers'][k]['queries_until_found']} ({', '.join(r['attackers'][k]['signals'])})")
                 for k in kinds]
        lowest = "-" if r["ordinary_lowest_w"] is None else f"{r['ordinary_lowest_w']:.3f}"
        flagged = f"{r['ordinary_flagged']} of {r['ordinary_callers']} ({r['ordinary_flagged_sequential']})"
        print(f"| {r['table']} | {r['seed']} | {r['events']:,} | {r['variant']} | {flagged} | {lowest} | "
              + " | ".join(cells) + f" | {r['seconds']} |")
    print("\nattacker cells: its queries until its first finding (the signals of that finding)")
    for variant in ("ours", "untrimmed W"):
        rows = [r for r in results if r["variant"] == variant]
        caught = sum(a is not None for r in rows for a in r["attackers"].values())
        attackers = sum(len(r["attackers"]) for r in rows)
        flagged = sum(r["ordinary_flagged"] for r in rows)
        sequential = sum(r["ordinary_flagged_sequential"] for r in rows)
        print(f"{variant}: ordinary callers flagged {flagged} of {sum(r['ordinary_callers'] for r in rows)} "
              f"({sequential} of them sending consecutive rows), attackers caught {caught} of {attackers}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
