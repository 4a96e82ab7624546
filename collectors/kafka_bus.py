"""The distributed bus: Kafka through kafka-python, behind the same seam as the SQLite log.

Events go to ``settings.topic`` keyed by principal, so one caller's events stay in one
partition, in order, and per-principal detector state stays with one member of the consumer
group. Producers are idempotent (``acks=all``) and ride out broker outages shorter than
``delivery_timeout_ms`` by buffering; consumers commit only what the caller says it has stored
(at-least-once). See ``docs/kafka.md``.

>>> bus = KafkaBus(BusSettings(kind="kafka", bootstrap_servers=["127.0.0.1:19092"]))
>>> bus.ensure_topics()  # doctest: +SKIP
{'inferwatch.events': 4, 'inferwatch.events.dlq': 4, 'inferwatch.events.drift': 4}
>>> bus.producer().send(b'{"id": "e1"}', key="principal-1")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import kafka.errors as kerr
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.coordinator.base import MemberState
from kafka.structs import OffsetAndMetadata, TopicPartition

from inferwatch.collectors.bus import BusRecord, BusUnavailable, DuplicateInstance
from inferwatch.collectors.event import SCHEMA
from inferwatch.collectors.kafka_config import (
    KafkaTuning,
    describe_error,
    forbid_topic_auto_creation,
    guard,
    kafka_config,
    unavailable,
)
from inferwatch.collectors.settings import BusSettings, SettingsError

log = logging.getLogger(__name__)

SCHEMA_HEADER = "inferwatch-schema"
REASON_HEADER = "inferwatch-reason"
SOURCE_HEADER = "inferwatch-source"
# A commit failing for these reasons means the partition moved to another group member; that
# member re-reads from the last commit, and incident fingerprints absorb the repeats.
_REBALANCED = (kerr.CommitFailedError, kerr.RebalanceInProgressError,
               kerr.IllegalGenerationError, kerr.UnknownMemberIdError)
_TOPIC_RETRY_S = 60.0  # a sender that found no topic tries to create the topics at most this often
_DLQ_VALUE_LIMIT = 512 * 1024  # an oversized bad record is kept truncated rather than lost


@dataclass(frozen=True, slots=True)
class ProducerStats:
    """Producer counters since start; ``pending`` records are buffered, not yet acknowledged."""

    sent: int
    delivered: int
    failed: int
    rejected: int
    pending: int
    pending_bytes: int
    last_error: str | None


class KafkaBus:
    """A bus on a Kafka cluster; hands out producers, consumers and a dead-letter sink."""

    def __init__(self, settings: BusSettings, *, tuning: KafkaTuning | None = None) -> None:
        self.settings = settings
        self.topic = settings.topic
        self.tuning = tuning or KafkaTuning()

    def producer(self, topic: str | None = None) -> KafkaEventProducer:
        """An idempotent producer to ``topic`` (default: the events topic); connects on first send."""
        return KafkaEventProducer(self.settings, topic or self.topic, self.tuning)

    def consumer(self, group: str, topic: str | None = None, *, instance_id: str | None = None,
                 session_timeout_s: float | None = None) -> KafkaEventConsumer:
        """A member of consumer ``group`` subscribed to ``topic``, static when ``instance_id`` is
        given (Kafka's ``group.instance.id``); BusUnavailable if unreachable."""
        return KafkaEventConsumer(self.settings, group, topic or self.topic, self.tuning,
                                  instance_id=instance_id, session_timeout_s=session_timeout_s)

    def dead_letters(self) -> KafkaDeadLetters:
        """The dead-letter topic, for malformed records."""
        return KafkaDeadLetters(self.settings, self.tuning)

    def ensure_topics(self) -> dict[str, int]:
        """Create the events, dead-letter and drift-summaries topics if missing; return partition counts.

        Idempotent. An existing topic keeps its partitions (a warning says if they differ).
        """
        topics = [self.settings.topic, self.settings.dead_letter_topic, self.settings.summaries_topic]
        spec = {"num_partitions": self.settings.partitions,
                "replication_factor": self.settings.replication_factor}
        with self._admin("could not create topics") as admin:
            result = admin.create_topics(dict.fromkeys(topics, spec), raise_errors=False)
            for entry in result["topics"]:
                error = kerr.for_code(entry["error_code"])
                if error not in (kerr.NoError, kerr.TopicAlreadyExistsError):
                    raise BusUnavailable(f"Kafka refused to create topic {entry['name']}: "
                                         f"{error.__name__}: {entry.get('error_message') or ''}")
            admin.wait_for_topics(topics, timeout_ms=self.tuning.request_timeout_ms)
            counts = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(topics)}
        for name in (n for n, count in counts.items() if count != self.settings.partitions):
            log.warning("event=kafka_topic_partitions topic=%s has=%d configured=%d",
                        name, counts[name], self.settings.partitions)
        return counts

    def delete_topics(self) -> None:
        """Delete the events, dead-letter and drift-summaries topics (tests, teardown); missing are fine."""
        with self._admin("could not delete topics") as admin:
            admin.delete_topics([self.settings.topic, self.settings.dead_letter_topic,
                                 self.settings.summaries_topic], raise_errors=False)

    def end_offsets(self, topic: str | None = None) -> dict[int, int]:
        """Per partition, the offset the next appended record will get."""
        reader = _reader(self.settings, self.tuning)
        try:
            with guard(self.settings.bootstrap_servers, "gave no end offsets"):
                return _end_offsets(reader, topic or self.topic, self.tuning)
        finally:
            reader.close(autocommit=False)

    @contextmanager
    def _admin(self, doing: str) -> Iterator[Any]:
        with guard(self.settings.bootstrap_servers, doing):
            admin = KafkaAdminClient(**kafka_config(self.settings, "admin", self.tuning))
            try:
                yield admin
            finally:
                admin.close()


def _reader(settings: BusSettings, tuning: KafkaTuning) -> Any:
    """A consumer outside any group, for reading positions or the tail of a topic."""
    with guard(settings.bootstrap_servers, "could not be reached"):
        return KafkaConsumer(**kafka_config(settings, "consumer", tuning))


def _end_offsets(consumer: Any, topic: str, tuning: KafkaTuning) -> dict[int, int]:
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    ends = consumer.end_offsets(parts, timeout_ms=tuning.request_timeout_ms) if parts else {}
    return {tp.partition: int(offset) for tp, offset in ends.items()}


class KafkaEventProducer:
    """Sends records to one topic, with the schema header and the principal as key.

    :meth:`send` only buffers: while the brokers are down, records wait in the buffer and are
    retried until ``delivery_timeout_ms``; :meth:`flush` waits for their acknowledgement.
    """

    def __init__(self, settings: BusSettings, topic: str, tuning: KafkaTuning) -> None:
        self._settings = settings
        self._servers = settings.bootstrap_servers
        self._topic = topic
        self._tuning = tuning
        self._config = kafka_config(settings, "producer", tuning)
        self._lock = threading.Lock()
        self._client: Any = None
        self._counts = dict.fromkeys(("sent", "delivered", "failed", "rejected", "unreported"), 0)
        self._pending = self._pending_bytes = 0
        self._last_error: str | None = None
        self._topics_tried_at: float | None = None
        self._topics_refused: str | None = None

    def send(self, value: bytes, key: str | None = None) -> None:
        """Buffer one record; BusUnavailable when it cannot even be buffered."""
        self.send_many([(value, key)])

    def send_many(self, records: Sequence[tuple[bytes, str | None]]) -> None:
        """Buffer several ``(value, key)`` records; none of them when the buffer is full."""
        size = sum(len(value) for value, _ in records)
        with self._lock:
            if self._pending and self._pending_bytes + size > self._tuning.max_buffer_bytes:
                self._counts["rejected"] += len(records)
                raise BusUnavailable(f"Kafka producer buffer full: {self._pending_bytes} bytes not yet "
                                     f"acknowledged by {','.join(self._servers)} (brokers down or slow)")
        headers = [(SCHEMA_HEADER, SCHEMA.encode())]
        for value, key in records:
            self._append(value, key, headers)

    def send_to_every_partition(self, value: bytes) -> int:
        """Buffer one copy of ``value`` for each partition of the topic; return how many.

        For markers every consumer of the topic must read (the drift summaries' window markers).
        """
        client = self._connected()
        with guard(self._servers, f"gave no partitions for {self._topic}"):
            partitions = sorted(client.partitions_for(self._topic))
        headers = [(SCHEMA_HEADER, SCHEMA.encode())]
        for partition in partitions:
            self._append(value, None, headers, partition)
        return len(partitions)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until buffered records are acknowledged; BusUnavailable if any failed or timed out."""
        if self._client is None:
            return
        try:
            self._client.flush(timeout=timeout)
        except kerr.KafkaError as exc:
            raise BusUnavailable(
                f"Kafka at {','.join(self._servers)} has not acknowledged {self._pending} records "
                f"within {timeout}s; they stay buffered and are retried until delivery_timeout_ms"
            ) from exc
        with self._lock:
            failed, self._counts["unreported"] = self._counts["unreported"], 0
        if failed:
            raise BusUnavailable(f"{failed} records were not delivered to Kafka at "
                                 f"{','.join(self._servers)}: {self._last_error}")

    def stats(self) -> ProducerStats:
        """A snapshot of the counters."""
        with self._lock:
            c = self._counts
            return ProducerStats(c["sent"], c["delivered"], c["failed"], c["rejected"],
                                 self._pending, self._pending_bytes, self._last_error)

    def close(self, timeout: float = 30.0) -> None:
        """Flush for up to ``timeout`` seconds, then close; records still unacknowledged are lost."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.close(timeout=timeout)
        except kerr.KafkaError:  # kafka-python 3 then leaves its sender thread retrying: stop it
            log.warning("event=kafka_producer_closed_with_pending topic=%s records=%d",
                        self._topic, self._pending)
            client._sender.force_close()  # the pending records fail, and are counted as failed

    def _connected(self) -> Any:
        # Built on first use, so an agent starts even while Kafka is down; a failed attempt
        # raises BusUnavailable and the next send tries again.
        with self._lock:
            if self._client is None:
                try:
                    self._client = KafkaProducer(**self._config)
                except kerr.KafkaError as exc:
                    raise unavailable(self._servers, "could not be reached", exc) from exc
                except RuntimeError as exc:  # how kafka-python says a compression codec is missing
                    raise SettingsError(f"INFERWATCH_BUS__COMPRESSION: {exc}; install the codec's "
                                        "package or use gzip") from exc
                forbid_topic_auto_creation(self._client._metadata)
            return self._client

    def _append(self, value: bytes, key: str | None, headers: list[tuple[str, bytes]],
                partition: int | None = None) -> Any:
        """Hand one record to kafka-python; returns its delivery future."""
        client = self._connected()
        with self._lock:  # pending before send(): the delivery callback may run before it returns
            self._pending += 1
            self._pending_bytes += len(value)
        encoded_key = None if key is None else key.encode("utf-8", "replace")
        try:
            try:
                future = self._send_once(client, value, encoded_key, headers, partition)
            except (kerr.KafkaTimeoutError, kerr.UnknownTopicOrPartitionError):
                if not self._created_topics():
                    raise
                future = self._send_once(client, value, encoded_key, headers, partition)
        except kerr.KafkaError as exc:
            self._release(len(value))
            if isinstance(exc, kerr.KafkaTimeoutError | kerr.UnknownTopicOrPartitionError):
                refused = f"; creating it failed: {self._topics_refused}" if self._topics_refused else ""
                raise BusUnavailable(
                    f"no metadata for topic {self._topic} from Kafka at {','.join(self._servers)} "
                    f"within {self._tuning.max_block_ms} ms: the brokers are unreachable or the topic "
                    f"does not exist{refused} (`inferwatch detect` creates the topics when it starts, "
                    "as does the first sender allowed to; or create them yourself)"
                ) from exc
            raise unavailable(self._servers, "refused the record", exc) from exc
        with self._lock:
            self._counts["sent"] += 1
        future.add_both(functools.partial(self._settle, len(value)))
        return future

    def _send_once(self, client: Any, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]],
                   partition: int | None) -> Any:
        future = client.send(self._topic, value=value, headers=headers, partition=partition, key=key)
        if future.failed():  # kafka-python returns, not raises, some errors (unknown topic)
            raise future.exception
        return future

    def _created_topics(self) -> bool:
        """After a send found no topic: create the topics as ``ensure_topics`` does (the configured
        partitions, never the broker's default), at most once a minute; whether they now exist.

        So an agent started before the detector service loses nothing to the order. An identity
        without the right to create topics gets the refusal named in the error, and the topics must
        then be made by the detector service or by hand, as before.
        """
        now = time.monotonic()
        if not self._settings.create_topics or (
                self._topics_tried_at is not None and now - self._topics_tried_at < _TOPIC_RETRY_S):
            return False
        self._topics_tried_at = now
        try:
            KafkaBus(self._settings, tuning=self._tuning).ensure_topics()
        except BusUnavailable as exc:
            self._topics_refused = str(exc)
            log.warning("event=kafka_topic_create_failed topic=%s error=%s", self._topic, exc)
            return False
        self._topics_refused = None
        # Loud on purpose: a misspelt topic is created too, and then nobody reads it.
        log.warning("event=kafka_topics_created topic=%s partitions=%d replication_factor=%d: a send found "
                    "no topic, so this producer created the topics; the detector service must read the "
                    "same topic (INFERWATCH_BUS__TOPIC), and bus.create_topics=false turns this off",
                    self._topic, self._settings.partitions, self._settings.replication_factor)
        return True

    def _release(self, size: int) -> None:
        with self._lock:
            self._pending -= 1
            self._pending_bytes -= size

    def _settle(self, size: int, outcome: Any) -> None:
        """Delivery callback (kafka-python's I/O thread): success, or an error after all retries."""
        self._release(size)
        failed = isinstance(outcome, BaseException)
        with self._lock:
            first = failed and self._counts["unreported"] == 0
            self._counts["failed" if failed else "delivered"] += 1
            if failed:
                self._counts["unreported"] += 1
                self._last_error = describe_error(outcome)
        if first:  # one line per run of failures, not one per record
            log.warning("event=kafka_delivery_failed topic=%s error=%s", self._topic, self._last_error)


class KafkaEventConsumer:
    """A consumer-group member reading one topic; commits only what the caller stored."""

    def __init__(self, settings: BusSettings, group: str, topic: str, tuning: KafkaTuning, *,
                 instance_id: str | None = None, session_timeout_s: float | None = None) -> None:
        self._servers = settings.bootstrap_servers
        self._topic = topic
        self._tuning = tuning
        self._group, self._instance_id, self._session_timeout_s = group, instance_id, session_timeout_s
        self._stuck_since: float | None = None
        membership: dict[str, Any] = {}
        if instance_id is not None:
            membership["group_instance_id"] = instance_id
        if session_timeout_s is not None:
            membership["session_timeout_ms"] = int(session_timeout_s * 1000)
        with guard(self._servers, "could not be reached"):
            self._consumer = KafkaConsumer(group_id=group, **kafka_config(settings, "consumer", tuning),
                                           **membership)
        forbid_topic_auto_creation(self._consumer._cluster)  # before subscribing asks for metadata
        self._await_partition_metadata()
        self._consumer.subscribe([topic])

    def _await_partition_metadata(self, timeout_s: float = 10.0) -> None:
        # A topic created a moment ago may not be in the first metadata this client sees; the
        # group's assignor would then give this member nothing, and kafka-python looks again
        # only at the next metadata refresh (minutes). Wait until its partitions are known.
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with guard(self._servers, "gave no topic metadata"):
                self._consumer.topics()  # a metadata request
            if self._consumer.partitions_for_topic(self._topic):
                return
            time.sleep(0.2)
        log.warning("event=kafka_topic_metadata_missing topic=%s waited_s=%.0f", self._topic, timeout_s)

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> Sequence[BusRecord]:
        """Up to ``max_records`` records, in offset order per partition; ``[]`` after ``timeout``."""
        try:
            with guard(self._servers, "failed a poll"):
                batches = self._consumer.poll(timeout_ms=max(0, int(timeout * 1000)), max_records=max_records)
        except BusUnavailable as exc:
            if isinstance(exc.__cause__, kerr.FencedInstanceIdError):
                raise DuplicateInstance(self._group, self._instance_id) from exc.__cause__
            if isinstance(exc.__cause__, kerr.InvalidSessionTimeoutError):
                asked = self._session_timeout_s
                said = "the client's default" if asked is None else f"{asked:g} s"
                raise SettingsError(
                    f"Kafka refused the session timeout of consumer group {self._group!r} ({said}): it "
                    "is outside the broker's group.min.session.timeout.ms .. group.max.session.timeout.ms; "
                    "set INFERWATCH_DETECT__SESSION_TIMEOUT_S between them") from exc.__cause__
            raise
        if self._instance_id is not None and self._fenced():
            raise DuplicateInstance(self._group, self._instance_id)
        return [
            BusRecord(r.topic, r.partition, r.offset,
                      None if r.key is None else r.key.decode("utf-8", "replace"), r.value)
            for tp in sorted(batches) for r in batches[tp]
        ]

    def _fenced(self) -> bool:
        """Whether Kafka fenced this static member off (another process joined with its
        instance_id) for two seconds or more.

        kafka-python 3.0 raises that only from a commit; on a fenced heartbeat it just stops
        heartbeating and polls on, so an idle fenced member would read its old partitions
        beside the new one without end. A member that believes it is STABLE with its heartbeat
        off is in that state (a join marks the group REBALANCING before it stops heartbeats).
        """
        coordinator = getattr(self._consumer, "_coordinator", None)
        stuck = (coordinator is not None and coordinator.state is MemberState.STABLE
                 and getattr(coordinator, "_heartbeat_enabled", True) is False)
        now = time.monotonic()
        if not stuck:
            self._stuck_since = None
            return False
        if self._stuck_since is None:
            self._stuck_since = now
        return now - self._stuck_since >= 2.0

    def commit(self, positions: Mapping[int, int]) -> None:
        """Commit, for each partition still assigned, the offset of the next record to read.

        Partitions lost in a rebalance are skipped with a log line: their new owner re-reads
        them from the last commit. BusUnavailable if the group coordinator cannot be reached.
        """
        assigned = self.assignment()
        offsets = {TopicPartition(self._topic, p): OffsetAndMetadata(int(o), "", -1)
                   for p, o in positions.items() if p in assigned}
        if len(offsets) < len(positions):
            log.info("event=kafka_commit_skipped topic=%s partitions=%s reason=not_assigned",
                     self._topic, sorted(set(positions) - assigned))
        if not offsets:
            return
        try:
            self._consumer.commit(offsets, timeout_ms=self._tuning.commit_timeout_ms)
        except _REBALANCED as exc:
            log.warning("event=kafka_commit_skipped topic=%s reason=rebalance error=%s",
                        self._topic, type(exc).__name__)
        except kerr.FencedInstanceIdError as exc:
            raise DuplicateInstance(self._group, self._instance_id) from exc
        except kerr.KafkaError as exc:
            raise unavailable(self._servers, "did not take the commit", exc) from exc

    def assignment(self) -> set[int]:
        """The partitions this member owns right now."""
        return {tp.partition for tp in self._consumer.assignment()}

    def partitions(self) -> set[int]:
        """Every partition of the topic, as the client's metadata cache knows them (no request:
        empty while the cache does not know the topic)."""
        return set(self._consumer._cluster.partitions_for_topic(self._topic) or ())

    def receiving(self) -> bool:
        """Whether the brokers answered this member's fetches lately (kafka-python's fetch-rate
        over its last samples, about a minute, is above zero): an idle member that still fetches
        is looking at a quiet topic, one that does not cannot tell."""
        metrics = self._consumer.metrics().get("consumer-fetch-manager-metrics", {})
        return float(metrics.get("fetch-rate", 0.0) or 0.0) > 0.0

    def caught_up(self) -> set[int]:
        """Owned partitions read to the end of their log as of the last fetch.

        Anything such a partition delivers later is new traffic, so it need not hold back the
        event-time merge of the others (see ``inferwatch.detectors.merge``).
        """
        done: set[int] = set()
        for tp in self._consumer.assignment():
            try:
                end = self._consumer.highwater(tp)
                position = self._consumer.position(tp, timeout_ms=0)
            except kerr.KafkaError:
                continue
            if end is not None and position is not None and position >= end:
                done.add(tp.partition)
        return done

    def committed_offsets(self) -> dict[int, int]:
        """The group's committed position per partition (partitions never committed are left out)."""
        found: dict[int, int] = {}
        with guard(self._servers, "gave no committed offsets"):
            for p in sorted(self._consumer.partitions_for_topic(self._topic)):
                offset = self._consumer.committed(TopicPartition(self._topic, p),
                                                  timeout_ms=self._tuning.request_timeout_ms)
                if offset is not None:
                    found[p] = int(offset)
        return found

    def lag(self) -> int:
        """Records in the topic after the group's committed positions, over all partitions."""
        committed = self.committed_offsets()
        with guard(self._servers, "gave no end offsets"):
            ends = _end_offsets(self._consumer, self._topic, self._tuning)
        return sum(end - committed.get(p, 0) for p, end in ends.items())

    def close(self) -> None:
        """Leave the group without committing; uncommitted records go to the next owner."""
        self._consumer.close(autocommit=False, timeout_ms=self._tuning.commit_timeout_ms)


class KafkaDeadLetters:
    """Malformed records on the dead-letter topic, with the reason and the source in headers."""

    def __init__(self, settings: BusSettings, tuning: KafkaTuning) -> None:
        self._settings = settings
        self._tuning = tuning
        self._producer = KafkaEventProducer(settings, settings.dead_letter_topic, tuning)

    def dead_letter(self, record: BusRecord, reason: str) -> None:
        """Keep ``record`` and why it was rejected, durably, before returning.

        Any record is accepted (an oversized one is truncated). Raises BusUnavailable only when
        Kafka cannot take it, so that the caller does not commit past a record it did not keep.
        """
        value, note = record.value, ""
        if len(value) > _DLQ_VALUE_LIMIT:
            value, note = value[:_DLQ_VALUE_LIMIT], f" (value truncated from {len(record.value)} bytes)"
        headers = [(REASON_HEADER, (reason + note).encode("utf-8", "replace")),
                   (SOURCE_HEADER, f"{record.topic}/{record.partition}/{record.offset}".encode())]
        future = self._producer._append(value, record.key, headers)
        with guard(self._settings.bootstrap_servers, "did not take the dead letter"):
            future.get(timeout=self._tuning.delivery_timeout_ms / 1000)

    def list(self, limit: int = 100) -> list[tuple[int, str, str, bytes]]:
        """The newest dead letters as ``(source_offset, "topic/partition", reason, value)``, newest first."""
        reader = _reader(self._settings, self._tuning)
        try:
            with guard(self._settings.bootstrap_servers, "gave no dead letters"):
                found = _read_tail(reader, self._settings.dead_letter_topic, limit, self._tuning)
        finally:
            reader.close(autocommit=False)
        found.sort(key=lambda r: (r.timestamp, r.partition, r.offset), reverse=True)
        return [_dead_letter_row(r) for r in found[:limit]]

    def close(self) -> None:
        """Close the dead-letter producer."""
        self._producer.close()


def _read_tail(consumer: Any, topic: str, limit: int, tuning: KafkaTuning) -> list[Any]:
    """The last ``limit`` records of every partition of ``topic``, read without a group."""
    ends = {TopicPartition(topic, p): end for p, end in _end_offsets(consumer, topic, tuning).items()}
    consumer.assign(list(ends))
    starts = consumer.beginning_offsets(list(ends), timeout_ms=tuning.request_timeout_ms)
    for tp, end in ends.items():
        consumer.seek(tp, max(int(starts[tp]), end - limit))
    found: list[Any] = []
    deadline = time.monotonic() + tuning.request_timeout_ms / 1000
    while any(consumer.position(tp) < end for tp, end in ends.items()) and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            found.extend(r for r in batch if r.offset < ends[TopicPartition(topic, r.partition)])
    return found


def _dead_letter_row(record: Any) -> tuple[int, str, str, bytes]:
    headers = dict(record.headers or [])
    # "topic/partition": an offset means nothing without its partition.
    source, _, offset = headers.get(SOURCE_HEADER, b"?/-1/-1").decode("utf-8", "replace").rpartition("/")
    return (int(offset) if offset.lstrip("-").isdigit() else -1, source,
            headers.get(REASON_HEADER, b"").decode("utf-8", "replace"), bytes(record.value or b""))
