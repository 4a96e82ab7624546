"""Drift statistics: numeric and categorical comparisons, and Benjamini-Hochberg in detectors.stats."""

from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp, mannwhitneyu, wasserstein_distance

from inferwatch.detectors import stats
from inferwatch.detectors.drift import statistics
from inferwatch.detectors.drift.statistics import compare_categorical, compare_numeric
from inferwatch.detectors.stats import benjamini_hochberg, holm_adjust


def normal(seed: int, n: int, loc: float = 0.0, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(loc, scale, size=n)


# --- numeric ---------------------------------------------------------------------------------


def test_mean_shift_moves_every_numeric_statistic() -> None:
    s = compare_numeric(normal(1, 2000), normal(2, 2000, loc=1.0))

    assert s.ks_d == pytest.approx(0.383, abs=0.04)  # 2 * Phi(0.5) - 1 for a 1-std shift
    assert s.ks_p < 1e-50
    assert s.wasserstein == pytest.approx(1.0, abs=0.08)
    assert s.wasserstein_basis == "reference std"
    assert s.psi > 0.5
    assert s.current_mean - s.reference_mean == pytest.approx(1.0, abs=0.08)


def test_variance_shift_is_seen_by_wasserstein_and_ks_without_a_mean_change() -> None:
    s = compare_numeric(normal(3, 3000), normal(4, 3000, scale=2.0))

    assert abs(s.current_mean - s.reference_mean) < 0.1
    assert s.current_std / s.reference_std == pytest.approx(2.0, rel=0.06)
    assert s.wasserstein == pytest.approx(0.8, abs=0.08)  # (2 - 1) * E|Z|
    assert s.ks_d == pytest.approx(0.16, abs=0.03)
    assert s.ks_p < 1e-20


def test_same_distribution_gives_small_statistics() -> None:
    s = compare_numeric(normal(5, 2000), normal(6, 2000))

    assert s.ks_d < 0.05
    assert s.ks_p > 0.01
    assert s.wasserstein < 0.06
    assert s.psi < 0.02


def test_ks_uses_the_asymptotic_p_value_for_big_samples_and_exact_for_small() -> None:
    big_ref, big_cur = normal(7, 5000), normal(8, 5000, loc=0.04)
    small_ref, small_cur = normal(9, 300), normal(10, 200, loc=0.2)

    assert compare_numeric(big_ref, big_cur).ks_p == ks_2samp(big_ref, big_cur, method="asymp").pvalue
    assert compare_numeric(small_ref, small_cur).ks_p == ks_2samp(small_ref, small_cur, method="exact").pvalue


@pytest.mark.parametrize(("kind", "n_ref", "n_cur"), [
    ("continuous", 2000, 1000), ("continuous", 2000, 600), ("continuous", 37, 2000),
    ("few values", 2000, 1000), ("few values", 300, 200), ("rounded", 5000, 1200),
])
def test_ks_and_wasserstein_are_scipys_numbers(kind: str, n_ref: int, n_cur: int) -> None:
    # One merge of the two samples gives both; the numbers must be scipy's to the last bit,
    # ties included (the exact test's D sits on its lattice, the asymptotic one's does not).
    rng = np.random.default_rng(n_ref * 7 + n_cur)
    if kind == "continuous":
        ref, cur = rng.normal(size=n_ref), rng.normal(0.1, 1.2, size=n_cur)
    elif kind == "few values":
        ref, cur = rng.integers(0, 7, n_ref).astype(float), rng.integers(0, 8, n_cur).astype(float)
    else:
        ref, cur = np.round(rng.exponential(size=n_ref), 1), np.round(rng.exponential(1.1, size=n_cur), 1)
    exact = min(n_ref, n_cur) <= statistics.KS_EXACT_MAX
    expected = ks_2samp(ref, cur, method="exact" if exact else "asymp")

    s = compare_numeric(ref, cur)

    assert (s.ks_d, s.ks_p) == (float(expected.statistic), float(expected.pvalue))
    outside = int(((cur < ref.min()) | (cur > ref.max())).sum())
    stray = 0 < outside <= statistics.STRAY_SHARE * n_cur  # a few values past the range: at its edge
    compared = np.clip(cur, ref.min(), ref.max()) if stray else cur
    assert s.strays == (outside if stray else 0)
    assert s.wasserstein == float(wasserstein_distance(ref, compared)) / s.wasserstein_scale


def test_one_corrupt_value_is_not_a_wasserstein_shift_but_a_unit_change_is() -> None:
    rng = np.random.default_rng(12)
    ref = rng.normal(1015.0, 7.0, size=5000)  # pressures in hPa
    cur = rng.normal(1015.0, 7.0, size=2000)
    corrupt = compare_numeric(ref, np.r_[cur[:-1], 5503.0])
    assert wasserstein_distance(ref, np.r_[cur[:-1], 5503.0]) / np.std(ref, ddof=1) > 0.3  # as scipy reads it
    assert 1 <= corrupt.strays <= 3  # the corrupt value, and what normal noise puts past the range
    assert corrupt.wasserstein < 0.05
    assert corrupt.ks_d < 0.05  # KS counts the value once, whatever its size
    units = compare_numeric(ref, np.r_[cur[:1900], cur[1900:] * 1000.0])  # 5 %: past the stray share
    assert units.strays == 0
    assert units.wasserstein > 10.0


@pytest.mark.parametrize(("n", "m"), [(2, 1), (2, 5), (3, 4), (5, 3), (6, 6)])
def test_outside_range_p_is_the_share_of_orders_with_that_many_outside(n: int, m: int) -> None:
    # Every order of n reference and m current values is equally likely with no change: count
    # the orders (which positions the current values take) with k or more outside the reference's
    # first and last value.
    from itertools import combinations
    orders = list(combinations(range(n + m), m))
    for k in range(m + 2):
        outside = 0
        for positions in orders:
            reference = [i for i in range(n + m) if i not in positions]
            outside += sum(1 for i in positions if i < reference[0] or i > reference[-1]) >= k
        expected = outside / len(orders)
        assert statistics.outside_range_p(k, n, m) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_compare_range_counts_each_side_and_lists_the_furthest_values() -> None:
    current = np.array([0.5, -7.0, 50.0, 100.0, 101.0, 3e5, 1e3, 2e3, 9e9])
    r = statistics.compare_range(np.arange(1.0, 101.0), current)

    assert (r.below, r.above, r.n_current) == (2, 5, 9)
    assert r.examples_below == (-7.0, 0.5)
    assert r.examples_above == (9e9, 3e5, 2e3)  # furthest first, three a side
    assert r.share == pytest.approx(7 / 9)
    assert r.expected_share == pytest.approx(2 / 101)
    assert json.loads(json.dumps(r.evidence()))["reference_range"] == [1.0, 100.0]


def test_histogram_uses_reference_quantile_bins() -> None:
    s = compare_numeric(np.arange(1000.0), np.arange(1000.0) + 500.0, bins=4)

    assert s.edges.tolist() == pytest.approx([249.75, 499.5, 749.25])
    assert s.reference_counts.tolist() == [250, 250, 250, 250]
    assert s.current_counts.tolist() == [0, 0, 250, 750]
    assert sum(s.current_counts) == s.n_current == 1000


def test_constant_reference_falls_back_to_its_magnitude() -> None:
    s = compare_numeric(np.full(500, 1000.0), np.full(500, 1024.0))

    assert s.wasserstein_basis.startswith("reference magnitude")
    assert s.wasserstein_scale == 1000.0
    assert s.wasserstein == pytest.approx(0.024)
    assert s.ks_d == 1.0
    zeros = compare_numeric(np.zeros(200), np.full(200, 0.5))
    assert zeros.wasserstein_scale == 1.0
    assert zeros.wasserstein == pytest.approx(0.5)


@pytest.mark.parametrize(("reference", "current", "message"), [
    ([], [1.0], "reference is empty"),
    ([1.0], [], "current is empty"),
    ([1.0, float("nan")], [1.0], "reference holds NaN"),
    ([1.0], [float("inf")], "current holds NaN or infinite"),
])
def test_numeric_input_errors_say_what_to_do(reference: list[float], current: list[float],
                                             message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compare_numeric(np.array(reference), np.array(current))


def test_numeric_evidence_is_json_ready_and_rounded() -> None:
    s = compare_numeric(normal(11, 500), normal(12, 400, loc=0.5))
    evidence = s.evidence()

    json.dumps(evidence)
    assert set(evidence) >= {"ks_d", "ks_p", "psi", "wasserstein_normalised", "wasserstein_unit",
                             "reference", "current", "histogram"}
    assert evidence["reference"]["n"] == 500
    assert evidence["current"]["n"] == 400
    assert evidence["wasserstein_unit"].startswith("reference std (")
    assert len(repr(evidence["ks_d"])) <= 7  # 4 significant digits, not 17
    histogram = evidence["histogram"]
    assert len(histogram["inner_edges"]) == 9
    assert len(histogram["reference_counts"]) == len(histogram["current_counts"]) == 10
    assert sum(histogram["current_counts"]) == 400


# --- categorical -----------------------------------------------------------------------------


def test_category_share_change_moves_every_categorical_statistic() -> None:
    c = compare_categorical({"a": 500, "b": 500}, {"a": 700, "b": 300})

    # expected counts 600/400 per row: chi2 = 2 * (100**2 / 600 + 100**2 / 400) = 83.33, N = 2000
    assert c.chi2 == pytest.approx(250.0 / 3.0)
    assert c.dof == 1
    assert c.cramers_v == pytest.approx((250.0 / 3.0 / 2000.0) ** 0.5)
    assert c.chi2_p < 1e-15
    assert c.jensen_shannon == pytest.approx(jensenshannon([0.5, 0.5], [0.7, 0.3]))
    assert c.psi == pytest.approx(0.2 * math.log(0.7 / 0.5) - 0.2 * math.log(0.3 / 0.5))
    assert c.unseen_share == 0.0
    assert c.top_changes[0] == ("a", 0.5, 0.7)


def test_new_categories_count_as_unseen_share_and_lead_the_changes() -> None:
    c = compare_categorical({"en": 900, "fr": 100, "gone": 0},
                            {"en": 500, "fr": 100, "de": 300, "es": 100})

    assert c.unseen_share == pytest.approx(0.4)
    assert c.categories == 4  # "gone" has no count on either side and is dropped
    assert c.dof == 3
    assert [name for name, _, _ in c.top_changes[:2]] == ["en", "de"]  # -40 points, +30 points
    assert c.top_changes[1] == ("de", 0.0, 0.3)
    assert c.chi2_p < 1e-50
    assert c.jensen_shannon > 0.3


def test_identical_mix_gives_no_difference() -> None:
    c = compare_categorical({"x": 30, "y": 70}, {"x": 300, "y": 700})

    assert c.chi2 == pytest.approx(0.0)
    assert c.chi2_p == pytest.approx(1.0)
    assert c.cramers_v == pytest.approx(0.0)
    assert c.jensen_shannon == pytest.approx(0.0, abs=1e-9)
    assert c.psi == pytest.approx(0.0)


def _counts(values: np.ndarray) -> dict[str, int]:
    names, counts = np.unique(values, return_counts=True)
    return {str(n): int(c) for n, c in zip(names, counts, strict=True)}


@pytest.mark.parametrize("tail", [300, 3_000, 30_000, 300_000])
def test_unseen_values_as_many_as_the_rare_ones_predict_are_no_excess(tail: int) -> None:
    """Reference and current drawn alike from a feature with a long tail of values: the share of
    the current sample in values the reference sample never held is large (up to about half),
    and as large as its Good-Turing expectation, in 200 draws of each tail out of 200."""
    rng = np.random.default_rng(tail)
    excess = []
    for _ in range(200):
        def draw(n: int) -> np.ndarray:
            common = rng.integers(0, 5, n)
            return np.where(rng.random(n) < 0.5, common, 5 + rng.zipf(1.3, n) % tail)
        stats = compare_categorical(_counts(draw(5_000)), _counts(draw(2_000)))
        assert stats.unseen_expected == pytest.approx(stats.unseen_share, abs=0.05)
        excess.append(stats.unseen_excess)
    assert excess == [0.0] * 200


def test_a_tenth_of_traffic_in_new_values_is_an_excess_over_the_rare_ones() -> None:
    rng = np.random.default_rng(7)
    reference = np.where(rng.random(5_000) < 0.5, rng.integers(0, 5, 5_000), 5 + rng.zipf(1.3, 5_000) % 3_000)
    current = np.where(rng.random(2_000) < 0.5, rng.integers(0, 5, 2_000), 5 + rng.zipf(1.3, 2_000) % 3_000)
    current[:200] = 10**6 + np.arange(200)  # 10 % of the window in 200 values never seen, 0.05 % each
    stats = compare_categorical(_counts(reference), _counts(current))
    assert stats.unseen_excess == pytest.approx(0.1, abs=0.03)
    assert stats.unseen_share - stats.unseen_expected == pytest.approx(stats.unseen_excess)
    assert max(abs(cur - ref) for _, ref, cur in stats.top_changes) < 0.05  # no value moved the floor


def test_a_single_category_on_both_sides_cannot_differ() -> None:
    c = compare_categorical({"ok": 100}, {"ok": 5000})

    assert (c.chi2, c.chi2_p, c.dof, c.cramers_v, c.jensen_shannon) == (0.0, 1.0, 0, 0.0, 0.0)


def test_categorical_input_errors_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="reference counts total 0"):
        compare_categorical({"a": 0}, {"a": 3})
    with pytest.raises(ValueError, match="current counts total 0"):
        compare_categorical({"a": 3}, {})
    with pytest.raises(ValueError, match="non-negative"):
        compare_categorical({"a": 3, "b": -1}, {"a": 3})


def test_categorical_evidence_lists_at_most_ten_changes_largest_first() -> None:
    reference = {f"c{i:02d}": 100 for i in range(30)}
    current = {f"c{i:02d}": 100 + i * i for i in range(30)}
    evidence = compare_categorical(reference, current).evidence()

    json.dumps(evidence)
    changes = evidence["top_changes"]
    assert len(changes) == statistics.TOP_CHANGES == 10
    assert changes[0]["category"] == "c29"
    moves = [abs(c["current_share"] - c["reference_share"]) for c in changes]
    assert moves == sorted(moves, reverse=True)
    assert evidence["reference"]["n"] == 3000
    assert evidence["categories"] == 30


# --- Benjamini-Hochberg ----------------------------------------------------------------------


def test_benjamini_hochberg_values() -> None:
    # Hand-computed: sorted p (0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205), m = 8:
    # p * m / rank = 0.008, 0.032, 0.104, 0.082, 0.0672, 0.08, 0.0846, 0.205; then the running
    # minimum from the largest p down.
    pvalues = [0.041, 0.001, 0.205, 0.008, 0.039, 0.074, 0.042, 0.06]
    expected = [0.0672, 0.008, 0.205, 0.032, 0.0672, 0.08457142857142857, 0.0672, 0.08]

    assert benjamini_hochberg(pvalues) == pytest.approx(expected)


def test_benjamini_hochberg_is_never_stricter_than_holm_and_finds_more() -> None:
    pvalues = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205]
    bh, holm = benjamini_hochberg(pvalues), holm_adjust(pvalues)

    assert all(q <= h + 1e-12 for q, h in zip(bh, holm, strict=True))
    assert sum(q < 0.05 for q in bh) == 2
    assert sum(h < 0.05 for h in holm) == 1


def test_benjamini_hochberg_edge_cases() -> None:
    assert benjamini_hochberg([]) == []
    assert benjamini_hochberg([0.3]) == [0.3]
    assert benjamini_hochberg([1.0, 1.0, 0.9]) == [1.0, 1.0, 1.0]
    adjusted = benjamini_hochberg([0.02, 0.02, 0.02])
    assert adjusted == pytest.approx([0.02, 0.02, 0.02])  # ties share the largest rank's value


@pytest.mark.parametrize("module", [stats, statistics])
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.attempted > 0
    assert result.failed == 0


def test_chi_squared_is_scipys_to_the_bit() -> None:
    rng = np.random.default_rng(50)
    for _ in range(300):
        k = int(rng.integers(2, 12))
        ref = rng.multinomial(int(rng.integers(50, 3_000)), rng.dirichlet(np.ones(k)))
        cur = rng.multinomial(int(rng.integers(50, 3_000)), rng.dirichlet(np.ones(k)))
        names = [f"c{i:02d}" for i in range(k)]  # sorted as compare_categorical sorts them
        c = compare_categorical(dict(zip(names, ref.tolist(), strict=True)),
                                dict(zip(names, cur.tolist(), strict=True)))
        seen = (ref + cur) > 0
        if seen.sum() < 2:
            continue
        expected = chi2_contingency(np.vstack([ref[seen], cur[seen]]), correction=False)
        assert (c.chi2, c.chi2_p) == (float(expected.statistic), float(expected.pvalue))
        assert c.dof == int(expected.dof)


@pytest.mark.parametrize("seed", range(5))
def test_mann_whitney_is_scipys_on_untied_data_and_never_smaller_on_tied(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref, cur = np.sort(rng.normal(size=3000)), np.sort(rng.normal(0.05 * seed, 1.0, size=1000))
    delta, p = statistics.mann_whitney(ref, cur)
    theirs = mannwhitneyu(cur, ref, method="asymptotic")
    assert delta == pytest.approx(2 * theirs.statistic / (ref.size * cur.size) - 1, abs=1e-12)
    assert p == pytest.approx(theirs.pvalue, rel=1e-9)
    # Counts tie heavily: scipy's tie correction shrinks the variance, ours does not.
    ref_t = np.sort(rng.poisson(3.0, 3000).astype(float))
    cur_t = np.sort(rng.poisson(3.1, 1000).astype(float))
    delta_t, p_t = statistics.mann_whitney(ref_t, cur_t)
    tied = mannwhitneyu(cur_t, ref_t, method="asymptotic")
    assert delta_t == pytest.approx(2 * tied.statistic / (ref_t.size * cur_t.size) - 1, abs=1e-12)
    assert p_t >= tied.pvalue
