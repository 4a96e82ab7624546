"""Streaming change detectors for operations metrics, judged once per window.

Each detector watches one per-window aggregate of one model — window mean latency, window p95
latency, error share, mean tokens per request — computed from the merged window summary
(:mod:`.sketch`). Every detector process sees the same merged series, so N processes reach the
verdict one would; that is why these run once per window and never per event. The caller keeps
one detector per (model, metric) and feeds it one value per closed window.

* :class:`Cusum` — two-sided tabular CUSUM against a reference frozen after warm-up. Slack
  ``k = 1`` std is tuned to shifts of about 2 std; the fastest on large steps.
* :class:`PageHinkley` — two-sided Page-Hinkley: residuals from a slowly fading running mean,
  slack ``delta = 0.5`` std. Better on 1-std shifts and slow ramps, slower on large steps.
* :class:`Adwin` — ADWIN-style: splits the last ``max_window`` values at every point and cuts
  where the two parts' means differ by more than the ADWIN bound. No fixed reference level.

All share one interface, :class:`ChangeDetector`: ``update(value, weight=1.0) -> Change | None``,
``reset()`` and ``to_dict()`` (JSON-safe; :func:`restore` rebuilds any of them and it continues
exactly where it stopped). :func:`build` makes one by name. A :class:`Change` carries the
direction, the statistic and threshold, the means before and after, and how many windows ago
the change began; :meth:`Change.evidence` is what an on-call engineer reads.

Behaviour worth knowing:

* **Scale-free.** The first ``min_windows`` (60) values only learn a reference: the mean, the
  standard deviation and the typical weight. Every later value is standardised,
  ``z = (value - mean) / std``, and all options are in units of that std, so the same defaults
  serve latency in ms, tokens and an error share in [0, 1]. The std, not the MAD: the MAD of a
  zero-inflated metric such as error share is 0, and it understates the spread of skewed ones.
* **Heavy tails.** Each standardised value is clipped at ``clip`` std (3 for CUSUM and
  Page-Hinkley, 4 for ADWIN, whose bound widens with the window's own variance), so one latency
  spike adds at most ``clip - k`` to a CUSUM. That, not a lower threshold, is what keeps
  lognormal latency silent; the price is that any step above ``clip`` std is detected as fast as
  one of ``clip`` std (CUSUM: 6 windows).
* **Weights.** ``weight`` is the window's precision, most simply its request count. It is divided
  by the median warm-up weight and capped at 1: a window with a tenth of the usual requests
  counts a tenth (its value is taken to have ten times the variance) and a busy window counts no
  more than a typical one, because real windows vary by more than sampling noise. Constant
  weights of any size behave exactly like 1.0. **Callers should skip windows with fewer than
  ``min_count`` requests** (a p95 of three requests is noise) and pass only finite values.
* **After a change** the detector re-learns: CUSUM and Page-Hinkley warm up again for
  ``min_windows`` windows; ADWIN drops the older part and re-learns its scale from the newer
  part. A lasting shift is therefore reported once and becomes the new normal; a later return is
  reported as a change the other way. Nothing is reported while warming up.
* **A metric constant during warm-up** (error share 0 for an hour) has std 0; its scale is then
  ``max(min_scale, 1e-6 * |mean|, 1e-12)``, so the first errors afterwards are a change. Set
  ``min_scale`` (in the metric's units, e.g. 0.005 for error share) to the spread you consider
  normal.
* **Assumptions.** Window values are treated as independent around a level. A daily cycle larger
  than a few warm-up std, or strongly autocorrelated windows, will be reported as changes;
  Page-Hinkley's fading mean (``alpha``) absorbs only very slow drift.
* **Memory and cost.** CUSUM and Page-Hinkley hold a few numbers (about 1 KB per detector, JSON
  state about 400 bytes) and take about 5 µs a window. ADWIN holds 16 bytes per kept value
  (about 9 KB at ``max_window=500``, JSON state about 12 KB) and takes about 0.1 ms a window;
  it keeps plain arrays rather than ADWIN's exponential histogram, which only pays off for
  per-event streams, not for one value a minute.

Measured with the defaults by a seeded script outside the test suite (it runs for minutes), the
detector built afresh for each stream of 10,000 windows, warm-up included. Streams: Gaussian
window values N(100, 10); lognormal window values ``100 * exp(sigma * N(0, 1))``; the mean or
p95 of Poisson(100) requests (at least 20) with lognormal(sigma 1) latency, weighted by the
count; error share Binomial(n, 0.01) / n, weighted by n. False alarms, in all windows tested:

=============================================================  ======  ======  ======
stationary stream (windows tested)                             PH      CUSUM   ADWIN
=============================================================  ======  ======  ======
Gaussian window values (3,000,000)                             1       0       0
lognormal window values, sigma 0.5 (2,000,000)                 0       0       0
lognormal window values, sigma 1, skewness 6 (2,000,000)       1       0       0
p95 of ~100 lognormal requests, weighted (500,000)             1       0       0
mean of ~100 lognormal requests, weighted (500,000)            0       0       0
error share, 1% binomial, weighted (500,000)                   0       0       0
=============================================================  ======  ======  ======

That is at most 0.02 false alarms per 10,000 stationary windows (Page-Hinkley on p95 latency)
and none for CUSUM and ADWIN in 8.5 million windows. Detection delay, in windows from the first
shifted window to the alarm inclusive, median (90th percentile), 500 seeded Gaussian streams
shifted after 300 stationary windows:

=================================  ===============  ===============  ===============
shift                              PH               CUSUM            ADWIN
=================================  ===============  ===============  ===============
step of 1 std (*)                  39 (69)          76 (217)         49 (72)
step of 2 std, up or down          13 (17)          13 (19)          16 (21)
step of 5 std, up or down          8 (8)            6 (6)            6 (7)
ramp of 0.01 std a window          112 (133)        141 (167)        114 (131)
ramp of 0.05 std a window          37 (42)          40 (47)          41 (45)
=================================  ===============  ===============  ===============

(*) Within 300 windows Page-Hinkley caught 99.4% and ADWIN all; CUSUM caught 66%: a 1-std shift
sits at its slack ``k``, by design below what it is tuned to report.

Example: latency of about 120 ms jumps by 3 std at window 101::

    >>> import random
    >>> rng = random.Random(7)
    >>> detector = Cusum()
    >>> found = [c for t in range(200)
    ...          if (c := detector.update(120 + rng.gauss(0, 8) + (24 if t >= 100 else 0)))]
    >>> [(c.direction, c.at, c.onset) for c in found]
    [('up', 106, 101)]
    >>> change = found[0]
    >>> round(change.mean_before), round(change.mean_after), change.windows_since_change
    (120, 146, 6)
    >>> change.evidence()["threshold"]
    11.5
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from array import array
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, Self, runtime_checkable

import numpy as np

from inferwatch.detectors.stats import FloatArray

Direction = Literal["up", "down"]
STATE_VERSION = 1
SCALE_FLOOR_RELATIVE = 1e-6
"""A metric constant during warm-up gets ``scale = max(min_scale, 1e-6 * |mean|, 1e-12)``."""
STATISTIC_MEANING = {
    "cusum": "cumulative excess of the standardised values over the slack k since the level last looked "
             "normal, in reference std",
    "page_hinkley": "cumulative deviation of the standardised values from their running mean beyond delta, "
                    "in reference std",
    "adwin": "difference between the means of the older and the newer part of the recent windows, in "
             "reference std, against the ADWIN bound for those sizes",
}
"""What each detector's ``statistic`` measures, spelled out in :meth:`Change.evidence`."""


@dataclass(frozen=True)
class Change:
    """A change in a metric's level, as one detector saw it.

    ``statistic`` and ``threshold`` are in units of the reference scale (the warm-up standard
    deviation) so they read the same for latency in ms and for an error share. ``at`` is the
    1-based index of the window that triggered (windows seen since construction or
    :meth:`ChangeDetector.reset`); ``windows_since_change`` is the detector's estimate of how many
    windows ago the new level began, counting the triggering one, so the change started at
    window ``at - windows_since_change + 1``. ``mean_before`` and ``mean_after`` are in the
    metric's own units.
    """

    detector: str
    direction: Direction
    statistic: float
    threshold: float
    mean_before: float
    mean_after: float
    scale: float
    at: int
    windows_since_change: int

    @property
    def onset(self) -> int:
        """Index of the first window estimated to be at the new level."""
        return self.at - self.windows_since_change + 1

    @property
    def shift(self) -> float:
        """``mean_after - mean_before`` in reference standard deviations."""
        return (self.mean_after - self.mean_before) / self.scale

    def evidence(self) -> dict[str, Any]:
        """JSON-ready facts for an on-call engineer: what moved, by how much, judged how."""
        return {
            "detector": self.detector,
            "direction": self.direction,
            "summary": (
                f"level moved {self.direction} from {_fmt(self.mean_before)} to {_fmt(self.mean_after)} "
                f"({self.shift:+.1f} reference std) over the last {self.windows_since_change} windows; "
                f"{self.detector} statistic {self.statistic:.2f} exceeded its threshold {self.threshold:.2f}"
            ),
            "mean_before": self.mean_before,
            "mean_after": self.mean_after,
            "reference_std": self.scale,
            "shift_std": round(self.shift, 3),
            "statistic": round(self.statistic, 4),
            "threshold": round(self.threshold, 4),
            "statistic_is": STATISTIC_MEANING.get(self.detector, ""),
            "window_index": self.at,
            "onset_window_index": self.onset,
            "windows_since_change": self.windows_since_change,
        }


@runtime_checkable
class ChangeDetector(Protocol):
    """A streaming detector fed one merged per-window value at a time. See the module docstring."""

    name: ClassVar[str]

    def update(self, value: float, weight: float = 1.0) -> Change | None:
        """Take the next window's value; return a :class:`Change` when one is detected."""
        ...

    def reset(self) -> None:
        """Forget everything, including the reference: the next windows are warm-up again."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe options and state; :func:`restore` rebuilds the detector from it."""
        ...


@dataclass(frozen=True)
class Reference:
    """What warm-up learnt: level, scale, and the typical weight that counts as one window."""

    mean: float
    scale: float
    unit_weight: float

    @classmethod
    def learn(cls, values: FloatArray, weights: FloatArray, min_scale: float) -> Reference:
        """Precision-weighted mean and std of warm-up values (weights relative to their median).

        A value of weight ``w`` is taken to have variance ``scale**2 / w``, with ``w`` capped at
        one typical window, so ``sum(w * (x - mean)**2) / (n - 1)`` estimates ``scale**2``.
        """
        unit = float(np.median(weights))
        w = np.minimum(weights / unit, 1.0)
        mean = float(np.sum(w * values) / np.sum(w))
        var = float(np.sum(w * (values - mean) ** 2) / max(len(values) - 1, 1))
        scale = max(math.sqrt(var), min_scale, SCALE_FLOOR_RELATIVE * abs(mean), 1e-12)
        return cls(mean=mean, scale=scale, unit_weight=unit)

    def effective_weight(self, weight: float) -> float:
        """Weight relative to a typical warm-up window, capped at 1."""
        return min(weight / self.unit_weight, 1.0)

    def standardise(self, value: float, weight: float, clip: float) -> float:
        """``(value - mean) / scale``, clipped at ``clip`` standard errors of its own weight."""
        root = math.sqrt(weight)
        u = (value - self.mean) / self.scale * root
        return max(-clip, min(clip, u)) / root


class _WarmupDetector(ABC):
    """Shared skeleton: warm up on ``min_windows`` values, then standardise and test each value."""

    name: ClassVar[str]
    _OPTIONS: ClassVar[tuple[str, ...]]

    def __init__(self, *, min_windows: int, clip: float, min_scale: float) -> None:
        _check(isinstance(min_windows, int) and min_windows >= 5, "min_windows", "must be an int >= 5",
               min_windows)
        _check(clip > 0.0, "clip", "must be > 0", clip)
        _check(math.isfinite(min_scale) and min_scale >= 0.0, "min_scale", "must be finite and >= 0",
               min_scale)
        self.min_windows = min_windows
        self.clip = clip
        self.min_scale = min_scale
        self.reset()

    def reset(self) -> None:
        """Forget everything, including the reference: the next windows are warm-up again."""
        self._seen = 0
        self._relearn()

    def _relearn(self) -> None:
        self._reference: Reference | None = None
        self._warm_values: list[float] = []
        self._warm_weights: list[float] = []

    @property
    def reference(self) -> Reference | None:
        """The warm-up reference, or None while warming up."""
        return self._reference

    @abstractmethod
    def update(self, value: float, weight: float = 1.0) -> Change | None:
        """Take the next window's value; return a :class:`Change` when one is detected."""

    @abstractmethod
    def _state(self) -> dict[str, Any]:
        """The detector's own state after warm-up, JSON-safe."""

    @abstractmethod
    def _load(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`_state` returned."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe options and state; :func:`restore` (or ``from_dict``) rebuilds it."""
        ref = self._reference
        return {
            "detector": self.name,
            "version": STATE_VERSION,
            "options": {key: getattr(self, key) for key in self._OPTIONS},
            "seen": self._seen,
            "reference": None if ref is None else [ref.mean, ref.scale, ref.unit_weight],
            "warmup": [self._warm_values, self._warm_weights],
            "state": None if ref is None else self._state(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Rebuild a detector saved with :meth:`to_dict`; it continues exactly where it stopped."""
        if data.get("detector") != cls.name or data.get("version") != STATE_VERSION:
            raise ValueError(f"not a {cls.name} state of version {STATE_VERSION}: "
                             f"{data.get('detector')!r} version {data.get('version')!r}")
        detector = cls(**data["options"])
        detector._seen = int(data["seen"])
        detector._warm_values = [float(v) for v in data["warmup"][0]]
        detector._warm_weights = [float(v) for v in data["warmup"][1]]
        if data["reference"] is not None:
            detector._reference = Reference(*(float(v) for v in data["reference"]))
            detector._load(data["state"])
        return detector


class _SteppedDetector(_WarmupDetector):
    """Warm-up, then one standardised value at a time (Page-Hinkley, CUSUM)."""

    def update(self, value: float, weight: float = 1.0) -> Change | None:
        """Take the next window's value; return a :class:`Change` when one is detected.

        ``weight`` is the window's precision, e.g. its request count: it is divided by the median
        warm-up weight and capped at 1, so a quiet window counts less and a busy one no more than
        a typical one. Callers should skip windows with fewer than ``min_count`` requests.
        """
        _check_input(value, weight)
        self._seen += 1
        if self._reference is None:
            self._warm_values.append(value)
            self._warm_weights.append(weight)
            if len(self._warm_values) >= self.min_windows:
                self._reference = Reference.learn(
                    np.asarray(self._warm_values), np.asarray(self._warm_weights), self.min_scale
                )
                self._warm_values, self._warm_weights = [], []
                self._begin(self._reference)
            return None
        w = self._reference.effective_weight(weight)
        change = self._step(value, self._reference.standardise(value, w, self.clip), w, self._reference)
        if change is not None:
            self._relearn()
        return change

    @abstractmethod
    def _begin(self, reference: Reference) -> None:
        """Start testing against the reference just learnt."""

    @abstractmethod
    def _step(self, value: float, z: float, w: float, reference: Reference) -> Change | None:
        """Test one standardised value ``z`` (weight ``w``); a :class:`Change` when one is found."""

@dataclass(frozen=True)
class _Mark:
    """A point in the stream: window index and running weighted sums of the raw values."""

    at: int = 0
    wx: float = 0.0
    w: float = 0.0

    def mean_since(self, now: _Mark) -> float:
        return (now.wx - self.wx) / (now.w - self.w) if now.w > self.w else 0.0


class _TwoSided:
    """Two one-sided cumulative sums ``g = max(0, g + increment)`` with where each last restarted.

    The restart point is the change-point estimate: ``windows_since_change`` counts the windows
    since, and ``mean_after`` is the weighted mean of the raw values since.
    """

    def __init__(self, at: int) -> None:
        self.high = self.low = 0.0
        self.now = self.high_start = self.low_start = _Mark(at)

    def push(self, at: int, value: float, w: float, up: float, down: float) -> None:
        self.now = _Mark(at, self.now.wx + w * value, self.now.w + w)
        self.high = max(0.0, self.high + up)
        self.low = max(0.0, self.low + down)
        if self.high == 0.0:
            self.high_start = self.now
        if self.low == 0.0:
            self.low_start = self.now

    def change(self, detector: str, threshold: float, reference: Reference) -> Change | None:
        statistic = max(self.high, self.low)
        if statistic <= threshold:
            return None
        direction: Direction = "up" if self.high >= self.low else "down"
        start = self.high_start if direction == "up" else self.low_start
        return Change(detector=detector, direction=direction, statistic=statistic, threshold=threshold,
                      mean_before=reference.mean, mean_after=start.mean_since(self.now),
                      scale=reference.scale, at=self.now.at, windows_since_change=self.now.at - start.at)

    def to_list(self) -> list[Any]:
        marks = (self.now, self.high_start, self.low_start)
        return [self.high, self.low, *([m.at, m.wx, m.w] for m in marks)]

    @classmethod
    def from_list(cls, data: list[Any]) -> _TwoSided:
        sums = cls(0)
        sums.high, sums.low = float(data[0]), float(data[1])
        marks = (_Mark(int(m[0]), float(m[1]), float(m[2])) for m in data[2:])
        sums.now, sums.high_start, sums.low_start = marks
        return sums


class PageHinkley(_SteppedDetector):
    """Two-sided Page-Hinkley test: standardised values against their own (fading) running mean.

    With ``r = z - running_mean(z)``: ``U = max(0, U + w (r - delta))`` and
    ``L = max(0, L - w (r + delta))`` — the classic ``m_T - min m_t`` form of Page-Hinkley written
    as a recursion; a change when either exceeds ``threshold``. Unlike :class:`Cusum` the reference
    level keeps learning: the running mean starts from the warm-up (``min_windows`` values at
    ``z = 0``) and fades with ``alpha`` per window, so a slow seasonal drift is partly absorbed.
    ``alpha`` fades the mean, not the cumulative sums: fading the sums as River does erodes the
    slack ``delta`` on long stationary streams (the sum settles near ``-delta / (1 - alpha)``,
    where fading gives back almost all of ``delta`` each window) and causes false alarms.

    Options (keyword only): ``delta`` tolerated drift per window, in reference std (0.5);
    ``threshold`` lambda, in reference std (18.0); ``alpha`` fading factor of the running mean
    (0.9999, a memory of about 10,000 windows; 1.0 is the plain running mean); ``min_windows``
    warm-up windows (60); ``clip`` standardised values are clipped at this many std (3.0);
    ``min_scale`` floor on the reference std in the metric's units (0.0).
    """

    name: ClassVar[str] = "page_hinkley"
    _OPTIONS = ("delta", "threshold", "alpha", "min_windows", "clip", "min_scale")

    def __init__(self, *, delta: float = 0.5, threshold: float = 18.0, alpha: float = 0.9999,
                 min_windows: int = 60, clip: float = 3.0, min_scale: float = 0.0) -> None:
        _check(math.isfinite(delta) and delta >= 0.0, "delta", "must be finite and >= 0", delta)
        _check(math.isfinite(threshold) and threshold > 0.0, "threshold", "must be finite and > 0", threshold)
        _check(0.0 < alpha <= 1.0, "alpha", "must be in (0, 1]", alpha)
        self.delta = delta
        self.threshold = threshold
        self.alpha = alpha
        super().__init__(min_windows=min_windows, clip=clip, min_scale=min_scale)

    def _begin(self, reference: Reference) -> None:
        self._z_sum, self._z_weight = 0.0, float(self.min_windows)
        self._sums = _TwoSided(self._seen)

    def _step(self, value: float, z: float, w: float, reference: Reference) -> Change | None:
        self._z_sum = self.alpha * self._z_sum + w * z
        self._z_weight = self.alpha * self._z_weight + w
        r = z - self._z_sum / self._z_weight
        self._sums.push(self._seen, value, w, w * (r - self.delta), -w * (r + self.delta))
        return self._sums.change(self.name, self.threshold, reference)

    def _state(self) -> dict[str, Any]:
        return {"mean": [self._z_sum, self._z_weight], "sums": self._sums.to_list()}

    def _load(self, state: dict[str, Any]) -> None:
        self._z_sum, self._z_weight = (float(v) for v in state["mean"])
        self._sums = _TwoSided.from_list(state["sums"])


class Cusum(_SteppedDetector):
    """Two-sided tabular CUSUM on values standardised by the warm-up mean and std.

    ``S+ = max(0, S+ + w (z - k))`` and ``S- = max(0, S- - w (z + k))``; a change when either
    exceeds ``h``. The reference stays fixed until a change is reported. Options (keyword only):
    ``k`` slack, in reference std (1.0: tuned to shifts of about 2 std); ``h`` decision
    threshold, in reference std (11.5: six windows at the clip cross it, 6 x (3.0 - 1.0) > 11.5);
    ``min_windows`` warm-up windows (60); ``clip`` (3.0) and ``min_scale`` (0.0) as for
    :class:`PageHinkley`.
    """

    name: ClassVar[str] = "cusum"
    _OPTIONS = ("k", "h", "min_windows", "clip", "min_scale")

    def __init__(self, *, k: float = 1.0, h: float = 11.5, min_windows: int = 60, clip: float = 3.0,
                 min_scale: float = 0.0) -> None:
        _check(math.isfinite(k) and k >= 0.0, "k", "must be finite and >= 0", k)
        _check(math.isfinite(h) and h > 0.0, "h", "must be finite and > 0", h)
        self.k = k
        self.h = h
        super().__init__(min_windows=min_windows, clip=clip, min_scale=min_scale)

    def _begin(self, reference: Reference) -> None:
        self._sums = _TwoSided(self._seen)

    def _step(self, value: float, z: float, w: float, reference: Reference) -> Change | None:
        self._sums.push(self._seen, value, w, w * (z - self.k), -w * (z + self.k))
        return self._sums.change(self.name, self.h, reference)

    def _state(self) -> dict[str, Any]:
        return {"sums": self._sums.to_list()}

    def _load(self, state: dict[str, Any]) -> None:
        self._sums = _TwoSided.from_list(state["sums"])


class Adwin(_WarmupDetector):
    """ADWIN-style adaptive window: split the recent values at every point, cut where the halves differ.

    Keeps the last ``max_window`` per-window values (plain arrays, 16 bytes a value; no
    exponential histogram, which only pays off for per-event streams). At every window, for each
    split into an older part ``W0`` and a newer part ``W1`` (each at least ``min_side`` values),
    it compares the means with the ADWIN bound of Bifet & Gavalda (2007)::

        eps_cut = sqrt(2 / m * var * ln(2 n / delta)) + 2 / (3 m) * ln(2 n / delta)

    where ``m = 1 / (1/|W0| + 1/|W1|)`` (sizes in effective weights), ``var`` is the window's
    variance and everything is in reference std, clipped at ``clip``. The split with the largest
    excess ``|mean1 - mean0| - eps_cut`` is the change; the older part is dropped and the scale is
    re-learnt from the newer part once it has ``min_windows`` values.

    Options (keyword only): ``delta`` confidence (0.002, River's default); ``max_window`` values kept
    (500: eight hours of one-minute windows); ``min_side`` fewest values in either part (5);
    ``min_windows`` (60) and ``min_scale`` (0.0) as for :class:`PageHinkley`; ``clip`` (4.0: the
    bound already widens with the window's variance, so it needs less protection from tails).
    """

    name: ClassVar[str] = "adwin"
    _OPTIONS = ("delta", "max_window", "min_side", "min_windows", "clip", "min_scale")

    def __init__(self, *, delta: float = 0.002, max_window: int = 500, min_side: int = 5,
                 min_windows: int = 60, clip: float = 4.0, min_scale: float = 0.0) -> None:
        super().__init__(min_windows=min_windows, clip=clip, min_scale=min_scale)
        _check(0.0 < delta < 1.0, "delta", "must be in (0, 1)", delta)
        _check(isinstance(min_side, int) and min_side >= 1, "min_side", "must be an int >= 1", min_side)
        _check(isinstance(max_window, int) and max_window >= max(min_windows, 2 * min_side), "max_window",
               f"must be an int >= min_windows ({min_windows}) and >= 2 * min_side ({2 * min_side})",
               max_window)
        self.delta = delta
        self.max_window = max_window
        self.min_side = min_side

    def reset(self) -> None:
        """Forget everything, including the kept values and the reference."""
        self._values, self._weights = array("d"), array("d")
        super().reset()

    def update(self, value: float, weight: float = 1.0) -> Change | None:
        """Take the next window's value; return a :class:`Change` when one is detected.

        ``weight`` as in :meth:`PageHinkley.update`.
        """
        _check_input(value, weight)
        self._seen += 1
        self._values.append(value)
        self._weights.append(weight)
        if len(self._values) > self.max_window:
            del self._values[0], self._weights[0]
        if self._reference is None:
            if len(self._values) >= self.min_windows:
                self._reference = Reference.learn(self._array(self._values), self._array(self._weights),
                                                  self.min_scale)
            return None
        return self._test(self._reference)

    @staticmethod
    def _array(values: array[float]) -> FloatArray:
        return np.array(values, dtype=np.float64)  # a copy: a buffer view would pin the array's size

    def _test(self, reference: Reference) -> Change | None:
        n = len(self._values)
        if n < 2 * self.min_side:
            return None
        raw = self._array(self._values)
        w = np.minimum(self._array(self._weights) / reference.unit_weight, 1.0)
        root = np.sqrt(w)
        z = np.clip((raw - reference.mean) / reference.scale * root, -self.clip, self.clip) / root
        cw, cwz = np.cumsum(w), np.cumsum(w * z)
        mean = cwz[-1] / cw[-1]
        var = float(np.sum(w * (z - mean) ** 2) / (n - 1))
        split = np.arange(self.min_side, n - self.min_side + 1)  # older part = first `split` values
        w0, w1 = cw[split - 1], cw[-1] - cw[split - 1]
        diff = (cwz[-1] - cwz[split - 1]) / w1 - cwz[split - 1] / w0
        m = 1.0 / (1.0 / w0 + 1.0 / w1)
        log_term = math.log(2.0 * n / self.delta)
        eps = np.sqrt(2.0 / m * var * log_term) + 2.0 / (3.0 * m) * log_term
        excess = np.abs(diff) - eps
        best = int(np.argmax(excess))
        if excess[best] <= 0.0:
            return None
        cut = int(split[best])
        before = float(np.sum(w[:cut] * raw[:cut]) / w0[best])
        after = float(np.sum(w[cut:] * raw[cut:]) / w1[best])
        change = Change(detector=self.name, direction="up" if diff[best] > 0 else "down",
                        statistic=float(abs(diff[best])), threshold=float(eps[best]), mean_before=before,
                        mean_after=after, scale=reference.scale, at=self._seen, windows_since_change=n - cut)
        del self._values[:cut], self._weights[:cut]
        self._reference = None
        if len(self._values) >= self.min_windows:
            self._reference = Reference.learn(self._array(self._values), self._array(self._weights),
                                              self.min_scale)
        return change

    def _state(self) -> dict[str, Any]:
        return {}

    def _load(self, state: dict[str, Any]) -> None:
        pass

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe options and state, including the kept values."""
        data = super().to_dict()
        data["values"] = [self._values.tolist(), self._weights.tolist()]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Rebuild a detector saved with :meth:`to_dict`; it continues exactly where it stopped."""
        detector = super().from_dict(data)
        detector._values = array("d", (float(v) for v in data["values"][0]))
        detector._weights = array("d", (float(v) for v in data["values"][1]))
        return detector


DETECTORS: dict[str, type[_WarmupDetector]] = {cls.name: cls for cls in (PageHinkley, Cusum, Adwin)}
"""The change detectors by name, for :func:`build` and :func:`restore`."""


def build(name: str, **options: Any) -> ChangeDetector:
    """A change detector by name (``page_hinkley``, ``cusum`` or ``adwin``) with keyword options.

    >>> build("cusum", h=8.0).h
    8.0
    """
    if name not in DETECTORS:
        raise ValueError(f"name must be one of {sorted(DETECTORS)}, got {name!r}")
    detector: ChangeDetector = DETECTORS[name](**options)
    return detector


def restore(data: dict[str, Any]) -> ChangeDetector:
    """Rebuild any change detector from its :meth:`ChangeDetector.to_dict` state."""
    name = data.get("detector")
    if name not in DETECTORS:
        raise ValueError(f"detector must be one of {sorted(DETECTORS)}, got {name!r}")
    detector: ChangeDetector = DETECTORS[name].from_dict(data)
    return detector


def _check(ok: bool, option: str, requirement: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{option} {requirement}, got {value!r}")


def _check_input(value: float, weight: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"value must be finite, got {value!r}; skip windows without a value")
    if not (math.isfinite(weight) and weight > 0.0):
        raise ValueError(f"weight must be finite and > 0, got {weight!r}; skip windows with no requests")


def _fmt(value: float) -> str:
    return f"{value:.4g}"
