"""The examples in the agent's docstrings run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "inferwatch.agent",
    "inferwatch.agent.content",
    "inferwatch.agent.core",
    "inferwatch.agent.extract",
    "inferwatch.agent.genai",
    "inferwatch.agent.principal",
    "inferwatch.agent.shipper",
    "inferwatch.agent.tabular",
    "inferwatch.collectors.redaction",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0
    assert result.attempted > 0
