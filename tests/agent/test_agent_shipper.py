"""The shipper: batches to the producer, never blocks or raises, counts every drop."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from inferwatch.agent.content import CallContent, Row
from inferwatch.agent.shipper import SPOOL_FLUSH_TIMEOUT_S, EventShipper, ShipperStats
from inferwatch.agent.spool import Spool
from inferwatch.collectors.bus import BusUnavailable, EventProducer
from inferwatch.collectors.event import AgentInfo, EventInput, InferenceEvent, decode_event, encode_event
from tests.agent.conftest import SwitchableProducer

if TYPE_CHECKING:  # the classes behind the conftest fixtures, for annotations only
    from conftest import AgentFactory, DownProducer, HangingProducer, ListProducer


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


def test_every_event_sent_carries_what_the_agent_had_lost_by_then(hanging: HangingProducer) -> None:
    def numbered(n: int) -> InferenceEvent:
        return InferenceEvent(id=f"e{n}", time=datetime.now(UTC), agent=AgentInfo(id="a", seq=n))

    shipper = EventShipper(hanging, queue_size=2, batch_size=1, flush_interval_s=0.01)
    shipper.offer(numbered(0))
    assert hanging.entered.wait(5.0)  # event 0 is being sent (stamped 0) and hangs there
    accepted = [shipper.offer(numbered(n)) for n in range(1, 6)]
    assert accepted == [True, True, False, False, False]  # three dropped: queue full
    hanging.release.set()
    shipper.shutdown(timeout=5.0)
    sent = [decode_event(value) for value, _ in hanging.records]
    assert [(e.agent.seq, e.agent.dropped) for e in sent if e.agent] == [(0, 0), (1, 3), (2, 3)]


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


def test_the_bus_unavailable_line_says_why(down_producer: DownProducer,
                                          caplog: pytest.LogCaptureFixture) -> None:
    shipper = EventShipper(down_producer, batch_size=2, flush_interval_s=0.01, max_backoff_s=0.05)
    try:
        with caplog.at_level("WARNING", logger="inferwatch.agent"):
            assert shipper.offer(event(1))
            shipper.flush(timeout=5.0)
    finally:
        shipper.shutdown()
    lines = [r.getMessage() for r in caplog.records if "event=bus_unavailable" in r.getMessage()]
    assert lines[0] == "event=bus_unavailable error=BusUnavailable spooling=false reason=bus is down (test)"


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


# -- a producer that buffers and retries by itself (Kafka's): the held batch -----------------------


Record = tuple[bytes, str | None]
AGENT_ID = "agent-under-test"


@dataclass(frozen=True)
class BufferStats:
    pending: int


class BufferingProducer:
    """A bus client that buffers records and retries them by itself, as Kafka's does.

    ``send`` only buffers. ``flush(timeout)`` waits (for real, up to ``timeout``; ``None``: until
    the bus is back) for the buffer to be acknowledged and raises :class:`BusUnavailable` if
    records are still buffered when it runs out, or if the client gave up on some since the last
    flush. ``stats().pending`` is what it still holds. The test drives the outage: :meth:`go_down`,
    :meth:`come_back` (the next flush delivers the buffer, or at once with ``deliver_now``, as a
    client's I/O thread would) and :meth:`give_up` (the client's delivery timeout ran out: the
    buffered records fail and are never delivered).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._up = threading.Event()
        self._up.set()
        self._buffer: list[Record] = []
        self._unreported = 0
        self.delivered: list[Record] = []
        self.given_up: list[Record] = []
        self.handed: list[Record] = []  # every record given to send, repeats included
        self.flush_timeouts: list[float | None] = []
        self.closed = False

    def send(self, value: bytes, key: str | None = None) -> None:
        with self._lock:
            self._buffer.append((value, key))
            self.handed.append((value, key))

    def flush(self, timeout: float | None = None) -> None:
        with self._lock:
            self.flush_timeouts.append(timeout)
        self._up.wait(timeout)
        with self._lock:
            if self._up.is_set():
                self.delivered.extend(self._buffer)
                self._buffer.clear()
            still, failed = len(self._buffer), self._unreported
            self._unreported = 0
        if still:
            raise BusUnavailable(f"{still} records not acknowledged within {timeout}s (test)")
        if failed:
            raise BusUnavailable(f"{failed} records were not delivered (test)")

    def stats(self) -> BufferStats:
        with self._lock:
            return BufferStats(pending=len(self._buffer))

    def close(self) -> None:
        self.closed = True

    def go_down(self) -> None:
        self._up.clear()

    def come_back(self, *, deliver_now: bool = False) -> None:
        with self._lock:
            if deliver_now:
                self.delivered.extend(self._buffer)
                self._buffer.clear()
            self._up.set()

    def give_up(self) -> None:
        with self._lock:
            self.given_up.extend(self._buffer)
            self._unreported += len(self._buffer)
            self._buffer.clear()

    @property
    def flushes(self) -> int:
        with self._lock:
            return len(self.flush_timeouts)

    @property
    def pending(self) -> int:
        return self.stats().pending

    def delivered_seqs(self) -> list[int]:
        return seqs(self.delivered)

    def handed_seqs(self) -> list[int]:
        return seqs(self.handed)


def seqs(records: list[Record]) -> list[int]:
    out = []
    for value, _ in records:
        agent = decode_event(value).agent
        assert agent is not None
        assert agent.id == AGENT_ID
        out.append(agent.seq)
    return out


def seq_event(n: int) -> InferenceEvent:
    return InferenceEvent(id=f"e{n}", time=datetime.now(UTC), agent=AgentInfo(id=AGENT_ID, seq=n))


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def spooling_shipper(producer: EventProducer, spool_dir: Path, **kwargs: Any) -> EventShipper:
    kwargs.setdefault("flush_timeout_s", 0.05)
    return EventShipper(
        producer,
        batch_size=4,
        flush_interval_s=0.01,
        max_backoff_s=0.05,
        spool=Spool(spool_dir, max_bytes=1 << 20, fsync=False),
        **kwargs,
    )


def balanced(stats: ShipperStats) -> bool:
    """``captured + recovered = sent + dropped + queue_depth + spool_depth`` (nothing in flight)."""
    out = stats.sent + stats.dropped + stats.queue_depth + stats.spool_depth
    return stats.captured + stats.recovered == out


def hold_first_batch(shipper: EventShipper, producer: BufferingProducer) -> None:
    """With the bus down, ship events 0-3: the producer keeps them buffered past the flush timeout."""
    producer.go_down()
    # One queued call building four events (as Agent.record queues them): one batch, however the
    # thread's timing falls.
    assert shipper.offer(lambda: [seq_event(n) for n in range(4)])
    # Asked once when sent and at least once more on a retry: by then the batch is held.
    wait_for(lambda: producer.flushes >= 2, "the shipper to ask the producer again")
    assert shipper.flush(timeout=0.1) is False  # a held batch is not drained yet


@pytest.fixture
def buffering() -> Iterator[BufferingProducer]:
    producer = BufferingProducer()
    yield producer
    producer.come_back()  # lets any flush still waiting return


def test_with_a_spool_the_agent_waits_at_most_five_seconds_for_the_producer(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    producer = BufferingProducer()
    agent = make_agent(producer, spool_dir=tmp_path / "spool", spool_fsync=False)
    call = agent.begin(operation="chat", headers={})
    agent.record(call, CallContent(rows=[Row(input=EventInput(chars=1))]), status=200)
    assert agent.flush(5.0)
    assert SPOOL_FLUSH_TIMEOUT_S == 5.0  # as docs/agent.md says
    assert producer.flush_timeouts
    assert set(producer.flush_timeouts) == {SPOOL_FLUSH_TIMEOUT_S}
    no_spool = BufferingProducer()
    agent = make_agent(no_spool)
    call = agent.begin(operation="chat", headers={})
    agent.record(call, CallContent(rows=[Row(input=EventInput(chars=1))]), status=200)
    assert agent.flush(5.0)
    assert set(no_spool.flush_timeouts) == {None}  # without a spool: the producer's own retries, as before


@pytest.mark.parametrize("deliver_now", [False, True], ids=["delivered-on-flush", "delivered-in-background"])
def test_a_batch_the_producer_still_holds_is_held_then_counted_sent_and_the_spool_replayed_behind_it(
    buffering: BufferingProducer, tmp_path: Path, deliver_now: bool
) -> None:
    producer = buffering
    shipper = spooling_shipper(producer, tmp_path / "spool")
    try:
        hold_first_batch(shipper, producer)
        for n in range(4, 10):
            assert shipper.offer(seq_event(n))
        wait_for(lambda: shipper.stats().spooled == 6, "the events behind the held batch to be spooled")
        asked = producer.flushes
        wait_for(lambda: producer.flushes >= asked + 2, "two more retries")
        stats = shipper.stats()
        # Held: not sent again, not spooled, still counted in the queue depth; the rest is on disk.
        assert producer.handed_seqs() == [0, 1, 2, 3]
        assert producer.pending == 4
        assert (stats.sent, stats.spooled, stats.queue_depth, stats.spool_depth) == (0, 6, 4, 6)
        assert (stats.dropped, stats.bus_up) == (0, False)
        assert balanced(stats)

        producer.come_back(deliver_now=deliver_now)
        assert shipper.flush(10.0)
        stats = shipper.stats()
    finally:
        shipper.shutdown()
    # Delivered exactly once each, gap-free, in order: the held batch first, then the replay.
    assert producer.delivered_seqs() == list(range(10))
    assert producer.handed_seqs() == list(range(10))  # the held batch was never handed over twice
    assert (stats.sent, stats.replayed, stats.spooled) == (10, 6, 6)
    assert (stats.queue_depth, stats.spool_depth, stats.dropped, stats.bus_up) == (0, 0, 0, True)
    assert balanced(stats)
    assert list((tmp_path / "spool").glob("*/*.seg")) == []


def test_a_held_batch_the_producer_gave_up_on_is_spooled_and_sent_again_once(
    buffering: BufferingProducer, tmp_path: Path
) -> None:
    producer = buffering
    shipper = spooling_shipper(producer, tmp_path / "spool")
    try:
        hold_first_batch(shipper, producer)
        producer.give_up()
        wait_for(lambda: shipper.stats().spooled == 4, "the given-up batch to be spooled")
        stats = shipper.stats()
        assert (stats.sent, stats.queue_depth, stats.spool_depth, stats.dropped) == (0, 0, 4, 0)
        assert balanced(stats)
        producer.come_back()
        assert shipper.flush(10.0)
        stats = shipper.stats()
    finally:
        shipper.shutdown()
    assert seqs(producer.given_up) == [0, 1, 2, 3]
    assert producer.delivered_seqs() == [0, 1, 2, 3]  # sent again from the spool, once
    assert (stats.sent, stats.spooled, stats.replayed, stats.dropped, stats.spool_depth) == (4, 4, 4, 0, 0)
    assert balanced(stats)


def test_a_held_batch_given_up_after_later_events_were_spooled_keeps_its_place(
    buffering: BufferingProducer, tmp_path: Path
) -> None:
    producer = buffering
    shipper = spooling_shipper(producer, tmp_path / "spool")
    try:
        hold_first_batch(shipper, producer)
        for n in range(4, 10):
            assert shipper.offer(seq_event(n))
        wait_for(lambda: shipper.stats().spooled == 6, "the events behind the held batch to be spooled")
        producer.give_up()
        wait_for(lambda: shipper.stats().spooled == 10, "the given-up batch to be spooled")
        producer.come_back()
        assert shipper.flush(10.0)
        stats = shipper.stats()
    finally:
        shipper.shutdown()
    assert sorted(producer.delivered_seqs()) == list(range(10))  # none lost, none twice
    assert (stats.sent, stats.dropped) == (10, 0)
    assert producer.delivered_seqs() == list(range(10))  # and in order


def test_a_producer_that_gave_up_within_the_flush_holds_nothing_and_the_batch_is_spooled(
    tmp_path: Path,
) -> None:
    class GivesUpAtOnce(BufferingProducer):
        def flush(self, timeout: float | None = None) -> None:
            if not self._up.is_set():
                self.give_up()
            super().flush(timeout)

    producer = GivesUpAtOnce()
    shipper = spooling_shipper(producer, tmp_path / "spool")
    try:
        producer.go_down()
        for n in range(6):
            assert shipper.offer(seq_event(n))
        wait_for(lambda: shipper.stats().spooled == 6, "the refused events to be spooled")
        stats = shipper.stats()
        assert (stats.queue_depth, stats.spool_depth, stats.sent) == (0, 6, 0)
        producer.come_back()
        assert shipper.flush(10.0)
        stats = shipper.stats()
    finally:
        producer.come_back()
        shipper.shutdown()
    assert producer.delivered_seqs() == list(range(6))
    assert (stats.sent, stats.replayed, stats.dropped) == (6, 6, 0)


def spool_with(spool_dir: Path, first: int, count: int) -> None:
    """Leave ``count`` events in ``spool_dir`` as an agent process that exited would."""
    spool = Spool(spool_dir, max_bytes=1 << 20, fsync=False)
    spool.open()
    events = [seq_event(n) for n in range(first, first + count)]
    assert spool.append([(encode_event(e), None) for e in events]).written == count
    spool.close()


def test_a_held_batch_from_the_spool_is_committed_once_delivered_and_not_replayed_twice(
    buffering: BufferingProducer, tmp_path: Path
) -> None:
    producer = buffering
    spool_dir = tmp_path / "spool"
    spool_with(spool_dir, 0, 6)
    producer.go_down()
    shipper = spooling_shipper(producer, spool_dir)
    try:
        wait_for(lambda: producer.flushes >= 2, "the replay's first batch to be held")
        for n in range(6, 9):
            assert shipper.offer(seq_event(n))
        wait_for(lambda: shipper.stats().spooled == 3, "the new events to be spooled behind the backlog")
        stats = shipper.stats()
        assert producer.handed_seqs() == [0, 1, 2, 3]
        # Held from the spool: still counted there, not in the queue.
        assert (stats.recovered, stats.queue_depth, stats.spool_depth, stats.sent) == (6, 0, 9, 0)
        assert balanced(stats)
        producer.come_back()
        assert shipper.flush(10.0)
        stats = shipper.stats()
    finally:
        shipper.shutdown()
    assert producer.delivered_seqs() == list(range(9))
    assert producer.handed_seqs() == list(range(9))
    assert (stats.sent, stats.replayed, stats.spool_depth, stats.dropped) == (9, 9, 0, 0)
    assert balanced(stats)


def test_a_held_batch_from_the_spool_the_producer_gave_up_on_is_replayed_again_in_order(
    buffering: BufferingProducer, tmp_path: Path
) -> None:
    producer = buffering
    spool_dir = tmp_path / "spool"
    spool_with(spool_dir, 0, 6)
    producer.go_down()
    shipper = spooling_shipper(producer, spool_dir)
    try:
        wait_for(lambda: producer.flushes >= 2, "the replay's first batch to be held")
        for n in range(6, 9):
            assert shipper.offer(seq_event(n))
        wait_for(lambda: shipper.stats().spooled == 3, "the new events to be spooled behind the backlog")
        producer.give_up()
        wait_for(lambda: producer.pending == 0 and shipper.stats().spool_depth == 9, "the give-up to be seen")
        producer.come_back()
        assert shipper.flush(10.0)
        stats = shipper.stats()
    finally:
        shipper.shutdown()
    assert seqs(producer.given_up) == [0, 1, 2, 3]
    assert producer.delivered_seqs() == list(range(9))  # the given-up ones once, from the spool, first
    assert (stats.sent, stats.replayed, stats.spool_depth, stats.dropped) == (9, 9, 0, 0)
    assert balanced(stats)


def test_shutdown_writes_a_held_batch_to_disk_for_the_next_process(
    buffering: BufferingProducer, tmp_path: Path, list_producer: ListProducer
) -> None:
    producer = buffering
    spool_dir = tmp_path / "spool"
    shipper = spooling_shipper(producer, spool_dir)
    hold_first_batch(shipper, producer)
    assert shipper.stats().spooled == 0
    shipper.shutdown(timeout=5.0)
    stats = shipper.stats()
    assert producer.closed
    assert (stats.spooled, stats.spool_depth, stats.queue_depth, stats.sent, stats.dropped) == (4, 4, 0, 0, 0)
    assert balanced(stats)
    nxt = spooling_shipper(list_producer, spool_dir)
    try:
        assert nxt.flush(5.0)
    finally:
        nxt.shutdown()
    assert seqs(list_producer.records) == [0, 1, 2, 3]
    assert nxt.stats().recovered == 4


def test_shutdown_with_a_held_batch_and_spooled_events_behind_it_keeps_the_order(
    buffering: BufferingProducer, tmp_path: Path, list_producer: ListProducer
) -> None:
    producer = buffering
    spool_dir = tmp_path / "spool"
    shipper = spooling_shipper(producer, spool_dir)
    hold_first_batch(shipper, producer)
    for n in range(4, 10):
        assert shipper.offer(seq_event(n))
    wait_for(lambda: shipper.stats().spooled == 6, "the events behind the held batch to be spooled")
    shipper.shutdown(timeout=5.0)
    assert shipper.stats().spooled == 10
    nxt = spooling_shipper(list_producer, spool_dir)
    try:
        assert nxt.flush(5.0)
    finally:
        nxt.shutdown()
    assert sorted(seqs(list_producer.records)) == list(range(10))  # none lost, none twice
    assert seqs(list_producer.records) == list(range(10))  # and in order


def test_shutdown_does_not_hand_a_held_batch_to_the_producer_again(
    buffering: BufferingProducer, tmp_path: Path
) -> None:
    producer = buffering
    shipper = spooling_shipper(producer, tmp_path / "spool")
    hold_first_batch(shipper, producer)
    shipper.shutdown(timeout=5.0)
    assert shipper.stats().spool_depth == 4
    assert producer.handed_seqs() == [0, 1, 2, 3]


# -- failures of the shipper's own code -------------------------------------------------------------


class Fatal(BaseException):
    """Nothing the thread catches: it ends it, as nothing should."""


class FailingSpool(Spool):
    """A spool whose first ``append`` raises ``error`` (a bug, or a file closed under it)."""

    def __init__(self, directory: Path, error: BaseException) -> None:
        super().__init__(directory, max_bytes=1 << 20, fsync=False)
        self.error: BaseException | None = error

    def append(self, records: Any) -> Any:
        error, self.error = self.error, None
        if error is not None:
            raise error
        return super().append(records)


def test_an_unexpected_error_in_a_round_is_logged_counted_and_the_thread_carries_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    producer = SwitchableProducer(down=True)
    spool = FailingSpool(tmp_path / "spool", ValueError("I/O operation on closed file."))
    shipper = EventShipper(producer, batch_size=4, flush_interval_s=0.01, max_backoff_s=0.05, spool=spool)
    for n in range(4):  # one batch: refused by the bus, then the spool fails to take it
        assert shipper.offer(event(n))
    wait_for(lambda: shipper.stats().dropped_shipper_error == 4, "the lost batch to be counted")
    producer.down.clear()
    for n in range(4, 8):
        assert shipper.offer(event(n))
    assert shipper.flush(timeout=10.0)
    stats = shipper.stats()
    assert [e.id for e in producer.events()] == [f"e{n}" for n in range(4, 8)]
    assert (stats.sent, stats.dropped, stats.dropped_shipper_error) == (4, 4, 4)
    assert balanced(stats)
    failures = [r for r in caplog.records if "event=shipper_cycle_failed" in r.getMessage()]
    assert len(failures) == 1
    assert "error=ValueError" in failures[0].getMessage()
    assert failures[0].exc_info is not None
    shipper.shutdown()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_if_the_thread_is_gone_all_the_same_new_events_are_refused_and_counted(tmp_path: Path) -> None:
    producer = SwitchableProducer(down=True)
    spool = FailingSpool(tmp_path / "spool", Fatal())
    shipper = EventShipper(producer, batch_size=4, flush_interval_s=0.01, max_backoff_s=0.05, spool=spool)
    for n in range(4):
        assert shipper.offer(event(n))
    shipper._thread.join(10.0)  # the Fatal ends it
    assert not shipper._thread.is_alive()
    assert shipper.offer(event(4)) is False
    stats = shipper.stats()
    assert (stats.captured, stats.dropped_shipper_error) == (5, 1)
