"""The disk spool: nothing lost while the bus is down, replayed in order, capped, crash-safe.

The bus outages here are a producer that raises :class:`BusUnavailable` while a switch is off
(the seam the shipper sees whatever the bus), the real embedded SQLite bus locked by another
writer, and a real process that dies with events on disk. A real Kafka outage is covered by
tests/integration/test_faults.py.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from inferwatch.agent import Agent
from inferwatch.agent.content import CallContent, Row
from inferwatch.agent.shipper import EventShipper
from inferwatch.agent.spool import MAGIC, Spool
from inferwatch.collectors.event import EventInput, InferenceEvent, decode_event
from inferwatch.collectors.settings import AgentSettings
from inferwatch.collectors.sqlite_bus import SQLiteBus
from tests.agent.conftest import SwitchableProducer

if TYPE_CHECKING:
    from conftest import AgentFactory, ListProducer


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def record_calls(agent: Agent, first: int, count: int) -> None:
    for n in range(first, first + count):
        call = agent.begin(operation="chat", headers={"x-api-key": f"key-{n % 3}"})
        agent.record(call, CallContent(rows=[Row(input=EventInput(chars=n))]), status=200)


def seqs(events: list[InferenceEvent]) -> list[int]:
    return [e.agent.seq for e in events if e.agent is not None]


def segments(spool_dir: Path) -> list[Path]:
    return sorted(spool_dir.glob("*/*.seg"))


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


# -- the spool on its own ------------------------------------------------------------------------


def records(count: int, first: int = 0) -> list[tuple[bytes, str | None]]:
    return [(f'{{"n": {n}}}'.encode(), f"p_{n}" if n % 2 else None) for n in range(first, first + count)]


def test_records_come_back_in_order_across_segments_and_sent_segments_are_deleted(spool_dir: Path) -> None:
    spool = Spool(spool_dir, max_bytes=1 << 20, segment_bytes=256, fsync=False)
    spool.open()
    assert spool.append(records(30)).written == 30
    assert len(segments(spool_dir)) >= 3  # 256-byte segments roll
    got: list[tuple[bytes, str | None]] = []
    while spool.pending:
        batch = spool.peek(7)
        got.extend(batch)
        spool.commit()
    assert got == records(30)
    assert segments(spool_dir) == []
    assert spool.size_bytes == 0
    spool.close()
    assert list(spool_dir.iterdir()) == []  # an empty folder is removed on close


def test_spool_files_are_for_the_owner_only(spool_dir: Path) -> None:
    spool = Spool(spool_dir, max_bytes=1 << 20, fsync=False)
    spool.open()
    spool.append(records(1))
    (segment,) = segments(spool_dir)
    assert segment.parent.stat().st_mode & 0o777 == 0o700
    assert segment.stat().st_mode & 0o777 == 0o600
    spool.close()


def test_peek_without_commit_gives_the_same_records_again(spool_dir: Path) -> None:
    spool = Spool(spool_dir, max_bytes=1 << 20, fsync=False)
    spool.open()
    spool.append(records(5))
    assert spool.peek(3) == records(3)
    assert spool.peek(3) == records(3)  # the bus refused: the same batch is tried again
    spool.commit()
    assert spool.peek(10) == records(2, first=3)
    spool.close()


def test_a_full_spool_refuses_what_does_not_fit(spool_dir: Path) -> None:
    spool = Spool(spool_dir, max_bytes=400, segment_bytes=200, fsync=False)
    spool.open()
    result = spool.append(records(50))
    assert result.written > 0
    assert result.written + result.full == 50
    assert result.failed == 0
    assert spool.size_bytes <= 400
    assert spool.append(records(1)).full == 1
    # sending makes room again
    spool.peek(result.written)
    spool.commit()
    assert spool.append(records(1)).written == 1
    spool.close()


def test_a_later_spool_takes_over_what_a_closed_one_left_and_resumes_at_the_cursor(spool_dir: Path) -> None:
    first = Spool(spool_dir, max_bytes=1 << 20, segment_bytes=300, fsync=True)
    first.open()
    first.append(records(20))
    first.peek(6)
    first.commit()  # six reached the bus before the process stopped
    first.close()
    second = Spool(spool_dir, max_bytes=1 << 20, fsync=False)
    second.open()
    assert second.recovered == 14
    got = []
    while second.pending:
        got.extend(second.peek(100))
        second.commit()
    assert got == records(14, first=6)
    second.close()
    assert list(spool_dir.iterdir()) == []


def test_a_folder_in_use_by_a_live_spool_is_not_taken_over(spool_dir: Path) -> None:
    live = Spool(spool_dir, max_bytes=1 << 20, fsync=False)
    live.open()
    live.append(records(3))
    other = Spool(spool_dir, max_bytes=1 << 20, fsync=False)
    other.open()
    assert (other.recovered, other.pending) == (0, 0)
    other.close()
    assert live.peek(10) == records(3)
    live.close()


def test_a_torn_tail_is_counted_and_the_whole_frames_before_it_are_kept(spool_dir: Path) -> None:
    first = Spool(spool_dir, max_bytes=1 << 20, fsync=False)
    first.open()
    first.append(records(5))
    first.close()
    (segment,) = segments(spool_dir)
    whole = segment.read_bytes()
    segment.write_bytes(whole + whole[len(MAGIC) : len(MAGIC) + 11])  # a frame cut mid-write
    second = Spool(spool_dir, max_bytes=1 << 20, fsync=False)
    second.open()
    assert (second.recovered, second.corrupt) == (5, 1)
    assert second.peek(10) == records(5)
    second.commit()
    assert second.pending == 0
    second.close()


def test_a_damaged_frame_ends_its_segment_and_the_next_segment_is_still_read(spool_dir: Path) -> None:
    first = Spool(spool_dir, max_bytes=1 << 20, segment_bytes=120, fsync=False)
    first.open()
    first.append(records(8))
    first.close()
    paths = segments(spool_dir)
    assert len(paths) >= 2
    damaged = bytearray(paths[0].read_bytes())
    damaged[-3] ^= 0xFF  # flip a byte inside the first segment's last frame
    paths[0].write_bytes(bytes(damaged))
    second = Spool(spool_dir, max_bytes=1 << 20, fsync=False)
    second.open()
    got = []
    while second.pending:
        got.extend(second.peek(100))
        second.commit()
    assert second.corrupt == 1
    assert len(got) == 7
    assert got == [r for r in records(8) if r in got]  # order kept, one record lost
    second.close()


def test_a_segment_that_cannot_be_read_back_is_counted_and_the_next_segment_is_still_read(
    spool_dir: Path,
) -> None:
    spool = Spool(spool_dir, max_bytes=1 << 20, segment_bytes=120, fsync=False)
    spool.open()
    assert spool.append(records(12)).written == 12
    paths = segments(spool_dir)
    assert len(paths) >= 3
    paths[1].unlink()  # a tmp cleaner; an I/O error on read fails the same way
    got = []
    while spool.pending:
        got.extend(spool.peek(100))
        spool.commit()
    assert 0 < spool.corrupt < 12
    assert len(got) + spool.corrupt == 12
    assert got == [r for r in records(12) if r in got]  # order kept
    assert (got[0], got[-1]) == (records(12)[0], records(12)[-1])  # segments before and after it
    assert (segments(spool_dir), spool.size_bytes) == ([], 0)
    assert spool.append(records(2, first=12)).written == 2  # and the spool carries on
    assert spool.peek(10) == records(2, first=12)
    spool.close()


def test_a_shipper_replaying_past_an_unreadable_segment_counts_it_and_sends_the_rest(spool_dir: Path) -> None:
    producer = SwitchableProducer(down=True)
    spool = Spool(spool_dir, max_bytes=1 << 20, segment_bytes=512, fsync=False)
    shipper = EventShipper(producer, batch_size=8, flush_interval_s=0.01, max_backoff_s=0.05, spool=spool)
    for n in range(40):
        shipper.offer(event(n))
    wait_for(lambda: shipper.stats().spooled == 40, what="the outage to be spooled")
    paths = segments(spool_dir)
    assert len(paths) >= 3
    paths[1].unlink()
    producer.down.clear()
    for n in range(40, 45):
        assert shipper.offer(event(n))
    assert shipper.flush(timeout=10.0)
    stats = shipper.stats()
    assert stats.dropped_spool_corrupt > 0
    assert stats.sent + stats.dropped_spool_corrupt == 45
    assert [e.id for e in producer.events()][-5:] == [f"e{n}" for n in range(40, 45)]
    shipper.shutdown()


def test_a_file_that_is_not_a_segment_is_skipped(spool_dir: Path) -> None:
    first = Spool(spool_dir, max_bytes=1 << 20, fsync=False)
    first.open()
    first.append(records(2))
    first.close()
    (segment,) = segments(spool_dir)
    segment.write_bytes(b"garbage" * 10)
    second = Spool(spool_dir, max_bytes=1 << 20, fsync=False)
    second.open()
    assert (second.pending, second.corrupt) == (0, 1)
    second.close()


# -- the shipper with a spool -----------------------------------------------------------------------


def test_outage_spools_then_replays_everything_gap_free_and_in_order(
    make_agent: AgentFactory, spool_dir: Path
) -> None:
    producer = SwitchableProducer()
    agent = make_agent(producer, spool_dir=spool_dir, batch_size=8, spool_fsync=False)
    record_calls(agent, 0, 20)
    assert agent.flush(5.0)
    producer.down.set()
    started = time.perf_counter()
    record_calls(agent, 20, 200)  # the request path does not wait for the bus nor for the disk
    request_path_s = time.perf_counter() - started
    wait_for(lambda: agent.stats().shipper.spooled >= 200, what="the outage's events to reach the spool")
    stats = agent.stats().shipper
    assert (stats.bus_up, stats.spool_depth, stats.queue_depth) == (False, 200, 0)
    assert segments(spool_dir)
    record_calls(agent, 220, 30)  # more while still down: behind the spooled ones
    producer.down.clear()
    assert agent.flush(10.0)
    events = producer.events()
    assert seqs(events) == list(range(250))  # gap-free and in order
    assert [e.input.chars for e in events] == list(range(250))
    stats = agent.stats().shipper
    assert stats.sent == 250
    assert stats.replayed == stats.spooled >= 200
    assert (stats.dropped, stats.spool_depth, stats.bus_up) == (0, 0, True)
    assert segments(spool_dir) == []
    assert request_path_s < 5.0  # loose: only says the 200 calls did not wait out a bus timeout


def test_when_the_spool_is_full_new_events_are_dropped_and_counted(
    make_agent: AgentFactory, spool_dir: Path
) -> None:
    producer = SwitchableProducer(down=True)
    agent = make_agent(producer, spool_dir=spool_dir, spool_max_bytes=8192, spool_fsync=False)
    record_calls(agent, 0, 200)
    wait_for(lambda: agent.stats().shipper.queue_depth == 0, what="the queue to drain to the spool")
    wait_for(lambda: (s := agent.stats().shipper).spooled + s.dropped_spool_full == 200, what="all handled")
    stats = agent.stats().shipper
    assert 0 < stats.spooled < 200
    assert stats.dropped_spool_full == 200 - stats.spooled
    assert stats.spool_bytes <= 8192
    producer.down.clear()
    assert agent.flush(10.0)
    events = producer.events()
    # What fit arrives in order; the dropped tail is a visible gap after it.
    assert seqs(events) == list(range(stats.spooled))
    assert 'reason="spool_full"} ' + str(stats.dropped_spool_full) in agent.metrics_text()


def test_without_a_spool_the_batch_is_dropped_as_before(make_agent: AgentFactory) -> None:
    producer = SwitchableProducer(down=True)
    agent = make_agent(producer, batch_size=4)
    record_calls(agent, 0, 10)
    agent.flush(2.0)
    stats = agent.stats().shipper
    assert (stats.dropped_bus_error, stats.spooled) == (10, 0)


def test_shutdown_during_an_outage_leaves_the_events_for_the_next_agent(
    make_agent: AgentFactory, spool_dir: Path, list_producer: ListProducer
) -> None:
    down = SwitchableProducer(down=True)
    first = make_agent(down, spool_dir=spool_dir, spool_fsync=False)
    record_calls(first, 0, 40)
    first.shutdown(timeout=5.0)
    assert first.stats().shipper.spooled == 40
    assert segments(spool_dir)
    second = make_agent(list_producer, spool_dir=spool_dir)
    record_calls(second, 0, 5)
    assert second.flush(5.0)
    events = list_producer.events()
    # The first agent's events come first, in order, then the second's.
    assert [(e.agent.id, e.agent.seq) for e in events if e.agent] == [(first.id, n) for n in range(40)] + [
        (second.id, n) for n in range(5)
    ]
    assert second.stats().shipper.recovered == 40


def test_a_real_embedded_bus_locked_by_another_writer(make_agent: AgentFactory, tmp_path: Path) -> None:
    bus = SQLiteBus(tmp_path / "bus.db")
    agent = make_agent(bus.producer(), spool_dir=tmp_path / "spool", spool_fsync=False)
    record_calls(agent, 0, 5)
    assert agent.flush(10.0)
    blocker = sqlite3.connect(tmp_path / "bus.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # holds the write lock: the producer gets "database is locked"
    try:
        record_calls(agent, 5, 50)
        wait_for(lambda: agent.stats().shipper.spooled > 0, 30, "the locked bus to send events to the spool")
        record_calls(agent, 55, 10)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert agent.flush(30.0)
    consumer = bus.consumer("test")
    events = [decode_event(r.value) for r in consumer.poll(max_records=1000, timeout=1.0)]
    consumer.close()
    assert seqs(events) == list(range(65))
    assert agent.stats().shipper.dropped == 0


CRASHING_AGENT = textwrap.dedent(
    """
    import os, sys, time
    from inferwatch.agent import Agent
    from inferwatch.agent.content import CallContent, Row
    from inferwatch.collectors.bus import BusUnavailable
    from inferwatch.collectors.event import EventInput
    from inferwatch.collectors.settings import AgentSettings

    class DownProducer:
        def send(self, value, key=None): raise BusUnavailable("down")
        def flush(self, timeout=None): pass
        def close(self): pass

    agent = Agent(AgentSettings(service="crash", spool_dir=sys.argv[1], flush_interval_s=0.01,
                                batch_size=16), DownProducer())
    for n in range(100):
        call = agent.begin(operation="chat")
        agent.record(call, CallContent(rows=[Row(input=EventInput(chars=n))]), status=200)
    deadline = time.monotonic() + 20
    while agent.stats().shipper.spooled < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    print(agent.id, agent.stats().shipper.spooled, flush=True)
    os._exit(0)  # dies without shutting down: no atexit, no close
    """
)


def test_events_spooled_by_a_process_that_died_arrive_after_restart(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_AGENT, str(spool_dir)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    dead_id, spooled = done.stdout.split()
    assert spooled == "100"
    (last,) = segments(spool_dir)[-1:]
    with last.open("ab") as torn:  # and it died in the middle of one more write
        torn.write(b"\x00\x00\x01\x00\x12\x34")
    bus = SQLiteBus(tmp_path / "bus.db")
    settings = AgentSettings(service="restarted", spool_dir=spool_dir, flush_interval_s=0.01)
    agent = Agent(settings, bus.producer())
    try:
        assert agent.flush(10.0)
        stats = agent.stats().shipper
        assert (stats.recovered, stats.replayed, stats.dropped_spool_corrupt) == (100, 100, 1)
    finally:
        agent.shutdown()
    consumer = bus.consumer("test")
    events = [decode_event(r.value) for r in consumer.poll(max_records=1000, timeout=1.0)]
    consumer.close()
    assert {e.agent.id for e in events if e.agent} == {dead_id}
    assert seqs(events) == list(range(100))
    assert [e.input.chars for e in events] == list(range(100))
    assert list(spool_dir.iterdir()) == []


def test_a_forked_child_spools_into_its_own_folder(spool_dir: Path) -> None:
    producer = SwitchableProducer(down=True)
    spool = Spool(spool_dir, max_bytes=1 << 20, fsync=False)
    shipper = EventShipper(producer, flush_interval_s=0.01, spool=spool)
    shipper.offer(event(0))
    wait_for(lambda: shipper.stats().spooled == 1, what="the parent's event to be spooled")
    pid = os.fork()
    if pid == 0:  # child: its own folder, its own counters; the parent's events stay the parent's
        code = 1
        try:
            shipper.offer(event(1))
            wait_for(lambda: shipper.stats().spooled == 1)
            folders = {p.parent for p in segments(spool_dir)}
            code = 0 if len(folders) == 2 and shipper.stats().spool_depth == 1 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert shipper.stats().spool_depth == 1
    shipper.shutdown()


def event(n: int) -> InferenceEvent:
    return InferenceEvent(id=f"e{n}", time=datetime.now(UTC))
