"""Model extraction: unnatural query distances on tabular models, templated sweeps on text models.

Per caller (principal, else client address), and per model for tabular traffic, three signals,
judged when a window closes over the caller's *recent* traffic (its last queries or prompts,
across windows), so that a slow extraction is caught as well as a fast one:

* **query distances** (PRADA, Juuti et al. 2019) — for each tabular query (``input.features``:
  numbers, booleans as 0/1, strings ignored), the distance in standard deviations to the nearest
  of the caller's last ``query_history`` queries with the same ``output.label``. Over the last
  ``distance_history`` such distances (exact repeats left out), once there are ``min_queries``,
  a Shapiro-Wilk W of their logarithm (the lowest and highest 1.5 % left out) below
  ``prada_delta`` flags the caller, and so do nearly constant distances (a grid or line sweep
  with a fixed step) and one step, moving most features, repeated in 10 % or more of them
  (augmentation: each new point a fixed step from an earlier one; not made on a model whose
  features are a lattice).
  Natural callers measured W >= 0.88 on five kinds of table, real ones included, grid and
  line sweeps below 0.6; PRADA's 0.9 would flag about 1 natural caller-window in 2,500, hence
  0.85 (details in :mod:`inferwatch.detectors.query_distances`, including what is not caught).
* **off-distribution queries** — the share of the caller's recent queries that lie farther from
  a reference sample of all callers' recent queries to the model than 99% of that sample lies
  from itself; ``off_share`` or more flags the caller (natural callers measured at most 9%,
  uniform random queries 34-95%). This catches random queries spread over the feature ranges,
  which PRADA's test does not. It needs other callers' traffic, and it is skipped for a model
  in a window where at least 3 callers were checked and two or more of them, a quarter or more,
  were off — over their recent histories, or within the window alone (callers with at least 5
  checks in it, each off on ``off_share`` of them; three or more off): that is drift of the
  model's inputs (``drift`` reports it), not one caller — counted in ``model_wide_shifts``, and
  the callers' earlier checks are dropped. The look within the window sees a shift at once;
  on histories alone, callers cross ``off_share`` a few at a time as the reference follows the
  drift, never enough at once, and ordinary callers were flagged for a drift that came and went.
* **templated prompt sweeps** — of the caller's last up to 64 prompts (``input.text``), the share
  that were near-duplicates (SimHash within ``simhash_bits`` of one of the last
  ``prompt_history``) or fills of a template (at least ``template_chars`` of fixed text shared
  with the previous prompt around a slot of at most ``max_slot_chars``), after folding case,
  white space and punctuation; exact repeats are retries and count against the share. At least
  ``min_prompts`` prompts and a share of ``sweep_share`` flag the caller.

Behaviour worth knowing:

* A caller is judged only in a window in which it added to what is judged (a query, or a sweep
  prompt), and gets at most one finding per window, naming every signal that fired. Severity
  rises with the distance past the threshold: W 0.08 / 0.2 below ``prada_delta`` is medium /
  high, a fixed-step sweep high, one step repeated in 30 % of the distances high (medium
  below); an off-distribution share of 50% / 75% medium / high; a sweep share of 75% medium,
  90% with ``2 * min_prompts`` sweep prompts high.
* Ordinary users do resend edited prompts and retry; the share and volume thresholds are what
  keep them quiet. A batch job that fills one short template at volume (``Translate: {word}``)
  is flagged, as it looks exactly like extraction; one that wraps documents is not.
* On a model whose features are all small integers, distances tie: the repeated-step test is
  not made on it (recognised from its reference), and W is less reliable (lowest natural W
  measured 0.84 with four features of 0-5); raise ``min_queries`` or lower ``prada_delta``.
* Evidence holds statistics, thresholds and sample event ids; of prompt text it holds only the
  template's fixed start and end, normalised and cut to 40 characters each.

State is bounded. Full state is held only for callers that a 1 MiB count sketch (decayed by 0.8
per window) says have sent about ``track_after`` queries or prompts over the last few windows:
light callers cost nothing each, and a caller's first ``track_after`` or so requests are not
looked at. Tracked callers live in two LRU maps of ``max_tracked`` keys that drop keys idle for
``ttl_s``. Measured with tracemalloc: 2.7 KB per tracked (caller, model) with 4 features,
6.4 KB with 16 (``4 * query_history`` bytes per feature), 1.4 KB per tracked text caller; the
repeated-step ring (``distance_history`` bytes) added about 0.24 KB to each (caller, model) on
2026-11-27. Per model (at most 1000): the reference of 256 queries and a 4 KiB admission table.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar, Final

from inferwatch.collectors.event import InferenceEvent, Scalar
from inferwatch.detectors.base import MAX_SAMPLE_IDS, SEVERITY_ORDER, Finding, Severity
from inferwatch.detectors.prompt_sweeps import RING, PromptHistory, SweepWindow, normalise_prompt
from inferwatch.detectors.query_distances import (
    OFF_QUANTILE,
    REFERENCE_PER_CALLER,
    REGULAR_SPACING_IQR,
    REPEATED_STEP_SHARE,
    ModelQueries,
    QueryHistory,
    QueryVerdict,
)
from inferwatch.detectors.sketches import DecayingCountSketch
from inferwatch.detectors.state import (
    BoundedState,
    IdSample,
    WindowBounds,
    iso_utc,
    subject_of,
    window_finding,
)

MAX_MODELS: Final = 1000
SAMPLE_IDS: Final = 10
GUARD_MIN_CALLERS: Final = 3
GUARD_SHARE: Final = 0.25
"""Two or more callers, and at least this share of those checked, off at once: input drift."""
GUARD_WINDOW_CHECKS: Final = 5
"""Reference checks a caller needs in one window to count in that window's look for a shift."""
GUARD_WINDOW_MIN_OFF: Final = 3
"""Callers off within one window for that look to call it a shift: with two, an attacker and one
other caller off by chance among a few busy ones would hide the attacker's window (the random-query
attacker of ``benchmarks/caller_scenarios.py`` lost 7 of its 55 findings so)."""
SKETCH_DECAY: Final = 0.8
"""Counts in the tracking sketch weigh about the last five windows (1 / (1 - 0.8))."""


@dataclass
class _Active:
    """A tracked caller's window: where it came from, the models it queried, sample ids."""

    service: str
    models: set[str] = field(default_factory=set)
    ids: IdSample = field(default_factory=lambda: IdSample(limit=SAMPLE_IDS))
    text: SweepWindow | None = None


@dataclass(frozen=True)
class _ModelResult:
    model: str
    verdict: QueryVerdict
    queries: int
    repeats: int
    reference_rows: int
    threshold: float | None
    window_checked: int = 0
    window_far: int = 0


def _many_off(callers: int, off: int) -> bool:
    """Enough of the callers checked were off at once to call it input drift, not one caller."""
    return callers >= GUARD_MIN_CALLERS and off >= 2 and off >= GUARD_SHARE * callers


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


UNNAMED = "-"
"""The model key of events that name no model."""


def _named(model: str) -> str:
    """A model as a title names it: events without a model name are "an unnamed model"."""
    return "an unnamed model (the events carry no model name)" if model == UNNAMED else model


class ModelExtractionDetector:
    """PRADA-style query distances and off-distribution queries per (caller, tabular model);
    templated and near-duplicate prompt sweeps per caller. See the module docstring.

    Options (keyword only): ``prada_delta`` (0.85); ``min_queries`` (64); ``off_share`` (0.25);
    ``query_history`` (64); ``distance_history`` (128); ``max_features`` (32); ``simhash_bits``
    (10); ``template_chars`` (16); ``max_slot_chars`` (80); ``prompt_history`` (8);
    ``min_prompts`` (20); ``sweep_share`` (0.6); ``track_after`` (8); ``max_tracked`` (20_000);
    ``ttl_s`` (86_400).

    >>> detector = ModelExtractionDetector()
    >>> detector.name, detector.prada_delta, detector.min_prompts
    ('model_extraction', 0.85, 20)
    """

    name: ClassVar[str] = "model_extraction"

    def __init__(
        self,
        *,
        prada_delta: float = 0.85,
        min_queries: int = 64,
        off_share: float = 0.25,
        query_history: int = 64,
        distance_history: int = 128,
        max_features: int = 32,
        simhash_bits: int = 10,
        template_chars: int = 16,
        max_slot_chars: int = 80,
        prompt_history: int = 8,
        min_prompts: int = 20,
        sweep_share: float = 0.6,
        track_after: int = 8,
        max_tracked: int = 20_000,
        ttl_s: float = 86_400.0,
    ) -> None:
        if not 0.0 < prada_delta < 1.0:
            raise ValueError(f"prada_delta must be between 0 and 1 (PRADA used about 0.9), got {prada_delta}")
        if not 0.0 < off_share <= 1.0 or not 0.0 < sweep_share <= 1.0:
            raise ValueError("off_share and sweep_share must be in (0, 1]")
        if not 3 <= min_queries <= distance_history <= 5000:
            raise ValueError("min_queries must be at least 3 and at most distance_history, "
                             "and distance_history at most 5000 (Shapiro-Wilk's range)")
        if not 1 <= min_prompts <= RING:
            raise ValueError(f"min_prompts must be between 1 and {RING}, got {min_prompts}")
        if not 0 <= simhash_bits < 32:
            raise ValueError(f"simhash_bits must be between 0 and 31 (of 64), got {simhash_bits}")
        for option, value in (("query_history", query_history), ("max_features", max_features),
                              ("template_chars", template_chars), ("max_slot_chars", max_slot_chars),
                              ("prompt_history", prompt_history), ("track_after", track_after),
                              ("max_tracked", max_tracked), ("ttl_s", ttl_s)):
            _positive(option, value)
        self.prada_delta = prada_delta
        self.min_queries = min_queries
        self.off_share = off_share
        self.query_history = query_history
        self.distance_history = distance_history
        self.max_features = max_features
        self.simhash_bits = simhash_bits
        self.template_chars = template_chars
        self.max_slot_chars = max_slot_chars
        self.prompt_history = prompt_history
        self.min_prompts = min_prompts
        self.sweep_share = sweep_share
        self.track_after = track_after
        self.unattributed = 0
        """Events with features or text but neither a principal nor a client address."""
        self.model_wide_shifts = 0
        """(model, window) pairs where the off-distribution test was skipped as input drift."""
        self._sketch = DecayingCountSketch()
        self._models: BoundedState[str, ModelQueries] = BoundedState(MAX_MODELS, ttl_s)
        self._queries: BoundedState[tuple[str, str], QueryHistory] = BoundedState(max_tracked, ttl_s)
        self._prompts: BoundedState[str, PromptHistory] = BoundedState(max_tracked, ttl_s)
        self._active: dict[str, _Active] = {}
        self._models_touched: set[str] = set()
        self._window_first: float | None = None
        self._bounds = WindowBounds()

    @property
    def tracked(self) -> tuple[int, int]:
        """(caller, model) pairs and text callers whose full state is held."""
        return len(self._queries), len(self._prompts)

    def observe(self, event: InferenceEvent) -> list[Finding]:
        """Fold a tabular query or a prompt into its caller's recent history."""
        features, text = event.input.features, event.input.text
        if not features and not text:
            return []
        subject = subject_of(event)
        if subject is None:
            self.unattributed += 1
            return []
        if self._window_first is None:
            self._window_first = event.ts
        if features:
            self._observe_query(subject, event, features)
        if text:
            self._observe_prompt(subject, event, text)
        return []

    def _active_for(self, subject: str, event: InferenceEvent) -> _Active:
        active = self._active.get(subject)
        if active is None:
            active = self._active[subject] = _Active(service=event.service)
        return active

    def _tracked(self, state: BoundedState[Any, Any], key: Any, sketch_key: str) -> bool:
        """Whether ``key`` has full state, or has now sent enough (by the sketch) to get it."""
        if key in state:
            return True
        return self._sketch.add(sketch_key.encode()) >= self.track_after

    def _observe_query(self, subject: str, event: InferenceEvent, features: dict[str, Scalar]) -> None:
        model_name = event.model or UNNAMED
        model = self._models.get_or_create(model_name, event.ts, lambda: ModelQueries(self.max_features))
        vector = model.vector(features)
        if vector is None:
            return
        x, observed = vector
        self._models_touched.add(model_name)
        key = (subject, model_name)
        trusted = True
        if self._tracked(self._queries, key, f"{subject}\x1f{model_name}"):
            held = self._queries.get(key)
            if held is not None and held.rows.shape[1] > len(x):  # the model's state was dropped and rebuilt
                self._queries.pop(key)
            history = self._queries.get_or_create(
                key, event.ts, lambda: QueryHistory(len(x), self.query_history, self.distance_history))
            history.add(x, model.class_of(event.output.label), model.inv_scale, model.off_reference(x))
            active = self._active_for(subject, event)
            active.models.add(model_name)
            active.ids.add(event)
            checked, far = history.far_share()
            # A caller whose queries are already far from everyone else's would drag the reference
            # towards itself (and raise the threshold for all): it adds nothing to it.
            trusted = checked < REFERENCE_PER_CALLER or far < self.off_share
        model.learn(observed)
        if trusted or model.shifted:
            model.admit(x, zlib.crc32(subject.encode()))

    def _observe_prompt(self, subject: str, event: InferenceEvent, text: str) -> None:
        if not self._tracked(self._prompts, subject, f"{subject}\x1e"):
            return
        normalised = normalise_prompt(text)
        if not normalised:
            return
        history = self._prompts.get_or_create(subject, event.ts, lambda: PromptHistory(self.prompt_history))
        match = history.add(normalised, simhash_bits=self.simhash_bits, template_chars=self.template_chars,
                            max_slot_chars=self.max_slot_chars)
        active = self._active_for(subject, event)
        if active.text is None:
            active.text = SweepWindow()
        active.text.add(match, event)

    def close_window(self, end: datetime) -> list[Finding]:
        """Judge every tracked caller active in the window ending at ``end``."""
        end_ts = end.timestamp()
        bounds = (self._bounds.close(end_ts, self._window_first), end_ts)
        active, self._active, self._window_first = self._active, {}, None
        tabular = {subject: self._judge_queries(subject, act) for subject, act in active.items()}
        self._skip_model_wide_shifts(tabular)
        findings = []
        for subject, act in active.items():
            flagged = [r for r in tabular[subject] if r.verdict.flagged]
            text = self._judge_prompts(subject, act.text)
            if flagged or text is not None:
                findings.append(self._finding(subject, act, flagged, text, bounds))
        self._sketch.decay(SKETCH_DECAY)
        for name in self._models_touched:
            model = self._models.get(name)
            if model is not None:
                model.close_window()
        self._models_touched.clear()
        for state in (self._models, self._queries, self._prompts):
            state.expire(end_ts)
        return findings

    def _judge_queries(self, subject: str, act: _Active) -> list[_ModelResult]:
        results = []
        for name in sorted(act.models):
            history = self._queries.get((subject, name))
            model = self._models.get(name)
            if history is None or model is None:
                continue
            verdict = history.verdict(min_queries=self.min_queries, prada_delta=self.prada_delta,
                                      off_share=self.off_share, step_test=model.lattice is False)
            results.append(_ModelResult(name, verdict, history.window_queries, history.window_repeats,
                                        model.ref_size, model.threshold, history.window_checked,
                                        history.window_far))
            history.start_window()
        return results

    def _skip_model_wide_shifts(self, tabular: dict[str, list[_ModelResult]]) -> None:
        # Two views of "many callers off at once": over their recent histories (callers judged
        # on min_queries checks), and within this window alone (callers with a few checks in it).
        # The second sees a shift in its first window, before the reference, which trusted
        # callers keep feeding, follows it: judged on histories alone, callers then cross
        # off_share one by one over the next windows, each too few at once to show the shift.
        checked: dict[str, int] = {}
        off: dict[str, int] = {}
        window_checked: dict[str, int] = {}
        window_off: dict[str, int] = {}
        for results in tabular.values():
            for r in results:
                if r.verdict.off_checked >= self.min_queries:
                    checked[r.model] = checked.get(r.model, 0) + 1
                    off[r.model] = off.get(r.model, 0) + r.verdict.off_flag
                if r.window_checked >= GUARD_WINDOW_CHECKS:
                    window_checked[r.model] = window_checked.get(r.model, 0) + 1
                    window_off[r.model] = (window_off.get(r.model, 0)
                                           + (r.window_far >= self.off_share * r.window_checked))
        # A shift seen on the histories also lets every caller feed the reference until it has
        # followed; one seen within the window only drops the checks and this window's flags.
        followed = {m for m, n in checked.items() if _many_off(n, off[m])}
        shifted = followed | {m for m, n in window_checked.items()
                              if window_off[m] >= GUARD_WINDOW_MIN_OFF and _many_off(n, window_off[m])}
        self.model_wide_shifts += len(shifted)
        for name in checked:
            model = self._models.get(name)
            if model is not None:
                model.shifted = name in followed
        # Every caller's distances span the shift too: they start afresh, and this window's
        # verdicts (made on the mixed history) are dropped, distance tests and all.
        for subject, results in tabular.items():
            for r in results:
                history = self._queries.get((subject, r.model))
                if r.model in shifted and history is not None:
                    history.forget_queries()
            tabular[subject] = [replace(r, verdict=replace(r.verdict, off_flag=False, distance_flag=False))
                                if r.model in shifted else r for r in results]

    def _judge_prompts(self, subject: str,
                       window: SweepWindow | None) -> tuple[SweepWindow, PromptHistory] | None:
        history = self._prompts.get(subject)
        if window is None or history is None or not window.members:
            return None
        if history.recent < self.min_prompts or history.share < self.sweep_share:
            return None
        return window, history

    # -- findings ----------------------------------------------------------------------------

    def _finding(self, subject: str, act: _Active, tabular: list[_ModelResult],
                 text: tuple[SweepWindow, PromptHistory] | None, bounds: tuple[float, float]) -> Finding:
        signals: list[tuple[Severity, float, str, str]] = []  # severity, score, headline, sentence
        for r in tabular:
            signals += self._query_signals(r)
        if text is not None:
            signals.append(self._text_signal(*text))
        signals.sort(key=lambda s: (SEVERITY_ORDER[s[0]], s[1]), reverse=True)
        severity, score, headline, _ = signals[0]
        more = f" (+{len(signals) - 1} more)" if len(signals) > 1 else ""
        ids = _merged(act.ids if tabular else None, text[0].ids if text else None)
        models = {r.model for r in tabular} | (set(text[0].models) if text else set())
        evidence: dict[str, Any] = {
            "signals": sorted({name for r in tabular for name in r.verdict.signals}
                              | ({"templated_prompts"} if text else set())),
            "tabular": [self._query_evidence(r) for r in tabular],
            "text": self._text_evidence(*text) if text else None,
        }
        return window_finding(
            self.name,
            subject=subject,
            bounds=bounds,
            service=act.service,
            models=models - {UNNAMED},
            ids=ids,
            severity=severity,
            score=round(score, 4),
            title=f"Possible model extraction by {subject}: {headline}{more}",
            summary=f"{subject} between {iso_utc(bounds[0])} and {iso_utc(bounds[1])}: "
            + "; ".join(s[3] for s in signals),
            evidence=evidence,
        )

    def _query_signals(self, r: _ModelResult) -> list[tuple[Severity, float, str, str]]:
        v = r.verdict
        model = _named(r.model)
        out: list[tuple[Severity, float, str, str]] = []
        if v.distance_flag and v.shapiro_w is not None and v.distance_median is not None:
            spread = (f"min {v.distance_min:.3g}, median {v.distance_median:.3g}, p95 {v.distance_p95:.3g} "
                      "standard deviations")
            if v.regular_spacing:
                out.append(("high", 0.95, f"evenly spaced queries to {model} (a grid or line sweep)",
                            f"on {model} its last {v.tested} query-to-nearest-query distances are "
                            f"nearly all the same (interquartile range of log distance {v.log_iqr:.4f} < "
                            f"{REGULAR_SPACING_IQR}; {spread}): a sweep with a fixed step"))
            else:
                if v.shapiro_w < self.prada_delta:
                    margin = self.prada_delta - v.shapiro_w
                    severity: Severity = "high" if margin >= 0.2 else "medium" if margin >= 0.08 else "low"
                    out.append((severity, 0.5 + 0.5 * min(1.0, margin / 0.3),
                                f"unnatural query distances on {model} (Shapiro-Wilk W {v.shapiro_w:.3f} "
                                f"< {self.prada_delta})",
                                f"on {model} the log of its last {v.tested} query-to-nearest-query "
                                f"distances has Shapiro-Wilk W {v.shapiro_w:.3f}, below {self.prada_delta} "
                                f"(natural queries stay above; {spread})"))
                if v.repeated_step and v.repeated_share is not None:
                    repeated = v.repeated_share
                    out.append(("high" if repeated >= 0.3 else "medium",
                                0.5 + 0.5 * min(1.0, (repeated - REPEATED_STEP_SHARE) / 0.3),
                                f"one step repeated in queries to {model} ({repeated:.0%} of distances)",
                                f"on {model} {repeated:.0%} of its last {v.tested} query-to-nearest-query "
                                f"distances are one value to within 0.1 % (threshold "
                                f"{REPEATED_STEP_SHARE:.0%}; natural callers measured about 5 % at "
                                f"most; only steps moving several features count; {spread}): new "
                                "queries made by stepping earlier ones by a fixed amount"))
        if v.off_flag and v.off_share is not None:
            share = v.off_share
            severity = "high" if share >= 0.75 else "medium" if share >= 0.5 else "low"
            out.append((severity, 0.5 + 0.5 * (share - self.off_share) / max(1.0 - self.off_share, 1e-9),
                        f"{share:.0%} of queries to {model} far from other callers' traffic",
                        f"{share:.0%} of its last {v.off_checked} queries to {model} lie farther from a "
                        f"sample of {r.reference_rows} recent queries of all callers than {OFF_QUANTILE:.0%} "
                        f"of that sample lies from itself (threshold {self.off_share:.0%})"))
        return out

    def _text_signal(self, window: SweepWindow, history: PromptHistory) -> tuple[Severity, float, str, str]:
        share, members = history.share, history.members
        severity: Severity = ("high" if share >= 0.9 and members >= 2 * self.min_prompts
                              else "medium" if share >= 0.75 else "low")
        example = window.example()
        return (severity, 0.5 + 0.5 * (share - self.sweep_share) / max(1.0 - self.sweep_share, 1e-9),
                f"templated prompt sweep ({members} of its last {history.recent} prompts)",
                f"{members} of its last {history.recent} prompts ({share:.0%}, threshold "
                f"{self.sweep_share:.0%}) were near-duplicates of each other or fills of one template"
                + (f" such as \"{example}\"" if example else "")
                + f"; this window {window.prompts} prompts, {window.repeats} exact repeats")

    def _query_evidence(self, r: _ModelResult) -> dict[str, Any]:
        return {
            "model": r.model,
            "queries_in_window": r.queries,
            "exact_repeats_in_window": r.repeats,
            **r.verdict.evidence(),
            "reference_rows": r.reference_rows,
            "reference_distance_threshold": None if r.threshold is None else round(r.threshold, 4),
            "thresholds": {"prada_delta": self.prada_delta, "min_queries": self.min_queries,
                           "regular_spacing_iqr": REGULAR_SPACING_IQR,
                           "repeated_step_share": REPEATED_STEP_SHARE, "off_share": self.off_share,
                           "off_quantile": OFF_QUANTILE},
        }

    def _text_evidence(self, window: SweepWindow, history: PromptHistory) -> dict[str, Any]:
        return {**window.evidence(history),
                "thresholds": {"min_prompts": self.min_prompts, "sweep_share": self.sweep_share,
                               "simhash_bits": self.simhash_bits, "template_chars": self.template_chars,
                               "max_slot_chars": self.max_slot_chars}}


def _merged(*samples: IdSample | None) -> IdSample:
    """One sample of the ids of the signals that fired (tabular queries, sweep prompts)."""
    event_ids: list[str] = []
    trace_ids: list[str] = []
    for sample in samples:
        if sample is not None:
            event_ids += sample.event_ids
            trace_ids += [t for t in sample.trace_ids if t not in trace_ids]
    return IdSample(limit=MAX_SAMPLE_IDS, event_ids=event_ids[:MAX_SAMPLE_IDS],
                    trace_ids=trace_ids[:MAX_SAMPLE_IDS])
