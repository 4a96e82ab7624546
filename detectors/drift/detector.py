"""The ``drift`` detector: every kind of input and output drift per model, streaming.

Each window, every model's events are summarised (:class:`.sketch.WindowSummary`: exact counts
plus a bottom-k sample of the events' feature values). The summary is judged against the
model's reference by :class:`DriftJudge`; in a scale-out deployment the summaries of N detector
processes are merged first (:mod:`.summaries`), and because the merge is exact, the verdict is
the one a single process would reach.

What is compared (feature keys in docs/detectors/drift.md):

* every ``input.*``, ``text.*`` and ``output.*`` feature on its own, numeric or categorical,
  with the test the catalogue (:mod:`.catalogue`) chooses for that data type and sample size,
  and the share of tabular events missing each ``input.*`` feature;
* the numeric inputs together (a domain classifier: can current rows be told from reference
  rows? catches broken correlations with unchanged marginals) and the prompts' text (the same
  on hashed character n-grams), when ``multivariate`` / ``text`` are on;
* operations (mean latency, error share, tokens per request) as series of per-window values,
  with a streaming change detector (:mod:`.change`); a change is an ``operational`` finding
  filed under the detector name ``drift_ops``.

A feature has drifted only when its p-value is significant after Holm (or Benjamini-Hochberg)
correction across everything tested for the model in that window **and** its effect size
passes the catalogue's floor: at a million events a p-value alone flags shifts nobody cares
about, and the floor is what keeps big stationary traffic silent.

References: a baseline set with ``inferwatch baseline set`` (persisted in the store, so it
survives restarts), else the model's first ``reference_events`` events, and more until as
many are sampled (at most ``reference_sample_size``) or five windows have passed (``warmup``,
persisted once frozen),
or with ``reference="rolling"`` the ``rolling_windows`` windows that ended ``lag_windows``
windows ago. With ``rebaseline_on_version`` a new dominant
``model_version`` starts a new warm-up instead of raising a drift incident.

A window with fewer than ``min_events`` events of a model is not judged; it is carried into the
next window (up to ``max_carry_windows``), so a quiet model is judged less often, on as many
events as a busy model's window. Below ``min_events`` the tests' effect floors sit inside the
sampling noise, so a window judged at ``max_carry_windows`` with ``n`` fewer events is held
to ``alpha * n / min_events``: a budget of false alarms per event rather than per window (at
the old default of 200 events, a stationary stream of a million events sampled from ``elec``
gave 14 false incidents at ``alpha``). When a judged window alone finds nothing and holds
fewer than ``sample_size`` events, the last ``recent_windows`` judged windows are judged
together too (numeric features and the domain classifiers), so a slow ramp shows on their
events with the large-sample floors.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from inferwatch.collectors.event import EventView, InferenceEvent
from inferwatch.detectors.base import MAX_SAMPLE_IDS, Finding, Severity
from inferwatch.detectors.drift import ASPECTS, catalogue, change, domain, split_aspect, statistics, textstats
from inferwatch.detectors.drift.sketch import WindowSummary
from inferwatch.detectors.state import REFUSED, BoundedState, iso_utc
from inferwatch.detectors.stats import FloatArray

if TYPE_CHECKING:
    from inferwatch.detectors.drift.reference import ReferenceRecord

log = logging.getLogger(__name__)

UNKNOWN_MODEL = "unknown"
OPS_DETECTOR = "drift_ops"
SUMMARY_FEATURES = 3
OPERATIONS = ("latency_ms", "error_share", "tokens_per_request")
WARMUP_WINDOWS = 5
"""A warm-up ends once it has ``reference_events`` events and either that many sampled events
(at most ``reference_sample_size``) or this many windows: a busy model's first window alone
holds only a window's sample."""
RELOAD_WINDOWS = 10
"""Windows between two reads of a model's stored reference (a new baseline is picked up)."""
ROWS_CLASSIFIER = "inputs (together)"
TEXT_CLASSIFIER = "text (n-grams)"
NO_INPUTS = "input.features"
"""The verdict ``input.features (missing share)``: the share of events with no input feature at
all (absent, or every one null) against the reference's."""
CLASSIFIERS = (ROWS_CLASSIFIER, TEXT_CLASSIFIER)
"""The domain classifiers' feature names in findings."""
CLASSIFIER_SCREEN = 0.55
"""AUC a domain classifier must reach in one of the recent windows alone for it to run on them
together: half-way from chance (0.5) to its large-sample floor (0.6). On stationary traffic a
window's AUC sits within a few hundredths of 0.5, so the merge skips the classifiers there."""
NUMERIC_SCREEN = 0.07
"""Average effect (max of KS D and normalised Wasserstein) a numeric feature must show over the
recent windows alone to be tested on them together: both floors are 0.1, and the merge's effect
is at most the average plus the noise of sampling 2,000 of its events (a few hundredths)."""


class ReferenceKeeper(Protocol):
    """Where references are persisted (the incident store implements it)."""

    def save_reference(self, record: Any) -> None: ...

    def load_reference(self, model: str) -> Any: ...


@dataclass
class Reference:
    """A model's reference summary and where it came from."""

    summary: WindowSummary
    source: Literal["file", "warmup", "rolling"]
    created: datetime
    version: str | None = None
    origin: str = ""


def _reference_of(record: ReferenceRecord) -> Reference:
    return Reference(WindowSummary.from_dict(record.summary), record.source, record.created,
                     record.model_version, record.origin)


def _record_of(model: str, ref: Reference, waiting: Reference | None = None) -> ReferenceRecord:
    from inferwatch.detectors.drift.reference import ReferenceRecord

    return ReferenceRecord(model=model, model_version=ref.version, source=ref.source, created=ref.created,
                           events=ref.summary.events, origin=ref.origin, summary=ref.summary.to_dict(),
                           waiting=None if waiting is None else _record_of(model, waiting))


@dataclass
class _ModelState:
    reference: Reference | None = None
    loaded: bool = False
    since_load: int = 0
    warm_windows: int = 0
    warm: WindowSummary | None = None
    pending: WindowSummary | None = None
    carried: int = 0
    history: deque[WindowSummary] = field(default_factory=deque)
    recent: deque[tuple[WindowSummary, dict[str, float]]] = field(default_factory=deque)
    """The last judged windows, each with how far its classifiers and numeric features leaned."""
    changes: dict[str, change.ChangeDetector] = field(default_factory=dict)
    unsaved: Reference | None = None
    superseded: datetime | None = None
    """When the baseline file left for a new model version was set: the stored record that the
    warm-up of the new version replaces, not a baseline set meanwhile (which would win)."""
    waiting: Reference | None = None
    """With ``rebaseline_on_version``: a baseline file set for another version than the one running.
    It is stored inside the running version's warm-up record and is the reference again when
    traffic of its version comes (a file set ahead of a rollout, or the version rolled back to)."""

    def restart(self) -> None:
        """Forget the windows gathered against the old reference (a new one is coming or came)."""
        self.pending, self.carried = None, 0
        self.recent.clear()


def _metrics(summary: WindowSummary, min_requests: int) -> dict[str, float]:
    if summary.events < min_requests:
        return {}
    out = {"latency_ms": summary.latency_total / summary.events,
           "error_share": summary.errors / summary.events}
    requests, tokens_in, tokens_out = summary.tokens
    if requests >= min_requests:
        out["tokens_per_request"] = (tokens_in + tokens_out) / requests
    return out


class DriftJudge:
    """Judges one model's merged window summaries against its reference (no I/O but the keeper).

    A reference is compared with window after window unchanged, so what is derived from it (each
    numeric feature's profile, its rows as a matrix, its prompts' n-grams) is memoised on the
    reference's summary (:meth:`WindowSummary.memo`): computed at its first window, dropped with
    it when the reference is replaced (a baseline set, a reload, a rolled or re-warmed reference)
    or its sample changes. The numbers are the ones recomputing would give.
    """

    CHECKPOINT_SKIP: ClassVar[tuple[str, ...]] = ("keeper",)  # the store: the restored detector's own

    def __init__(self, detector: DriftDetector) -> None:
        self.options = detector
        self.keeper: ReferenceKeeper | None = None
        self._models: BoundedState[str, _ModelState] = BoundedState(max_keys=detector.max_models)

    def reference(self, model: str) -> Reference | None:
        state = self._models.get(model)
        return None if state is None else state.reference

    def judge(self, end_ts: float, summaries: Mapping[str, WindowSummary]) -> list[Finding]:
        """Findings for the window ending at ``end_ts`` from each model's (merged) summary."""
        findings: list[Finding] = []
        for model in sorted(summaries):
            summary = summaries[model]
            summary.end = end_ts
            state = self._models.get_or_create(model, end_ts, _ModelState)
            self._load(model, state)
            findings.extend(self._operations(model, state, summary))
            finding = self._data(model, state, summary)
            if finding is not None:
                findings.append(finding)
            self._save(model, state)
        return findings

    def _level(self, current: WindowSummary) -> float:
        """``alpha``, scaled down by events / ``min_events`` for a window judged short of them."""
        return self.options.alpha * min(1.0, current.events / self.options.min_events)

    def finish(self, end_ts: float) -> list[Finding]:
        """Judge each model's carried-over windows now (the input has ended)."""
        findings = []
        for model, state in list(self._models.items()):
            if state.pending is None or state.reference is None:
                continue
            current, state.pending, state.carried = state.pending, None, 0
            current.end = current.end or end_ts
            finding, _ = self._compare(model, state.reference, current, alpha=self._level(current))
            if finding is not None:
                findings.append(finding)
        return findings

    # --- references -------------------------------------------------------------------------
    def _load(self, model: str, state: _ModelState) -> None:
        # Read at a model's first window and again every RELOAD_WINDOWS windows, so a baseline
        # set (or cleared) with `inferwatch baseline` reaches a running service within minutes.
        if self.keeper is None or state.unsaved is not None:
            return
        if state.loaded and state.since_load < RELOAD_WINDOWS:
            state.since_load += 1
            return
        state.since_load = 0
        try:
            record = self.keeper.load_reference(model)
        except Exception as exc:  # the store being down must not stop detection
            log.warning("drift: could not load the reference of model %s (%s)", model, exc)
            return
        first, state.loaded = not state.loaded, True
        current = state.reference
        if record is None:
            state.waiting = None
            if current is not None and current.source == "file":  # cleared by `inferwatch baseline clear`
                log.info("drift: the baseline of model %s was cleared; warming up a new reference", model)
                state.reference = None
                state.restart()
            return
        if current is not None and not first and record.created == current.created:
            return
        if record.created == state.superseded:
            return  # the old version's baseline file, left behind: its successor is warming up
        if current is not None and record.source != "file" and current.source == "rolling":
            return  # a rolling reference is this process's own; only a baseline file overrides it
        state.reference = _reference_of(record)
        state.waiting = None if record.waiting is None else _reference_of(record.waiting)
        state.warm = None
        state.restart()
        if not first:
            log.info("drift: model %s now uses the %s reference from %s", model, record.source, record.origin)

    def _save(self, model: str, state: _ModelState) -> None:
        ref = state.unsaved
        if ref is None or self.keeper is None:
            return
        record = _record_of(model, ref, state.waiting)
        try:
            stored = self.keeper.load_reference(model)
            if stored is not None and stored.source == "file" and stored.created != state.superseded:
                # A baseline set while this warm-up ran wins: adopt it, never overwrite it.
                state.unsaved = None
                state.reference = _reference_of(stored)
                state.waiting = None if stored.waiting is None else _reference_of(stored.waiting)
                return
            self.keeper.save_reference(record)
            if state.superseded is not None and state.waiting is not None:
                log.info("drift: model %s: the reference warmed up on version %s is kept; the baseline "
                         "file set for version %s waits for that version's traffic", model, ref.version,
                         state.waiting.version)
            state.unsaved, state.superseded = None, None
        except Exception as exc:
            log.warning("drift: could not save the reference of model %s (%s); retrying next window",
                        model, exc)

    def set_reference(self, model: str, reference: Reference) -> None:
        """Use ``reference`` for ``model`` from now on (a baseline file, or a test)."""
        state = self._models.get_or_create(model, reference.summary.end or 0.0, _ModelState)
        state.reference, state.loaded = reference, True
        state.restart()

    def _warm(self, model: str, state: _ModelState, summary: WindowSummary) -> None:
        o = self.options
        if state.warm is None:
            state.warm = WindowSummary(model, service=summary.service, start=summary.start,
                                       k=o.reference_sample_size)
        state.warm.merge(summary)
        state.warm_windows += 1
        wanted = min(o.reference_sample_size, o.reference_events)
        full = len(state.warm.rows()) >= wanted or state.warm_windows >= WARMUP_WINDOWS
        if state.warm.events >= o.reference_events and full:
            warm, state.warm, state.warm_windows = state.warm, None, 0
            end = warm.end or 0.0
            state.reference = state.unsaved = Reference(
                warm, "warmup", datetime.fromtimestamp(end, UTC), warm.dominant_version(),
                f"{iso_utc(warm.start or end)} .. {iso_utc(end)}")

    def _rolling(self, state: _ModelState, summary: WindowSummary) -> None:
        o = self.options
        state.history.append(summary)
        while len(state.history) > o.rolling_windows + o.lag_windows:
            state.history.popleft()
        if len(state.history) < o.rolling_windows + o.lag_windows:
            return
        window = list(state.history)[: o.rolling_windows]
        merged = WindowSummary(summary.model, service=summary.service, k=o.reference_sample_size)
        merged.merge_all(window)
        end = window[-1].end or 0.0
        state.reference = Reference(merged, "rolling", datetime.fromtimestamp(end, UTC),
                                    merged.dominant_version(),
                                    f"{iso_utc(window[0].start or end)} .. {iso_utc(end)}")

    # --- data drift -------------------------------------------------------------------------
    def _data(self, model: str, state: _ModelState, summary: WindowSummary) -> Finding | None:
        o = self.options
        version = summary.dominant_version() if o.rebaseline_on_version else None
        waiting = state.waiting
        if (waiting is not None and version is not None and version == waiting.version
                and (state.reference is None or state.reference.version != version)):
            log.info("drift: model %s moved to version %s, which has a baseline file (%s); using it",
                     model, version, waiting.origin)
            state.reference, state.waiting, state.superseded = waiting, None, None
            state.unsaved = waiting  # stored again as the model's reference
            state.warm, state.warm_windows = None, 0
            state.restart()
        if o.reference == "rolling" and (state.reference is None or state.reference.source == "rolling"):
            before = state.reference
            self._rolling(state, summary)
            if before is None:
                return None
        if state.reference is None:
            self._warm(model, state, summary)
            return None
        if (o.rebaseline_on_version and version is not None and state.reference.version is not None
                and version != state.reference.version and state.reference.source != "rolling"):
            log.info("drift: model %s moved to version %s (reference %s); warming up a new reference",
                     model, version, state.reference.version)
            if state.reference.source == "file":  # kept for its version's traffic (see _ModelState.waiting)
                state.superseded, state.waiting = state.reference.created, state.reference
            state.reference = None
            state.restart()
            self._warm(model, state, summary)
            return None
        state.pending = summary if state.pending is None else state.pending.merge(summary)
        if state.pending.events < o.min_events and state.carried < o.max_carry_windows:
            state.carried += 1
            return None
        current, state.pending, state.carried = state.pending, None, 0
        finding, leans = self._compare(model, state.reference, current, alpha=self._level(current),
                                       unseen_before=_unseen_before(state.recent))
        if o.recent_windows < 2:
            return finding
        state.recent.append((current, leans))
        while len(state.recent) > o.recent_windows:
            state.recent.popleft()
        return finding if finding is not None else self._recent(model, state, state.reference, current)

    def _recent(self, model: str, state: _ModelState, reference: Reference,
                current: WindowSummary) -> Finding | None:
        """The last ``recent_windows`` windows judged together, when the latest alone found nothing.

        A slow ramp (or a small lasting shift) that no window of a few hundred events shows past
        its small-sample floors can show on their events together: a merged sample up to
        ``sample_size``, judged with the large-sample floors. Its effect is the windows' average,
        so a ramp is caught about a window after the average reaches the floor. Only windows
        whose own sample is not full gain from this: a full one already has ``sample_size``
        events, as many as the merged sample would.

        What cannot pass on the merge is not tested there. A domain classifier (the costly
        part) runs only if it reached :data:`CLASSIFIER_SCREEN` in one of the windows alone, or
        could not run there: the merge's AUC is about the windows' average, so it cannot reach
        its floor (0.6) while every window alone stays near 0.5. A numeric feature is tested
        only if its windows' average effect (the larger of KS D and normalised Wasserstein, each
        at most the windows' average on the merge, as both are convex in the distribution)
        reaches :data:`NUMERIC_SCREEN`.

        The merge is judged at ``recent_alpha`` (0.0001), not ``alpha``: the large-sample floor
        (W >= 0.1) is only about 3.5 standard errors of a mean at 2,000 events against 3,000, so
        there the p-value, not the floor, keeps noise out, and the merge is looked at again every
        window. At 0.01 a stationary stream (a second draw of ``synthetic``) gave 7 false
        incidents in a million events, every one with an adjusted p-value between 0.0008 and 0.005.
        """
        o = self.options
        if len(state.recent) < o.recent_windows or len(current.rows()) >= o.sample_size:
            return None
        leans = [lean for _, lean in state.recent]
        enabled = [name for name, on in zip(CLASSIFIERS, (o.multivariate, o.text), strict=True) if on]
        classifiers = {name for name in enabled
                       if any(lean.get(name, 1.0) >= CLASSIFIER_SCREEN for lean in leans)}
        if TEXT_CLASSIFIER in classifiers:
            prompts = len(current.ngram_rows())
            if prompts >= current.text_k or sum(len(s.ngram_rows()) for s, _ in state.recent) <= prompts:
                classifiers.discard(TEXT_CLASSIFIER)  # the merge would hold no more prompts than the window
        numeric_keys = {key for key, kind in reference.summary.keys().items()
                        if kind == "numeric" and not key.startswith("ops.")}
        numeric = {key for key in numeric_keys
                   if sum(lean.get(key, 1.0) for lean in leans) / len(leans) >= NUMERIC_SCREEN}
        if not numeric and not classifiers:
            return None  # nothing could pass: not even merged
        # The left-out tests still count in the correction: the merge is judged as strictly as if
        # everything had been tested on it.
        untested = len(numeric_keys - numeric) + len(set(enabled) - classifiers)
        merged = WindowSummary(model, service=current.service, k=o.sample_size)
        # Transient, so its texts are not trimmed: ngram_rows() takes the first text_k anyway.
        merged.merge_all([summary for summary, _ in state.recent], trim_texts=False)
        finding, _ = self._compare(model, reference, merged, windows=len(state.recent),
                                   classifiers=classifiers, numeric=numeric, untested=untested,
                                   alpha=o.recent_alpha)
        return finding

    def _compare(self, model: str, reference: Reference, current: WindowSummary, *, windows: int = 1,
                 classifiers: Collection[str] = CLASSIFIERS,
                 numeric: Collection[str] | None = None, untested: int = 0,
                 alpha: float | None = None,
                 unseen_before: Mapping[str, float] | None = None) -> tuple[Finding | None, dict[str, float]]:
        """The finding (if any) of ``current`` against ``reference``, and how far each domain
        classifier that ran (its AUC) and each numeric feature (the larger of KS D and normalised
        Wasserstein) leaned from the reference. ``classifiers`` (among :data:`CLASSIFIERS`, when
        the options have them on) and ``numeric`` (default: all) limit what is tested; ``untested``
        tests left out count in the multiple-testing correction with a p-value of 1. ``alpha``
        replaces the options' (the recent windows together are judged more strictly).
        ``unseen_before``: each categorical feature's recent unseen share, where enough windows
        give one (see :func:`_unseen_before`); the leans carry this window's as ``key (unseen)``."""
        o = self.options
        verdicts: list[catalogue.FeatureVerdict] = []
        ref_keys = reference.summary.keys()
        cur_keys = current.keys()
        # A single window gets every test. Several windows together get the tests whose floors
        # keep a wide margin over their noise at the merged size (numeric features and the domain
        # classifiers): a share change's floor is a fixed 5 points, about 4 standard errors at
        # 3,000 events, so a second look at the categories would double their false alarms.
        alone = windows == 1
        for key, kind in sorted(ref_keys.items()):
            if key.startswith("ops.") or (not alone and kind != "numeric"):
                continue
            if numeric is not None and kind == "numeric" and key not in numeric:
                continue
            if alone:
                verdict = self._types(key, reference.summary, current)
                if verdict is not None:
                    verdicts.append(verdict)
            if cur_keys.get(key, kind) != kind:
                continue
            verdicts.extend(self._feature(key, kind, reference.summary, current, alone=alone,
                                          unseen_before=(unseen_before or {}).get(key)))
            if alone and key.startswith("input.") and reference.summary.tabular and current.tabular:
                verdict = self._missing(key, reference.summary, current)
                if verdict is not None:
                    verdicts.append(verdict)
        if alone and reference.summary.tabular:
            verdict = self._inputs(reference.summary, current)
            if verdict is not None:
                verdicts.append(verdict)
        if o.multivariate and ROWS_CLASSIFIER in classifiers:
            verdicts.extend(self._rows(reference.summary, current, ref_keys))
        if o.text and TEXT_CLASSIFIER in classifiers:
            verdicts.extend(self._texts(reference.summary, current))
        leans = {v.feature: v.effect for v in verdicts if v.feature in CLASSIFIERS}
        leans.update((v.feature, max(v.stats.ks_d, v.stats.wasserstein)) for v in verdicts
                     if v.data_type == "numeric" and isinstance(v.stats, statistics.NumericStats))
        leans.update((f"{v.feature} {UNSEEN}", v.stats.unseen_share) for v in verdicts
                     if v.data_type == "categorical" and isinstance(v.stats, statistics.CategoricalStats)
                     and split_aspect(v.feature)[1] is None)
        if not verdicts:
            return None, leans
        adjusted = catalogue.correct(verdicts, method=o.correction, untested=untested)
        level = o.alpha if alpha is None else alpha
        drifted = [(v, p) for v, p in zip(verdicts, adjusted, strict=True) if v.drifted(p, level)]
        if not drifted:
            return None, leans
        drifted.sort(key=lambda vp: (-vp[0].strength, vp[0].feature))
        new_keys = sorted(k for k in cur_keys if k not in ref_keys and not k.startswith("ops."))
        family = len(verdicts) + untested
        return self._finding(model, reference, current, drifted, family, new_keys, windows, level), leans

    def _feature(self, key: str, kind: str, ref: WindowSummary, cur: WindowSummary, *,
                 alone: bool, unseen_before: float | None = None) -> list[catalogue.FeatureVerdict]:
        """``key``'s verdicts: its distribution, and for a numeric key of a single window
        (``alone``) the share of its values outside the reference range and its location shift
        (Mann-Whitney); none without enough data."""
        if kind == "numeric":
            # The reference side (its values and their mean, spread, bins and order) is derived
            # once per reference, not once per window: ``memo`` keeps it until the sample changes.
            ref_values = ref.memo(("values", key), lambda: _read_only(ref.values(key)))
            cur_values = cur.values(key)
            if not catalogue.enough("numeric", len(ref_values), len(cur_values)):
                return []
            profile = ref.memo(("numeric", key), lambda: statistics.NumericReference.of(ref_values))
            verdict = catalogue.judge_numeric(key, profile, cur_values)
            verdicts = [verdict]
            if alone:
                outside = f"{key} (outside reference range)"
                verdicts.append(catalogue.judge_range(outside, profile, cur_values))
                assert isinstance(verdict.stats, statistics.NumericStats)
                verdicts.append(catalogue.judge_location(f"{key} (location)", verdict.stats))
            return verdicts
        ref_counts, cur_counts = ref.counts(key), cur.counts(key)
        if not catalogue.enough("categorical", sum(ref_counts.values()), sum(cur_counts.values())):
            return []
        return [catalogue.judge_categorical(key, ref_counts, cur_counts, unseen_before=unseen_before)]

    def _types(self, key: str, ref: WindowSummary, cur: WindowSummary) -> catalogue.FeatureVerdict | None:
        # A numeric feature that starts carrying text (or the reverse) is a schema change the
        # per-type tests cannot see: each only reads the values of its own type.
        ref_counts, cur_counts = ref.value_types(key), cur.value_types(key)
        if len(ref_counts) < 2 and set(cur_counts) <= set(ref_counts):
            return None
        if not catalogue.enough("categorical", sum(ref_counts.values()), sum(cur_counts.values())):
            return None
        return catalogue.judge_categorical(f"{key} (value types)", ref_counts, cur_counts)

    def _missing(self, key: str, ref: WindowSummary, cur: WindowSummary) -> catalogue.FeatureVerdict | None:
        ref_present, ref_rows = ref.presence(key)
        cur_present, cur_rows = cur.presence(key)
        if ref_present == ref_rows and cur_present == cur_rows:
            return None  # never missing: nothing to compare
        ref_counts = {"present": ref_present, "missing": ref_rows - ref_present}
        cur_counts = {"present": cur_present, "missing": cur_rows - cur_present}
        if not catalogue.enough("categorical", ref_rows, cur_rows):
            return None
        return catalogue.judge_categorical(f"{key} (missing share)", ref_counts, cur_counts)

    def _inputs(self, ref: WindowSummary, cur: WindowSummary) -> catalogue.FeatureVerdict | None:
        # The share of events with any input feature. Each feature's missing share is measured
        # over the events that have some, so events whose features are all gone (written beside
        # input.features, sent as null or NaN, an agent or a job that stopped sending them) were
        # seen by no test: with none at all, drift on inputs fell silent.
        ref_with, ref_rows = ref.with_inputs()
        cur_with, cur_rows = cur.with_inputs()
        if not ref_with or (ref_with == ref_rows and cur_with == cur_rows):
            return None  # always there: nothing to compare
        if not catalogue.enough("categorical", ref_rows, cur_rows):
            return None
        return catalogue.judge_categorical(
            f"{NO_INPUTS} (missing share)", {"present": ref_with, "missing": ref_rows - ref_with},
            {"present": cur_with, "missing": cur_rows - cur_with})

    def _rows(self, ref: WindowSummary, cur: WindowSummary,
              ref_keys: Mapping[str, str]) -> list[catalogue.FeatureVerdict]:
        keys = sorted(k for k, kind in ref_keys.items() if k.startswith("input.") and kind == "numeric")
        if len(keys) < 2:
            return []
        ref_rows = ref.memo(("matrix", tuple(keys)), lambda: _read_only(ref.matrix(keys)))
        cur_rows = cur.matrix(keys)
        if not catalogue.enough("multivariate", len(ref_rows), len(cur_rows)):
            return []
        floor = catalogue.policy("multivariate", len(ref_rows), len(cur_rows)).floor
        result = domain.domain_auc(ref_rows, cur_rows, feature_names=keys, seed=self.options.seed,
                                   rank_above=floor)
        return [] if result is None else [catalogue.judge_domain(ROWS_CLASSIFIER, result, "multivariate")]

    def _texts(self, ref: WindowSummary, cur: WindowSummary) -> list[catalogue.FeatureVerdict]:
        ref_rows, cur_rows = ref.memo("ngram_rows", ref.ngram_rows), cur.ngram_rows()
        if not catalogue.enough("text", len(ref_rows), len(cur_rows)):
            return []
        result = domain.text_domain_auc(ref_rows, cur_rows, seed=self.options.seed)
        return [] if result is None else [catalogue.judge_domain(TEXT_CLASSIFIER, result, "text")]

    def _finding(self, model: str, reference: Reference, current: WindowSummary,
                 drifted: list[tuple[catalogue.FeatureVerdict, float]], tested: int,
                 new_keys: list[str], windows: int, alpha: float) -> Finding:
        o = self.options
        names = [v.feature for v, _ in drifted]
        shown = "; ".join(_describe(v, p) for v, p in drifted[:SUMMARY_FEATURES])
        more = len(drifted) - SUMMARY_FEATURES
        features = _by_feature(names)
        top, _ = drifted[0]
        strength = top.strength
        span = f" over the last {windows} windows" if windows > 1 else ""
        against = f"The last {windows} windows ({current.events} events) together, against" if windows > 1 \
            else "Against"
        outside = {v.feature: _outside(current, v) for v, _ in drifted
                   if isinstance(v.stats, statistics.RangeStats)}
        leading = [i for found in outside.values() for i in found.ids[:OUTSIDE_IDS_NAMED]]
        senders = "".join(found.sentence(split_aspect(feature)[0]) for feature, found in outside.items())
        event_ids, trace_ids = _sample_ids(current, leading)
        end = current.end or 0.0
        what = _what_shifted(features)
        if f"{NO_INPUTS} (missing share)" in names and not current.with_inputs()[0]:
            senders += (". No event of the window carries input features, though the reference's do: "
                        "features written elsewhere than input.features (`inferwatch replay` names keys it "
                        "does not read), sent as null or NaN, or an agent or job that stopped sending them")
        senders += _versions_sentence(reference, current, o.rebaseline_on_version)
        apart = _disjoint_inputs(reference.summary.keys(), current.keys())
        if apart is not None:  # a baseline of other column names: all "missing", the real drift unseen
            what = "none of its reference's input features are in the traffic"
            senders += (f". The reference has {apart[0]}; the traffic has {apart[1]}: check the baseline's "
                        "column names (`inferwatch baseline show --model M`)")
        return Finding(
            detector=o.name,
            kind="drift",
            severity=_severity(strength, len(features)),
            score=round(min(1.0, strength / (strength + 1.0)), 4),
            title=f"Drift on model {model}: {what}{span}",
            summary=f"{against} its {reference.source} reference of {reference.summary.events} events: "
            + shown + (f"; and {more} more" if more > 0 else "") + senders,
            subject=f"model:{model}",
            time=datetime.fromtimestamp(end, UTC),
            service=current.service,
            model=model,
            evidence={
                "window_start": iso_utc(current.start or end),
                "window_end": iso_utc(end),
                "windows": windows,
                "events": current.events,
                "sampled": len(current.sample.raw()),
                "tested": tested,
                "drifted": names,
                "new_features": new_keys,
                "thresholds": {"alpha": alpha, "correction": o.correction,
                               "effect_floors": "by type and sample size, docs/detectors/drift-tests.md"},
                "reference": {"source": reference.source, "events": reference.summary.events,
                              "created": reference.created.isoformat(), "version": reference.version,
                              "origin": reference.origin},
                "versions": dict(sorted(current.versions.items())),
                "features": {v.feature: _feature_evidence(v, p, outside.get(v.feature))
                             for v, p in drifted[: o.max_evidence_features]},
            },
            event_ids=event_ids,
            trace_ids=trace_ids,
        )

    # --- operations -------------------------------------------------------------------------
    def _operations(self, model: str, state: _ModelState, summary: WindowSummary) -> list[Finding]:
        o = self.options
        if not o.operations:
            return []
        findings = []
        for metric, value in _metrics(summary, o.min_ops_requests).items():
            detector = state.changes.get(metric)
            if detector is None:
                detector = state.changes[metric] = change.build(o.change_detector)
            found = detector.update(value, weight=float(summary.events))
            if found is not None:
                findings.append(self._ops_finding(model, summary, metric, value, found))
        return findings

    def _ops_finding(self, model: str, summary: WindowSummary, metric: str, value: float,
                     found: change.Change) -> Finding:
        end = summary.end or 0.0
        label = {"latency_ms": "mean latency (ms)", "error_share": "error share",
                 "tokens_per_request": "tokens per request"}[metric]
        event_ids, trace_ids = summary.event_ids()
        return Finding(
            detector=OPS_DETECTOR,
            kind="operational",
            severity="medium" if metric == "error_share" and found.direction == "up" else "low",
            score=round(min(1.0, found.statistic / (found.statistic + found.threshold)), 4),
            title=f"{label.capitalize()} of model {model} changed {found.direction}: "
            f"{found.mean_before:.4g} -> {found.mean_after:.4g}",
            summary=f"{self.options.change_detector} saw the {label} of model {model} move {found.direction} "
            f"from {found.mean_before:.4g} to {found.mean_after:.4g} per window "
            f"(statistic {found.statistic:.3g} > threshold {found.threshold:.3g}); this window {value:.4g} "
            f"over {summary.events} requests",
            subject=f"model:{model}",
            time=datetime.fromtimestamp(end, UTC),
            service=summary.service,
            model=model,
            evidence={"metric": metric, "window_value": value, "requests": summary.events,
                      "window_end": iso_utc(end), **found.evidence()},
            event_ids=event_ids,
            trace_ids=trace_ids,
        )


OUTSIDE_IDS = 5
"""Sampled events named per feature whose values left the reference range (the furthest out)."""
OUTSIDE_IDS_NAMED = 3
"""Of those, how many per feature lead the finding's sample event ids (``events search --incident``)."""


def _sample_ids(current: WindowSummary, first: list[str]) -> tuple[list[str], list[str]]:
    """The finding's sample: event ids (``first`` leading, then the window's sample) and the trace
    ids of those same events."""
    traces = {str(row["_id"]): row.get("_trace") for row in current.rows() if "_id" in row}
    sampled, _ = current.event_ids()
    ids = list(dict.fromkeys([*first, *sampled]))[:MAX_SAMPLE_IDS]
    return ids, [str(t) for t in dict.fromkeys(traces.get(i) for i in ids) if t is not None]


def _feature_evidence(verdict: catalogue.FeatureVerdict, p_adjusted: float,
                      outside: _Outside | None) -> dict[str, Any]:
    found = {**verdict.evidence(), "p_adjusted": p_adjusted}
    if outside is not None and outside.ids:
        found["example_event_ids"] = outside.ids
        found["outside_range_sampled"] = outside.sampled
        found["outside_range_callers"] = outside.callers
    return found


@dataclass(frozen=True)
class _Outside:
    """The sampled events whose value of a feature left the reference range."""

    ids: list[str]
    """The furthest out (up to :data:`OUTSIDE_IDS`)."""
    sampled: int
    """How many sampled events were outside."""
    callers: dict[str, int]
    """The principals that sent them, most first (up to :data:`OUTSIDE_CALLERS`; events without
    a principal left out)."""

    def sentence(self, feature: str) -> str:
        """``; 41 of 58 sampled values of F outside the range came from principal:p_x`` when one
        caller sent most of them, else ``""``."""
        if not self.callers:
            return ""
        principal, n = next(iter(self.callers.items()))
        if n * 2 <= self.sampled:
            return ""
        return (f"; {n} of {self.sampled} sampled values of {feature} outside the range came from "
                f"principal:{principal}")


OUTSIDE_CALLERS = 5


def _outside(current: WindowSummary, verdict: catalogue.FeatureVerdict) -> _Outside:
    """The sampled events whose value of the verdict's feature lies outside the reference range,
    the furthest first, and who sent them: where a unit change in one client or code path, or one
    caller's unusual queries, can be traced to its sender."""
    stats = verdict.stats
    assert isinstance(stats, statistics.RangeStats)
    key, _ = split_aspect(verdict.feature)
    low, high = stats.reference_min, stats.reference_max
    rows = [(max(low - value, value - high), row) for row in current.rows()
            if isinstance(value := row.get(key), float) and "_id" in row and not low <= value <= high]
    rows.sort(key=lambda pair: (-pair[0], str(pair[1]["_id"])))
    callers = Counter(str(row["_principal"]) for _, row in rows if "_principal" in row)
    return _Outside([str(row["_id"]) for _, row in rows[:OUTSIDE_IDS]], len(rows),
                    dict(callers.most_common(OUTSIDE_CALLERS)))


class DriftDetector:
    """Input, output, text and operations drift per model (see the module docstring).

    Options (keyword only): ``reference`` "warmup" or "rolling" (a baseline set with ``inferwatch
    baseline set`` always wins); ``reference_events`` (1000); ``rolling_windows`` (60) and
    ``lag_windows`` (60); ``min_events`` per judged window (1000) and ``max_carry_windows`` (60);
    ``alpha`` (0.01) and ``correction`` "holm" or "bh"; ``multivariate`` (True), ``text`` (True),
    ``operations`` (True) with ``change_detector`` "page_hinkley", "cusum" or "adwin" and
    ``min_ops_requests`` (20); ``rebaseline_on_version`` (False); ``sample_size`` (2000);
    ``reference_sample_size`` (5000);
    ``max_models`` (1000); ``max_evidence_features`` (10); ``recent_windows`` (3: windows judged
    together when the latest alone finds nothing; 1 turns that off) and ``recent_alpha`` (0.0001:
    the level they are judged at, see :meth:`DriftJudge._recent`); ``seed`` (0).
    """

    name: ClassVar[str] = "drift"
    CHECKPOINT_SKIP: ClassVar[tuple[str, ...]] = ("publish",)  # set by the service, as built

    def __init__(
        self,
        *,
        reference: str = "warmup",
        reference_events: int = 1000,
        rolling_windows: int = 60,
        lag_windows: int = 60,
        min_events: int = 1000,
        max_carry_windows: int = 60,
        alpha: float = 0.01,
        correction: str = "holm",
        multivariate: bool = True,
        text: bool = True,
        operations: bool = True,
        change_detector: str = "page_hinkley",
        min_ops_requests: int = 20,
        rebaseline_on_version: bool = False,
        sample_size: int = 2000,
        reference_sample_size: int = 5000,
        max_models: int = 1000,
        max_evidence_features: int = 10,
        recent_windows: int = 3,
        recent_alpha: float = 0.0001,
        seed: int = 0,
    ) -> None:
        # "BH" and "Holm", as the methods are written, are the same choices
        reference, correction = str(reference).lower(), str(correction).lower()
        if reference not in ("warmup", "rolling"):
            raise ValueError(f"reference must be 'warmup' or 'rolling', got {reference!r}")
        if correction not in ("holm", "bh"):
            raise ValueError(f"correction must be 'holm' or 'bh', got {correction!r}")
        for name, level in (("alpha", alpha), ("recent_alpha", recent_alpha)):
            if not 0.0 < level < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {level}")
        minimums = {"reference_events": (reference_events, 50), "min_events": (min_events, 20),
                    "rolling_windows": (rolling_windows, 1), "lag_windows": (lag_windows, 0),
                    "max_carry_windows": (max_carry_windows, 0), "min_ops_requests": (min_ops_requests, 1),
                    "sample_size": (sample_size, 100), "max_models": (max_models, 1),
                    "reference_sample_size": (reference_sample_size, 100),
                    "max_evidence_features": (max_evidence_features, 1),
                    "recent_windows": (recent_windows, 1)}
        for option, (value, least) in minimums.items():
            if value < least:
                raise ValueError(f"{option} must be at least {least}, got {value}")
        change.build(change_detector)  # raises ValueError naming a bad choice
        self.reference = reference
        self.reference_events = reference_events
        self.rolling_windows = rolling_windows
        self.lag_windows = lag_windows
        self.min_events = min_events
        self.max_carry_windows = max_carry_windows
        self.alpha = alpha
        self.correction = correction
        self.multivariate = multivariate
        self.text = text
        self.operations = operations
        self.change_detector = change_detector
        self.min_ops_requests = min_ops_requests
        self.rebaseline_on_version = rebaseline_on_version
        self.sample_size = sample_size
        self.reference_sample_size = reference_sample_size
        self.max_models = max_models
        self.max_evidence_features = max_evidence_features
        self.recent_windows = recent_windows
        self.recent_alpha = recent_alpha
        self.seed = seed
        self.judge = DriftJudge(self)
        self.publish: Any = None
        """Set by the service in scale-out mode: ``publish(end_ts, summaries)`` sends the partial
        summaries to the summaries topic instead of judging them here."""
        self._open: dict[str, WindowSummary] = {}
        self._first: float | None = None

    def attach_store(self, keeper: ReferenceKeeper) -> None:
        """Persist references in ``keeper`` (the incident store) and load them from it."""
        self.judge.keeper = keeper

    def after_restore(self, built: dict[str, Any]) -> None:
        """After a checkpoint is restored (:mod:`inferwatch.detectors.checkpoint`): the store
        the judge reads and saves references in is the one this detector was built with. In
        scale-out mode (``publish`` set) the judge is the summary collector's, which keeps its
        own offsets on the summaries topic: it stays as built (its state is not checkpointed)."""
        if self.publish is not None:
            self.judge = built["judge"]
        else:
            self.judge.keeper = built["judge"].keeper

    def observe(self, event: InferenceEvent) -> list[Finding]:
        """Fold the event into its model's summary of the open window; a call refused as
        unauthenticated or forbidden (401, 403) never reached the model and is left out (a burst of
        them is auth_abuse's: it shifted the inputs' lengths and paged drift too)."""
        if event.status in REFUSED:
            return []
        summary = self._summary(event.model or UNKNOWN_MODEL, event.service)
        if summary is not None:
            summary.add(event)
        return []

    def observe_views(self, events: Sequence[EventView]) -> list[Finding]:
        """:meth:`observe` for a run of events inside one window (what replay's fast path calls)."""
        kept = [event for event in events if event.status not in REFUSED]
        if len(kept) != len(events):
            events = kept
            if not events:
                return []
        models = {event.model or UNKNOWN_MODEL for event in events}
        runs: Mapping[str, Sequence[EventView]]
        if len(models) == 1:  # the usual run: one model
            runs = {models.pop(): events}
        else:  # each model's events in order, models in first-seen order (as one by one)
            grouped: dict[str, list[EventView]] = {}
            for event in events:
                grouped.setdefault(event.model or UNKNOWN_MODEL, []).append(event)
            runs = grouped
        for model, run in runs.items():
            summary = self._summary(model, run[0].service)
            if summary is not None:
                summary.add_run(run)
        return []

    def _summary(self, model: str, service: str) -> WindowSummary | None:
        """``model``'s summary of the open window (new, for ``service``, at its first event);
        ``None`` once ``max_models`` models have one."""
        summary = self._open.get(model)
        if summary is None and len(self._open) < self.max_models:
            summary = self._open[model] = WindowSummary(model, service=service, k=self.sample_size)
        return summary

    def take_window(self, end_ts: float) -> dict[str, WindowSummary]:
        """The open window's summaries (now closed), for judging here or publishing."""
        summaries, self._open = self._open, {}
        for summary in summaries.values():
            summary.end = end_ts
            summary.seal(textstats.script_and_language, textstats.ngram_hashes if self.text else None)
        return summaries

    def finish(self, end: datetime) -> list[Finding]:
        """End of input: judge what each model carries over (windows short of ``min_events``) at
        ``alpha`` x events / ``min_events``, rather than leave it unjudged. In scale-out mode the
        judging, and so this, is the summary collector's (:meth:`SummaryCollector.finish`)."""
        if self.publish is not None:
            return []
        return self.judge.finish(end.timestamp())

    def close_window(self, end: datetime) -> list[Finding]:
        """Judge the window's summaries (or hand them to ``publish`` in scale-out mode)."""
        end_ts = end.timestamp()
        summaries = self.take_window(end_ts)
        if self.publish is not None:
            self.publish(end_ts, summaries)
            return []
        return self.judge.judge(end_ts, summaries)


def _read_only(array: FloatArray) -> FloatArray:
    # Kept in a reference's memo and handed to every window's comparison: nothing may change it.
    array.flags.writeable = False
    return array


def _by_feature(names: Sequence[str]) -> dict[str, list[str]]:
    """Drifted tests grouped by the feature they test, strongest first: ``input.x`` and
    ``input.x (location)`` are one feature with the aspects ``distribution`` and ``location``."""
    out: dict[str, list[str]] = {}
    for name in names:
        key, suffix = (name, None) if name in CLASSIFIERS else split_aspect(name)
        out.setdefault(key, []).append("distribution" if suffix is None else ASPECTS[suffix])
    return out


VERSION_SHARE = 0.1
"""Share of a window's events of other model versions than the reference's from which a drift
finding names them (a lasting 1 % canary is no explanation of every drift)."""


def _versions_sentence(reference: Reference, current: WindowSummary, rebaseline: bool) -> str:
    """``. 100% of the window's events are of model version 2, the reference of version 1: …``,
    or ``""`` when the reference has no version or other versions are under :data:`VERSION_SHARE`."""
    others = sorted((v for v in current.versions if v != reference.version),
                    key=lambda v: (-current.versions[v], v))
    share = sum(current.versions[v] for v in others) / max(current.events, 1)
    if reference.version is None or not others or share < VERSION_SHARE:
        return ""
    named = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    sentence = (f". {share:.0%} of the window's events are of model version {named}, the reference of "
                f"version {reference.version}")
    if reference.source == "rolling":
        return sentence + " (a rolling reference takes the new version in as it lags behind)"
    if rebaseline:
        return sentence + " (re-baselined once it is the dominant one)"
    return sentence + (": a new version explains drift; if it is expected, set its baseline (`inferwatch "
                       "baseline set --model-version V`) or `rebaseline_on_version`")


UNSEEN = "(unseen)"
"""A categorical feature's unseen share in a judged window's leans: ``input.zone (unseen)``."""
UNSEEN_HISTORY = 3
"""Judged windows a feature's recent unseen share needs before its unseen excess counts."""


def _unseen_before(recent: Sequence[tuple[WindowSummary, Mapping[str, float]]]) -> dict[str, float]:
    """Each categorical feature's highest unseen share over the last judged windows, for those
    with at least :data:`UNSEEN_HISTORY` of them: what its values are like to bring anew when
    nothing changed (a session's user ids, a day's trending items, which no reference predicts).

    >>> _unseen_before([(None, {"input.zone (unseen)": u}) for u in (0.5, 0.6, 0.55)])
    {'input.zone': 0.6}
    >>> _unseen_before([(None, {"input.zone (unseen)": 0.5})])
    {}
    """
    seen: dict[str, list[float]] = {}
    for _, leans in recent:
        for name, share in leans.items():
            if name.endswith(UNSEEN):
                seen.setdefault(name.removesuffix(" " + UNSEEN), []).append(share)
    return {key: max(shares) for key, shares in seen.items() if len(shares) >= UNSEEN_HISTORY}


def _disjoint_inputs(ref_keys: Mapping[str, str], cur_keys: Mapping[str, str]) -> tuple[str, str] | None:
    """``(reference's inputs, traffic's inputs)`` named, when the two share no input feature
    though both have some (a baseline file whose column names are not the model's), else None."""
    ref = sorted(k.removeprefix("input.") for k in ref_keys if k.startswith("input."))
    cur = sorted(k.removeprefix("input.") for k in cur_keys if k.startswith("input."))
    if not ref or not cur or set(ref) & set(cur):
        return None
    from inferwatch.detectors.drift.reference import listed

    return listed(ref), listed(cur)


_CLASSIFIER_WORDS = {ROWS_CLASSIFIER: "the inputs taken together", TEXT_CLASSIFIER: "the prompts' n-grams"}


def _what_shifted(features: dict[str, list[str]]) -> str:
    """``2 features shifted (input.x, input.y)``, ``the inputs taken together shifted``, or both:
    a domain classifier is a test of several features at once, not one more feature.

    >>> _what_shifted({"input.x": ["distribution"], ROWS_CLASSIFIER: ["distribution"]})
    '1 feature shifted (input.x), and the inputs taken together'
    >>> _what_shifted({ROWS_CLASSIFIER: ["distribution"]})
    'the inputs taken together shifted'
    """
    named = [(f, a) for f, a in features.items() if f not in CLASSIFIERS]
    together = " and ".join(_CLASSIFIER_WORDS[f] for f in features if f in CLASSIFIERS)
    if not named:
        return f"{together} shifted"
    listed = ", ".join(_named(f, a) for f, a in named[:SUMMARY_FEATURES])
    more = ", ..." if len(named) > SUMMARY_FEATURES else ""
    plural = "s" if len(named) > 1 else ""
    also = f", and {together}" if together else ""
    return f"{len(named)} feature{plural} shifted ({listed}{more}){also}"


def _named(feature: str, aspects: Sequence[str]) -> str:
    """``input.x`` when only its distribution drifted, else ``input.x (location, range)``."""
    return feature if feature in CLASSIFIERS or list(aspects) == ["distribution"] \
        else f"{feature} ({', '.join(aspects)})"


def _describe(verdict: catalogue.FeatureVerdict, p_adjusted: float) -> str:
    return f"{verdict.describe()} (p_adj {p_adjusted:.1e})"


def _severity(strength: float, drifted: int) -> Severity:
    # strength: the top effect as a multiple of its floor.
    if strength >= 4.0 or (strength >= 2.0 and drifted >= 3):
        return "high"
    if strength >= 2.0 or drifted >= 3:
        return "medium"
    return "low"
