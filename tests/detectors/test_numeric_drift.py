"""NumericDriftDetector: KS + PSI against a warm-up reference, Holm across features."""

from __future__ import annotations

import doctest
import json
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any

import numpy as np
import pytest
from scipy.stats import ks_2samp

from inferwatch.collectors.event import InferenceEvent
from inferwatch.detectors import numeric_drift, state, stats
from inferwatch.detectors.base import Detector
from inferwatch.detectors.numeric_drift import NumericDriftDetector

T0 = 1_767_225_600.0
WINDOW = 60.0


def stream(make_event: Any, windows: int, per_window: int, draw: Any, *, model: str = "iris",
           start_window: int = 0) -> Iterator[InferenceEvent]:
    """``per_window`` events in each of ``windows`` windows; ``draw(window)`` returns features."""
    for w in range(start_window, start_window + windows):
        for i in range(per_window):
            ts = T0 + w * WINDOW + i * (WINDOW / per_window)
            yield make_event(ts, model=model, features=draw(w), trace_id=f"{w:016x}{i:016x}")


def normal_features(rng: np.random.Generator, names: list[str], shift: dict[str, float] | None = None,
                    ) -> dict[str, float]:
    shift = shift or {}
    return {n: float(rng.normal()) + shift.get(n, 0.0) for n in names}


def test_is_a_registered_detector() -> None:
    (ep,) = [ep for ep in entry_points(group="inferwatch.detectors") if ep.name == "numeric_drift"]
    cls = ep.load()
    assert cls is NumericDriftDetector
    assert cls.name == "numeric_drift"
    assert isinstance(cls(), Detector)


def test_fires_on_one_std_mean_shift_and_names_the_feature(make_event: Any, run: Any) -> None:
    rng = np.random.default_rng(1)
    names = ["sepal_length", "sepal_width", "petal_length"]

    def draw(w: int) -> dict[str, float]:
        return normal_features(rng, names, {"petal_length": 1.0} if w >= 5 else None)

    findings = run(NumericDriftDetector(), stream(make_event, 8, 200, draw))

    assert findings, "a 1-std shift in 200-value windows must be caught"
    assert all(f.kind == "drift" and f.subject == "model:iris" and f.model == "iris" for f in findings)
    assert all(f.evidence["features_drifted"] == ["petal_length"] for f in findings)
    first = findings[0]
    assert first.time.timestamp() == T0 + 6 * WINDOW  # the first shifted window
    assert "petal_length" in first.title
    assert "petal_length: KS D=" in first.summary
    feature = first.evidence["features"]["petal_length"]
    assert feature["ks_d"] >= 0.1
    assert feature["psi"] >= 0.2
    assert feature["p_holm"] < 0.01
    assert feature["current"]["mean"] - feature["reference"]["mean"] == pytest.approx(1.0, abs=0.3)
    histogram = feature["histogram"]
    assert len(histogram["reference_counts"]) == len(histogram["current_counts"]) == 10
    assert sum(histogram["current_counts"]) == feature["current"]["n"] == 200
    assert first.evidence["features_tested"] == 3
    assert 0 < len(first.event_ids) <= 20
    assert 0 < len(first.trace_ids) <= 20
    assert first.severity in {"medium", "high"}
    assert first.score == pytest.approx(feature["ks_d"], abs=1e-3)
    json.dumps(first.evidence)  # JSON-serialisable as it is


def test_silent_on_a_large_stationary_stream(make_event: Any, run: Any) -> None:
    """50 windows x 2,000 events: the p-value alone would flag noise; the effect-size floor does not."""
    rng = np.random.default_rng(2)
    names = ["a", "b", "c"]
    events = stream(make_event, 50, 2_000, lambda w: normal_features(rng, names))
    findings = run(NumericDriftDetector(), events)
    assert findings == []


def test_silent_during_warm_up(make_event: Any, run: Any) -> None:
    rng = np.random.default_rng(3)
    detector = NumericDriftDetector(reference_size=500)
    # 480 events, the last 240 shifted by 3 std: still the reference being filled.
    events = stream(make_event, 2, 240, lambda w: normal_features(rng, ["x"], {"x": 3.0} if w else None))
    assert run(detector, events) == []


def test_tiny_shift_with_huge_samples_stays_silent(make_event: Any, run: Any) -> None:
    rng = np.random.default_rng(4)
    detector = NumericDriftDetector(reference_size=5_000, max_window_values=10_000)
    warm = stream(make_event, 1, 5_000, lambda w: normal_features(rng, ["x"]))
    shifted = stream(make_event, 3, 10_000, lambda w: normal_features(rng, ["x"], {"x": 0.02}),
                     start_window=1)
    assert run(detector, [*warm, *shifted]) == []


def test_holm_correction_keeps_many_noisy_features_quiet(make_event: Any, run: Any) -> None:
    """40 stationary features, floors off: raw p-values dip below alpha, Holm-adjusted ones do not."""
    rng = np.random.default_rng(5)
    names = [f"f{i:02d}" for i in range(40)]
    rows = [normal_features(rng, names) for _ in range(1_500)]
    feed = iter(rows)
    detector = NumericDriftDetector(reference_size=500, min_window=100, ks_floor=0.0, psi_threshold=0.0,
                                    alpha=0.05)

    findings = run(detector, stream(make_event, 15, 100, lambda w: next(feed)))

    assert findings == []
    raw = [ks_2samp([r[n] for r in rows[:500]], [r[n] for r in rows[500 + 100 * w: 600 + 100 * w]]).pvalue
           for w in range(10) for n in names]
    assert sum(p < 0.05 for p in raw) >= 5, "uncorrected, some of these 400 tests are false alarms"


def test_bool_and_string_features_are_ignored(make_event: Any, run: Any) -> None:
    rng = np.random.default_rng(6)

    def draw(w: int) -> dict[str, Any]:
        return {"x": float(rng.normal()), "flag": w >= 4, "colour": "red" if w < 4 else "blue"}

    findings = run(NumericDriftDetector(), stream(make_event, 8, 200, draw))
    assert findings == []


def test_low_traffic_accumulates_until_min_window(make_event: Any, run: Any) -> None:
    rng = np.random.default_rng(7)
    warm = stream(make_event, 1, 500, lambda w: normal_features(rng, ["x"]))
    slow = stream(make_event, 6, 40, lambda w: normal_features(rng, ["x"], {"x": 2.0}), start_window=1)
    findings = run(NumericDriftDetector(min_window=100), [*warm, *slow])
    # 40 values a window: tested when 120 have gathered, at the ends of windows 3 and 6.
    assert [f.time.timestamp() for f in findings] == [T0 + 4 * WINDOW, T0 + 7 * WINDOW]
    assert findings[0].evidence["features"]["x"]["current"]["n"] == 120
    assert findings[0].evidence["window_start"] == state.iso_utc(T0 + 1 * WINDOW)


def test_window_values_are_a_bounded_reservoir(make_event: Any, run: Any) -> None:
    rng = np.random.default_rng(8)
    warm = stream(make_event, 1, 500, lambda w: normal_features(rng, ["x"]))
    busy = stream(make_event, 1, 5_000, lambda w: normal_features(rng, ["x"], {"x": 1.0}), start_window=1)
    (finding,) = run(NumericDriftDetector(max_window_values=1_000), [*warm, *busy])
    current = finding.evidence["features"]["x"]["current"]
    assert current == {**current, "n": 5_000, "sampled": 1_000}


def test_models_and_features_are_capped(make_event: Any, run: Any) -> None:
    detector = NumericDriftDetector(reference_size=100, min_window=50, max_models=2, max_features=3)
    events = [make_event(T0 + j, model=model, features={f"f{k}": float(j % 10) for k in range(5)})
              for model in ("m1", "m2", "m3") for j in range(100)]
    shifted = [make_event(T0 + WINDOW + j, model="m3", features={f"f{k}": j % 10 + 5.0 for k in range(5)})
               for j in range(100)]

    findings = run(detector, [*events, *shifted])

    assert detector.models_evicted == 1  # m1, the least recently seen, made room for m3
    (finding,) = findings
    assert finding.model == "m3"
    assert finding.evidence["features_tested"] == 3
    assert finding.evidence["features_drifted"] == ["f0", "f1", "f2"]


def test_same_stream_same_findings(make_event: Any, run: Any) -> None:
    def once() -> list[Any]:
        rng = np.random.default_rng(9)
        events = stream(make_event, 6, 300,
                        lambda w: normal_features(rng, ["x", "y"], {"y": 0.8} if w > 2 else None))
        findings = run(NumericDriftDetector(), events)
        return [(f.time, f.evidence["features_drifted"], f.score) for f in findings]

    assert once() == once() != []


@pytest.mark.parametrize("module", [numeric_drift, stats, state])
def test_docstring_examples(module: Any) -> None:
    assert doctest.testmod(module).failed == 0
