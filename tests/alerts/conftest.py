"""Fixtures of the receiver tests: a local HTTP receiver, and a real Alertmanager.

The Alertmanager is Debian's prometheus-alertmanager, started once per session by
deploy/local/services.py (and stopped at the end unless INFERWATCH_KEEP_SERVICES=1 or it was
already running). One that will not start fails the tests that need it: they never skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.alerts.helpers import LocalReceiver
from tests.local_services import load_services, log


@pytest.fixture(scope="session")
def alertmanager_url() -> Iterator[str]:
    """The base URL of a real Alertmanager (its config routes everything to a null receiver)."""
    module = load_services()
    cfg = module.Config.from_env()
    started = not module.is_healthy("alertmanager", cfg)
    try:
        endpoints = module.up(["alertmanager"], cfg, log=log)
    except Exception as exc:  # a service that will not start is a failure, never a skip
        pytest.fail(f"deploy/local could not start Alertmanager: {exc}", pytrace=False)
    yield str(endpoints["alertmanager"])
    if started and os.environ.get("INFERWATCH_KEEP_SERVICES") != "1":
        module.down(["alertmanager"], cfg, log=log)


@pytest.fixture(autouse=True)
def _no_proxy_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The senders honour HTTP(S)_PROXY like any client; the local receivers are on loopback."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


@pytest.fixture
def receiver() -> Iterator[LocalReceiver]:
    """A local HTTP receiver; set its ``checker``, ``default`` and ``replies`` in the test."""
    with LocalReceiver() as server:
        yield server
