"""Behavioural anomaly: callers whose traffic looks unlike everyone else's, by IsolationForest.

Per caller (the principal, else the client address) the detector keeps running sums; once a
caller has ``min_requests`` requests, the next window close turns them into one *row* of eleven
features (:mod:`.behaviour_features`) and starts a new row. A heavy caller gives a row every
window; a light one after as many windows as it takes, within ``max_span_s`` (a row still short
of ``min_requests`` by then is dropped unjudged). The features:

================================  ============================================================
``requests_per_minute``           requests over the row's span (at least a minute), log1p
``input_chars_mean`` / ``_max``   input characters, log1p
``output_chars_mean``             output characters, log1p
``error_ratio``                   share of requests with status >= 400
``token_ratio``                   output / (input + 32 per request) tokens (chars / 4 if not counted)
``distinct_input_ratio``          distinct inputs / requests, over the row's first 128 requests
``injection_score``               mean prompt-injection pattern score (when text is captured)
``truncated_ratio``               share of outputs with ``finish_reason`` ``length``
``hour_sin``, ``hour_cos``        hour of day (UTC) of the row's first request
================================  ============================================================

An ``IsolationForest`` (scikit-learn) fitted on a bounded buffer of earlier rows scores the
window's rows all at once (anomaly score 0-1; about 0.5 is unremarkable). A row is flagged when

* its score reaches the **threshold**: the ``1 - max_flag_rate`` quantile of the forest's
  scores of its own training rows plus ``score_margin`` (and at least 0.55). The quantile
  adapts to how varied ordinary behaviour is; the margin keeps its tail quiet, so steady
  benign traffic normally gives no findings rather than ``max_flag_rate`` of them; or
* one feature lies **far outside the ordinary range** of training rows of its kind (callers
  sending text, or not; the range is their 1-99 % quantiles): an amount (requests, characters,
  token ratio) about ``range_factor`` times above the range or below it, or a ratio (errors,
  distinct inputs, injection score, truncation) ``range_excess`` or more beyond it. A forest
  cannot see how far out a value is: beyond the last training row it follows the same branches
  as that row, so a caller with ten times anyone's error ratio would score no higher than the
  most erratic ordinary caller.

The finding names the features that made the caller stand out (:mod:`.behaviour_explain`),
e.g. ``input chars mean 5,900 (typical 120, p95 400); error ratio 0.60 (typical 0.00, p95
0.02)``: first those outside the ordinary range, then those whose typical value lowers the
score most (each feature set in turn to the training median, all rows scored in one call),
then those with a robust z-score of 3 or more.

Behaviour worth knowing:

* **Warm-up.** Nothing is judged until ``warmup_windows`` windows have closed and the buffer
  holds ``min_training_rows`` rows; the forest is refitted every ``refit_windows`` windows after
  that, with ``seed``, so a replay of the same events gives the same findings.
* **Training buffer.** At most ``buffer_rows`` rows, a reservoir that forgets: once full, it
  holds rows from about the last ``memory_windows`` windows (an old row survives a window with
  probability about ``1 - 1/memory_windows``), so the model follows slow change in the
  population. Reported rows are kept out, so a persistent odd caller keeps being reported; rows
  above the threshold beyond the ``max_findings`` reported in a window (a population-wide
  change) are learnt.
* **A new kind of caller.** A caller sending text when fewer than ``MIN_KIND_ROWS`` training
  rows do (or none when fewer do not) is learnt, not judged, until a refit has its kind.
* **Hour of day** is a population feature: activity in an hour when the population is rarely
  active adds to a caller's score. The forest only gets it once the detector has seen a day of
  event time; before that, every new hour would be one it has never seen.
* **Which rule fires.** In the project's caller scenarios and synthetic populations the range
  rule carried every true finding; the forest separates benign minorities (a tabular client
  with a few errors) from the crowd about as well as it separates joint outliers, so its own
  rule is kept for clear cases only (``score_margin``), and its scores rank the findings and
  explain them (the score drop when a feature is set to its typical value).
* **Cost.** :meth:`BehaviourAnomalyDetector.observe` updates sums in flat arrays. Injection
  scanning (the patterns of :mod:`.prompt_injection`, 1,000 characters of a text at most)
  covers a row's texts 1, 2, 4, 8, 16...: 5 scans for 30 texts, 10 for 1,000, the mean taken
  over those. The distinct-input count covers a row's first 128 requests. Scoring, explaining
  and fitting happen at window close, vectorised.

State: per caller, 13 single-precision sums and a 128-bit bitmap (68 bytes) in flat arrays,
keyed through a ``RowIndex`` of at most ``max_principals`` callers (least recently seen
evicted first) that forgets callers idle for ``max_span_s``: about 160 bytes per caller in all,
key excepted; a row that reaches ``min_requests // 2`` requests (or an injection-like text)
also holds the ids of three sample events (about 140 bytes more). The training buffer is
``buffer_rows`` x 11 doubles (1.8 MB at the default), the forest ``n_estimators`` trees of at
most 511 nodes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from inferwatch.collectors.event import InferenceEvent
from inferwatch.detectors.base import Finding, Severity
from inferwatch.detectors.behaviour_explain import TrainingStats
from inferwatch.detectors.behaviour_features import FEATURES, WIDTH, CallerRows, FloatArray, row_features
from inferwatch.detectors.state import IdSample, iso_utc, window_finding

MIN_THRESHOLD = 0.55
"""Anomaly scores below this are never flagged, whatever the training rows look like."""
MIN_KIND_ROWS = 20
"""Training rows of a caller's kind (sending text, or not) before callers of that kind are judged:
a kind the forest has (almost) never seen, such as chat callers of an endpoint added beside a
tabular model, is learnt first; judged at once, all of them stood out, and being reported they
were never learnt (an ML engineer's walk-through)."""
MAX_SAMPLES = 256
TEXT_COLUMN = next(i for i, feature in enumerate(FEATURES) if feature.name == "input_chars_mean")
"""The feature that tells callers sending text (above 0) from those sending none."""
MIN_GAIN = 0.01
"""A feature whose typical value lowers the score by less than this is not credited for it."""
MIN_Z = 3.0
STAND_OUT = 3
HOUR_AFTER_S = 86_400.0
"""Event time the detector must have seen before the hour of day is given to the forest: before
a day has gone by, every new hour is one the training rows have never seen."""


def _blank_hours(features: FloatArray) -> FloatArray:
    blanked = features.copy()
    blanked[..., len(FEATURES):] = 0.0
    return blanked


@dataclass(frozen=True)
class _Model:
    forest: Any
    threshold: float
    quantile: float
    stats: TrainingStats
    rows: int
    fitted_at: float
    use_hour: bool
    train: FloatArray
    """The rows it was fitted on: a restored detector refits the very same forest from them."""

    CHECKPOINT_SKIP: ClassVar[tuple[str, ...]] = ("forest",)  # a scikit-learn object: refitted

    def input(self, features: FloatArray) -> FloatArray:
        """The features as the forest sees them: the hour columns blanked until it uses them."""
        return features if self.use_hour else _blank_hours(features)

    def scores(self, features: FloatArray) -> FloatArray:
        """Anomaly scores (0-1, higher is stranger) of rows of features, in one call."""
        return np.asarray(-self.forest.score_samples(self.input(features)), dtype=np.float64)


class _DecayingReservoir:
    """At most ``capacity`` rows; once full, a new row replaces a random one with probability
    ``capacity / seen``, where ``seen`` decays by ``1 - 1/memory`` per window: a reservoir over
    roughly the last ``memory`` windows rather than over all history."""

    def __init__(self, capacity: int, width: int, memory: int, rng: random.Random) -> None:
        self.capacity = capacity
        self.rows = np.zeros((0, width), dtype=np.float64)
        self.size = 0
        self.seen = 0.0
        self._decay = 1.0 - 1.0 / memory
        self._rng = rng

    def add_window(self, rows: FloatArray) -> None:
        """Offer one window's rows."""
        self.seen *= self._decay
        for row in rows:
            self.seen += 1.0
            if self.size < self.capacity:
                if self.size == len(self.rows):  # grow by doubling up to capacity
                    grown = np.zeros((min(self.capacity, max(64, 2 * self.size)), self.rows.shape[1]))
                    grown[: self.size] = self.rows
                    self.rows = grown
                self.rows[self.size] = row
                self.size += 1
            elif self._rng.random() * self.seen < self.capacity:
                self.rows[self._rng.randrange(self.capacity)] = row

    def values(self) -> FloatArray:
        """The rows held (a view)."""
        return self.rows[: self.size]


class BehaviourAnomalyDetector:
    """Per-caller behaviour rows scored by an IsolationForest fitted on the population's history.

    Options (keyword only): ``min_requests`` per row (20); ``max_span_s`` a row may take to fill,
    also the idle time after which a caller is forgotten (3600); ``warmup_windows`` (10);
    ``min_training_rows`` (500); ``refit_windows`` (60); ``buffer_rows`` (20_000);
    ``memory_windows`` (1440); ``n_estimators`` (100); ``max_flag_rate`` (0.01);
    ``score_margin`` (0.15); ``range_factor`` (4.0); ``range_excess`` (0.2); ``max_findings`` per
    window (10); ``seed``
    (0); ``max_principals`` (100_000).

    >>> detector = BehaviourAnomalyDetector()
    >>> detector.name, detector.min_requests, detector.fitted
    ('behaviour_anomaly', 20, False)
    """

    name: ClassVar[str] = "behaviour_anomaly"

    def __init__(
        self,
        *,
        min_requests: int = 20,
        max_span_s: float = 3600.0,
        warmup_windows: int = 10,
        min_training_rows: int = 500,
        refit_windows: int = 60,
        buffer_rows: int = 20_000,
        memory_windows: int = 1440,
        n_estimators: int = 100,
        max_flag_rate: float = 0.01,
        score_margin: float = 0.15,
        range_factor: float = 4.0,
        range_excess: float = 0.2,
        max_findings: int = 10,
        seed: int = 0,
        max_principals: int = 100_000,
    ) -> None:
        for option, value, least in (("min_requests", min_requests, 2), ("warmup_windows", warmup_windows, 0),
                                     ("refit_windows", refit_windows, 1), ("n_estimators", n_estimators, 1),
                                     ("memory_windows", memory_windows, 1), ("max_findings", max_findings, 1),
                                     ("max_principals", max_principals, 1)):
            if value < least:
                raise ValueError(f"{option} must be at least {least}, got {value}")
        if not 2 <= min_training_rows <= buffer_rows:
            raise ValueError(f"min_training_rows must be in [2, buffer_rows={buffer_rows}], "
                             f"got {min_training_rows}")
        if max_span_s <= 0:
            raise ValueError(f"max_span_s must be positive, got {max_span_s}")
        if not 0.0 < max_flag_rate < 0.5:
            raise ValueError(f"max_flag_rate must be in (0, 0.5), got {max_flag_rate}")
        if not 0.0 <= score_margin < 0.5:
            raise ValueError(f"score_margin must be in [0, 0.5), got {score_margin}")
        if range_factor <= 1.0:
            raise ValueError(f"range_factor must be above 1, got {range_factor}")
        if not 0.0 < range_excess <= 1.0:
            raise ValueError(f"range_excess must be in (0, 1], got {range_excess}")
        self.min_requests = min_requests
        self.max_span_s = max_span_s
        self.warmup_windows = warmup_windows
        self.min_training_rows = min_training_rows
        self.refit_windows = refit_windows
        self.n_estimators = n_estimators
        self.max_flag_rate = max_flag_rate
        self.score_margin = score_margin
        self.range_factor = range_factor
        self.range_excess = range_excess
        self._tolerance = np.array([math.log(range_factor) if f.log else range_excess for f in FEATURES])
        self.max_findings = max_findings
        self.seed = seed
        self.max_principals = max_principals
        self.unattributed = 0
        """Requests with neither a principal nor a client address."""
        self.suppressed = 0
        """Rows over the threshold not reported because a window already had ``max_findings``."""
        self.stale_rows = 0
        """Rows dropped unjudged: fewer than ``min_requests`` requests within ``max_span_s``."""
        self.unjudged_new_kind = 0
        """Rows learnt unjudged: their kind had fewer than ``MIN_KIND_ROWS`` training rows."""
        self._buffer = _DecayingReservoir(buffer_rows, WIDTH, memory_windows, random.Random(seed))
        self._rows = CallerRows(max_principals, max_span_s, sample_from=max(1, min_requests // 2))
        self._model: _Model | None = None
        self._windows_closed = 0
        self._last_fit_window = 0
        self._first_end: float | None = None

    @property
    def fitted(self) -> bool:
        """Whether a model is in place (warm-up is over)."""
        return self._model is not None

    @property
    def training_rows(self) -> int:
        """Rows in the training buffer."""
        return self._buffer.size

    @property
    def principals_tracked(self) -> int:
        """Callers (principals and addresses) whose running sums are held."""
        return len(self._rows)

    @property
    def evicted(self) -> int:
        """Callers dropped because ``max_principals`` were held (least recently seen first)."""
        return self._rows.index.evicted

    @property
    def expired(self) -> int:
        """Callers dropped after ``max_span_s`` of event-time idleness."""
        return self._rows.index.expired

    def observe(self, event: InferenceEvent) -> list[Finding]:
        """Add the request to its caller's running sums; findings come at window close."""
        if not self._rows.add(event):
            self.unattributed += 1
        return []

    def close_window(self, end: datetime) -> list[Finding]:
        """Judge every caller whose row is complete at ``end``, learn from the rows, refit when due."""
        end_ts = end.timestamp()
        self._windows_closed += 1
        if self._first_end is None:
            self._first_end = end_ts
        complete = self._rows.complete(self.min_requests)
        features = row_features(self._rows, complete, end_ts)
        findings: list[Finding] = []
        reported = np.zeros(len(complete), dtype=bool)
        if self._model is not None and complete:
            findings, reported = self._judge(self._model, complete, features, end_ts)
        self._rows.reset(complete)
        stale = self._rows.stale(end_ts - self.max_span_s)
        self.stale_rows += len(stale)
        self._rows.reset(stale)
        self._rows.expire(end_ts)
        self._buffer.add_window(features[~reported])
        self._maybe_fit(end_ts)
        return findings

    def _maybe_fit(self, end_ts: float) -> None:
        due = self._model is None or self._windows_closed - self._last_fit_window >= self.refit_windows
        ready = self._windows_closed >= self.warmup_windows and self._buffer.size >= self.min_training_rows
        if not (due and ready):
            return
        train = self._buffer.values().copy()
        use_hour = self._first_end is not None and end_ts - self._first_end >= HOUR_AFTER_S
        stats = TrainingStats.of(train, self._tolerance)
        model = _Model(self._forest(train, use_hour), 1.0, 1.0, stats, len(train), end_ts, use_hour, train)
        quantile = float(np.quantile(model.scores(train), 1.0 - self.max_flag_rate))
        threshold = max(quantile + self.score_margin, MIN_THRESHOLD)
        self._model = replace(model, threshold=threshold, quantile=quantile)
        self._last_fit_window = self._windows_closed

    def _forest(self, train: FloatArray, use_hour: bool) -> Any:
        from sklearn.ensemble import IsolationForest  # only the detector service pays for the import

        forest = IsolationForest(n_estimators=self.n_estimators, max_samples=min(MAX_SAMPLES, len(train)),
                                 random_state=self.seed)
        blanked = train if use_hour else _blank_hours(train)
        return forest.fit(blanked)

    def after_restore(self, built: dict[str, Any]) -> None:
        """After a checkpoint is restored: refit the forest (not checkpointed) from the rows it was
        fitted on, with the same seed, so it scores as the one before the restart did."""
        model = self._model
        if model is not None and model.forest is None:
            object.__setattr__(model, "forest", self._forest(model.train, model.use_hour))

    def _judge(self, model: _Model, complete: list[int], features: FloatArray,
               end_ts: float) -> tuple[list[Finding], npt.NDArray[np.bool_]]:
        scores = model.scores(features)
        beyond = model.stats.beyond(features)
        furthest = beyond.max(axis=1)
        strength = np.maximum(scores, furthest / (furthest + 1.0))
        texts = int(np.count_nonzero(model.train[:, TEXT_COLUMN] > 0))
        known = np.where(features[:, TEXT_COLUMN] > 0, texts >= MIN_KIND_ROWS,
                         len(model.train) - texts >= MIN_KIND_ROWS)
        self.unjudged_new_kind += int(np.count_nonzero(~known))
        above = np.flatnonzero(((scores >= model.threshold) | (furthest >= 1.0)) & known)
        # Strongest first; the row order breaks ties so a replay reports the same callers.
        order = above[np.lexsort((above, -strength[above]))]
        kept = order[: self.max_findings]
        self.suppressed += len(order) - len(kept)
        reported = np.zeros(len(complete), dtype=bool)
        reported[kept] = True
        if not len(kept):
            return [], reported
        without = _scores_without(model, features[kept])
        findings = [self._finding(model, complete[i], features[i], float(scores[i]), float(strength[i]),
                                  float(scores[i]) - without[k], beyond[i], len(complete), end_ts)
                    for k, i in enumerate(kept)]
        return findings, reported

    def _finding(self, model: _Model, row: int, x: FloatArray, score: float, strength: float,
                 gains: FloatArray, beyond: FloatArray, judged: int, end_ts: float) -> Finding:
        rows = self._rows
        stand_out = model.stats.stand_out(x, gains, beyond, min_gain=MIN_GAIN, min_z=MIN_Z, limit=STAND_OUT)
        subject, requests = rows.subject(row), rows.requests(row)
        bounds = (min(math.floor(rows.first_ts(row)), end_ts), end_ts)  # single precision: whole seconds
        furthest = float(beyond.max())
        ids = IdSample()
        for event_id, trace_id in rows.exemplar_ids(row):
            ids.add_ids(event_id, trace_id)
        labels = ", ".join(item["label"] for item in stand_out) or "several features together"
        if score >= model.threshold or not stand_out:
            rule = f"anomaly score {score:.2f}, threshold {model.threshold:.2f}"
        else:  # stand_out lists the features outside the ordinary range first
            top = stand_out[0]
            low, high = top["ordinary_range"]
            rule = f"{top['label']} outside the ordinary range {low:,}-{high:,}; anomaly score {score:.2f}"
        described = "; ".join(item["text"] for item in stand_out) or "no single feature stands out"
        return window_finding(
            self.name,
            subject=subject,
            bounds=bounds,
            service=rows.service(row),
            models=rows.models(row),
            ids=ids,
            severity=_severity(score - model.threshold, furthest),
            score=round(min(strength, 1.0), 4),
            title=f"Unusual behaviour from {subject}: {labels}",
            summary=f"{subject} stood out among {judged} callers judged at {iso_utc(end_ts)} ({rule}) over "
            f"{requests:,} requests from {iso_utc(bounds[0])}: {described}",
            evidence=self._evidence(model, row, x, score, strength, furthest, stand_out, judged),
        )

    def _evidence(self, model: _Model, row: int, x: FloatArray, score: float, strength: float,
                  furthest: float, stand_out: list[dict[str, Any]], judged: int) -> dict[str, Any]:
        return {
            "anomaly_score": round(score, 4),
            "strength": round(strength, 4),
            "threshold": round(model.threshold, 4),
            "training_quantile": round(model.quantile, 4),
            "rule": "score over threshold" if score >= model.threshold else "outside ordinary range",
            "beyond_ordinary": round(furthest, 2),
            "requests": self._rows.requests(row),
            "stand_out": [{k: v for k, v in item.items() if k != "text"} for item in stand_out],
            "features": model.stats.natural(x),
            "rows_judged": judged,
            "exemplars": self._rows.exemplar_roles(row),
            "compared_with": "callers sending text" if x[TEXT_COLUMN] > 0 else "callers sending no text",
            "model": {"training_rows": model.rows, "fitted_at": iso_utc(model.fitted_at),
                      "n_estimators": self.n_estimators, "seed": self.seed, "uses_hour": model.use_hour},
            "thresholds": {"max_flag_rate": self.max_flag_rate, "score_margin": self.score_margin,
                           "range_factor": self.range_factor, "range_excess": self.range_excess,
                           "min_threshold": MIN_THRESHOLD, "min_requests": self.min_requests},
        }


def _scores_without(model: _Model, rows: FloatArray) -> FloatArray:
    """Anomaly scores of each row with each feature in turn at its typical value, in one call:
    shape ``(len(rows), features + 1)``, the last column for the hour."""
    variants = model.stats.substitutions(rows)
    return model.scores(variants.reshape(-1, rows.shape[1])).reshape(len(rows), -1)


def _severity(excess: float, beyond: float) -> Severity:
    # Unusual is not malicious: the furthest outliers are "high", never "critical".
    if excess >= 0.12 or beyond >= 4:
        return "high"
    if excess >= 0.05 or beyond >= 2:
        return "medium"
    return "low"
