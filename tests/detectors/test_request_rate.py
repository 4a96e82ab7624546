"""RequestRateDetector: requests per principal against its own EWMA and the population median."""

from __future__ import annotations

import doctest
import itertools
import json
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any

import pytest

from inferwatch.collectors.event import InferenceEvent
from inferwatch.detectors import request_rate
from inferwatch.detectors.base import Detector
from inferwatch.detectors.request_rate import RequestRateDetector
from inferwatch.testing import run_detector

T0 = 1_767_225_600.0
WINDOW = 60.0


def traffic(make_event: Any, windows: int, rates: Any, *, start_window: int = 0) -> Iterator[InferenceEvent]:
    """Events in time order; ``rates(window)`` maps principal -> requests in that window."""
    for w in range(start_window, start_window + windows):
        per_window = rates(w)
        schedule = sorted(
            (T0 + w * WINDOW + (i + 0.5) * WINDOW / n, principal)
            for principal, n in per_window.items()
            for i in range(n)
        )
        for ts, principal in schedule:
            yield make_event(ts, principal=principal)


def normal_users(n: int = 50, rate: int = 10) -> dict[str, int]:
    return {f"user{i:03d}": rate + i % 3 for i in range(n)}


def window_of(finding: Any) -> int:
    return round((finding.time.timestamp() - T0) / WINDOW) - 1


def test_is_a_registered_detector() -> None:
    (ep,) = [ep for ep in entry_points(group="inferwatch.detectors") if ep.name == "request_rate"]
    cls = ep.load()
    assert cls is RequestRateDetector
    assert cls.name == "request_rate"
    assert isinstance(cls(), Detector)


def test_flooding_principal_fires_once_per_flood_window(make_event: Any, run: Any) -> None:
    def rates(w: int) -> dict[str, int]:
        return {**normal_users(), "flooder": 300 if w in (6, 7) else 10}

    findings = run(RequestRateDetector(), traffic(make_event, 10, rates))

    assert [(window_of(f), f.subject) for f in findings] == [(6, "principal:flooder"),
                                                             (7, "principal:flooder")]
    first = findings[0]
    assert first.kind == "abuse"
    assert first.detector == "request_rate"
    evidence = first.evidence
    assert evidence["count"] == 300
    assert evidence["own_baseline"] == pytest.approx(10, abs=1)
    assert evidence["population_median"] == 11
    assert evidence["population_active"] == 51
    assert evidence["window_start"].endswith("00:06:00Z")
    assert evidence["window_end"].endswith("00:07:00Z")
    assert evidence["thresholds"] == {"min_requests": 30, "own_factor": 5.0, "population_factor": 5.0,
                                      "baseline_floor": 2.0}
    assert "300 requests" in first.title
    assert "principal:flooder" in first.summary
    assert len(first.event_ids) == 20
    assert first.model == "model-a"
    json.dumps(evidence)


def test_a_flood_is_not_absorbed_into_the_baseline_at_once(make_event: Any, run: Any) -> None:
    def rates(w: int) -> dict[str, int]:
        return {**normal_users(), "flooder": 300 if w >= 3 else 10}

    findings = run(RequestRateDetector(), traffic(make_event, 12, rates))

    flagged = [window_of(f) for f in findings]
    assert flagged[:4] == [3, 4, 5, 6], "a sustained flood keeps being flagged for several windows"
    baselines = [f.evidence["own_baseline"] for f in findings]
    assert all(b2 <= 1.4 * b1 + 1e-6 for b1, b2 in itertools.pairwise(baselines))


def test_severity_rises_with_the_ratio(make_event: Any, run: Any) -> None:
    def rates(w: int) -> dict[str, int]:
        return {**normal_users(rate=2), "small": 40 if w == 3 else 2, "huge": 600 if w == 3 else 2}

    findings = {f.subject: f for f in run(RequestRateDetector(), traffic(make_event, 4, rates))}
    order = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
    assert order[findings["principal:huge"].severity] > order[findings["principal:small"].severity]
    assert findings["principal:huge"].score > findings["principal:small"].score


def test_steady_heavy_users_from_the_start_never_fire(make_event: Any, run: Any) -> None:
    """The first window only learns, so heavy users present at start-up get their baseline quietly."""

    def rates(w: int) -> dict[str, int]:
        return {**normal_users(45), **{f"heavy{i}": 120 for i in range(5)}}

    assert run(RequestRateDetector(), traffic(make_event, 20, rates)) == []


def test_a_heavy_newcomer_is_flagged_for_several_windows_then_accepted(make_event: Any, run: Any) -> None:
    """After warm-up a new key at 10x the median has no history: it starts from a typical caller's
    baseline and, like a known key's flood, is learned slowly: flagged a few windows running
    (not once and then silent while it goes on), and a lasting rate is accepted after that."""

    def rates(w: int) -> dict[str, int]:
        return {**normal_users(), **({"newcomer": 110} if w >= 5 else {})}

    findings = run(RequestRateDetector(), traffic(make_event, 15, rates))

    assert [(window_of(f), f.subject) for f in findings] == [(w, "principal:newcomer") for w in (5, 6, 7, 8)]
    assert findings[0].evidence["own_windows_seen"] == 0
    assert findings[0].evidence["own_ewma"] is None
    assert [f.evidence["own_windows_seen"] for f in findings[1:]] == [1, 2, 3]


def test_newcomer_below_population_factor_is_not_flagged(make_event: Any, run: Any) -> None:
    def rates(w: int) -> dict[str, int]:
        return {**normal_users(rate=20), **({"newcomer": 60} if w >= 3 else {})}

    assert run(RequestRateDetector(), traffic(make_event, 6, rates)) == []


def test_uniform_traffic_never_fires(make_event: Any, run: Any) -> None:
    def rates(w: int) -> dict[str, int]:
        return {f"p{i}": 40 for i in range(100)}

    assert run(RequestRateDetector(), traffic(make_event, 30, rates)) == []


def test_small_numbers_are_never_abuse(make_event: Any, run: Any) -> None:
    def rates(w: int) -> dict[str, int]:
        return {**normal_users(rate=1), "light": 25 if w == 4 else 1}

    assert run(RequestRateDetector(), traffic(make_event, 6, rates)) == []


def test_events_without_principal_count_by_address(make_event: Any, run: Any) -> None:
    detector = RequestRateDetector(min_requests=5, warmup_windows=0)
    events = [make_event(T0 + i * 0.1, principal=None, client_ip="203.0.113.7") for i in range(50)]
    events += [make_event(T0 + i, principal=f"u{i}") for i in range(10)]
    events += [make_event(T0 + 30 + i, principal=None, client_ip=None) for i in range(3)]

    (finding,) = run(detector, sorted(events, key=lambda e: e.ts))

    assert finding.subject == "ip:203.0.113.7"
    assert finding.evidence["count"] == 50
    assert detector.unattributed == 3


def test_baselines_are_bounded_by_lru_and_ttl(make_event: Any, run: Any) -> None:
    detector = RequestRateDetector(max_principals=100, ttl_s=3_600)
    run(detector, [make_event(T0 + i * 0.01, principal=f"p{i}") for i in range(1_000)])
    assert detector.principals_tracked <= 100
    assert detector.overflow == 900  # the window's counters are bounded too

    run(detector, [make_event(T0 + 2 * 3_600 + i, principal="late") for i in range(3)])
    assert detector.principals_tracked == 1  # everyone idle for over an hour has gone


def test_window_start_after_a_silence_is_not_the_previous_end(make_event: Any, run: Any) -> None:
    def rates(w: int) -> dict[str, int]:
        return {**normal_users(), "flooder": 300 if w == 40 else 10}

    events = [*traffic(make_event, 3, rates), *traffic(make_event, 1, rates, start_window=40)]
    (finding,) = run(RequestRateDetector(), events)
    assert finding.evidence["window_start"].endswith("00:40:00Z")


def test_runs_in_the_service_pipeline(make_event: Any) -> None:
    """The same detector through the real pipeline: windows closed by the service's clock."""

    def rates(w: int) -> dict[str, int]:
        return {**normal_users(), "flooder": 300 if w == 4 else 10}

    findings = run_detector(RequestRateDetector(), traffic(make_event, 6, rates))
    assert [(window_of(f), f.subject) for f in findings] == [(4, "principal:flooder")]


def test_docstring_examples() -> None:
    assert doctest.testmod(request_rate).failed == 0


@pytest.mark.parametrize(("status", "flagged"), [(401, False), (403, False), (429, True), (200, True)])
def test_requests_refused_as_unauthenticated_are_auth_abuses_not_a_flood(make_event: Any, run: Any,
                                                                         status: int, flagged: bool) -> None:
    # An on-call walk-through: 40 requests with a bad key paged twice, auth_abuse (low) and a
    # request flood (medium) ranked above it. A caller going on past its rate limit (429) floods.
    events = [e if e.principal != "badkey" else e.model_copy(update={"status": status})
              for e in traffic(make_event, 10, lambda w: {**normal_users(), "badkey": 300 if w == 6 else 10})]
    detector = RequestRateDetector()
    findings = run(detector, iter(events))
    assert [f.subject for f in findings] == (["principal:badkey"] if flagged else [])
    assert detector.refused == (0 if flagged else 300 + 9 * 10)



@pytest.mark.parametrize("warmup", [0, 1])
@pytest.mark.parametrize("before_end", [0.05, 0.17, 0.25, 0.6])
def test_a_short_burst_cut_by_a_window_end_is_flagged(make_event: Any, run: Any, warmup: int,
                                                      before_end: float) -> None:
    """A new key's burst of 150 calls in 0.8 s, cut by a window's end into a first part under
    ``min_requests`` or under the population test and the rest: the rest is the flood. Its
    window holds the flooder alone (its median is the flood itself), and the first part was no
    typical caller's baseline; both once let the whole burst through (a CI run of the proxy test)."""
    window, users = 10.0, [f"user{i:02d}" for i in range(12)]
    ordinary = [make_event(T0 + w * window + (j + 0.5) * window / 8, principal=p)
                for w in range(warmup + 1) for p in users for j in range(7)]
    burst_start = T0 + (warmup + 1) * window - before_end
    burst = [make_event(burst_start + 0.8 * i / 150, principal="flooder") for i in range(150)]

    findings = run(RequestRateDetector(warmup_windows=warmup), sorted(ordinary + burst, key=lambda e: e.ts),
                   window_s=window)

    assert {f.subject for f in findings} == {"principal:flooder"}


def test_in_a_window_with_few_callers_each_is_judged_against_the_others(make_event: Any, run: Any) -> None:
    """Quiet hours: with fewer than five callers a window's median is the callers themselves. Each
    is judged against the others' median instead, or recent busy windows' when lower; one alone,
    against recent busy windows'; alone with nothing recent, against itself (no population flags
    it, as before). A known heavy job at its usual rate stays quiet (its own baseline); new keys
    at 60 requests among callers sending about 10 are floods."""

    def rates(w: int) -> dict[str, int]:
        if w < 4:
            return {**normal_users(), "nightly": 60}
        if w == 7:
            return {"loner": 60}
        return {"nightly": 60, "user001": 11, "user002": 9, **({"stranger": 60} if w == 6 else {})}

    findings = run(RequestRateDetector(), traffic(make_event, 9, rates))

    assert [(window_of(f), f.subject) for f in findings] == [(6, "principal:stranger"),
                                                             (7, "principal:loner")]
    among, alone = (f.evidence for f in findings)
    # A new key: the callers with a history (here the other three too).
    assert (among["population_basis"], among["population_median"], among["population_active"]) == (
        "the callers with a history in this window", 11, 4)
    assert "the median of the principals with a history (11; this window had 4 active principals)" in (
        findings[0].summary)
    assert (alone["population_basis"], alone["population_median"]) == ("recent windows", 11)
    assert "the median of recent windows (11; this window had 1 active principal)" in findings[1].summary
    # Alone with nothing recent to go by (a dev service's one user): itself, never a flood of a population.
    assert run(RequestRateDetector(warmup_windows=0), traffic(make_event, 2, lambda w: {f"k{w}": 300})) == []
    # 0: every window's own median, as before min_population: the lone stranger above goes unflagged.
    assert run(RequestRateDetector(min_population=0), traffic(make_event, 9, rates)) == []


def test_keys_flooding_together_or_beside_heavy_callers_do_not_set_their_own_bar(make_event: Any,
                                                                                  run: Any) -> None:
    """A re-review: in a thin window two to four keys flooding together were each other's median,
    and a known backend at 200 beside one person hid a new key at 300. Against recent busy
    windows' median (11) when lower than the others', both are floods."""

    def rates(w: int) -> dict[str, int]:
        if w < 3:
            return {**normal_users(), "backend": 200}
        if w in (3, 4):
            return {"pack1": 300, "pack2": 300, "pack3": 300}
        return {"backend": 200, "person": 3, **({"newkey": 300} if w >= 6 else {})}

    findings = run(RequestRateDetector(), traffic(make_event, 8, rates))
    assert "principal:backend" not in {f.subject for f in findings}  # known: its own baseline
    flagged = {(window_of(f), f.subject.removeprefix("principal:")) for f in findings}
    assert {(w, f"pack{i}") for w in (3, 4) for i in (1, 2, 3)} <= flagged
    assert {(6, "newkey"), (7, "newkey")} <= flagged
    assert all(f.evidence["population_basis"] == "recent windows" for f in findings)


def test_recent_windows_neither_go_stale_over_a_quiet_spell_nor_are_lifted_by_a_pack(make_event: Any,
                                                                                     run: Any) -> None:
    """A review's two ways round the recent median: busy API clients at 50, then hours of three
    people at 2 a window: a new key at 150 among them is judged against the others (2), not the
    busy hours' 50. Five keys flooding together make a window "busy" with their own median, 150:
    the recent median rises at most 1.5x a window, so the lone key after them is still a flood."""

    def quiet_after_busy(w: int) -> dict[str, int]:
        if w < 3:
            return {f"client{i}": 50 for i in range(10)}
        return {"ann": 2, "bob": 2, "cid": 2, **({"newkey": 150} if w == 20 else {})}

    findings = run(RequestRateDetector(), traffic(make_event, 22, quiet_after_busy))
    assert [(window_of(f), f.subject) for f in findings] == [(20, "principal:newkey")]
    assert findings[0].evidence["population_median"] == 2

    def pack_then_loner(w: int) -> dict[str, int]:
        if w < 3:
            return normal_users()
        return {f"pack{i}": 150 for i in range(5)} if w == 3 else {"loner": 150}

    findings = run(RequestRateDetector(), traffic(make_event, 5, pack_then_loner))
    # The pack, all new keys, against recent windows (11); the loner after it against 16.5.
    assert [(window_of(f), f.subject) for f in findings] == [
        (3, f"principal:pack{i}") for i in range(5)] + [(4, "principal:loner")]
    assert [f.evidence["population_median"] for f in findings] == pytest.approx([11.0] * 5 + [16.5], abs=0.1)


def test_new_keys_flooding_together_are_judged_against_the_callers_with_a_history(make_event: Any,
                                                                                 run: Any) -> None:
    """Eight new keys at 200 beside six known callers at about 10 made the window's median 200,
    their own bar: none was flagged. A new key is judged against the keys with a history (their
    median, 11), so each is a flood; the known callers, against the window as before. A morning
    ramp is no flood: known callers up from 10 to 40 and a new key at 90 beside them (over 5x
    recent windows' median, which lags)."""

    def pack(w: int) -> dict[str, int]:
        return {**normal_users(6), **({f"pack{i}": 200 for i in range(8)} if w == 4 else {})}

    findings = run(RequestRateDetector(), traffic(make_event, 6, pack))
    pack_keys = [(4, f"principal:pack{i}") for i in range(8)]
    assert sorted((window_of(f), f.subject) for f in findings) == pack_keys
    assert {(f.evidence["population_basis"], f.evidence["population_median"], f.evidence["population_active"])
            for f in findings} == {("the callers with a history in this window", 11, 14)}
    assert "the median of the principals with a history (11; this window had 14 active" in findings[0].summary

    def morning(w: int) -> dict[str, int]:
        return {**normal_users(6, 10 if w < 3 else 40), **({"newkey": 90} if w == 4 else {})}

    assert run(RequestRateDetector(), traffic(make_event, 6, morning)) == []
    # min_population 0: the window's own median for everyone, as before.
    assert run(RequestRateDetector(min_population=0), traffic(make_event, 6, pack)) == []


def test_before_any_busy_window_a_thin_window_is_its_own_reference(make_event: Any, run: Any) -> None:
    def rates(w: int) -> dict[str, int]:
        return {"a": 60, "b": 50} if w < 3 else {"a": 60, "b": 50, "c": 100}

    assert run(RequestRateDetector(), traffic(make_event, 4, rates)) == []


def test_a_backend_beside_one_person_from_start_up_learns_against_the_window(make_event: Any,
                                                                            run: Any) -> None:
    """Warm-up caps a first window at five times the window's own median, not the others': a
    backend at 200 beside one person at 3 is no flood after start-up (a re-review's B4)."""
    assert run(RequestRateDetector(), traffic(make_event, 6, lambda w: {"backend": 200, "person": 3})) == []


def test_a_recent_median_forgotten_after_ttl_starts_afresh() -> None:
    from inferwatch.detectors.state import PopulationReference

    reference = PopulationReference(ttl_s=100.0)
    reference.of([35.0] * 6, 0.0)
    assert reference.of([5.0], 50.0).recent == 35.0
    assert reference.of([5.0], 500.0).recent == 0.0  # forgotten: a lone caller is judged against itself
    reference.of([60.0] * 6, 600.0)
    assert reference.median == 60.0  # not 35 moved towards 60
