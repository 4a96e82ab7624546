"""Domain-classifier drift: rows (boosted trees) and prompts (hashed n-grams, logistic regression)."""

from __future__ import annotations

import doctest
import json
import random
from collections.abc import Callable

import numpy as np
import pytest

from inferwatch.detectors.drift import domain
from inferwatch.detectors.drift.domain import (
    HOLDOUT_ROWS,
    MIN_ROWS,
    ROWS_MODEL,
    TEXT_MODEL,
    DomainResult,
    domain_auc,
    text_domain_auc,
)
from inferwatch.detectors.drift.textstats import ngram_hashes
from inferwatch.detectors.stats import FloatArray

NAMES = ["x0", "x1", "x2", "x3", "x4"]


def normal_rows(seed: int, n: int, d: int = 5) -> FloatArray:
    return np.random.default_rng(seed).normal(size=(n, d))


def correlated_rows(seed: int, n: int, rho: float, d: int = 5) -> FloatArray:
    """Standard normal columns; x0 and x1 correlated ``rho``, marginals N(0, 1) either way."""
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n, d))
    rows[:, 1] = rho * rows[:, 0] + np.sqrt(1 - rho**2) * rng.normal(size=n)
    return rows


# --- rows ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [300, 2_000])
def test_same_distribution_is_indistinguishable_and_not_significant(n: int) -> None:
    result = domain_auc(normal_rows(1, n), normal_rows(2, n), feature_names=NAMES)
    assert result is not None
    assert abs(result.auc - 0.5) < 0.05
    assert result.p_value > 0.05
    assert not result.drifted(auc_floor=0.6, alpha=0.01)


def test_null_p_values_are_not_anti_conservative() -> None:
    # Per-fold Mann-Whitney tests combined by Bonferroni: 3 of these 60 stationary comparisons
    # fall under 0.05. One Mann-Whitney test on the pooled out-of-fold scores gives 9 of 60.
    pvalues = []
    for s in range(60):
        result = domain_auc(normal_rows(100 + s, 100), normal_rows(200 + s, 100), feature_names=NAMES, seed=s)
        assert result is not None
        pvalues.append(result.p_value)
    assert sum(p < 0.05 for p in pvalues) <= 5


def test_mean_shift_in_one_feature_is_caught_and_named_first() -> None:
    current = normal_rows(2, 1_000)
    current[:, 3] += 0.8
    result = domain_auc(normal_rows(1, 1_000), current, feature_names=NAMES)
    assert result is not None
    assert result.auc > 0.65  # the best any classifier can do here is 0.71
    assert result.p_value < 1e-10
    assert result.drifted(auc_floor=0.6, alpha=0.01)
    assert result.top_features[0][0] == "x3"
    assert result.top_features[0][1] > 0.1
    assert all(drop < 0.03 for _, drop in result.top_features[1:])


def test_broken_correlation_with_unchanged_marginals_is_caught() -> None:
    reference = correlated_rows(1, 2_000, rho=0.9)
    current = correlated_rows(2, 2_000, rho=0.0)
    # What makes the case hard: each feature alone looks the same.
    assert np.allclose(reference.mean(axis=0), current.mean(axis=0), atol=0.1)
    assert np.allclose(reference.std(axis=0), current.std(axis=0), atol=0.1)

    result = domain_auc(reference, current, feature_names=NAMES)

    assert result is not None
    assert result.auc > 0.65
    assert result.p_value < 1e-10
    assert {name for name, _ in result.top_features[:2]} == {"x0", "x1"}


def test_a_linear_model_would_miss_the_broken_correlation() -> None:
    # Why the rows model is trees: logistic regression on the same rows is no better than chance.
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    x = np.vstack([correlated_rows(1, 2_000, rho=0.9), correlated_rows(2, 2_000, rho=0.0)])
    y = np.repeat([0, 1], 2_000)
    linear_auc = cross_val_score(LogisticRegression(), x, y, cv=3, scoring="roc_auc").mean()
    assert abs(linear_auc - 0.5) < 0.03


def test_missing_value_surge_is_caught_and_named() -> None:
    current = normal_rows(2, 800)
    current[::3, 2] = np.nan  # a third of x2 now missing
    result = domain_auc(normal_rows(1, 800), current, feature_names=NAMES)
    assert result is not None
    assert result.auc > 0.6
    assert result.top_features[0][0] == "x2"


def test_non_finite_values_and_empty_columns_are_handled() -> None:
    reference, current = normal_rows(1, 300), normal_rows(2, 300)
    reference[0, 0], current[1, 1] = np.inf, -np.inf
    reference[:, 4] = current[:, 4] = np.nan  # a feature no sampled event carried
    current[5, 4] = 1.0  # ... but one: it lands in a single fold
    result = domain_auc(reference, current, feature_names=NAMES)
    assert result is not None
    assert abs(result.auc - 0.5) < 0.08


def test_sides_are_balanced_and_capped() -> None:
    result = domain_auc(normal_rows(1, 5_000), normal_rows(2, 300), feature_names=NAMES)
    assert result is not None
    assert (result.n_reference, result.n_current, result.rows_per_side) == (5_000, 300, 300)
    capped = domain_auc(normal_rows(1, 5_000), normal_rows(2, 4_000), feature_names=NAMES, max_rows=500)
    assert capped is not None
    assert capped.rows_per_side == 500


def test_seeded_and_deterministic() -> None:
    shifted = normal_rows(2, 400) + 0.5
    first = domain_auc(normal_rows(1, 400), shifted, feature_names=NAMES, seed=7)
    again = domain_auc(normal_rows(1, 400), shifted, feature_names=NAMES, seed=7)
    other = domain_auc(normal_rows(1, 400), shifted, feature_names=NAMES, seed=8)
    assert first == again
    assert first is not None
    assert other is not None
    assert first != other
    assert abs(first.auc - other.auc) < 0.05


def test_too_few_rows_give_none() -> None:
    assert domain_auc(normal_rows(1, MIN_ROWS - 1), normal_rows(2, 1_000), feature_names=NAMES) is None
    assert domain_auc(normal_rows(1, 1_000), normal_rows(2, MIN_ROWS - 1), feature_names=NAMES) is None
    assert domain_auc(normal_rows(1, MIN_ROWS), normal_rows(2, MIN_ROWS), feature_names=NAMES) is not None


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"current": np.zeros((100, 4))}, "same columns"),
    ({"current": np.zeros(100)}, "2-D"),
    ({"feature_names": ["a", "b"]}, "feature_names"),
    ({"folds": 1}, "folds"),
    ({"folds": 11}, "folds"),
    ({"max_rows": 10}, "max_rows"),
    ({"holdout_from": 10}, "holdout_from"),
])
def test_bad_arguments_raise(kwargs: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {"reference": normal_rows(1, 100), "current": normal_rows(2, 100),
                                    "feature_names": NAMES, **kwargs}
    with pytest.raises(ValueError, match=match):
        domain_auc(**arguments)  # type: ignore[arg-type]


def test_evidence_reads_and_serialises() -> None:
    current = normal_rows(2, 500)
    current[:, 0] *= 2.0
    result = domain_auc(normal_rows(1, 500), current, feature_names=NAMES)
    assert result is not None
    evidence = result.evidence(auc_floor=0.6, alpha=0.01)
    json.dumps(evidence)
    assert evidence["summary"].startswith(
        f"a classifier ({ROWS_MODEL}) told current rows from reference rows with AUC {result.auc:.2f} "
        "(0.5 = indistinguishable; floor 0.6)")
    assert evidence["top_features"][0]["feature"] == "x0"
    assert all(f["auc_drop"] > 0 for f in evidence["top_features"])
    assert evidence["drifted"] is True
    assert [evidence[k] for k in ("reference_rows", "current_rows", "rows_per_side")] == [500, 500, 500]


def test_drifted_needs_both_significance_and_the_floor() -> None:
    significant_but_small = DomainResult(0.53, 1e-30, 10**6, 10**6, 2_000, 3, ROWS_MODEL)
    large_but_noisy = DomainResult(0.7, 0.2, 60, 60, 60, 3, ROWS_MODEL)
    both = DomainResult(0.7, 1e-6, 5_000, 5_000, 2_000, 3, ROWS_MODEL)
    assert not significant_but_small.drifted(auc_floor=0.6, alpha=0.01)
    assert not large_but_noisy.drifted(auc_floor=0.6, alpha=0.01)
    assert both.drifted(auc_floor=0.6, alpha=0.01)


# --- text ----------------------------------------------------------------------------------------

EN_ASKS = ["Can you help me", "Please", "I need you to", "Could you", "Quickly", "I'd like you to"]
EN_TASKS = ["write a cover letter for", "summarise an article about", "explain", "draft an email about",
            "give me three ideas for", "make a study plan for", "list the pros and cons of"]
EN_TOPICS = ["a data analyst job", "the history of Rome", "how vaccines work", "a birthday party",
             "learning to cook", "saving for retirement", "moving to a new city", "climate change",
             "the French revolution", "training for a marathon", "a product launch", "remote work"]
EN_TAILS = ["?", ", thanks.", " in simple words.", " for a beginner.", " in three bullet points.", "."]
FR_ASKS = ["Peux-tu m'aider à", "S'il te plaît,", "J'ai besoin que tu", "Pourrais-tu", "Merci de"]
FR_TASKS = ["écrire une lettre de motivation pour", "résumer un article sur", "expliquer",
            "rédiger un e-mail sur", "me donner trois idées pour", "faire un plan d'étude pour"]
FR_TOPICS = ["un poste d'analyste", "l'histoire de Rome", "le fonctionnement des vaccins",
             "une fête d'anniversaire", "apprendre à cuisiner", "l'épargne pour la retraite",
             "un déménagement", "le changement climatique", "la Révolution française"]
FR_TAILS = [" ?", ", merci.", " avec des mots simples.", " pour un débutant.", " en trois points."]
CODE_NAMES = ["total", "items", "user", "count", "result", "value", "data", "index", "row", "name"]


def english_prompts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(EN_ASKS)} {rng.choice(EN_TASKS)} {rng.choice(EN_TOPICS)}{rng.choice(EN_TAILS)}"
            for _ in range(n)]


def french_prompts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(FR_ASKS)} {rng.choice(FR_TASKS)} {rng.choice(FR_TOPICS)}{rng.choice(FR_TAILS)}"
            for _ in range(n)]


def code_snippets(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b, c = rng.sample(CODE_NAMES, 3)
        out.append(rng.choice([
            f"def get_{a}({b}):\n    return [{c} for {c} in {b} if {c}.{a}]",
            f"for (let i = 0; i < {a}.length; i++) {{ {b} += {a}[i].{c}; }}",
            f"SELECT {a}, {b} FROM {c} WHERE {a} > {rng.randrange(100)};",
            f"{a} = {{'{b}': {rng.randrange(10)}, '{c}': None}}\nprint({a}['{b}'])",
        ]))
    return out


def hashed(texts: list[str]) -> list[list[int]]:
    return [ngram_hashes(t) for t in texts]


def test_text_same_style_is_indistinguishable() -> None:
    result = text_domain_auc(hashed(english_prompts(1, 2_000)), hashed(english_prompts(2, 2_000)))
    assert result is not None
    assert abs(result.auc - 0.5) < 0.05
    assert result.p_value > 0.05
    assert result.model == TEXT_MODEL
    assert result.top_features == ()


@pytest.mark.parametrize("other", [french_prompts, code_snippets])
def test_text_other_language_or_code_is_told_apart(other: Callable[[int, int], list[str]]) -> None:
    current = other(2, 600)
    result = text_domain_auc(hashed(english_prompts(1, 600)), hashed(current))
    assert result is not None
    assert result.auc > 0.95
    assert result.p_value < 1e-10
    assert "told current prompts from reference prompts" in result.evidence()["summary"]


def test_text_partial_shift_gives_a_middling_auc() -> None:
    current = english_prompts(2, 1_000)[:800] + french_prompts(3, 200)  # a fifth of traffic now French
    result = text_domain_auc(hashed(english_prompts(1, 1_000)), hashed(current))
    assert result is not None
    assert 0.55 < result.auc < 0.75


def test_text_empty_prompts_and_bounds() -> None:
    rows = hashed(english_prompts(1, 100)) + [[]] * 10
    assert text_domain_auc(rows, hashed(english_prompts(2, 110))) is not None
    assert text_domain_auc(rows[:MIN_ROWS - 1], rows) is None
    with pytest.raises(ValueError, match="dims"):
        text_domain_auc([[5]] * 60, [[2**18]] * 60)
    with pytest.raises(ValueError, match="dims"):
        text_domain_auc([[5]] * 60, [[-1]] * 60)


def test_docstring_examples() -> None:
    result = doctest.testmod(domain, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_from_holdout_rows_a_side_one_held_out_half_replaces_the_folds() -> None:
    n = HOLDOUT_ROWS
    below = domain_auc(normal_rows(1, n - 1), normal_rows(2, n - 1), feature_names=NAMES)
    at = domain_auc(normal_rows(1, HOLDOUT_ROWS), normal_rows(2, HOLDOUT_ROWS), feature_names=NAMES)
    kept = domain_auc(normal_rows(1, HOLDOUT_ROWS), normal_rows(2, HOLDOUT_ROWS), feature_names=NAMES,
                      holdout_from=None)
    assert below is not None
    assert at is not None
    assert kept is not None
    assert (below.folds, at.folds, kept.folds) == (3, 1, 3)
    assert at.evidence()["validation"] == "one split in halves: trained on one, tested on the other"
    assert kept.evidence()["validation"] == "3-fold cross-validation"
    # Still sees what the folds see: a broken correlation, and nothing on a stationary pair.
    assert not at.drifted(auc_floor=0.6, alpha=0.01)
    broken = domain_auc(correlated_rows(3, 2_000, 0.9), correlated_rows(4, 2_000, 0.0), feature_names=NAMES)
    assert broken is not None
    assert broken.folds == 1
    assert broken.drifted(auc_floor=0.6, alpha=0.01)
    texts = text_domain_auc(hashed(english_prompts(1, n)), hashed(english_prompts(2, n)))
    assert texts is not None
    assert texts.folds == 1


def test_held_out_p_values_are_not_anti_conservative() -> None:
    pvalues = []
    for s in range(30):
        result = domain_auc(normal_rows(300 + s, HOLDOUT_ROWS), normal_rows(400 + s, HOLDOUT_ROWS),
                            feature_names=NAMES, seed=s)
        assert result is not None
        assert result.folds == 1
        pvalues.append(result.p_value)
    assert sum(p < 0.05 for p in pvalues) <= 4
    assert sum(p < 0.5 for p in pvalues) >= 8  # and not all pushed to 1 either
