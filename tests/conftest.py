"""Every test that uses a real service (Kafka, Elasticsearch, Alertmanager, started by
deploy/local) is an ``integration`` test, whether or not its module says so: ``make test`` runs
the other tests on every core first (``-m "not integration" -n auto``), then these one at a time,
since each service is started once per session and some tests take one down."""

from __future__ import annotations

import pytest

SERVICE_FIXTURES = frozenset({"local_services", "private_kafka", "private_elasticsearch", "alertmanager_url"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
