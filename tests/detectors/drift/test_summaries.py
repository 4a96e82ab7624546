"""The scale-out collector's commits: never for a summaries partition this member no longer owns."""

from collections.abc import Mapping, Sequence

from inferwatch.collectors.bus import BusRecord
from inferwatch.detectors.drift.detector import DriftDetector
from inferwatch.detectors.drift.summaries import SummaryCollector, encode


class Consumer:
    def __init__(self, records: list[BusRecord], owned: set[int] | None) -> None:
        self.records, self.owned, self.committed = records, owned, []

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> Sequence[BusRecord]:
        out, self.records = self.records, []
        return out

    def commit(self, positions: Mapping[int, int]) -> None:
        self.committed.append(dict(positions))


class OwningConsumer(Consumer):
    def assignment(self) -> set[int]:
        assert self.owned is not None
        return self.owned


def _marker(partition: int, offset: int, end: float) -> BusRecord:
    value = encode({"format": 1, "type": "marker", "end": end, "partitions": [0]})
    return BusRecord("iw.summaries", partition, offset, None, value)


def _collector(consumer: Consumer) -> SummaryCollector:
    return SummaryCollector(consumer, DriftDetector().judge, event_partitions=1)


def test_commits_cover_only_the_partitions_owned_now() -> None:
    records = [_marker(0, 4, 60.0), _marker(1, 9, 60.0), _marker(0, 5, 120.0), _marker(1, 10, 120.0)]
    consumer = OwningConsumer(records, owned={0, 1})
    collector = _collector(consumer)
    collector.poll()  # both windows complete (markers for the one event partition): judged
    assert collector.commit_positions() == {0: 6, 1: 11}
    consumer.owned = {1}  # a rebalance gave partition 0 to another member
    collector.commit()
    assert consumer.committed == [{1: 11}]


def test_a_consumer_that_does_not_say_what_it_owns_commits_what_was_read() -> None:
    collector = _collector(Consumer([_marker(0, 4, 60.0), _marker(2, 7, 60.0)], owned=None))
    collector.poll()
    assert collector.commit_positions() == {0: 5, 2: 8}
