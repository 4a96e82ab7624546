"""drift_matched.py's calibration: thresholds from the stationary streams, verdicts at them.

The matched-strictness table in docs/detectors/drift.md says every anchor raised no alarm on the
stationary streams and gives its delays at that strictness; a threshold taken from the wrong
windows, or a verdict that compares the wrong way, would make that table wrong silently.
"""

import sys
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import drift_matched as dm  # noqa: E402
from drift_anchors import Method, Verdict  # noqa: E402
from drift_shifts import Window, stationary, windows  # noqa: E402


def test_a_feature_alarms_only_past_its_own_threshold() -> None:
    limits = {"x": 2.0, "segment=e": 0.5, "segment=a": 9.0}
    at = dm.matched_verdict(Verdict(False, (), {"x": 2.0, "segment=e": 0.4}), limits)
    assert at == Verdict(False, ())  # equal to the stationary maximum is not past it
    past = dm.matched_verdict(Verdict(False, (), {"x": 2.5, "segment=e": 0.6, "segment=a": 1.0}), limits)
    assert past.alarm
    assert past.features == ("x", "segment")  # River's level keys name their feature
    unseen = dm.matched_verdict(Verdict(True, ("z",), {"z": 1e9}), limits)
    assert not unseen.alarm  # a key never calibrated has no threshold to pass


def test_the_loosest_adwin_delta_with_no_stationary_alarm_is_chosen() -> None:
    names = [dm.adwin_name(d) for d in dm.ADWIN_DELTAS]
    alarms = {names[0]: {"synthetic": (3, 997), "elec": (0, 997)},
              names[1]: {"synthetic": (0, 997), "elec": (1, 997)},
              names[2]: {"synthetic": (0, 997), "elec": (0, 997)},
              names[3]: {"synthetic": (0, 997), "elec": (0, 997)}}
    assert dm.loosest_clean_adwin(alarms) == names[2]
    alarms[names[2]]["elec"] = (2, 997)
    alarms[names[3]]["elec"] = (2, 997)
    assert dm.loosest_clean_adwin(alarms) is None


class _Echo(Method):
    """Scores each window by its index and its first x value: known maxima to calibrate on."""

    variants = ("echo",)

    def window(self, window: Window) -> dict[str, Verdict] | None:
        if window.reference:
            return None
        scores = {"index": float(window.index), "x": float(window.columns["x"][0])}
        return {"echo": Verdict(window.index % 2 == 0, (), scores)}


def test_calibration_keeps_each_keys_largest_score_per_stream(monkeypatch: Any) -> None:
    monkeypatch.setattr(dm, "STREAMS", ("synthetic",))
    thresholds, alarms = dm.calibrate([_Echo()], 8_000, evidently_windows=2)
    # stationary(synthetic, 8,000): 8 windows, the first 3 the reference, so 5 judged (3..7).
    assert thresholds["echo"]["synthetic"]["index"] == 7.0
    xs = [float(w.columns["x"][0]) for w in windows(stationary("synthetic", 8_000)) if not w.reference]
    assert thresholds["echo"]["synthetic"]["x"] == max(xs)
    assert alarms["echo"]["synthetic"] == (2, 5)  # windows 4 and 6 alarmed at the defaults
    for window in windows(stationary("synthetic", 8_000)):
        result = _Echo().window(window)
        if result is not None:  # by construction nothing calibrated on alarms at its threshold
            assert not dm.matched_verdict(result["echo"], thresholds["echo"]["synthetic"]).alarm


def test_calibration_over_several_seeds_keeps_the_largest_and_sums_the_alarms(monkeypatch: Any) -> None:
    monkeypatch.setattr(dm, "STREAMS", ("synthetic",))
    each = [dm.calibrate([_Echo()], 8_000, evidently_windows=2, seeds=(seed,)) for seed in (5, 6)]
    thresholds, alarms = dm.calibrate([_Echo()], 8_000, evidently_windows=2, seeds=(5, 6))
    assert thresholds["echo"]["synthetic"]["x"] == max(t["echo"]["synthetic"]["x"] for t, _ in each)
    assert each[0][0]["echo"]["synthetic"]["x"] != each[1][0]["echo"]["synthetic"]["x"]  # the seeds differ
    assert alarms["echo"]["synthetic"] == (4, 10)


def test_fresh_windows_are_counted_at_the_matched_thresholds() -> None:
    quiet, loud = Verdict(True, ("x",), {"x": 1.0}), Verdict(False, (), {"x": 3.0})
    verdicts = {"echo": {"synthetic": [quiet, loud, loud]}, "adwin": {"synthetic": [quiet, loud]}}
    counts = dm.alarm_counts(verdicts, {"echo": {"synthetic": {"x": 2.0}}})
    assert counts["echo"]["synthetic"] == (2, 3)  # its scores against its threshold, not its own verdict
    assert counts["adwin"]["synthetic"] == (1, 2)  # no threshold: its own verdict


def test_head_to_head_counts_only_clean_detections_on_the_same_scenarios() -> None:
    from drift_eval import Score, head_to_head_table

    def s(method: str, delay: int | None, *, false_alarms: int = 0, named_right: bool = True) -> Score:
        return Score("sc", method, delay is not None, delay, None, false_alarms, 5, named_right, 0, 10)

    scores = {
        "a": {"ours": s("ours", 1), "A": s("A", 2)},                    # ours faster
        "b": {"ours": s("ours", 3), "A": s("A", 1)},                    # ours slower
        "c": {"ours": s("ours", 2), "A": s("A", 1, false_alarms=1)},    # A alarmed before: not clean
        "d": {"ours": s("ours", None), "A": s("A", 4, named_right=False)},  # neither cleanly
        "e": {"ours": s("ours", 2), "A": s("A", 2), "B": s("B", 1)},    # as fast as A; B only here
    }
    table = head_to_head_table(scores, "ours")
    assert "| A | 4 / 3 | 3 | 1 | 1 | 1 | 2.00 / 1.67 |" in table
    assert "| B | 1 / 1 | 1 | 0 | 0 | 1 | 2.00 / 1.00 |" in table
