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


class PollsConsumer(OwningConsumer):
    """Hands out its records one poll at a time, as Kafka may: one partition's before another's."""

    def __init__(self, polls: list[list[BusRecord]], owned: set[int]) -> None:
        super().__init__([], owned)
        self.polls = polls

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> Sequence[BusRecord]:
        return self.polls.pop(0) if self.polls else []


def _partial(partition: int, offset: int, end: float, model: str = "m") -> BusRecord:
    from inferwatch.detectors.drift.sketch import WindowSummary
    from inferwatch.testing import make_event

    summary = WindowSummary(model, k=100, start=end - 60.0)
    summary.add(make_event(end - 30.0, model=model, features={"x": 1.0}))
    summary.end = end
    summary.seal()
    summary.partitions = {0}
    value = encode({"format": 1, "type": "partial", "end": end, "summary": summary.to_dict()})
    return BusRecord("iw.summaries", partition, offset, model.encode(), value)


def _judged(collector: SummaryCollector) -> list[tuple[float, list[str]]]:
    seen: list[tuple[float, list[str]]] = []
    judge = collector.judge.judge

    def spy(end_ts, summaries):
        seen.append((end_ts, sorted(summaries)))
        return judge(end_ts, summaries)

    collector.judge.judge = spy  # type: ignore[method-assign]
    return seen


def test_a_window_waits_for_the_marker_on_every_summaries_partition_it_reads() -> None:
    """The marker read on partition 0 first, the model's partial (on partition 1, before the
    marker there) in the next poll: the window is judged once partition 1's marker is read, with
    the partial — not judged without it, the partial then dropped as late."""
    consumer = PollsConsumer([[_marker(0, 0, 60.0)], [_partial(1, 0, 60.0), _marker(1, 1, 60.0)]],
                             owned={0, 1})
    collector = _collector(consumer)
    seen = _judged(collector)
    collector.poll()
    assert seen == []
    collector.poll()
    assert seen == [(60.0, ["m"])]
    assert collector.late == 0


def test_a_later_windows_markers_close_an_earlier_one_on_that_partition() -> None:
    """After a rebalance, partition 1's records of window 60 were judged and committed by its
    previous owner: window 120's markers there close window 60 too (no wait of max_wait_s)."""
    consumer = PollsConsumer([[_partial(0, 0, 60.0), _marker(0, 1, 60.0)],
                              [_marker(0, 2, 120.0), _marker(1, 7, 120.0)]], owned={0, 1})
    collector = _collector(consumer)
    seen = _judged(collector)
    collector.poll()
    assert seen == []
    collector.poll()
    assert [end for end, _ in seen] == [60.0, 120.0]
    assert collector.incomplete == 0
