"""Explaining a ``behaviour_anomaly`` row to a person: what ordinary rows look like, and which
features made this one stand out, in the units an on-call engineer reads.

>>> from inferwatch.detectors.behaviour_features import WIDTH
>>> train = np.zeros((100, WIDTH))
>>> train[:, 1] = np.log1p(np.linspace(50, 400, 100))     # input chars mean 50-400
>>> train[:, 10] = 1.0                                     # all at 00:00 UTC
>>> stats = TrainingStats.of(train, tolerance=np.array([np.log(4.0)] * 4 + [0.2, np.log(4.0)] + [0.2] * 3))
>>> row = train[0].copy()
>>> row[1] = np.log1p(5_900)
>>> beyond = stats.beyond(row[None, :])[0]
>>> round(float(beyond[1]), 1)      # 5,900 is 15x the ordinary high (396): 1.9 times the 4x allowed
1.9
>>> gains = np.zeros(len(FEATURES) + 1)
>>> [item["text"] for item in stats.stand_out(row, gains, beyond, min_gain=0.01, min_z=3.0, limit=3)]
['input chars mean 5,900 (typical 225, p95 382)']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from inferwatch.detectors.behaviour_features import FEATURES, HOUR_COLUMNS, Feature, FloatArray

ORDINARY = (0.01, 0.99)
"""Quantiles of the training rows that bound a feature's ordinary range: the middle 98 %, so
that a handful of odd rows learnt in warm-up do not widen it."""


def hours_of(rows: FloatArray) -> npt.NDArray[np.int64]:
    """The hour of day (UTC, 0-23) encoded in rows' sine and cosine columns."""
    angle = np.arctan2(rows[:, 9], rows[:, 10]) % (2.0 * math.pi)
    return np.rint(angle * 24.0 / (2.0 * math.pi)).astype(np.int64) % 24


MIN_GROUP = 50
"""Fewest training rows of one input kind for it to be its own reference."""
_TEXT = 1  # column of input_chars_mean: a row with text input has it above zero


@dataclass(frozen=True)
class Reference:
    """One group of training rows: median, robust scale, p95 and ordinary range per column."""

    median: FloatArray
    scale: FloatArray
    """Robust scale: 1.4826 MAD, at least (p95 - p5) / 3.29 and the feature's floor."""
    p95: FloatArray
    low: FloatArray
    high: FloatArray
    """The ordinary range (:data:`ORDINARY` quantiles)."""
    rows: int

    @classmethod
    def of(cls, train: FloatArray) -> Reference:
        """Summarise training rows (at least one)."""
        median = np.median(train, axis=0)
        mad = np.median(np.abs(train - median), axis=0)
        p5, p95 = np.quantile(train, [0.05, 0.95], axis=0)
        low, high = np.quantile(train, ORDINARY, axis=0)
        floors = np.array([f.floor for f in FEATURES] + [0.01] * len(HOUR_COLUMNS))
        scale = np.maximum(np.maximum(1.4826 * mad, (p95 - p5) / 3.29), floors)
        return cls(median, scale, p95, low, high, len(train))

    def beyond(self, rows: FloatArray, tolerance: FloatArray) -> FloatArray:
        """How far each feature lies outside the ordinary range, in ``tolerance`` units (0 inside)."""
        k = len(FEATURES)
        x = rows[:, :k]
        excess = np.maximum(np.maximum(x - self.high[:k], self.low[:k] - x), 0.0)
        return np.asarray(excess / tolerance, dtype=np.float64)


@dataclass(frozen=True)
class TrainingStats:
    """What the training rows look like, to explain a row in the units people read.

    Callers sending text and callers sending none (tabular models) are compared with their own
    kind: a classifier client's input length is not "typical" for a chat user.
    """

    text: Reference
    other: Reference
    hour_share: FloatArray
    """Share of training rows in each hour of the day (UTC)."""
    tolerance: FloatArray
    """How far outside the ordinary range, per feature in stored units, counts as far outside."""

    @classmethod
    def of(cls, train: FloatArray, tolerance: FloatArray) -> TrainingStats:
        """Summarise the training rows, per input kind when each kind has ``MIN_GROUP`` rows."""
        every = Reference.of(train)
        is_text = train[:, _TEXT] > 0
        text = Reference.of(train[is_text]) if is_text.sum() >= MIN_GROUP else every
        other = Reference.of(train[~is_text]) if (~is_text).sum() >= MIN_GROUP else every
        share = np.bincount(hours_of(train), minlength=24) / len(train)
        return cls(text, other, share.astype(np.float64), tolerance)

    @property
    def usual_hour(self) -> int:
        """The hour of day with the most training rows."""
        return int(np.argmax(self.hour_share))

    def reference(self, row: FloatArray) -> Reference:
        """The reference a row is compared with: callers of its input kind."""
        return self.text if row[_TEXT] > 0 else self.other

    def beyond(self, rows: FloatArray) -> FloatArray:
        """How far each feature of each row lies outside its kind's ordinary range, in units of
        :attr:`tolerance` (0 inside, 1 or more: far outside): what the forest cannot see, since a
        value beyond every training row follows the same branches as the most extreme of them.
        Shape ``(len(rows), len(FEATURES))``."""
        is_text = rows[:, _TEXT:_TEXT + 1] > 0
        tolerance = self.tolerance
        return np.where(is_text, self.text.beyond(rows, tolerance), self.other.beyond(rows, tolerance))

    def substitutions(self, rows: FloatArray) -> FloatArray:
        """For each row, one copy per feature with that feature at its kind's median (the hour
        at the usual hour): shape ``(len(rows), len(FEATURES) + 1, WIDTH)``."""
        variants = np.repeat(rows[:, None, :], len(FEATURES) + 1, axis=1)
        medians = np.where(rows[:, _TEXT:_TEXT + 1] > 0, self.text.median, self.other.median)
        for j in range(len(FEATURES)):
            variants[:, j, j] = medians[:, j]
        angle = 2.0 * math.pi * self.usual_hour / 24.0
        variants[:, -1, 9], variants[:, -1, 10] = math.sin(angle), math.cos(angle)
        return variants

    def natural(self, row: FloatArray) -> dict[str, float | int]:
        """Every feature of ``row`` in the units people read."""
        values: dict[str, float | int] = {f.name: _shown(f, row[j]) for j, f in enumerate(FEATURES)}
        values["hour_utc"] = int(hours_of(row[None, :])[0])
        return values

    def stand_out(self, row: FloatArray, gains: FloatArray, beyond: FloatArray, *, min_gain: float,
                  min_z: float, limit: int) -> list[dict[str, Any]]:
        """The features that made ``row`` stand out, at most ``limit``: first those far outside
        the ordinary range (``beyond >= 1``, furthest first), then those whose typical value
        lowers the score by ``min_gain`` or more (most first; ``gains`` has one more entry, for
        the hour), then those with a robust z-score of at least ``min_z``."""
        ref = self.reference(row)
        k = len(FEATURES)
        z = (row[:k] - ref.median[:k]) / ref.scale[:k]
        chosen = [int(j) for j in np.argsort(-beyond, kind="stable") if beyond[j] >= 1.0]
        chosen += [int(j) for j in np.argsort(-gains, kind="stable")
                   if gains[j] >= min_gain and j not in chosen]
        chosen += [int(j) for j in np.argsort(-np.abs(z), kind="stable") if abs(z[j]) >= min_z
                   and j not in chosen]
        return [self._describe(j, row, ref, float(gains[j]), z, beyond) for j in chosen[:limit]]

    def _describe(self, j: int, row: FloatArray, ref: Reference, gain: float, z: FloatArray,
                  beyond: FloatArray) -> dict[str, Any]:
        if j == len(FEATURES):
            hour = int(hours_of(row[None, :])[0])
            share = float(self.hour_share[hour])
            return {"feature": "hour_utc", "label": "hour of day", "value": hour, "typical": self.usual_hour,
                    "share_at_hour": round(share, 4), "score_drop": round(gain, 4),
                    "text": f"hour of day {hour:02d}:00 UTC ({share:.1%} of ordinary activity in that hour; "
                    f"busiest {self.usual_hour:02d}:00)"}
        feature = FEATURES[j]
        value, typical, p95, low, high = (_shown(feature, v) for v in (row[j], ref.median[j], ref.p95[j],
                                                                        ref.low[j], ref.high[j]))
        return {"feature": feature.name, "label": feature.label, "value": value, "typical": typical,
                "p95": p95, "ordinary_range": [low, high], "beyond_ordinary": round(float(beyond[j]), 2),
                "robust_z": round(float(z[j]), 1), "score_drop": round(gain, 4),
                "text": f"{feature.label} {_text(feature, value)} (typical {_text(feature, typical)}, "
                f"p95 {_text(feature, p95)})"}


def _shown(feature: Feature, stored: float) -> float | int:
    value = float(np.expm1(stored)) if feature.log else float(stored)
    return round(value) if feature.decimals == 0 else round(value, feature.decimals + 1)


def _text(feature: Feature, value: float | int) -> str:
    return f"{value:,.{feature.decimals}f}"
