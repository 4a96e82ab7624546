"""A drift finding's evidence as a person reads it: one row per drifted test, and histograms.

The evidence (``features`` in a drift finding, see :mod:`.detector`) holds every statistic as
JSON, two hundred lines for a couple of features; ``inferwatch incidents show`` and the Markdown
report put these rows first, the JSON after them for whoever wants the rest.

>>> evidence = {"features": {"input.zone": {
...     "data_type": "categorical", "p_adjusted": 2.3e-121,
...     "effect": {"name": "share_change", "value": 0.38, "floor": 0.05},
...     "statistics": {"unseen_share": 0.38, "unseen_expected": 0.0, "top_changes": [
...         {"category": "d", "reference_share": 0.0, "current_share": 0.38},
...         {"category": "c", "reference_share": 0.3517, "current_share": 0.2}]}}}}
>>> drifted_rows(evidence)
[['input.zone', 'Δshare', '0.38 (floor 0.05)', '2.3e-121', "'d' 0.0% -> 38.0%, 'c' 35.2% -> 20.0%"]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = ["HEADERS", "HISTOGRAMS", "category_moves", "drifted_rows", "histogram_lines", "histogram_rows"]

HEADERS: Final = ["FEATURE", "TEST", "EFFECT", "P ADJUSTED", "REFERENCE -> CURRENT"]
HISTOGRAMS: Final = "histograms, % of the events in each bin of the reference's quantiles:"

_SYMBOLS: Final = {"ks_d": "D", "wasserstein": "W", "cliffs_delta": "|δ|", "share_outside": "outside",
                   "share_change": "Δshare", "significant_share_change": "Δshare(z)", "cramers_v": "V",
                   "jensen_shannon": "JS", "auc": "AUC"}


def drifted_rows(evidence: Mapping[str, Any]) -> list[list[str]]:
    """``[feature, test, effect (floor), adjusted p-value, reference -> current]`` for each drifted
    test of a drift finding's ``evidence``, strongest first as the finding lists them; ``[]`` when
    the evidence is not a drift finding's."""
    features = evidence.get("features")
    if not isinstance(features, Mapping):
        return []
    rows = []
    for name, verdict in features.items():
        if not isinstance(verdict, Mapping) or not isinstance(verdict.get("effect"), Mapping):
            continue
        effect = verdict["effect"]
        statistics = verdict.get("statistics")
        statistics = statistics if isinstance(statistics, Mapping) else {}
        p_value = verdict.get("p_adjusted", verdict.get("p_value"))
        test = _SYMBOLS.get(str(effect.get("name")), str(effect.get("name")))
        value, excess = effect.get("value"), statistics.get("unseen_excess")
        moves = [abs(_share(c, "current_share") - _share(c, "reference_share")) for c in _changes(statistics)]
        if (isinstance(excess, float) and excess > 0 and isinstance(value, float)
                and value > max(moves, default=0.0) + 1e-4):
            test = "unseen excess"  # the share of new values set the effect, not one category's move
        try:
            moved = _moved(statistics)
        except (TypeError, ValueError, KeyError):  # evidence of another shape (an older release's)
            moved = "-"
        rows.append([str(name), test, f"{_num(effect.get('value'))} (floor {_num(effect.get('floor'))})",
                     f"{p_value:.2g}" if isinstance(p_value, int | float) else "-", moved])
    return rows


def _changes(statistics: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    changes = statistics.get("top_changes")
    return [c for c in changes if isinstance(c, Mapping)] if isinstance(changes, list) else []


def _share(change: Mapping[str, Any], key: str) -> float:
    value = change.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


def histogram_rows(evidence: Mapping[str, Any]) -> list[list[str]]:
    """``[feature, reference shares, current shares]`` for each drifted numeric feature whose
    evidence holds its histogram: the percentage of the events in each reference-quantile bin
    (about ten each for the reference, by construction), one histogram per feature.

    >>> histogram_rows({"features": {"input.x": {"statistics": {"histogram": {
    ...     "reference_counts": [50, 50], "current_counts": [5, 95]}}}}})
    [['input.x', '50 50', '5 95']]
    """
    from inferwatch.detectors.drift import split_aspect

    rows, seen = [], set()
    features = evidence.get("features")
    for name, verdict in (features.items() if isinstance(features, Mapping) else ()):
        statistics = verdict.get("statistics") if isinstance(verdict, Mapping) else None
        histogram = statistics.get("histogram") if isinstance(statistics, Mapping) else None
        feature = split_aspect(str(name))[0]
        if not isinstance(histogram, Mapping) or feature in seen:
            continue
        reference, current = histogram.get("reference_counts"), histogram.get("current_counts")
        if (not isinstance(reference, list) or not isinstance(current, list) or not reference
                or len(reference) != len(current)
                or not all(isinstance(c, int | float) for c in [*reference, *current])):
            continue
        seen.add(feature)
        rows.append([feature, _percents(reference), _percents(current)])
    return rows


def histogram_lines(evidence: Mapping[str, Any]) -> list[str]:
    """:func:`histogram_rows` as aligned lines, a reference line and a current line a feature.

    >>> histogram_lines({"features": {"input.x": {"statistics": {"histogram": {
    ...     "reference_counts": [50, 50], "current_counts": [5, 95]}}}}})
    ['input.x  reference 50 50', '         current   5 95']
    """
    rows = histogram_rows(evidence)
    width = max((len(name) for name, _, _ in rows), default=0)
    return [line for name, ref, cur in rows
            for line in (f"{name:<{width}}  reference {ref}", f"{'':<{width}}  current   {cur}")]


def _percents(counts: Sequence[int]) -> str:
    total = sum(counts) or 1
    return " ".join(f"{100 * c / total:.0f}" for c in counts)


def category_moves(changes: Sequence[tuple[Any, float, float]], unseen: float, expected: float | None) -> str:
    """The two categories that moved most, and the unseen share when it goes beyond them
    (``'missing' 0.0% -> 29.8%`` needs no ``unseen 29.8%``): a categorical verdict's one line, in
    a finding's summary and in the table of ``incidents show``.

    >>> category_moves([("d", 0.0, 0.38), ("c", 0.3517, 0.2)], 0.38, 0.0)
    "'d' 0.0% -> 38.0%, 'c' 35.2% -> 20.0%"
    >>> category_moves([("a", 0.5, 0.4)], 0.1, 0.01)
    "'a' 50.0% -> 40.0%, unseen 10.0% (1.0% expected)"
    """
    shown = changes[:2]
    text = ", ".join(f"{name!r} {ref:.1%} -> {cur:.1%}" for name, ref, cur in shown)
    if unseen - sum(cur for _, ref, cur in shown if not ref) > 0.0005:
        text += f", unseen {unseen:.1%}" + (f" ({expected:.1%} expected)" if expected is not None else "")
    return text


def _moved(statistics: Mapping[str, Any]) -> str:
    """What moved, from a test's statistics: means and spreads, shares, values outside, the
    classifier's telling features."""
    if "top_changes" in statistics:
        unseen = statistics.get("unseen_share")
        expected = statistics.get("unseen_expected")  # absent from incidents of older releases
        return category_moves([(c.get("category"), _share(c, "reference_share"), _share(c, "current_share"))
                               for c in _changes(statistics)],
                              float(unseen) if isinstance(unseen, int | float) else 0.0,
                              float(expected) if isinstance(expected, int | float) else None)
    if "reference_range" in statistics:
        low, high = statistics["reference_range"]
        return (f"{statistics.get('share_outside', 0.0):.1%} outside [{_num(low)}, {_num(high)}] "
                f"({statistics.get('below', 0)} below, {statistics.get('above', 0)} above)")
    if "auc" in statistics:
        telling = ", ".join(f"{t.get('feature')} (AUC drop {_num(t.get('auc_drop'))})"
                            for t in statistics.get("top_features") or [] if isinstance(t, Mapping))
        return f"AUC {_num(statistics['auc'])}" + (f"; most telling: {telling}" if telling else "")
    reference, current = statistics.get("reference"), statistics.get("current")
    if isinstance(reference, Mapping) and "mean" in reference and isinstance(current, Mapping):
        return (f"mean {_num(reference['mean'])} -> {_num(current.get('mean'))}, "
                f"std {_num(reference.get('std'))} -> {_num(current.get('std'))}")
    return "-"


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)
