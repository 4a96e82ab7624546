"""Window summaries: exact merging whatever the split, round trips, bounded samples."""

from __future__ import annotations

import json
import random

import pytest

from inferwatch.collectors.event import EventOutput, InferenceEvent
from inferwatch.detectors.drift.sketch import (
    Sample,
    WindowSummary,
    features_of,
    is_refusal,
    summarise_rows,
)
from inferwatch.testing import make_event


def _events(n: int, seed: int = 0) -> list[InferenceEvent]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        features: dict[str, float | str | bool] = {"x": rng.gauss(0, 1), "colour": rng.choice("rgb"),
                                                   "flag": rng.random() < 0.2}
        if rng.random() < 0.1:
            del features["x"]
        out.append(make_event(ts=1_000.0 + i, features=features, duration_ms=rng.expovariate(0.1),
                              status=500 if rng.random() < 0.05 else 200, model_version="v1",
                              text=rng.choice(["hello there", "bonjour à tous", None]),
                              output=EventOutput(text=rng.choice(["Sure: 4", "I'm sorry, I can't help."]))))
    return out


@pytest.mark.parametrize("parts", [1, 2, 3, 5])
def test_partials_merge_into_the_whole_whatever_the_split(parts: int) -> None:
    events = _events(5_000)
    whole = WindowSummary("m", k=300, text_k=40)
    for e in events:
        whole.add(e)
    rng = random.Random(parts)
    partials = [WindowSummary("m", k=300, text_k=40) for _ in range(parts)]
    for e in events:
        partials[rng.randrange(parts)].add(e)
    whole.seal(ngrams=lambda text: [len(text)])
    merged = WindowSummary("m", k=300, text_k=40)
    for p in reversed(partials):  # order of arrival does not matter either
        p.seal(ngrams=lambda text: [len(text)])
        merged.merge(WindowSummary.from_dict(json.loads(json.dumps(p.to_dict()))))
    assert len(merged.ngram_rows()) == 40  # the text sample's cap holds across the merge too
    got, want = merged.to_dict(), whole.to_dict()
    assert got["latency_total"] == pytest.approx(want["latency_total"])
    got["latency_total"] = want["latency_total"]
    assert got == want


def test_merge_all_is_merging_one_by_one_and_untrimmed_texts_read_the_same() -> None:
    def sealed(events: list[InferenceEvent]) -> WindowSummary:
        summary = WindowSummary("m", k=300, text_k=40)
        for e in events:
            summary.add(e)
        return summary.seal(ngrams=lambda text: [len(text)])

    events = _events(3_000, seed=7)
    parts = [sealed(events[i::3]) for i in range(3)]
    one_by_one = WindowSummary("m", k=300, text_k=40)
    for p in parts:
        one_by_one.merge(p)
    at_once = WindowSummary("m", k=300, text_k=40).merge_all(parts)
    assert at_once.to_dict() == one_by_one.to_dict()
    untrimmed = WindowSummary("m", k=300, text_k=40).merge_all(parts, trim_texts=False)
    assert untrimmed.ngram_rows() == one_by_one.ngram_rows()
    assert len(untrimmed.ngram_rows()) == 40
    kept = sum("_ngrams" in row for row in untrimmed.rows())
    assert kept > 40  # the rows past the cap were left as they were (not copied) ...
    assert sum("_ngrams" in row for row in parts[0].rows()) <= 40  # ... and no partial was changed


def test_sealing_gives_n_grams_to_the_first_prompts_in_hash_order_counting_sealed_rows() -> None:
    """A summary holding sealed rows (from a merged partial) and events: walking the sample in
    hash order, a prompt gets n-grams while fewer than ``text_k`` rows hold them so far, and a
    sealed row that holds them counts."""
    events = _events(2_000, seed=3)
    partial = WindowSummary("m", k=300, text_k=40)
    for e in events[::2]:
        partial.add(e)
    partial.seal(ngrams=lambda text: [len(text)])
    mixed = WindowSummary("m", k=300, text_k=40)
    for e in events[1::2]:
        mixed.add(e)
    mixed.merge(partial)
    before = mixed.sample.items()
    assert any(isinstance(v, dict) for _, v in before)
    assert not all(isinstance(v, dict) for _, v in before)
    mixed.seal(ngrams=lambda text: [len(text)])
    held = 0
    for (h, value), (h_after, row) in zip(before, mixed.sample.items(), strict=True):
        assert h == h_after
        assert isinstance(row, dict)
        if isinstance(value, dict):
            assert row is value  # sealed rows are kept as they are
            held += "_ngrams" in row
            continue
        text = value.input.text
        assert ("_ngrams" in row) == bool(text and held < 40)
        held += "_ngrams" in row
    assert held >= 40


def test_exact_counts_and_a_bounded_sample() -> None:
    events = _events(3_000)
    summary = WindowSummary("m", k=500)
    for e in events:
        summary.add(e)
    summary.seal()
    assert summary.events == 3_000
    assert summary.errors == sum(1 for e in events if e.status == 500)
    assert len(summary.rows()) == 500
    assert summary.sample.seen == 3_000
    assert summary.versions == {"v1": 3_000}
    assert set(summary.keys()) >= {"input.x", "input.colour", "input.flag", "ops.latency_ms", "text.chars",
                                   "output.refusal"}
    assert summary.keys()["input.x"] == "numeric"
    assert summary.keys()["input.colour"] == "categorical"
    present, rows = summary.presence("input.x")
    assert 0.8 < present / rows < 0.97  # about 10 % missing
    assert sum(summary.counts("input.colour").values()) == 500
    assert summary.matrix(["input.x"]).shape == (present, 1)


def test_the_sample_is_the_events_with_the_smallest_hashes() -> None:
    s = Sample(3)
    for h in [50, 10, 40, 30, 20, 60]:
        s.add(h, float(h))
    assert [h for h, _ in s.items()] == [10, 20, 30]
    assert s.seen == 6
    s.add(10, 99.0)  # the same event again is not a second value
    assert sorted(s.values().tolist()) == [10.0, 20.0, 30.0]


def test_features_of_an_event() -> None:
    event = make_event(features={"age": 41, "plan": "pro", "ok": True, "none": None},
                       duration_ms=12.5, status=503, text="Привет, как дела?",
                       output=EventOutput(text="I cannot help with that.", tokens=5))
    event.input.tokens = 7
    values = features_of(event, lambda text: ("cyrillic", "ru"))
    assert values["input.age"] == 41.0
    assert values["input.plan"] == "pro"
    assert values["input.ok"] == "true"
    assert "input.none" not in values
    assert values["text.script"] == "cyrillic"
    assert values["text.chars"] == 17.0
    assert values["output.refusal"] == "true"
    assert values["ops.error"] == "true"
    assert values["ops.latency_ms"] == 12.5
    assert values["ops.input_tokens"] == 7.0


def test_refusals() -> None:
    assert is_refusal("I\u2019m sorry, but I can\u2019t assist with that request.")
    assert not is_refusal("Sure! Here is the summary you asked for.")


def test_summarise_rows_from_a_baseline_file() -> None:
    rows = [{"x": float(i), "colour": "red" if i % 2 else "blue", "output.label": "spam" if i % 3 else "ham"}
            for i in range(1_000)]
    a = summarise_rows(rows, "m", k=200)
    b = summarise_rows(rows, "m", k=200)
    assert a.to_dict() == b.to_dict()  # deterministic
    assert a.events == 1_000
    assert a.tabular == 1_000
    assert a.keys() == {"input.x": "numeric", "input.colour": "categorical", "output.label": "categorical"}


def test_input_features_skip_what_no_float_can_hold() -> None:
    """JSON allows 10**400 and both event readers accept it; it is not a measurable number."""
    from inferwatch.detectors.drift.sketch import input_features

    assert input_features({"big": 10**400, "ok": 3, "inf": float("inf"), "flag": True, "seg": "a"}) == {
        "input.ok": 3.0, "input.flag": "true", "input.seg": "a"}


def test_a_run_folds_in_exactly_as_one_event_at_a_time() -> None:
    """add_run (what replay's fast path calls) builds the very summary add gives, bit for bit:
    counts, float sums in order, versions in first-seen order, the sample with duplicates."""
    rng = random.Random(3)
    events = _events(4_000)
    rng.shuffle(events)  # not in time order: a run's start is its earliest event, not its first
    for i, e in enumerate(events):
        e.model_version = rng.choice(["v1", "v2", None])
        if i % 7 == 0:
            e.input.tokens, e.output.tokens = rng.randint(0, 99), None
        elif i % 11 == 0:
            e.input.tokens, e.output.tokens = None, rng.randint(0, 99)
        if i % 13 == 0:
            e.error = "timeout"
        if i % 17 == 0:
            e.id = events[i - 1].id  # a repeated id: the first one seen stays in the sample
    one_by_one, in_runs = WindowSummary("m", k=300, text_k=40), WindowSummary("m", k=300, text_k=40)
    for e in events:
        one_by_one.add(e)
    start = 0
    while start < len(events):
        size = rng.choice([1, 2, 50, 700])
        in_runs.add_run(events[start:start + size])
        start += size
    in_runs.add_run([])
    assert in_runs.versions == one_by_one.versions
    assert list(in_runs.versions) == list(one_by_one.versions)
    assert [id(v) for _, v in in_runs.sample.items()] == [id(v) for _, v in one_by_one.sample.items()]
    for s in (one_by_one, in_runs):
        s.seal(ngrams=lambda text: [len(text)])
    assert in_runs.to_dict() == one_by_one.to_dict()
    assert in_runs.errors > 0
    assert in_runs.tokens[0] > 0


@pytest.mark.parametrize("k", [1, 5, 300])
def test_a_long_run_is_offered_at_once_with_the_sample_one_by_one_gives(k: int) -> None:
    """Runs past BULK_OFFER pairs are selected with one sort: the same hashes, and for a repeated
    hash (within the run, or already kept, or evicted earlier) the value offered first."""
    rng = random.Random(k)
    one_by_one, in_runs = Sample(k), Sample(k)
    offered = 0
    for size in (3, 700, 40, 1_000, 257):
        hashes = [rng.randrange(2_000) for _ in range(size)]  # many repeats across and within runs
        values = [f"v{offered + i}" for i in range(size)]
        offered += size
        for h, value in zip(hashes, values, strict=True):
            one_by_one.offer(h, value)
        in_runs.offer_run(hashes, values)
        assert in_runs.items() == one_by_one.items()
        assert [in_runs.would_keep(h) for h in range(0, 2_000, 7)] == [
            one_by_one.would_keep(h) for h in range(0, 2_000, 7)]
    in_runs.offer(-1, "smallest")  # the heap still works one pair at a time after a selection
    one_by_one.offer(-1, "smallest")
    assert in_runs.items() == one_by_one.items()
