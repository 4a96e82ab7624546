"""The drift test registry: policy by sample size, verdicts, correction, and the generated docs page."""

from __future__ import annotations

import doctest
import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferwatch.detectors.drift import catalogue, change
from inferwatch.detectors.drift.catalogue import (
    DEFAULT_ALPHA,
    RULES,
    SPEC_BY_NAME,
    SPECS,
    correct,
    enough,
    judge_categorical,
    judge_domain,
    judge_numeric,
    judge_range,
    policy,
    select_drifted,
)

DOCS_PAGE = Path(__file__).resolve().parents[3] / "docs" / "detectors" / "drift-tests.md"


def normal(seed: int, n: int, loc: float = 0.0, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(loc, scale, size=n)


def shares(n: int, **share: float) -> dict[str, int]:
    return {name: round(n * s) for name, s in share.items()}


# --- the generated page ----------------------------------------------------------------------


def test_docs_page_is_generated_from_the_registry() -> None:
    expected = catalogue.markdown()
    actual = DOCS_PAGE.read_text(encoding="utf-8") if DOCS_PAGE.exists() else ""
    assert actual == expected, (
        "docs/detectors/drift-tests.md is out of date with inferwatch/detectors/drift/catalogue.py; "
        "regenerate it with: python -m inferwatch.detectors.drift.catalogue > docs/detectors/drift-tests.md"
    )


def test_page_lists_every_test_and_every_rule_floor() -> None:
    page = catalogue.markdown()

    for spec in SPECS:
        assert f"### `{spec.name}` — {spec.title}" in page
    for row in ("| numeric | > 1,000 | yes | Kolmogorov-Smirnov two-sample test | W (`wasserstein`) | 0.1 |",
                "| categorical | 50 - 1,000 | yes | Chi-squared test of homogeneity "
                "| Δshare(z) (`significant_share_change`) | 0.05 |",
                "| multivariate | 100 - 1,000 | yes | Domain classifier over input rows "
                "| AUC (`domain_rows`) | 0.65 |"):
        assert row in page
    # formulas with "|" must not break the tables
    assert "max \\|F_ref(x) - F_cur(x)\\|" in page


# --- the registry itself ---------------------------------------------------------------------


def test_rules_name_registered_tests_with_floors_for_every_data_type() -> None:
    assert len(SPEC_BY_NAME) == len(SPECS)
    for rule in RULES:
        assert rule.p_value_test in SPEC_BY_NAME
        effect = SPEC_BY_NAME[rule.effect_test]
        assert (rule.floor if rule.floor is not None else effect.default) is not None
        assert rule.data_type in effect.data_types
    for data_type in catalogue.MIN_SAMPLES:
        bands = [r.up_to for r in RULES if r.data_type == data_type]
        assert bands[-1] is None, f"{data_type} has no rule for large samples"
        assert bands[:-1] == sorted(b for b in bands[:-1] if b is not None)
    covered = {t for spec in SPECS for t in spec.data_types}
    assert covered == {"numeric", "range", "location", "categorical", "multivariate", "text", "operations"}


def test_change_detector_parameters_are_read_from_the_change_module() -> None:
    for name in ("page_hinkley", "cusum", "adwin"):
        spec = SPEC_BY_NAME[name]
        detector = change.build(name)
        assert spec.parameters, name
        for option, value in spec.parameters:
            assert getattr(detector, option) == value, (name, option)
        keyword = {p.name for p in inspect.signature(type(detector).__init__).parameters.values()
                   if p.kind is inspect.Parameter.KEYWORD_ONLY}
        assert {option for option, _ in spec.parameters} == keyword


# --- policy ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("data_type", "n_ref", "n_cur", "regime", "effect", "floor"), [
    ("numeric", 200, 200, "small", "ks_d", 0.1),
    ("numeric", 50_000, 1_000, "small", "ks_d", 0.1),
    ("numeric", 5_000, 1_001, "large", "wasserstein", 0.1),
    ("numeric", 200_000, 200_000, "large", "wasserstein", 0.1),
    ("categorical", 5_000, 300, "small", "significant_share_change", 0.05),
    ("categorical", 1_000_000, 1_000_000, "large", "share_change", 0.05),
    ("multivariate", 2_000, 500, "small", "auc", 0.65),
    ("multivariate", 2_000, 2_000, "large", "auc", 0.6),
    ("text", 150, 150, "small", "auc", 0.65),
    ("text", 5_000, 5_000, "large", "auc", 0.6),
    ("range", 100, 50, "any", "share_outside", 0.02),
    ("range", 2_000, 2_000, "any", "share_outside", 0.02),
])
def test_policy_changes_with_sample_size(data_type: str, n_ref: int, n_cur: int, regime: str,
                                         effect: str, floor: float) -> None:
    p = policy(data_type, n_ref, n_cur)

    assert (p.regime, p.effect_name, p.floor, p.testable) == (regime, effect, floor, True)
    assert p.smaller_sample == min(n_ref, n_cur)
    assert p.p_value_test == {"numeric": "ks", "categorical": "chi2", "multivariate": "domain_rows",
                              "text": "domain_text", "range": "range"}[data_type]


def test_minimum_sample_sizes() -> None:
    assert enough("numeric", 100, 50)
    assert not enough("numeric", 100, 49)
    assert not enough("numeric", 99, 5000)
    assert not enough("categorical", 10_000, 20)
    assert not enough("multivariate", 5000, 99)
    assert not policy("numeric", 5000, 10).testable
    assert policy("numeric", 5000, 10).regime == "small"  # still says what would be used


def test_unknown_data_type_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"data_type must be one of .*'numeric'.*operations"):
        policy("operations", 100, 100)
    with pytest.raises(ValueError, match="data_type"):
        enough("tabular", 100, 100)
    with pytest.raises(ValueError, match="'multivariate' or 'text'"):
        judge_domain("x", FakeDomain(0.9, 1e-9, 500, 500), "numeric")


# --- numeric verdicts ------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "shift"), [(200, 1.0), (5_000, 0.5)])
def test_numeric_fires_on_a_mean_shift_at_small_and_large_samples(n: int, shift: float) -> None:
    v = judge_numeric("input.x", normal(1, n), normal(2, n, loc=shift))

    assert v.passes_floor
    assert v.p_value < 1e-6
    assert v.drifted(v.p_value, DEFAULT_ALPHA)
    assert v.effect_name == ("ks_d" if n <= 1000 else "wasserstein")


@pytest.mark.parametrize("n", [500, 5_000])
def test_numeric_fires_on_a_variance_shift(n: int) -> None:
    v = judge_numeric("output.score", normal(3, n), normal(4, n, scale=2.0))

    assert v.drifted(v.p_value)
    assert v.effect > v.floor


@pytest.mark.parametrize(("n", "seed"), [(200, 5), (200_000, 6)])
def test_numeric_silent_on_a_negligible_shift_even_where_p_is_significant(n: int, seed: int) -> None:
    """0.03 std: nobody cares. At 200 draws KS cannot see it; at 200,000 it can, and the floor holds."""
    v = judge_numeric("input.x", normal(seed, n), normal(seed + 100, n, loc=0.03))

    assert not v.drifted(v.p_value, DEFAULT_ALPHA)
    if n == 200_000:
        assert v.p_value < 1e-6, "the p-value alone would call this drift"
        assert v.effect_name == "wasserstein"
        assert v.effect < 0.05
        assert not v.passes_floor
    else:  # here D is mostly noise (about 0.09 on average); the p-value is what keeps it quiet
        assert v.p_value > DEFAULT_ALPHA


def test_numeric_silent_on_many_stationary_features_after_correction() -> None:
    verdicts = [judge_numeric(f"input.f{i}", normal(10 + i, 2_000), normal(500 + i, 2_000))
                for i in range(40)]
    verdicts += [judge_numeric(f"input.s{i}", normal(900 + i, 300), normal(950 + i, 300))
                 for i in range(20)]

    assert select_drifted(verdicts) == []
    assert select_drifted(verdicts, method="bh") == []


def test_numeric_reports_the_events_behind_the_samples() -> None:
    v = judge_numeric("ops.latency_ms", normal(20, 2_000), normal(21, 1_500), 1_000_000, n_reference=40_000)

    assert (v.n_reference, v.n_current) == (40_000, 1_000_000)
    assert (v.stats.n_reference, v.stats.n_current) == (2_000, 1_500)
    assert v.policy.regime == "large"  # chosen on the samples compared, not on the events


# --- categorical verdicts --------------------------------------------------------------------


@pytest.mark.parametrize(("n", "effect"), [(400, "significant_share_change"), (100_000, "share_change")])
def test_categorical_fires_on_a_share_change(n: int, effect: str) -> None:
    v = judge_categorical("output.label", shares(n, a=0.5, b=0.3, c=0.2), shares(n, a=0.25, b=0.35, c=0.4))

    assert v.drifted(v.p_value)
    assert v.effect_name == effect


@pytest.mark.parametrize("n", [400, 100_000])
def test_categorical_fires_on_a_new_category(n: int) -> None:
    v = judge_categorical("output.finish_reason", shares(n, stop=0.9, length=0.1),
                          shares(n, stop=0.8, length=0.1, content_filter=0.1))

    assert v.drifted(v.p_value)
    assert v.stats.unseen_share == pytest.approx(0.1)  # type: ignore[union-attr]
    assert "'content_filter' 0.0% -> 10.0%" in v.describe()
    assert "unseen" not in v.describe()  # the new category shown is the whole unseen share
    spread = judge_categorical("output.finish_reason", shares(n, stop=0.9, length=0.1),
                               shares(n, stop=0.8, length=0.1, a=0.04, b=0.03, c=0.03))
    assert "unseen 10.0% (0.0% expected)" in spread.describe()  # more than the two shown


def test_categorical_silent_on_a_negligible_share_change_at_a_million_events() -> None:
    n = 1_000_000
    v = judge_categorical("output.label", shares(n, a=0.5, b=0.5), shares(n, a=0.505, b=0.495))

    assert v.p_value < 1e-9, "the p-value alone would call this drift"
    assert v.effect < 0.01
    assert not v.drifted(v.p_value)


def test_categorical_silent_on_sampling_noise_at_small_samples() -> None:
    rng = np.random.default_rng(30)
    names = ["a", "b", "c", "d", "e"]
    p = [0.4, 0.3, 0.15, 0.1, 0.05]
    verdicts = []
    for i in range(30):
        ref = dict(zip(names, (int(c) for c in rng.multinomial(300, p)), strict=True))
        cur = dict(zip(names, (int(c) for c in rng.multinomial(60, p)), strict=True))
        verdicts.append(judge_categorical(f"f{i}", ref, cur))

    raw = [max(abs(cur - ref) for _, ref, cur in v.stats.top_changes) for v in verdicts]  # type: ignore[union-attr]
    assert max(raw) > 0.1, "a share alone moves by chance at 60 events"
    assert max(v.effect for v in verdicts) == 0.0  # no category's own change is significant
    assert select_drifted(verdicts) == []


def test_small_sample_share_change_counts_where_that_category_moved_beyond_its_noise() -> None:
    """At 1,000 events against 3,000 a share's noise is ~1.8 points near 50 % and ~1 near 8 %."""
    small = judge_categorical("segment", shares(3_000, a=0.5, b=0.42, e=0.08),
                              shares(1_000, a=0.47, b=0.39, e=0.14))
    assert small.effect == pytest.approx(0.06)  # 'e': 6 points, over 5 of its standard errors
    assert small.drifted(small.p_value)

    big = judge_categorical("label", shares(3_000, up=0.5, down=0.5), shares(1_000, up=0.45, down=0.55))
    assert max(abs(cur - ref) for _, ref, cur in big.stats.top_changes) == pytest.approx(0.05)  # type: ignore[union-attr]
    assert big.effect == 0.0  # 5 points is under 3 standard errors there: noise
    assert not big.drifted(big.p_value)


# --- values outside the reference range --------------------------------------------------------


def test_range_fires_on_a_unit_change_in_a_few_percent_of_values() -> None:
    rng = np.random.default_rng(40)
    ref = rng.lognormal(3.0, 0.8, 2_000)
    cur = rng.lognormal(3.0, 0.8, 1_000)
    cur[:30] *= 1000.0  # 3 % in other units

    v = judge_range("input.amount (outside reference range)", ref, cur)

    assert v.data_type == "range"
    assert v.effect == pytest.approx(0.03, abs=0.002)
    assert v.drifted(v.p_value)
    assert v.p_value < 1e-9
    assert "above the reference range" in v.describe()


@pytest.mark.parametrize(("n_ref", "n_cur"), [(2_000, 1_000), (2_000, 2_000), (100, 2_000)])
def test_range_silent_on_records_of_stationary_heavy_tails(n_ref: int, n_cur: int) -> None:
    # Against a 100-value reference about 2 % of current values fall outside by chance: the
    # floor alone would fire now and then; the exact p-value knows a small range is narrow.
    rng = np.random.default_rng(n_ref + n_cur)
    verdicts = [judge_range(f"f{i} (outside reference range)", rng.pareto(1.5, n_ref), rng.pareto(1.5, n_cur))
                for i in range(200)]

    assert select_drifted(verdicts) == []
    if n_ref == 100:
        assert sum(v.passes_floor for v in verdicts) > 50


def test_range_with_a_constant_reference_counts_any_other_value() -> None:
    v = judge_range("input.flag (outside reference range)", np.full(500, 1.0),
                    np.r_[np.ones(450), np.zeros(50)])

    assert v.stats.below == 50
    assert v.effect == pytest.approx(0.1)
    assert v.drifted(v.p_value)


# --- correction and ranking ------------------------------------------------------------------


@dataclass(frozen=True)
class FakeDomain:
    auc: float
    p_value: float
    n_reference: int
    n_current: int

    def evidence(self) -> dict[str, Any]:
        return {"auc": self.auc}


def test_correct_holm_and_bh_values() -> None:
    pvalues = [0.001, 0.008, 0.039, 0.041]
    verdicts = [judge_domain(f"d{i}", FakeDomain(0.9, p, 2000, 2000)) for i, p in enumerate(pvalues)]

    assert correct(verdicts) == pytest.approx([0.004, 0.024, 0.078, 0.078])
    assert correct(verdicts, method="holm") == correct(verdicts)
    assert correct(verdicts, method="bh") == pytest.approx([0.004, 0.016, 0.041, 0.041])
    with pytest.raises(ValueError, match="'holm' or 'bh'"):
        correct(verdicts, method="bonferroni")


@pytest.mark.parametrize("method", ["holm", "bh"])
def test_untested_members_of_the_family_count_as_p_one(method: str) -> None:
    tested = [judge_domain(f"d{i}", FakeDomain(0.9, p, 2000, 2000)) for i, p in enumerate([0.001, 0.008])]
    left_out = [judge_domain(f"x{i}", FakeDomain(0.5, 1.0, 2000, 2000)) for i in range(3)]

    assert correct(tested, method, untested=3) == correct([*tested, *left_out], method)[:2]
    assert correct(tested, method, untested=3)[0] > correct(tested, method)[0]


def test_bh_finds_drift_that_holm_does_not() -> None:
    verdicts = [judge_domain(f"d{i}", FakeDomain(0.9, p, 2000, 2000))
                for i, p in enumerate([0.004, 0.006, 0.008, 0.009])]

    assert [v.feature for v, _ in select_drifted(verdicts, method="bh")] == ["d0", "d1", "d2", "d3"]
    assert [v.feature for v, _ in select_drifted(verdicts, method="holm")] == []


def test_select_drifted_ranks_by_strength_against_the_floor() -> None:
    weak = judge_numeric("input.weak", normal(40, 3_000), normal(41, 3_000, loc=0.2))
    strong = judge_categorical("output.label", shares(5_000, a=0.5, b=0.5), shares(5_000, a=0.9, b=0.1))
    domain = judge_domain("inputs (together)", FakeDomain(0.8, 1e-12, 2000, 2000))
    quiet = judge_numeric("input.quiet", normal(42, 3_000), normal(43, 3_000))

    ranked = select_drifted([weak, quiet, domain, strong])

    assert [v.feature for v, _ in ranked] == ["output.label", "inputs (together)", "input.weak"]
    assert domain.strength == pytest.approx((0.8 - 0.5) / (0.6 - 0.5))
    assert all(p < DEFAULT_ALPHA for _, p in ranked)


def test_domain_verdict_uses_the_stricter_floor_on_small_samples() -> None:
    small = judge_domain("text (n-grams)", FakeDomain(0.63, 1e-6, 400, 400), "text")
    large = judge_domain("text (n-grams)", FakeDomain(0.63, 1e-6, 4000, 4000), "text")

    assert (small.floor, small.drifted(small.p_value)) == (0.65, False)
    assert (large.floor, large.drifted(large.p_value)) == (0.6, True)


# --- evidence --------------------------------------------------------------------------------


def test_verdict_evidence_states_rule_effect_and_floor() -> None:
    v = judge_numeric("input.age", normal(50, 3_000, loc=40.0, scale=10.0),
                      normal(51, 3_000, loc=45.0, scale=10.0))
    evidence = v.evidence()

    json.dumps(evidence)
    assert evidence["rule"] == ("Kolmogorov-Smirnov two-sample test p-value; effect W >= 0.1 "
                                "(smaller sample 3000 > 1000)")
    assert evidence["effect"]["name"] == "wasserstein"
    assert evidence["effect"]["floor"] == 0.1
    assert evidence["effect"]["passes_floor"] is True
    assert evidence["statistics"]["histogram"]["inner_edges"]
    line = v.describe()
    assert line.startswith("input.age: W=0.5")
    assert "(floor 0.1)" in line
    assert re.search(r"mean (39|40)[.\d]* -> (44|45)[.\d]*,", line), line


def test_categorical_describe_names_the_categories_that_moved() -> None:
    v = judge_categorical("text.language", {"en": 800, "fr": 200}, {"en": 400, "fr": 200, "de": 400})

    assert v.describe().startswith("text.language: Δshare(z)=0.4 (floor 0.05)")
    assert "'en' 80.0% -> 40.0%" in v.describe()
    assert "'de' 0.0% -> 40.0%" in v.describe()
    json.dumps(v.evidence())


def test_docstring_examples() -> None:
    result = doctest.testmod(catalogue, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_a_fifth_of_a_standard_deviation_is_a_location_shift_before_ks_sees_it() -> None:
    # One window of 1,000 events against a 3,000-value reference: KS D (~0.08) mostly stays under
    # its small-sample floor (0.1); Cliff's delta (~0.11) passes its own (0.1) more often, at
    # p-values under what 20 tests under Bonferroni need. Information-limited either way: a 0.2
    # std shift is about 5 standard errors of a 1,000-event window against this reference.
    ks_found = location_found = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        ks = judge_numeric("input.x", rng.normal(size=3000), rng.normal(0.2, 1.0, size=1000))
        location = catalogue.judge_location("input.x (location)", ks.stats)  # type: ignore[arg-type]
        ks_found += ks.drifted(ks.p_value * 20)
        location_found += location.drifted(location.p_value * 20)
    assert location.effect_name == "cliffs_delta"
    assert location.describe().startswith("input.x (location): |δ|=")
    assert ks_found <= 20  # 16 of these 40 draws
    assert location_found >= ks_found + 8  # 26


def test_no_location_shift_in_stationary_heavy_tailed_or_tied_windows() -> None:
    rng = np.random.default_rng(9)
    draws = {"pareto": lambda n: rng.pareto(1.1, n), "poisson": lambda n: rng.poisson(3.0, n).astype(float),
             "normal": lambda n: rng.normal(size=n)}
    for name, draw in draws.items():
        ref = draw(3000)
        verdicts = [catalogue.judge_location(f"{name}{i}", judge_numeric("f", ref, draw(1000)).stats)  # type: ignore[arg-type]
                    for i in range(200)]
        assert max(v.effect for v in verdicts) < 0.1, name  # the floor is ~5 standard deviations
        assert select_drifted(verdicts) == []
