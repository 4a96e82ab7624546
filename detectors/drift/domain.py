"""Domain-classifier drift: can a model tell this window's rows from the reference's?

Label reference rows 0 and current rows 1, train a small classifier with cross-validation and
measure how well it tells them apart on rows it did not train on (ROC AUC; 0.5 means the two
samples look alike, 1.0 means they are trivially apart). Unlike one test per feature, this sees
changes in how features move *together*: a correlation that breaks while every marginal stays
the same, a combination of features that was never seen before.

* :func:`domain_auc` — numeric rows (``input.*`` features of sampled events), gradient-boosted
  trees (:class:`~sklearn.ensemble.HistGradientBoostingClassifier`, 20 trees of depth 3). Trees
  are the choice because they split on one feature inside a split on another, so they see a
  broken correlation; a logistic regression on the same rows scores a line through the
  features, which is no better than chance when only the correlation changed (pinned by
  ``tests/detectors/drift/test_domain.py``). Missing and non-finite values become a value below
  the column's smallest, which the trees split off, so a surge of missing values is itself a
  detectable change. The top
  features are the drop in held-out AUC when one feature's column is shuffled, on one fold
  (``d`` extra predictions).
* :func:`text_domain_auc` — prompts as hashed character n-gram sets
  (:func:`~inferwatch.detectors.drift.textstats.ngram_hashes`), binary and L2-normalised per
  row, logistic regression (liblinear, dual). No top features: a hashed n-gram index means nothing
  to a person.

Both balance the classes by a seeded subsample of at most ``max_rows`` rows a side, run
``folds``-fold stratified cross-validation, and report the **mean held-out AUC over the folds**.
From :data:`HOLDOUT_ROWS` rows a side (``holdout_from``) they fit once instead: a stratified
split in halves, train on one, the AUC and p-value on the other (``folds`` is then 1 in the
result). With that many rows one held-out half already measures the AUC about as well as the
folds together, for a third of the cost: on 4 features with a correlation broken in 30 / 50 /
100 % of rows, 2,000 rows a side, 40 runs each, mean AUC 0.557 / 0.607 / 0.727 held out against
0.554 / 0.603 / 0.728 with 3 folds (sd 0.010-0.014 against 0.007-0.010), the same AUC under no
change (mean 0.50, sd 0.012 either way), 17 ms against 45; with 1,000 rows a side 0.547 / 0.591
/ 0.716 against 0.550 / 0.598 / 0.722, null sd 0.014 either way, 15 ms against 40. Below it the
folds keep every row in a test, which small samples need.

The trees are 20 at learning rate 0.3 on 64 histogram bins (until 2026-11-27, 30 at 0.2 on
scikit-learn's 255): the same power for about two thirds of the time. Correlation 0.8 between two
of 4 features broken in 30 / 50 / 100 % of rows, 5,000 reference rows, 40 runs each: mean AUC
0.542 / 0.590 / 0.714 with 1,000 rows a side against 0.541 / 0.584 / 0.712, and 0.552 / 0.597 /
0.727 with 2,000 against 0.552 / 0.596 / 0.723; with no change mean 0.50 and 99th percentile
0.533 / 0.521 against 0.534 / 0.519; 15-18 ms a call against 20-28.

The p-value (for AUC > 0.5) is exact per fold and valid overall: in each fold the model never
saw the held-out rows, so under "no drift" their one-sided Mann-Whitney U test
(:func:`scipy.stats.mannwhitneyu`, ``alternative="greater"``; U / (n1 n0) is that fold's AUC) is
a valid test; the folds' tests are combined by Bonferroni (``folds * min p``), which holds
whatever their dependence. The textbook shortcut — one Mann-Whitney test on all out-of-fold
scores pooled — is not valid: out-of-fold scores are not independent (the fold models share
training rows; the folds' statistics correlate at about 0.3), and in null simulations (10
standard normal features, 50 / 100 / 500 / 2,000 rows a side, 200-300 runs each) pooling gave
11 / 9 / 10 / 12.5 % of p-values under 0.05, the Bonferroni combination 4 / 4.3 / 2 / 7 %.
Either way, with thousands of rows a side a tiny difference is "significant": **the floor on
the AUC is what decides** whether a difference matters (:meth:`DomainResult.drifted`). The AUC
in those null runs: mean 0.50, standard deviation 0.076 / 0.051 / 0.023 / 0.011, 99th
percentile 0.66 / 0.62 / 0.56 / 0.53. Text, 30 random halves of 3,916 real prompts: mean 0.50,
sd 0.010, largest 0.53, 1 p-value of 30 under 0.05.

Fewer than :data:`MIN_ROWS` rows on either side: both functions return ``None`` (too few to
train and test anything; the caller skips the test for this window, as the per-feature tests
skip a feature with too few values).

Runtime, CPU time on one thread, with three folds: 2,000 + 2,000 rows x 10 features 0.11 s
(0.07 s the three fits, the rest the shuffles at ~4.5 ms a feature, which run only when the AUC
reaches ``rank_above``), x 50 features 0.34 s, x 200 features 1.7 s; text, 2,000 + 1,916 real
prompts (about 200 n-grams each), 0.14 s. The single fit from :data:`HOLDOUT_ROWS` rows a side
takes about a third of the folds' time (each of the three fits costs about as much, most of it
scikit-learn's fixed cost per tree). The boosted trees run on
one OpenMP thread: their default of a thread per core turned 0.1 s into 3-4 s when the cores
were busy, and the detector service scales by processes, not threads.

>>> rng = np.random.default_rng(0)
>>> ref = rng.normal(size=(500, 3))
>>> cur = rng.normal(size=(500, 3)) + np.array([0.0, 1.0, 0.0])
>>> result = domain_auc(ref, cur, feature_names=["a", "b", "c"])
>>> result is not None and result.auc > 0.65 and result.top_features[0][0]
'b'
>>> domain_auc(ref[:20], cur[:20], feature_names=["a", "b", "c"]) is None
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from itertools import chain
from typing import Any, Protocol

import numpy as np
from scipy.stats import mannwhitneyu

from inferwatch.detectors.stats import FloatArray, IntArray

MIN_ROWS = 50
"""Fewest rows a side for a domain classifier: below this the functions return ``None``."""
MAX_FOLDS = 10
HOLDOUT_ROWS = 1_000
"""Rows a side from which one split in halves replaces the folds (see the module docstring)."""
TREES = 20
TREE_DEPTH = 3
TREE_LEARNING_RATE = 0.3
TREE_BINS = 64
"""Histogram bins per feature (scikit-learn's default is 255). A tree of depth 3 uses a few
thresholds per feature, and 64 quantile bins place them as well (see the module docstring)."""
TREE_MIN_LEAF = (5, 40)
"""Fewest training rows per leaf: 1/40 of the training rows, within these bounds."""
EVIDENCE_FEATURES = 5
TELLING_DROP = 0.005
"""The smallest AUC drop a feature needs to be named as telling (it shows as 0.01)."""
"""Features with a positive AUC drop spelled out in :meth:`DomainResult.evidence`."""
ROWS_MODEL = "gradient-boosted trees"
TEXT_MODEL = "logistic regression on hashed character n-grams"


@dataclass(frozen=True)
class DomainResult:
    """How well a classifier told current rows from reference rows, on rows it had not seen.

    ``auc`` is the mean held-out ROC AUC over the folds (0.5 = indistinguishable), ``folds``
    their number (1: one held-out half, see :data:`HOLDOUT_ROWS`); ``p_value``
    is for "AUC > 0.5" (see the module docstring); ``top_features`` lists ``(feature, AUC drop
    when the feature is shuffled)``, largest first (empty for text); ``rows_per_side`` is how
    many rows of each side were used after balancing.
    """

    auc: float
    p_value: float
    n_reference: int
    n_current: int
    rows_per_side: int
    folds: int
    model: str
    top_features: tuple[tuple[str, float], ...] = field(default=())

    def drifted(self, *, auc_floor: float, alpha: float) -> bool:
        """Both significant (``p_value < alpha``) and large enough (``auc >= auc_floor``).

        >>> DomainResult(0.62, 1e-9, 900, 800, 800, 3, ROWS_MODEL).drifted(auc_floor=0.6, alpha=0.01)
        True
        >>> DomainResult(0.53, 1e-9, 900_000, 800_000, 2000, 3, ROWS_MODEL).drifted(auc_floor=0.6, alpha=0.01)
        False
        """
        return self.p_value < alpha and self.auc >= auc_floor

    def evidence(self, *, auc_floor: float | None = None, alpha: float | None = None) -> dict[str, Any]:
        """What was measured, in words an on-call engineer reads, plus the numbers (JSON-safe).

        >>> result = DomainResult(0.81, 1e-12, 5000, 3000, 2000, 3, ROWS_MODEL,
        ...                       (("input.age", 0.21), ("input.income", 0.004), ("input.zip", 0.0)))
        >>> print(result.evidence(auc_floor=0.6)["summary"])  # doctest: +NORMALIZE_WHITESPACE
        a classifier (gradient-boosted trees) told current rows from reference rows with AUC 0.81
        (0.5 = indistinguishable; floor 0.6), p = 1e-12; most telling: input.age (AUC drop 0.21 when
        shuffled)
        """
        what = "prompts" if self.model == TEXT_MODEL else "rows"
        summary = (f"a classifier ({self.model}) told current {what} from reference {what} with AUC "
                   f"{self.auc:.2f} (0.5 = indistinguishable"
                   + (f"; floor {auc_floor:g}" if auc_floor is not None else "")
                   + f"), p = {self.p_value:.2g}")
        # A feature whose shuffling barely moved the AUC ("drop 0.00") tells nothing: named only
        # from a tenth of the largest drop, and at least half a point.
        largest = max((drop for _, drop in self.top_features), default=0.0)
        telling = [(name, drop) for name, drop in self.top_features
                   if drop >= max(TELLING_DROP, 0.1 * largest)][:EVIDENCE_FEATURES]
        if telling:
            summary += "; most telling: " + ", ".join(
                f"{name} (AUC drop {drop:.2f} when shuffled)" for name, drop in telling)
        out: dict[str, Any] = {
            "test": "domain classifier",
            "summary": summary,
            "model": self.model,
            "auc": round(self.auc, 4),
            "p_value": self.p_value,
            "reference_rows": self.n_reference,
            "current_rows": self.n_current,
            "rows_per_side": self.rows_per_side,
            "folds": self.folds,
            "validation": ("one split in halves: trained on one, tested on the other" if self.folds == 1
                           else f"{self.folds}-fold cross-validation"),
            "top_features": [{"feature": name, "auc_drop": round(drop, 4)} for name, drop in telling],
        }
        if auc_floor is not None:
            out["auc_floor"] = auc_floor
        if alpha is not None:
            out["alpha"] = alpha
        if auc_floor is not None and alpha is not None:
            out["drifted"] = self.drifted(auc_floor=auc_floor, alpha=alpha)
        return out


class _Classifier(Protocol):
    def fit(self, x: Any, y: IntArray) -> Any: ...
    def predict_proba(self, x: Any) -> FloatArray: ...


@dataclass(frozen=True)
class _Fold:
    auc: float
    p_value: float
    model: _Classifier
    held_out: IntArray


def _check_options(folds: int, max_rows: int, holdout_from: int | None) -> None:
    if not 2 <= folds <= MAX_FOLDS:
        raise ValueError(f"folds must be between 2 and {MAX_FOLDS}, got {folds}")
    if max_rows < MIN_ROWS:
        raise ValueError(f"max_rows must be at least MIN_ROWS={MIN_ROWS}, got {max_rows}")
    if holdout_from is not None and holdout_from < MIN_ROWS:
        raise ValueError(f"holdout_from must be at least MIN_ROWS={MIN_ROWS} (or None), got {holdout_from}")


def _fits(per_side: int, folds: int, holdout_from: int | None) -> int:
    """How many models to fit: ``folds``, or 1 (one held-out half) from ``holdout_from`` rows a side."""
    return 1 if holdout_from is not None and per_side >= holdout_from else folds


def _balanced(n_reference: int, n_current: int, max_rows: int,
              rng: np.random.Generator) -> tuple[IntArray, IntArray]:
    """Seeded subsample indices, the same count from each side."""
    m = min(n_reference, n_current, max_rows)
    return (np.sort(rng.choice(n_reference, m, replace=False)),
            np.sort(rng.choice(n_current, m, replace=False)))


def _one_sided_p(scores: FloatArray, labels: IntArray) -> float:
    return float(mannwhitneyu(scores[labels == 1], scores[labels == 0], alternative="greater").pvalue)


def _roc_auc(labels: IntArray, scores: FloatArray) -> float:
    """ROC AUC of 0/1 ``labels`` ranked by ``scores``: the very number scikit-learn's
    ``roc_auc_score`` returns, without its input checks.

    Those checks cost about 3 ms a call, as much as predicting the fold; the arithmetic is
    sklearn's own (``roc_curve`` with its dropped collinear points, then the trapezoidal rule),
    step for step, so the AUC is identical to the last bit (a test holds it to that, ties
    included). Both classes must be present.
    """
    from scipy.integrate import trapezoid

    order = np.argsort(scores, kind="stable")[::-1]  # descending; order within ties does not matter
    ranked = scores[order]
    truth = (labels[order] == 1).astype(np.float64)
    thresholds = np.concatenate([np.nonzero(np.diff(ranked))[0], [truth.size - 1]])
    tps = np.cumsum(truth, dtype=np.float64)[thresholds]
    fps = 1 + thresholds.astype(np.float64) - tps
    if fps.shape[0] > 2:
        keep = np.concatenate([[True], np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), [True]])
        fps, tps = fps[keep], tps[keep]
    fps = np.concatenate([[0.0], fps])
    tps = np.concatenate([[0.0], tps])
    if fps[-1] <= 0 or tps[-1] <= 0:
        raise ValueError("ROC AUC needs both classes among the labels")
    return float(trapezoid(tps / tps[-1], fps / fps[-1]))


@lru_cache(maxsize=8)
def _balanced_splits(per_side: int, folds: int, seed: int) -> tuple[tuple[IntArray, IntArray], ...]:
    """``StratifiedKFold(folds, shuffle=True, random_state=seed)`` on ``per_side`` zeros then as
    many ones: the same every window of the same size, so computed once (arrays read-only).

    A few sizes are kept: busy models sit at ``max_rows`` a side window after window; a quiet
    model's sizes vary, and keeping every size seen would cost memory for nothing."""
    from sklearn.model_selection import StratifiedKFold

    y = np.repeat(np.array([0, 1], dtype=np.int64), per_side)
    out = []
    for train, held_out in StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
        train.flags.writeable = False
        held_out.flags.writeable = False
        out.append((train, held_out))
    return tuple(out)


def _splits(y: IntArray, folds: int, seed: int) -> Sequence[tuple[IntArray, IntArray]]:
    half = len(y) // 2
    if len(y) == 2 * half and not y[:half].any() and bool((y[half:] == 1).all()):
        return _balanced_splits(half, folds, seed)
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def _cross_validate(x: Any, y: IntArray, make_model: Callable[[], _Classifier], folds: int,
                    seed: int) -> list[_Fold]:
    """Fit and score ``folds`` stratified folds; ``folds=1``: the first of two (one split in halves)."""
    splits = _splits(y, 2, seed)[:1] if folds == 1 else _splits(y, folds, seed)
    out = []
    for train, held_out in splits:
        model = make_model()
        model.fit(x[train], y[train])
        scores = model.predict_proba(x[held_out])[:, 1]
        out.append(_Fold(_roc_auc(y[held_out], scores), _one_sided_p(scores, y[held_out]),
                         model, held_out))
    return out


def _combined(fold_results: Sequence[_Fold]) -> tuple[float, float]:
    """Mean held-out AUC, and the Bonferroni-combined one-sided p-value."""
    auc = float(np.mean([f.auc for f in fold_results]))
    p_value = min(1.0, len(fold_results) * min(f.p_value for f in fold_results))
    return auc, p_value


@cache
def _threadpools() -> Any:
    from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

    return ThreadpoolController()


def _unchecked() -> Any:
    """scikit-learn without re-checking what is known here: the models' parameters are constants
    and ``x`` is finite (:func:`_missing_below`); saves about 1 ms of a 15 ms fit, same models."""
    import sklearn

    return sklearn.config_context(assume_finite=True, skip_parameter_validation=True)


def _shuffle_drops(fold: _Fold, x: FloatArray, y: IntArray, names: Sequence[str],
                   rng: np.random.Generator) -> tuple[tuple[str, float], ...]:
    """Drop in the fold's held-out AUC when each feature's column is shuffled, largest first."""
    held_x, held_y = x[fold.held_out], y[fold.held_out]
    drops = []
    for j, name in enumerate(names):
        shuffled = held_x.copy()
        shuffled[:, j] = rng.permutation(shuffled[:, j])
        auc = _roc_auc(held_y, fold.model.predict_proba(shuffled)[:, 1])
        drops.append((name, round(fold.auc - auc, 6)))
    return tuple(sorted(drops, key=lambda item: (-item[1], item[0])))


def _missing_below(x: FloatArray) -> FloatArray:
    """Missing and non-finite values set one below their column's smallest value (0 if none).

    Trees split such a value off as they would a missing one, and scikit-learn's native missing
    handling fails on a column with no value at all in a training fold.
    """
    bad = ~np.isfinite(x)
    if bad.any():
        lowest = np.where(bad, np.inf, x).min(axis=0)
        fill = np.where(np.isfinite(lowest), lowest - 1.0, 0.0)
        x = np.where(bad, fill, x)
    return x


def domain_auc(reference: FloatArray, current: FloatArray, *, feature_names: Sequence[str], seed: int = 0,
               folds: int = 3, max_rows: int = 2000, rank_above: float | None = None,
               holdout_from: int | None = HOLDOUT_ROWS) -> DomainResult | None:
    """Domain-classifier drift of numeric rows (``n x d`` arrays, same columns, NaN = missing).

    Features are ranked (``top_features``, one extra prediction per feature) only when the AUC
    reaches ``rank_above`` (always when ``None``): the drift detector passes its AUC floor, so a
    quiet window does not pay for explaining a drift it does not report.

    Returns ``None`` when either side has fewer than :data:`MIN_ROWS` rows; raises
    ``ValueError`` on mismatched shapes or names and bad options.
    """
    _check_options(folds, max_rows, holdout_from)
    ref, cur = np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64)
    if ref.ndim != 2 or cur.ndim != 2 or ref.shape[1] != cur.shape[1]:
        raise ValueError(f"reference and current must be 2-D with the same columns, "
                         f"got shapes {ref.shape} and {cur.shape}")
    if len(feature_names) != ref.shape[1] or ref.shape[1] == 0:
        raise ValueError(f"feature_names must name each of the {ref.shape[1]} columns (at least one), "
                         f"got {len(feature_names)}")
    if len(ref) < MIN_ROWS or len(cur) < MIN_ROWS:
        return None
    rng = np.random.default_rng(seed)
    ref_rows, cur_rows = _balanced(len(ref), len(cur), max_rows, rng)
    x = _missing_below(np.vstack([ref[ref_rows], cur[cur_rows]]))
    y = np.repeat(np.array([0, 1], dtype=np.int64), len(ref_rows))
    fits = _fits(len(ref_rows), folds, holdout_from)
    training_rows = len(y) // 2 if fits == 1 else len(y) * (folds - 1) // folds

    from sklearn.ensemble import HistGradientBoostingClassifier

    min_leaf = int(np.clip(training_rows // 40, *TREE_MIN_LEAF))

    def make_model() -> _Classifier:
        model: _Classifier = HistGradientBoostingClassifier(
            max_iter=TREES, learning_rate=TREE_LEARNING_RATE, max_depth=TREE_DEPTH, max_bins=TREE_BINS,
            min_samples_leaf=min_leaf, early_stopping=False, random_state=seed)
        return model

    with _threadpools().limit(limits=1, user_api="openmp"), _unchecked():
        fold_results = _cross_validate(x, y, make_model, fits, seed)
        auc, p_value = _combined(fold_results)
        top = (_shuffle_drops(fold_results[0], x, y, feature_names, rng)
               if rank_above is None or auc >= rank_above else ())
    return DomainResult(auc=auc, p_value=p_value, n_reference=len(ref), n_current=len(cur),
                        rows_per_side=len(ref_rows), folds=fits, model=ROWS_MODEL, top_features=top)


def _ngram_matrix(rows: Sequence[Sequence[int]], dims: int) -> Any:
    """Binary CSR matrix (``len(rows) x dims``) of hashed n-gram rows, each row L2-normalised."""
    from scipy.sparse import csr_matrix

    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    indices = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
    if len(indices) and (indices.min() < 0 or indices.max() >= dims):
        raise ValueError(f"n-gram indices must lie in [0, dims={dims}); got {indices.min()}..{indices.max()}")
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    data = np.repeat(1.0 / np.sqrt(np.maximum(lengths, 1)), lengths)  # ngram_hashes rows hold no duplicates
    return csr_matrix((data, indices, indptr), shape=(len(rows), dims))


def text_domain_auc(reference: Sequence[Sequence[int]], current: Sequence[Sequence[int]], *,
                    dims: int = 2**18, seed: int = 0, folds: int = 3,
                    max_rows: int = 2000, holdout_from: int | None = HOLDOUT_ROWS) -> DomainResult | None:
    """Domain-classifier drift of prompts given as hashed n-gram index lists (one list per prompt).

    Returns ``None`` when either side has fewer than :data:`MIN_ROWS` prompts; raises
    ``ValueError`` on an index outside ``[0, dims)`` and bad options.
    """
    _check_options(folds, max_rows, holdout_from)
    if len(reference) < MIN_ROWS or len(current) < MIN_ROWS:
        return None
    rng = np.random.default_rng(seed)
    ref_rows, cur_rows = _balanced(len(reference), len(current), max_rows, rng)
    rows = [reference[i] for i in ref_rows] + [current[i] for i in cur_rows]
    x = _ngram_matrix(rows, dims)
    y = np.repeat(np.array([0, 1], dtype=np.int64), len(ref_rows))

    from sklearn.linear_model import LogisticRegression

    def make_model() -> _Classifier:
        # The dual problem: far more columns than rows, where liblinear's dual solver is ~10x faster.
        model: _Classifier = LogisticRegression(solver="liblinear", dual=True, C=1.0, random_state=seed)
        return model

    with _unchecked():
        fits = _fits(len(ref_rows), folds, holdout_from)
        auc, p_value = _combined(_cross_validate(x, y, make_model, fits, seed))
    return DomainResult(auc=auc, p_value=p_value, n_reference=len(reference), n_current=len(current),
                        rows_per_side=len(ref_rows), folds=fits, model=TEXT_MODEL)

