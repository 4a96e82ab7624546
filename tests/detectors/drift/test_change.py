"""Streaming change detectors for per-window operations metrics: Page-Hinkley, CUSUM, ADWIN-style."""

from __future__ import annotations

import doctest
import json
from typing import Any

import numpy as np
import pytest

from inferwatch.detectors.drift import change as change_module
from inferwatch.detectors.drift.change import (
    DETECTORS,
    Adwin,
    Change,
    ChangeDetector,
    Cusum,
    PageHinkley,
    build,
    restore,
)

NAMES = sorted(DETECTORS)
START = 200
"""Index (0-based) of the first shifted window in the step and ramp streams: well past warm-up."""


def gaussian(seed: int, n: int, *, mean: float = 250.0, std: float = 20.0) -> np.ndarray:
    return mean + std * np.random.default_rng(seed).standard_normal(n)


def feed(detector: ChangeDetector, values: Any, weights: Any = None) -> list[Change]:
    weights = np.ones(len(values)) if weights is None else weights
    found = [detector.update(float(v), float(w)) for v, w in zip(values, weights, strict=True)]
    return [c for c in found if c is not None]


def step(seed: int, size_std: float, n: int = START + 200) -> np.ndarray:
    values = gaussian(seed, n)
    values[START:] += size_std * 20.0
    return values


def test_the_three_are_change_detectors_built_by_name() -> None:
    assert NAMES == ["adwin", "cusum", "page_hinkley"]
    for name in NAMES:
        detector = build(name)
        assert isinstance(detector, ChangeDetector)
        assert detector.name == name
    cusum = build("cusum", h=12.0)
    assert isinstance(cusum, Cusum)
    assert cusum.h == 12.0


def test_docstring_examples() -> None:
    result = doctest.testmod(change_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("size", "within"), [(5.0, 12), (-5.0, 12), (2.0, 30), (-2.0, 30)])
def test_step_is_detected_within_a_few_windows_in_its_direction(name: str, size: float, within: int) -> None:
    for seed in range(5):
        changes = feed(build(name), step(seed, size))
        assert changes, f"{name} missed a {size:+} std step (seed {seed})"
        first = changes[0]
        assert first.direction == ("up" if size > 0 else "down")
        assert START < first.at <= START + within, f"{name} seed {seed}: window {first.at}"
        # the change-point estimate lands near the true onset (window START + 1, 1-based)
        assert abs(first.onset - (START + 1)) <= 8
        assert first.mean_before == pytest.approx(250.0, abs=10.0)
        assert first.mean_after == pytest.approx(250.0 + 20.0 * size, abs=0.6 * 20.0 * abs(size))
        assert first.statistic > first.threshold


@pytest.mark.parametrize("name", NAMES)
def test_a_step_that_persists_is_reported_once_then_becomes_the_new_normal(name: str) -> None:
    changes = feed(build(name), step(3, 4.0, n=START + 2_000))
    assert len(changes) == 1


@pytest.mark.parametrize("name", NAMES)
def test_gradual_ramp_is_detected(name: str) -> None:
    for seed in range(5):
        values = gaussian(seed, START + 300)
        values[START:] += 20.0 * 0.02 * np.arange(1, 301)  # +0.02 std a window: 2 std after 100 windows
        changes = feed(build(name), values)
        assert changes
        assert changes[0].direction == "up"
        assert START < changes[0].at <= START + 150


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["gaussian", "lognormal", "error_share"])
def test_stationary_streams_stay_silent(name: str, kind: str) -> None:
    n = 5_000
    rng = np.random.default_rng({"gaussian": 11, "lognormal": 12, "error_share": 13}[kind])
    weights = None
    if kind == "gaussian":
        values = 250.0 + 20.0 * rng.standard_normal(n)
    elif kind == "lognormal":  # heavy-tailed window latency: lognormal with sigma 1 (skewness about 6)
        values = 120.0 * np.exp(rng.standard_normal(n))
    else:  # 1% errors, binomial, request counts as weights
        counts = rng.poisson(150, n).clip(min=20)
        values, weights = rng.binomial(counts, 0.01) / counts, counts.astype(float)
    assert feed(build(name), values, weights) == []


@pytest.mark.parametrize("name", NAMES)
def test_the_same_defaults_work_in_any_unit(name: str) -> None:
    values = step(4, 3.0)
    in_ms, in_s = feed(build(name), values), feed(build(name), values / 1000.0 + 7.0)
    assert [(c.at, c.direction, c.windows_since_change) for c in in_ms] == [
        (c.at, c.direction, c.windows_since_change) for c in in_s]
    assert [c.statistic for c in in_ms] == pytest.approx([c.statistic for c in in_s], rel=1e-6)
    assert in_s[0].scale == pytest.approx(in_ms[0].scale / 1000.0)


@pytest.mark.parametrize("name", NAMES)
def test_weights_are_relative_to_the_typical_window(name: str) -> None:
    values = step(5, 3.0)
    as_ones = feed(build(name), values)
    as_counts = feed(build(name), values, np.full(len(values), 640.0))
    assert as_ones == as_counts


@pytest.mark.parametrize("name", NAMES)
def test_quiet_windows_count_less(name: str) -> None:
    """Every fifth window has 2% of the usual requests, hence 7x the noise: weighted, it is no change,
    and the busy windows' precision is not drowned by the quiet ones."""
    rng = np.random.default_rng(6)
    n = START + 3_000
    counts = np.where(np.arange(n) % 5 == 4, 10.0, 500.0)
    values = 250.0 + 20.0 * rng.standard_normal(n) * np.sqrt(500.0 / counts)
    assert feed(build(name), values[START:], counts[START:]) == []

    values[START:] += 2.0 * 20.0  # a step of 2 std of a busy window
    weighted, unweighted = feed(build(name), values, counts), feed(build(name), values)
    assert weighted
    assert weighted[0].at <= START + 50
    assert not unweighted or unweighted[0].at > weighted[0].at + 20


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("cut", [30, START + 5, START + 60])
def test_state_round_trips_through_json_and_continues_identically(name: str, cut: int) -> None:
    values = step(7, 3.0, n=START + 400)
    values[START + 150:] -= 6.0 * 20.0  # and a second change, down, after the first is absorbed
    weights = np.random.default_rng(8).uniform(50, 150, len(values))
    original = build(name)
    head = feed(original, values[:cut], weights[:cut])
    copy = restore(json.loads(json.dumps(original.to_dict())))
    assert copy.to_dict() == original.to_dict()
    tail_original = feed(original, values[cut:], weights[cut:])
    tail_copy = feed(copy, values[cut:], weights[cut:])
    assert len(head + tail_original) == 2
    assert tail_copy == tail_original
    assert copy.to_dict() == original.to_dict()


def test_restore_rejects_what_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="detector must be one of"):
        restore({"detector": "ewma"})
    state = Cusum().to_dict()
    state["version"] = 99
    with pytest.raises(ValueError, match="version"):
        Cusum.from_dict(state)
    with pytest.raises(ValueError, match="not a page_hinkley state"):
        PageHinkley.from_dict(Cusum().to_dict())


@pytest.mark.parametrize(
    ("cls", "option", "value"),
    [
        (PageHinkley, "delta", -0.1),
        (PageHinkley, "threshold", 0.0),
        (PageHinkley, "alpha", 0.0),
        (PageHinkley, "alpha", 1.5),
        (Cusum, "k", -1.0),
        (Cusum, "h", float("nan")),
        (Cusum, "min_windows", 2),
        (Cusum, "clip", 0.0),
        (Cusum, "min_scale", -1.0),
        (Adwin, "delta", 1.0),
        (Adwin, "min_side", 0),
        (Adwin, "max_window", 20),
    ],
)
def test_bad_options_raise_naming_the_option(cls: type[Any], option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"^{option} "):
        cls(**{option: value})


def test_build_rejects_an_unknown_name_and_unknown_options() -> None:
    with pytest.raises(ValueError, match="name must be one of"):
        build("ddm")
    with pytest.raises(TypeError, match="lambda_"):
        build("page_hinkley", lambda_=3.0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("value", "weight", "field"), [(float("nan"), 1.0, "value"), (1.0, 0.0, "weight"),
                                                         (1.0, float("inf"), "weight")])
def test_bad_values_raise(name: str, value: float, weight: float, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field} must be finite"):
        build(name).update(value, weight)


@pytest.mark.parametrize("name", NAMES)
def test_reset_forgets_the_reference(name: str) -> None:
    detector = build(name)
    feed(detector, gaussian(9, 100))
    assert detector.to_dict()["reference"] is not None
    detector.reset()
    assert detector.to_dict()["reference"] is None
    assert detector.to_dict() == build(name).to_dict()
    # warm-up again: a wild level during the first windows is learnt, not reported
    assert feed(detector, gaussian(10, 59, mean=9_000.0)) == []


def test_a_metric_constant_in_warm_up_needs_min_scale_to_tolerate_noise() -> None:
    """Error share 0 throughout warm-up: later errors are a change unless min_scale says otherwise."""
    later = np.tile([0.0, 0.002, 0.0, 0.001], 50)
    assert feed(Cusum(), np.concatenate([np.zeros(60), later]))[0].direction == "up"
    assert feed(Cusum(min_scale=0.005), np.concatenate([np.zeros(60), later])) == []
    surge = feed(Cusum(min_scale=0.005), np.concatenate([np.zeros(60), np.full(20, 0.05)]))
    assert surge
    assert surge[0].at <= 66


def test_evidence_says_what_moved_against_which_threshold() -> None:
    (found,) = feed(Cusum(), step(1, 4.0))
    evidence = found.evidence()
    json.dumps(evidence)
    assert evidence["detector"] == "cusum"
    assert evidence["direction"] == "up"
    assert evidence["threshold"] == 11.5
    assert evidence["statistic"] > 11.5
    assert evidence["shift_std"] == pytest.approx(4.0, abs=1.5)
    assert evidence["onset_window_index"] == found.at - found.windows_since_change + 1
    assert "slack k" in evidence["statistic_is"]
    assert f"level moved up from {found.mean_before:.4g} to {found.mean_after:.4g}" in evidence["summary"]
    assert "exceeded its threshold 11.50" in evidence["summary"]
