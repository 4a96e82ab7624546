"""AuthAbuseDetector: bursts of 401/403/429 per subject, and addresses shared by many principals."""

from __future__ import annotations

import doctest
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.metadata import entry_points
from typing import Any

from inferwatch.collectors.event import InferenceEvent
from inferwatch.detectors import auth_abuse
from inferwatch.detectors.auth_abuse import AuthAbuseDetector
from inferwatch.detectors.base import Detector
from inferwatch.testing import run_detector, run_pipeline

T0 = 1_767_225_600.0
WINDOW = 60.0


Row = tuple[str | None, str | None, int, int]


def calls(make_event: Any, window: int, spec: list[Row]) -> Iterator[InferenceEvent]:
    """Events spread over one window; ``spec`` is ``(principal, client_ip, status, count)`` rows."""
    rows = [(p, ip, status) for p, ip, status, n in spec for _ in range(n)]
    for i, (principal, ip, status) in enumerate(rows):
        yield make_event(T0 + window * WINDOW + (i + 0.5) * WINDOW / len(rows), principal=principal,
                         client_ip=ip, status=status)


def background(n: int = 30) -> list[Row]:
    """Ordinary users, each on its own address, with the odd expired-token 401."""
    rows: list[Row] = []
    for i in range(n):
        rows += [(f"user{i:02d}", f"198.51.{i}.0", 200, 20), (f"user{i:02d}", f"198.51.{i}.0", 401, i % 2)]
    return rows


def test_is_a_registered_detector() -> None:
    registered = [ep for ep in entry_points(group="inferwatch.detectors") if ep.name == "auth_abuse"]
    assert len(registered) == 1
    cls = registered[0].load()
    assert cls is AuthAbuseDetector
    assert isinstance(cls(), Detector)


def test_failure_burst_fires_with_the_principal_as_subject(make_event: Any, run: Any) -> None:
    guesser: list[Row] = [("guesser", "203.0.113.0", 401, 80), ("guesser", "203.0.113.0", 403, 20),
                          ("guesser", "203.0.113.0", 200, 5)]
    events = [*calls(make_event, 0, background()), *calls(make_event, 1, [*background(), *guesser])]

    (finding,) = run(AuthAbuseDetector(), events)

    assert finding.subject == "principal:guesser"
    assert finding.kind == "abuse"
    assert finding.detector == "auth_abuse"
    evidence = finding.evidence
    assert evidence["signal"] == "failure_burst"
    assert (evidence["failures"], evidence["requests"]) == (100, 105)
    assert evidence["failures_by_status"] == {"401": 80, "403": 20}
    assert evidence["thresholds"] == {"min_failures": 20, "min_failure_ratio": 0.5}
    assert evidence["window_start"].endswith("00:01:00Z")
    assert evidence["window_end"].endswith("00:02:00Z")
    assert finding.severity == "medium"  # 5x min_failures
    assert "100 of 105 requests refused" in finding.title
    assert len(finding.event_ids) == 20
    json.dumps(evidence)


def test_unauthenticated_burst_is_attributed_to_the_address(make_event: Any, run: Any) -> None:
    events = calls(make_event, 0, [*background(), (None, "203.0.113.0", 401, 40)])
    (finding,) = run(AuthAbuseDetector(), events)
    assert finding.subject == "ip:203.0.113.0"
    assert finding.evidence["failures"] == 40


def test_ordinary_failure_rate_does_not_fire(make_event: Any, run: Any) -> None:
    """A busy client with 30 expired-token failures out of 400 calls is not an attack."""
    busy: list[Row] = [("busy", "192.0.2.0", 200, 370), ("busy", "192.0.2.0", 401, 30)]
    events = calls(make_event, 0, [*background(), *busy])
    assert run(AuthAbuseDetector(), events) == []


def test_rate_limited_client_below_threshold_does_not_fire(make_event: Any, run: Any) -> None:
    polite: list[Row] = [("polite", "192.0.2.0", 200, 25), ("polite", "192.0.2.0", 429, 15)]
    events = [e for w in range(5) for e in calls(make_event, w, [*background(), *polite])]
    assert run(AuthAbuseDetector(), events) == []


def test_only_rate_limited_bursts_are_never_above_medium(make_event: Any, run: Any) -> None:
    events = calls(make_event, 0, [("hammer", "192.0.2.0", 429, 5_000), ("hammer", "192.0.2.0", 200, 10)])
    (finding,) = run(AuthAbuseDetector(), events)
    assert finding.evidence["only_rate_limited"] is True
    assert finding.severity == "medium"
    assert "rate limiting" in finding.summary


def test_many_principals_from_one_address_fire(make_event: Any, run: Any) -> None:
    stuffing = [(f"key{i:03d}", "203.0.113.0", 401, 2) for i in range(60)]
    stuffing += [(f"key{i:03d}", "203.0.113.0", 200, 1) for i in range(5)]
    events = calls(make_event, 0, [*background(), *stuffing])

    (finding,) = run(AuthAbuseDetector(), events)

    assert finding.subject == "ip:203.0.113.0"
    evidence = finding.evidence
    assert evidence["signal"] == "shared_address"
    assert evidence["distinct_principals"] == 60
    assert evidence["distinct_principals_capped"] is False
    assert evidence["failures"] == 120
    assert evidence["thresholds"] == {"max_principals_per_ip": 20}
    assert len(evidence["sample_principals"]) == 20
    # The keys that worked from there: what to revoke first (the sample above is alphabetical).
    assert evidence["accepted_principals"] == [f"key{i:03d}" for i in range(5)]
    assert evidence["accepted_count"] == 5
    assert "5 principal(s) got answers (keys that worked" in finding.summary
    assert finding.severity == "high"  # most of its requests were refused
    assert finding.title == ("Address 203.0.113.0 used by 60 principals in one window, 5 of them worked "
                             "(credential stuffing or key cycling?)")  # on the page, not only in the evidence
    assert len(finding.event_ids) == 20
    json.dumps(evidence)


def test_nat_like_modest_sharing_does_not_fire(make_event: Any, run: Any) -> None:
    office = [(f"staff{i}", "192.0.2.0", 200, 40) for i in range(5)]
    office += [(f"staff{i}", "192.0.2.0", 401, 1) for i in range(5)]
    events = [e for w in range(5) for e in calls(make_event, w, [*background(), *office])]
    assert run(AuthAbuseDetector(), events) == []


def test_window_state_is_bounded_and_forgotten(make_event: Any, run: Any) -> None:
    detector = AuthAbuseDetector(max_keys=100, max_principals_per_ip=2)
    events = [make_event(T0 + i * 0.01, principal=f"p{i}", client_ip=f"10.{i // 256}.{i % 256}.0", status=401)
              for i in range(1_000)]
    events += [make_event(T0 + 20 + i * 0.01, principal=f"q{i}", client_ip="10.9.9.0") for i in range(50)]
    for event in events:
        detector.observe(event)
    assert detector.keys_held <= 200
    assert detector.overflow == 2 * 900 + 2 * 50  # subjects and addresses past max_keys, both signals
    detector.close_window(datetime.fromtimestamp(T0 + 60, UTC))
    assert detector.keys_held == 0


def test_principals_per_address_are_capped(make_event: Any, run: Any) -> None:
    detector = AuthAbuseDetector(max_principals_per_ip=4)
    events = [make_event(T0 + i * 0.01, principal=f"k{i}", client_ip="203.0.113.0") for i in range(500)]
    (finding,) = run(detector, events)
    assert finding.evidence["distinct_principals"] == 20  # PRINCIPALS_KEPT_FACTOR x 4
    assert finding.evidence["distinct_principals_capped"] is True
    assert "at least 20 principals" in finding.title
    assert "worked" not in finding.title  # none refused: every key worked, as behind a gateway


def test_events_without_principal_or_address_are_counted_apart(make_event: Any, run: Any) -> None:
    detector = AuthAbuseDetector()
    assert run(detector, [make_event(T0 + i, principal=None, status=401) for i in range(30)]) == []
    assert detector.unattributed == 30


def test_runs_in_the_service_pipeline(make_event: Any) -> None:
    events = calls(make_event, 0, [*background(), ("guesser", "203.0.113.0", 401, 50)])
    findings = run_detector(AuthAbuseDetector(), events)
    assert [f.subject for f in findings] == ["principal:guesser"]


def test_docstring_examples() -> None:
    assert doctest.testmod(auth_abuse).failed == 0


def stuffing_window(make_event: Any, window: int, worked: range, tried: int = 40) -> list[InferenceEvent]:
    """One window of credential stuffing from one address: ``tried`` keys refused, ``worked`` answered."""
    spec: list[Row] = [(f"key{i:03d}", "203.0.113.0", 401, 1) for i in range(100, 100 + tried)]
    spec += [(f"key{i:03d}", "203.0.113.0", 200, 1) for i in worked]
    return list(calls(make_event, window, [*background(), *spec]))


def test_the_latest_finding_names_every_key_that_worked_since_the_attack_began(
        make_event: Any, run: Any) -> None:
    events = [*stuffing_window(make_event, 0, range(0, 3)),
              # a quieter window (below the threshold, not flagged): the key that worked still counts
              *stuffing_window(make_event, 1, range(10, 11), tried=5),
              *stuffing_window(make_event, 2, range(3, 5))]

    first, last = run(AuthAbuseDetector(), events)

    assert first.evidence["attack_accepted_principals"] == ["key000", "key001", "key002"]
    assert first.evidence["attack_windows"] == 1
    assert "since it was first flagged" not in first.summary
    evidence = last.evidence
    assert evidence["accepted_principals"] == ["key003", "key004"]  # this window's
    assert evidence["attack_accepted_principals"] == ["key000", "key001", "key002", "key003", "key004",
                                                      "key010"]
    assert (evidence["attack_accepted_count"], evidence["attack_accepted_capped"]) == (6, False)
    assert evidence["attack_windows"] == 2
    assert evidence["attack_since"] == first.evidence["window_start"]
    assert "6 got answers since it was first flagged at" in last.summary


def test_an_address_quiet_for_longer_than_the_gap_starts_a_new_attack(make_event: Any, run: Any) -> None:
    quiet = [e for w in range(1, 10) for e in calls(make_event, w, background())]
    events = [*stuffing_window(make_event, 0, range(0, 3)), *quiet,
              *stuffing_window(make_event, 10, range(3, 4))]

    _, later = run(AuthAbuseDetector(attack_gap_s=300), events)

    assert later.evidence["attack_accepted_principals"] == ["key003"]
    assert later.evidence["attack_windows"] == 1
    assert later.evidence["attack_since"] == later.evidence["window_start"]


def test_keys_kept_per_attack_are_bounded(make_event: Any, run: Any) -> None:
    many = auth_abuse.ACCEPTED_KEPT + 30
    events = [*stuffing_window(make_event, 0, range(0, many // 2)),
              *stuffing_window(make_event, 1, range(many // 2, many))]
    *_, last = run(AuthAbuseDetector(max_principals_per_ip=30), events)  # keeps 150 a window
    assert last.evidence["attack_accepted_count"] == auth_abuse.ACCEPTED_KEPT
    assert last.evidence["attack_accepted_capped"] is True
    assert "at least 200 got answers" in last.summary


def gateway_window(make_event: Any, window: int, keys: int = 30, refused: int = 0) -> list[InferenceEvent]:
    """A gateway's window: ``keys`` users' keys all from its one address, ``refused`` of them once 401."""
    spec: list[Row] = [(f"user{i:03d}", "10.0.0.0", 200, 3) for i in range(keys)]
    spec += [(f"user{i:03d}", "10.0.0.0", 401, 1) for i in range(refused)]
    return list(calls(make_event, window, spec))


def test_a_shared_address_with_no_refusal_is_low_and_not_raised_by_repetition(
        make_event: Any, run: Any) -> None:
    """A gateway or NAT without agent.trusted_proxies: many keys, all answered, every window."""
    events = [e for w in range(8) for e in gateway_window(make_event, w)]
    findings = run(AuthAbuseDetector(), events)
    assert len(findings) == 8
    assert {(f.severity, f.escalates) for f in findings} == {("low", False)}
    assert "none was refused" in findings[0].summary
    assert "agent.trusted_proxies" in findings[0].summary

    (incident,) = run_pipeline([AuthAbuseDetector()], events)
    assert (incident.subject, incident.count, incident.severity) == ("ip:10.0.0.0", 8, "low")


def test_a_shared_address_with_refusals_escalates_as_before(make_event: Any, run: Any) -> None:
    events = [e for w in range(6) for e in gateway_window(make_event, w, refused=2)]
    findings = run(AuthAbuseDetector(), events)
    assert {(f.severity, f.escalates) for f in findings} == {("medium", True)}
    (incident,) = run_pipeline([AuthAbuseDetector()], events)
    assert (incident.count, incident.severity) == (6, "high")  # escalated at its fifth finding
    # and an attack in which most calls are refused is high from the first window, as before
    (stuffing,) = run(AuthAbuseDetector(), stuffing_window(make_event, 0, range(0, 3)))
    assert (stuffing.severity, stuffing.escalates) == ("high", True)
