"""The shipper: batches to the producer, never blocks or raises, counts every drop."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from inferwatch.agent.shipper import EventShipper
from inferwatch.collectors.event import InferenceEvent, decode_event

if TYPE_CHECKING:  # the classes behind the conftest fixtures, for annotations only
    from conftest import DownProducer, HangingProducer, ListProducer


def event(n: int, principal: str | None = None) -> InferenceEvent:
    return InferenceEvent(id=f"e{n}", time=datetime.now(UTC), principal=principal)


class BatchProducer:
    """A producer that takes whole batches, as the SQLite one does."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def send(self, value: bytes, key: str | None = None) -> None:
        raise AssertionError("send_many should be used for batches")

    def send_many(self, records: list[tuple[bytes, str | None]]) -> None:
        self.batches.append(len(records))

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass


def test_events_are_encoded_and_sent_keyed_by_principal(list_producer: ListProducer) -> None:
    producer = list_producer
    shipper = EventShipper(producer, flush_interval_s=0.01)
    try:
        assert shipper.offer(event(1, "p_abc"))
        assert shipper.offer(event(2))
        assert shipper.flush(timeout=5.0)
        assert [decode_event(v).id for v, _ in producer.records] == ["e1", "e2"]
        assert [k for _, k in producer.records] == ["p_abc", None]
        stats = shipper.stats()
        assert (stats.captured, stats.sent, stats.queue_depth) == (2, 2, 0)
    finally:
        shipper.shutdown()


def test_batches_respect_batch_size_and_use_send_many() -> None:
    producer = BatchProducer()
    shipper = EventShipper(producer, batch_size=4, flush_interval_s=60)
    try:
        for n in range(10):
            shipper.offer(event(n))
        assert shipper.flush(timeout=5.0)
        assert sum(producer.batches) == 10
        assert max(producer.batches) <= 4
    finally:
        shipper.shutdown()


def test_full_queue_drops_and_counts(hanging: HangingProducer) -> None:
    shipper = EventShipper(hanging, queue_size=3, batch_size=1, flush_interval_s=0.01)
    shipper.offer(event(0))
    assert hanging.entered.wait(5.0)  # the thread now holds event 0 and hangs in send
    accepted = [shipper.offer(event(n)) for n in range(1, 8)]
    assert accepted == [True, True, True, False, False, False, False]
    stats = shipper.stats()
    assert (stats.captured, stats.dropped_queue_full, stats.queue_depth) == (8, 4, 3)
    hanging.release.set()
    shipper.shutdown(timeout=5.0)
    assert shipper.stats().sent == 4


def test_bus_errors_drop_the_batch_and_the_thread_carries_on(down_producer: DownProducer) -> None:
    producer = down_producer
    shipper = EventShipper(producer, batch_size=2, flush_interval_s=0.01, max_backoff_s=0.05)
    try:
        for n in range(5):
            assert shipper.offer(event(n))
        shipper.flush(timeout=5.0)
        assert shipper.stats().dropped_bus_error == 5
        assert shipper.offer(event(99))  # still accepting after failures
        shipper.flush(timeout=5.0)
        stats = shipper.stats()
        assert (stats.captured, stats.sent, stats.dropped_bus_error) == (6, 0, 6)
    finally:
        shipper.shutdown()


def test_flush_gives_up_on_a_hanging_producer(hanging: HangingProducer) -> None:
    shipper = EventShipper(hanging, flush_interval_s=0.01)
    shipper.offer(event(1))
    assert shipper.flush(timeout=0.2) is False
    hanging.release.set()
    assert shipper.flush(timeout=5.0) is True
    shipper.shutdown()


def test_shutdown_sends_what_is_queued_closes_the_producer_and_refuses_more(
    list_producer: ListProducer,
) -> None:
    producer = list_producer
    shipper = EventShipper(producer, flush_interval_s=60)
    for n in range(3):
        shipper.offer(event(n))
    shipper.shutdown(timeout=5.0)
    assert len(producer.records) == 3
    assert producer.closed
    assert shipper.offer(event(4)) is False
    assert shipper.stats().dropped_after_shutdown == 1


def test_shutdown_returns_despite_a_hanging_producer(hanging: HangingProducer) -> None:
    shipper = EventShipper(hanging, flush_interval_s=0.01)
    shipper.offer(event(1))
    assert hanging.entered.wait(5.0)
    shipper.shutdown(timeout=0.1)  # returns; the daemon thread stays parked in send
    assert shipper.offer(event(2)) is False


def test_forked_child_gets_its_own_thread_and_empty_queue(hanging: HangingProducer) -> None:
    shipper = EventShipper(hanging, flush_interval_s=0.01, batch_size=1)
    shipper.offer(event(1))
    assert hanging.entered.wait(5.0)
    shipper.offer(event(2))  # queued in the parent, stuck behind the hanging send
    pid = os.fork()
    if pid == 0:  # child: must not resend the parent's event, and must have a live thread
        code = 1
        try:
            hanging.release.set()
            fresh = shipper.stats().queue_depth == 0 and shipper.stats().captured == 0
            shipper.offer(event(3))
            ok = fresh and shipper.flush(timeout=5.0) and shipper.stats().sent == 1
            code = 0 if ok else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    hanging.release.set()
    shipper.shutdown(timeout=5.0)
