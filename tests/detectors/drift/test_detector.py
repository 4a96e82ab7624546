"""The ``drift`` detector: fires on each kind of shift, silent on stationary traffic of any size."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from inferwatch.collectors.event import EventOutput, InferenceEvent
from inferwatch.detectors.base import Finding
from inferwatch.detectors.drift.detector import OPS_DETECTOR, DriftDetector
from inferwatch.detectors.sqlite_store import SQLiteStore
from inferwatch.detectors.state import iso_utc
from inferwatch.testing import make_event, run_detector

WINDOW = 60.0
START = 1_767_225_600.0  # 2026-01-01
EN = ["How do I reset my password?", "Summarise this article about rainfall in Spain.",
      "Write a short poem about the sea.", "What is the capital of Australia?",
      "Explain recursion to a beginner.", "Draft a polite reply to my landlord."]
FR = ["Comment réinitialiser mon mot de passe ?", "Résume cet article sur la pluie en Espagne.",
      "Écris un court poème sur la mer.", "Quelle est la capitale de l'Australie ?",
      "Explique la récursivité à un débutant.", "Rédige une réponse polie à mon propriétaire."]

Row = dict[str, Any]
Shift = Callable[[Row, random.Random], Row]


def _detector(**options: Any) -> DriftDetector:
    """The detector judging every window of these streams (400 events, mostly) on its own, as
    these tests were written for; the default ``min_events`` (1000) carries such windows over."""
    return DriftDetector(**{"min_events": 200, "max_carry_windows": 10, **options})


def _row(rng: random.Random) -> Row:
    a = rng.gauss(0.0, 1.0)
    return {"a": a, "b": 0.9 * a + 0.436 * rng.gauss(0.0, 1.0), "c": rng.gauss(10.0, 2.0),
            "d": rng.expovariate(1.0), "plan": rng.choices(["free", "pro", "team"], [6, 3, 1])[0],
            "text": rng.choice(EN), "label": rng.choices(["ok", "spam"], [9, 1])[0],
            "latency": 50 + rng.expovariate(0.05)}


def _event(ts: float, row: Row, i: int, **extra: Any) -> InferenceEvent:
    features = {k: row[k] for k in ("a", "b", "c", "d", "plan") if k in row}
    return make_event(ts, principal=f"p{i % 50}", model="m", features=features, text=row["text"],
                      duration_ms=row["latency"], output=EventOutput(label=row["label"]), **extra)


def _stream(windows: int, per_window: int, *, seed: int = 0, shift: Shift | None = None,
            shift_from: int = 10**9, **extra: Any) -> Iterator[tuple[int, InferenceEvent]]:
    rng = random.Random(seed)
    for w in range(windows):
        for i in range(per_window):
            row = _row(rng)
            if shift is not None and w >= shift_from:
                row = shift(row, rng)
            # Ids of their own (not make_event's counter), so the samples do not hang on test order.
            yield w, _event(START + w * WINDOW + (i + 0.5) * WINDOW / per_window, row, i,
                            id=f"s{seed}-w{w}-e{i}", **extra)


def _run(detector: DriftDetector, stream: Iterator[tuple[int, InferenceEvent]]) -> list[tuple[int, Finding]]:
    found: list[tuple[int, Finding]] = []
    current = 0
    for w, event in stream:
        if w != current:
            found += [(current, f) for f in detector.close_window(_at(w))]
            current = w
        detector.observe(event)
    found += [(current, f) for f in detector.close_window(_at(current + 1))]
    return found


def _at(window: int) -> datetime:
    return datetime.fromtimestamp(START + window * WINDOW, UTC)


def _drift(found: list[tuple[int, Finding]]) -> list[tuple[int, Finding]]:
    return [(w, f) for w, f in found if f.detector == "drift"]


def test_stationary_traffic_is_silent() -> None:
    found = _run(_detector(), _stream(40, 400))
    assert found == []


def test_large_stationary_windows_with_a_negligible_shift_are_silent() -> None:
    # 20,000 events a window and a shift of 0.03 standard deviations: a p-value alone would flag
    # it at this size; the effect floors keep it quiet.
    def tiny(row: Row, rng: random.Random) -> Row:
        return {**row, "c": row["c"] + 0.06}

    found = _run(_detector(multivariate=False, text=False), _stream(6, 20_000, shift=tiny, shift_from=1))
    assert _drift(found) == []


def test_a_mean_shift_names_the_feature_with_its_statistics() -> None:
    def shifted(row: Row, rng: random.Random) -> Row:
        return {**row, "c": row["c"] + 2.0}  # one standard deviation

    found = _drift(_run(_detector(), _stream(14, 400, shift=shifted, shift_from=8)))
    assert found, "a one-sigma mean shift was missed"
    first_window, finding = found[0]
    assert first_window == 8
    assert {"input.c", "input.c (location)"} <= set(finding.evidence["drifted"])
    assert finding.kind == "drift"
    assert finding.subject == "model:m"
    c = finding.evidence["features"]["input.c"]
    assert c["p_adjusted"] < 0.01
    assert c["effect"]["passes_floor"]
    assert "histogram" in str(c["statistics"])
    assert finding.evidence["reference"]["source"] == "warmup"
    assert finding.event_ids
    # The title counts features, not tests: input.c's distribution, location (and any other
    # test of it) are one feature, listed with the aspects that moved.
    named = [name for name in finding.evidence["drifted"] if name.startswith("input.c")]
    assert len(named) >= 2
    others = {name.split(" (")[0] for name in finding.evidence["drifted"]} - {"input.c", "inputs"}
    assert f": {1 + len(others)} feature" in finding.title
    # The domain classifier tests the inputs together: named after the features, not counted.
    if "inputs (together)" in finding.evidence["drifted"]:
        assert finding.title.endswith(", and the inputs taken together")
    assert "input.c (" in finding.title
    assert "location" in finding.title.split("input.c (", 1)[1]


@pytest.mark.parametrize(("name", "shift", "expected"), [
    ("category share", lambda r, g: {**r, "plan": g.choices(["free", "pro", "team"], [2, 3, 5])[0]},
     "input.plan"),
    ("variance", lambda r, g: {**r, "d": r["d"] * g.choice([0.2, 3.0])}, "input.d"),
    ("unit change", lambda r, g: {**r, "c": r["c"] * 1000}, "input.c"),
    ("missing surge", lambda r, g: {k: v for k, v in r.items() if k != "a" or g.random() > 0.4},
     "input.a (missing share)"),
    ("output label mix", lambda r, g: {**r, "label": g.choices(["ok", "spam"], [6, 4])[0]}, "output.label"),
    ("prompt language", lambda r, g: {**r, "text": g.choice(FR)}, "text.language"),
    ("numbers become text", lambda r, g: {**r, "c": "n/a" if g.random() < 0.15 else r["c"]},
     "input.c (value types)"),
])
def test_each_kind_of_shift_is_found(name: str, shift: Shift, expected: str) -> None:
    found = _drift(_run(_detector(), _stream(12, 400, shift=shift, shift_from=8)))
    assert found, f"{name}: missed"
    assert all(w >= 8 for w, _ in found), f"{name}: alarm before the shift"
    assert expected in found[0][1].evidence["drifted"], found[0][1].evidence["drifted"]


def test_a_unit_change_in_part_of_the_traffic_is_found_by_the_values_outside_the_range() -> None:
    # 4 % of events send "c" in thousandths of the unit: D moves by about 0.04 and KS cannot see
    # it, but 16 of 400 values beyond anything the reference held cannot happen by chance.
    def some_in_milli(row: Row, rng: random.Random) -> Row:
        return {**row, "c": row["c"] * 1000} if rng.random() < 0.04 else row

    found = _drift(_run(_detector(recent_windows=1), _stream(10, 400, shift=some_in_milli, shift_from=8)))
    assert [w for w, _ in found][:1] == [8], [(w, f.title) for w, f in found]
    evidence = found[0][1].evidence
    key = "input.c (outside reference range)"
    assert evidence["drifted"][0] == key
    judged = evidence["features"][key]
    assert judged["data_type"] == "range"
    assert judged["effect"]["name"] == "share_outside"
    assert judged["effect"]["value"] >= 0.02
    stats = judged["statistics"]
    assert stats["below"] == 0
    assert stats["above"] >= 8
    assert min(stats["examples_above"]) > 1000 * stats["reference_range"][1] / 2
    assert "input.c" not in evidence["drifted"]  # KS alone did not see it
    # The events behind the furthest values are named, and lead the finding's sample ids, so
    # `events search --incident` shows who sent them.
    named = judged["example_event_ids"]
    assert len(named) == 5
    by_id = {e.id: e for w, e in _stream(10, 400, shift=some_in_milli, shift_from=8) if w == 8}
    assert all(by_id[i].input.features["c"] > stats["reference_range"][1] for i in named)
    assert found[0][1].event_ids[:3] == named[:3]


def test_the_caller_behind_values_outside_the_range_is_named() -> None:
    """One caller of twenty sends its "c" in thousandths: the finding says who, in the evidence
    and in the summary (a drift incident's subject is the model, not the caller)."""
    def with_callers(stream: Iterator[tuple[int, InferenceEvent]]) -> Iterator[tuple[int, InferenceEvent]]:
        rng = random.Random(7)
        for w, event in stream:
            event.principal = f"p_{rng.randrange(20):02d}"
            if w >= 8 and event.principal == "p_07":
                event.input.features = {**(event.input.features or {}), "c": event.input.features["c"] * 1000}
            yield w, event

    found = _drift(_run(_detector(recent_windows=1), with_callers(_stream(10, 400))))
    assert found
    finding = found[0][1]
    judged = finding.evidence["features"]["input.c (outside reference range)"]
    assert list(judged["outside_range_callers"]) == ["p_07"]
    assert judged["outside_range_callers"]["p_07"] == judged["outside_range_sampled"] >= 8
    assert (f"; {judged['outside_range_sampled']} of {judged['outside_range_sampled']} sampled values of "
            "input.c outside the range came from principal:p_07") in finding.summary


def test_a_findings_trace_ids_are_those_of_its_sample_events() -> None:
    def some_in_milli(row: Row, rng: random.Random) -> Row:
        return {**row, "c": row["c"] * 1000} if rng.random() < 0.04 else row

    events = [(w, e) for w, e in _stream(10, 400, shift=some_in_milli, shift_from=8)]
    for _, e in events:
        e.trace_id = f"{abs(hash(e.id)) % 16**32:032x}"
    found = _drift(_run(_detector(recent_windows=1), iter(events)))
    assert found
    finding = found[0][1]
    trace_of = {e.id: e.trace_id for _, e in events}
    assert finding.trace_ids == [trace_of[i] for i in finding.event_ids]


def test_new_extremes_of_heavy_tailed_stationary_traffic_are_silent() -> None:
    # A Pareto feature sets a new record now and then in every window; records are exchangeable,
    # so the exact p-value of the share outside the range keeps them quiet (so does the floor).
    def heavy(row: Row, rng: random.Random) -> Row:
        return {**row, "d": rng.paretovariate(1.1)}

    assert _drift(_run(_detector(multivariate=False, text=False),
                       _stream(30, 1_000, shift=heavy, shift_from=0))) == []


def test_a_small_lasting_shift_is_found_on_the_recent_windows_together() -> None:
    # 0.14 standard deviations, 1,000 events a window: below the small-sample floors in every
    # window alone (KS D about 0.06 against 0.1, Cliff's delta about 0.08 against 0.1), past the
    # large-sample floor on three windows' events together (normalised Wasserstein about 0.14
    # against 0.1).
    def small(row: Row, rng: random.Random) -> Row:
        return {**row, "c": row["c"] + 0.28}

    def run(**options: Any) -> list[tuple[int, Finding]]:
        detector = _detector(multivariate=False, text=False, reference_events=5000, **options)
        return _drift(_run(detector, _stream(18, 1000, seed=2, shift=small, shift_from=10)))

    assert run(recent_windows=1) == []
    found = run()
    assert found, "the lasting small shift was missed on the recent windows together"
    window, finding = found[0]
    assert 11 <= window <= 17  # at recent_alpha (0.0001) it takes a few shifted windows' luck
    assert finding.evidence["windows"] == 3
    assert finding.evidence["drifted"] == ["input.c"]
    assert finding.evidence["tested"] >= 4  # the family: every numeric input, tested together or not
    assert finding.evidence["events"] == 3000
    assert finding.evidence["window_start"] == iso_utc(START + (window - 2) * WINDOW + 0.5 * WINDOW / 1000)
    assert "over the last 3 windows" in finding.title
    assert finding.summary.startswith("The last 3 windows (3000 events) together")
    assert finding.evidence["features"]["input.c"]["effect"]["name"] == "wasserstein"
    assert finding.evidence["thresholds"]["alpha"] == 0.0001  # the merge's own, stricter level
    with pytest.raises(ValueError, match="recent_alpha must be in"):
        _detector(recent_alpha=1.0)


def test_the_recent_windows_together_leave_categories_to_single_windows() -> None:
    # A 5-point move in a category's share: under the 7-point floor of a 1,000-event window, over
    # the 5-point floor of 3,000 events. The categories are judged on single windows only, since a
    # fixed 5-point floor is only about 4 standard errors at 3,000 events (a second look at them
    # would double their false alarms), so this stays quiet.
    def more_team(row: Row, rng: random.Random) -> Row:
        return {**row, "plan": rng.choices(["free", "pro", "team"], [55, 30, 15])[0]}

    detector = _detector(multivariate=False, text=False, reference_events=5000)
    found = _drift(_run(detector, _stream(18, 1000, seed=3, shift=more_team, shift_from=10)))
    assert [f.evidence["drifted"] for _, f in found if f.evidence["windows"] > 1] == []


@pytest.mark.parametrize(("per_window", "looks"), [(600, {1}), (300, {1, 3})])
def test_only_windows_with_a_sample_to_gain_are_judged_together(
        monkeypatch: pytest.MonkeyPatch, per_window: int, looks: set[int]) -> None:
    # A window with as many events as the sample holds gains nothing from its neighbours: the
    # merged sample would be no larger.
    detector = _detector(multivariate=False, text=False, sample_size=500)
    compare = detector.judge._compare
    calls: list[int] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("windows", 1))
        return compare(*args, **kwargs)

    monkeypatch.setattr(detector.judge, "_compare", spy)
    _run(detector, _stream(12, per_window))
    assert set(calls) == looks


def test_the_classifier_runs_on_recent_windows_together_only_after_a_window_alone_leaned(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Its AUC on the merge is about the windows' average: with every window alone near 0.5 it
    # cannot reach the floor, so the costly fit is skipped; once one window leans, it runs.
    def broken(row: Row, rng: random.Random) -> Row:
        return {**row, "b": rng.gauss(0.0, 1.0) if rng.random() < 0.5 else row["b"]}

    detector = _detector(text=False, recent_windows=3)
    rows = detector.judge._rows
    fits: list[tuple[bool, float | None]] = []  # (on a merge, AUC)

    def spy(ref: Any, cur: Any, keys: Any) -> Any:
        result = rows(ref, cur, keys)
        fits.append((cur.events > 400, result[0].effect if result else None))
        return result

    def merged_fits_follow_a_leaning_window() -> int:
        merged = 0
        for i, (on_merge, _) in enumerate(fits):
            if on_merge:
                merged += 1
                alone = [auc for m, auc in fits[:i] if not m][-3:]
                assert any(auc is None or auc >= 0.55 for auc in alone), alone
        return merged

    monkeypatch.setattr(detector.judge, "_rows", spy)
    _run(detector, _stream(30, 400, seed=4))
    singles = sum(not m for m, _ in fits)
    assert merged_fits_follow_a_leaning_window() < singles / 2
    fits.clear()
    _run(detector, _stream(6, 400, seed=5, shift=broken, shift_from=0))
    assert merged_fits_follow_a_leaning_window() > 0


def test_recent_windows_together_test_only_numeric_features_that_leaned_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Normalised Wasserstein and KS D on the merge are at most the windows' average (both are
    # convex in the distribution), so a feature whose windows alone averaged well under the
    # floors is not tested on the merge.
    detector = _detector(multivariate=False, text=False, recent_windows=3)
    feature = detector.judge._feature
    tested: list[tuple[bool, str]] = []  # (on a merge, feature)

    def spy(key: str, kind: str, ref: Any, cur: Any, **options: Any) -> Any:
        if kind == "numeric":
            tested.append((cur.events > 1000, key))
        return feature(key, kind, ref, cur, **options)

    monkeypatch.setattr(detector.judge, "_feature", spy)
    _run(detector, _stream(20, 1000, seed=6))
    on_merges = [key for merged, key in tested if merged]
    alone = [key for merged, key in tested if not merged]
    assert len(on_merges) < len(alone) / 2, (len(on_merges), len(alone))


def test_a_broken_correlation_is_found_by_the_domain_classifier() -> None:
    def broken(row: Row, rng: random.Random) -> Row:
        return {**row, "b": rng.gauss(0.0, 1.0)}  # same marginal, no longer follows "a"

    found = _drift(_run(_detector(), _stream(12, 400, shift=broken, shift_from=8)))
    assert found
    assert "inputs (together)" in found[0][1].evidence["drifted"]


def test_a_latency_step_is_an_operational_change() -> None:
    def slow(row: Row, rng: random.Random) -> Row:
        return {**row, "latency": row["latency"] * 3}

    found = _run(_detector(), _stream(120, 100, shift=slow, shift_from=90))
    ops = [(w, f) for w, f in found if f.detector == OPS_DETECTOR]
    assert ops
    assert all(w >= 90 for w, _ in ops)
    w, finding = ops[0]
    assert w <= 97
    assert finding.kind == "operational"
    assert finding.evidence["metric"] == "latency_ms"
    assert finding.evidence["direction"] == "up"


def test_a_quiet_model_is_judged_on_carried_windows() -> None:
    def shifted(row: Row, rng: random.Random) -> Row:
        return {**row, "c": row["c"] + 4.0}

    found = _drift(_run(_detector(reference_events=400), _stream(40, 60, shift=shifted, shift_from=20)))
    assert found
    assert all(w >= 20 for w, _ in found)
    assert found[0][1].evidence["events"] >= 200


def test_by_default_a_quiet_model_is_judged_once_its_windows_hold_min_events() -> None:
    """200-event windows are carried over until 1,000 events (min_events): judged on as many
    events as a busy model's window, where the effect floors keep sampling noise out."""
    def shifted(row: Row, rng: random.Random) -> Row:
        return {**row, "c": row["c"] + 4.0}

    found = _drift(_run(DriftDetector(), _stream(40, 200, shift=shifted, shift_from=20)))
    assert found
    first_window, finding = found[0]
    assert 20 <= first_window < 26
    assert finding.evidence["events"] >= 1_000
    assert finding.evidence["thresholds"]["alpha"] == 0.01


def test_a_window_judged_short_of_min_events_is_held_to_a_smaller_alpha() -> None:
    """Judged after max_carry_windows with 300 of the 1,000 events: alpha x 300 / 1,000."""
    def shifted(row: Row, rng: random.Random) -> Row:
        return {**row, "c": row["c"] + 4.0}

    detector = DriftDetector(reference_events=400, max_carry_windows=2)
    found = _drift(_run(detector, _stream(30, 100, shift=shifted, shift_from=15)))
    assert found
    evidence = found[0][1].evidence
    assert evidence["events"] == 300
    assert evidence["thresholds"]["alpha"] == pytest.approx(0.003)


def test_windows_still_carried_over_when_the_input_ends_are_judged() -> None:
    """900 events of a x1000 unit change after the warm-up, short of min_events: judged at the end
    of input (a replay, a batch run) at alpha x 900 / 1,000, not dropped unjudged."""
    def milli(row: Row, rng: random.Random) -> Row:
        return {**row, "c": row["c"] * 1000}

    events = [e for _, e in _stream(5, 450, shift=milli, shift_from=3)]
    assert not _drift(_run(DriftDetector(), _stream(5, 450, shift=milli, shift_from=3)))  # none final
    found = [f for f in run_detector(DriftDetector(), events) if f.detector == "drift"]
    assert len(found) == 1
    assert found[0].evidence["events"] == 900
    assert found[0].evidence["thresholds"]["alpha"] == pytest.approx(0.009)
    assert "input.c (outside reference range)" in found[0].evidence["drifted"]


def test_the_reference_persists_in_the_store(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    first = _detector()
    first.attach_store(store)
    assert _run(first, _stream(8, 400)) == []
    assert store.load_reference("m") is not None

    def shifted(row: Row, rng: random.Random) -> Row:
        return {**row, "c": row["c"] + 2.0}

    restarted = _detector()  # a restart: no warm-up needed, the reference comes from the store
    restarted.attach_store(store)
    found = _drift(_run(restarted, _stream(2, 400, seed=1, shift=shifted, shift_from=0)))
    assert found
    assert found[0][0] == 0
    assert found[0][1].evidence["reference"]["source"] == "warmup"


def test_a_new_model_version_starts_a_new_reference_when_configured() -> None:
    def v2(row: Row, rng: random.Random) -> Row:
        return {**row, "c": row["c"] + 4.0}

    events = list(_stream(10, 400, shift=v2, shift_from=6, model_version="v1"))
    for w, e in events:
        if w >= 6:
            e.model_version = "v2"
    assert _drift(_run(_detector(), iter(events)))  # the new version's inputs differ
    assert _drift(_run(_detector(rebaseline_on_version=True), iter(events))) == []


def test_a_new_version_replaces_a_baseline_file_of_the_old_one(tmp_path: Path) -> None:
    """A baseline file of version v1 and rebaseline_on_version: v2's warm-up replaces the file
    (once, not adopted back every window), and drift within v2 is then found against it."""
    from inferwatch.detectors.drift.reference import ReferenceRecord
    from inferwatch.detectors.drift.sketch import summarise_rows

    store = SQLiteStore(tmp_path / "store.db")
    rng = random.Random(11)
    summary = summarise_rows([_row(rng) for _ in range(2_000)], "m")
    store.save_reference(ReferenceRecord(model="m", model_version="v1", source="file",
                                         created=datetime(2026, 1, 1, tzinfo=UTC), events=summary.events,
                                         origin="v1.csv", summary=summary.to_dict()))

    def v2(row: Row, rng: random.Random) -> Row:
        return {**row, "c": row["c"] + 4.0}

    def v2_broken(row: Row, rng: random.Random) -> Row:
        return {**row, "c": (row["c"] + 4.0) * 1_000.0}

    events = list(_stream(30, 400, shift=v2, shift_from=0, model_version="v2"))
    events += [(w + 30, e) for w, e in _stream(6, 400, seed=1, shift=v2_broken, shift_from=0,
                                                model_version="v2")]
    detector = _detector(rebaseline_on_version=True, multivariate=False, text=False, operations=False)
    detector.attach_store(store)
    found = _drift(_run(detector, iter(events)))
    assert found
    assert all(w >= 30 for w, _ in found)
    assert found[0][0] == 30
    reference = found[0][1].evidence["reference"]
    assert (reference["source"], reference["version"]) == ("warmup", "v2")
    stored = store.load_reference("m")
    assert stored is not None
    assert (stored.source, stored.model_version) == ("warmup", "v2")
    # The file is kept for its version (a rollback to v1 finds it again), not overwritten.
    assert stored.waiting is not None
    waiting = stored.waiting
    assert (waiting.source, waiting.model_version, waiting.origin) == ("file", "v1", "v1.csv")


def test_a_baseline_file_set_ahead_of_its_version_waits_for_it(tmp_path: Path) -> None:
    """A baseline set for v2 while v1 still runs (rebaseline_on_version): v1 is not judged against
    it, the file is not replaced by v1's warm-up, survives a restart, and v2's first window is
    judged against it at once (no warm-up on v2, which would have taken its shift as normal)."""
    from inferwatch.detectors.drift.detector import RELOAD_WINDOWS
    from inferwatch.detectors.drift.reference import ReferenceRecord
    from inferwatch.detectors.drift.sketch import summarise_rows

    def v2_expected(row: Row, rng: random.Random) -> Row:
        return {**row, "c": row["c"] + 4.0}

    def v2_actual(row: Row, rng: random.Random) -> Row:
        return {**row, "c": row["c"] + 8.0}

    store = SQLiteStore(tmp_path / "store.db")
    options = {"rebaseline_on_version": True, "multivariate": False, "text": False, "operations": False}
    first = _detector(**options)
    first.attach_store(store)
    assert _drift(_run(first, _stream(8, 400, model_version="v1"))) == []
    rng = random.Random(3)
    summary = summarise_rows([{k: v for k, v in v2_expected(_row(rng), rng).items() if k in "abcd"}
                              for _ in range(2_000)], "m")
    store.save_reference(ReferenceRecord(model="m", model_version="v2", source="file",
                                         created=datetime(2026, 2, 1, tzinfo=UTC), events=summary.events,
                                         origin="v2.csv", summary=summary.to_dict()))
    # v1 goes on past a reload of the stored reference: not judged against v2's file.
    assert _drift(_run(first, _stream(RELOAD_WINDOWS + 8, 400, seed=1, model_version="v1"))) == []
    stored = store.load_reference("m")
    assert stored is not None
    assert stored.waiting is not None
    assert (stored.source, stored.model_version) == ("warmup", "v1")
    waiting = stored.waiting
    assert (waiting.source, waiting.model_version, waiting.origin) == ("file", "v2", "v2.csv")

    restarted = _detector(**options)
    restarted.attach_store(store)
    found = _drift(_run(restarted, _stream(3, 400, seed=2, shift=v2_actual, shift_from=0,
                                           model_version="v2")))
    assert found
    assert found[0][0] == 0
    reference = found[0][1].evidence["reference"]
    assert (reference["source"], reference["version"]) == ("file", "v2")
    assert "input.c" in found[0][1].evidence["drifted"]
    stored = store.load_reference("m")
    assert stored is not None
    assert (stored.source, stored.model_version, stored.origin) == ("file", "v2", "v2.csv")
    assert stored.waiting is None


def test_a_rolling_reference_adapts_after_the_lag() -> None:
    def shifted(row: Row, rng: random.Random) -> Row:
        return {**row, "c": row["c"] + 4.0}

    detector = _detector(reference="rolling", rolling_windows=3, lag_windows=2, multivariate=False,
                             text=False)
    found = _drift(_run(detector, _stream(20, 400, shift=shifted, shift_from=10)))
    windows = sorted({w for w, _ in found})
    assert windows
    assert windows[0] == 10
    assert max(windows) < 16  # once the shifted windows are the reference, it is the new normal


@pytest.mark.parametrize(("option", "value"), [
    ("reference", "yesterday"), ("correction", "bonferroni"), ("alpha", 0.0), ("min_events", 1),
    ("change_detector", "magic"),
])
def test_bad_options_are_named(option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=option if option != "change_detector" else "magic"):
        _detector(**{option: value})


def test_a_baseline_set_while_running_is_picked_up(tmp_path: Path) -> None:
    from inferwatch.detectors.drift.detector import RELOAD_WINDOWS
    from inferwatch.detectors.drift.reference import ReferenceRecord
    from inferwatch.detectors.drift.sketch import summarise_rows

    store = SQLiteStore(tmp_path / "store.db")
    detector = _detector(multivariate=False, text=False, operations=False)
    detector.attach_store(store)
    assert _run(detector, _stream(4, 400)) == []  # warmed up on ordinary traffic
    rng = random.Random(5)
    rows = [{"c": rng.gauss(30.0, 2.0)} for _ in range(2_000)]  # a baseline where c was much higher
    summary = summarise_rows(rows, "m")
    store.save_reference(ReferenceRecord(model="m", source="file", created=datetime.now(UTC),
                                         events=summary.events, origin="baseline.csv",
                                         summary=summary.to_dict()))
    found = _drift(_run(detector, _stream(RELOAD_WINDOWS + 2, 400, seed=2)))
    assert found, "the new baseline was not used"
    assert found[-1][1].evidence["reference"]["source"] == "file"
    # Every value now lies below the baseline's range too: every verdict names c.
    assert sorted(found[-1][1].evidence["drifted"]) == ["input.c", "input.c (location)",
                                                        "input.c (outside reference range)"]
    store.delete_reference("m")
    later = _drift(_run(detector, _stream(RELOAD_WINDOWS + 6, 400, seed=3)))
    assert all(w <= RELOAD_WINDOWS for w, _ in later)  # cleared: back to a warm-up of ordinary traffic


def _coded(windows: int, per_window: int, value: Callable[[int, int, random.Random], str],
           seed: int = 0) -> Iterator[tuple[int, InferenceEvent]]:
    """Events with a numeric feature and one categorical ``code`` of many values."""
    rng = random.Random(seed)
    for w in range(windows):
        for i in range(per_window):
            ts = START + w * WINDOW + (i + 0.5) * WINDOW / per_window
            yield w, make_event(ts, principal=f"p{i % 50}", model="m", id=f"c{seed}-w{w}-e{i}",
                                features={"x": rng.gauss(0.0, 1.0), "code": value(w, i, rng)})


def test_traffic_moving_to_many_new_values_none_much_is_drift() -> None:
    """200 zip codes of about half a percent each replaced by 200 others: no single category's
    share moves a point, but every event is of a value the reference never saw."""
    def zip_code(w: int, i: int, rng: random.Random) -> str:
        return f"{rng.randrange(200) + (1000 if w >= 8 else 0):05d}"

    found = _drift(_run(_detector(multivariate=False), _coded(12, 1000, zip_code)))
    assert found
    assert found[0][0] == 8
    code = found[0][1].evidence["features"]["input.code"]
    statistics = code["statistics"]
    assert statistics["unseen_share"] == 1.0
    assert statistics["unseen_expected"] < 0.05
    assert code["effect"]["value"] == pytest.approx(1.0 - statistics["unseen_expected"], abs=1e-3)
    assert f"unseen 100.0% ({statistics['unseen_expected']:.1%} expected)" in found[0][1].summary


@pytest.mark.parametrize("session", [2.0, 4.0])
def test_values_that_come_in_sessions_new_every_window_are_no_drift(session: float) -> None:
    """A review: a user id in sessions (each user sends a few events in a row, then never again)
    is new in every window, far beyond what the one-window warm-up reference's rare values
    predict (singletons are few where each value repeats in a row). Only a rise over the
    feature's own recent unseen share counts: none here, in 30 windows."""
    users = iter(range(10**9))
    state = {"user": next(users), "left": 0}

    def user_id(w: int, i: int, rng: random.Random) -> str:
        if state["left"] <= 0:
            state["user"], state["left"] = next(users), 1 + int(rng.expovariate(1.0 / (session - 1.0)))
        state["left"] -= 1
        return f"u{state['user']}"

    assert _drift(_run(_detector(multivariate=False), _coded(30, 2000, user_id))) == []


def test_many_rare_values_meeting_new_ones_is_no_drift() -> None:
    """A feature of very many values (a city, a product id) meets values its reference sample
    never held in every window, as many as the sample's rare values predict: that is no drift."""
    def city(w: int, i: int, rng: random.Random) -> str:
        return f"c{rng.randrange(100_000)}" if i % 2 else rng.choice("abcde")

    assert _drift(_run(_detector(multivariate=False), _coded(8, 20_000, city))) == []


def test_events_that_stop_carrying_input_features_are_drift_not_silence() -> None:
    """Features written beside ``input.features`` (kept, read by no detector) or an agent that
    stopped sending them: a window with no tabular event measured no feature at all, so drift on
    inputs fell silent while the reference had them."""
    def misplaced(w: int, i: int, rng: random.Random) -> str:
        return f"{rng.randrange(5)}"

    events = []
    for w, event in _coded(8, 400, misplaced):
        if w >= 5:
            features = event.input.features or {}
            event = event.model_copy(update={"input": event.input.model_copy(update={"features": None})})
            event.input.__pydantic_extra__.update(features)  # type: ignore[union-attr]
        events.append((w, event))
    found = _drift(_run(_detector(), iter(events)))
    assert [w for w, _ in found][:1] == [5]
    finding = found[0][1]
    assert "input.features (missing share)" in finding.evidence["drifted"]
    assert "No event of the window carries input features, though the reference's do" in finding.summary


@pytest.mark.parametrize("rebaseline", [False, True])
def test_drift_after_a_new_model_version_says_so(rebaseline: bool) -> None:
    """A rollout of version 2 behind a version-1 reference: the finding says what share of the
    window is of the new version, and what to do if it is expected; with rebaseline_on_version,
    a canary (a third of the traffic, drifted) is reported until it is the dominant version."""
    def version(w: int, i: int) -> str:
        new = w >= 8 and (i % 3 == 0 if rebaseline else True)
        return "2" if new else "1"

    events = []
    for w, e in _stream(10, 400):
        v = version(w, int(e.id.rsplit("e", 1)[1]))
        row_c = (e.input.features or {})["c"]
        features = {**(e.input.features or {}), "c": row_c + 8.0 if v == "2" else row_c}
        events.append((w, e.model_copy(update={"model_version": v, "input": e.input.model_copy(
            update={"features": features})})))
    found = _drift(_run(_detector(rebaseline_on_version=rebaseline, multivariate=False), iter(events)))
    assert found
    finding = found[0][1]
    share = "34%" if rebaseline else "100%"
    assert finding.evidence["versions"] == ({"1": 266, "2": 134} if rebaseline else {"2": 400})
    summary = finding.summary
    assert f"{share} of the window's events are of model version 2, the reference of version 1" in summary
    assert ("(re-baselined once it is the dominant one)" in summary) is rebaseline
    assert ("a new version explains drift; if it is expected, set its baseline" in summary) is not rebaseline


def test_a_surge_of_events_whose_features_are_all_missing_is_drift() -> None:
    """Every feature NaN (a feature-store outage; read as missing) in a third of the events: each
    feature's missing share is measured over events that have some, so only the share of events
    with any input feature sees it. A model whose traffic always has features adds no test."""
    def code(w: int, i: int, rng: random.Random) -> str:
        return f"{rng.randrange(5)}"

    events = []
    for w, event in _coded(10, 600, code):
        if w >= 7 and int(event.id.rsplit("e", 1)[1]) % 3 == 0:
            event = event.model_copy(update={"input": event.input.model_copy(
                update={"features": dict.fromkeys(event.input.features or {})})})
        events.append((w, event))
    found = _drift(_run(_detector(multivariate=False), iter(events)))
    assert [w for w, _ in found][:1] == [7]
    assert "input.features (missing share)" in found[0][1].evidence["drifted"]
    assert "No event of the window carries input features" not in found[0][1].summary  # two thirds do


@pytest.mark.parametrize("views", [False, True])
def test_calls_refused_as_unauthenticated_are_left_out(views: bool) -> None:
    """An on-call walk-through: 50 "hello" requests answered 401 (a bad key) shifted the inputs'
    length and paged drift beside auth_abuse. The model never saw them: drift leaves them out.
    The same calls served (200) are traffic and still drift."""

    def stream(status: int) -> Iterator[tuple[int, InferenceEvent]]:
        for w, event in _stream(12, 400, seed=3):
            yield w, event
            if w >= 6 and event.id.endswith(("0", "5")):  # 80 a window, a fifth of the traffic
                yield w, make_event(event.ts, principal="p_badkey", model="m", text="hello", status=status,
                                    id=event.id + "-k")

    def found(status: int) -> list[tuple[int, Finding]]:
        detector = _detector()
        if not views:
            return _drift(_run(detector, stream(status)))
        out: list[tuple[int, Finding]] = []
        windows: dict[int, list[InferenceEvent]] = {}
        for w, event in stream(status):
            windows.setdefault(w, []).append(event)
        for w, events in windows.items():
            detector.observe_views(events)
            out += [(w, f) for f in detector.close_window(_at(w + 1))]
        return _drift(out)

    assert found(401) == []
    assert found(403) == []
    assert found(200) != []
