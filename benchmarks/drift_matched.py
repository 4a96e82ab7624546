"""Detection delay at matched strictness: every anchor made as strict as it must be to raise no
alarm on the stationary streams, then run on the same injected shifts as our detector.

``drift_eval.py`` runs the anchors at their defaults, where most of them buy speed with false
alarms (8 to 144 of the 145 windows before the shifts), so "who alarms first" mixes speed with
strictness. A change detector is judged on both at once (its delay at a given false-alarm rate),
and the drift issue's target pairs them too: no false incident on a million stationary events,
and a delay at least as good as the best anchor's. Here each anchor is moved to that operating
point, as favourably for it as the data allow:

* **Score-based anchors** (Alibi Detect's per-feature p-values, Evidently's per-column distances,
  River Page-Hinkley's statistic run without resets): every feature of every stream gets its own
  threshold, the largest score it reached in any window of the stationary stream of that source.
  That is an oracle (tuned on the very distribution the scenarios draw from, feature by feature);
  our detector gets no such tuning. A window alarms when some feature's score passes its
  threshold. Page-Hinkley's first alarm at a threshold is exactly the first time its no-reset
  statistic passes it.
* **River ADWIN** (its statistic is not exposed): the loosest δ of a grid that raises no alarm on
  the stationary streams.
* **River KSWIN** is not calibrated: a KS test per event (about 300 µs a value) would take days
  over three million events.

The calibration streams are ``drift_shifts.stationary`` (bootstrap rows of synthetic, elec and
weather, 1,000-event windows, 3 reference windows; ``drift_eval.py``'s seed), the scenarios
``drift_shifts.scenarios()``. A threshold at the largest of N stationary scores is passed by a
fresh stationary window about once in N + 1 per feature, so the thresholds are then checked on
**fresh stationary streams** (another seed, the same length): the table gives each method's false
alarms there per million events, ours included. The 145 windows before the shifts are a second
out-of-sample check. Evidently renders a report per window (a third of a second to over a second),
so it is calibrated and checked on the first ``--evidently-windows`` windows of each stream:
fewer windows give it looser thresholds, which favours it.

Run with the anchors' virtualenv (see ``drift_eval.py``)::

    .venv-bench/bin/python benchmarks/drift_matched.py            # about 40 minutes
    .venv-bench/bin/python benchmarks/drift_matched.py --quick    # a few minutes
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from drift_anchors import AlibiMethod, EvidentlyMethod, Method, RiverMethod, Verdict, missing_anchors
from drift_eval import (
    OursMethod,
    Score,
    head_to_head_table,
    run_scenario,
    scenario_table,
    score,
    summary_table,
    versus_table,
)
from drift_shifts import STREAMS_DIR, scenarios, stationary

STREAMS = ("synthetic", "elec", "weather")
CALIBRATION_SEED, CHECK_SEED = 5, 6
"""The stationary streams thresholds are taken from (``drift_eval``'s), and fresh ones to check them on."""
ADWIN_DELTAS = (2e-3, 1e-5, 1e-8, 1e-12, 1e-16)
"""ADWIN's δ grid, from River's default (0.002) down."""

Thresholds = dict[str, dict[str, float]]
"""Per stream, per feature key: the largest score seen on the stationary stream."""


def peak_page_hinkley() -> Any:
    """River's Page-Hinkley at its defaults but never alarming; ``take_peak()`` gives the largest
    statistic since the last call (the two-sided test's larger side)."""
    from river.drift import PageHinkley

    class PeakPageHinkley(PageHinkley):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(threshold=math.inf)
            self.peak = 0.0

        def update(self, x: float) -> None:
            super().update(x)
            if self._x_mean.n >= self.min_instances:
                stat = max(self._sum_increase - self._min_increase, self._max_decrease - self._sum_decrease)
                if stat > self.peak:
                    self.peak = stat

        def take_peak(self) -> float:
            peak, self.peak = self.peak, 0.0
            return peak

    return PeakPageHinkley()


def adwin(delta: float) -> Callable[[], Any]:
    from river.drift import ADWIN

    return lambda: ADWIN(delta=delta)


def adwin_name(delta: float) -> str:
    return f"River ADWIN δ={delta:g}"


def build_methods(chosen: set[str], adwin_choice: str | None = None) -> list[Method]:
    """The anchors among ``chosen``; "adwin-chosen" is ADWIN at ``adwin_choice`` alone."""
    missing = set(missing_anchors())
    methods: list[Method] = []
    if "alibi" in chosen and "alibi_detect" not in missing:
        methods.append(AlibiMethod())
    if "evidently" in chosen and "evidently" not in missing:
        methods.append(EvidentlyMethod())
    if "river" not in missing:
        if "pagehinkley" in chosen:
            methods.append(RiverMethod(factories={"River PageHinkley": peak_page_hinkley}))
        if "adwin" in chosen:
            methods.append(RiverMethod(factories={adwin_name(d): adwin(d) for d in ADWIN_DELTAS}))
        if "adwin-chosen" in chosen and adwin_choice is not None:
            delta = next(d for d in ADWIN_DELTAS if adwin_name(d) == adwin_choice)
            methods.append(RiverMethod(factories={adwin_choice: adwin(delta)}))
    return methods


Verdicts = dict[str, dict[str, list[Verdict]]]
"""Per variant, per stream: its verdict on each judged window."""
Counts = dict[str, dict[str, tuple[int, int]]]
"""Per variant, per stream: (alarmed, judged) windows."""


def stationary_verdicts(methods: list[Method], events: int, evidently_windows: int, seed: int) -> Verdicts:
    """Every method's verdicts on the stationary streams drawn with ``seed``."""
    out: Verdicts = {}
    for stream in STREAMS:
        scenario = stationary(stream, events, seed=seed)
        for method in methods:
            began = time.perf_counter()
            cap = evidently_windows if isinstance(method, EvidentlyMethod) else None
            run = run_scenario(scenario, [method], STREAMS_DIR, anchor_windows=cap)
            for variant, verdicts in run.verdicts.items():
                out.setdefault(variant, {})[stream] = [v for _, v in verdicts]
            print(f"stationary {stream} (seed {seed}), {', '.join(method.variants)}: "
                  f"{time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
    return out


def thresholds_from(verdicts: Verdicts) -> dict[str, Thresholds]:
    """Per score-based variant, stream and key: the largest score of any window."""
    thresholds: dict[str, Thresholds] = {}
    for variant, by_stream in verdicts.items():
        for stream, windows_ in by_stream.items():
            peaks: dict[str, float] = {}
            for verdict in windows_:
                for key, value in verdict.scores.items():
                    if value > peaks.get(key, -math.inf):
                        peaks[key] = value
            if peaks:
                thresholds.setdefault(variant, {})[stream] = peaks
    return thresholds


def alarm_counts(verdicts: Verdicts, thresholds: dict[str, Thresholds] | None = None) -> Counts:
    """Alarmed and judged windows; a variant with ``thresholds`` is judged at them."""
    counts: Counts = {}
    for variant, by_stream in verdicts.items():
        for stream, windows_ in by_stream.items():
            limits = (thresholds or {}).get(variant, {}).get(stream)
            alarmed = sum((matched_verdict(v, limits) if limits is not None else v).alarm for v in windows_)
            counts.setdefault(variant, {})[stream] = (alarmed, len(windows_))
    return counts


def calibrate(methods: list[Method], events: int, evidently_windows: int,
              seeds: Sequence[int] = (CALIBRATION_SEED,)) -> tuple[dict[str, Thresholds], Counts]:
    """Thresholds per score-based variant (the largest score over every seed's streams), and
    each variant's alarms at its defaults (summed over the seeds)."""
    thresholds: dict[str, Thresholds] = {}
    defaults: Counts = {}
    for seed in seeds:
        verdicts = stationary_verdicts(methods, events, evidently_windows, seed)
        for variant, by_stream in thresholds_from(verdicts).items():
            for stream, peaks in by_stream.items():
                kept = thresholds.setdefault(variant, {}).setdefault(stream, {})
                for key, value in peaks.items():
                    kept[key] = max(value, kept.get(key, -math.inf))
        for variant, counts in alarm_counts(verdicts).items():
            for stream, (alarmed, judged) in counts.items():
                before = defaults.setdefault(variant, {}).get(stream, (0, 0))
                defaults[variant][stream] = (before[0] + alarmed, before[1] + judged)
    return thresholds, defaults


def matched_verdict(verdict: Verdict, limits: dict[str, float]) -> Verdict:
    """The window's verdict at the calibrated thresholds: a feature alarms past its own."""
    fired = [key.split("=")[0] for key, value in verdict.scores.items() if value > limits.get(key, math.inf)]
    return Verdict(bool(fired), tuple(dict.fromkeys(fired)))


def loosest_clean_adwin(alarms: dict[str, dict[str, tuple[int, int]]]) -> str | None:
    for delta in ADWIN_DELTAS:
        name = adwin_name(delta)
        if name in alarms and all(a == 0 for a, _ in alarms[name].values()):
            return name
    return None


def _per_million(counts: dict[str, tuple[int, int]]) -> str:
    alarmed = sum(a for a, _ in counts.values())
    judged = sum(n for _, n in counts.values())
    return f"{alarmed} / {judged:,} ({alarmed / judged * 1000:.1f})" if judged else "-"


def calibration_table(thresholds: dict[str, Thresholds], defaults: Counts, checked: Counts,
                      adwin_choice: str | None) -> str:
    """Alarms at the defaults on the calibration streams, and at matched strictness on fresh ones."""
    heads = " | ".join(f"fresh {s}" for s in STREAMS)
    lines = [f"| method | strictness | calibration streams at defaults: alarmed / judged (per 1M events) | "
             f"fresh streams at matched strictness (per 1M events) | {heads} |",
             "|---|---|---:|---:|" + "---:|" * len(STREAMS)]
    for variant, by_stream in defaults.items():
        if variant in thresholds:
            how = "per-feature threshold: its largest score on the calibration streams"
        elif variant.startswith("River ADWIN"):
            how = ("the loosest δ with no alarm on the calibration streams" if variant == adwin_choice
                   else "grid")
        else:
            how = "its defaults (not tuned)"
        fresh = checked.get(variant, {})
        cells = " | ".join(f"{fresh[s][0]} / {fresh[s][1]}" if s in fresh else "-" for s in STREAMS)
        lines.append(f"| {variant} | {how} | {_per_million(by_stream)} | "
                     f"{_per_million(fresh) if fresh else '-'} | {cells} |")
    return "\n".join(lines)


def threshold_lines(thresholds: dict[str, Thresholds]) -> list[str]:
    out = []
    for variant, by_stream in thresholds.items():
        for stream, limits in by_stream.items():
            shown = ", ".join(f"{k} {v:.3g}" for k, v in sorted(limits.items()))
            out.append(f"- {variant}, {stream}: {shown}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--stationary-events", type=int, default=1_000_000,
                        help="events per stationary stream used for calibration (1,000,000)")
    parser.add_argument("--evidently-windows", type=int, default=200,
                        help="stationary windows per stream Evidently is calibrated on (200)")
    parser.add_argument("--only", default="ours,alibi,evidently,pagehinkley,adwin",
                        help="comma-separated among ours, alibi, evidently, pagehinkley, adwin")
    parser.add_argument("--calibration-seeds", default=str(CALIBRATION_SEED),
                        help="comma-separated seeds of the stationary streams the thresholds are the "
                        f"largest scores over ({CALIBRATION_SEED})")
    parser.add_argument("--check-seed", type=int, default=CHECK_SEED,
                        help=f"seed of the fresh stationary streams checked at the thresholds ({CHECK_SEED})")
    parser.add_argument("--quick", action="store_true",
                        help="100,000 stationary events per stream, 30 Evidently windows")
    args = parser.parse_args(argv)
    if args.quick:
        args.stationary_events, args.evidently_windows = 100_000, 30
    chosen = set(args.only.split(","))
    seeds = [int(seed) for seed in args.calibration_seeds.split(",")]
    if args.check_seed in seeds:
        parser.error("--check-seed must not be a calibration seed: the check is on fresh streams")
    methods = build_methods(chosen)
    ours = OursMethod("drift", {}) if "ours" in chosen else None
    print(f"# Drift delay at matched strictness ({args.stationary_events:,} stationary events per "
          f"stream; Evidently on {args.evidently_windows} windows of each)\n")
    missing = missing_anchors()
    if missing:
        print(f"> note: not installed, so not run: {', '.join(missing)}\n")

    everyone: list[Method] = [*methods, *([ours] if ours else [])]
    thresholds, defaults = calibrate(everyone, args.stationary_events, args.evidently_windows, seeds)
    adwin_choice = loosest_clean_adwin(defaults)
    kept = [m for m in everyone if not any(v.startswith("River ADWIN") for v in m.variants)]
    check_methods = kept + build_methods({"adwin-chosen"}, adwin_choice)
    checked = alarm_counts(stationary_verdicts(check_methods, args.stationary_events, args.evidently_windows,
                                               args.check_seed), thresholds)
    print("## Calibration on stationary streams, and a check on fresh ones\n")
    print(f"Calibration streams: `drift_shifts.stationary` seed{'s' if len(seeds) > 1 else ''} "
          f"{', '.join(map(str, seeds))}; fresh streams: seed {args.check_seed}. Per 1M events = alarmed "
          "windows per 1,000 windows of 1,000 events.\n")
    print(calibration_table(thresholds, defaults, checked, adwin_choice) + "\n")

    runs = {}
    for scenario in scenarios():
        began = time.perf_counter()
        runs[scenario.name] = (scenario, run_scenario(scenario, [*([ours] if ours else []), *methods],
                                                      STREAMS_DIR))
        print(f"{scenario.name}: {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)

    variants: list[str] = []
    if ours:
        variants.append(ours.variants[0])
    variants += [f"{v} (matched)" for v in thresholds]
    if adwin_choice:
        variants.append(f"{adwin_choice} (matched)")
    scores: dict[str, dict[str, Score]] = {}
    described = {}
    for name, (scenario, run) in runs.items():
        described[name] = scenario.describe()
        by: dict[str, Score] = {}
        for variant, verdicts in run.verdicts.items():
            if variant in thresholds:
                limits = thresholds[variant][scenario.stream]
                matched = [(i, matched_verdict(v, limits)) for i, v in verdicts]
                by[f"{variant} (matched)"] = score(scenario, matched, f"{variant} (matched)")
            elif variant == adwin_choice:
                by[f"{variant} (matched)"] = score(scenario, verdicts, f"{variant} (matched)")
            elif ours and variant == ours.variants[0]:
                by[variant] = score(scenario, verdicts, variant)
        scores[name] = by

    print("## Injected shifts, every anchor at matched strictness\n")
    print("Windows from the shift's start to the first alarm; in brackets, alarms in the 5 windows "
          "before the shift (out of sample); * = the first alarm did not name the shifted feature.\n")
    print(scenario_table(scores, variants, described) + "\n")
    print(summary_table(scores, variants, {}, {}) + "\n")
    if ours:
        print(versus_table(scores, ours.variants[0]) + "\n")
        print("Each anchor as a whole (clean: no alarm before the shift, the first alarm names the "
              "shifted feature):\n")
        print(head_to_head_table(scores, ours.variants[0]) + "\n")
        mean_delay = {v: statistics.mean([s[v].delay_windows or 0 for s in scores.values()
                                          if v in s and s[v].detected] or [math.nan]) for v in variants}
        print("Mean delay over detected scenarios (windows): "
              + "; ".join(f"{v} {d:.2f}" for v, d in mean_delay.items()) + "\n")
    print("## Thresholds (score units: Alibi Detect -log10 p; Evidently its distance; Page-Hinkley its "
          "statistic)\n")
    print("\n".join(threshold_lines(thresholds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
