import logging

import pytest

from inferwatch.collectors.logs import quieten_clients


@pytest.fixture
def info_level():
    root, cluster = logging.getLogger(), logging.getLogger("kafka.cluster")
    level, filters = root.level, list(cluster.filters)
    root.setLevel(logging.INFO)
    yield cluster
    root.setLevel(level)
    cluster.filters[:] = filters


def _record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, ("walk.events",), None)


def test_kafkas_missing_topic_errors_are_dropped_and_its_other_errors_kept(info_level) -> None:
    # kafka-python logs one ERROR per metadata refresh while a producer waits for a topic
    # (19 in two seconds in a walk-through); inferwatch says it once and creates the topic.
    quieten_clients()
    quieten_clients()  # idempotent: one filter
    assert len([f for f in info_level.filters if type(f).__name__ == "_MissingTopicNoise"]) == 1
    missing = _record("kafka.cluster", logging.ERROR, "Topic %s not found in cluster metadata")
    assert not info_level.filter(missing)
    assert info_level.filter(_record("kafka.cluster", logging.ERROR, "Bootstrap failed for %s"))
    assert logging.getLogger("kafka").getEffectiveLevel() == logging.ERROR


def test_at_debug_level_nothing_is_quietened() -> None:
    root, cluster = logging.getLogger(), logging.getLogger("kafka.cluster")
    level, filters = root.level, list(cluster.filters)
    cluster.filters.clear()
    root.setLevel(logging.DEBUG)
    try:
        quieten_clients()
        assert cluster.filters == []
    finally:
        root.setLevel(level)
        cluster.filters[:] = filters


def test_a_client_librarys_repeated_errors_pass_once_a_minute_and_say_how_many_were_held(info_level) -> None:
    # kafka-python logged 410 ERRORs in a 50 s outage (walk-through), burying inferwatch's own line.
    handler = logging.StreamHandler()
    logging.root.addHandler(handler)
    try:
        quieten_clients()
        quieten_clients()
        limits = [f for f in handler.filters if type(f).__name__ == "_RepeatLimit"]
        assert len(limits) == 1
        limit = limits[0]

        def at(t: float, name: str = "kafka.conn", message: str = "%s: Connect attempt returned error") \
                -> logging.LogRecord:
            record = _record(name, logging.ERROR, message)
            record.created = t
            return record

        shown = [limit.filter(at(1000.0 + i / 10)) for i in range(500)]  # 50 s of attempts
        assert shown.count(True) == 1
        assert limit.filter(at(1000.0, message="%s: another kind of error"))  # its own minute
        assert limit.filter(at(1000.0, name="inferwatch.service"))  # inferwatch's own: never held
        later = at(1061.0)
        assert limit.filter(later)
        assert "[499 more like this in the last 60 s not shown]" in later.getMessage()
    finally:
        logging.root.removeHandler(handler)
