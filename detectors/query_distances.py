"""Distances between a caller's tabular queries, for model extraction (PRADA and coverage).

PRADA (Juuti et al., *PRADA: Protecting against DNN Model Stealing Attacks*, EuroS&P 2019)
looks, for each query a caller sends, at the distance to the nearest of its earlier queries of
the same predicted class. Queries drawn from the natural input distribution give a smooth,
roughly normal set of such distances; the synthetic queries of extraction attacks do not: grid
and line sweeps step by a fixed amount, Jacobian-style augmentation adds small fixed
perturbations to a few seeds. The Shapiro-Wilk statistic *W* of the distances measures this;
PRADA flags a caller when *W* falls below a threshold (about 0.9).

What is kept here, and how it departs from the paper:

* :class:`ModelQueries`, per model: the names of its numeric features (numbers as they are,
  booleans as 0/1, strings and nulls ignored; at most ``max_features`` names, first seen
  first); a running mean and variance per feature (Welford), taken as the scale when a window
  closes, so that distances are in standard deviations and units do not matter (a scale that
  moved with every query would stretch a sweep's fixed step as the sweep widened the spread;
  nothing is measured before the model's first window closes); and a *reference*, a ring of
  the 256 most recent queries admitted from all callers — at most 8 per caller per window, and
  none from a caller whose own queries are already mostly far from it, so that no caller (an
  attacker included) makes up much of it or drags it towards itself.
* :class:`QueryHistory`, per (caller, model): a ring of the caller's most recent queries
  (float32, with a class id from ``output.label``) instead of PRADA's unbounded growing set, and
  a ring of the resulting nearest-neighbour distances. Exact repeats are retries and are left
  out rather than tested.
* The test runs on the *logarithm* of the distances. On an iris-like stream, a 3-component
  Gaussian mixture with features in units 0.01 to 1000 apart, and a credit-like table with
  integer and lognormal columns, raw distances of natural callers gave W as low as 0.68
  (median 0.85 on iris), overlapping the attacks; log distances gave W >= 0.88 over about 7,400
  judgements of natural callers (0.04% below 0.9, none below 0.85), grid and line sweeps
  W < 0.6, Jacobian-style augmentation with steps of a tenth of each feature's spread below
  0.85 in 17-60% of judgements (so within a few windows).
* W leaves out the lowest and highest 1.5 % of the log distances (:func:`trimmed_w`, 2 of
  128, none below 34). On real tables (the shared ``elec`` and ``weather`` streams: price
  spikes, long runs of one value, a 48-step time of day) one near-duplicate query, or one far
  from all of the caller's others, took W of an otherwise normal set below 0.85: 21 of 300
  ordinary callers were flagged (``benchmarks/extraction_real_tables.py --sequential 0``), none
  with the extremes left out.
  Left out so, the lowest natural W over about 8,000 judgements on those two, the iris-like,
  the mixture and the credit-like table was 0.88 (0.84 on a table of four small integers).
* **Repeated step** (:func:`repeated_share`): augmentation steps every known point by one
  amount, so many of its distances (a new point to the one it came from) are one value. The
  largest share of a caller's distances within 0.1 % of one another was at most 5 % for natural
  callers of those five tables, and reached 13 % or more (29-40 % on four of them) for every
  augmenting caller with steps of 0.1 to 0.5 of each feature's spread — including the large
  steps where W looks natural (0.86-0.97); 10 % flags. Only distances whose step moved at least
  half of the features (and two) count: augmentation moves every feature, a person nudging one
  field of the last query (a what-if slider, a count + 1) one, and such callers were flagged
  before that rule. A model whose features are a lattice (all small integers) repeats steps
  naturally: it is recognised from its full reference (15 % or more of the reference's own
  nearest-neighbour distances in one such cluster, 34 % for four features of 0-5 and 2 % for
  the real tables; or a quarter of its rows with an exact twin) and the test is not made on it.
  With few callers, one can make the reference look like a lattice (rows sent in pairs a fixed
  small offset apart) and so switch the test off; float32 rows make a feature like epoch
  seconds a lattice too. Not caught by either distance test: step sizes varied at random
  as large as the natural spacing (0.2-0.6 of each feature's spread; on the real tables the
  off-distribution share below caught 4 of 6 such callers, after about 300 queries).
* Nearly constant distances (the interquartile range of log distance below 0.01: half the
  distances within 1% of each other) are a sweep with a fixed step whatever W says — Shapiro-
  Wilk is undefined for constant data.
* Random queries spread uniformly over the feature ranges do *not* fail PRADA's test (their
  nearest-neighbour distances are if anything more normal than natural ones: W 0.90-0.99), so
  a second measure is kept: the share of a caller's queries that lie farther from every
  reference row than 99% of the reference rows lie from their nearest other row (leave-one-out).
  Natural callers, even ones that only send one part of the distribution, measured at most 9%;
  uniform random queries 34-95% depending on the data.

Memory is listed in :mod:`inferwatch.detectors.model_extraction`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from scipy.stats import shapiro

from inferwatch.collectors.event import Scalar

FloatArray = npt.NDArray[np.float64]

REPEAT_DISTANCE: Final = 1e-6
"""Distances at or below this are exact repeats, not new queries (queries are compared at float32
precision, so a repeat is at distance 0)."""
REGULAR_SPACING_IQR: Final = 0.01
"""Interquartile range of log distance below which distances count as one fixed step."""
REPEATED_STEP_WIDTH: Final = 0.001
"""Log distances within this of each other (0.1 %) count as one repeated step."""
REPEATED_STEP_SHARE: Final = 0.1
"""Share of a caller's distances in one repeated step that flags it (natural callers: about 0.05 at most)."""
STEP_MOVES: Final = 1e-4
"""A feature differing by more than this (standard deviations) from the nearest earlier query moved."""
LATTICE_SHARE: Final = 0.15
"""Share of the reference's own nearest-neighbour distances in one repeated step at which a model's
features count as a lattice (all small integers, say), where natural queries repeat steps too."""
TRIM_SHARE: Final = 0.015
"""Share of the log distances left out at each end before Shapiro-Wilk, rounded: 2 of 128, 1 of
64, none below 34. A single outlier pulls W far down, and natural traffic has some."""
REFERENCE_ROWS: Final = 256
MIN_REFERENCE_ROWS: Final = 64
REFERENCE_PER_CALLER: Final = 8
"""Rows one caller may add to a model's reference in one window."""
REFERENCE_SLOTS: Final = 4096
OFF_QUANTILE: Final = 0.99
MAX_CLASSES: Final = 64
"""Distinct labels kept apart per model; the rest share one class."""
NO_CLASS: Final = -1


class ModelQueries:
    """One model's feature schema, running feature scale and reference sample of queries.

    >>> model = ModelQueries(max_features=8)
    >>> x, observed = model.vector({"b": 2.0, "a": True, "name": "x"})
    >>> sorted(model.names.items()), x.tolist(), observed
    ([('a', 1), ('b', 0)], [2.0, 1.0], [(0, 2.0), (1, 1.0)])
    """

    __slots__ = ("_budget", "_counts", "_inv_scale", "_m2", "_mean", "_snapshot",
                 "dropped", "labels", "lattice", "max_features", "names", "ref_pos", "ref_size", "reference",
                 "shifted", "threshold")

    def __init__(self, max_features: int) -> None:
        self.max_features = max_features
        self.names: dict[str, int] = {}
        self.labels: dict[Scalar, int] = {}
        self.dropped = 0
        """Numeric features ignored because ``max_features`` names were already known."""
        # Welford's running moments per feature, as Python floats: a few features per query are
        # updated faster one by one than through numpy's fancy indexing.
        self._counts = [0.0] * max_features
        self._mean = [0.0] * max_features
        self._m2 = [0.0] * max_features
        self._inv_scale: FloatArray | None = None
        self.reference: npt.NDArray[np.float32] | None = None
        self.ref_size = 0
        self.ref_pos = 0
        self.threshold: float | None = None
        """Distance (standard deviations) beyond which a query is far from the reference."""
        self._snapshot: npt.NDArray[np.float64] | None = None  # the reference, scaled, as of the threshold
        self._budget = np.zeros(REFERENCE_SLOTS, dtype=np.uint8)
        self.shifted = False
        """Set by the detector when most callers were far from the reference (input drift)."""
        self.lattice: bool | None = None
        """Whether the reference's own nearest-neighbour distances repeat one step (at least
        :data:`LATTICE_SHARE` of them) or a quarter of its rows have an exact twin; ``None`` until
        a full reference (:data:`REFERENCE_ROWS`) is measured. The repeated-step
        test is made only on a model measured not to be a lattice."""

    @property
    def inv_scale(self) -> FloatArray | None:
        """``1 / standard deviation`` per feature as of the last closed window (1 for a feature
        that did not vary), or ``None`` before the model's first window closed.

        The scale moves only between windows: a scale that followed every query would stretch
        the distances of a sweep as the sweep widens the spread, and hide its fixed step.
        """
        return self._inv_scale

    def vector(self, features: Mapping[str, Scalar]) -> tuple[FloatArray, list[tuple[int, float]]] | None:
        """The query as a vector over the model's features (missing ones at their running mean)
        and the ``(index, value)`` pairs it had; ``None`` when it had no numeric feature."""
        observed: list[tuple[int, float]] = []
        for name, value in features.items():
            if isinstance(value, bool):
                number = 1.0 if value else 0.0
            elif isinstance(value, int | float):
                number = float(value)
            else:
                continue
            j = self.names.get(name)
            if j is None:
                if len(self.names) >= self.max_features:
                    self.dropped += 1
                    continue
                j = self.names[name] = len(self.names)
            observed.append((j, number))
        if not observed:
            return None
        row = self._mean[: len(self.names)]
        for j, number in observed:
            row[j] = number
        return np.array(row), observed

    def class_of(self, label: Scalar) -> int:
        """A small class id for ``output.label``; :data:`NO_CLASS` for no label or a score-like float."""
        if label is None or (isinstance(label, float) and not label.is_integer()):
            return NO_CLASS
        found = self.labels.get(label)
        if found is not None:
            return found
        if len(self.labels) >= MAX_CLASSES:
            return MAX_CLASSES
        self.labels[label] = len(self.labels)
        return self.labels[label]

    def learn(self, observed: list[tuple[int, float]]) -> None:
        """Fold the features a query had into their running mean and variance (Welford)."""
        counts, mean, m2 = self._counts, self._mean, self._m2
        for j, value in observed:
            counts[j] += 1.0
            delta = value - mean[j]
            mean[j] += delta / counts[j]
            m2[j] += delta * (value - mean[j])

    def _refresh_scale(self) -> None:
        counts, m2 = np.array(self._counts), np.array(self._m2)
        variance = np.divide(m2, counts - 1.0, out=np.zeros_like(m2), where=counts > 1.0)
        std = np.sqrt(variance)
        self._inv_scale = np.divide(1.0, std, out=np.ones_like(std), where=std > 0.0)

    def admit(self, x: FloatArray, caller_slot: int) -> None:
        """Offer a query to the reference; a caller gets :data:`REFERENCE_PER_CALLER` per window."""
        slot = caller_slot % REFERENCE_SLOTS
        if self._budget[slot] >= REFERENCE_PER_CALLER:
            return
        self._budget[slot] += 1
        width = len(x)
        if self.reference is None or self.reference.shape[1] < width:
            self._widen(width)
        assert self.reference is not None
        row = self.reference[self.ref_pos]
        row[:width] = x
        row[width:] = self._mean[width : len(row)]
        self.ref_pos = (self.ref_pos + 1) % REFERENCE_ROWS
        self.ref_size = min(self.ref_size + 1, REFERENCE_ROWS)

    def _widen(self, width: int) -> None:
        wider = np.empty((REFERENCE_ROWS, width), dtype=np.float32)
        wider[:] = self._mean[:width]
        if self.reference is not None:
            wider[:, : self.reference.shape[1]] = self.reference
        self.reference = wider

    def off_reference(self, x: FloatArray) -> int:
        """1 when ``x`` is farther from every reference row than :attr:`threshold`, 0 when not,
        -1 when there is no threshold yet."""
        if self.threshold is None or self._snapshot is None or self._inv_scale is None:
            return -1
        width = min(len(x), self._snapshot.shape[1])
        diff = self._snapshot[:, :width] - x[:width] * self._inv_scale[:width]
        nearest = float(np.einsum("ij,ij->i", diff, diff).min())
        return int(nearest > self.threshold * self.threshold)

    def close_window(self) -> None:
        """Take the feature scale and the reference threshold for the next window; reset
        callers' reference budgets."""
        self._budget.fill(0)
        self._refresh_scale()
        if self.reference is None or self.ref_size < MIN_REFERENCE_ROWS or self._inv_scale is None:
            return
        width = self.reference.shape[1]
        z = self.reference[: self.ref_size].astype(np.float64) * self._inv_scale[:width]
        squares = np.einsum("ij,ij->i", z, z)
        gram = squares[:, None] + squares[None, :] - 2.0 * (z @ z.T)
        np.fill_diagonal(gram, np.inf)
        nearest = np.sqrt(np.clip(gram.min(axis=1), 0.0, None))
        threshold = float(np.quantile(nearest, OFF_QUANTILE))
        self.threshold = threshold if threshold > 0.0 else None
        self._snapshot = z
        # Measured on a full reference only: on fewer rows the distances are longer and repeat
        # less, and a model of coarsely rounded features looked continuous in its first windows.
        # Exact duplicates among the rows (a quarter or more) are discrete inputs too.
        distinct = nearest[nearest > REPEAT_DISTANCE]
        self.lattice = None if self.ref_size < REFERENCE_ROWS else bool(
            len(distinct) < 0.75 * len(nearest) or repeated_share(np.log(distinct)) >= LATTICE_SHARE)


@dataclass(frozen=True)
class QueryVerdict:
    """What one caller's recent queries to one model look like, and whether that is extraction."""

    tested: int
    """Nearest-neighbour distances in the test (the caller's most recent, repeats left out)."""
    shapiro_w: float | None
    log_iqr: float | None
    distance_min: float | None
    distance_median: float | None
    distance_p95: float | None
    off_checked: int
    off_share: float | None
    distance_flag: bool
    regular_spacing: bool
    off_flag: bool
    repeated_share: float | None = None
    """The largest share of the distances within :data:`REPEATED_STEP_WIDTH` of one another."""
    repeated_step: bool = False

    @property
    def flagged(self) -> bool:
        """Whether either test failed."""
        return self.distance_flag or self.off_flag

    @property
    def signals(self) -> list[str]:
        """The tests that failed, by the names findings give them."""
        return ["query_distances"] * self.distance_flag + ["off_distribution"] * self.off_flag

    def evidence(self) -> dict[str, Any]:
        """The measurements, JSON-ready, for a finding's evidence."""
        return {
            "signals": self.signals,
            "distances_tested": self.tested,
            "shapiro_w_log_distance": _rounded(self.shapiro_w),
            "log_distance_iqr": _rounded(self.log_iqr),
            "regular_spacing": self.regular_spacing,
            "repeated_step_share": _rounded(self.repeated_share),
            "repeated_step": self.repeated_step,
            "distance_min": _rounded(self.distance_min),
            "distance_median": _rounded(self.distance_median),
            "distance_p95": _rounded(self.distance_p95),
            "distance_unit": "standard deviations of each feature (per model)",
            "queries_checked_against_reference": self.off_checked,
            "off_distribution_share": _rounded(self.off_share),
        }


def repeated_share(logs: FloatArray) -> float:
    """The largest share of ``logs`` within :data:`REPEATED_STEP_WIDTH` of one another: the
    share of distances that are one step repeated.

    Jacobian-style augmentation steps each known point by the same amount, so many of the
    attacker's distances (each new point to the one it came from) are one value. Natural callers
    of continuous or mixed tables put at most 5 % of their distances in one such cluster; every
    augmenting caller reached 13 % or more, even with steps as large as the natural spacing,
    where W looks natural.

    >>> round(repeated_share(np.log(np.array([0.5, 0.5004, 0.7, 1.0, 2.0]))), 2)
    0.4
    """
    if len(logs) == 0:
        return 0.0
    ordered = np.sort(logs)
    ends = np.searchsorted(ordered, ordered + REPEATED_STEP_WIDTH, side="right")
    return float((ends - np.arange(len(ordered))).max() / len(ordered))


def trimmed_w(logs: FloatArray) -> float:
    """Shapiro-Wilk W of ``logs`` without the lowest and highest :data:`TRIM_SHARE` (rounded);
    1.0 when what is left is constant.

    One near-duplicate query, or one query far from all the caller's others (a price spike), sits
    several units of log distance from the rest, and that one value alone took W from about 0.98
    to 0.84 on rows of the shared ``elec`` stream. A sweep or augmentation is unnatural in most
    of its distances, not in two.

    >>> from scipy.stats import norm
    >>> logs = np.append(norm.ppf((np.arange(127) + 0.5) / 127) / 2, 4.5)  # 127 normal, 1 far out
    >>> round(float(shapiro(logs).statistic), 2), round(trimmed_w(logs), 2)
    (0.83, 1.0)
    """
    k = round(len(logs) * TRIM_SHARE)
    kept = np.sort(logs)[k : len(logs) - k]
    return float(shapiro(kept).statistic) if len(kept) >= 3 and np.ptp(kept) > 0 else 1.0


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


class QueryHistory:
    """One caller's recent queries to one model and the distances they gave.

    ``rows`` holds the last ``query_history`` queries (raw values, float32) with their class;
    ``dists`` and ``offs`` the last ``distance_history`` nearest-neighbour distances (NaN when the
    class had no earlier query) and reference checks (-1 unchecked, 0 near, 1 far).
    """

    __slots__ = (
        "checked",
        "classes",
        "dists",
        "far",
        "moved",
        "n_records",
        "n_rows",
        "offs",
        "record_pos",
        "row_pos",
        "rows",
        "window_checked",
        "window_far",
        "window_queries",
        "window_repeats",
    )

    def __init__(self, width: int, query_history: int, distance_history: int) -> None:
        self.rows = np.empty((query_history, width), dtype=np.float32)
        self.classes = np.empty(query_history, dtype=np.int16)
        self.n_rows = 0
        self.row_pos = 0
        self.dists = np.full(distance_history, np.nan, dtype=np.float32)
        self.moved = np.zeros(distance_history, dtype=np.int8)
        """Per distance, how many features differ from that nearest earlier query (at most 127)."""
        self.offs = np.full(distance_history, -1, dtype=np.int8)
        self.n_records = 0
        self.record_pos = 0
        self.checked = 0
        """Queries in the ``offs`` ring that were checked against the reference ..."""
        self.far = 0
        """... and of those, the ones that were far from it."""
        self.window_queries = 0
        self.window_repeats = 0
        self.window_checked = 0
        """This window's queries checked against the reference ..."""
        self.window_far = 0
        """... and of those, the ones far from it."""

    def add(self, x: FloatArray, cls: int, inv_scale: FloatArray | None, off: int) -> bool:
        """Record one query; return ``True`` when it repeats an earlier one exactly. Without a
        scale (the model's first window) the query is kept but its distance is not recorded."""
        width = self.rows.shape[1]
        point = x[:width].astype(np.float32)
        dist = math.nan
        moved = 0
        if self.n_rows:
            same = self.classes[: self.n_rows] == cls
            if same.any():
                diff = self.rows[: self.n_rows][same] - point
                if inv_scale is not None:
                    diff *= inv_scale[:width]
                squares = np.einsum("ij,ij->i", diff, diff)
                nearest = int(squares.argmin())
                dist = math.sqrt(float(squares[nearest]))
                moved = min(127, int(np.count_nonzero(np.abs(diff[nearest]) > STEP_MOVES)))
        self.window_queries += 1
        if dist <= REPEAT_DISTANCE:
            self.window_repeats += 1
            return True
        if inv_scale is None:
            dist = math.nan
        dropped = int(self.offs[self.record_pos])  # the record this one overwrites (-1 if none)
        self.checked += (off >= 0) - (dropped >= 0)
        self.far += (off == 1) - (dropped == 1)
        self.window_checked += off >= 0
        self.window_far += off == 1
        self.dists[self.record_pos] = dist
        self.moved[self.record_pos] = moved
        self.offs[self.record_pos] = off
        self.record_pos = (self.record_pos + 1) % len(self.dists)
        self.n_records = min(self.n_records + 1, len(self.dists))
        self.rows[self.row_pos] = point
        self.classes[self.row_pos] = cls
        self.row_pos = (self.row_pos + 1) % len(self.rows)
        self.n_rows = min(self.n_rows + 1, len(self.rows))
        return False

    def far_share(self) -> tuple[int, float]:
        """Recent queries checked against the reference, and the share of them that were far."""
        return self.checked, (self.far / self.checked if self.checked else 0.0)

    def forget_reference_checks(self) -> None:
        """Drop the reference checks: they were made against a reference that no longer fits."""
        self.offs.fill(-1)
        self.checked = self.far = 0

    def forget_queries(self) -> None:
        """Start afresh after a shift every caller shared (a unit change, a pipeline sending other
        data): distances between queries from before it and after it measure the shift, not the
        caller, and split in two (an ML engineer's walk-through had 20 ordinary callers flagged at
        W 0.75 so). The window's own counts stay."""
        self.forget_reference_checks()
        self.n_rows = self.row_pos = 0
        self.dists.fill(np.nan)
        self.moved.fill(0)
        self.n_records = self.record_pos = 0

    def start_window(self) -> None:
        """Reset the per-window counts (the rings carry over)."""
        self.window_queries = 0
        self.window_repeats = 0
        self.window_checked = 0
        self.window_far = 0

    def verdict(self, *, min_queries: int, prada_delta: float, off_share: float,
                step_test: bool = True) -> QueryVerdict:
        """Run the tests on the recent distances and reference checks, when there are enough;
        the repeated-step test only with ``step_test`` (the model is known not to be a lattice)."""
        recorded = self.dists[: self.n_records]
        kept = ~np.isnan(recorded)
        dists = recorded[kept].astype(np.float64)
        checked, far = self.far_share()
        share = far if checked else None
        off_flag = checked >= min_queries and far >= off_share
        if len(dists) < min_queries:
            return QueryVerdict(len(dists), None, None, None, None, None, checked, share, False, False,
                                off_flag)
        logs = np.log(dists)
        q25, q75 = np.percentile(logs, [25, 75])
        iqr = float(q75 - q25)
        regular = iqr < REGULAR_SPACING_IQR
        w = trimmed_w(logs)
        # Only steps that moved several features count: augmentation moves every feature, while
        # a person nudging one field of the last query (a what-if slider, a count + 1) moves one.
        width = self.rows.shape[1]
        several = self.moved[: self.n_records][kept] >= max(2, (width + 1) // 2)
        repeated = repeated_share(logs[several]) * float(several.mean())
        step = step_test and repeated >= REPEATED_STEP_SHARE
        low, median, p95 = (float(v) for v in np.percentile(dists, [0, 50, 95]))
        return QueryVerdict(len(dists), w, iqr, low, median, p95, checked, share,
                            regular or step or w < prada_delta, regular, off_flag, repeated, step)
