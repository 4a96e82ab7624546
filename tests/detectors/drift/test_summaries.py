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


def test_the_end_of_a_batch_run_judges_what_is_carried_over() -> None:
    """Windows short of min_events are carried over; at the end of input the collector judges
    them, as a single process does at the end of a replay."""
    import random
    from datetime import UTC, datetime

    from inferwatch.detectors.drift.detector import Reference
    from inferwatch.detectors.drift.sketch import WindowSummary
    from inferwatch.testing import make_event

    rng = random.Random(3)

    def summary(mean: float, n: int, end: float) -> WindowSummary:
        window = WindowSummary("m", k=5000, start=end - 60.0)
        for i in range(n):
            window.add(make_event(end - 60.0 + i * 60.0 / n, model="m", features={"x": rng.gauss(mean, 1.0)}))
        window.end = end
        return window.seal()

    records = []
    for k, end in enumerate((60.0, 120.0, 180.0)):  # three windows of 300 events: 900 < 1000
        partial = summary(3.0, 300, end)
        partial.partitions = {0}
        value = encode({"format": 1, "type": "partial", "end": end, "summary": partial.to_dict()})
        records += [BusRecord("iw.summaries", 0, 2 * k, b"m", value), _marker(0, 2 * k + 1, end)]
    judge = DriftDetector().judge
    judge.set_reference("m", Reference(summary(0.0, 3000, 0.0), "file", datetime(2026, 1, 1, tzinfo=UTC)))
    collector = SummaryCollector(OwningConsumer(records, owned={0}), judge, event_partitions=1)

    assert collector.poll() == []  # each window carried: 300, 600, 900 events
    findings = collector.finish()

    assert [f.detector for f in findings] == ["drift"]
    assert findings[0].evidence["events"] == 900
    assert collector.finish() == []  # nothing carried any more
