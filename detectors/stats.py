"""Statistics shared by the detectors: multiple-testing control, binning, PSI, sampling.

Each function is small and pure so that drift detectors (numeric now; categorical, output and
text drift later) compute the same statistic the same way, and the evidence they report means
the same thing everywhere.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

PSI_EPSILON = 1e-4
"""Proportion used in place of an empty bin, so PSI stays finite."""


def holm_adjust(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given.

    Reject hypothesis *i* at family-wise error rate ``alpha`` when ``adjusted[i] < alpha``.
    Holm is uniformly more powerful than Bonferroni and needs no independence assumption,
    which matters because features of one model are rarely independent.

    >>> [round(p, 3) for p in holm_adjust([0.01, 0.04, 0.03])]
    [0.03, 0.06, 0.06]
    """
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values), in the order given.

    Reject hypothesis *i* at false discovery rate ``alpha`` when ``adjusted[i] < alpha``: among
    the features flagged, at most a share ``alpha`` are expected to be false alarms. Less strict
    than :func:`holm_adjust` (which bounds the chance of even one false alarm), so it finds more
    drifted features when many shift at once; valid under positive dependence between tests.

    >>> [round(q, 3) for q in benjamini_hochberg([0.01, 0.04, 0.03])]
    [0.03, 0.04, 0.04]
    >>> benjamini_hochberg([0.5, 0.9])
    [0.9, 0.9]
    """
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i], reverse=True)
    adjusted = [0.0] * m
    running = 1.0
    for position, i in enumerate(order):
        rank = m - position  # 1-based rank in ascending order of p
        running = min(running, pvalues[i] * m / rank)
        adjusted[i] = running
    return adjusted


def quantile_edges(reference: FloatArray, bins: int = 10) -> FloatArray:
    """Inner bin edges at the reference's quantiles (``bins - 1`` edges, fewer when tied).

    Values are assigned with :func:`bin_counts`; ties collapse edges, so a feature with few
    distinct values gets fewer, fuller bins rather than empty ones.

    >>> quantile_edges(np.arange(10.0), bins=2).tolist()
    [4.5]
    """
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    probs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    return np.unique(np.quantile(reference, probs))


def bin_counts(values: FloatArray, edges: FloatArray) -> IntArray:
    """Counts of ``values`` in the ``len(edges) + 1`` bins that ``edges`` delimit.

    A value equal to an edge goes to the bin above it (``x >= edge``).

    >>> bin_counts(np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 2.5])).tolist()
    [1, 2, 1]
    """
    index = np.searchsorted(edges, values, side="right")
    return np.bincount(index, minlength=len(edges) + 1).astype(np.int64)


def psi(reference_counts: IntArray, current_counts: IntArray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index between two histograms on the same bins.

    ``sum((c - r) * ln(c / r))`` over bin proportions, with empty bins counted as ``epsilon``.
    Rule of thumb: below 0.1 stable, 0.1-0.2 moderate, 0.2 and above a real shift.

    >>> round(psi(np.array([50, 50]), np.array([50, 50])), 6)
    0.0
    >>> round(psi(np.array([50, 50]), np.array([90, 10])), 3)
    0.879
    """
    ref = np.maximum(reference_counts / max(int(reference_counts.sum()), 1), epsilon)
    cur = np.maximum(current_counts / max(int(current_counts.sum()), 1), epsilon)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def mean_std(values: FloatArray) -> tuple[float, float]:
    """Mean and sample standard deviation; ``(0.0, 0.0)`` when empty, std 0.0 for one value.

    >>> mean_std(np.array([1.0, 3.0]))
    (2.0, 1.4142135623730951)
    """
    if len(values) == 0:
        return 0.0, 0.0
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return float(np.mean(values)), std


class Reservoir:
    """A uniform sample of at most ``capacity`` values from a stream (Vitter's algorithm R).

    Memory stays bounded however many values arrive; ``seen`` counts them all. The random
    generator is passed in so that a detector seeds one generator and stays deterministic.

    >>> r = Reservoir(capacity=3, rng=random.Random(0))
    >>> for x in range(100):
    ...     r.add(float(x))
    >>> r.seen, len(r.values())
    (100, 3)
    """

    __slots__ = ("_rng", "_values", "capacity", "seen")

    def __init__(self, capacity: int, rng: random.Random) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.seen = 0
        self._rng = rng
        self._values: list[float] = []

    def add(self, value: float) -> None:
        """Offer one value to the sample."""
        self.seen += 1
        if len(self._values) < self.capacity:
            self._values.append(value)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.capacity:
            self._values[slot] = value

    def values(self) -> FloatArray:
        """The sampled values as an array (a copy)."""
        return np.asarray(self._values, dtype=np.float64)
