"""deploy/local/services.py loaded by path (it is a script, not a package), for the fixtures
that start real Kafka, Elasticsearch and Alertmanager: one home for both conftests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SERVICES_PY = Path(__file__).resolve().parents[1] / "deploy" / "local" / "services.py"
MODULE_NAME = "inferwatch_deploy_local"


def load_services() -> ModuleType:
    """The deploy/local module (loaded once per test session)."""
    loaded = sys.modules.get(MODULE_NAME)
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(MODULE_NAME, SERVICES_PY)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def log(message: str) -> None:
    print(f"[deploy/local] {message}", file=sys.stderr)
