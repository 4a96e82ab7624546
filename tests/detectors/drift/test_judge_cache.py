"""What the drift judge caches: the same numbers as computing afresh, and never a stale reference.

Judging a window reads every feature's values, counts, value types and missing share from both
summaries, and the reference's side of that is the same window after window. The summary reads
them all in one pass and memoises what the detector derives from a reference; these tests pin
that the one-pass tables equal the per-key definitions, that a memo dies with the sample it was
computed from, and that a detector whose reference changes (set, rolled, reloaded) judges
against the new one.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from inferwatch.collectors.event import EventOutput
from inferwatch.detectors.drift import catalogue
from inferwatch.detectors.drift.detector import DriftDetector, Reference
from inferwatch.detectors.drift.sketch import WindowSummary, summarise_rows
from inferwatch.detectors.drift.statistics import NumericReference, compare_numeric
from inferwatch.testing import make_event

START = 1_767_225_600.0
CREATED = datetime(2026, 1, 1, tzinfo=UTC)
PROMPTS = ["How do I reset my password?", "Summarise this article about rainfall in Spain.",
           "Write a short poem about the sea.", "Comment réinitialiser mon mot de passe ?"]


# --- the definitions, one scan of the rows per key (what the summary computed before) ----------

def _values(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [v for row in rows if isinstance(v := row.get(key), float)]


def _counts(rows: list[dict[str, Any]], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in rows:
        if isinstance(value := row.get(key), str):
            out[value] = out.get(value, 0) + 1
    return out


def _value_types(rows: list[dict[str, Any]], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in rows:
        if (value := row.get(key)) is not None:
            kind = "number" if isinstance(value, float) else "text"
            out[kind] = out.get(kind, 0) + 1
    return out


def _presence(rows: list[dict[str, Any]], key: str) -> tuple[int, int]:
    tabular = [row for row in rows if any(k.startswith("input.") for k in row)]
    return sum(key in row for row in tabular), len(tabular)


def _matrix(rows: list[dict[str, Any]], keys: list[str]) -> list[list[float]]:
    return [[row[k] for k in keys] for row in rows if all(isinstance(row.get(k), float) for k in keys)]


def _messy(n: int, seed: int = 0) -> WindowSummary:
    """Rows with missing inputs, a feature that is sometimes text, booleans and non-tabular rows."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        row: dict[str, Any] = {"x": rng.gauss(0, 1), "plan": rng.choice(["a", "b", True])}
        if i % 7:
            row["y"] = rng.gauss(5, 2)
        if i % 11 == 0:
            row["x"] = "n/a"  # a number column carrying text
        if i % 13 == 0:
            row = {"output.label": rng.choice(["ok", "spam"]), "text.chars": float(i)}  # not tabular
        rows.append(row)
    return summarise_rows(rows, "m", k=n)


def _kinds(rows: list[dict[str, Any]]) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for row in rows:
        for key, value in row.items():
            if key not in kinds and not key.startswith("_"):
                kinds[key] = "numeric" if isinstance(value, float) else "categorical"
    return kinds


def test_the_one_pass_tables_equal_the_per_key_definitions() -> None:
    summary = _messy(600)
    rows = summary.rows()
    keys = sorted({k for row in rows for k in row} | {"input.absent"})
    assert list(summary.keys().items()) == list(_kinds(rows).items())
    assert _presence(rows, "input.y")[0] < _presence(rows, "input.y")[1]  # the data has missing values
    assert _value_types(rows, "input.x") == {"number": len(_values(rows, "input.x")),
                                             "text": _counts(rows, "input.x")["n/a"]}
    for key in keys:
        assert summary.values(key).tolist() == _values(rows, key), key
        assert summary.counts(key) == _counts(rows, key), key
        assert list(summary.counts(key).items()) == list(_counts(rows, key).items()), key
        assert summary.value_types(key) == _value_types(rows, key), key
        assert summary.presence(key) == _presence(rows, key), key
    for columns in (["input.x", "input.y"], ["input.y"], ["input.y", "input.absent"], []):
        matrix = summary.matrix(columns)
        assert matrix.shape == (len(_matrix(rows, columns)), len(columns))
        assert matrix.tolist() == _matrix(rows, columns), columns


def test_a_memo_is_computed_once_and_dropped_when_the_sample_changes() -> None:
    summary = _messy(300)
    calls: list[int] = []

    def mean() -> float:
        calls.append(1)
        return float(summary.values("input.y").mean())

    first = summary.memo("mean", mean)
    assert summary.memo("mean", mean) == first
    assert len(calls) == 1
    extra = WindowSummary("m", k=50)
    for h in range(50):  # the smallest hashes there are: all enter the merged sample
        extra.add_values(h, {"input.y": 1000.0})
    summary.merge(extra)
    assert summary.memo("mean", mean) != first
    assert len(calls) == 2
    summary.add_values(50, {"input.y": -5000.0})
    summary.memo("mean", mean)
    assert len(calls) == 3
    assert summary.values("input.y").tolist() == _values(summary.rows(), "input.y")


def test_the_tables_follow_a_summary_that_grows_after_being_read() -> None:
    summary = WindowSummary("m", k=1000)
    for i in range(40):
        summary.add(make_event(START + i, model="m", features={"x": float(i)}))
    summary.seal()
    assert summary.values("input.x").size == 40
    for i in range(40, 60):
        summary.add(make_event(START + i, model="m", features={"x": float(i)}))
    summary.seal()
    assert sorted(summary.values("input.x").tolist()) == [float(i) for i in range(60)]
    assert summary.presence("input.x") == (60, 60)


def test_a_profiled_numeric_reference_gives_the_same_statistics() -> None:
    rng = np.random.default_rng(3)
    reference, current = rng.normal(size=3000), rng.normal(0.2, 1.1, size=1000)
    profile = NumericReference.of(reference)
    with pytest.raises(ValueError, match="read-only"):
        profile.values[0] = 1.0
    reference[0] = 99.0  # the caller's array changing later does not change the profile
    assert profile.values[0] != 99.0
    reference[0] = profile.values[0]
    fresh, profiled = compare_numeric(reference, current), compare_numeric(profile, current)
    for name, value in vars(fresh).items():
        other = getattr(profiled, name)
        if isinstance(value, np.ndarray):
            assert np.array_equal(value, other), name
        else:
            assert value == other, name
    other_bins = compare_numeric(profile, current, bins=5)  # profiled with 10 bins: re-binned
    assert other_bins.psi == compare_numeric(reference, current, bins=5).psi
    with pytest.raises(ValueError, match="reference is empty"):
        NumericReference.of(np.array([]))


# --- the detector: cached reference statistics never outlive their reference --------------------

def _detector(**options: Any) -> DriftDetector:
    """A detector that judges each 400-event window of these tests alone (the default carries
    windows of fewer than 1,000 events over)."""
    return DriftDetector(**{"min_events": 200, **options})


def _window(detector: DriftDetector, w: int, shift: float, n: int = 400, seed: int = 0) -> list[Any]:
    rng = random.Random(seed * 1000 + w)
    for i in range(n):
        a = rng.gauss(0.0, 1.0)
        features: dict[str, Any] = {"a": a, "b": 0.9 * a + 0.436 * rng.gauss(0.0, 1.0),
                                    "c": rng.gauss(10.0 + shift, 2.0), "plan": rng.choice(["free", "pro"])}
        if i % 5 == 0:
            del features["b"]
        detector.observe(make_event(START + w * 60 + (i + 0.5) * 60 / n, principal=f"p{i % 50}", model="m",
                                    features=features, output=EventOutput(label=rng.choice(["ok", "no"])),
                                    text=rng.choice(PROMPTS[:3] if shift < 1 else PROMPTS),
                                    id=f"s{seed}-w{w}-e{i}"))
    return [f.model_dump(mode="json") for f in detector.close_window(
        datetime.fromtimestamp(START + (w + 1) * 60, UTC)) if f.detector == "drift"]


def _reference(shift: float, seed: int) -> WindowSummary:
    maker = DriftDetector(reference_events=1000)
    for w in range(3):
        _window(maker, w, shift, seed=seed)
    reference = maker.judge.reference("m")
    assert reference is not None
    return reference.summary


@pytest.fixture
def verdicts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float, float]]:
    """Every verdict the detector corrects for multiple testing: feature, raw p-value, effect."""
    seen: list[tuple[str, float, float]] = []
    correct = catalogue.correct

    def recording(found: list[catalogue.FeatureVerdict], method: str = "holm", *,
                  untested: int = 0) -> list[float]:
        seen.extend((v.feature, v.p_value, v.effect) for v in found)
        return correct(found, method, untested=untested)

    monkeypatch.setattr(catalogue, "correct", recording)
    return seen


def test_judging_against_a_cached_reference_equals_judging_against_a_fresh_copy(
        verdicts: list[tuple[str, float, float]]) -> None:
    reference = _reference(0.0, seed=1)
    # One window at a time on both sides: the fresh detector has no recent windows to merge.
    cached = _detector(operations=False, recent_windows=1)
    cached.judge.set_reference("m", Reference(reference, "warmup", CREATED))
    for w in range(6):
        shift = 0.0 if w < 3 else 1.5
        verdicts.clear()
        found = _window(cached, w, shift, seed=2)
        from_cache = list(verdicts)
        verdicts.clear()
        fresh = _detector(operations=False, recent_windows=1)
        copy = WindowSummary.from_dict(reference.to_dict())
        fresh.judge.set_reference("m", Reference(copy, "warmup", CREATED))
        assert found == _window(fresh, w, shift, seed=2), w
        assert from_cache == verdicts, w
        assert {"input.a", "input.c", "input.b (missing share)", "inputs (together)", "text.language",
                "text (n-grams)"} <= {name for name, _, _ in verdicts}
        assert bool(found) == (shift > 0)
    # the detector did keep the reference's statistics (so later windows did not recompute them)
    assert reference.memo(("numeric", "input.c"), lambda: None) is not None


def test_a_new_reference_is_judged_against_not_the_cached_one() -> None:
    detector = _detector(text=False, operations=False)
    detector.judge.set_reference("m", Reference(_reference(0.0, seed=1), "warmup", CREATED))
    assert _window(detector, 10, 0.0, seed=3) == []
    detector.judge.set_reference("m", Reference(_reference(3.0, seed=1), "file", CREATED))
    found = _window(detector, 11, 0.0, seed=3)
    assert found
    assert "input.c" in found[0]["evidence"]["drifted"]
    assert found[0]["evidence"]["reference"]["source"] == "file"


def test_a_reference_changed_in_place_is_judged_as_it_now_is() -> None:
    reference = _reference(0.0, seed=1)
    detector = _detector(text=False, operations=False)
    detector.judge.set_reference("m", Reference(reference, "warmup", CREATED))
    assert _window(detector, 10, 3.0, seed=4)  # c shifted by 3 against the reference
    reference.merge(_reference(3.0, seed=5))  # now half the reference's sample has the shift too
    after = _window(detector, 11, 3.0, seed=4)
    fresh = _detector(text=False, operations=False)
    fresh.judge.set_reference("m", Reference(WindowSummary.from_dict(reference.to_dict()), "warmup",
                                             CREATED))
    assert after == _window(fresh, 11, 3.0, seed=4)
