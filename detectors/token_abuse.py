"""Resource abuse by tokens: token floods, oversized inputs and logprob/max_tokens harvesting.

Three signals, all per principal (or client address when there is no principal):

* **token volume** per window — input plus output tokens (``chars / 4`` when the agent saw no
  token counts) against the principal's own EWMA baseline and the median of the principals
  active in the window, the rule of ``request_rate`` applied to tokens. Flagged when the total
  is at least ``min_tokens``, ``own_factor`` x its own baseline (floored at ``baseline_floor``)
  and ``population_factor`` x the window's median.
* **oversized inputs**, per request — an input of more than ``max_input_tokens`` tokens (or
  estimated tokens) is a finding at once: context stuffing costs the service whatever the
  caller's history. Its input tokens are left out of the window's volume, so one long document
  pasted is an oversized input (low), not also a token flood (a walk-through's single 144,000-
  character paste was paged as a high "flood"); many of them raise the incident by count.
* **harvesting** per window — at least ``min_logprob_requests`` requests asking for
  ``logprobs``/``top_logprobs``, or for ``max_tokens`` of at least ``max_tokens_threshold``,
  making up at least ``min_harvest_ratio`` of the principal's requests. Collecting full
  probability distributions or the longest completions at volume is how models are distilled
  or extracted (attributes as the agent records them from OpenAI-style request bodies).

Behaviour worth knowing:

* The first ``warmup_windows`` windows only learn baselines (at start-up everyone looks new);
  oversized inputs and harvesting need no history and are judged from the first event.
* A principal new after warm-up is judged on ``baseline_floor`` and the population (with fewer
  than ``min_population`` principals using tokens, the others' median or recent busy windows',
  as in ``request_rate``); its EWMA starts at its total capped at the median (a burst's first
  part is no baseline). A flagged window moves the
  baseline slowly (``flagged_alpha``, towards the total capped at the own threshold), so a
  sustained flood keeps being flagged for several windows and a lasting step-up is accepted
  after a while. Baselines learn only from windows in which the principal used tokens.
* Requests refused as unauthenticated or forbidden (401, 403) are not counted at all: they
  reached no model (a burst of them is ``auth_abuse``'s), and a stuffing burst of small refused
  requests used to pull the population's median down until ordinary long prompts were floods.
* Harvesting is an absolute rule, not a baseline: an evaluation job that legitimately asks for
  logprobs at volume is flagged every window, which is what an operator wants to know about.

State is bounded: baselines live in an LRU map of ``max_principals`` keys that also drops keys
idle for ``ttl_s`` seconds of event time; a window holds at most ``max_principals`` keys and
counts the rest as ``overflow``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from inferwatch.collectors.event import EventInput, EventOutput, InferenceEvent
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
    about_event,
    flood_comparison,
    iso_utc,
    note_model,
    own_history,
    ratio_severity,
    subject_of,
    window_finding,
)

CHARS_PER_TOKEN = 4
"""Characters per token assumed when the agent recorded characters but no token count."""


def token_count(part: EventInput | EventOutput) -> tuple[int, bool]:
    """Tokens of an input or output, and whether they were estimated from characters.

    >>> token_count(EventInput(tokens=12, chars=400)), token_count(EventInput(chars=401))
    ((12, False), (101, True))
    """
    if part.tokens is not None:
        return part.tokens, False
    chars = part.chars if part.chars is not None else len(part.text or "")
    return math.ceil(chars / CHARS_PER_TOKEN), chars > 0


def asks_for_logprobs(attributes: dict[str, Any]) -> bool:
    """Whether request attributes ask for token log-probabilities (``logprobs``/``top_logprobs``).

    >>> asks_for_logprobs({"logprobs": True}), asks_for_logprobs({"top_logprobs": 0})
    (True, False)
    """
    return any(_positive(attributes.get(name)) for name in ("logprobs", "top_logprobs"))


def _positive(value: Any) -> bool:
    return value is True or (isinstance(value, int | float) and not isinstance(value, bool) and value > 0)


@dataclass(slots=True)
class _Tally:
    requests: int = 0
    tokens: int = 0
    estimated: int = 0
    logprob_requests: int = 0
    max_tokens_requests: int = 0
    largest_max_tokens: int = 0
    service: str = "unknown"
    models: list[str] = field(default_factory=list)
    ids: IdSample = field(default_factory=IdSample)
    harvest_ids: IdSample = field(default_factory=IdSample)


class TokenAbuseDetector:
    """Tokens per principal per window against its baselines; oversized inputs; harvesting.

    Options (keyword only): ``min_tokens`` (20_000); ``own_factor`` (5.0); ``population_factor``
    (5.0); ``baseline_floor`` (1000.0); ``ewma_alpha`` (0.3); ``flagged_alpha`` (0.1);
    ``warmup_windows`` (1); ``max_input_tokens`` (32_000); ``min_logprob_requests`` (50);
    ``min_harvest_ratio`` (0.8); ``max_tokens_threshold`` (4096); ``max_principals``
    (100_000); ``ttl_s`` (86_400); ``min_population`` (5: with fewer principals using tokens in a
    window, each is judged against the others', or recent windows' when alone; 0: the window's).

    >>> detector = TokenAbuseDetector()
    >>> detector.name, detector.min_tokens, detector.max_input_tokens
    ('token_abuse', 20000, 32000)
    """

    name: ClassVar[str] = "token_abuse"

    def __init__(
        self,
        *,
        min_tokens: int = 20_000,
        own_factor: float = 5.0,
        population_factor: float = 5.0,
        baseline_floor: float = 1000.0,
        ewma_alpha: float = 0.3,
        flagged_alpha: float = 0.1,
        warmup_windows: int = 1,
        max_input_tokens: int = 32_000,
        min_logprob_requests: int = 50,
        min_harvest_ratio: float = 0.8,
        max_tokens_threshold: int = 4096,
        max_principals: int = 100_000,
        ttl_s: float = 86_400.0,
        min_population: int = 5,
    ) -> None:
        if not (0.0 < ewma_alpha <= 1.0 and 0.0 <= flagged_alpha <= 1.0):
            raise ValueError("ewma_alpha must be in (0, 1] and flagged_alpha in [0, 1]")
        if own_factor < 1.0 or population_factor < 1.0 or baseline_floor <= 0.0:
            raise ValueError("own_factor and population_factor must be >= 1, baseline_floor > 0")
        if min_tokens < 1 or warmup_windows < 0 or max_principals < 1:
            raise ValueError(f"min_tokens and max_principals must be at least 1 and warmup_windows at least "
                             f"0, got {min_tokens}, {max_principals} and {warmup_windows}")
        if min_population < 0:
            raise ValueError(f"min_population must be at least 0, got {min_population}")
        if not 0.0 < min_harvest_ratio <= 1.0:
            raise ValueError(f"min_harvest_ratio must be in (0, 1], got {min_harvest_ratio}")
        if max_input_tokens < 1 or min_logprob_requests < 1 or max_tokens_threshold < 1:
            raise ValueError("max_input_tokens, min_logprob_requests, max_tokens_threshold must be >= 1")
        self.min_tokens = min_tokens
        self.own_factor = own_factor
        self.population_factor = population_factor
        self.baseline_floor = baseline_floor
        self.ewma_alpha = ewma_alpha
        self.flagged_alpha = flagged_alpha
        self._rule = FloodRule(min_tokens, own_factor, population_factor, baseline_floor, ewma_alpha,
                               flagged_alpha)
        self.warmup_windows = warmup_windows
        self.max_input_tokens = max_input_tokens
        self.min_logprob_requests = min_logprob_requests
        self.min_harvest_ratio = min_harvest_ratio
        self.max_tokens_threshold = max_tokens_threshold
        self.max_principals = max_principals
        self.overflow = 0
        """Requests not counted because a window already held ``max_principals`` keys."""
        self.unattributed = 0
        """Requests with neither a principal nor a client address (oversized ones still flagged)."""
        self.refused = 0
        """Requests refused as unauthenticated or forbidden (401, 403): they used no tokens; not
        counted, nor in the population (a credential-stuffing burst of tiny requests pulled the
        median down until ordinary long prompts read as floods)."""
        self._baselines = BaselineTable(max_principals, ttl_s)
        self._window: dict[str, _Tally] = {}
        self._window_first: float | None = None
        self._bounds = WindowBounds()
        self._windows_closed = 0
        self.min_population = min_population
        self._population = PopulationReference(min_population, ewma_alpha, ttl_s)

    @property
    def principals_tracked(self) -> int:
        """Principals (and addresses) whose token baseline is currently held."""
        return len(self._baselines)

    def observe(self, event: InferenceEvent) -> list[Finding]:
        """Count the request's tokens in the open window; flag it at once if its input is oversized."""
        if event.status in REFUSED:
            self.refused += 1
            return []
        if self._window_first is None:
            self._window_first = event.ts
        tokens_in, estimated_in = token_count(event.input)
        tokens_out, estimated_out = token_count(event.output)
        subject = subject_of(event)
        findings = []
        if tokens_in > self.max_input_tokens:
            findings.append(self._oversized_finding(event, subject, tokens_in, estimated_in))
            # Reported already, as what it is: one document pasted is not also a flood.
            tokens_in, estimated_in = 0, False
        if subject is None:
            self.unattributed += 1
            return findings
        tally = self._window.get(subject)
        if tally is None:
            if len(self._window) >= self.max_principals:
                self.overflow += 1
                return findings
            tally = self._window[subject] = _Tally(service=event.service)
        tally.requests += 1
        tally.tokens += tokens_in + tokens_out
        tally.estimated += estimated_in or estimated_out
        note_model(tally.models, event.model)
        # Only totals near min_tokens can be flagged: sample ids from half-way there.
        if 2 * tally.tokens >= self.min_tokens:
            tally.ids.add(event)
        self._count_harvesting(tally, event)
        return findings

    def _count_harvesting(self, tally: _Tally, event: InferenceEvent) -> None:
        logprobs = asks_for_logprobs(event.attributes)
        max_tokens = event.attributes.get("max_tokens")
        at_max = False
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
            at_max = max_tokens >= self.max_tokens_threshold
            if at_max:
                tally.max_tokens_requests += 1
                tally.largest_max_tokens = max(tally.largest_max_tokens, max_tokens)
        tally.logprob_requests += logprobs
        harvest = max(tally.logprob_requests, tally.max_tokens_requests)
        if (logprobs or at_max) and harvest > self.min_logprob_requests - MAX_SAMPLE_IDS:
            tally.harvest_ids.add(event)

    def close_window(self, end: datetime) -> list[Finding]:
        """Judge every principal's tokens and harvesting in the window ending at ``end``; learn."""
        end_ts = end.timestamp()
        bounds = (self._bounds.close(end_ts, self._window_first), end_ts)
        window, self._window, self._window_first = self._window, {}, None
        if not window:
            return []
        self._windows_closed += 1
        findings = [f for s, t in window.items() if (f := self._harvest_finding(s, t, bounds))]
        using = {subject: tally for subject, tally in window.items() if tally.tokens > 0}
        if using:
            known = [float(t.tokens) for s, t in using.items() if s in self._baselines]
            population = self._population.of([float(t.tokens) for t in using.values()], bounds[1], known)
            judging = self._windows_closed > self.warmup_windows
            for subject, tally in using.items():
                finding = self._judge_volume(subject, tally, population, judging, bounds)
                if finding is not None:
                    findings.append(finding)
        self._baselines.expire(end_ts)
        return findings

    def _judge_volume(self, subject: str, tally: _Tally, population: Population, judging: bool,
                      bounds: tuple[float, float]) -> Finding | None:
        row, baseline = self._baselines.load(subject, bounds[1])
        # A new key, the keys with a history's; in a thin window, the others' (or recent).
        population = population.seen_by(float(tally.tokens), newcomer=not baseline.windows)
        flagged, own = self._rule.assess(tally.tokens, baseline, population, judging)
        finding = self._volume_finding(subject, tally, baseline, own, population, bounds) if flagged else None
        self._rule.learn(tally.tokens, baseline, population, own, flagged, judging)
        self._baselines.store(row, baseline)
        return finding

    def _volume_finding(self, subject: str, tally: _Tally, baseline: WindowBaseline, own: float,
                        population: Population, bounds: tuple[float, float]) -> Finding:
        ratio_own = tally.tokens / own
        ratio_population = tally.tokens / population.median
        ratio = min(ratio_own, ratio_population)
        evidence: dict[str, Any] = {
            "signal": "token_volume",
            "tokens": tally.tokens,
            "requests": tally.requests,
            "requests_estimated_from_chars": tally.estimated,
            **flood_comparison(tally.tokens, own, baseline, population),
            "thresholds": {"min_tokens": self.min_tokens, "own_factor": self.own_factor,
                           "population_factor": self.population_factor,
                           "baseline_floor": self.baseline_floor},
        }
        history = own_history(own, bool(baseline.windows), ",.0f")
        return window_finding(
            self.name,
            severity=ratio_severity(ratio),
            score=round(ratio / (ratio + 10.0), 4),
            title=f"Token flood from {subject}: {tally.tokens:,} tokens in one window "
            f"({ratio_own:.0f}x own baseline)",
            summary=f"{subject} used {tally.tokens:,} tokens in {tally.requests} requests between "
            f"{iso_utc(bounds[0])} and {iso_utc(bounds[1])}: {ratio_own:.1f}x {history} and "
            f"{ratio_population:.1f}x {population.described(',.0f')}",
            subject=subject,
            bounds=bounds,
            service=tally.service,
            models=tally.models,
            ids=tally.ids,
            evidence=evidence,
        )

    def _harvest_finding(self, subject: str, tally: _Tally, bounds: tuple[float, float]) -> Finding | None:
        kinds = [kind for kind, n in (("logprobs", tally.logprob_requests),
                                      ("max_tokens", tally.max_tokens_requests))
                 if n >= self.min_logprob_requests and n >= self.min_harvest_ratio * tally.requests]
        if not kinds:
            return None
        harvest = max(tally.logprob_requests, tally.max_tokens_requests)
        share = harvest / tally.requests
        labels = {"logprobs": "logprobs", "max_tokens": f"max_tokens >= {self.max_tokens_threshold}"}
        asked = " and ".join(labels[k] for k in kinds)
        evidence: dict[str, Any] = {
            "signal": "harvesting",
            "kinds": kinds,
            "requests": tally.requests,
            "logprob_requests": tally.logprob_requests,
            "max_tokens_requests": tally.max_tokens_requests,
            "largest_max_tokens": tally.largest_max_tokens or None,
            "harvest_ratio": round(share, 4),
            "tokens": tally.tokens,
            "thresholds": {"min_logprob_requests": self.min_logprob_requests,
                           "min_harvest_ratio": self.min_harvest_ratio,
                           "max_tokens_threshold": self.max_tokens_threshold},
        }
        return window_finding(
            self.name,
            severity="high" if len(kinds) == 2 or harvest >= 10 * self.min_logprob_requests else "medium",
            score=round(harvest / (harvest + self.min_logprob_requests), 4),
            title=f"Possible model extraction by {subject}: {harvest} of {tally.requests} requests "
            f"asked for {asked} in one window",
            summary=f"{subject} sent {tally.requests} requests between {iso_utc(bounds[0])} and "
            f"{iso_utc(bounds[1])}: {tally.logprob_requests} asked for logprobs and "
            f"{tally.max_tokens_requests} for max_tokens >= {self.max_tokens_threshold} "
            f"({share:.0%} harvesting-style; {tally.tokens:,} tokens)",
            subject=subject,
            bounds=bounds,
            service=tally.service,
            models=tally.models,
            ids=tally.harvest_ids,
            evidence=evidence,
        )

    def _oversized_finding(self, event: InferenceEvent, subject: str | None, tokens: int,
                           estimated: bool) -> Finding:
        multiple = tokens / self.max_input_tokens
        who = subject or (f"model:{event.model}" if event.model else f"service:{event.service}")
        unit = "estimated tokens (chars/4)" if estimated else "tokens"
        return Finding(
            detector=self.name,
            kind="abuse",
            severity="high" if multiple >= 4 else "medium" if multiple >= 1.5 else "low",
            score=round(multiple / (multiple + 1.0), 4),
            title=f"Oversized input from {who}: {tokens:,} {unit} (limit {self.max_input_tokens:,})",
            summary=f"{who} sent one request of {tokens:,} {unit}, {multiple:.1f}x the "
            f"{self.max_input_tokens:,} limit, at {iso_utc(event.ts)}"
            + (f" to {event.model}" if event.model else ""),
            subject=who,
            evidence={
                "signal": "oversized_input",
                "input_tokens": tokens,
                "estimated_from_chars": estimated,
                "input_chars": event.input.chars,
                "multiple": round(multiple, 2),
                "thresholds": {"max_input_tokens": self.max_input_tokens},
                "event_time": iso_utc(event.ts),
            },
            **about_event(event),
        )
