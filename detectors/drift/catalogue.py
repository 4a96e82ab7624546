"""The one registry of drift tests: what each measures, its default, and when it is used.

Every test the drift detector runs is a :class:`TestSpec` in :data:`SPECS`; which test supplies
the p-value and which effect size must pass which floor, by data type and sample size, is the
table :data:`RULES`; :func:`policy` reads it, :func:`judge_numeric`, :func:`judge_categorical`
and :func:`judge_domain` apply it, and :func:`markdown` renders all of it as
``docs/detectors/drift-tests.md`` (a test fails when that page differs from the code).

The decision, for each feature of a model in a window:

* its p-value, corrected across everything tested for that model in that window (Holm by
  default, Benjamini-Hochberg on request: :func:`correct`), is below ``alpha`` (0.01), **and**
* its effect size reaches the floor the rule sets.

Neither alone will do. At a million events a p-value flags shifts nobody cares about; at fifty
events an effect size is mostly noise. The rule therefore changes with the sample size: while
the smaller sample has at most ``SMALL_SAMPLE_MAX`` values, KS D / Cramér's V are the effect
sizes, and above it the normalised Wasserstein distance / Jensen-Shannon distance, the split
Evidently's automatic test selection uses, each with an effect floor on top. Below the minimum
sample sizes (:data:`MIN_SAMPLES`, checked with :func:`enough`) a feature is not tested at all.

>>> policy("numeric", 200, 200).effect_name, policy("numeric", 5000, 5000).effect_name
('ks_d', 'wasserstein')
>>> policy("categorical", 1_000_000, 900_000).effect_name
'share_change'
>>> enough("numeric", 100, 49)
False

Regenerate the page with ``python -m inferwatch.detectors.drift.catalogue > docs/detectors/drift-tests.md``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from scipy.stats import norm

from inferwatch.detectors.drift import change
from inferwatch.detectors.drift.readable import category_moves
from inferwatch.detectors.drift.statistics import (
    KS_EXACT_MAX,
    KS_EXACT_MAX_EITHER,
    STRAY_SHARE,
    CategoricalStats,
    NumericReference,
    NumericStats,
    RangeStats,
    compare_categorical,
    compare_numeric,
    compare_range,
)
from inferwatch.detectors.stats import PSI_EPSILON, FloatArray, benjamini_hochberg, holm_adjust

DataType = Literal["numeric", "categorical", "multivariate", "text"]
Correction = Literal["holm", "bh"]

DEFAULT_ALPHA = 0.01
"""Family-wise error rate (Holm) or false discovery rate (BH) per model and window."""
DEFAULT_CORRECTION: Correction = "holm"
SMALL_SAMPLE_MAX = 1_000
"""Largest 'smaller sample' judged with the small-sample rule (Evidently switches at 1,000 too)."""
DEFAULT_BINS = 10
"""Reference quantile bins for numeric PSI and histograms."""


@dataclass(frozen=True)
class MinSamples:
    """Values needed on each side before a feature of a data type is tested at all."""

    reference: int
    current: int


MIN_SAMPLES: dict[str, MinSamples] = {
    "numeric": MinSamples(reference=100, current=50),
    "range": MinSamples(reference=100, current=50),
    "location": MinSamples(reference=100, current=50),
    "categorical": MinSamples(reference=100, current=50),
    "multivariate": MinSamples(reference=100, current=100),
    "text": MinSamples(reference=100, current=100),
}
"""Numeric and range: values in the samples compared. Categorical: counted events. Domain: rows
sampled.

Below 50 current values KS needs D > 0.33 to reach p < 0.01 and chi-squared expected counts of
rare categories fall under 5, so a verdict would rest on noise; the reference needs more
because every window is compared with it. A domain classifier is trained and scored on
held-out halves, so it needs 100 rows on each side.
"""


@dataclass(frozen=True)
class TestSpec:
    """One test or statistic: what it computes, what it measures, its default and its basis.

    ``default`` is the floor (effect sizes), the threshold (change detectors, evidence-only
    statistics) or ``None`` (tests that only supply a p-value, judged against ``alpha``).
    Where it is used as a p-value or an effect size is not written here but read from
    :data:`RULES`, so the page cannot contradict the code.
    """

    __test__ = False  # not a pytest test class, despite the name

    name: str
    title: str
    symbol: str
    data_types: tuple[str, ...]
    statistic: str
    measures: str
    default: float | None
    default_meaning: str
    basis: str
    implemented_in: str
    note: str = ""
    parameters: tuple[tuple[str, float | int], ...] = ()


@dataclass(frozen=True)
class Rule:
    """For one data type and sample-size band: the p-value test, the effect size and its floor.

    The rule applies while the smaller of the two samples is at most ``up_to`` (``None``: no
    upper bound); rules of one data type are listed in increasing ``up_to``. ``floor`` overrides
    the effect spec's default where a band needs its own.
    """

    data_type: str
    up_to: int | None
    regime: str
    p_value_test: str
    effect_test: str
    floor: float | None = None


def _change_parameters(name: str) -> tuple[tuple[str, float | int], ...]:
    """A change detector's keyword defaults, read from :mod:`.change` so the page follows the code."""
    signature = inspect.signature(change.DETECTORS[name].__init__)
    return tuple((p.name, p.default) for p in signature.parameters.values()
                 if p.kind is inspect.Parameter.KEYWORD_ONLY and isinstance(p.default, int | float))


_STATISTICS = "inferwatch.detectors.drift.statistics"
_DOMAIN = "inferwatch.detectors.drift.domain"
_CHANGE = "inferwatch.detectors.drift.change"

SPECS: tuple[TestSpec, ...] = (
    TestSpec(
        name="ks", title="Kolmogorov-Smirnov two-sample test", symbol="D", data_types=("numeric",),
        statistic="D = max |F_ref(x) - F_cur(x)| (0 to 1) and its p-value: exact while the smaller "
        f"sample has at most {KS_EXACT_MAX:,} values and the larger at most {KS_EXACT_MAX_EITHER:,}, "
        "asymptotic otherwise",
        measures="any difference in location, spread or shape; D is the largest share of mass on "
        "one side of some value in one sample but not the other",
        default=0.1, default_meaning="floor on D (a 0.25 std mean shift of a normal feature)",
        basis="the KS floor (0.1) of inferwatch's first drift detector; Evidently judges numeric features "
        "with at most 1,000 reference values by the KS p-value alone [E1]; Alibi Detect's KSDrift by "
        "the p-value with Bonferroni correction [A1]",
        implemented_in=_STATISTICS,
    ),
    TestSpec(
        name="wasserstein", title="Wasserstein distance, normalised", symbol="W",
        data_types=("numeric",),
        statistic="W1(ref, cur) / reference std: the average distance values moved, in reference "
        "standard deviations (by the reference magnitude max(|value|, 1) when the reference is constant); "
        "when at most 2 % of the current values lie beyond the reference range, they are read at its "
        "edge (strays: one corrupt value is the range test's to judge, not a shift)",
        measures="how far the distribution moved; unlike D it keeps growing with the size of a "
        "shift, and a tail that moves far counts for more than one that moves a little",
        default=0.1, default_meaning="floor on W (a 0.1 std mean shift)",
        basis="Evidently's default for numeric features with more than 1,000 reference values: "
        "normed Wasserstein >= 0.1 [E1, E2]",
        implemented_in=_STATISTICS,
    ),
    TestSpec(
        name="range", title="Share of values outside the reference range", symbol="outside",
        data_types=("range",),
        statistic="for each numeric feature: the share of the current sample's values below the "
        "reference sample's minimum or above its maximum; its p-value is exact for any "
        "distribution: with no change every order of the reference and current values is "
        "equally likely, so about 2 / (n_ref + 1) of the "
        "current values fall outside by chance (0.1 % against a 2,000-value reference sample), and "
        "a small reference's narrow range raises the p-value, not the alarms",
        measures="values never seen in the reference arriving in part of the traffic: a unit change "
        "(cents for dollars, ms for s) or corrupt values in some events, before they move D enough",
        default=STRAY_SHARE, default_meaning="floor on the share outside (2 points)",
        basis="Our evaluation (docs/detectors/drift.md): a unit change ramping in reached 4 % of a "
        "window's events, 43 values beyond the range, while D was 0.047 and KS p 0.1. With no change, "
        "20 or more of 1,000 values outside a 2,000-value reference's range has probability 3.6e-9",
        implemented_in=_STATISTICS,
        note="Judged on single windows, like the missing share and the value types, as "
        "`<feature> (outside reference range)`.",
    ),
    TestSpec(
        name="mann_whitney", title="Mann-Whitney U test", symbol="U", data_types=("location",),
        statistic="U = pairs (reference value, current value) where the current one is larger, a tie "
        "counting a half; two-sided p-value from the normal approximation with a continuity "
        "correction and without the tie correction (larger, so valid, on tied data)",
        measures="whether current values tend to sit above or below the reference's: a shift in "
        "location, with more power for it than KS",
        default=None, default_meaning="p-value test",
        basis="Mann and Whitney (1947); scipy.stats.mannwhitneyu's asymptotic method",
        implemented_in=_STATISTICS,
    ),
    TestSpec(
        name="cliffs_delta", title="Cliff's delta", symbol="|δ|", data_types=("location",),
        statistic="|P(current > reference) - P(current < reference)| over all pairs (0 to 1; U "
        "rescaled: 2 U / (n_ref n_cur) - 1)",
        measures="how far the current values moved up or down against the reference, on any scale "
        "and unmoved by outliers: 0.1 is a 0.18 std shift of a normal feature",
        default=0.1, default_meaning="floor on |δ| (a 0.18 std mean shift of a normal feature)",
        basis="Our evaluation (docs/detectors/drift.md): a 0.2 std mean shift moves KS D by only "
        "about 0.08, under its small-sample floor (0.1), so one window of 1,000 events missed it "
        "while U found it at p < 1e-6. With no change |δ| has a standard deviation of about 0.02 "
        "at 1,000 values against 3,000-5,000, so 0.1 is about 5 of them; Romano et al. (2006) call "
        "|δ| >= 0.147 small",
        implemented_in=_STATISTICS,
        note="Judged on single windows, like the range, as `<feature> (location)`.",
    ),
    TestSpec(
        name="psi", title="Population stability index", symbol="PSI",
        data_types=("numeric", "categorical"),
        statistic=f"sum (c - r) ln(c / r) over shares r, c of {DEFAULT_BINS} reference quantile bins "
        f"(numeric) or of the categories (categorical); an empty bin counts as {PSI_EPSILON:g}",
        measures="mass moved between bins, in the unit credit-risk and data teams already read",
        default=0.2, default_meaning="rule of thumb: < 0.1 stable, 0.1-0.2 moderate, >= 0.2 shifted",
        basis="industry rule of thumb (Siddiqi 2006; Yurdakul 2018) [P1]",
        implemented_in=_STATISTICS,
        note="Reported in every verdict's evidence, not a gate: it depends on the binning and on "
        "the empty-bin constant, and it adds nothing to D and W as a decision.",
    ),
    TestSpec(
        name="chi2", title="Chi-squared test of homogeneity", symbol="chi2",
        data_types=("categorical",),
        statistic="Pearson chi-squared on the 2 x k table (reference, current) x categories seen "
        "on either side, no continuity correction",
        measures="whether the category mix differs by more than sampling noise",
        default=None, default_meaning="p-value, judged against alpha after correction",
        basis="Evidently's chi-squared test for categorical features with at most 1,000 reference "
        "values [E1]; Alibi Detect's ChiSquareDrift [A1]",
        implemented_in=_STATISTICS,
    ),
    TestSpec(
        name="cramers_v", title="Cramér's V", symbol="V", data_types=("categorical",),
        statistic="sqrt(chi2 / N) for the 2 x k table (0 to 1)",
        measures="how strongly 'which window' predicts 'which category': the size of the mix change",
        default=0.15, default_meaning="floor on V",
        basis="Cohen's w (equal to V for a 2 x k table): 0.1 small, 0.3 medium [C1]; set above 0.1 "
        "because with no change at all V is about sqrt((k - 1) / N), 0.1 for 10 categories at N = 1,000",
        implemented_in=_STATISTICS,
    ),
    TestSpec(
        name="share_change", title="Largest share change", symbol="Δshare",
        data_types=("categorical",),
        statistic="the largest absolute change, over the categories, between a category's share of "
        "the reference and of the current window (0 to 1; 0.05 = five percentage points)",
        measures="how far any one category's share moved: a label mix going from 42 % to 51 %, a new "
        "category taking 5 % of traffic, a binary flag's rate doubling from 5 % to 10 %",
        default=0.05, default_meaning="floor on the largest share change",
        basis="Our evaluation (docs/detectors/drift.md): Cramér's V (0.15) and Jensen-Shannon (0.1) "
        "missed 9-point moves of a binary feature's share that chi-squared found significant; a "
        "share change reads the same for 2 or 20 categories. Used above 1,000 events, where its "
        "noise (about 1.3 points at the 2,000-event samples of bigger windows, and less with more) "
        "stays well under the floor; small samples use `significant_share_change`",
        implemented_in=_STATISTICS,
    ),
    TestSpec(
        name="significant_share_change", title="Largest significant share change", symbol="Δshare(z)",
        data_types=("categorical",),
        statistic="the largest absolute change in a category's share, over the categories whose own "
        "change is at least 4.5 standard errors (two-proportion z-test on the pooled share); 0 if "
        "none is",
        measures="the same move as the largest share change, counted only where that category's "
        "own change is beyond sampling noise",
        default=0.05, default_meaning="floor on the largest significant share change",
        basis="Our evaluation (docs/detectors/drift.md). With no change a share's noise at 1,000 "
        "events against a 3,000-event reference is about 1.8 points for a category near 50 % and "
        "under 1 point for one near 8 %, so one floor for all was either noise for big categories "
        "(5 points gave 3 false incidents in a million stationary events) or late for small ones "
        "(7 points, a segment going from 8 % to 14 % found 2 windows after the anchors; and 7 "
        "points is only 3.8 standard errors near 50 %: a false incident on a second draw of a "
        "stationary stream). A change now counts when that category's own z reaches 4.5 (about "
        "once in 150,000 by chance); the floor is 5 points as on large samples. A z of 4 gave a "
        "false incident per million stationary events",
        implemented_in=_STATISTICS,
    ),
    TestSpec(
        name="jensen_shannon", title="Jensen-Shannon distance", symbol="JS",
        data_types=("categorical",),
        statistic="square root of the Jensen-Shannon divergence of the category shares, natural "
        "logarithm (0 to 0.83)",
        measures="how different the two category mixes are, bounded and symmetric, defined when "
        "a category is new or gone",
        default=0.1, default_meaning="floor on JS",
        basis="Evidently's default for categorical features with more than 1,000 reference values: "
        "Jensen-Shannon distance >= 0.1 [E1]",
        implemented_in=_STATISTICS,
    ),
    TestSpec(
        name="unseen_share", title="Share of unseen categories", symbol="unseen",
        data_types=("categorical",),
        statistic="share of current events whose category has no reference count; its excess is "
        "that share above both the share to expect with no change (the reference sample's Good-Turing "
        "missing mass: the share of it in categories seen once), when at least 4.5 standard errors "
        "over it (the window's binomial noise plus the estimate's own, Esty 1983), and the "
        "feature's highest unseen share in its last 3 judged windows (none counted before there "
        "are 3)",
        measures="new values: a new label, language, finish reason or error type; and traffic moving "
        "to values never seen, spread over so many that no one category's share moves much (200 zip "
        "codes replaced by 200 others: no share moves a point)",
        default=None, default_meaning="no floor of its own: it counts toward the share change's",
        basis="Issue 5 section 1; a walk-through's 200 zip codes replaced by 200 new ones went "
        "unreported, every share moving half a point. A feature of many rare values (a city, a product "
        "id) meets new values in every window: the expectation keeps independent draws out (0 excess "
        "in 800 stationary draws with tails of 300 to 300,000 values, "
        "tests/detectors/drift/test_statistics.py), but values that come in sessions or bursts (a "
        "user id, a trending item) are new far beyond it in every window (a review: 39 false "
        "incidents in 40 windows); measured against the feature's own recent windows too, none",
        implemented_in=_STATISTICS,
        note="The categorical effect is the larger of the share change and this excess; both are in "
        "the evidence (`unseen_share`, `unseen_expected`, `unseen_excess`).",
    ),
    TestSpec(
        name="domain_rows", title="Domain classifier over input rows", symbol="AUC",
        data_types=("multivariate",),
        statistic="held-out ROC AUC of a classifier trained to tell current rows (the numeric "
        "input.* features of one event) from reference rows, over 3 folds, or on one held-out half "
        "from 1,000 rows a side (about as precise there, at a third of the cost); its p-value is a one-sided "
        "Mann-Whitney test on each fold's held-out scores, Bonferroni-combined (folds x smallest "
        "p; pooling the folds' scores gave twice the false alarms, as they are not independent)",
        measures="changes in the joint distribution, such as a broken correlation, that no "
        "single-feature test sees",
        default=0.6, default_meaning="floor on AUC (0.5: indistinguishable)",
        basis="NannyML's domain classifier alerts above AUROC 0.65 [N1]; Evidently's text domain "
        "classifier flags AUC > 0.55 on large data [E3]; Alibi Detect's ClassifierDrift [A1]",
        implemented_in=_DOMAIN,
    ),
    TestSpec(
        name="domain_text", title="Domain classifier over hashed character n-grams", symbol="AUC",
        data_types=("text",),
        statistic="held-out ROC AUC of a linear classifier on hashed character n-grams of the "
        "prompts telling current texts from reference texts; p-value as for rows",
        measures="a change in what the prompts say or how they are written, beyond length, script "
        "and language (those are numeric and categorical features of their own)",
        default=0.6, default_meaning="floor on AUC (0.5: indistinguishable)",
        basis="Evidently's text drift: a domain classifier, AUC > 0.55 on large data, above the 95th "
        "percentile of random classifiers' AUC on small data [E3]; NannyML 0.65 [N1]",
        implemented_in=_DOMAIN,
    ),
    TestSpec(
        name="page_hinkley", title="Page-Hinkley test", symbol="PH",
        data_types=("operations",),
        statistic="cumulative deviation of per-window values (mean latency, error share, tokens "
        "per request) from their running mean, less a tolerated drift delta; a change when it "
        "exceeds the threshold (both in reference standard deviations)",
        measures="a sustained rise or fall in an operations metric, abrupt or gradual",
        default=None, default_meaning="see parameters",
        basis="Page (1954); River's PageHinkley (delta 0.005, threshold 50, alpha 0.9999 in raw "
        "units) [R1]; here in reference standard deviations so one default fits ms and shares",
        implemented_in=_CHANGE, parameters=_change_parameters("page_hinkley"),
        note="The default change detector of the `drift` detector (option `change_detector`).",
    ),
    TestSpec(
        name="cusum", title="Two-sided tabular CUSUM", symbol="CUSUM",
        data_types=("operations",),
        statistic="S+ = max(0, S+ + z - k), S- = max(0, S- - z - k) on values standardised by the "
        "warm-up mean and std; a change when either exceeds h",
        measures="a step change in an operations metric's level",
        default=None, default_meaning="see parameters",
        basis="Page (1954); Montgomery's tabular CUSUM (k = 0.5, h = 4-5 for 1 std shifts) [M1], with "
        "a larger h because per-window metrics are not independent draws",
        implemented_in=_CHANGE, parameters=_change_parameters("cusum"),
    ),
    TestSpec(
        name="adwin", title="ADWIN-style adaptive window", symbol="ADWIN",
        data_types=("operations",),
        statistic="for every split of the recent per-window values into older and newer parts, "
        "|mean1 - mean0| against the ADWIN bound eps_cut(delta); a change at the split that "
        "exceeds it most",
        measures="a change in level, with an estimate of where it began",
        default=None, default_meaning="see parameters",
        basis="Bifet and Gavalda (2007); River's ADWIN (delta 0.002 on per-event values) [R1]; "
        "a smaller delta here because it is tested every window at every split",
        implemented_in=_CHANGE, parameters=_change_parameters("adwin"),
    ),
)
"""Every test the drift detector runs or reports, by name."""

RULES: tuple[Rule, ...] = (
    Rule("numeric", SMALL_SAMPLE_MAX, "small", "ks", "ks"),
    Rule("numeric", None, "large", "ks", "wasserstein"),
    Rule("range", None, "any", "range", "range"),
    Rule("location", None, "any", "mann_whitney", "cliffs_delta"),
    Rule("categorical", SMALL_SAMPLE_MAX, "small", "chi2", "significant_share_change"),
    Rule("categorical", None, "large", "chi2", "share_change"),
    Rule("multivariate", SMALL_SAMPLE_MAX, "small", "domain_rows", "domain_rows", floor=0.65),
    Rule("multivariate", None, "large", "domain_rows", "domain_rows"),
    Rule("text", SMALL_SAMPLE_MAX, "small", "domain_text", "domain_text", floor=0.65),
    Rule("text", None, "large", "domain_text", "domain_text"),
)
"""Which test gives the p-value and which effect must pass which floor, by smaller sample size.

Small samples need the larger effect: D >= 0.1 is a 0.25 std mean shift where W >= 0.1 is a
0.1 std one; V >= 0.15 is about JS >= 0.11; a domain AUC of 0.65 is asked for where 0.6 will
do on large samples. The p-value keeps noise out at small samples, the floor at large ones.
"""

SPEC_BY_NAME: dict[str, TestSpec] = {spec.name: spec for spec in SPECS}
_EFFECT_NAMES = {"ks": "ks_d", "wasserstein": "wasserstein", "range": "share_outside",
                 "cliffs_delta": "cliffs_delta",
                 "cramers_v": "cramers_v", "jensen_shannon": "jensen_shannon", "share_change": "share_change",
                 "significant_share_change": "significant_share_change", "domain_rows": "auc",
                 "domain_text": "auc"}
_NULL_EFFECT = {"auc": 0.5}
"""Effect value with no drift at all, where it is not 0 (for :attr:`FeatureVerdict.strength`)."""


@dataclass(frozen=True)
class Policy:
    """The rule for one comparison: p-value test, effect size and floor, and whether to test."""

    data_type: str
    regime: str
    testable: bool
    p_value_test: str
    effect_test: str
    effect_name: str
    floor: float
    smaller_sample: int

    def describe(self) -> str:
        """One line: what decides, e.g. ``KS p-value; effect W >= 0.1 (smaller sample 5000 > 1000)``."""
        p_spec, e_spec = SPEC_BY_NAME[self.p_value_test], SPEC_BY_NAME[self.effect_test]
        head = f"{p_spec.title} p-value; effect {e_spec.symbol} >= {self.floor:g}"
        if self.regime == "any":
            return f"{head} (smaller sample {self.smaller_sample}, any size)"
        band = "<=" if self.regime == "small" else ">"
        return f"{head} (smaller sample {self.smaller_sample} {band} {SMALL_SAMPLE_MAX})"


def _check_data_type(data_type: str) -> None:
    if data_type not in MIN_SAMPLES:
        raise ValueError(f"data_type must be one of {sorted(MIN_SAMPLES)}, got {data_type!r} "
                         "(operations metrics are judged by the change detectors in drift.change)")


def enough(data_type: str, n_reference: int, n_current: int) -> bool:
    """Whether both sides reach :data:`MIN_SAMPLES` for ``data_type`` (callers skip the feature if not).

    >>> enough("categorical", 5000, 50), enough("categorical", 99, 5000)
    (True, False)
    """
    _check_data_type(data_type)
    least = MIN_SAMPLES[data_type]
    return n_reference >= least.reference and n_current >= least.current


def policy(data_type: str, n_reference: int, n_current: int) -> Policy:
    """The :data:`RULES` entry for ``data_type`` at these sample sizes.

    ``testable`` is :func:`enough`; a policy is returned either way so callers can say what
    would have been tested.

    >>> p = policy("numeric", 5000, 800)
    >>> p.regime, p.effect_name, p.floor, p.testable
    ('small', 'ks_d', 0.1, True)
    """
    _check_data_type(data_type)
    smaller = min(n_reference, n_current)
    rule = next(r for r in RULES if r.data_type == data_type and (r.up_to is None or smaller <= r.up_to))
    floor = rule.floor if rule.floor is not None else SPEC_BY_NAME[rule.effect_test].default
    assert floor is not None, f"effect test {rule.effect_test} has no default floor"
    return Policy(data_type=data_type, regime=rule.regime, testable=enough(data_type, n_reference, n_current),
                  p_value_test=rule.p_value_test, effect_test=rule.effect_test,
                  effect_name=_EFFECT_NAMES[rule.effect_test], floor=floor, smaller_sample=smaller)


class DomainResult(Protocol):
    """What :func:`judge_domain` needs from a domain-classifier comparison (:mod:`.domain`)."""

    @property
    def auc(self) -> float: ...

    @property
    def p_value(self) -> float: ...

    @property
    def n_reference(self) -> int: ...

    @property
    def n_current(self) -> int: ...

    def evidence(self) -> dict[str, Any]: ...


Stats = NumericStats | RangeStats | CategoricalStats | DomainResult


@dataclass(frozen=True)
class FeatureVerdict:
    """One feature's comparison judged by its :class:`Policy`, before multiple-testing correction.

    ``p_value`` is the policy's test's raw p-value; ``effect`` the policy's effect size and
    ``passes_floor`` whether it reaches ``floor``. ``n_reference``/``n_current`` are the events
    behind each side (numeric statistics run on samples of them; ``stats`` holds the sample sizes).
    The feature drifted when :meth:`drifted` holds for its corrected p-value.
    """

    feature: str
    data_type: str
    p_value: float
    effect_name: str
    effect: float
    floor: float
    passes_floor: bool
    n_reference: int
    n_current: int
    stats: Stats
    policy: Policy

    def drifted(self, adjusted_p: float, alpha: float = DEFAULT_ALPHA) -> bool:
        """Significant after correction (``adjusted_p < alpha``) and the effect reaches its floor."""
        return adjusted_p < alpha and self.passes_floor

    @property
    def strength(self) -> float:
        """The effect as a multiple of its floor, both measured from 'no drift' (AUC from 0.5).

        1.0 is just at the floor; use it to rank drifted features and to scale severity.
        """
        null = _NULL_EFFECT.get(self.effect_name, 0.0)
        return max(0.0, self.effect - null) / max(self.floor - null, 1e-12)

    def describe(self) -> str:
        """One line for a finding's summary: effect against floor, p-value, what moved."""
        symbol = SPEC_BY_NAME[self.policy.effect_test].symbol
        head = f"{self.feature}: {symbol}={self.effect:.3g} (floor {self.floor:g}), p={self.p_value:.1e}"
        stats = self.stats
        if isinstance(stats, NumericStats):
            return (f"{head}, mean {stats.reference_mean:.4g} -> {stats.current_mean:.4g}, "
                    f"std {stats.reference_std:.4g} -> {stats.current_std:.4g}, n={self.n_current}")
        if isinstance(stats, RangeStats):
            return (f"{head}, {stats.below} below and {stats.above} above the reference range "
                    f"[{stats.reference_min:.4g}, {stats.reference_max:.4g}], n={self.n_current}")
        if isinstance(stats, CategoricalStats):
            moved = category_moves(stats.top_changes, stats.unseen_share, stats.unseen_expected)
            return f"{head}, {moved}, n={self.n_current}"
        return f"{head}, n={self.n_current}"

    def evidence(self) -> dict[str, Any]:
        """JSON-ready: the decision rule, the p-value, the effect against its floor, the statistics."""
        return {
            "data_type": self.data_type,
            "rule": self.policy.describe(),
            "p_value": float(f"{self.p_value:.3g}"),
            "effect": {"name": self.effect_name, "value": round(self.effect, 4), "floor": self.floor,
                       "passes_floor": self.passes_floor},
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "statistics": self.stats.evidence(),
        }


def _verdict(feature: str, data_type: str, p_value: float, effect: float, stats: Stats,
             rule: Policy, n_reference: int, n_current: int) -> FeatureVerdict:
    return FeatureVerdict(feature=feature, data_type=data_type, p_value=p_value,
                          effect_name=rule.effect_name, effect=effect, floor=rule.floor,
                          passes_floor=effect >= rule.floor, n_reference=n_reference,
                          n_current=n_current, stats=stats, policy=rule)


def judge_numeric(feature: str, reference_values: FloatArray | NumericReference,
                  current_values: FloatArray, n_current: int | None = None, *,
                  n_reference: int | None = None, bins: int = DEFAULT_BINS) -> FeatureVerdict:
    """Compare two NaN-free samples of a numeric feature and judge them by :func:`policy`.

    The policy is chosen on the sample sizes (they set the statistics' noise); ``n_current`` and
    ``n_reference`` are the events the samples stand for, reported only (default: sample sizes).
    Callers skip features for which :func:`enough` is false. A reference compared many times
    can be given profiled once (:class:`~.statistics.NumericReference`).

    >>> rng = np.random.default_rng(0)
    >>> v = judge_numeric("input.x", rng.normal(size=500), rng.normal(1.0, 1.0, size=500))
    >>> v.effect_name, v.passes_floor, v.drifted(v.p_value)
    ('ks_d', True, True)
    """
    stats = compare_numeric(reference_values, current_values, bins=bins)
    rule = policy("numeric", stats.n_reference, stats.n_current)
    effect = stats.ks_d if rule.effect_name == "ks_d" else stats.wasserstein
    return _verdict(feature, "numeric", stats.ks_p, effect, stats, rule,
                    n_reference if n_reference is not None else stats.n_reference,
                    n_current if n_current is not None else stats.n_current)


def judge_range(feature: str, reference_values: FloatArray | NumericReference,
                current_values: FloatArray) -> FeatureVerdict:
    """Judge the share of ``current_values`` outside the reference sample's range by :func:`policy`.

    >>> v = judge_range("input.amount (outside reference range)", np.arange(1000.0),
    ...                 np.r_[np.arange(950.0), np.full(50, 1e6)])
    >>> v.effect_name, v.effect, v.drifted(v.p_value)
    ('share_outside', 0.05, True)
    """
    stats = compare_range(reference_values, current_values)
    rule = policy("range", stats.n_reference, stats.n_current)
    return _verdict(feature, "range", stats.p_value, stats.share, stats, rule,
                    stats.n_reference, stats.n_current)


def judge_location(feature: str, stats: NumericStats) -> FeatureVerdict:
    """Judge the location shift in ``stats`` (:func:`judge_numeric`'s comparison of a feature):
    Mann-Whitney's p-value and Cliff's delta, by :func:`policy`.

    >>> v = judge_numeric("input.x", np.arange(1000.0), np.arange(1000.0) + 100.0)
    >>> w = judge_location("input.x (location)", v.stats)
    >>> w.effect_name, round(w.effect, 2), w.drifted(w.p_value)
    ('cliffs_delta', 0.19, True)
    """
    rule = policy("location", stats.n_reference, stats.n_current)
    return _verdict(feature, "location", stats.mann_whitney_p, abs(stats.cliffs_delta), stats, rule,
                    stats.n_reference, stats.n_current)


def judge_categorical(feature: str, reference_counts: Mapping[str, int], current_counts: Mapping[str, int],
                      *, unseen_before: float | None = None) -> FeatureVerdict:
    """Compare two count tables of a categorical feature and judge them by :func:`policy`.

    ``unseen_before`` is the highest unseen share of the feature's last judged windows (None: too
    few to go by). Given, the unseen share's excess counts toward the share change, measured
    above both its Good-Turing expectation and that: values that come in sessions or bursts (a
    user id, a trending item) are new in every window in numbers no expectation from one
    reference predicts, and only a rise over their own recent level is drift.

    >>> v = judge_categorical("output.label", {"a": 600, "b": 400}, {"a": 300, "b": 700})
    >>> v.effect_name, round(v.effect, 2), v.drifted(v.p_value)
    ('significant_share_change', 0.3, True)
    """
    stats = compare_categorical(reference_counts, current_counts)
    rule = policy("categorical", stats.n_reference, stats.n_current)
    effect = {"cramers_v": stats.cramers_v, "jensen_shannon": stats.jensen_shannon,
              "share_change": _largest_share_change(stats),
              "significant_share_change": stats.significant_share_change}[rule.effect_name]
    if unseen_before is not None and rule.effect_name in ("share_change", "significant_share_change"):
        # traffic moved to many values, none much: above the expectation and the recent windows
        effect = max(effect, min(stats.unseen_excess, stats.unseen_share - unseen_before))
    return _verdict(feature, "categorical", stats.chi2_p, effect, stats, rule,
                    stats.n_reference, stats.n_current)


def _largest_share_change(stats: CategoricalStats) -> float:
    return max((abs(cur - ref) for _, ref, cur in stats.top_changes), default=0.0)


def judge_domain(feature: str, result: DomainResult, data_type: str = "multivariate") -> FeatureVerdict:
    """Judge a domain-classifier comparison (``multivariate`` rows or ``text``) by :func:`policy`."""
    if data_type not in ("multivariate", "text"):
        raise ValueError(f"data_type must be 'multivariate' or 'text', got {data_type!r}")
    rule = policy(data_type, result.n_reference, result.n_current)
    return _verdict(feature, data_type, result.p_value, result.auc, result, rule,
                    result.n_reference, result.n_current)


def correct(verdicts: Sequence[FeatureVerdict], method: str = DEFAULT_CORRECTION, *,
            untested: int = 0) -> list[float]:
    """Adjusted p-values of ``verdicts``, in order: ``holm`` (family-wise) or ``bh`` (false discovery rate).

    ``untested`` members of the family were left out without a test (they could not pass): they
    count with a p-value of 1, so the tested ones are corrected as strictly as in the whole family.

    >>> v = judge_categorical("f", {"a": 500, "b": 500}, {"a": 500, "b": 500})
    >>> correct([v, v], method="bh")
    [1.0, 1.0]
    """
    pvalues = [v.p_value for v in verdicts] + [1.0] * untested
    if method == "holm":
        return holm_adjust(pvalues)[: len(verdicts)]
    if method == "bh":
        return benjamini_hochberg(pvalues)[: len(verdicts)]
    raise ValueError(f"method must be 'holm' or 'bh', got {method!r}")


def select_drifted(verdicts: Sequence[FeatureVerdict], *, alpha: float = DEFAULT_ALPHA,
                   method: str = DEFAULT_CORRECTION) -> list[tuple[FeatureVerdict, float]]:
    """The verdicts that drifted with their adjusted p-values, strongest first (then by name)."""
    adjusted = correct(verdicts, method)
    drifted = [(v, p) for v, p in zip(verdicts, adjusted, strict=True) if v.drifted(p, alpha)]
    return sorted(drifted, key=lambda vp: (-vp[0].strength, vp[0].feature))


# --- the documentation page --------------------------------------------------------------------

SOURCES: tuple[tuple[str, str], ...] = (
    ("E1", "Evidently 0.1.50 release notes, automatic stattest selection: at most 1,000 reference "
           "values: KS (numeric), chi-squared (categorical), Z-test (binary), p < 0.05; more: normed "
           "Wasserstein (numeric), Jensen-Shannon (categorical), threshold 0.1 "
           "(github.com/evidentlyai/evidently/releases/tag/v0.1.50.dev0)"),
    ("E2", "Evidently `wasserstein_distance_norm` stattest: the distance divided by the reference "
           "standard deviation"),
    ("E3", "Evidently text drift (`calculate_text_drift_score`): domain classifier AUC > 0.55, or with "
           "bootstrap above the 95th percentile of random classifiers' AUC"),
    ("N1", "NannyML `DomainClassifierCalculator`: 5-fold cross-validated AUROC, default "
           "`ConstantThreshold(lower=0.45, upper=0.65)`"),
    ("A1", "Alibi Detect `KSDrift` / `ChiSquareDrift`: p_val 0.05, correction 'bonferroni' (or 'fdr'); "
           "`ClassifierDrift` (used for benchmarking only, given its licence)"),
    ("R1", "River `drift.PageHinkley` (min_instances 30, delta 0.005, threshold 50, alpha 0.9999) and "
           "`drift.ADWIN` (delta 0.002)"),
    ("M1", "D. C. Montgomery, Introduction to Statistical Quality Control: tabular CUSUM, k = 0.5, "
           "h = 4 or 5"),
    ("C1", "J. Cohen, Statistical Power Analysis for the Behavioral Sciences (1988): w = 0.1, 0.3, 0.5"),
    ("P1", "N. Siddiqi, Credit Risk Scorecards (2006); B. Yurdakul, Statistical Properties of the "
           "Population Stability Index (2018)"),
)


def _band(rule: Rule) -> str:
    if rule.regime == "any":
        return "all sizes"
    if rule.up_to is None:
        return f"smaller sample > {SMALL_SAMPLE_MAX:,}"
    return f"smaller sample <= {rule.up_to:,}"


def _used_as(spec: TestSpec) -> str:
    """Where :data:`RULES` use ``spec``: as a p-value, as an effect size with its floor, or neither."""
    parts = []
    for data_type in MIN_SAMPLES:
        rules = [r for r in RULES if r.data_type == data_type]
        as_p = [r for r in rules if r.p_value_test == spec.name]
        if as_p:
            bands = "all sizes" if len(as_p) == len(rules) else ", ".join(_band(r) for r in as_p)
            parts.append(f"p-value for {data_type} ({bands})")
        for rule in (r for r in rules if r.effect_test == spec.name):
            floor = rule.floor if rule.floor is not None else spec.default
            parts.append(f"effect size for {data_type}, floor {floor:g} ({_band(rule)})")
    if "operations" in spec.data_types:
        parts.append("change detector on per-window operations metrics")
    if spec.name == "unseen_share":
        parts.append("its excess raises the categorical effect (share change) when larger, all sizes")
    return "; ".join(parts) if parts else "evidence only, in every verdict of its data types"


def _floor_examples() -> list[str]:
    """Effect sizes of textbook shifts, computed here so the page shows what a floor means."""
    rows = ["| shift | effect sizes |", "|---|---|"]
    for delta in (0.1, 0.25, 0.5, 1.0):
        d = 2.0 * float(norm.cdf(delta / 2.0)) - 1.0
        rows.append(f"| normal feature, mean + {delta:g} std | D = {d:.3f}, W = {delta:.3f} |")
    xs = np.linspace(-6.0, 6.0, 24_001)
    for ratio in (1.2, 1.5, 2.0):
        d = float(np.max(np.abs(norm.cdf(xs) - norm.cdf(xs / ratio))))
        w = (ratio - 1.0) * math.sqrt(2.0 / math.pi)
        rows.append(f"| normal feature, std x {ratio:g} | D = {d:.3f}, W = {w:.3f} |")
    n = 1_000_000
    cases: list[tuple[str, dict[str, int], dict[str, int]]] = [
        ("two labels 50/50 -> 60/40", {"a": n // 2, "b": n // 2}, {"a": 6 * n // 10, "b": 4 * n // 10}),
        ("two labels 50/50 -> 65/35", {"a": n // 2, "b": n // 2}, {"a": 65 * n // 100, "b": 35 * n // 100}),
        ("refusals 5 % -> 10 %", {"yes": n // 20, "no": 19 * n // 20}, {"yes": n // 10, "no": 9 * n // 10}),
        ("a new category takes 5 % of traffic", {"a": n // 2, "b": n // 2},
         {"a": 475 * n // 1000, "b": 475 * n // 1000, "new": n // 20}),
    ]
    for label, ref, cur in cases:
        c = compare_categorical(ref, cur)
        rows.append(f"| {label} | Δshare = {_largest_share_change(c):.3f}, V = {c.cramers_v:.3f}, "
                    f"JS = {c.jensen_shannon:.3f}, PSI = {c.psi:.3f} |")
    return rows


def _rules_table() -> list[str]:
    rows = ["| data type | smaller sample | tested? | p-value from | effect size | floor |",
            "|---|---|---|---|---|---|"]
    for data_type, least in MIN_SAMPLES.items():
        rows.append(f"| {data_type} | reference < {least.reference:,} or current < {least.current:,} "
                    "| no | - | - | - |")
        lower = least.current
        for rule in (r for r in RULES if r.data_type == data_type):
            band = f"{lower:,} - {rule.up_to:,}" if rule.up_to is not None else f"> {lower - 1:,}"
            effect = SPEC_BY_NAME[rule.effect_test]
            floor = rule.floor if rule.floor is not None else effect.default
            rows.append(f"| {data_type} | {band} | yes | {SPEC_BY_NAME[rule.p_value_test].title} "
                        f"| {effect.symbol} (`{effect.name}`) | {floor:g} |")
            lower = (rule.up_to or 0) + 1
    return rows


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (formulas hold ``|``)."""
    return text.replace("|", "\\|")


def _spec_section(spec: TestSpec) -> list[str]:
    default = "none" if spec.default is None else f"{spec.default:g}"
    rows = [("data types", ", ".join(spec.data_types)), ("statistic", spec.statistic),
            ("measures", spec.measures), ("used as", _used_as(spec)),
            ("default", f"{default}: {spec.default_meaning}")]
    if spec.parameters:
        rows.append(("parameters", ", ".join(f"`{name}` = {value:g}" for name, value in spec.parameters)))
    rows += [("based on", spec.basis), ("implemented in", f"`{spec.implemented_in}`")]
    lines = [f"### `{spec.name}` — {spec.title}", "", "| | |", "|---|---|"]
    lines += [f"| {label} | {_cell(value)} |" for label, value in rows]
    if spec.note:
        lines += ["", spec.note]
    return [*lines, ""]


def markdown() -> str:
    """The registry as the page ``docs/detectors/drift-tests.md``."""
    lines = [
        "# Drift tests and their defaults",
        "",
        "<!-- Generated from inferwatch/detectors/drift/catalogue.py; do not edit. Regenerate with",
        "     python -m inferwatch.detectors.drift.catalogue > docs/detectors/drift-tests.md -->",
        "",
        "Every test the `drift` detector runs, what it measures, and the defaults it uses, from the one",
        "registry in `inferwatch.detectors.drift.catalogue`.",
        "",
        "## The decision",
        "",
        "A feature of a model has drifted in a window when **both** hold:",
        "",
        f"1. its p-value, adjusted across everything tested for that model in that window, is below "
        f"`alpha` ({DEFAULT_ALPHA:g}); the adjustment is Holm's (family-wise error rate, the default) "
        "or Benjamini-Hochberg's (false discovery rate, option `correction: bh`);",
        "2. its effect size reaches the floor for its data type and sample size (table below).",
        "",
        "At a million events a p-value alone flags shifts nobody cares about; at fifty events an effect",
        "size alone is mostly noise. So the rule changes with the size of the smaller of the two samples",
        "(numeric: values in the samples compared; categorical: events counted; domain: rows sampled),",
        "and below a minimum a feature is not tested at all.",
        "",
        *_rules_table(),
        "",
        "Operations metrics (mean latency, error share, tokens per request per window) are not",
        "compared sample against sample; a streaming change detector watches their per-window values",
        "(`page_hinkley`, `cusum`, `adwin` below).",
        "",
        "## What the floors mean",
        "",
        "Effect sizes of textbook shifts (exact for large samples), computed by the code that judges:",
        "",
        *_floor_examples(),
        "",
        "## The tests",
        "",
    ]
    for spec in SPECS:
        lines += _spec_section(spec)
    lines += ["## Sources", ""]
    lines += [f"- [{key}] {text}" for key, text in SOURCES]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
