"""ScrapingDetector: distinct inputs per caller against its own baseline, its peers and coverage."""

from __future__ import annotations

import doctest
import itertools
import json
import random
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any

import pytest

from inferwatch.collectors.event import InferenceEvent
from inferwatch.detectors import scraping
from inferwatch.detectors.base import Detector, Finding
from inferwatch.detectors.scraping import ScrapingDetector, input_key
from inferwatch.testing import run_detector

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
WINDOW = 60.0
WORDS = (
    "what", "how", "why", "explain", "summarise", "compare", "list", "describe", "translate",
    "write", "about", "the", "a", "of", "for", "river", "mountain", "contract", "invoice",
    "recipe", "garden", "python", "poem", "history", "market", "weather", "engine", "letter",
    "policy", "budget", "travel", "music", "health", "sleep", "coffee", "bridge", "castle",
    "forest", "ocean", "planet", "story", "theory", "method", "review", "report", "essay",
    "lesson", "chapter",
)

Plan = Callable[[int], dict[str, list[str]]]


class Prompts:
    """Fresh prompts with no digits (so every one is its own template), deterministic."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def fresh(self, n: int) -> list[str]:
        return [" ".join(self.rng.choice(WORDS) for _ in range(9)) for _ in range(n)]


def traffic(make_event: Any, windows: int, plan: Plan, *, start_window: int = 0) -> Iterator[InferenceEvent]:
    """Events in time order; ``plan(window)`` maps principal -> the texts it sends in that window."""
    for w in range(start_window, start_window + windows):
        schedule = sorted(
            (T0 + w * WINDOW + (i + 0.5) * WINDOW / len(texts), principal, text)
            for principal, texts in plan(w).items()
            for i, text in enumerate(texts)
        )
        for ts, principal, text in schedule:
            yield make_event(ts, principal=principal, text=text)


def ordinary(prompts: Prompts, n: int = 50, rate: int = 10, *, every: int = 1,
             w: int = 0) -> dict[str, list[str]]:
    """``n`` chat users sending ``rate`` (+0..2) fresh prompts a window, each active one window
    in ``every``."""
    return {f"user{i:03d}": prompts.fresh(rate + i % 3) for i in range(n) if (w + i) % every == 0}


def window_of(finding: Finding) -> int:
    return round((finding.time.timestamp() - T0) / WINDOW) - 1


def flagged(findings: list[Finding]) -> list[tuple[int, str]]:
    return [(window_of(f), f.subject) for f in findings]


def test_is_a_registered_detector() -> None:
    (ep,) = [ep for ep in entry_points(group="inferwatch.detectors") if ep.name == "scraping"]
    cls = ep.load()
    assert cls is ScrapingDetector
    assert isinstance(cls(), Detector)


def test_scraper_sending_500_distinct_prompts_among_ordinary_callers(make_event: Any, run: Any) -> None:
    prompts = Prompts(1)

    def plan(w: int) -> dict[str, list[str]]:
        return {**ordinary(prompts), "scraper": prompts.fresh(500 if w == 4 else 10)}

    findings = run(ScrapingDetector(), traffic(make_event, 8, plan))

    assert flagged(findings) == [(4, "principal:scraper")]
    (finding,) = findings
    evidence = finding.evidence
    assert finding.detector == "scraping"
    assert finding.kind == "abuse"
    assert evidence["signals"] == ["distinct_rate"]
    assert evidence["requests"] == 500
    assert evidence["distinct_inputs"] == pytest.approx(500, rel=0.15)
    assert evidence["distinct_ratio"] >= 0.85
    assert evidence["own_baseline"] == pytest.approx(10, rel=0.2)
    assert evidence["population_median"] == pytest.approx(11, abs=1)
    assert evidence["population_active"] == 51
    assert evidence["window_coverage"]["share"] == pytest.approx(500 / 1050, rel=0.15)
    assert evidence["window_coverage"]["distinct_inputs_seen"] == pytest.approx(1050, rel=0.05)
    assert evidence["accumulated_coverage"]["distinct_inputs"] == pytest.approx(540, rel=0.3)
    assert evidence["enumeration"]["detected"] is False
    assert evidence["thresholds"]["min_distinct"] == 20
    assert finding.severity in ("high", "critical")
    assert "distinct inputs in one window" in finding.title
    assert "principal:scraper" in finding.summary
    assert len(finding.event_ids) == 20
    json.dumps(evidence)


def test_a_caller_producing_most_of_the_variety_is_flagged_by_window_coverage(make_event: Any,
                                                                               run: Any) -> None:
    """Users who ask the same popular questions: the scraper is under 5x the median but brings most
    of the distinct inputs the service saw."""
    prompts = Prompts(2)
    popular = prompts.fresh(60)
    rng = random.Random(2)

    def plan(w: int) -> dict[str, list[str]]:
        users = {f"user{i:03d}": rng.sample(popular, 40) for i in range(30)}
        return {**users, "scraper": prompts.fresh(150 if w == 3 else 10)}

    findings = run(ScrapingDetector(), traffic(make_event, 5, plan))

    assert flagged(findings) == [(3, "principal:scraper")]
    evidence = findings[0].evidence
    assert evidence["signals"] == ["window_coverage"]
    assert evidence["ratio_population"] < 5.0
    assert evidence["window_coverage"]["share"] >= 0.6


def test_slow_scraper_is_flagged_once_its_accumulated_coverage_stands_out(make_event: Any, run: Any) -> None:
    """40 fresh prompts a minute never floods a window, but after ~50 minutes it has sent 2,000."""
    prompts = Prompts(3)

    def plan(w: int) -> dict[str, list[str]]:
        return {**ordinary(prompts, every=4, w=w), "slow": prompts.fresh(40)}

    # The accumulated-coverage rule is off by default (a steady heavy caller meets it too).
    assert run(ScrapingDetector(), traffic(make_event, 70, plan)) == []
    findings = run(ScrapingDetector(min_accumulated=2000), traffic(make_event, 70, plan))

    assert [subject for _, subject in flagged(findings)] == ["principal:slow"]
    (finding,) = findings
    assert 40 <= window_of(finding) <= 60
    evidence = finding.evidence
    assert evidence["signals"] == ["accumulated_coverage"]
    coverage = evidence["accumulated_coverage"]
    assert coverage["distinct_inputs"] >= 2000
    assert coverage["ratio_population"] >= 5.0
    assert coverage["since"] == "2026-01-01T00:00:00Z"
    assert coverage["previously_reported"] is None
    assert evidence["distinct_inputs"] == pytest.approx(40, abs=4)
    assert finding.title.startswith("Slow scraping by principal:slow")
    assert len(finding.event_ids) == 20, "ids are sampled for a caller near the accumulated threshold"


def test_accumulated_coverage_is_reported_again_only_when_it_doubles(make_event: Any, run: Any) -> None:
    prompts = Prompts(4)

    def plan(w: int) -> dict[str, list[str]]:
        return {**ordinary(prompts, every=4, w=w), "slow": prompts.fresh(40)}

    findings = run(ScrapingDetector(min_accumulated=200), traffic(make_event, 45, plan))

    counts = [f.evidence["accumulated_coverage"]["distinct_inputs"] for f in findings]
    assert {f.subject for f in findings} == {"principal:slow"}
    assert len(findings) == 4  # ~200, ~400, ~800, ~1600 within 45 windows of 40
    assert all(b >= 2 * a for a, b in itertools.pairwise(counts))
    assert findings[1].evidence["accumulated_coverage"]["previously_reported"] == counts[0]


def test_accumulated_coverage_starts_again_each_epoch(make_event: Any, run: Any) -> None:
    prompts = Prompts(5)

    def plan(w: int) -> dict[str, list[str]]:
        return {**ordinary(prompts, every=4, w=w), "slow": prompts.fresh(40)}

    detector = ScrapingDetector(min_accumulated=400, coverage_horizon_s=15 * WINDOW)
    findings = run(detector, traffic(make_event, 30, plan))

    # ~400 after 10 of an epoch's 15 windows; without the restart it would reach 800 by window 20
    assert [window_of(f) // 15 for f in findings] == [0, 1]
    assert [f.evidence["accumulated_coverage"]["since"][11:16] for f in findings] == ["00:00", "00:15"]


def test_id_enumerating_scraper_is_flagged_with_its_template(make_event: Any, run: Any) -> None:
    prompts = Prompts(6)

    def plan(w: int) -> dict[str, list[str]]:
        walk = [f"Tell me everything about customer {1000 + 300 * w + n}" for n in range(300)]
        return {**ordinary(prompts), "walker": walk if w >= 3 else prompts.fresh(10)}

    findings = run(ScrapingDetector(), traffic(make_event, 5, plan))

    assert flagged(findings)[0] == (3, "principal:walker")
    enumeration = findings[0].evidence["enumeration"]
    assert enumeration == {"detected": True, "text_requests": 300, "templates": 1,
                           "distinct_per_template": pytest.approx(300, rel=0.15),
                           "example_template": "tell me everything about customer #"}
    assert "enumerating ids or numbers over 1 template" in findings[0].title
    assert "differ only by numbers or ids" in findings[0].summary


def test_ordinary_callers_are_not_enumeration(make_event: Any, run: Any) -> None:
    prompts = Prompts(7)

    def plan(w: int) -> dict[str, list[str]]:
        return {**ordinary(prompts), "scraper": prompts.fresh(300 if w == 3 else 10)}

    (finding,) = run(ScrapingDetector(), traffic(make_event, 4, plan))
    assert finding.evidence["enumeration"]["detected"] is False
    assert finding.evidence["enumeration"]["templates"] == pytest.approx(300, rel=0.3)
    assert finding.evidence["enumeration"]["example_template"] is None


def test_new_principal_arriving_as_a_scraper_is_flagged_in_its_first_window(make_event: Any,
                                                                            run: Any) -> None:
    prompts = Prompts(8)

    def plan(w: int) -> dict[str, list[str]]:
        return {**ordinary(prompts), **({"newcomer": prompts.fresh(300)} if w >= 5 else {})}

    findings = run(ScrapingDetector(), traffic(make_event, 9, plan))

    assert flagged(findings)[0] == (5, "principal:newcomer")
    first = findings[0].evidence
    assert first["own_windows_seen"] == 0
    assert first["own_ewma"] is None
    assert first["new_inputs"] == pytest.approx(300, rel=0.2)
    assert {subject for _, subject in flagged(findings)} == {"principal:newcomer"}


def test_heavy_repetitive_users_are_silent(make_event: Any, run: Any) -> None:
    """A health check, a batch job repeating 40 inputs, and one resending the same 300 each window."""
    prompts = Prompts(9)
    batch_small, batch_large = prompts.fresh(40), prompts.fresh(300)

    def plan(w: int) -> dict[str, list[str]]:
        return {**ordinary(prompts), "health": ["ping"] * 300, "batch": batch_small * 10,
                "nightly": list(batch_large)}

    # 12 windows of the nightly job add up to 3,600 inputs but only 300 distinct ones
    detector = ScrapingDetector(min_accumulated=500)
    assert run(detector, traffic(make_event, 12, plan)) == []


def test_a_batch_job_arriving_late_is_flagged_once_then_recognised_as_resending(make_event: Any,
                                                                                 run: Any) -> None:
    """In its first window it cannot be told from a scraper; afterwards it adds nothing new."""
    prompts = Prompts(10)
    batch = prompts.fresh(300)

    def plan(w: int) -> dict[str, list[str]]:
        return {**ordinary(prompts), **({"batch": list(batch)} if w >= 3 else {})}

    findings = run(ScrapingDetector(), traffic(make_event, 12, plan))
    assert flagged(findings) == [(3, "principal:batch")]


def test_case_and_whitespace_jitter_does_not_make_inputs_distinct(make_event: Any, run: Any) -> None:
    prompts = Prompts(11)
    base = prompts.fresh(5)
    rng = random.Random(11)

    def jitter(text: str) -> str:
        words = (w.upper() if rng.random() < 0.5 else w for w in text.split())
        return "  ".join(words) + " " * rng.randrange(3)

    def plan(w: int) -> dict[str, list[str]]:
        return {**ordinary(prompts), "jittery": [jitter(t) for t in base * 100]}

    assert run(ScrapingDetector(), traffic(make_event, 6, plan)) == []


def test_padding_a_scrape_with_repeats_down_to_half_does_not_hide_it(make_event: Any, run: Any) -> None:
    prompts = Prompts(12)

    def plan(w: int) -> dict[str, list[str]]:
        if w != 3:
            return {**ordinary(prompts), "scraper": prompts.fresh(10)}
        fresh = prompts.fresh(300)
        return {**ordinary(prompts), "scraper": fresh + fresh[:200]}

    findings = run(ScrapingDetector(), traffic(make_event, 5, plan))
    assert flagged(findings) == [(3, "principal:scraper")]
    assert findings[0].evidence["distinct_ratio"] == pytest.approx(0.6, abs=0.06)


def test_many_ordinary_users_are_silent(make_event: Any, run: Any) -> None:
    """120 chat users, some three times busier than the rest, all sending fresh prompts; the
    accumulated rule's minimum is low enough to be reached, so only the population test holds it."""
    prompts = Prompts(13)

    def plan(w: int) -> dict[str, list[str]]:
        return {f"user{i:03d}": prompts.fresh(30 if i % 10 == 0 else 10 + i % 5) for i in range(120)}

    assert run(ScrapingDetector(min_accumulated=100), traffic(make_event, 12, plan)) == []


def test_busy_user_at_three_times_its_usual_rate_is_silent(make_event: Any, run: Any) -> None:
    prompts = Prompts(14)

    def plan(w: int) -> dict[str, list[str]]:
        return {**ordinary(prompts), "busy": prompts.fresh(120 if w >= 10 else 40)}

    assert run(ScrapingDetector(), traffic(make_event, 15, plan)) == []
    # without the own-baseline test the same step is a flood: the baseline is what holds it
    ignoring_own = run(ScrapingDetector(own_factor=1.0), traffic(make_event, 15, plan))
    assert flagged(ignoring_own)[0] == (10, "principal:busy")


def test_warm_up_only_learns(make_event: Any, run: Any) -> None:
    """At start-up every caller is new: heavy callers present from the start are learnt, not flagged."""
    prompts = Prompts(15)

    def plan(w: int) -> dict[str, list[str]]:
        return {**ordinary(prompts, 45), **{f"heavy{i}": prompts.fresh(150) for i in range(5)}}

    assert run(ScrapingDetector(), traffic(make_event, 5, plan)) == []
    without_warmup = flagged(run(ScrapingDetector(warmup_windows=0), traffic(make_event, 5, plan)))
    heavy = {f"principal:heavy{i}" for i in range(5)}
    assert {subject for window, subject in without_warmup if window == 0} == heavy
    assert {subject for _, subject in without_warmup} == heavy  # flagged from their first window on


def test_requests_without_input_are_counted_but_not_judged(make_event: Any, run: Any) -> None:
    prompts = Prompts(16)
    events = [*traffic(make_event, 4, lambda w: ordinary(prompts))]
    events += [make_event(T0 + 3 * WINDOW + i * 0.05, principal="blind") for i in range(600)]
    assert run(ScrapingDetector(), sorted(events, key=lambda e: e.ts)) == []


def test_tabular_inputs_are_counted_by_their_features(make_event: Any, run: Any) -> None:
    rng = random.Random(17)

    def rows(n: int) -> list[dict[str, float]]:
        return [{"age": float(rng.randrange(18, 90)), "income": round(rng.uniform(1e4, 2e5), 2)}
                for _ in range(n)]

    events = []
    for w in range(5):
        for i in range(50):
            for k, row in enumerate(rows(10)):
                events.append(make_event(T0 + w * WINDOW + i + k * 0.01, principal=f"u{i}", features=row))
        if w == 3:
            events += [make_event(T0 + w * WINDOW + j * 0.1, principal="prober", features=row)
                       for j, row in enumerate(rows(400))]
    (finding,) = run(ScrapingDetector(), sorted(events, key=lambda e: e.ts))
    assert finding.subject == "principal:prober"
    assert finding.evidence["enumeration"]["templates"] is None


def test_input_key_normalises_text_and_sorts_features() -> None:
    from inferwatch.collectors.event import EventInput

    assert input_key(EventInput(text=" Hello\n  WORLD ")) == ("hello world", "hello world")
    assert input_key(EventInput(text="order A17 for 3")) == ("order a17 for 3", "order # for #")
    features = input_key(EventInput(features={"b": 1, "a": "x"}))
    assert features == input_key(EventInput(features={"a": "x", "b": 1}))
    assert input_key(EventInput()) is None
    long_a, long_b = "x" * 5000 + " question one", "x" * 5000 + " question two"
    key_a, key_b = input_key(EventInput(text=long_a)), input_key(EventInput(text=long_b))
    assert key_a is not None
    assert key_b is not None
    assert key_a[0] != key_b[0]
    assert len(key_a[0]) < 4100


def test_state_is_bounded_by_lru_and_ttl(make_event: Any, run: Any) -> None:
    detector = ScrapingDetector(max_principals=100, ttl_s=3_600)
    events = [make_event(T0 + i * 0.01, principal=f"p{i % 200}", text=f"question {i}") for i in range(1_200)]
    run(detector, events)
    assert detector.principals_tracked == 100
    assert detector.overflow == 600  # the window's tallies are bounded too

    run(detector, [make_event(T0 + 2 * 3_600 + i, principal="late", text=f"q {i}") for i in range(6)])
    assert detector.principals_tracked == 1  # everyone idle for over an hour has gone


def test_light_callers_are_held_only_when_they_come_back(make_event: Any, run: Any) -> None:
    """Rotating through keys that each send a request or two leaves no state behind; a light
    caller that keeps coming back is held, so its accumulated coverage counts."""
    detector = ScrapingDetector()
    one_shot = [make_event(T0 + w * WINDOW + i * 0.01, principal=f"w{w}-k{i}", text=f"hello {i}")
                for w in range(3) for i in range(500)]
    regular = [make_event(T0 + w * WINDOW + 30 + i, principal="regular", text=f"note {w} {i}")
               for w in range(3) for i in range(2)]
    run(detector, sorted(one_shot + regular, key=lambda e: e.ts))
    assert detector.principals_tracked == 1
    held = detector._callers.get("principal:regular")
    assert held is not None
    assert held.counted == 4  # held from its second window on


def test_a_caller_holds_a_sketch_only_after_64_distinct_inputs(make_event: Any, run: Any) -> None:
    detector = ScrapingDetector()
    events = [make_event(T0 + i * 0.1, principal="small", text=f"question {i}") for i in range(20)]
    events += [make_event(T0 + i * 0.1, principal="large", text=f"question {i}") for i in range(200)]
    run(detector, sorted(events, key=lambda e: e.ts))
    small, large = detector._callers.get("principal:small"), detector._callers.get("principal:large")
    assert small is not None
    assert small.sketch is None
    assert small.counted == 20
    assert large is not None
    assert large.sketch is not None
    assert len(large.sketch) == 64


def test_events_without_principal_count_by_address(make_event: Any, run: Any) -> None:
    prompts = Prompts(18)
    events = [*traffic(make_event, 3, lambda w: ordinary(prompts))]
    events += [make_event(T0 + 2 * WINDOW + i * 0.1, principal=None, client_ip="203.0.113.7", text=t)
               for i, t in enumerate(prompts.fresh(400))]
    events += [make_event(T0 + 2 * WINDOW + 30, principal=None, client_ip=None, text="x")]
    detector = ScrapingDetector()
    (finding,) = run(detector, sorted(events, key=lambda e: e.ts))
    assert finding.subject == "ip:203.0.113.7"
    assert detector.unattributed == 1


@pytest.mark.parametrize(("option", "value"), [
    ("min_distinct", 0), ("min_distinct_ratio", 0.0), ("min_distinct_ratio", 1.5), ("min_share", 0.0),
    ("min_callers", 0), ("min_accumulated", 0), ("coverage_horizon_s", 0.0), ("max_chars", 1),
    ("warmup_windows", -1), ("ewma_alpha", 0.0), ("own_factor", 0.5), ("baseline_floor", 0.0),
    ("max_principals", 0), ("ttl_s", -1.0),
])
def test_bad_options_name_the_option(option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=option):
        ScrapingDetector(**{option: value})


def test_runs_in_the_service_pipeline(make_event: Any) -> None:
    prompts = Prompts(19)

    def plan(w: int) -> dict[str, list[str]]:
        return {**ordinary(prompts), "scraper": prompts.fresh(400 if w == 4 else 10)}

    findings = run_detector(ScrapingDetector(), traffic(make_event, 6, plan))
    assert flagged(findings) == [(4, "principal:scraper")]


def test_docstring_examples() -> None:
    assert doctest.testmod(scraping).failed == 0


@pytest.mark.parametrize(("status", "flagged_too"), [(401, False), (403, False), (429, True)])
def test_refused_requests_read_nothing_and_are_not_counted(make_event: Any, run: Any, status: int,
                                                           flagged_too: bool) -> None:
    """500 distinct prompts refused as unauthenticated read nothing (auth_abuse's); a caller going
    on past its rate limit (429) is still scraping."""
    prompts = Prompts(1)

    def plan(w: int) -> dict[str, list[str]]:
        return {**ordinary(prompts), "badkey": prompts.fresh(500 if w == 4 else 10)}

    events = [e.model_copy(update={"status": status}) if e.principal == "badkey" else e
              for e in traffic(make_event, 8, plan)]
    detector = ScrapingDetector()
    assert flagged(run(detector, iter(events))) == ([(4, "principal:badkey")] if flagged_too else [])
    assert detector.refused == (0 if flagged_too else 500 + 7 * 10)


def test_new_keys_scraping_together_are_judged_against_the_settled_callers(make_event: Any, run: Any) -> None:
    """Eight new keys with 200 distinct prompts each beside six known callers at about 11 made the
    window's median theirs, and so their own bar. A new caller is judged against the callers with
    a history and the light ones; with ``min_population`` 0, the window's, as before."""
    prompts = Prompts(7)

    def plan(w: int) -> dict[str, list[str]]:
        pack = {f"pack{i}": prompts.fresh(200) for i in range(8)} if w == 4 else {}
        return {**ordinary(prompts, n=6), **pack}

    findings = run(ScrapingDetector(), traffic(make_event, 6, plan))
    assert sorted(flagged(findings)) == [(4, f"principal:pack{i}") for i in range(8)]
    assert {f.evidence["population_basis"] for f in findings} == {"the callers with a history in this window"}
    assert run(ScrapingDetector(min_population=0), traffic(make_event, 6, plan)) == []
