"""Real Kafka and Elasticsearch for integration tests, started once per session by deploy/local.

The first test that asks for them starts whatever is not already running (and stops it again at
the end of the session, unless INFERWATCH_KEEP_SERVICES=1). A service that will not start fails
the tests that need it: integration tests never skip, on CI or anywhere else.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SERVICES_PY = Path(__file__).resolve().parents[2] / "deploy" / "local" / "services.py"


def _load_services() -> ModuleType:
    spec = importlib.util.spec_from_file_location("inferwatch_deploy_local", SERVICES_PY)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class LocalServices:
    """Where the real services listen, and the deploy/local module to stop and start them."""

    kafka_bootstrap: str
    es_url: str
    module: ModuleType
    cfg: Any

    def stop(self, service: str) -> None:
        self.module.down([service], self.cfg, log=_log)

    def start(self, service: str) -> None:
        self.module.up([service], self.cfg, log=_log)


def _log(message: str) -> None:
    print(f"[deploy/local] {message}", file=sys.stderr)


@pytest.fixture(scope="session")
def local_services() -> Iterator[LocalServices]:
    module = _load_services()
    cfg = module.Config.from_env()
    started = [s for s in ("kafka", "elasticsearch") if not module.is_healthy(s, cfg)]
    try:
        endpoints = module.up(None, cfg, log=_log)
    except Exception as exc:  # a service that will not start is a failure, never a skip
        pytest.fail(f"deploy/local could not start Kafka and Elasticsearch: {exc}", pytrace=False)
    yield LocalServices(cfg.kafka_bootstrap, endpoints["elasticsearch"], module, cfg)
    if started and os.environ.get("INFERWATCH_KEEP_SERVICES") != "1":
        module.down(started, cfg, log=_log)


def unique_name(prefix: str) -> str:
    """A name no other test (or earlier run) uses: Kafka topics and Elasticsearch prefixes."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
