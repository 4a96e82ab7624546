"""A drift finding's evidence as rows a person reads: robust to evidence of other shapes."""

from __future__ import annotations

from inferwatch.detectors.drift.readable import drifted_rows, histogram_lines


def test_evidence_of_other_shapes_is_shown_as_far_as_it_goes_never_raises() -> None:
    """Incidents stored by an older release, or hand-made, must not take `incidents show` down."""
    odd = {"features": {
        "old": {"effect": {"name": "share_change", "value": 0.3, "floor": 0.05},
                "statistics": {"unseen_share": 0.3, "top_changes": [
                    {"category": "x", "reference_share": 0.1, "current_share": 0.4}, {"category": "y"}]}},
        "nulls": {"effect": {"name": "share_change", "value": 0.3, "floor": 0.05},
                  "statistics": {"unseen_share": None, "unseen_expected": None, "top_changes": [None]}},
        "auc": {"effect": {"name": "auc", "value": 0.9, "floor": 0.6}, "statistics": {"top_features": [{}]}},
        "range": {"effect": {"name": "share_outside", "value": 0.1, "floor": 0.02},
                  "statistics": {"reference_range": [1.0]}},
        "junk": "not a verdict",
        "bins": {"effect": {"name": "wasserstein", "value": 1.0, "floor": 0.1},
                 "statistics": {"histogram": {"reference_counts": [1, None], "current_counts": [1, 2]}}},
    }}
    rows = {row[0]: row for row in drifted_rows(odd)}
    assert set(rows) == {"old", "nulls", "auc", "range", "bins"}
    assert rows["old"][4] == "'x' 10.0% -> 40.0%, 'y' 0.0% -> 0.0%, unseen 30.0%"  # no "(… expected)"
    assert rows["range"][4] == "-"
    assert histogram_lines(odd) == []
    assert drifted_rows({"features": "nothing"}) == []
    assert histogram_lines({}) == []


def test_an_effect_set_by_new_values_is_named_so() -> None:
    evidence = {"features": {"input.zip": {
        "effect": {"name": "share_change", "value": 0.98, "floor": 0.05}, "p_adjusted": 1e-40,
        "statistics": {"unseen_share": 1.0, "unseen_expected": 0.01, "unseen_excess": 0.99, "top_changes": [
            {"category": "00017", "reference_share": 0.009, "current_share": 0.0}]}}}}
    [row] = drifted_rows(evidence)
    assert row[1] == "unseen excess"
    assert row[4] == "'00017' 0.9% -> 0.0%, unseen 100.0% (1.0% expected)"


def test_the_table_names_each_effect_as_the_catalogue_does() -> None:
    """readable.py keeps its own copy of the symbols (the catalogue pulls in scipy, a second to
    `incidents show`): it must say what the catalogue says."""
    from inferwatch.detectors.drift import catalogue, readable

    for test, effect in catalogue._EFFECT_NAMES.items():
        assert readable._SYMBOLS[effect] == catalogue.SPEC_BY_NAME[test].symbol, (test, effect)
