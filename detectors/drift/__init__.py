"""Drift detection: mergeable window summaries, statistical tests by data type, references.

Modules: :mod:`.sketch` (per-window summaries that merge exactly, so N detector processes reach
the verdict one would), :mod:`.catalogue` (which test runs for which data type and sample size),
:mod:`.statistics` (the tests), :mod:`.change` (streaming change detectors for operations
metrics), :mod:`.domain` (domain-classifier drift for rows and text), :mod:`.textstats` (text
features), :mod:`.reference` (reference sources and persistence), :mod:`.detector` (the
``drift`` detector).
"""
