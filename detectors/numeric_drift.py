"""Numeric input drift per (model, feature) against a warm-up reference.

The first ``reference_size`` events of each model that carry numeric features become that
model's reference. After that, every closed window compares each feature's window values with
its reference. A feature has drifted when all three hold:

* the two-sample Kolmogorov-Smirnov test is significant after Holm correction across the
  features tested for that model in that window (``p_holm < alpha``): the change is not noise;
* the KS statistic ``D >= ks_floor``: the change is large enough to matter. With big windows
  a p-value alone flags shifts nobody cares about; the floor is what keeps a stationary
  high-traffic model silent;
* the population stability index on the reference's quantile bins ``PSI >= psi_threshold``:
  the shift moves real probability mass between bins, the yardstick data teams already use.

A feature with fewer than ``min_window`` values in a window is not tested; its values carry
over into the next window until there are enough, so low traffic is still tested, only less
often. Window values are kept in a seeded reservoir sample (``max_window_values``), models and
features are capped, so memory is bounded whatever the traffic.

Scope of this first version: the reference is frozen once filled (no re-baselining yet); only
features with at least ``min_window`` values in the reference are tracked (a feature that
appears later is a schema change for another detector); events without a model name are
grouped as model ``unknown``; when ``max_models`` is reached the least recently seen model's
state is dropped and, if it returns, it warms up again.

Example::

    detector = NumericDriftDetector(reference_size=500, min_window=100)
    for event in events:                 # roughly in event-time order
        findings += detector.observe(event)
    findings += detector.close_window(window_end)
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, ClassVar

import numpy as np
from scipy.stats import ks_2samp

from inferwatch.collectors.event import InferenceEvent, Scalar
from inferwatch.detectors.base import Finding, Severity
from inferwatch.detectors.state import BoundedState, IdSample, WindowBounds, iso_utc
from inferwatch.detectors.stats import (
    FloatArray,
    IntArray,
    Reservoir,
    bin_counts,
    holm_adjust,
    mean_std,
    psi,
    quantile_edges,
)

UNKNOWN_MODEL = "unknown"
SUMMARY_FEATURES = 3
"""Drifted features spelled out in a finding's summary; the evidence holds up to ``max_evidence_features``."""


@dataclass(frozen=True)
class FeatureReference:
    """One feature's frozen reference: sorted values, quantile bins and their counts."""

    values: FloatArray
    edges: FloatArray
    counts: IntArray
    mean: float
    std: float

    @classmethod
    def build(cls, values: list[float], bins: int) -> FeatureReference:
        """Freeze a warm-up sample into a reference on ``bins`` quantile bins."""
        array = np.sort(np.asarray(values, dtype=np.float64))
        edges = quantile_edges(array, bins)
        mean, std = mean_std(array)
        return cls(values=array, edges=edges, counts=bin_counts(array, edges), mean=mean, std=std)


@dataclass(frozen=True)
class FeatureTest:
    """The comparison of one feature's window with its reference."""

    feature: str
    ks_d: float
    p_value: float
    psi: float
    n_current: int
    sampled: int
    current_mean: float
    current_std: float
    current_counts: IntArray
    window_start: float
    p_holm: float = 1.0

    def drifted(self, alpha: float, ks_floor: float, psi_threshold: float) -> bool:
        """All three conditions of the module docstring hold."""
        return self.p_holm < alpha and self.ks_d >= ks_floor and self.psi >= psi_threshold

    def evidence(self, reference: FeatureReference) -> dict[str, Any]:
        """JSON-ready statistics, reference vs current, for a finding."""
        return {
            "ks_d": round(self.ks_d, 4),
            "p_value": self.p_value,
            "p_holm": self.p_holm,
            "psi": round(self.psi, 4),
            "reference": {"n": len(reference.values), "mean": reference.mean, "std": reference.std},
            "current": {
                "n": self.n_current,
                "sampled": self.sampled,
                "mean": self.current_mean,
                "std": self.current_std,
            },
            "histogram": {
                "inner_edges": [float(e) for e in reference.edges],
                "reference_counts": [int(c) for c in reference.counts],
                "current_counts": [int(c) for c in self.current_counts],
            },
            "first_value": iso_utc(self.window_start),
        }


@dataclass
class _ModelState:
    service: str
    warmup_events: int = 0
    warmup: dict[str, list[float]] = field(default_factory=dict)
    reference: dict[str, FeatureReference] | None = None
    window: dict[str, Reservoir] = field(default_factory=dict)
    window_start: dict[str, float] = field(default_factory=dict)
    ids: IdSample = field(default_factory=IdSample)


class NumericDriftDetector:
    """KS + PSI drift of numeric input features per model, with Holm correction across features.

    Options (keyword only): ``reference_size`` events per model in the warm-up reference (500);
    ``min_window`` values of a feature before a window is tested (100); ``ks_floor`` minimum KS
    statistic (0.1); ``alpha`` family-wise error rate per model and window (0.01);
    ``psi_threshold`` (0.2); ``bins`` quantile bins for PSI and histograms (10);
    ``max_window_values`` reservoir size per feature (10_000); ``max_models`` (1_000);
    ``max_features`` per model (200); ``max_evidence_features`` (10); ``seed`` (0).
    """

    name: ClassVar[str] = "numeric_drift"

    def __init__(
        self,
        *,
        reference_size: int = 500,
        min_window: int = 100,
        ks_floor: float = 0.1,
        alpha: float = 0.01,
        psi_threshold: float = 0.2,
        bins: int = 10,
        max_window_values: int = 10_000,
        max_models: int = 1_000,
        max_features: int = 200,
        max_evidence_features: int = 10,
        seed: int = 0,
    ) -> None:
        if reference_size < min_window:
            raise ValueError(
                f"reference_size ({reference_size}) must be at least min_window ({min_window}) "
                "or no feature could ever be tested"
            )
        if min_window < 2 or not 0.0 < alpha < 1.0 or bins < 2:
            raise ValueError("need min_window >= 2, 0 < alpha < 1 and bins >= 2")
        self.reference_size = reference_size
        self.min_window = min_window
        self.ks_floor = ks_floor
        self.alpha = alpha
        self.psi_threshold = psi_threshold
        self.bins = bins
        self.max_window_values = max_window_values
        self.max_features = max_features
        self.max_evidence_features = max_evidence_features
        self._rng = random.Random(seed)
        self._models: BoundedState[str, _ModelState] = BoundedState(max_keys=max_models)
        self._bounds = WindowBounds()
        self._window_first: float | None = None

    def observe(self, event: InferenceEvent) -> list[Finding]:
        """Add the event's numeric features to its model's reference or current window."""
        numeric = _numeric_features(event.input.features)
        if not numeric:
            return []
        model = event.model or UNKNOWN_MODEL
        if self._window_first is None:
            self._window_first = event.ts
        state = self._models.get_or_create(model, event.ts, lambda: _ModelState(service=event.service))
        state.service = event.service
        if state.reference is None:
            self._add_warmup(state, numeric)
            return []
        for feature, value in numeric.items():
            if feature not in state.reference:
                continue
            reservoir = state.window.get(feature)
            if reservoir is None:
                reservoir = state.window[feature] = Reservoir(self.max_window_values, self._rng)
                state.window_start[feature] = event.ts
            reservoir.add(value)
        state.ids.add(event)
        return []

    def close_window(self, end: datetime) -> list[Finding]:
        """Test every model's features that have ``min_window`` values; one finding per model."""
        end_ts = end.timestamp()
        start_ts = self._bounds.close(end_ts, self._window_first)
        self._window_first = None
        findings = []
        for model, state in self._models.items():
            finding = self._test_model(model, state, (start_ts, end_ts))
            if finding is not None:
                findings.append(finding)
        return findings

    @property
    def models_evicted(self) -> int:
        """Models whose state was dropped because ``max_models`` was reached."""
        return self._models.evicted

    def _add_warmup(self, state: _ModelState, numeric: dict[str, float]) -> None:
        for feature, value in numeric.items():
            values = state.warmup.get(feature)
            if values is None:
                if len(state.warmup) >= self.max_features:
                    continue
                values = state.warmup[feature] = []
            values.append(value)
        state.warmup_events += 1
        if state.warmup_events >= self.reference_size:
            # A feature seen in fewer than min_window reference events cannot be compared
            # meaningfully; it is left to schema/categorical checks, not tested here.
            state.reference = {
                feature: FeatureReference.build(values, self.bins)
                for feature, values in state.warmup.items()
                if len(values) >= self.min_window
            }
            state.warmup = {}

    def _test_model(self, model: str, state: _ModelState, bounds: tuple[float, float]) -> Finding | None:
        if state.reference is None:
            return None
        ready = [f for f, r in state.window.items() if r.seen >= self.min_window]
        if not ready:
            return None
        raw = [self._compare(f, state.reference[f], state.window.pop(f), state.window_start.pop(f))
               for f in ready]
        adjusted = holm_adjust([t.p_value for t in raw])
        tests = [replace(t, p_holm=p) for t, p in zip(raw, adjusted, strict=True)]
        drifted = sorted(
            (t for t in tests if t.drifted(self.alpha, self.ks_floor, self.psi_threshold)),
            key=lambda t: t.ks_d,
            reverse=True,
        )
        ids = IdSample(event_ids=list(state.ids.event_ids), trace_ids=list(state.ids.trace_ids))
        state.ids.clear()
        if not drifted:
            return None
        return self._finding(model, state.service, state.reference, drifted, len(tests), bounds, ids)

    def _compare(self, feature: str, reference: FeatureReference, window: Reservoir,
                 start: float) -> FeatureTest:
        current = window.values()
        result = ks_2samp(reference.values, current)
        mean, std = mean_std(current)
        counts = bin_counts(current, reference.edges)
        return FeatureTest(
            feature=feature,
            ks_d=float(result.statistic),
            p_value=float(result.pvalue),
            psi=psi(reference.counts, counts),
            n_current=window.seen,
            sampled=len(current),
            current_mean=mean,
            current_std=std,
            current_counts=counts,
            window_start=start,
        )

    def _finding(self, model: str, service: str, reference: dict[str, FeatureReference],
                 drifted: list[FeatureTest], tested: int, bounds: tuple[float, float],
                 ids: IdSample) -> Finding:
        top = drifted[0]
        names = [t.feature for t in drifted]
        shown = "; ".join(_describe(t, reference[t.feature], self) for t in drifted[:SUMMARY_FEATURES])
        more = len(drifted) - SUMMARY_FEATURES
        plural = "s" if len(drifted) > 1 else ""
        return Finding(
            detector=self.name,
            kind="drift",
            severity=_severity(top.ks_d),
            score=min(1.0, round(top.ks_d, 4)),
            title=f"Input drift on model {model}: {len(drifted)} feature{plural} shifted "
            f"({', '.join(names[:SUMMARY_FEATURES])})",
            summary=shown + (f"; and {more} more" if more > 0 else ""),
            subject=f"model:{model}",
            time=datetime.fromtimestamp(bounds[1], UTC),
            service=service,
            model=model,
            evidence={
                # Values of a quiet feature may have been carried over from earlier windows.
                "window_start": iso_utc(min([bounds[0]] + [t.window_start for t in drifted])),
                "window_end": iso_utc(bounds[1]),
                "features_tested": tested,
                "features_drifted": names,
                "thresholds": {"alpha": self.alpha, "ks_floor": self.ks_floor,
                               "psi_threshold": self.psi_threshold, "correction": "holm"},
                "reference_events": self.reference_size,
                "features": {t.feature: t.evidence(reference[t.feature])
                             for t in drifted[: self.max_evidence_features]},
            },
            event_ids=ids.event_ids,
            trace_ids=ids.trace_ids,
        )


def _numeric_features(features: dict[str, Scalar] | None) -> dict[str, float]:
    """Finite int/float features; bools are flags, not numbers, and strings are categories."""
    if not features:
        return {}
    return {
        name: float(value)
        for name, value in features.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def _severity(ks_d: float) -> Severity:
    # D is the largest gap between the two CDFs: 0.4 means 40 % of the mass moved.
    if ks_d >= 0.4:
        return "high"
    if ks_d >= 0.2:
        return "medium"
    return "low"


def _describe(test: FeatureTest, reference: FeatureReference, detector: NumericDriftDetector) -> str:
    return (
        f"{test.feature}: KS D={test.ks_d:.2f} (floor {detector.ks_floor:g}), p_holm={test.p_holm:.1e} "
        f"(alpha {detector.alpha:g}), PSI={test.psi:.2f} (threshold {detector.psi_threshold:g}), "
        f"mean {reference.mean:.4g} -> {test.current_mean:.4g}, std {reference.std:.4g} -> "
        f"{test.current_std:.4g}, n={test.n_current}"
    )
