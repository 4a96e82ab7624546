"""The Kafka bus against a real broker (deploy/local): keying, groups, commits, dead letters, outages."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.structs import TopicPartition
from pydantic import SecretStr

from inferwatch.collectors.bus import BusRecord, BusUnavailable, DuplicateInstance
from inferwatch.collectors.event import SCHEMA
from inferwatch.collectors.kafka_bus import (
    SCHEMA_HEADER,
    KafkaBus,
    KafkaEventConsumer,
    KafkaTuning,
    kafka_config,
)
from inferwatch.collectors.settings import BusSettings, SettingsError
from tests.integration.conftest import LocalServices, unique_name

pytestmark = pytest.mark.integration


@pytest.fixture
def bus(local_services: LocalServices) -> Iterator[KafkaBus]:
    """A bus on fresh topics (4 partitions), deleted again after the test."""
    topic = unique_name("iw-test")
    settings = BusSettings(kind="kafka", bootstrap_servers=[local_services.kafka_bootstrap],
                           topic=topic, dead_letter_topic=f"{topic}.dlq", linger_ms=5)
    kafka_bus = KafkaBus(settings)
    assert kafka_bus.ensure_topics() == {topic: 4, f"{topic}.dlq": 4, f"{topic}.drift": 4}
    yield kafka_bus
    kafka_bus.delete_topics()


def consume(consumer: KafkaEventConsumer, want: int, *, within: float = 60.0) -> list[BusRecord]:
    """Poll until ``want`` records arrived (or ``within`` seconds passed)."""
    got: list[BusRecord] = []
    deadline = time.monotonic() + within
    while len(got) < want and time.monotonic() < deadline:
        got.extend(consumer.poll(500, 0.5))
    return got


def test_round_trip_keys_order_headers_and_commits(bus: KafkaBus) -> None:
    config = kafka_config(bus.settings, "consumer")
    raw = KafkaConsumer(**config)
    assert raw.partitions_for_topic(bus.topic) == {0, 1, 2, 3}
    producer = bus.producer()
    keys = [f"principal-{k}" for k in range(8)]
    producer.send_many([(f"{key}:{i}".encode(), key) for i in range(25) for key in keys])
    producer.send(b"no-key", key=None)
    producer.flush(30)
    assert producer.stats().delivered == 201
    producer.close()
    assert sum(bus.end_offsets().values()) == 201

    # every record carries the schema header
    raw.assign([TopicPartition(bus.topic, p) for p in range(4)])
    raw.seek_to_beginning()
    seen = [r for batch in _poll_all(raw, 201) for r in batch]
    raw.close()
    assert len(seen) == 201
    assert all((SCHEMA_HEADER, SCHEMA.encode()) in r.headers for r in seen)

    first = bus.consumer("readers")
    records = consume(first, 201)
    assert len(records) == 201
    by_key: dict[str | None, list[BusRecord]] = defaultdict(list)
    for r in records:
        by_key[r.key].append(r)
    assert by_key[None][0].value == b"no-key"
    for key in keys:  # one partition per key, and the order the producer sent
        assert len({r.partition for r in by_key[key]}) == 1
        assert [r.value for r in sorted(by_key[key], key=lambda r: r.offset)] == [
            f"{key}:{i}".encode() for i in range(25)
        ]
    assert len({r.partition for r in records}) > 1  # eight keys spread over the partitions

    # commit half of each partition, leave without committing the rest
    halves: dict[int, int] = {}
    for p in {r.partition for r in records}:
        offsets = sorted(r.offset for r in records if r.partition == p)
        halves[p] = offsets[len(offsets) // 2]
    first.commit(halves)
    assert first.committed_offsets() == halves
    first.close()

    second = bus.consumer("readers")
    again = consume(second, 201 - sum(halves.values()), within=30)
    assert sorted((r.partition, r.offset) for r in again) == sorted(
        (r.partition, r.offset) for r in records if r.offset >= halves[r.partition]
    )
    assert second.poll(500, 1.0) == []
    second.commit({p: max(r.offset for r in again if r.partition == p) + 1 for p in halves})
    assert second.lag() == 0
    second.close()


def test_two_consumers_in_one_group_share_the_partitions(bus: KafkaBus) -> None:
    one, two = bus.consumer("pair"), bus.consumer("pair")
    got: dict[str, list[BusRecord]] = {"one": [], "two": []}
    deadline = time.monotonic() + 60
    # join both before producing, so no record is read before the group settles: settled means
    # both hold partitions, none twice (one may still hold all four until it sees the rebalance)
    def settled() -> bool:
        mine, theirs = one.assignment(), two.assignment()
        return bool(mine) and bool(theirs) and mine.isdisjoint(theirs) and len(mine | theirs) == 4

    while time.monotonic() < deadline and not settled():
        got["one"].extend(one.poll(100, 0.2))
        got["two"].extend(two.poll(100, 0.2))
    assert one.assignment()
    assert two.assignment()
    assert one.assignment().isdisjoint(two.assignment())
    assert one.assignment() | two.assignment() == {0, 1, 2, 3}
    # Each knows the topic's partitions (the service then knows it reads only some of them).
    assert one.partitions() == two.partitions() == {0, 1, 2, 3}

    producer = bus.producer()
    producer.send_many([(f"v{i}".encode(), f"principal-{i % 40}") for i in range(400)])
    producer.flush(30)
    producer.close()
    while time.monotonic() < deadline and len(got["one"]) + len(got["two"]) < 400:
        got["one"].extend(one.poll(100, 0.2))
        got["two"].extend(two.poll(100, 0.2))
    values = [r.value for rs in got.values() for r in rs]
    assert sorted(values) == sorted(f"v{i}".encode() for i in range(400))  # each exactly once
    assert {r.partition for r in got["one"]} <= one.assignment()
    assert {r.partition for r in got["two"]} <= two.assignment()
    assert got["one"]
    assert got["two"]
    # Their brokers answer their fetches: an idle member then sees quiet traffic, not an outage.
    assert one.receiving()
    assert two.receiving()
    one.close()
    two.close()


def _settle(members: list[KafkaEventConsumer], within: float = 60.0) -> list[BusRecord]:
    """Poll every member until each holds partitions, none twice, all four held."""
    got: list[BusRecord] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        held = [m.assignment() for m in members]
        if all(held) and sum(map(len, held)) == 4 and set().union(*held) == {0, 1, 2, 3}:
            break
        for member in members:
            got.extend(member.poll(100, 0.2))
    return got


def test_a_static_member_back_within_its_session_gets_its_own_partitions_without_a_rebalance(
        bus: KafkaBus) -> None:
    """detect.instance_id: the group keeps a stopped member's partitions for it until its session
    times out, and gives them back to it (so a restarted detector finds its checkpoint's key);
    a second process with the same name fences the first, which then stops with a clear error."""
    def member(name: str) -> KafkaEventConsumer:
        return bus.consumer("static", instance_id=name, session_timeout_s=60)

    first, second = member("det-0"), member("det-1")
    _settle([first, second])
    # the range assignor orders static members by name, so each name has its partitions
    assert (first.assignment(), second.assignment()) == ({0, 1}, {2, 3})
    first.close()  # a static member does not leave the group: nobody takes its partitions
    quiet_until = time.monotonic() + 8  # more than two heartbeats: a rebalance would show here
    while time.monotonic() < quiet_until:
        second.poll(100, 0.5)
        assert second.assignment() == {2, 3}
    again = member("det-0")
    _settle([again, second])
    assert (again.assignment(), second.assignment()) == ({0, 1}, {2, 3})

    producer = bus.producer()
    producer.send_many([(f"v{i}".encode(), f"principal-{i % 40}") for i in range(200)])
    producer.flush(30)
    producer.close()
    got = consume_all([again, second], 200)
    assert sorted(r.value for r in got) == sorted(f"v{i}".encode() for i in range(200))

    impostor = member("det-1")  # a second process given the same name takes det-1's place ...
    _settle([again, impostor])
    assert impostor.assignment() == {2, 3}
    with pytest.raises(DuplicateInstance, match=r"same instance_id 'det-1'.*INFERWATCH_DETECT__INSTANCE_ID"):
        _poll(second, within=30)  # ... and the first one learns it polling, idle (it may never commit)
    with pytest.raises(DuplicateInstance):
        second.commit({2: 0})  # and at a commit
    for consumer in (again, second, impostor):
        consumer.close()


def test_a_session_timeout_the_broker_refuses_names_the_setting(bus: KafkaBus) -> None:
    member = bus.consumer("refused", session_timeout_s=4)  # under the broker's 6 s minimum
    try:
        with pytest.raises(SettingsError, match=r"\(4 s\).*INFERWATCH_DETECT__SESSION_TIMEOUT_S"):
            member.poll(100, 5.0)
    finally:
        member.close()


def _poll(consumer: KafkaEventConsumer, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        consumer.poll(100, 0.5)


def consume_all(members: list[KafkaEventConsumer], want: int, within: float = 60.0) -> list[BusRecord]:
    got: list[BusRecord] = []
    deadline = time.monotonic() + within
    while len(got) < want and time.monotonic() < deadline:
        for member in members:
            got.extend(member.poll(500, 0.2))
    return got


def test_dead_letters_keep_reason_and_source(bus: KafkaBus) -> None:
    sink = bus.dead_letters()
    assert sink.list() == []
    sink.dead_letter(BusRecord(bus.topic, 2, 17, "principal-1", b"{not json"), "invalid JSON at char 1")
    sink.dead_letter(BusRecord(bus.topic, 0, 3, None, b"x" * (600 * 1024)), "too large")
    rows = sink.list(10)
    sink.close()
    assert rows[1] == (17, f"{bus.topic}/2", "invalid JSON at char 1", b"{not json")
    offset, source, reason, value = rows[0]
    assert (offset, source, len(value)) == (3, f"{bus.topic}/0", 512 * 1024)  # partition 0, offset 3
    assert reason.startswith("too large (value truncated from 614400 bytes)")
    assert len(bus.dead_letters().list(1)) == 1


def test_dead_letters_on_the_command_line_name_topic_partition_and_offset(
        bus: KafkaBus, local_services: LocalServices, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from inferwatch.cli import main

    sink = bus.dead_letters()
    sink.dead_letter(BusRecord(bus.topic, 2, 17, "principal-1", b"{not json"), "invalid JSON at char 1")
    sink.close()
    for name, value in (("KIND", "kafka"), ("BOOTSTRAP_SERVERS", local_services.kafka_bootstrap),
                        ("TOPIC", bus.topic), ("DEAD_LETTER_TOPIC", f"{bus.topic}.dlq")):
        monkeypatch.setenv(f"INFERWATCH_BUS__{name}", value)
    assert main(["events", "dead-letters"]) == 0
    assert f"{bus.topic}/2@17: invalid JSON at char 1" in capsys.readouterr().out
    assert main(["events", "dead-letters", "--json"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (row["topic"], row["partition"], row["offset"]) == (bus.topic, 2, 17)  # the topic as on SQLite


@pytest.mark.slow
def test_no_event_lost_across_a_30s_broker_outage(private_kafka: LocalServices) -> None:
    """Records sent while the broker is down wait in the producer and arrive after it returns.

    Meanwhile a consumer's poll still returns after its timeout, and a commit raises
    BusUnavailable (so the detector service knows it has not been recorded).
    """
    topic = unique_name("iw-outage")
    bus = KafkaBus(BusSettings(kind="kafka", bootstrap_servers=[private_kafka.kafka_bootstrap],
                               topic=topic, dead_letter_topic=f"{topic}.dlq", linger_ms=5))
    bus.ensure_topics()
    n, pace = 2000, 0.02  # ~40 s of steady sending, spanning before, during and after the outage
    producer = bus.producer()
    producer.send(b"warm-up", key="w")  # metadata for the topic is now cached
    producer.flush(30)
    watcher = bus.consumer(unique_name("watch"))
    consume(watcher, 1)
    errors: list[BaseException] = []
    slowest = [0.0]

    def produce() -> None:
        for i in range(n):
            started = time.monotonic()
            try:
                producer.send(f"outage-{i}".encode(), key=f"principal-{i % 50}")
            except BusUnavailable as exc:
                errors.append(exc)
            slowest[0] = max(slowest[0], time.monotonic() - started)
            time.sleep(pace)

    sender = threading.Thread(target=produce, daemon=True)
    observed: dict[str, Any] = {}
    stopped = False
    try:
        sender.start()
        time.sleep(3)
        private_kafka.stop("kafka")
        stopped, down_at = True, time.monotonic()
        observed["stats_at_stop"] = producer.stats()
        started = time.monotonic()
        assert watcher.poll(500, 1.0) == []
        observed["poll_1s_while_down_s"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        with pytest.raises(BusUnavailable, match="did not take the commit"):
            watcher.commit(dict.fromkeys(watcher.assignment(), 1))
        observed["commit_while_down_s"] = round(time.monotonic() - started, 1)
        time.sleep(max(0.0, down_at + 30 - time.monotonic()))
        assert not private_kafka.module.is_healthy("kafka", private_kafka.cfg), "broker came back early"
        observed["stats_before_restart"] = producer.stats()
        private_kafka.start("kafka")
        stopped, up_at = False, time.monotonic()
        observed["down_s"] = round(up_at - down_at, 1)
        backlog = observed["stats_before_restart"].sent
        while producer.stats().delivered < backlog and time.monotonic() < up_at + 120:
            time.sleep(0.05)
        observed["backlog_delivered_after_s"] = round(time.monotonic() - up_at, 1)
        sender.join(120)
        assert not sender.is_alive()
        producer.flush(120)
        producer.close()
    finally:
        if stopped:
            private_kafka.start("kafka")
        watcher.close()
    stats = producer.stats()
    observed.update(stats_after=stats, slowest_send_s=round(slowest[0], 3), send_errors=len(errors))
    assert errors == []  # buffered, not refused: the outage was shorter than delivery_timeout_ms
    assert (stats.failed, stats.pending) == (0, 0)

    reader = bus.consumer(unique_name("after-outage"))
    records = consume(reader, n + 1, within=90)
    reader.close()
    values = {r.value for r in records}
    observed["duplicates"] = len(records) - len(values)
    print(f"\noutage test observed: {observed}")
    assert {f"outage-{i}".encode() for i in range(n)} <= values


def test_settings_map_to_kafka_python_without_showing_the_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a real certificate")
    settings = BusSettings(
        kind="kafka", bootstrap_servers="kafka-1:9093,kafka-2:9093", security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512", sasl_username="inferwatch", sasl_password=SecretStr("s3cr3t-pw"),
        ssl_cafile=ca, compression="none", linger_ms=50, client_id="iw-agent",
    )
    producer = kafka_config(settings, "producer")
    assert producer["bootstrap_servers"] == ["kafka-1:9093", "kafka-2:9093"]
    assert producer["security_protocol"] == "SASL_SSL"
    assert producer["sasl_mechanism"] == "SCRAM-SHA-512"
    assert producer["sasl_plain_username"] == "inferwatch"
    assert producer["sasl_plain_password"] == "s3cr3t-pw"
    assert producer["ssl_cafile"] == str(ca)
    assert "ssl_certfile" not in producer
    assert producer["compression_type"] is None
    assert (producer["acks"], producer["enable_idempotence"], producer["linger_ms"]) == ("all", True, 50)
    assert producer["client_id"] == "iw-agent"
    consumer = kafka_config(settings, "consumer")
    assert (consumer["enable_auto_commit"], consumer["auto_offset_reset"]) == (False, "earliest")
    assert "acks" not in consumer
    assert "acks" not in kafka_config(settings, "admin")
    for config in (producer, consumer):
        assert "s3cr3t-pw" not in repr(config)
        assert "s3cr3t-pw" not in f"{config}"
    # kafka-python's admin client logs its configuration at debug level
    caplog.set_level(logging.DEBUG, logger="kafka")  # the CLI quietens this logger in-process
    with pytest.raises(Exception):  # noqa: B017, PT011 -- only the log matters here
        KafkaAdminClient(**{**kafka_config(settings, "admin"), "bootstrap_timeout_ms": 500})
    assert "SCRAM-SHA-512" in caplog.text
    assert "s3cr3t-pw" not in caplog.text
    assert kafka_config(BusSettings(compression="zstd"), "producer")["compression_type"] == "zstd"


def test_unreachable_broker_raises_bus_unavailable_promptly() -> None:
    settings = BusSettings(kind="kafka", bootstrap_servers=["127.0.0.1:1"], topic=unique_name("nowhere"))
    bus = KafkaBus(settings, tuning=KafkaTuning(bootstrap_timeout_ms=1000, max_block_ms=500))
    for attempt in (bus.ensure_topics, lambda: bus.consumer("g"), lambda: bus.producer().send(b"x")):
        started = time.monotonic()
        with pytest.raises(BusUnavailable, match=r"Kafka at 127\.0\.0\.1:1 .*BOOTSTRAP_SERVERS"):
            attempt()
        assert time.monotonic() - started < 10


def test_a_sender_that_finds_no_topic_creates_the_topics_with_the_configured_partitions(
    local_services: LocalServices,
) -> None:
    # An agent started before the detector service: its first send makes the topics (never the
    # broker's default partition count) and the record is delivered, not dropped.
    settings = BusSettings(kind="kafka", bootstrap_servers=[local_services.kafka_bootstrap],
                           topic=unique_name("missing"), partitions=3)
    bus = KafkaBus(settings, tuning=KafkaTuning(max_block_ms=1000))
    producer = bus.producer()
    try:
        producer.send(b"first", key="p")
        producer.flush(timeout=30)
        assert producer.stats().delivered == 1
        assert bus.ensure_topics() == {settings.topic: 3, settings.dead_letter_topic: 3,
                                       settings.summaries_topic: 3}
    finally:
        producer.close()
        bus.delete_topics()


def test_a_sender_told_not_to_create_topics_leaves_them_to_the_service(local_services: LocalServices) -> None:
    settings = BusSettings(kind="kafka", bootstrap_servers=[local_services.kafka_bootstrap],
                           topic=unique_name("missing"), create_topics=False)
    bus = KafkaBus(settings, tuning=KafkaTuning(max_block_ms=1000))
    producer = bus.producer()
    with pytest.raises(BusUnavailable, match=f"no metadata for topic {settings.topic}"):
        producer.send(b"x", key="p")
    producer.close()
    admin = KafkaAdminClient(bootstrap_servers=[local_services.kafka_bootstrap])
    try:
        assert settings.topic not in admin.list_topics()
    finally:
        admin.close()


def test_a_sender_not_allowed_to_create_the_topic_names_the_refusal(
    local_services: LocalServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    tries = []

    def refused(self: KafkaBus) -> dict[str, int]:
        tries.append(self.topic)
        raise BusUnavailable("Kafka refused to create topic: TopicAuthorizationFailedError")

    monkeypatch.setattr(KafkaBus, "ensure_topics", refused)
    settings = BusSettings(kind="kafka", bootstrap_servers=[local_services.kafka_bootstrap],
                           topic=unique_name("missing"))
    producer = KafkaBus(settings, tuning=KafkaTuning(max_block_ms=1000)).producer()
    with pytest.raises(BusUnavailable, match=f"no metadata for topic {settings.topic}.*creating it failed: "
                                             "Kafka refused .*TopicAuthorizationFailedError.*`inferwatch "
                                             "detect` creates the topics"):
        producer.send(b"x", key="p")
    with pytest.raises(BusUnavailable, match="creating it failed"):
        producer.send(b"y", key="p")
    assert tries == [settings.topic]  # tried at most once a minute
    producer.close()


def _poll_all(consumer: Any, want: int) -> Iterator[list[Any]]:
    got, deadline = 0, time.monotonic() + 30
    while got < want and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            got += len(batch)
            yield batch
