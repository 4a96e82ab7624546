"""ModelExtractionDetector: PRADA-style query distances, off-distribution queries, prompt sweeps."""

from __future__ import annotations

import doctest
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Mapping
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferwatch.collectors.event import EventOutput, InferenceEvent
from inferwatch.detectors.base import SEVERITY_ORDER, Detector, Finding
from inferwatch.detectors.model_extraction import ModelExtractionDetector
from inferwatch.detectors.query_distances import NO_CLASS, ModelQueries
from inferwatch.detectors.sketches import DecayingCountSketch, hamming64, normalise_text, simhash64
from inferwatch.testing import make_event, run_detector

T0 = 1_767_225_600.0
WINDOW = 60.0
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
# An iris-like model's input distribution: per class, feature means and standard deviations.
CLASSES = {
    "setosa": ((5.0, 3.4, 1.5, 0.25), (0.35, 0.38, 0.17, 0.10)),
    "versicolor": ((5.9, 2.8, 4.3, 1.3), (0.50, 0.31, 0.47, 0.20)),
    "virginica": ((6.6, 3.0, 5.6, 2.0), (0.63, 0.32, 0.55, 0.27)),
}
LOW, HIGH = np.array([4.3, 2.0, 1.0, 0.1]), np.array([7.9, 4.4, 6.9, 2.5])
ORDINARY: list[str] = [json.loads(line)["text"] for line in
            (Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "ordinary_prompts.jsonl").open()]
_COUNTRY_NAMES = """France Germany Spain Italy Portugal Poland Austria Hungary Romania Bulgaria Greece Turkey
Egypt Kenya Nigeria Ghana Morocco Algeria Tunisia Ethiopia Sudan Brazil Argentina Chile Peru Bolivia Colombia
Venezuela Ecuador Uruguay Mexico Canada Cuba Jamaica Haiti Panama Japan China India Pakistan Nepal Vietnam
Laos Cambodia Thailand Malaysia Indonesia Mongolia Iran Iraq Syria Jordan Israel Lebanon Yemen Oman Qatar
Norway Sweden Finland Denmark Iceland Ireland Belgium"""
COUNTRIES = _COUNTRY_NAMES.split()
SENTENCES = [t for t in ORDINARY if len(t) < 70]

Rows = Callable[[np.random.Generator, int], np.ndarray]


def predict(x: np.ndarray) -> str:
    """The model's answer: the class whose mean is nearest in standard deviations."""
    return min(CLASSES, key=lambda c: float(np.sum(((x - CLASSES[c][0]) / CLASSES[c][1]) ** 2)))


def natural(rng: np.random.Generator, n: int) -> np.ndarray:
    names = list(CLASSES)
    picks = rng.integers(len(names), size=n)
    rows = np.array([rng.normal(*CLASSES[names[k]]) for k in picks])
    return np.asarray(np.round(rows, 2), dtype=np.float64)


def uniform(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.round(rng.uniform(LOW, HIGH, (n, 4)), 2)


def grid(rng: np.random.Generator, n: int) -> np.ndarray:
    steps = np.array(np.unravel_index(np.arange(n) % 5**4, (5,) * 4)).T
    return LOW + steps / 4 * (HIGH - LOW)


def line(rng: np.random.Generator, n: int) -> np.ndarray:
    rows: list[np.ndarray] = []
    while len(rows) < n:
        base, j = natural(rng, 1)[0], int(rng.integers(4))
        for value in np.linspace(LOW[j], HIGH[j], 40):
            rows.append(base.copy())
            rows[-1][j] = value
    return np.array(rows[:n])


def augmentation(spread: float) -> Rows:
    """Papernot-style augmentation: every known point is stepped by +-lambda per (standardised)
    feature, lambda ``spread`` times the feature's spread."""
    def rows(rng: np.random.Generator, n: int) -> np.ndarray:
        step = spread * natural(rng, 2000).std(axis=0)
        known, out = list(natural(rng, 10)), list[np.ndarray]()
        while len(out) < n:
            new = [x + step * np.sign(rng.normal(size=4)) for x in known]
            out += new
            known += new
        return np.array(out[:n])
    return rows


jacobian = augmentation(0.1)
"""Steps of a tenth of the spread: W alone catches these."""
big_steps = augmentation(0.5)
"""Steps of half the spread, as large as the natural spacing: the distances look natural to W,
but most are one step, new point to the one it came from."""


def queries(streams: Mapping[str, tuple[int, Rows]], windows: int, *, seed: int = 0, start: int = 0,
            model: str = "iris") -> list[InferenceEvent]:
    """Tabular events in time order: ``streams`` maps principal -> (queries per window, rows)."""
    rng = np.random.default_rng(seed)
    timed = []
    for principal, (rate, rows) in streams.items():
        n = rate * windows
        times = np.sort(rng.uniform(T0 + start * WINDOW, T0 + (start + windows) * WINDOW, n))
        timed += [(float(t), principal, x) for t, x in zip(times, rows(rng, n), strict=True)]
    timed.sort(key=lambda item: item[0])
    return [make_event(t, principal=p, model=model, features=dict(zip(FEATURES, map(float, x), strict=True)),
                       output=EventOutput(label=predict(x))) for t, p, x in timed]


def prompts(streams: Mapping[str, tuple[int, Callable[[int], str]]], windows: int, *, seed: int = 0,
            start: int = 0) -> list[InferenceEvent]:
    """Chat events in time order: ``streams`` maps principal -> (prompts per window, k -> prompt)."""
    rng = random.Random(seed)
    timed = []
    for principal, (rate, text) in streams.items():
        times = sorted(rng.uniform(T0 + start * WINDOW, T0 + (start + windows) * WINDOW)
                       for _ in range(rate * windows))
        timed += [(t, principal, text(k)) for k, t in enumerate(times)]
    timed.sort(key=lambda item: item[0])
    return [make_event(t, principal=p, model="chat", text=x) for t, p, x in timed]


def crowd(n: int = 12, rate: int = 30) -> dict[str, tuple[int, Rows]]:
    return {f"app{i:02d}": (rate + 3 * i, natural) for i in range(n)}


def flagged(findings: list[Finding]) -> Counter[str]:
    return Counter(f.subject.removeprefix("principal:") for f in findings)


def window_of(finding: Finding) -> int:
    return round((finding.time.timestamp() - T0) / WINDOW) - 1


# -- registration and options ----------------------------------------------------------------


def test_is_a_registered_detector() -> None:
    (ep,) = [ep for ep in entry_points(group="inferwatch.detectors") if ep.name == "model_extraction"]
    assert ep.load() is ModelExtractionDetector
    assert isinstance(ModelExtractionDetector(), Detector)


@pytest.mark.parametrize(("options", "named"), [
    ({"prada_delta": 1.2}, "prada_delta"),
    ({"min_queries": 500}, "min_queries"),
    ({"min_prompts": 100}, "min_prompts"),
    ({"simhash_bits": 40}, "simhash_bits"),
    ({"track_after": 0}, "track_after"),
    ({"max_tracked": 0}, "max_tracked"),
    ({"sweep_share": 0.0}, "sweep_share"),
])
def test_bad_options_are_named(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        ModelExtractionDetector(**options)


# -- tabular: positives ------------------------------------------------------------------------


@pytest.mark.parametrize(("attack", "signal"), [
    (uniform, "off_distribution"),
    (grid, "query_distances"),
    (line, "query_distances"),
    (jacobian, "query_distances"),
])
def test_synthetic_query_attackers_are_flagged_among_natural_callers(run: Any, attack: Rows,
                                                                      signal: str) -> None:
    events = sorted(queries(crowd(), 8) + queries({"thief": (40, attack)}, 5, seed=1, start=3),
                    key=lambda e: e.ts)

    findings = run(ModelExtractionDetector(), events)

    assert set(flagged(findings)) == {"thief"}
    assert all(signal in f.evidence["signals"] for f in findings)
    assert len({window_of(f) for f in findings}) == len(findings), "at most one finding per caller per window"
    assert window_of(findings[0]) <= 5, "found within three windows of 40 queries"
    (model,) = findings[0].evidence["tabular"]
    assert model["model"] == findings[0].model == "iris"
    assert model["distances_tested"] >= 64
    json.dumps(findings[0].evidence)


def test_query_distance_evidence_says_what_was_measured(run: Any) -> None:
    events = sorted(queries(crowd(), 6) + queries({"thief": (60, jacobian)}, 3, seed=1, start=3),
                    key=lambda e: e.ts)

    finding = run(ModelExtractionDetector(), events)[0]

    (model,) = finding.evidence["tabular"]
    assert model["shapiro_w_log_distance"] < model["thresholds"]["prada_delta"] == 0.85
    assert model["distance_min"] <= model["distance_median"] <= model["distance_p95"]
    assert model["thresholds"]["min_queries"] == 64
    assert "Shapiro-Wilk W" in finding.summary
    assert "standard deviations" in finding.summary
    assert finding.kind == "abuse"
    assert 0.5 <= finding.score <= 1.0
    assert finding.event_ids
    assert finding.evidence["window_end"].endswith("Z")


def test_a_fixed_step_sweep_is_high_severity_whatever_w_says(run: Any) -> None:
    def one_line(rng: np.random.Generator, n: int) -> np.ndarray:  # every distance exactly one step
        rows = np.tile(natural(rng, 1)[0], (n, 1))
        rows[:, 2] = np.linspace(1.0, 6.9, n)
        return rows

    findings = run(ModelExtractionDetector(), queries({"sweeper": (100, one_line)}, 2))

    assert findings
    assert findings[0].severity == "high"
    assert findings[0].evidence["tabular"][0]["regular_spacing"] is True
    assert "grid or line sweep" in findings[0].title


def test_events_without_a_model_name_are_called_an_unnamed_model(run: Any) -> None:
    def one_line(rng: np.random.Generator, n: int) -> np.ndarray:
        rows = np.tile(natural(rng, 1)[0], (n, 1))
        rows[:, 2] = np.linspace(1.0, 6.9, n)
        return rows

    events = [e.model_copy(update={"model": None}) for e in queries({"sweeper": (100, one_line)}, 2)]
    findings = run(ModelExtractionDetector(), events)
    assert "evenly spaced queries to an unnamed model (the events carry no model name)" in findings[0].title
    assert findings[0].model is None
    assert findings[0].evidence["models"] == []


def test_a_slow_extraction_is_judged_across_windows(run: Any) -> None:
    """Twelve queries a minute never make 64 in one window; the caller's recent history does."""
    events = sorted(queries(crowd(), 14) + queries({"patient": (12, grid)}, 14, seed=1), key=lambda e: e.ts)
    assert set(flagged(run(ModelExtractionDetector(), events))) == {"patient"}


# -- tabular: negatives ------------------------------------------------------------------------


def test_natural_callers_of_every_rate_stay_silent(run: Any) -> None:
    streams = {f"app{i:02d}": (rate, natural) for i, rate in enumerate((2, 5, 10, 20, 40, 80, 150, 300))}
    detector = ModelExtractionDetector()
    assert run(detector, queries(streams, 10, seed=3)) == []
    assert detector.tracked[0] >= 6, "the busy callers were judged, not skipped"


def test_a_caller_resending_one_row_is_a_retry_not_a_sweep(run: Any) -> None:
    def same_row(rng: np.random.Generator, n: int) -> np.ndarray:
        return np.tile([5.1, 3.5, 1.4, 0.2], (n, 1))

    events = sorted(queries(crowd(), 4) + queries({"poller": (200, same_row)}, 4, seed=1), key=lambda e: e.ts)
    assert run(ModelExtractionDetector(), events) == []


def test_drift_of_every_callers_inputs_is_not_blamed_on_each_caller(run: Any) -> None:
    def shifted(rng: np.random.Generator, n: int) -> np.ndarray:
        rows = natural(rng, n)
        rows[:, 2] += 2.5
        rows[:, 1] *= 1.5
        return rows

    after = {name: (rate, shifted) for name, (rate, _) in crowd().items()}
    detector = ModelExtractionDetector()
    events = queries(crowd(), 6) + queries(after, 4, seed=1, start=6)

    assert run(detector, events) == []
    assert detector.model_wide_shifts >= 1


def spiky(rng: np.random.Generator, n: int) -> np.ndarray:
    """Natural rows, one in 150 a price-like spike (one feature x4) and one in 150 a near-repeat of
    the row before (one feature 0.01 off): each gives one log distance far from the rest."""
    rows = natural(rng, n)
    rows[75::150, 0] *= 4.0
    rows[1::150] = rows[0::150]
    rows[1::150, 1] += 0.01
    return rows


def test_natural_callers_with_a_few_outlying_queries_stay_silent(run: Any) -> None:
    """Shapiro-Wilk's W drops far for one outlier in 128; real tables (elec: price spikes, long
    runs of one value) had ordinary callers flagged so, until the extremes were left out."""
    streams = {f"app{i:02d}": (rate, spiky) for i, rate in enumerate((20, 30, 40, 60, 80, 100))}
    assert run(ModelExtractionDetector(), queries(streams, 12, seed=5)) == []


def test_augmentation_with_natural_sized_steps_is_caught_as_one_step_repeated(run: Any) -> None:
    events = sorted(queries(crowd(), 8) + queries({"thief": (40, big_steps)}, 5, seed=1, start=3),
                    key=lambda e: e.ts)

    findings = run(ModelExtractionDetector(), events)

    assert set(flagged(findings)) == {"thief"}
    (model,) = findings[0].evidence["tabular"]
    assert model["repeated_step"] is True
    assert model["repeated_step_share"] >= model["thresholds"]["repeated_step_share"] == 0.1
    assert model["shapiro_w_log_distance"] >= 0.85, "W alone would not have caught it"
    assert "one step repeated" in findings[0].title


def test_a_model_whose_features_are_a_lattice_gets_no_repeated_step_test(run: Any) -> None:
    """All small integers: natural queries repeat distances too, so the test is not made."""
    def dice(rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(0, 6, (n, 4)).astype(np.float64)

    detector = ModelExtractionDetector()
    findings = run(detector, queries({f"app{i:02d}": (40, dice) for i in range(12)}, 10, seed=2))

    assert detector._models.get("iris").lattice is True
    assert not any(m["repeated_step"] for f in findings for m in f.evidence["tabular"])


def test_a_person_nudging_one_field_of_the_last_query_is_not_a_repeated_step(run: Any) -> None:
    """A what-if client resends its last row with one field raised by a fixed amount: one step
    repeated, but in one feature; augmentation moves every feature."""
    def what_if(rng: np.random.Generator, n: int) -> np.ndarray:
        rows = natural(rng, n)
        for i in np.flatnonzero(rng.random(n) < 0.3):
            if i:
                rows[i] = rows[i - 1]
                rows[i, 2] += 0.5
        return rows

    events = sorted(queries(crowd(), 8) + queries({"analyst": (40, what_if)}, 8, seed=1), key=lambda e: e.ts)
    assert run(ModelExtractionDetector(), events) == []


def test_a_model_whose_inputs_repeat_exactly_counts_as_a_lattice(run: Any) -> None:
    """Booleans and small counts: most reference rows have an exact twin, so few distances are
    left to measure; that alone marks the model as discrete."""
    def flags(rng: np.random.Generator, n: int) -> np.ndarray:
        return np.column_stack([rng.random((n, 3)) < 0.5, rng.poisson(1.0, n)]).astype(np.float64)

    detector = ModelExtractionDetector()
    findings = run(detector, queries({f"app{i:02d}": (40, flags) for i in range(12)}, 6, seed=2))

    assert detector._models.get("iris").lattice is True
    assert not any(m["repeated_step"] for f in findings for m in f.evidence["tabular"])


def test_strings_and_missing_features_are_tolerated() -> None:
    model = ModelQueries(max_features=3)
    vector = model.vector({"a": 1.0, "b": "red", "c": None, "d": False, "e": 3, "f": 9.0})
    assert vector is not None
    x, observed = vector
    assert list(model.names) == ["a", "d", "e"]
    assert model.dropped == 1
    assert x.tolist() == [1.0, 0.0, 3.0]
    assert observed == [(0, 1.0), (1, 0.0), (2, 3.0)]
    assert model.vector({"b": "only strings"}) is None
    assert model.class_of(None) == model.class_of(0.37) == NO_CLASS
    assert model.class_of("setosa") == model.class_of("setosa") != model.class_of("virginica")


# -- text: positives ---------------------------------------------------------------------------


def evade(text: str, rng: random.Random) -> str:
    text = "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in text)
    text = re.sub(" ", lambda _: " " * rng.randint(1, 3), text)
    return text.rstrip("?") + rng.choice(["?", "??", " ?!", ""])


EVASION = random.Random(5)
SWEEPS: dict[str, Callable[[int], str]] = {
    "capitals": lambda k: f"What is the capital of {COUNTRIES[k % len(COUNTRIES)]}?",
    "capitals-with-suffix": lambda k: f"What is the capital of {COUNTRIES[k % len(COUNTRIES)]}? "
                                      "Answer with the city name only.",
    "sentiment": lambda k: f"Classify the sentiment: {SENTENCES[k % len(SENTENCES)]}",
    "evasive": lambda k: evade(f"What is the capital of {COUNTRIES[k % len(COUNTRIES)]}?", EVASION),
    "long-template": lambda k: "You are a careful annotator. Read the product review below and answer with "
                               "exactly one word, positive or negative, and nothing else. Review: "
                               + SENTENCES[k % len(SENTENCES)],
}


@pytest.mark.parametrize("sweep", list(SWEEPS))
def test_templated_sweeps_are_flagged_and_users_are_not(run: Any, sweep: str) -> None:
    def user(i: int) -> Callable[[int], str]:
        return lambda k: ORDINARY[(7 * k + 31 * i) % len(ORDINARY)]

    users = {f"user{i}": (2 + i % 4, user(i)) for i in range(20)}
    events = sorted(prompts(users, 6) + prompts({"sweeper": (25, SWEEPS[sweep])}, 4, seed=1, start=1),
                    key=lambda e: e.ts)

    findings = run(ModelExtractionDetector(), events)

    assert set(flagged(findings)) == {"sweeper"}
    text = findings[0].evidence["text"]
    assert text["sweep_share"] >= 0.6
    assert text["recent_prompts"] >= 20
    assert findings[0].evidence["signals"] == ["templated_prompts"]
    json.dumps(findings[0].evidence)


def test_the_template_is_shown_normalised_and_short(run: Any) -> None:
    findings = run(ModelExtractionDetector(), prompts({"sweeper": (60, SWEEPS["capitals-with-suffix"])}, 2))

    example = findings[0].evidence["text"]["example_template"]
    assert example == "what is the capital of {…} answer with the city name only"
    assert len(example) <= 83
    assert not any(country.lower() in example for country in COUNTRIES)
    assert "templated prompt sweep" in findings[0].title


def test_a_slow_sweep_is_flagged_across_windows(run: Any) -> None:
    findings = run(ModelExtractionDetector(), prompts({"patient": (4, SWEEPS["capitals"])}, 12))
    assert flagged(findings)["patient"] >= 1
    assert window_of(findings[0]) >= 4, "20 prompts are needed first"


def test_sweep_severity_rises_with_volume(run: Any) -> None:
    small = run(ModelExtractionDetector(), prompts({"a": (30, SWEEPS["capitals"])}, 1))
    large = run(ModelExtractionDetector(), prompts({"a": (30, SWEEPS["capitals"])}, 3))
    assert SEVERITY_ORDER[large[-1].severity] > SEVERITY_ORDER[small[-1].severity]


# -- text: negatives ---------------------------------------------------------------------------


def test_a_heavy_user_with_varied_prompts_stays_silent(run: Any) -> None:
    varied = prompts({"power-user": (40, lambda k: ORDINARY[k % len(ORDINARY)])}, 4)
    assert run(ModelExtractionDetector(), varied) == []


def test_retries_and_a_few_edits_stay_silent(run: Any) -> None:
    def retries(k: int) -> str:  # the same question again and again, as a retrying client does
        return ORDINARY[k // 10]

    def edits(k: int) -> str:  # every third prompt reworks the one before
        return ORDINARY[k // 3 * 2 + min(k % 3, 1)] + ("", "", " Please be brief.")[k % 3]

    events = sorted(prompts({"retrier": (30, retries)}, 3) + prompts({"editor": (30, edits)}, 3, seed=1),
                    key=lambda e: e.ts)
    assert run(ModelExtractionDetector(), events) == []


def test_a_batch_job_wrapping_documents_is_not_a_sweep(run: Any) -> None:
    def summarise(k: int) -> str:
        return "Summarise the following text in one sentence:\n\n" + " ".join(
            ORDINARY[(k * 5 + j) % len(ORDINARY)] for j in range(4))

    assert run(ModelExtractionDetector(), prompts({"batch": (40, summarise)}, 4)) == []


def test_one_finding_per_window_names_every_signal(run: Any) -> None:
    events = sorted(queries(crowd(), 5) + queries({"busy": (80, grid)}, 3, seed=1, start=2)
                    + prompts({"busy": (40, SWEEPS["capitals"])}, 3, start=2), key=lambda e: e.ts)

    findings = [f for f in run(ModelExtractionDetector(), events) if f.subject == "principal:busy"]

    assert len({window_of(f) for f in findings}) == len(findings)
    both = [f for f in findings if {"query_distances", "templated_prompts"} <= set(f.evidence["signals"])]
    assert both
    assert "(+" in both[0].title
    assert both[0].model is None  # two models: named in the evidence, not as the finding's model
    assert both[0].evidence["models"] == ["chat", "iris"]


# -- state -------------------------------------------------------------------------------------


def test_light_callers_hold_no_state_and_tracked_ones_are_bounded(run: Any) -> None:
    detector = ModelExtractionDetector(max_tracked=50)
    light = {f"visitor{i}": (2, natural) for i in range(300)}
    run(detector, queries(light, 1))
    assert detector.tracked == (0, 0), "two queries each: nobody is tracked"

    heavy = {f"app{i}": (20, natural) for i in range(200)}
    run(detector, queries(heavy, 1, start=2))
    assert detector.tracked[0] == 50

    run(detector, prompts({"late": (10, SWEEPS["capitals"])}, 1, start=2 * 24 * 60))
    assert detector.tracked == (0, 1), "idle for a day: dropped"


def test_runs_in_the_service_pipeline() -> None:
    events = sorted(queries(crowd(), 6) + queries({"thief": (60, grid)}, 3, seed=1, start=2),
                    key=lambda e: e.ts)
    assert set(flagged(run_detector(ModelExtractionDetector(), events))) == {"thief"}


# -- sketches ----------------------------------------------------------------------------------


def test_the_count_sketch_never_underestimates() -> None:
    sketch, truth = DecayingCountSketch(width=256), Counter[str]()
    rng = random.Random(0)
    for _ in range(5000):
        key = f"k{int(rng.paretovariate(1.2)) % 2000}"
        truth[key] += 1
        assert sketch.add(key.encode()) >= truth[key]


def test_simhash_ignores_case_spacing_and_punctuation() -> None:
    a = simhash64(normalise_text("What is the capital of France?"))
    assert a == simhash64(normalise_text("  WHAT is   the capital, of france ?! "))
    assert hamming64(a, simhash64(normalise_text("How do I bake sourdough bread at home?"))) > 10


@pytest.mark.parametrize("module", ["model_extraction", "query_distances", "prompt_sweeps", "sketches"])
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(import_module(f"inferwatch.detectors.{module}"))
    assert result.attempted > 0
    assert result.failed == 0



def _shifted(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = natural(rng, n)
    rows[:, 2] += 2.5
    rows[:, 1] *= 1.5
    return rows


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("shift_windows", [1, 4])
def test_callers_of_every_rate_are_not_blamed_for_a_drift_that_came_and_went(run: Any, seed: int,
                                                                             shift_windows: int) -> None:
    callers = {**crowd(), **{f"slow{i}": (rate, natural) for i, rate in enumerate((3, 5, 8, 12))}}
    drifted = {name: (rate, _shifted) for name, (rate, _) in callers.items()}
    events = sorted(queries(callers, 6, seed=seed) + queries(drifted, shift_windows, seed=seed + 100, start=6)
                    + queries(callers, 10, seed=seed + 200, start=6 + shift_windows), key=lambda e: e.ts)
    detector = ModelExtractionDetector()
    assert run(detector, events) == []
    assert detector.model_wide_shifts >= 1


@pytest.mark.parametrize("seed", range(6))
def test_the_demos_story_flags_the_thief_alone(run: Any, seed: int) -> None:
    """The demo's traffic (two-second windows there): 20 callers, their inputs drift for two
    windows and return, one caller floods with ordinary rows, then one queries at random (about
    85 of its queries a window in the demo). Before the shift was also looked for within each
    window, the reference followed the drift while callers crossed ``off_share`` a few at a time,
    never enough at once, and 4-8 ordinary callers were flagged in 6 of 8 seeds."""
    names = [f"app{i:02d}" for i in range(20)]

    def everyone(rate: int, rows: Rows) -> dict[str, tuple[int, Rows]]:
        return dict.fromkeys(names, (rate, rows))

    events = sorted(queries(everyone(15, natural), 3, seed=seed)
                    + queries(everyone(15, _shifted), 2, seed=seed + 1, start=3)
                    + queries(everyone(15, natural), 1, seed=seed + 2, start=5)
                    + queries({**everyone(3, natural), "flooder": (350, natural)}, 2, seed=seed + 3, start=6)
                    + queries({**everyone(10, natural), "thief": (80, uniform)}, 2, seed=seed + 4, start=9),
                    key=lambda e: e.ts)
    detector = ModelExtractionDetector()
    assert set(flagged(run(detector, events))) == {"thief"}
    assert detector.model_wide_shifts >= 1


def _unit_change(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = natural(rng, n)
    rows[:, 0] *= 100.0  # a pipeline sending one feature in other units: cm for m
    return rows


@pytest.mark.parametrize("seed", range(3))
def test_a_unit_change_every_caller_shares_is_not_blamed_on_each_caller(run: Any, seed: int) -> None:
    """An ML engineer's walk-through: one feature x100 for all 20 callers filed 20 model_extraction
    incidents (10 high), "unnatural query distances (W 0.752)": each caller's recent queries mixed
    the old units and the new, so their distances split in two."""
    names = [f"app{i:02d}" for i in range(20)]
    before = dict.fromkeys(names, (20, natural))
    after = dict.fromkeys(names, (20, _unit_change))
    events = sorted(queries(before, 6, seed=seed) + queries(after, 6, seed=seed + 1, start=6)
                    + queries(before, 6, seed=seed + 2, start=12), key=lambda e: e.ts)
    detector = ModelExtractionDetector()
    assert run(detector, events) == []
    assert detector.model_wide_shifts >= 2  # the change and its undoing
