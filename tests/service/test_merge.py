import random

from inferwatch.detectors.merge import PartitionMerger
from inferwatch.testing import make_event


def _chunks_by_partition(events, partitions=4, chunk=50):
    """Arrival as a Kafka consumer may see it: runs of one partition at a time."""
    queues = {p: [e for i, e in enumerate(events) if i % partitions == p] for p in range(partitions)}
    offsets = dict.fromkeys(queues, 0)
    rng = random.Random(5)
    while any(queues.values()):
        p = rng.choice([q for q, items in queues.items() if items])
        for event in queues[p][:chunk]:
            yield p, offsets[p], event
            offsets[p] += 1
        queues[p] = queues[p][chunk:]


def test_release_order_is_event_time_whatever_the_arrival_order():
    events = [make_event(1000.0 + i) for i in range(1000)]
    merger: PartitionMerger = PartitionMerger(quiet_s=5.0)
    merger.assign(range(4), now=0.0)  # the consumer's assignment, known before any record
    released = []
    for p, offset, event in _chunks_by_partition(events):
        merger.add(p, offset, event.ts, event, now=0.0)
        released += merger.release(now=0.0)
    released += merger.flush()
    assert [e.id for e in released] == [e.id for e in events]


def test_positions_never_pass_a_held_record():
    merger: PartitionMerger = PartitionMerger(quiet_s=5.0)
    merger.add(0, 0, 10.0, "a", now=0.0)
    merger.add(0, 1, 50.0, "b", now=0.0)
    merger.add(1, 0, 20.0, "c", now=0.0)
    merger.skip(1, 1, now=0.0)  # a dead-lettered record
    assert merger.release(now=0.0) == ["a", "c"]
    assert merger.positions() == {0: 1, 1: 2}
    assert merger.held() == 1
    merger.assign([1], now=0.0)  # partition 0 went to another process
    assert merger.positions() == {1: 2}
    assert merger.flush() == []


def test_a_partition_assigned_but_not_yet_delivering_is_not_committed():
    # A restarted detector whose partition 1 was read to its end before the crash: committing
    # {1: 0} would rewind the group's position there and the next run would read it all again.
    merger: PartitionMerger = PartitionMerger(quiet_s=5.0)
    merger.assign([0, 1], now=0.0)
    assert merger.positions() == {}
    merger.add(0, 700, 10.0, "a", now=0.0)
    assert merger.release(now=6.0) == ["a"]
    assert merger.positions() == {0: 701}
    merger.skip(1, 40, now=7.0)
    assert merger.positions() == {0: 701, 1: 41}


def test_a_quiet_partition_stops_holding_the_others_back():
    merger: PartitionMerger = PartitionMerger(quiet_s=5.0)
    merger.add(0, 0, 10.0, "old", now=0.0)
    merger.add(1, 0, 100.0, "new", now=0.0)
    assert merger.release(now=1.0) == ["old"]
    merger.add(1, 1, 200.0, "newer", now=6.0)
    assert merger.release(now=6.0) == ["new", "newer"]


def test_an_assigned_partition_that_never_delivers_holds_back_only_until_quiet():
    merger: PartitionMerger = PartitionMerger(quiet_s=5.0)
    merger.assign([0, 1], now=0.0)
    merger.add(0, 0, 10.0, "a", now=1.0)
    assert merger.release(now=1.0) == []  # partition 1 may still hold older events
    assert merger.release(now=5.5) == ["a"]


def test_a_live_partition_read_to_the_end_does_not_hold_the_others_back():
    merger: PartitionMerger = PartitionMerger(quiet_s=5.0)
    merger.add(0, 0, 1000.0, "a", now=1000.0)
    merger.add(1, 0, 999.0, "b", now=1000.0)
    assert merger.release(now=1000.0) == ["b"]
    assert merger.release(now=1000.5, caught_up=[1]) == ["a"]


def test_a_backfill_partition_read_to_the_end_still_holds_until_quiet():
    # Old events being written now: the partition may yet deliver times older than "a".
    merger: PartitionMerger = PartitionMerger(quiet_s=5.0)
    merger.add(0, 0, 100.0, "a", now=1000.0)
    merger.add(1, 0, 50.0, "b", now=1000.0)
    assert merger.release(now=1000.0, caught_up=[1]) == ["b"]
    assert merger.release(now=1006.0, caught_up=[1]) == ["a"]
