"""The drift evaluation's ground truth: each injected shift is what, where and how big it claims.

benchmarks/drift_eval.py scores every method against these scenarios, so a scenario that shifts
the wrong feature, starts a window late or leaks the shift into the reference would make every
figure in docs/detectors/drift.md wrong without anyone noticing.
"""

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from inferwatch.detectors.windows import WindowClock

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import drift_eval as de  # noqa: E402
import drift_shifts as ds  # noqa: E402
from drift_anchors import Verdict  # noqa: E402


def _scenario(kind: ds.ShiftKind, feature: str, magnitude: float, onset: ds.Onset = "abrupt",
              target: str | None = None) -> ds.Scenario:
    return ds.Scenario(f"t/{kind}", "synthetic", ds.Shift(kind, feature, magnitude, target=target), onset,
                       start_window=6, windows=18, seed=4)


def _column(scenario: ds.Scenario, name: str, first: int, last: int) -> np.ndarray:
    parts = [w.columns[name] for w in ds.windows(scenario) if first <= w.index < last]
    return np.concatenate(parts)


def test_nothing_changes_before_the_shift_starts() -> None:
    shifted = _scenario("mean", "x", 0.5)
    plain = replace(shifted, shift=None)
    for a, b in zip(ds.windows(shifted), ds.windows(plain), strict=True):
        if a.index < shifted.start_window:
            assert a.intensity == 0.0
            assert a.rows() == b.rows()
        else:
            assert a.intensity == 1.0
            assert not np.array_equal(a.columns["x"], b.columns["x"])
            np.testing.assert_array_equal(a.columns["y"], b.columns["y"])  # only x is touched


def test_mean_shift_moves_the_mean_by_k_standard_deviations() -> None:
    s = _scenario("mean", "x", 0.5)
    before = _column(s, "x", 0, s.start_window)
    after = _column(s, "x", s.start_window, s.windows)
    assert after.mean() - before.mean() == pytest.approx(0.5, abs=0.06)
    assert after.std() == pytest.approx(before.std(), rel=0.05)


def test_gradual_shift_ramps_linearly_then_holds() -> None:
    s = _scenario("variance", "x", 1.5, onset="gradual")
    intensity = {w.index: w.intensity for w in ds.windows(s)}
    ramp = [intensity[s.start_window + k] for k in range(s.ramp_windows)]
    assert ramp == pytest.approx([(k + 0.5) / s.ramp_windows for k in range(s.ramp_windows)], abs=1e-3)
    assert intensity[s.start_window + s.ramp_windows] == 1.0
    assert intensity[s.start_window - 1] == 0.0


def test_missing_surge_drops_the_feature_from_events() -> None:
    s = _scenario("missing", "amount", 0.3)
    windows = list(ds.windows(s))
    share = [np.mean(["amount" not in (e.input.features or {}) for e in w.events()]) for w in windows]
    assert max(share[: s.start_window]) == 0.0
    assert np.mean(share[s.start_window:]) == pytest.approx(0.3, abs=0.03)


def test_broken_correlation_keeps_the_marginal() -> None:
    s = _scenario("correlation", "y", 1.0)
    x0, y0 = _column(s, "x", 0, s.start_window), _column(s, "y", 0, s.start_window)
    x1, y1 = _column(s, "x", s.start_window, s.windows), _column(s, "y", s.start_window, s.windows)
    assert np.corrcoef(x0, y0)[0, 1] == pytest.approx(0.8, abs=0.03)
    assert abs(np.corrcoef(x1, y1)[0, 1]) < 0.05
    assert y1.mean() == pytest.approx(y0.mean(), abs=0.06)
    assert y1.std() == pytest.approx(y0.std(), rel=0.05)


def test_category_share_change_moves_the_stated_mass() -> None:
    s = _scenario("category", "segment", 0.15, target="e")
    before = np.mean(_column(s, "segment", 0, s.start_window) == "e")
    after = np.mean(_column(s, "segment", s.start_window, s.windows) == "e")
    assert before == pytest.approx(0.08, abs=0.015)
    assert after == pytest.approx(0.08 + 0.15 * 0.92, abs=0.02)


def test_unit_change_multiplies_every_value() -> None:
    s = _scenario("unit", "amount", 1000.0)
    before = np.median(_column(s, "amount", 0, s.start_window))
    after = np.median(_column(s, "amount", s.start_window, s.windows))
    assert after / before == pytest.approx(1000.0, rel=0.15)


def test_windows_are_the_pipelines_windows_and_deterministic() -> None:
    s = ds.stationary("synthetic", 5_000)
    clock = WindowClock(ds.WINDOW_S)
    first = list(ds.windows(s))
    for window in first:
        events = window.events()
        assert len(events) == s.events_per_window
        assert all(window.start <= e.ts < window.end for e in events)
        closed = [end for e in events for end in clock.advance(e.ts)]
        assert closed == ([] if window.index == 0 else [window.start])
    again = [w.rows() for w in ds.windows(s)]
    assert again == [w.rows() for w in first]


_VIC_FILL = (0.003467, 0.422915, 0.414912)  # vicprice, vicdemand, transfer before ELEC_FIRST_ROW


def _elec_dir(tmp_path: Path) -> Path:
    """shared/datasets/streams when it is here; else a stand-in elec.csv with the real file's
    layout (the Victorian columns one constant fill before ELEC_FIRST_ROW), so the loader is
    tested on every machine, CI's clean clone included."""
    if (ds.STREAMS_DIR / "elec.csv").exists():
        return ds.STREAMS_DIR
    rng = np.random.default_rng(5)
    lines = ["period,nswprice,nswdemand,vicprice,vicdemand,transfer,class"]
    for i in range(ds.ELEC_FIRST_ROW + 3_000):
        period, price, demand = (i % 48) / 47, rng.uniform(0.02, 0.1), rng.uniform(0.2, 0.8)
        vic = _VIC_FILL if i < ds.ELEC_FIRST_ROW else tuple(rng.uniform(0.0, 1.0, 3))
        lines.append(",".join(str(v) for v in (period, price, demand, *vic, int(rng.random() < 0.4))))
    (tmp_path / "elec.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_elec_skips_the_constant_fill_rows(tmp_path: Path) -> None:
    directory = _elec_dir(tmp_path)
    stream = ds.load_stream("elec", directory)
    window = next(ds.windows(ds.stationary("elec", 4_000), directory))
    vicdemand = window.columns["vicdemand"]
    assert len(set(vicdemand.tolist())) > 100
    assert float(np.mean(vicdemand == _VIC_FILL[1])) < 0.01  # none of the fill rows is drawn
    assert set(window.columns["class"].tolist()) == {"up", "down"}
    assert stream.schema.categorical == ("class", "daypart")


def test_score_counts_delay_false_alarms_and_the_named_feature() -> None:
    s = _scenario("mean", "x", 0.5)
    quiet, wrong, right = Verdict(False), Verdict(True, ("y",)), Verdict(True, ("x",))
    verdicts = [(3, quiet), (4, wrong), (5, quiet), (6, quiet), (7, right), (8, right)]
    result = de.score(s, verdicts, "m")
    assert (result.detected, result.delay_windows, result.delay_events) == (True, 2, 2_000)
    assert (result.false_alarms, result.monitored_before, result.named_right) == (1, 3, True)
    missed = de.score(s, [(i, quiet) for i in range(3, 18)], "m")
    assert not missed.detected
    assert missed.delay_windows is None


def test_harness_drives_a_detector_on_the_pipelines_windows() -> None:
    s = replace(ds.scenarios()[0], windows=11)  # synthetic x +0.5 sd, abrupt, from window 8
    ours = de.OursMethod("drift", {})
    run = de.run_scenario(s, [ours], ds.STREAMS_DIR)
    result = de.score(s, run.verdicts[ours.variants[0]], "ours")
    assert (result.detected, result.delay_windows, result.named_right) == (True, 1, True)
    assert (result.false_alarms, result.monitored_before) == (0, 5)
