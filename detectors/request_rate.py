"""Request-rate abuse: a principal sending far more requests than it and its peers usually do.

Requests are counted per principal in each event-time window. When the window closes, a
principal is flagged when its count is at least

* ``min_requests`` — small absolute numbers are never abuse worth waking someone for;
* ``own_factor`` x its own baseline, an EWMA of its previous active windows' counts, floored at
  ``baseline_floor`` (a principal never seen before has the floor as its baseline);
* ``population_factor`` x the median count over all principals active in the window (floor 1);
  in a window with fewer than ``min_population`` (5) active principals, each is judged against
  the median of the others or recent busy windows', whichever is lower; alone, recent busy
  windows'; alone with none, itself
  (:class:`~inferwatch.detectors.state.PopulationReference`): a flood alone in its window was
  its own median, and keys flooding together each other's.

Behaviour worth knowing:

* Events with no principal are counted under their client address (``ip:<addr>``), which is what
  an unauthenticated flood looks like; events with neither are not counted.
* Requests refused as unauthenticated or forbidden (401, 403) are not counted: a burst of them is
  ``auth_abuse``'s finding (bad or revoked keys, credential stuffing), and counting them here
  too paged twice for one caller, the flood page ranked above the accurate one. Requests
  refused for their rate (429) are counted: a caller that keeps going past its limit is flooding.
* The first ``warmup_windows`` windows after the detector starts only learn: at start-up every
  principal looks new, so steady heavy users would otherwise all be flagged at once.
* A principal first seen after warm-up has no history; it is judged on the floor baseline and
  the population test, so a new key that arrives at ``population_factor`` x the median and
  ``min_requests`` or more is flagged in its first window. Its EWMA then starts at the window's
  median (what a typical caller does) and learns as after any flagged window, below: a flood
  from a new key stays flagged for several windows, like one from a known key. A newcomer not
  flagged starts at its count capped at the median too: a first window is often the start of a
  burst cut by the window's end, too short to flag, and must not become the burst's baseline.
* A flagged window moves the baseline slowly: towards the count capped at the own threshold,
  with ``flagged_alpha`` instead of ``ewma_alpha``. A flood therefore raises the baseline by at
  most ``1 + flagged_alpha * (own_factor - 1)`` (x1.4 by default) per window: it keeps being
  flagged for several windows, and a genuine lasting step-up is accepted after a while.
* The baseline only learns from windows in which the principal was active: it is the
  principal's usual rate when it is active, so a bursty nightly job is not "new" every night.

State is bounded: baselines live in an LRU map of ``max_principals`` keys that also drops keys
idle for ``ttl_s`` seconds of event time; a window's counters hold at most ``max_principals``
keys and count the rest as ``overflow``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from inferwatch.collectors.event import InferenceEvent
from inferwatch.detectors.base import MAX_SAMPLE_IDS, Finding
from inferwatch.detectors.state import (
    REFUSED,
    BaselineTable,
    FloodRule,
    IdSample,
    Population,
    PopulationReference,
    WindowBaseline,
    WindowBounds,
    flood_comparison,
    iso_utc,
    note_model,
    own_history,
    ratio_severity,
    subject_of,
    window_finding,
)


@dataclass(slots=True)
class _Tally:
    count: int = 0
    service: str = "unknown"
    models: list[str] = field(default_factory=list)
    ids: IdSample = field(default_factory=IdSample)


class RequestRateDetector:
    """Requests per principal per window against its own EWMA baseline and the population median.

    Options (keyword only): ``min_requests`` (30); ``own_factor`` (5.0); ``population_factor``
    (5.0); ``baseline_floor`` (2.0); ``ewma_alpha`` weight of a normal window (0.3);
    ``flagged_alpha`` weight of a flagged window (0.1); ``warmup_windows`` (1);
    ``max_principals`` (100_000); ``ttl_s`` idle seconds before a baseline is dropped (86_400);
    ``min_population`` active principals for a window's own median (5; fewer: each principal is
    judged against the others', or recent windows' when alone; 0: always the window's).

    >>> detector = RequestRateDetector()
    >>> detector.name, detector.min_requests
    ('request_rate', 30)
    """

    name: ClassVar[str] = "request_rate"

    def __init__(
        self,
        *,
        min_requests: int = 30,
        own_factor: float = 5.0,
        population_factor: float = 5.0,
        baseline_floor: float = 2.0,
        ewma_alpha: float = 0.3,
        flagged_alpha: float = 0.1,
        warmup_windows: int = 1,
        max_principals: int = 100_000,
        ttl_s: float = 86_400.0,
        min_population: int = 5,
    ) -> None:
        if not (0.0 < ewma_alpha <= 1.0 and 0.0 <= flagged_alpha <= 1.0):
            raise ValueError("ewma_alpha must be in (0, 1] and flagged_alpha in [0, 1]")
        if own_factor < 1.0 or population_factor < 1.0 or baseline_floor <= 0.0:
            raise ValueError("own_factor and population_factor must be >= 1, baseline_floor > 0")
        if min_population < 0:
            raise ValueError(f"min_population must be at least 0, got {min_population}")
        if min_requests < 1 or warmup_windows < 0 or max_principals < 1:
            raise ValueError(f"min_requests and max_principals must be at least 1 and warmup_windows at "
                             f"least 0, got {min_requests}, {max_principals} and {warmup_windows}")
        self.min_requests = min_requests
        self.own_factor = own_factor
        self.population_factor = population_factor
        self.baseline_floor = baseline_floor
        self.ewma_alpha = ewma_alpha
        self.flagged_alpha = flagged_alpha
        self._rule = FloodRule(min_requests, own_factor, population_factor, baseline_floor, ewma_alpha,
                               flagged_alpha)
        self.warmup_windows = warmup_windows
        self.max_principals = max_principals
        self.overflow = 0
        """Requests not counted because a window already held ``max_principals`` keys."""
        self.unattributed = 0
        """Requests with neither a principal nor a client address."""
        self.refused = 0
        """Requests refused as unauthenticated or forbidden (401, 403): auth_abuse's, not counted."""
        self._baselines = BaselineTable(max_principals, ttl_s)
        self._window: dict[str, _Tally] = {}
        self._window_first: float | None = None
        self._bounds = WindowBounds()
        self._windows_closed = 0
        self.min_population = min_population
        self._population = PopulationReference(min_population, ewma_alpha, ttl_s)

    @property
    def principals_tracked(self) -> int:
        """Principals (and addresses) whose baseline is currently held."""
        return len(self._baselines)

    def observe(self, event: InferenceEvent) -> list[Finding]:
        """Count the request against its principal (or client address) in the open window."""
        if event.status in REFUSED:
            self.refused += 1
            return []
        subject = subject_of(event)
        if subject is None:
            self.unattributed += 1
            return []
        tally = self._window.get(subject)
        if tally is None:
            if len(self._window) >= self.max_principals:
                self.overflow += 1
                return []
            tally = self._window[subject] = _Tally(service=event.service)
        tally.count += 1
        note_model(tally.models, event.model)
        # Only principals near min_requests can be flagged: sampling ids from there on keeps a
        # full sample for every flagged principal without holding ids for everyone else.
        if tally.count > self.min_requests - MAX_SAMPLE_IDS:
            tally.ids.add(event)
        if self._window_first is None:
            self._window_first = event.ts
        return []

    def close_window(self, end: datetime) -> list[Finding]:
        """Judge every principal active in the window ending at ``end``, then learn from it."""
        end_ts = end.timestamp()
        start_ts = self._bounds.close(end_ts, self._window_first)
        window, self._window, self._window_first = self._window, {}, None
        if not window:
            return []
        self._windows_closed += 1
        known = [float(t.count) for s, t in window.items() if s in self._baselines]
        population = self._population.of([float(t.count) for t in window.values()], end_ts, known)
        judging = self._windows_closed > self.warmup_windows
        findings = []
        for subject, tally in window.items():
            finding = self._judge(subject, tally, population, judging, (start_ts, end_ts))
            if finding is not None:
                findings.append(finding)
        self._baselines.expire(end_ts)
        return findings

    def _judge(self, subject: str, tally: _Tally, population: Population, judging: bool,
               bounds: tuple[float, float]) -> Finding | None:
        row, baseline = self._baselines.load(subject, bounds[1])
        # A new key, the keys with a history's; in a thin window, the others' (or recent).
        population = population.seen_by(tally.count, newcomer=not baseline.windows)
        flagged, own = self._rule.assess(tally.count, baseline, population, judging)
        finding = self._finding(subject, tally, baseline, own, population, bounds) if flagged else None
        self._rule.learn(tally.count, baseline, population, own, flagged, judging)
        self._baselines.store(row, baseline)
        return finding

    def _finding(self, subject: str, tally: _Tally, baseline: WindowBaseline, own: float,
                 population: Population, bounds: tuple[float, float]) -> Finding:
        ratio_own = tally.count / own
        ratio_population = tally.count / population.median
        ratio = min(ratio_own, ratio_population)
        evidence: dict[str, Any] = {
            "count": tally.count,
            **flood_comparison(tally.count, own, baseline, population),
            "thresholds": {"min_requests": self.min_requests, "own_factor": self.own_factor,
                           "population_factor": self.population_factor,
                           "baseline_floor": self.baseline_floor},
        }
        history = own_history(own, bool(baseline.windows))
        return window_finding(
            self.name,
            severity=ratio_severity(ratio),
            score=round(ratio / (ratio + 10.0), 4),
            title=f"Request flood from {subject}: {tally.count} requests in one window "
            f"({ratio_own:.0f}x own baseline)",
            summary=f"{subject} sent {tally.count} requests between {iso_utc(bounds[0])} and "
            f"{iso_utc(bounds[1])}: {ratio_own:.1f}x {history} and {ratio_population:.1f}x "
            f"{population.described()}",
            subject=subject,
            bounds=bounds,
            service=tally.service,
            models=tally.models,
            ids=tally.ids,
            evidence=evidence,
        )
