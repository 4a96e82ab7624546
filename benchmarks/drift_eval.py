"""Drift evaluation: known shifts at known positions, our detector and the anchors side by side.

Prints Markdown tables (docs/detectors/drift.md, "Evaluation", records a full run):

1. **Injected shifts** (``drift_shifts.scenarios()``): per scenario and method, the delay from the
   shift's start to the first alarm (in 60-second windows of 1,000 events: 1 = at the close of the
   first shifted window) and the false alarms in the 5 monitored windows before the shift.
2. **Summary** per method: scenarios detected, median delay, alarms before the shift, whether the
   first alarm named the shifted feature, time spent; then ours against the fastest anchor that was
   clean on each scenario (no false alarm before the shift, right feature named).
3. **Stationary streams** (1,000,000 events each, no shift): windows that alarmed, scaled to false
   incidents per million events, and each method's time and events/s on that same computation.
   The anchors are slow (Evidently renders its report on every run), so they see the first
   ``--anchor-windows`` windows of each stream; the table says how many.
4. **Throughput**: the same events replayed through ``inferwatch replay``'s pipeline with our
   detector (decoding included), the detector alone, and Evidently on the same windows, in one run,
   with windows of 1,000, 10,000 and 100,000 events; the per-event replay path (pydantic) beside
   the fast one. Each row is the fastest of ``--throughput-repeat`` timings (3).

Our detector is driven exactly as the pipeline drives it (``observe`` per event, ``close_window``
at each 60-second boundary; the windows are aligned to the pipeline's). Its reference is its
warm-up over the scenario's reference windows (``reference_events`` set to their event count);
the anchors get the very same rows as a reference frame. Every number is seeded.

The anchors live in a separate virtualenv so the project's pinned dependencies stay as they are::

    python -m venv .venv-bench
    .venv-bench/bin/pip install -e '.[detector]' -r benchmarks/requirements-drift.txt -c constraints.txt
    .venv-bench/bin/pip install --no-deps alibi-detect==0.13.0   # its metadata pins numpy<2
    .venv-bench/bin/python benchmarks/drift_eval.py              # full run, about an hour
    .venv-bench/bin/python benchmarks/drift_eval.py --quick      # a few minutes

Without the anchors installed (for instance with the project's own ``.venv``) only our detector
runs and a note says which anchors were skipped; ``--only ours`` does that on purpose.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, cast

from drift_anchors import Method, Verdict, build_anchors
from drift_shifts import STREAMS_DIR, Scenario, Schema, Window, scenarios, stationary, windows

from inferwatch.collectors.event import InferenceEvent, encode_event
from inferwatch.collectors.fast_event import decode_view
from inferwatch.detectors.base import Detector, Finding, ViewDetector
from inferwatch.detectors.incidents import IncidentManager
from inferwatch.detectors.pipeline import Pipeline
from inferwatch.detectors.registry import available
from inferwatch.detectors.replay import replay_file
from inferwatch.detectors.sqlite_store import SQLiteStore

DETECTORS = {
    "drift": ("inferwatch.detectors.drift.detector", "DriftDetector", "reference_events"),
}
ALL_METHODS = ("ours", "evidently", "alibi", "adwin", "pagehinkley", "kswin")
MULTIVARIATE_NAMES = ("inputs (together)",)


def build_detector(name: str, reference_events: int, options: dict[str, Any]) -> Detector:
    """Our detector under test, with its warm-up set to the scenario's reference windows."""
    module, cls, reference_option = DETECTORS[name]
    entry = available().get(name)
    factory = entry.load() if entry is not None else getattr(import_module(module), cls)
    detector: Detector = factory(**{reference_option: reference_events, **options})
    return detector


def finding_features(finding: Finding) -> tuple[str, ...]:
    """The features a finding names, as scenario feature names (``input.x`` -> ``x``)."""
    evidence = finding.evidence or {}
    names = evidence.get("drifted") or evidence.get("features_drifted") or list(evidence.get("features", {}))
    if finding.kind != "drift":
        names = [f"{finding.detector}:{finding.title}"]
    out = []
    for name in names:
        name = str(name).removeprefix("input.")
        for suffix in (" (missing share)", " (outside reference range)", " (location)"):
            name = name.removesuffix(suffix)
        out.append(name)
    return tuple(dict.fromkeys(out))


class OursMethod(Method):
    """Our detector, fed the window's events one by one and closed at the window's end."""

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        self.variants = (f"ours ({name})",)
        super().__init__()
        self.name, self.options = name, options
        self.build_seconds = 0.0
        self.findings: list[Finding] = []

    def start_scenario(self, scenario: Scenario) -> None:
        reference_events = scenario.reference_windows * scenario.events_per_window
        self.detector = build_detector(self.name, reference_events, self.options)
        self.findings = []

    def window(self, window: Window) -> dict[str, Verdict] | None:
        began = time.perf_counter()
        events = window.events()
        self.build_seconds += time.perf_counter() - began
        with self.timers[self.variants[0]]:
            observe = self.detector.observe
            for event in events:
                observe(event)
            findings = self.detector.close_window(window.end_time)
        self.findings.extend(findings)
        if window.reference:
            return None
        names: tuple[str, ...] = ()
        for finding in findings:
            names += finding_features(finding)
        return {self.variants[0]: Verdict(bool(findings), tuple(dict.fromkeys(names)))}


@dataclass
class Score:
    """How one method did on one scenario."""

    scenario: str
    method: str
    detected: bool
    delay_windows: int | None
    delay_events: int | None
    false_alarms: int
    monitored_before: int
    named_right: bool
    alarms_after: int
    windows_after: int
    first_names: tuple[str, ...] = ()


def score(scenario: Scenario, verdicts: list[tuple[int, Verdict]], method: str) -> Score:
    """Delay to the first alarm at or after the shift, and alarms before it."""
    start = scenario.start_window
    before = [v for i, v in verdicts if i < start]
    after = [(i, v) for i, v in verdicts if i >= start]
    first = next(((i, v) for i, v in after if v.alarm), None)
    named = False
    if first is not None and scenario.shift is not None:
        names = set(first[1].features)
        named = scenario.shift.feature in names or (
            scenario.shift.kind == "correlation" and bool(names & set(MULTIVARIATE_NAMES)))
    return Score(
        scenario=scenario.name, method=method, detected=first is not None,
        delay_windows=None if first is None else first[0] - start + 1,
        delay_events=None if first is None else (first[0] + 1) * scenario.events_per_window
        - scenario.start_event,
        false_alarms=sum(v.alarm for v in before), monitored_before=len(before), named_right=named,
        alarms_after=sum(v.alarm for _, v in after), windows_after=len(after),
        first_names=() if first is None else first[1].features,
    )


@dataclass
class Run:
    """Every method's verdicts on one scenario."""

    scenario: Scenario
    verdicts: dict[str, list[tuple[int, Verdict]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    windows_seen: dict[str, int] = field(default_factory=dict)


def run_scenario(scenario: Scenario, methods: list[Method], streams_dir: Path,
                 anchor_windows: int | None = None, slow_windows: int | None = None) -> Run:
    """Drive all methods over the scenario's windows.

    Anchors stop after ``anchor_windows`` windows past the reference, slow ones after ``slow_windows``.
    """
    run = Run(scenario)
    before = {m: {v: m.timers[v].seconds for v in m.variants} for m in methods}
    for method in methods:
        if isinstance(method, OursMethod):
            method.start_scenario(scenario)
        method.start(_schema(scenario, streams_dir))
        for variant in method.variants:
            run.verdicts[variant] = []
            run.windows_seen[variant] = 0
    for window in windows(scenario, streams_dir):
        for method in methods:
            cap = None if isinstance(method, OursMethod) else slow_windows if method.slow else anchor_windows
            if cap is not None and window.index >= scenario.reference_windows + cap:
                continue
            result = method.window(window)
            for variant in method.variants:
                run.windows_seen[variant] += 1
                if result is not None:
                    run.verdicts[variant].append((window.index, result[variant]))
    for method in methods:
        for variant in method.variants:
            run.seconds[variant] = method.timers[variant].seconds - before[method][variant]
    return run


def _schema(scenario: Scenario, streams_dir: Path) -> Schema:
    from drift_shifts import load_stream

    return load_stream(scenario.stream, streams_dir).schema


# --- tables ---------------------------------------------------------------------------------------

def _cell(s: Score) -> str:
    delay = "missed" if s.delay_windows is None else str(s.delay_windows)
    if s.delay_windows is not None and not s.named_right:
        delay += "*"
    return f"{delay} ({s.false_alarms})" if s.false_alarms else delay


def scenario_table(scores: dict[str, dict[str, Score]], variants: list[str],
                   described: dict[str, str]) -> str:
    head = "| scenario | shift | " + " | ".join(variants) + " |"
    lines = [head, "|---|---|" + "---:|" * len(variants)]
    for name, by_method in scores.items():
        cells = " | ".join(_cell(by_method[v]) if v in by_method else "-" for v in variants)
        lines.append(f"| `{name}` | {described[name]} | {cells} |")
    return "\n".join(lines)


def summary_table(scores: dict[str, dict[str, Score]], variants: list[str],
                  seconds: dict[str, float], events: dict[str, int]) -> str:
    lines = ["| method | detected | median delay (windows) | mean delay (events) | first alarm named "
             "the feature | shifted windows alarmed | false alarms before the shift | time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for variant in variants:
        rows = [by[variant] for by in scores.values() if variant in by]
        hits = [r for r in rows if r.detected]
        delays = [r.delay_windows for r in hits if r.delay_windows is not None]
        events_delay = [r.delay_events for r in hits if r.delay_events is not None]
        false = sum(r.false_alarms for r in rows)
        monitored = sum(r.monitored_before for r in rows)
        median = f"{statistics.median(delays):g}" if delays else "-"
        mean_events = f"{statistics.mean(events_delay):,.0f}" if events_delay else "-"
        lines.append(f"| {variant} | {len(hits)}/{len(rows)} | {median} | {mean_events} | "
                     f"{sum(r.named_right for r in hits)}/{len(hits)} | "
                     f"{sum(r.alarms_after for r in rows)}/{sum(r.windows_after for r in rows)} | "
                     f"{false}/{monitored} windows | "
                     f"{seconds.get(variant, 0.0):.1f} |")
    return "\n".join(lines)


def _clean_delay(s: Score | None) -> int | None:
    # A detection that counts: no alarm before the shift, the first alarm names the shifted feature.
    if s is None or not s.detected or not s.named_right or s.false_alarms:
        return None
    return s.delay_windows or 0


def versus_table(scores: dict[str, dict[str, Score]], ours: str) -> str:
    """Ours against the fastest anchor that was clean on that scenario.

    Clean: no alarm in the windows before the shift, and its first alarm after it named the
    shifted feature. An anchor that alarms all the time "detects" everything at once; it is no
    yardstick.
    """
    lines = ["| scenario | ours | fastest clean anchor | its delay | ours - best (windows) |",
             "|---|---:|---|---:|---:|"]
    tally = {"faster": 0, "as fast": 0, "slower": 0, "only ours": 0, "missed": 0}
    for name, by in scores.items():
        mine = by.get(ours)
        if mine is None:
            continue
        clean = [s for v, s in by.items() if v != ours and _clean_delay(s) is not None]
        best = min(clean, key=lambda s: s.delay_windows or 0, default=None)
        mine_delay = mine.delay_windows if mine.detected else None
        if best is None:
            diff, key = "-", "only ours" if mine_delay is not None else "missed"
        elif mine_delay is None:
            diff, key = "missed", "missed"
        else:
            d = mine_delay - (best.delay_windows or 0)
            diff, key = f"{d:+d}" if d else "0", "faster" if d < 0 else "as fast" if d == 0 else "slower"
        tally[key] += 1
        lines.append(f"| `{name}` | {_cell(mine)} | {best.method if best else 'none'} | "
                     f"{best.delay_windows if best else '-'} | {diff} |")
    lines.append("")
    lines.append("Ours against the fastest clean anchor: "
                 + ", ".join(f"{k} {v}" for k, v in tally.items()) + ".")
    return "\n".join(lines)


def head_to_head_table(scores: dict[str, dict[str, Score]], ours: str) -> str:
    """Ours against each anchor as a whole, on the same scenarios: clean detections, and on the
    scenarios both detected cleanly, who alarmed first and the mean delays.

    :func:`versus_table` pits ours against a different anchor on each scenario (whichever was
    fastest there); this is the comparison with one method at a time.
    """
    anchors = sorted({v for by in scores.values() for v in by if v != ours})
    lines = ["| anchor | detected cleanly: ours / anchor | both | ours faster | as fast | ours slower | "
             "mean delay on both: ours / anchor (windows) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for anchor in anchors:
        mine_n = theirs_n = faster = same = slower = 0
        both: list[tuple[int, int]] = []
        for by in scores.values():
            if anchor not in by or ours not in by:
                continue
            mine, theirs = _clean_delay(by[ours]), _clean_delay(by[anchor])
            mine_n += mine is not None
            theirs_n += theirs is not None
            if mine is not None and theirs is not None:
                both.append((mine, theirs))
                faster += mine < theirs
                same += mine == theirs
                slower += mine > theirs
        means = (f"{statistics.mean(m for m, _ in both):.2f} / {statistics.mean(t for _, t in both):.2f}"
                 if both else "-")
        lines.append(f"| {anchor} | {mine_n} / {theirs_n} | {len(both)} | {faster} | {same} | {slower} "
                     f"| {means} |")
    return "\n".join(lines)


@dataclass
class StationaryRow:
    stream: str
    method: str
    windows: int
    events: int
    alarms: int
    seconds: float
    events_in: int
    """Events the method took in, reference windows included: the events/s denominator."""
    names: dict[str, int]

    @property
    def per_million(self) -> float:
        return self.alarms / self.events * 1e6 if self.events else float("nan")


def stationary_table(rows: list[StationaryRow]) -> str:
    lines = ["| stream | method | windows judged | events | alarmed windows | false incidents per 1M events "
             "| time (s) | events/s | features alarmed on |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        rate = r.events_in / r.seconds if r.seconds > 0 else float("nan")
        names = ", ".join(f"{k} x{v}" for k, v in sorted(r.names.items(), key=lambda kv: -kv[1])[:4])
        lines.append(f"| {r.stream} | {r.method} | {r.windows:,} | {r.events:,} | {r.alarms} | "
                     f"{r.per_million:,.1f} | {r.seconds:.1f} | {rate:,.0f} | {names or '-'} |")
    return "\n".join(lines)


def stationary_rows(run: Run) -> list[StationaryRow]:
    scenario = run.scenario
    out = []
    for variant, verdicts in run.verdicts.items():
        names: dict[str, int] = {}
        for _, v in verdicts:
            for n in v.features:
                names[n] = names.get(n, 0) + 1
        out.append(StationaryRow(
            stream=scenario.name, method=variant, windows=len(verdicts),
            events=len(verdicts) * scenario.events_per_window,
            alarms=sum(v.alarm for _, v in verdicts),
            seconds=run.seconds[variant],
            events_in=run.windows_seen[variant] * scenario.events_per_window, names=names))
    return out


# --- throughput -----------------------------------------------------------------------------------

def throughput(detector_name: str, options: dict[str, Any], events_total: int, streams_dir: Path,
               evidently: bool, window_sizes: Sequence[int] = (1_000, 10_000, 100_000),
               repeat: int = 3) -> str:
    """Replay and detector-alone events/s against Evidently's on the same windows, one run.

    Per window size (1,000 events, where a per-window cost weighs most, 10,000 and 100,000):
    ``events_total`` events, or ten windows when that is more. Each run is timed ``repeat`` times
    and the fastest counts (every method alike): on a shared machine the slower repetitions
    measure the neighbours, and the first one pays each library's import (scikit-learn's, about
    half a second, is otherwise charged to whichever window size comes first).
    """
    lines = ["The synthetic stream, one process, all runs below in this one; "
             f"each the fastest of {repeat}.", "",
             "| windows of | events | run | events/s | vs Evidently |", "|---|---:|---|---:|---:|"]
    for per_window in window_sizes:
        total = max(events_total, 10 * per_window)
        scenario = stationary("synthetic", total, events_per_window=per_window, seed=23)
        results = _throughput_runs(scenario, detector_name, options, streams_dir, evidently, repeat)
        base = results[-1][1] if evidently else None
        for label, rate in results:
            ratio = f"{rate / base:.1f}x" if base else "-"
            lines.append(f"| {per_window:,} | {scenario.events:,} | {label} | {rate:,.0f} | {ratio} |")
    return "\n".join(lines) + ("" if evidently else "\n(Evidently not installed: no ratio.)")


class _OneByOne:
    """A detector without ``observe_views``: replay then takes the per-event path (pydantic)."""

    def __init__(self, inner: Detector) -> None:
        self.inner, self.name = inner, inner.name

    def observe(self, event: InferenceEvent) -> list[Finding]:
        return self.inner.observe(event)

    def close_window(self, end: datetime) -> list[Finding]:
        return self.inner.close_window(end)


def _throughput_runs(scenario: Scenario, detector_name: str, options: dict[str, Any], streams_dir: Path,
                     evidently: bool, repeat: int) -> list[tuple[str, float]]:
    reference_events = scenario.reference_windows * scenario.events_per_window
    results: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        with path.open("wb") as fh:
            for window in windows(scenario, streams_dir):
                fh.write(b"".join(encode_event(e) + b"\n" for e in window.events()))

        def replay(make: Callable[[], list[Detector]]) -> float:
            def once() -> float:
                store = SQLiteStore(":memory:")
                pipeline = Pipeline(make(), IncidentManager(store), window_s=60)
                began = time.perf_counter()
                n = replay_file(path, pipeline, store).events
                return n / (time.perf_counter() - began)
            return max(once() for _ in range(repeat))

        def ours(extra: dict[str, Any]) -> list[Detector]:
            return [build_detector(detector_name, reference_events, options | extra)]

        results.append(("replay, pipeline without detectors (fast reader)", replay(list)))
        results.append((f"replay through `{detector_name}` (fast reader, observe_views)",
                        replay(lambda: ours({}))))
        if detector_name == "drift" and "multivariate" not in options:
            results.append((f"replay through `{detector_name}`, per-feature tests only (multivariate=false)",
                            replay(lambda: ours({"multivariate": False}))))
        results.append((f"replay through `{detector_name}`, per-event path (pydantic, observe)",
                        replay(lambda: [_OneByOne(d) for d in ours({})])))

    def alone(method: Method, variant: str) -> float:
        return scenario.events / min(run_scenario(scenario, [method], streams_dir).seconds[variant]
                                     for _ in range(repeat))

    def alone_decoded(extra: dict[str, Any]) -> float:
        # The detector on events already decoded by replay's fast reader (decoding untimed),
        # taking each window as replay hands it a run: the input Evidently gets (its timer
        # starts from the window's columns).
        def once() -> float:
            detector = cast(ViewDetector, ours(extra)[0])
            spent = 0.0
            for window in windows(scenario, streams_dir):
                views = [decode_view(encode_event(event)) for event in window.events()]
                began = time.perf_counter()
                detector.observe_views(views)
                detector.close_window(window.end_time)
                spent += time.perf_counter() - began
            return scenario.events / spent
        return max(once() for _ in range(repeat))

    ours_alone = OursMethod(detector_name, options)
    results.append((f"`{detector_name}` alone (observe + close_window)",
                    alone(ours_alone, ours_alone.variants[0])))
    if hasattr(ours({})[0], "observe_views"):
        results.append((f"`{detector_name}` alone on decoded events (observe_views + close_window)",
                        alone_decoded({})))
    if detector_name == "drift" and "multivariate" not in options:
        # Evidently's preset runs one test per column and no domain classifier: this is ours on
        # the same computation (per-feature tests, plus the operations figures it always keeps).
        columns = OursMethod(detector_name, options | {"multivariate": False})
        results.append((f"`{detector_name}` alone, per-feature tests only (multivariate=false)",
                        alone(columns, columns.variants[0])))
        results.append((f"`{detector_name}` alone on decoded events, per-feature tests only",
                        alone_decoded({"multivariate": False})))
    if evidently:
        methods, _ = build_anchors({"evidently"})
        results.append(("Evidently DataDriftPreset on the same windows (columns given)",
                        alone(methods[0], "Evidently (dataset drift)")))
    return results


# --- main -----------------------------------------------------------------------------------------

def _versions() -> str:
    parts = []
    for package in ("evidently", "alibi-detect", "river", "pandas", "numpy", "scipy"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            continue
    return ", ".join(parts)


def _options(pairs: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _methods(arg: str | None, skip: str | None) -> set[str]:
    chosen = set(ALL_METHODS) if not arg else set(arg.split(","))
    chosen -= set(skip.split(",")) if skip else set()
    unknown = chosen - set(ALL_METHODS)
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(ALL_METHODS)}")
    return chosen


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--detector", choices=sorted(DETECTORS), default="drift",
                        help="our detector under test (default drift)")
    parser.add_argument("--detector-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option for our detector (VALUE read as JSON when it parses), repeatable")
    parser.add_argument("--quick", action="store_true", help="fewer scenarios and shorter streams")
    parser.add_argument("--only", help=f"comma-separated methods among {', '.join(ALL_METHODS)}")
    parser.add_argument("--skip", help="comma-separated methods to leave out (e.g. kswin, the slowest)")
    parser.add_argument("--scenario", help="run only scenarios whose name contains this")
    parser.add_argument("--stationary-events", type=int, help="events per stationary stream (1,000,000)")
    parser.add_argument("--anchor-windows", type=int, help="stationary windows the anchors judge (200)")
    parser.add_argument("--slow-windows", type=int, default=20,
                        help="stationary windows River KSWIN judges (20: a KS test per event is slow)")
    parser.add_argument("--throughput-events", type=int, help="events in the throughput run (100,000)")
    parser.add_argument("--throughput-windows", default=None,
                        help="comma-separated window sizes of the throughput run (1000,10000,100000; "
                             "--quick: 1000,10000)")
    parser.add_argument("--throughput-repeat", type=int, default=3, metavar="N",
                        help="time each throughput run N times and keep the fastest (3)")
    parser.add_argument("--no-scenarios", action="store_true", help="skip the injected shifts")
    parser.add_argument("--no-stationary", action="store_true", help="skip the stationary streams")
    parser.add_argument("--no-throughput", action="store_true", help="skip the throughput run")
    parser.add_argument("--streams", type=Path, default=STREAMS_DIR, help="folder with elec.csv, weather.csv")
    parser.add_argument("--json", type=Path, help="also write every score and stationary row here")
    args = parser.parse_args(argv)
    quick = args.quick
    args.stationary_events = args.stationary_events or (100_000 if quick else 1_000_000)
    args.anchor_windows = args.anchor_windows or (30 if quick else 200)
    args.throughput_events = args.throughput_events or (20_000 if quick else 100_000)
    sizes = args.throughput_windows or ("1000,10000" if quick else "1000,10000,100000")
    args.throughput_windows = [int(size) for size in sizes.split(",")]
    return args


QUICK_SCENARIOS = ("synthetic/mean-x-0.5/", "synthetic/variance-x-1.5/abrupt", "synthetic/category-segment",
                   "synthetic/unit-amount-1000/abrupt", "synthetic/missing-amount-0.3/abrupt",
                   "synthetic/correlation-y-1/abrupt", "elec/mean-nswdemand-0.5/abrupt",
                   "weather/mean-feat_1-0.5/abrupt")


def _progress(name: str, began: float) -> None:
    print(f"{name}: {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    skip = ",".join(filter(None, [args.skip, "kswin" if args.quick else None]))
    chosen = _methods(args.only, skip)
    options = _options(args.detector_option)
    anchors, notes = build_anchors(chosen - {"ours"})
    methods: list[Method] = ([OursMethod(args.detector, options)] if "ours" in chosen else []) + anchors
    if notes:
        notes.append("install them in a separate venv as the top of benchmarks/drift_eval.py says")
    print(f"# Drift evaluation ({date.today().isoformat()}, {'quick' if args.quick else 'full'} run)\n")
    print(f"Detector under test: `{args.detector}` {options or ''}; {_versions()}; {os.cpu_count()} cores.\n")
    for note in notes:
        print(f"> note: {note}")
    if notes:
        print()
    variants = [v for m in methods for v in m.variants]
    chosen_scenarios = [s for s in scenarios()
                        if not args.no_scenarios and (not args.quick or s.name.startswith(QUICK_SCENARIOS))
                        and (args.scenario is None or args.scenario in s.name)]
    scores: dict[str, dict[str, Score]] = {}
    seconds: dict[str, float] = dict.fromkeys(variants, 0.0)
    described = {}
    for scenario in chosen_scenarios:
        began = time.perf_counter()
        run = run_scenario(scenario, methods, args.streams)
        scores[scenario.name] = {v: score(scenario, vs, v) for v, vs in run.verdicts.items()}
        described[scenario.name] = scenario.describe()
        for v, s in run.seconds.items():
            seconds[v] += s
        _progress(scenario.name, began)
    if scores:
        print("## Injected shifts\n")
        print("Windows from the shift's start to the first alarm (1 = the first shifted window); "
              "in brackets, alarms in the 5 windows before the shift; * = the first alarm did not "
              "name the shifted feature.\n")
        print(scenario_table(scores, variants, described) + "\n")
        print(summary_table(scores, variants, seconds, {}) + "\n")
        if methods and isinstance(methods[0], OursMethod) and len(variants) > 1:
            print(versus_table(scores, variants[0]) + "\n")
            print(head_to_head_table(scores, variants[0]) + "\n")
    stationary_out: list[StationaryRow] = []
    if not args.no_stationary:
        # The last two: a quiet model, whose 200-event windows are carried until min_events.
        streams = [("synthetic", 1_000), ("synthetic", 10_000), ("elec", 1_000), ("weather", 1_000),
                   ("elec", 200), ("weather", 200)]
        if args.quick:
            streams = streams[:1]
        for stream, per_window in streams:
            scenario = stationary(stream, args.stationary_events, events_per_window=per_window)
            scale = 1_000 / per_window  # the same number of events, in fewer larger windows
            began = time.perf_counter()
            run = run_scenario(scenario, methods, args.streams,
                               anchor_windows=max(1, int(args.anchor_windows * scale)),
                               slow_windows=max(1, int(args.slow_windows * scale)))
            stationary_out.extend(stationary_rows(run))
            _progress(scenario.name, began)
        print("## Stationary streams\n")
        print(stationary_table(stationary_out) + "\n")
    if not args.no_throughput and "ours" in chosen:
        print("## Throughput\n")
        print(throughput(args.detector, options, args.throughput_events, args.streams,
                         evidently=any(m.variants[0].startswith("Evidently") for m in anchors),
                         window_sizes=args.throughput_windows, repeat=args.throughput_repeat) + "\n")
    for note in notes:
        print(f"> note: {note}")
    if args.json:
        args.json.write_text(json.dumps({
            "scores": {k: {m: asdict(s) for m, s in v.items()} for k, v in scores.items()},
            "stationary": [asdict(r) | {"per_million": r.per_million} for r in stationary_out],
        }, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
