"""Scraping: a caller sending many *distinct* inputs, far above its own and its peers' volume.

A heavy legitimate user repeats itself (a health check, a batch job resending its inputs); a
scraper walking a catalogue sends input after input it has never sent before. Every request's
input is reduced to a 64-bit hash — of the prompt text case-folded with whitespace collapsed,
or of the sorted tabular features when there is no text — and counted per caller (principal,
else client address) in HyperLogLog sketches (:mod:`inferwatch.detectors.hyperloglog`), so a
caller sending 100,000 prompts costs the same memory as one sending ten. When a window closes
a caller is flagged on either of two grounds, judged after ``warmup_windows`` windows:

* **distinct rate** — its distinct inputs in the window are at least ``min_distinct`` and
  ``own_factor`` x its own baseline (an EWMA of its earlier active windows, floored at
  ``baseline_floor``), and either ``population_factor`` x the median caller's distinct inputs or
  at least ``min_share`` of all distinct inputs the detector saw in the window (**window
  coverage**; only with ``min_callers`` or more callers active). The flood rule is the one
  ``request_rate`` applies to requests, so the baseline learns the same way, and a window with
  fewer than ``min_population`` callers judges each against the others' median (or recent
  windows' when alone) as there. The accumulated rule below keeps the window's own median.
* **accumulated coverage** — the distinct inputs it has sent since the current coverage
  epoch began (epochs are ``coverage_horizon_s`` of event time, aligned to the Unix epoch:
  days by default) reach ``min_accumulated`` and ``population_factor`` x the median over the
  callers active in the window. This catches a slow scraper that stays under the per-window
  rule. It is reported again when the count has doubled, not every window. It is **off by
  default** (``min_accumulated`` None): a steady heavy caller with distinct inputs all day (a
  dashboard, a batch job over fresh documents) meets it too, so turn it on where every caller
  is a person.

Both need the inputs to be mostly new: distinct inputs at least ``min_distinct_ratio`` of the
requests (in the window for the first rule, over the epoch for the second), and, when the
caller's earlier inputs this epoch are at most twice the window's, the window must have grown
the caller's union of inputs by at least a quarter of its distinct inputs — a batch job resending
the same 300 inputs once a minute is all-distinct within each window but adds nothing new.

Behaviour worth knowing:

* Evidence always carries both coverage measures (the window share and the accumulated count)
  and **enumeration**: inputs with their words holding digits masked (``customer 1001`` and
  ``customer 1002`` both become ``customer #``, :mod:`inferwatch.detectors.input_keys`) give
  *templates*; a caller with at least ten distinct inputs per template is walking ids or
  numbers, which the evidence says, with an example template (80 characters at most).
  Enumeration never flags on its own.
* Counts are estimates: about 6.5 % per caller and window, 13 % for the accumulated count,
  1.6 % for the window's total; small counts are nearly exact. Hashes are BLAKE2b, so replays
  count the same.
* Requests refused as unauthenticated or forbidden (401, 403) are not counted: they read
  nothing (a burst of them is ``auth_abuse``'s). Requests with neither text nor features
  (content capture off) are counted in the evidence but not judged. Texts longer than
  ``max_chars`` are hashed on their head, tail and length.
* The window share is of the inputs this detector instance saw. With N detector processes
  each sees about 1/N of the callers (partitions are keyed by principal), so shares are larger
  than across the whole service. A caller's own counts do not depend on N; population medians
  are over the partition's callers, as in ``request_rate``.
* One API key fronting a whole application looks like a steady heavy caller: its own baseline
  quiets the distinct-rate rule after a few windows, but accumulated coverage reports it as its
  count doubles through each epoch.

Memory (tracemalloc): between windows a caller holds a baseline (the EWMA and a window count),
the epoch's request count and, once it has sent 64 distinct inputs in the epoch (a plain count
stands in before that), a 64-byte sketch: about 310 bytes with its LRU entry and key, 430 with
the sketch, in an LRU map of ``max_principals`` keys that also drops keys idle for ``ttl_s``. A
light caller (at most ``baseline_floor`` distinct inputs in the window) is held only once it
comes back — active in two windows within about six, by a fixed 1 MiB count sketch — so rotating
through one-off keys leaves nothing behind; until then it is judged as a newcomer, which is
what its floor baseline would give anyway. In a window, about 700 bytes per active caller (a
256-byte sketch, 64 more for text inputs; 1.2 KB with the id sample kept near a threshold), at
most ``max_principals`` callers (the rest counted as ``overflow``), and one 4 KiB sketch of all
inputs.

>>> detector = ScrapingDetector(min_distinct=50)
>>> detector.name, detector.min_distinct, detector.min_accumulated
('scraping', 50, None)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar

from inferwatch.collectors.event import InferenceEvent
from inferwatch.detectors.base import MAX_SAMPLE_IDS, Finding
from inferwatch.detectors.hyperloglog import HyperLogLog, add, estimate, fold, hash64, merge
from inferwatch.detectors.input_keys import input_key
from inferwatch.detectors.sketches import DecayingCountSketch
from inferwatch.detectors.state import (
    MAX_MODELS_NOTED,
    REFUSED,
    BoundedState,
    FloodRule,
    IdSample,
    Population,
    PopulationReference,
    WindowBaseline,
    WindowBounds,
    flood_comparison,
    iso_utc,
    own_history,
    ratio_severity,
    subject_of,
    window_finding,
)

WINDOW_PRECISION = 8
"""Per caller and window: 256 registers, about 6.5 % error."""
TEMPLATE_PRECISION = 6
COVERAGE_PRECISION = 6
"""Per caller over the epoch: 64 registers, about 13 % error."""
SERVICE_PRECISION = 12
SKETCH_FROM = 64
"""Distinct inputs in an epoch below which a caller's windows are simply added up (no sketch)."""
NOVELTY_FLOOR = 0.25
"""Share of a window's distinct inputs that must be new to the caller, when that can be told."""
TRACK_AFTER = 1.5
"""Active windows, decayed by ``RECURRENCE_DECAY`` a window, from which a light caller is held:
twice within about six windows."""
RECURRENCE_DECAY = 0.9
ENUMERATION_MIN_DISTINCT = 20
ENUMERATION_PER_TEMPLATE = 10.0
EXAMPLE_CHARS = 80


@dataclass(slots=True)
class _Caller(WindowBaseline):
    """A caller between windows: its distinct-rate baseline and this epoch's coverage."""

    epoch: int = -1
    requests: int = 0
    """Requests with an input this epoch."""
    counted: int = 0
    """Distinct inputs added up window by window until the sketch starts (an upper bound)."""
    sketch: bytes | None = None
    reported: int = 0
    """Accumulated distinct inputs when last reported this epoch (0: not yet)."""

    def accumulated(self) -> float:
        """Estimated distinct inputs since the epoch began."""
        return self.counted + (estimate(self.sketch) if self.sketch is not None else 0.0)

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.requests, self.counted, self.sketch, self.reported = epoch, 0, 0, None, 0

    def add_window(self, registers: bytearray, distinct: float, requests: int) -> None:
        self.requests += requests
        if self.sketch is not None:
            self.sketch = merge(self.sketch, fold(registers, COVERAGE_PRECISION))
        elif self.counted + distinct >= SKETCH_FROM:
            self.sketch = fold(registers, COVERAGE_PRECISION)
        else:
            self.counted += round(distinct)


@dataclass(slots=True)
class _Detail:
    """Kept only for a caller that may be flagged: sample ids and the most common template."""

    ids: IdSample = field(default_factory=IdSample)
    lead: int = 0
    votes: int = 0
    example: str | None = None

    def note(self, event: InferenceEvent, template: str | None, template_hash: int) -> None:
        self.ids.add(event)
        if template is None:
            return
        # Boyer-Moore majority vote: the template of most inputs, if one has most, in O(1) memory.
        if self.votes and template_hash == self.lead:
            self.votes += 1
        elif self.votes == 0:
            self.lead, self.votes, self.example = template_hash, 1, template[:EXAMPLE_CHARS]
        else:
            self.votes -= 1


@dataclass(slots=True)
class _Tally:
    service: str
    requests: int = 0
    """Requests with an input (text or features)."""
    text_requests: int = 0
    without_input: int = 0
    distinct: bytearray = field(default_factory=lambda: bytearray(1 << WINDOW_PRECISION))
    templates: bytearray | None = None
    models: tuple[str, ...] = ()  # a tuple of one model is a fifth of the size of a set
    detail: _Detail | None = None


@dataclass(slots=True)
class _Measure:
    """One caller's window, measured at close."""

    subject: str
    tally: _Tally
    caller: _Caller
    distinct: float
    accumulated: float
    new: float | None
    """Growth of the caller's epoch union, or None when the union is too large to tell."""

    def templates(self) -> float | None:
        templates = self.tally.templates
        return None if templates is None else min(estimate(templates), self.tally.text_requests)

    def enumeration(self) -> bool:
        templates = self.templates()
        return (templates is not None and self.distinct >= ENUMERATION_MIN_DISTINCT
                and self.distinct >= ENUMERATION_PER_TEMPLATE * max(templates, 1.0))


@dataclass(frozen=True)
class _Context:
    rates: Population
    coverage: Population
    service_distinct: float
    judging: bool
    bounds: tuple[float, float]
    epoch_start: float


@dataclass(frozen=True)
class _Verdict:
    own: float
    share: float
    signals: tuple[str, ...]
    strength: float
    previously_reported: int


class ScrapingDetector:
    """Distinct inputs per caller per window and per epoch, against its own and its peers'.

    Options (keyword only): ``min_distinct`` (20); ``min_distinct_ratio`` (0.5);
    ``own_factor`` (5.0); ``population_factor`` (5.0); ``baseline_floor`` (5.0);
    ``ewma_alpha`` (0.3); ``flagged_alpha`` (0.1); ``warmup_windows`` (1); ``min_share``
    (0.5); ``min_callers`` (10); ``min_accumulated`` (None: off); ``coverage_horizon_s``
    (86_400); ``max_chars`` (4000); ``max_principals`` (100_000); ``ttl_s`` (86_400);
    ``min_population`` (5: fewer active callers, each is judged against the others').
    """

    name: ClassVar[str] = "scraping"

    def __init__(
        self,
        *,
        min_distinct: int = 20,
        min_distinct_ratio: float = 0.5,
        own_factor: float = 5.0,
        population_factor: float = 5.0,
        baseline_floor: float = 5.0,
        ewma_alpha: float = 0.3,
        flagged_alpha: float = 0.1,
        warmup_windows: int = 1,
        min_share: float = 0.5,
        min_callers: int = 10,
        min_accumulated: int | None = None,
        coverage_horizon_s: float = 86_400.0,
        max_chars: int = 4000,
        max_principals: int = 100_000,
        ttl_s: float = 86_400.0,
        min_population: int = 5,
    ) -> None:
        _check(min_distinct >= 1, "min_distinct must be at least 1")
        _check(min_population >= 0, "min_population must be >= 0")
        _check(0.0 < min_distinct_ratio <= 1.0, "min_distinct_ratio must be in (0, 1]")
        _check(0.0 < min_share <= 1.0, "min_share must be in (0, 1]")
        _check(min_callers >= 1 and (min_accumulated is None or min_accumulated >= 1),
               "min_callers and min_accumulated must be >= 1")
        _check(coverage_horizon_s > 0.0, "coverage_horizon_s must be positive")
        _check(max_chars >= 2, "max_chars must be at least 2")
        _check(max_principals >= 1, "max_principals must be at least 1")
        _check(warmup_windows >= 0, "warmup_windows must be >= 0")
        _check(0.0 < ewma_alpha <= 1.0 and 0.0 <= flagged_alpha <= 1.0,
               "ewma_alpha must be in (0, 1] and flagged_alpha in [0, 1]")
        _check(own_factor >= 1.0 and population_factor >= 1.0 and baseline_floor > 0.0,
               "own_factor and population_factor must be >= 1, baseline_floor > 0")
        self.min_distinct = min_distinct
        self.min_distinct_ratio = min_distinct_ratio
        self.own_factor = own_factor
        self.population_factor = population_factor
        self.baseline_floor = baseline_floor
        self.warmup_windows = warmup_windows
        self.min_share = min_share
        self.min_callers = min_callers
        self.min_accumulated = min_accumulated
        self.coverage_horizon_s = coverage_horizon_s
        self.max_chars = max_chars
        self.max_principals = max_principals
        self._rule = FloodRule(min_distinct, own_factor, population_factor, baseline_floor, ewma_alpha,
                               flagged_alpha)
        self.overflow = 0
        """Requests not counted because a window already held ``max_principals`` callers."""
        self.unattributed = 0
        """Requests with neither a principal nor a client address."""
        self.refused = 0
        """Requests refused as unauthenticated or forbidden (401, 403): they read nothing; not counted."""
        self._callers: BoundedState[str, _Caller] = BoundedState(max_principals, ttl_s)
        self._window: dict[str, _Tally] = {}
        self._window_first: float | None = None
        self._service = HyperLogLog(SERVICE_PRECISION)
        self._recurrence = DecayingCountSketch()
        self._bounds = WindowBounds()
        self._windows_closed = 0
        self.min_population = min_population
        self._population = PopulationReference(min_population, ewma_alpha, ttl_s)
        self._epoch = -1

    @property
    def principals_tracked(self) -> int:
        """Callers (principals and addresses) whose baseline and coverage are currently held."""
        return len(self._callers)

    def observe(self, event: InferenceEvent) -> list[Finding]:
        """Count the request's input against its caller in the open window."""
        if event.status in REFUSED:
            self.refused += 1
            return []
        if self._window_first is None:
            self._window_first = event.ts
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
            if self._near_accumulated(subject):
                tally.detail = _Detail()
        model = event.model
        if model is not None and model not in tally.models and len(tally.models) < MAX_MODELS_NOTED:
            tally.models += (model,)
        key = input_key(event.input, self.max_chars)
        if key is None:
            tally.without_input += 1
            return []
        item_hash = hash64(key[0])
        add(tally.distinct, WINDOW_PRECISION, item_hash)
        self._service.add(item_hash)
        tally.requests += 1
        template, template_hash = key[1], item_hash
        if template is not None:
            if template is not key[0]:  # the text had numbers to mask (re.sub returns it unchanged)
                template_hash = hash64(template)
            if tally.templates is None:
                tally.templates = bytearray(1 << TEMPLATE_PRECISION)
            add(tally.templates, TEMPLATE_PRECISION, template_hash)
            tally.text_requests += 1
        # Only callers near a threshold can be flagged: sample ids and templates from there on.
        if tally.detail is None and tally.requests > self.min_distinct - MAX_SAMPLE_IDS:
            tally.detail = _Detail()
        if tally.detail is not None:
            tally.detail.note(event, template, template_hash)
        return []

    def _near_accumulated(self, subject: str) -> bool:
        caller = self._callers.get(subject)
        if caller is None or caller.epoch != self._epoch or self.min_accumulated is None:
            return False
        return 2 * caller.accumulated() >= max(self.min_accumulated, 2 * caller.reported)

    def close_window(self, end: datetime) -> list[Finding]:
        """Judge every caller active in the window ending at ``end``, then learn from it."""
        end_ts = end.timestamp()
        bounds = (self._bounds.close(end_ts, self._window_first), end_ts)
        window, self._window, self._window_first = self._window, {}, None
        service, self._service = self._service, HyperLogLog(SERVICE_PRECISION)
        if not window:
            return []
        self._windows_closed += 1
        epoch = int(bounds[0] // self.coverage_horizon_s)
        if epoch != self._epoch:
            self._epoch = epoch  # one int object shared by every caller of the epoch
        measures = [self._measure(s, t, end_ts) for s, t in window.items() if t.requests]
        findings = []
        if measures:
            context = _Context(
                # A new caller is judged against those with a history, and light ones (never held,
                # never floods): new keys scraping together, the window's majority, made its median.
                rates=self._population.of([m.distinct for m in measures], end_ts,
                                          [m.distinct for m in measures
                                           if m.caller.windows or m.distinct <= self.baseline_floor]),
                coverage=Population.of([m.accumulated for m in measures]),
                service_distinct=max(service.estimate(), 1.0),
                judging=self._windows_closed > self.warmup_windows,
                bounds=bounds,
                epoch_start=self._epoch * self.coverage_horizon_s,
            )
            findings = [f for m in measures if (f := self._judge(m, context)) is not None]
        self._recurrence.decay(RECURRENCE_DECAY)
        self._callers.expire(end_ts)
        return findings

    def _measure(self, subject: str, tally: _Tally, end_ts: float) -> _Measure:
        distinct = min(estimate(tally.distinct), float(tally.requests))
        caller = self._callers.get(subject)
        if caller is not None or distinct > self.baseline_floor or self._recurs(subject):
            caller = self._callers.get_or_create(subject, end_ts, _Caller)
        else:
            # A light caller seen once is judged as a newcomer and not kept: its baseline would be
            # the floor anyway, and rotating through keys must not make the service hold state.
            caller = _Caller()
        if caller.epoch != self._epoch:
            caller.start_epoch(self._epoch)
        before = caller.accumulated()
        caller.add_window(tally.distinct, distinct, tally.requests)
        after = caller.accumulated()
        # The union's growth only resolves new inputs while the union was not much larger than
        # the window (a 64-register sketch): beyond that it is left out rather than guessed.
        new = max(after - before, 0.0) if before <= 2 * distinct else None
        return _Measure(subject, tally, caller, distinct, after, new)

    def _recurs(self, subject: str) -> bool:
        """Counts one more active window for a caller not held; whether it now comes back often."""
        return self._recurrence.add(subject.encode("utf-8", "surrogatepass")) >= TRACK_AFTER

    def _judge(self, m: _Measure, ctx: _Context) -> Finding | None:
        caller, distinct = m.caller, m.distinct
        # A new caller, the settled callers'; in a thin window, the others' (or recent).
        ctx = replace(ctx, rates=ctx.rates.seen_by(distinct, newcomer=not caller.windows))
        by_population, own = self._rule.assess(distinct, caller, ctx.rates, ctx.judging)
        share = min(distinct / ctx.service_distinct, 1.0)
        mostly_new = (distinct >= self.min_distinct_ratio * m.tally.requests
                      and (m.new is None or m.new >= NOVELTY_FLOOR * distinct))
        by_share = (ctx.judging and distinct >= self.min_distinct and distinct >= self.own_factor * own
                    and share >= self.min_share and ctx.rates.active >= self.min_callers)
        signals: list[str] = []
        strengths: list[float] = []
        if mostly_new and by_population:
            signals.append("distinct_rate")
            strengths.append(min(distinct / own, distinct / ctx.rates.median))
        if mostly_new and by_share:
            signals.append("window_coverage")
            strengths.append(min(distinct / own, 10.0 * share))
        flood = bool(signals)
        previously_reported = caller.reported
        if ctx.judging and self._accumulated_flagged(m, ctx.coverage):
            signals.append("accumulated_coverage")
            strengths.append(m.accumulated / ctx.coverage.median)
            caller.reported = round(m.accumulated)
        verdict = _Verdict(own, share, tuple(signals), max(strengths, default=0.0), previously_reported)
        finding = self._finding(m, verdict, ctx) if signals else None
        self._rule.learn(distinct, caller, ctx.rates, own, flood, ctx.judging)
        return finding

    def _accumulated_flagged(self, m: _Measure, coverage: Population) -> bool:
        accumulated = m.accumulated
        return (self.min_accumulated is not None and accumulated >= self.min_accumulated
                and accumulated >= self.population_factor * coverage.median
                and accumulated >= self.min_distinct_ratio * m.caller.requests
                and accumulated >= 2 * m.caller.reported)

    def _finding(self, m: _Measure, verdict: _Verdict, ctx: _Context) -> Finding:
        distinct, tally = m.distinct, m.tally
        ratio_own = distinct / verdict.own
        since = iso_utc(ctx.epoch_start)
        if "accumulated_coverage" in verdict.signals and len(verdict.signals) == 1:
            title = (f"Slow scraping by {m.subject}: {m.accumulated:,.0f} distinct inputs since {since} "
                     f"({m.accumulated / ctx.coverage.median:.0f}x the median active caller)")
        else:
            title = (f"Scraping by {m.subject}: {distinct:,.0f} distinct inputs in one window "
                     f"({ratio_own:.0f}x own baseline, {verdict.share:.0%} of all distinct inputs seen)")
        templates = m.templates()
        enumeration = m.enumeration()
        if enumeration and templates is not None:
            title += f"; enumerating ids or numbers over {templates:.0f} template(s)"
        history = own_history(verdict.own, bool(m.caller.windows))
        summary = (
            f"{m.subject} sent {tally.requests} requests with {distinct:,.0f} distinct inputs "
            f"({distinct / tally.requests:.0%}) between {iso_utc(ctx.bounds[0])} and "
            f"{iso_utc(ctx.bounds[1])}: "
            f"{ratio_own:.1f}x {history} and {distinct / ctx.rates.median:.1f}x "
            f"{ctx.rates.described(noun='caller')}; {verdict.share:.0%} of the "
            f"{ctx.service_distinct:,.0f} distinct inputs seen in the window; {m.accumulated:,.0f} distinct "
            f"inputs since {since}, {m.accumulated / ctx.coverage.median:.1f}x the median active caller's "
            f"{ctx.coverage.median:,.0f}"
        )
        if enumeration and templates is not None:
            summary += f"; the inputs differ only by numbers or ids ({templates:.0f} template(s))"
        return window_finding(
            self.name,
            severity=ratio_severity(verdict.strength),
            score=round(verdict.strength / (verdict.strength + 10.0), 4),
            title=title,
            summary=summary,
            subject=m.subject,
            bounds=ctx.bounds,
            service=tally.service,
            models=tally.models,
            ids=tally.detail.ids if tally.detail is not None else IdSample(),
            evidence=self._evidence(m, verdict, ctx),
        )

    def _evidence(self, m: _Measure, verdict: _Verdict, ctx: _Context) -> dict[str, Any]:
        distinct, tally, caller = m.distinct, m.tally, m.caller
        templates = m.templates()
        enumeration = m.enumeration()
        per_template = None if templates is None else round(distinct / max(templates, 1.0), 1)
        return {
            "signals": list(verdict.signals),
            "requests": tally.requests,
            "requests_without_input": tally.without_input,
            "distinct_inputs": round(distinct),
            "distinct_ratio": round(distinct / tally.requests, 3),
            "new_inputs": None if m.new is None else round(m.new),
            **flood_comparison(distinct, verdict.own, caller, ctx.rates),
            "window_coverage": {
                "share": round(verdict.share, 3),
                "distinct_inputs_seen": round(ctx.service_distinct),
                "callers_active": ctx.rates.active,
            },
            "accumulated_coverage": {
                "distinct_inputs": round(m.accumulated),
                "requests": caller.requests,
                "distinct_ratio": round(min(m.accumulated / max(caller.requests, 1), 1.0), 3),
                "since": iso_utc(ctx.epoch_start),
                "population_median": round(ctx.coverage.median, 1),
                "population_p95": None if ctx.coverage.p95 is None else round(ctx.coverage.p95, 1),
                "ratio_population": round(m.accumulated / ctx.coverage.median, 2),
                "previously_reported": verdict.previously_reported or None,
            },
            "enumeration": {
                "detected": enumeration,
                "text_requests": tally.text_requests,
                "templates": None if templates is None else round(templates),
                "distinct_per_template": per_template,
                "example_template": tally.detail.example if enumeration and tally.detail else None,
            },
            "estimates": "HyperLogLog: about ±6.5% per caller and window, ±13% accumulated, ±1.6% in all",
            "thresholds": {
                "min_distinct": self.min_distinct, "min_distinct_ratio": self.min_distinct_ratio,
                "own_factor": self.own_factor, "population_factor": self.population_factor,
                "baseline_floor": self.baseline_floor, "min_share": self.min_share,
                "min_callers": self.min_callers, "min_accumulated": self.min_accumulated,
                "coverage_horizon_s": self.coverage_horizon_s,
            },
        }


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
