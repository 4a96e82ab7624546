"""Docstring examples are tests too (River-style): run those of the core modules."""

import doctest
import importlib

import pytest

MODULES = [
    "inferwatch.collectors.event",
    "inferwatch.agent.content",
    "inferwatch.collectors.ids",
    "inferwatch.collectors.sqlite_bus",
    "inferwatch.collectors.otlp_map",
    "inferwatch.collectors.unread_keys",
    "inferwatch.detectors.windows",
    "inferwatch.detectors.merge",
    "inferwatch.detectors.incidents",
    "inferwatch.detectors.scan",
    "inferwatch.detectors.sources",
    "inferwatch.detectors.es_mappings",
    "inferwatch.detectors.store",
    "inferwatch.detectors.state",
    "inferwatch.detectors.drift",
    "inferwatch.detectors.drift.sketch",
    "inferwatch.detectors.drift.readable",
    "inferwatch.detectors.drift.detector",
    "inferwatch.detectors.investigation",
    "inferwatch.detectors.alerts.matchers",
    "inferwatch.detectors.alerts.config",
    "inferwatch.detectors.alerts.notifier",
    "inferwatch.detectors.alerts.am_silences",
    "inferwatch.testing",
    "inferwatch.cli",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
