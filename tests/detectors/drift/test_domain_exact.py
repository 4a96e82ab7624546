"""The domain classifier's shortcuts give scikit-learn's numbers exactly, so no AUC (or verdict) moves.

The classifier scores each fold with its own ROC AUC (sklearn's ``roc_auc_score`` spent as long
checking its inputs as the fold took to predict) and reuses the fold split of a balanced sample
of a given size; both must be what scikit-learn computes, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from inferwatch.detectors.drift import domain


@pytest.mark.parametrize("ties", ["none", "coarse", "grouped", "all"])
def test_the_fold_auc_is_sklearns_to_the_last_bit(ties: str) -> None:
    rng = np.random.default_rng({"none": 0, "coarse": 1, "grouped": 2, "all": 3}[ties])
    differ = []
    for size in [4, 5, 17, 100, 667, 1333, 2000]:
        for _ in range(40):
            labels = rng.integers(0, 2, size)
            labels[:2] = [0, 1]  # both classes, as every stratified fold has
            scores = 1.0 / (1.0 + np.exp(-(rng.normal(size=size) + 0.7 * labels)))
            if ties == "coarse":
                scores = np.round(scores, 1)
            elif ties == "grouped":
                scores = np.round(scores * 4) / 4 + labels * rng.random(size) * 0.01
            elif ties == "all":
                scores = np.full(size, 0.5)
            if domain._roc_auc(labels, scores) != roc_auc_score(labels, scores):
                differ.append(size)
    assert differ == []


def test_the_fold_auc_refuses_a_single_class() -> None:
    with pytest.raises(ValueError, match="both classes"):
        domain._roc_auc(np.zeros(10, dtype=np.int64), np.linspace(0.0, 1.0, 10))


@pytest.mark.parametrize(("per_side", "folds", "seed"), [(50, 3, 0), (1000, 3, 0), (2000, 3, 7), (333, 5, 1)])
def test_the_reused_split_is_stratified_kfolds(per_side: int, folds: int, seed: int) -> None:
    y = np.repeat(np.array([0, 1], dtype=np.int64), per_side)
    expected = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    for _ in range(2):  # computed, then reused
        got = domain._splits(y, folds, seed)
        assert len(got) == folds
        for (train, held), (want_train, want_held) in zip(got, expected, strict=True):
            assert np.array_equal(train, want_train)
            assert np.array_equal(held, want_held)
    unbalanced = np.array([0, 1] * 30 + [1] * 10, dtype=np.int64)  # not the balanced layout: computed
    for (train, held), (want_train, want_held) in zip(
            domain._splits(unbalanced, 3, 0),
            StratifiedKFold(3, shuffle=True, random_state=0).split(np.zeros(70), unbalanced), strict=True):
        assert np.array_equal(train, want_train)
        assert np.array_equal(held, want_held)


def test_the_domain_auc_is_the_plain_cross_validated_one() -> None:
    """The whole result against a straightforward scikit-learn cross-validation of the same rows."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(4)
    ref = rng.normal(size=(900, 3))
    cur = rng.normal(size=(700, 3)) + np.array([0.0, 0.6, 0.0])
    result = domain.domain_auc(ref, cur, feature_names=["a", "b", "c"], seed=3)
    assert result is not None
    gen = np.random.default_rng(3)
    ref_rows, cur_rows = domain._balanced(len(ref), len(cur), 2000, gen)
    x = np.vstack([ref[ref_rows], cur[cur_rows]])
    y = np.repeat(np.array([0, 1], dtype=np.int64), len(ref_rows))
    min_leaf = int(np.clip(len(y) * 2 // 3 // 40, *domain.TREE_MIN_LEAF))
    aucs = []
    for train, held in StratifiedKFold(3, shuffle=True, random_state=3).split(np.zeros(len(y)), y):
        model = HistGradientBoostingClassifier(
            max_iter=domain.TREES, learning_rate=domain.TREE_LEARNING_RATE, max_depth=domain.TREE_DEPTH,
            max_bins=domain.TREE_BINS,
            min_samples_leaf=min_leaf, early_stopping=False, random_state=3).fit(x[train], y[train])
        aucs.append(float(roc_auc_score(y[held], model.predict_proba(x[held])[:, 1])))
    assert result.auc == float(np.mean(aucs))
    assert result.auc > 0.55
