"""Drift detection: mergeable window summaries, statistical tests by data type, references.

Modules: :mod:`.sketch` (per-window summaries that merge exactly, so N detector processes reach
the verdict one would), :mod:`.catalogue` (which test runs for which data type and sample size),
:mod:`.statistics` (the tests), :mod:`.change` (streaming change detectors for operations
metrics), :mod:`.domain` (domain-classifier drift for rows and text), :mod:`.textstats` (text
features), :mod:`.reference` (reference sources and persistence), :mod:`.detector` (the
``drift`` detector).
"""

from __future__ import annotations

ASPECTS = {"outside reference range": "range", "location": "location", "value types": "value types",
           "missing share": "missing share"}
"""The suffixes of a feature's other tests (``input.x (location)``) and their short names in a title."""


def split_aspect(name: str) -> tuple[str, str | None]:
    """A verdict's name as ``(feature, aspect suffix)``; ``None`` when it tests the distribution.

    >>> split_aspect("input.x (outside reference range)"), split_aspect("input.size (cm)")
    (('input.x', 'outside reference range'), ('input.size (cm)', None))
    """
    if name.endswith(")") and " (" in name:
        head, _, tail = name[:-1].rpartition(" (")
        if tail in ASPECTS:
            return head, tail
    return name, None
