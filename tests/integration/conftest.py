"""Real Kafka and Elasticsearch for integration tests, started once per session by deploy/local.

The first test that asks for them starts whatever is not already running (and stops it again at
the end of the session, unless INFERWATCH_KEEP_SERVICES=1). A service that will not start fails
the tests that need it: integration tests never skip, on CI or anywhere else.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

import pytest

from tests.local_services import load_services, log

T = TypeVar("T")


@dataclass
class LocalServices:
    """Where the real services listen, and the deploy/local module to stop and start them."""

    kafka_bootstrap: str
    es_url: str
    module: ModuleType
    cfg: Any

    def stop(self, service: str) -> None:
        self.module.down([service], self.cfg, log=log)

    def start(self, service: str) -> None:
        self.module.up([service], self.cfg, log=log)


@pytest.fixture(scope="session")
def local_services() -> Iterator[LocalServices]:
    module = load_services()
    cfg = module.Config.from_env()
    started = [s for s in ("kafka", "elasticsearch") if not module.is_healthy(s, cfg)]
    try:
        endpoints = module.up(None, cfg, log=log)
    except Exception as exc:  # a service that will not start is a failure, never a skip
        pytest.fail(f"deploy/local could not start Kafka and Elasticsearch: {exc}", pytrace=False)
    yield LocalServices(cfg.kafka_bootstrap, endpoints["elasticsearch"], module, cfg)
    if started and os.environ.get("INFERWATCH_KEEP_SERVICES") != "1":
        module.down(started, cfg, log=log)


def kafka_admin_call(call: Callable[[], T], within: float = 30.0) -> T:
    """``call()`` (a Kafka admin request), retried while it fails with a retriable error for up
    to ``within`` seconds: a broker just started has no coordinator for a group until its
    offsets topic has loaded (``CoordinatorNotAvailableError``)."""
    from kafka.errors import KafkaError

    deadline = time.monotonic() + within
    while True:
        try:
            return call()
        except KafkaError as exc:
            if not exc.retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def unique_name(prefix: str) -> str:
    """A name no other test (or earlier run) uses: Kafka topics and Elasticsearch prefixes."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- services of a test's own, for outages ------------------------------------------------------
#
# Other sessions' tests may be using the shared services at the same moment, and their session
# fixture would restart a stopped shared service mid-outage (seen: after 7 s). A test that needs
# an outage therefore starts a service of its own, on free ports and in a temporary data dir, and
# removes it again at the end.


@pytest.fixture
def private_kafka(
    local_services: LocalServices, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalServices]:
    """A Kafka broker of this test's own; ``es_url`` is still the shared Elasticsearch."""
    module, port = local_services.module, free_port_pair()
    cfg = module.Config.from_env(kafka_port=port, data_dir=tmp_path_factory.mktemp("private-kafka"),
                                 kafka_heap="512m")
    try:
        module.up(["kafka"], cfg, log=log)
        yield LocalServices(cfg.kafka_bootstrap, local_services.es_url, module, cfg)
    finally:
        module.down(["kafka"], cfg, clean=True, log=log)


@pytest.fixture
def private_elasticsearch(
    local_services: LocalServices, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalServices]:
    """An Elasticsearch node of this test's own; ``kafka_bootstrap`` is still the shared broker.

    ``es_url`` is the address the node reports it bound, which is what clients must use. A
    restart through :meth:`LocalServices.start` binds the same port again (it is configured, not
    picked), and keeps the data.
    """
    module = local_services.module
    cfg = module.Config.from_env(es_port=free_port(), data_dir=tmp_path_factory.mktemp("private-es"),
                                 es_heap="512m", cluster_name="inferwatch-private")
    try:
        endpoints = module.up(["elasticsearch"], cfg, log=log)
        yield LocalServices(local_services.kafka_bootstrap, endpoints["elasticsearch"], module, cfg)
    finally:
        module.down(["elasticsearch"], cfg, clean=True, log=log)


def free_port() -> int:
    """A port that is free on loopback right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_port_pair() -> int:
    """A port P such that P and P + 1 (the KRaft controller's) are both free on loopback."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")
