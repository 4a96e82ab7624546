"""Authentication abuse: bursts of refused requests, and one address used by many principals.

Two signals per event-time window:

* **failure bursts** — requests refused with 401, 403 or 429 are counted per principal (or per
  client address when there is no principal, which is what an unauthenticated guesser looks
  like). At window close a subject is flagged when its refused requests number at least
  ``min_failures`` *and* are at least ``min_failure_ratio`` of all its requests: a busy client
  that is occasionally rate-limited is not an attack, a client that is mostly refused is.
* **shared addresses** — the distinct principals seen from each ``client_ip`` are counted. An
  address with at least ``max_principals_per_ip`` of them in one window is flagged, subject
  ``ip:<addr>``: credential stuffing and key cycling look like that. The agent truncates
  addresses to /24 by default, so a modest office NAT (a handful of keys) stays well below it.

Behaviour worth knowing:

* Both signals are judged on the window alone, so the detector needs no warm-up. The one thing
  it carries across windows is, for an address it has flagged, the principals that got answers
  from it since it was first flagged (``attack_accepted_principals``): an attack over many windows
  lists every key that worked in its latest finding, hence in its incident. That memory is
  forgotten ``attack_gap_s`` after the address was last flagged, and holds at most
  ``ACCEPTED_KEPT`` principals for at most ``max_keys`` addresses.
* A subject whose refusals are all 429 is being rate-limited, which is the service defending
  itself: it is flagged (it keeps hammering) but never above ``medium``.
* Events with neither a principal nor an address are counted in ``unattributed`` only.

State is bounded: each window holds at most ``max_keys`` subjects and ``max_keys`` addresses
(further ones are counted in ``overflow``), and at most ``PRINCIPALS_KEPT_FACTOR`` x
``max_principals_per_ip`` distinct principals per address (the evidence then says "at least").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from inferwatch.collectors.event import InferenceEvent
from inferwatch.detectors.base import MAX_SAMPLE_IDS, Finding, Severity
from inferwatch.detectors.state import IdSample, WindowBounds, iso_utc, note_model, subject_of, window_finding

AUTH_FAILURE_STATUSES = frozenset({401, 403, 429})
"""Statuses that mean the caller was refused: unauthenticated, forbidden, rate-limited."""
PRINCIPALS_KEPT_FACTOR = 5
"""Distinct principals kept per address, as a multiple of ``max_principals_per_ip``."""
ACCEPTED_KEPT = 200
"""Principals that got answers kept per flagged address over its whole attack."""


@dataclass(slots=True)
class _Failures:
    requests: int = 0
    failures: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    service: str = "unknown"
    models: list[str] = field(default_factory=list)
    ids: IdSample = field(default_factory=IdSample)


@dataclass(slots=True)
class _Address:
    requests: int = 0
    failures: int = 0
    first: str = ""  # the first principal; a set only once a second one appears (most
    others: set[str] | None = None  # addresses carry one principal, and a set is 200+ bytes)
    capped: bool = False
    service: str = "unknown"
    ids: IdSample = field(default_factory=IdSample)
    first_ok: bool = False  # the first principal got an answer (not 401/403/429) ...
    others_ok: set[str] | None = None  # ... and so did these others

    @property
    def principals(self) -> set[str]:
        return {self.first, *(self.others or ())} if self.first else set()

    @property
    def accepted(self) -> set[str]:
        """Principals that got an answer from this address: keys that worked."""
        return ({self.first} if self.first_ok else set()) | (self.others_ok or set())

    def distinct(self) -> int:
        return (1 if self.first else 0) + len(self.others or ())


@dataclass(slots=True)
class _Attack:
    """A flagged address, over its whole attack: when it began, and the keys that worked."""

    since: float  # start of the first window it was flagged in
    last: float  # end of the last window it was flagged in
    windows: int = 0  # windows it was flagged in
    accepted: set[str] = field(default_factory=set)
    capped: bool = False

    def take(self, accepted: set[str]) -> None:
        for principal in accepted:
            if len(self.accepted) >= ACCEPTED_KEPT:
                self.capped = self.capped or principal not in self.accepted
                continue
            self.accepted.add(principal)


class AuthAbuseDetector:
    """Bursts of 401/403/429 per principal, and client addresses shared by many principals.

    Options (keyword only): ``min_failures`` refused requests in a window (20);
    ``min_failure_ratio`` share of the subject's requests refused (0.5);
    ``max_principals_per_ip`` distinct principals from one address in a window (20);
    ``max_keys`` subjects and addresses held per window (100_000); ``attack_gap_s`` seconds after
    an address was last flagged that its attack's accepted principals are forgotten (3600.0).

    >>> detector = AuthAbuseDetector()
    >>> detector.name, detector.min_failures, detector.max_principals_per_ip
    ('auth_abuse', 20, 20)
    """

    name: ClassVar[str] = "auth_abuse"

    def __init__(
        self,
        *,
        min_failures: int = 20,
        min_failure_ratio: float = 0.5,
        max_principals_per_ip: int = 20,
        max_keys: int = 100_000,
        attack_gap_s: float = 3600.0,
    ) -> None:
        if min_failures < 1 or max_principals_per_ip < 2 or max_keys < 1:
            raise ValueError("min_failures and max_keys must be >= 1, max_principals_per_ip >= 2")
        if not 0.0 < min_failure_ratio <= 1.0:
            raise ValueError(f"min_failure_ratio must be in (0, 1], got {min_failure_ratio}")
        self.min_failures = min_failures
        self.min_failure_ratio = min_failure_ratio
        self.max_principals_per_ip = max_principals_per_ip
        self.max_keys = max_keys
        if attack_gap_s <= 0:
            raise ValueError(f"attack_gap_s must be > 0, got {attack_gap_s}")
        self.attack_gap_s = attack_gap_s
        self.overflow = 0
        """Events not counted (per signal) because a window already held ``max_keys`` keys."""
        self.unattributed = 0
        """Events with neither a principal nor a client address."""
        self._subjects: dict[str, _Failures] = {}
        self._addresses: dict[str, _Address] = {}
        self._window_first: float | None = None
        self._bounds = WindowBounds()
        self._attacks: dict[str, _Attack] = {}
        """Flagged addresses, oldest flagged first (bounded by ``max_keys``)."""

    @property
    def keys_held(self) -> int:
        """Subjects plus addresses counted in the open window."""
        return len(self._subjects) + len(self._addresses)

    def observe(self, event: InferenceEvent) -> list[Finding]:
        """Count the event against its subject and its client address in the open window."""
        if self._window_first is None:
            self._window_first = event.ts
        failed = event.status in AUTH_FAILURE_STATUSES
        subject = subject_of(event)
        if subject is None:
            self.unattributed += 1
        else:
            self._count_subject(subject, event, failed)
        if event.client_ip is not None and event.principal is not None:
            self._count_address(event.client_ip, event.principal, event, failed)
        return []

    def _count_subject(self, subject: str, event: InferenceEvent, failed: bool) -> None:
        tally = self._subjects.get(subject)
        if tally is None:
            if len(self._subjects) >= self.max_keys:
                self.overflow += 1
                return
            tally = self._subjects[subject] = _Failures(service=event.service)
        tally.requests += 1
        if not failed:
            return
        tally.failures += 1
        status = event.status or 0
        tally.by_status[status] = tally.by_status.get(status, 0) + 1
        note_model(tally.models, event.model)
        # Only subjects near min_failures can be flagged: sample refused requests from there on.
        if tally.failures > self.min_failures - MAX_SAMPLE_IDS:
            tally.ids.add(event)

    def _count_address(self, address: str, principal: str, event: InferenceEvent, failed: bool) -> None:
        tally = self._addresses.get(address)
        if tally is None:
            if len(self._addresses) >= self.max_keys:
                self.overflow += 1
                return
            tally = self._addresses[address] = _Address(service=event.service)
        tally.requests += 1
        tally.failures += failed
        new = True
        if not tally.first:
            tally.first = principal
        elif principal == tally.first or (tally.others is not None and principal in tally.others):
            new = False
        elif tally.distinct() >= PRINCIPALS_KEPT_FACTOR * self.max_principals_per_ip:
            tally.capped = True
            return
        elif tally.others is None:
            tally.others = {principal}
        else:
            tally.others.add(principal)
        if not failed:
            if principal == tally.first:
                tally.first_ok = True
            elif tally.others_ok is None:
                tally.others_ok = {principal}
            else:
                tally.others_ok.add(principal)
        if new:  # one sample id per new principal: the evidence shows the cycling itself
            tally.ids.add(event)

    def close_window(self, end: datetime) -> list[Finding]:
        """Judge every subject and address seen in the window ending at ``end``, then forget them."""
        end_ts = end.timestamp()
        bounds = (self._bounds.close(end_ts, self._window_first), end_ts)
        subjects, addresses = self._subjects, self._addresses
        self._subjects, self._addresses, self._window_first = {}, {}, None
        findings = [
            self._burst_finding(subject, tally, bounds)
            for subject, tally in subjects.items()
            if tally.failures >= self.min_failures
            and tally.failures >= self.min_failure_ratio * tally.requests
        ]
        findings += self._shared_findings(addresses, bounds)
        return findings

    def _shared_findings(self, addresses: dict[str, _Address], bounds: tuple[float, float]) -> list[Finding]:
        attacks = self._attacks
        for address in [a for a, attack in attacks.items() if bounds[0] - attack.last > self.attack_gap_s]:
            del attacks[address]  # quiet for longer than attack_gap_s: that attack is over
        findings = []
        for address, tally in addresses.items():
            attack = attacks.get(address)
            if tally.distinct() < self.max_principals_per_ip:
                if attack is not None:  # a quieter window inside the attack: its keys still count
                    attack.take(tally.accepted)
                continue
            if attack is None:
                if len(attacks) >= self.max_keys:
                    del attacks[next(iter(attacks))]
                attack = attacks[address] = _Attack(since=bounds[0], last=bounds[1])
            else:  # most recently flagged last, so the oldest is evicted first
                attacks[address] = attacks.pop(address)
            attack.take(tally.accepted)
            attack.windows += 1
            attack.last = bounds[1]
            findings.append(self._shared_finding(address, tally, attack, bounds))
        return findings

    def _burst_finding(self, subject: str, tally: _Failures, bounds: tuple[float, float]) -> Finding:
        ratio = tally.failures / tally.requests
        multiple = tally.failures / self.min_failures
        only_rate_limited = set(tally.by_status) == {429}
        severity = _severity(multiple, cap="medium" if only_rate_limited else None)
        statuses = ", ".join(f"{n}x {s}" for s, n in sorted(tally.by_status.items()))
        evidence: dict[str, Any] = {
            "signal": "failure_burst",
            "requests": tally.requests,
            "failures": tally.failures,
            "failure_ratio": round(ratio, 4),
            "failures_by_status": {str(s): n for s, n in sorted(tally.by_status.items())},
            "only_rate_limited": only_rate_limited,
            "thresholds": {"min_failures": self.min_failures, "min_failure_ratio": self.min_failure_ratio},
        }
        return window_finding(
            self.name,
            severity=severity,
            score=round(multiple / (multiple + 4.0), 4),
            title=f"Auth failure burst from {subject}: {tally.failures} of {tally.requests} "
            f"requests refused in one window",
            summary=f"{subject} was refused {tally.failures} times ({statuses}) out of "
            f"{tally.requests} requests ({ratio:.0%}) between {iso_utc(bounds[0])} and "
            f"{iso_utc(bounds[1])}"
            + ("; all refusals were rate limiting (429)" if only_rate_limited else
               "; likely credential guessing or a revoked key still in use"),
            subject=subject,
            bounds=bounds,
            service=tally.service,
            models=tally.models,
            ids=tally.ids,
            evidence=evidence,
        )

    def _shared_finding(self, address: str, tally: _Address, attack: _Attack,
                        bounds: tuple[float, float]) -> Finding:
        distinct = tally.distinct()
        multiple = distinct / self.max_principals_per_ip
        mostly_failing = tally.failures >= 0.5 * tally.requests
        # None refused: every key worked, which is what a gateway or NAT in front of the agents
        # looks like as much as stolen keys. Low, and not raised by repeating every window.
        refused = tally.failures > 0
        severity: Severity = "high" if multiple >= 5 or mostly_failing else "medium"
        if not refused:
            severity = "low"
        at_least = "at least " if tally.capped else ""
        accepted = tally.accepted
        evidence: dict[str, Any] = {
            "signal": "shared_address",
            "address": address,
            "distinct_principals": distinct,
            "distinct_principals_capped": tally.capped,
            "sample_principals": sorted(tally.principals)[:MAX_SAMPLE_IDS],
            "accepted_principals": sorted(accepted)[:MAX_SAMPLE_IDS],
            "accepted_count": len(accepted),
            "attack_since": iso_utc(attack.since),
            "attack_windows": attack.windows,
            "attack_accepted_principals": sorted(attack.accepted),
            "attack_accepted_count": len(attack.accepted),
            "attack_accepted_capped": attack.capped,
            "requests": tally.requests,
            "failures": tally.failures,
            "thresholds": {"max_principals_per_ip": self.max_principals_per_ip},
        }
        finding = window_finding(
            self.name,
            severity=severity,
            score=round(multiple / (multiple + 1.0), 4),
            title=f"Address {address} used by {at_least}{distinct} principals in one window"
            # keys that got answers among refused ones: the keys to revoke, first thing on the page
            + (f", {len(accepted)} of them worked" if refused and accepted else "")
            + " (credential stuffing or key cycling?)",
            summary=f"{at_least}{distinct} distinct principals sent {tally.requests} requests from "
            f"{address} between {iso_utc(bounds[0])} and {iso_utc(bounds[1])} (threshold "
            f"{self.max_principals_per_ip}); {tally.failures} of them were refused "
            f"(401/403/429)"
            + (f"; {len(accepted)} principal(s) got answers (keys that worked, if this is stuffing: "
               "evidence accepted_principals)" if accepted and mostly_failing else "")
            + (f"; {'at least ' if attack.capped else ''}{len(attack.accepted)} got answers since it was "
               f"first flagged at {iso_utc(attack.since)} ({attack.windows} windows; evidence "
               "attack_accepted_principals)" if attack.windows > 1 and attack.accepted else "")
            + ("; none was refused, as behind a gateway or NAT the agent does not see past "
               "(agent.trusted_proxies): severity low, not raised as it repeats" if not refused else ""),
            subject=f"ip:{address}",
            bounds=bounds,
            service=tally.service,
            models=None,
            ids=tally.ids,
            evidence=evidence,
        )
        return finding if refused else finding.model_copy(update={"escalates": False})


def _severity(multiple: float, cap: Severity | None) -> Severity:
    # multiple is refused requests over min_failures.
    severity: Severity = "high" if multiple >= 25 else "medium" if multiple >= 5 else "low"
    if cap == "medium" and severity == "high":
        return "medium"
    return severity
