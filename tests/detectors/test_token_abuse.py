"""TokenAbuseDetector: token floods, oversized inputs and logprob/max_tokens harvesting."""

from __future__ import annotations

import doctest
import itertools
import json
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any

import pytest

from inferwatch.collectors.event import EventInput, EventOutput, InferenceEvent
from inferwatch.detectors import token_abuse
from inferwatch.detectors.base import Detector, Finding
from inferwatch.detectors.token_abuse import TokenAbuseDetector
from inferwatch.testing import run_detector

T0 = 1_767_225_600.0
WINDOW = 60.0

# principal -> (requests, tokens per request) in a window
Plan = dict[str, tuple[int, int]]


def traffic(make_event: Any, windows: int, plan: Callable[[int], Plan], *, start_window: int = 0,
            attributes: Callable[[str, int, int], dict[str, Any]] | None = None) -> Iterator[InferenceEvent]:
    """Events in time order; each request splits its tokens 3:1 between input and output."""
    for w in range(start_window, start_window + windows):
        schedule = sorted(
            (T0 + w * WINDOW + (i + 0.5) * WINDOW / n, principal, tokens, i)
            for principal, (n, tokens) in plan(w).items()
            for i in range(n)
        )
        for ts, principal, tokens, i in schedule:
            yield make_event(ts, principal=principal,
                             output=EventOutput(tokens=tokens // 4),
                             attributes=attributes(principal, w, i) if attributes else {},
                             ).model_copy(update={"input": EventInput(tokens=tokens - tokens // 4)})


def normal_users(n: int = 40, requests: int = 10, tokens: int = 500) -> Plan:
    return {f"user{i:03d}": (requests + i % 3, tokens) for i in range(n)}


def window_of(finding: Finding) -> int:
    return round((finding.time.timestamp() - T0) / WINDOW) - 1


def signals(findings: list[Finding]) -> list[tuple[int, str, str]]:
    return [(window_of(f), f.subject, f.evidence["signal"]) for f in findings]


def test_is_a_registered_detector() -> None:
    registered = [ep for ep in entry_points(group="inferwatch.detectors") if ep.name == "token_abuse"]
    assert len(registered) == 1
    cls = registered[0].load()
    assert cls is TokenAbuseDetector
    assert isinstance(cls(), Detector)


def test_token_flood_fires_with_evidence(make_event: Any, run: Any) -> None:
    def plan(w: int) -> Plan:
        return {**normal_users(), "burner": (10, 8_000 if w in (5, 6) else 500)}

    findings = run(TokenAbuseDetector(), traffic(make_event, 9, plan))

    assert signals(findings) == [(5, "principal:burner", "token_volume"),
                                 (6, "principal:burner", "token_volume")]
    first = findings[0]
    assert first.kind == "abuse"
    assert first.detector == "token_abuse"
    evidence = first.evidence
    assert evidence["tokens"] == 80_000
    assert evidence["own_baseline"] == pytest.approx(5_000, rel=0.01)
    assert evidence["population_median"] == 5_500
    assert evidence["thresholds"] == {"min_tokens": 20_000, "own_factor": 5.0, "population_factor": 5.0,
                                      "baseline_floor": 1000.0}
    assert evidence["window_start"].endswith("00:05:00Z")
    assert evidence["window_end"].endswith("00:06:00Z")
    assert "80,000 tokens" in first.title
    assert 0 < len(first.event_ids) <= 20
    json.dumps(evidence)


def test_a_token_flood_is_not_absorbed_at_once(make_event: Any, run: Any) -> None:
    def plan(w: int) -> Plan:
        return {**normal_users(), "burner": (10, 20_000 if w >= 3 else 500)}

    findings = run(TokenAbuseDetector(), traffic(make_event, 12, plan))
    assert [window_of(f) for f in findings][:4] == [3, 4, 5, 6]
    baselines = [f.evidence["own_baseline"] for f in findings]
    assert all(b2 <= 1.4 * b1 + 1e-6 for b1, b2 in itertools.pairwise(baselines))


def test_steady_heavy_users_are_quiet_after_warm_up(make_event: Any, run: Any) -> None:
    def plan(w: int) -> Plan:
        return {**normal_users(35), **{f"heavy{i}": (40, 3_000) for i in range(5)}}

    assert run(TokenAbuseDetector(), traffic(make_event, 15, plan)) == []


def test_ordinary_traffic_is_quiet(make_event: Any, run: Any) -> None:
    def plan(w: int) -> Plan:
        return normal_users(60, tokens=400 + 50 * (w % 4))

    def attributes(principal: str, w: int, i: int) -> dict[str, Any]:
        # A few callers ask for logprobs or long answers now and then.
        return {"max_tokens": 8192 if principal.endswith("7") else 512,
                "logprobs": principal.endswith(("1", "2"))}

    assert run(TokenAbuseDetector(), traffic(make_event, 10, plan, attributes=attributes)) == []


def test_a_heavy_newcomer_is_flagged_for_several_windows_then_accepted(make_event: Any, run: Any) -> None:
    def plan(w: int) -> Plan:
        return {**normal_users(), **({"newcomer": (20, 3_000)} if w >= 4 else {})}

    findings = run(TokenAbuseDetector(), traffic(make_event, 12, plan))
    flagged = [w for w, _subject, _signal in signals(findings)]
    assert flagged == list(range(4, 4 + len(flagged)))  # consecutive, from its first window
    assert 2 <= len(flagged) <= 6  # then the lasting rate is accepted
    assert findings[0].evidence["own_windows_seen"] == 0


def test_tokens_fall_back_to_characters(make_event: Any, run: Any) -> None:
    detector = TokenAbuseDetector(warmup_windows=0, min_tokens=1_000)
    events = [make_event(T0 + i, principal=f"u{i}", text="x" * 400) for i in range(10)]
    events += [make_event(T0 + 20 + i * 0.1, principal="chatty", text="y" * 4_000) for i in range(10)]

    (finding,) = run(detector, sorted(events, key=lambda e: e.ts))
    assert finding.subject == "principal:chatty"
    assert finding.evidence["tokens"] == 10_000
    assert finding.evidence["requests_estimated_from_chars"] == 10


def test_oversized_input_fires_per_request(make_event: Any, run: Any) -> None:
    detector = TokenAbuseDetector()
    big = make_event(T0 + 1, principal="stuffer").model_copy(update={"input": EventInput(tokens=150_000)})
    by_chars = make_event(T0 + 2, principal=None, client_ip="203.0.113.0", text="z" * 160_000)
    fine = make_event(T0 + 3, principal="ok").model_copy(update={"input": EventInput(tokens=32_000)})

    findings = detector.observe(big) + detector.observe(by_chars) + detector.observe(fine)

    assert [(f.subject, f.evidence["signal"], f.severity) for f in findings] == [
        ("principal:stuffer", "oversized_input", "high"), ("ip:203.0.113.0", "oversized_input", "low")]
    assert findings[0].event_ids == [big.id]
    assert findings[0].evidence["input_tokens"] == 150_000
    assert findings[0].evidence["thresholds"] == {"max_input_tokens": 32_000}
    assert findings[1].evidence["estimated_from_chars"] is True
    assert findings[1].evidence["input_tokens"] == 40_000
    assert "estimated tokens" in findings[1].title
    json.dumps(findings[0].evidence)


def test_one_document_pasted_is_an_oversized_input_not_also_a_flood(make_event: Any, run: Any) -> None:
    """Its input tokens are reported as oversized and left out of the window's volume."""
    paste = make_event(T0 + 2 * WINDOW + 5, principal="user089", text="word " * 29_000)  # ~36k tokens
    events = sorted([*traffic(make_event, 3, lambda w: normal_users()), paste], key=lambda e: e.ts)

    findings = run(TokenAbuseDetector(), events)

    assert [(f.subject, f.evidence["signal"]) for f in findings] == [("principal:user089", "oversized_input")]


@pytest.mark.parametrize("ask", [{"logprobs": True, "top_logprobs": 20}, {"max_tokens": 16_384}])
def test_harvesting_fires(make_event: Any, run: Any, ask: dict[str, Any]) -> None:
    def plan(w: int) -> Plan:
        return {**normal_users(), "harvester": (120, 300)}

    def attributes(principal: str, w: int, i: int) -> dict[str, Any]:
        return ask if principal == "harvester" and w == 2 else {"max_tokens": 256}

    findings = run(TokenAbuseDetector(), traffic(make_event, 4, plan, attributes=attributes))

    assert signals(findings) == [(2, "principal:harvester", "harvesting")]
    evidence = findings[0].evidence
    assert evidence["kinds"] == ["logprobs" if "logprobs" in ask else "max_tokens"]
    assert evidence["harvest_ratio"] == 1.0
    assert evidence["thresholds"] == {"min_logprob_requests": 50, "min_harvest_ratio": 0.8,
                                      "max_tokens_threshold": 4096}
    assert len(findings[0].event_ids) == 20
    assert "model extraction" in findings[0].title
    json.dumps(evidence)


def test_harvesting_needs_enough_requests_and_most_of_them(make_event: Any, run: Any) -> None:
    def plan(w: int) -> Plan:
        return {**normal_users(), "evaluator": (200, 300), "small": (40, 300)}

    def attributes(principal: str, w: int, i: int) -> dict[str, Any]:
        if principal == "small":
            return {"logprobs": True}  # all of its requests, but only 40 of them
        if principal == "evaluator":
            return {"top_logprobs": 5 if i % 2 else 0}  # 100 of them, but only half
        return {}

    assert run(TokenAbuseDetector(), traffic(make_event, 3, plan, attributes=attributes)) == []


def test_state_is_bounded_by_lru_and_ttl(make_event: Any, run: Any) -> None:
    detector = TokenAbuseDetector(max_principals=100, ttl_s=3_600)
    run(detector, [make_event(T0 + i * 0.01, principal=f"p{i}", text="x" * 40) for i in range(1_000)])
    assert detector.principals_tracked <= 100
    assert detector.overflow == 900

    run(detector, [make_event(T0 + 2 * 3_600 + i, principal="late", text="x") for i in range(3)])
    assert detector.principals_tracked == 1


def test_runs_in_the_service_pipeline(make_event: Any) -> None:
    def plan(w: int) -> Plan:
        return {**normal_users(), "burner": (10, 8_000 if w == 4 else 500)}

    findings = run_detector(TokenAbuseDetector(), traffic(make_event, 6, plan))
    assert signals(findings) == [(4, "principal:burner", "token_volume")]


def test_docstring_examples() -> None:
    assert doctest.testmod(token_abuse).failed == 0


def test_refused_requests_use_no_tokens_and_leave_the_population_alone(make_event: Any, run: Any) -> None:
    """A security walk-through: a credential-stuffing burst (many keys, small refused requests)
    pulled the window's median down until two ordinary users pasting long documents were paged
    as token floods. 401/403 are auth_abuse's; they reach no model and are not counted."""
    def plan(w: int) -> Plan:
        stuffing = {f"stolen{i:03d}": (2, 40) for i in range(120)} if w >= 3 else {}
        return {**normal_users(20, tokens=1_500), "reader": (5, 5_500 if w == 5 else 600), **stuffing}

    events = [e.model_copy(update={"status": 401}) if (e.principal or "").startswith("stolen") else e
              for e in traffic(make_event, 8, plan)]
    detector = TokenAbuseDetector()
    assert run(detector, iter(events)) == []
    assert detector.refused == 5 * 120 * 2
    # Counted as before they were refused, the same traffic pages the reader.
    counted = TokenAbuseDetector()
    assert [f.subject for f in run(counted, traffic(make_event, 8, plan))] == ["principal:reader"]


def test_a_key_alone_in_its_window_is_judged_against_recent_windows(make_event: Any, run: Any) -> None:
    """A window with fewer than five callers using tokens takes recent windows' median: a new key
    alone burning 60,000 tokens is a flood, not its own median, and a known steady caller alone
    at its usual volume stays quiet."""

    def plan(w: int) -> Plan:
        if w < 4:
            return {**normal_users(), "steady": (20, 2_000)}
        return {"stranger": (30, 2_000)} if w == 5 else {"steady": (20, 2_000)}

    findings = [f for f in run(TokenAbuseDetector(), traffic(make_event, 7, plan))
                if f.evidence["signal"] == "token_volume"]

    assert [(window_of(f), f.subject) for f in findings] == [(5, "principal:stranger")]
    assert findings[0].evidence["population_basis"] == "recent windows"
    assert "the median of recent windows (5,500; this window had 1 active principal)" in findings[0].summary


def test_new_keys_burning_tokens_together_are_judged_against_the_callers_with_a_history(
        make_event: Any, run: Any) -> None:
    """Seven new keys at 60,000 tokens beside six known callers at about 5,500 made the window's
    median theirs, and so their own bar. A new key is judged against the keys with a history."""

    def plan(w: int) -> Plan:
        return {**normal_users(6), **({f"pack{i}": (30, 2_000) for i in range(7)} if w == 4 else {})}

    findings = [f for f in run(TokenAbuseDetector(), traffic(make_event, 6, plan))
                if f.evidence["signal"] == "token_volume"]
    assert sorted(signals(findings)) == [(4, f"principal:pack{i}", "token_volume") for i in range(7)]
    assert {f.evidence["population_basis"] for f in findings} == {"the callers with a history in this window"}
    assert run(TokenAbuseDetector(min_population=0), traffic(make_event, 6, plan)) == []
