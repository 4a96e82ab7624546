import json
import logging
import threading
from datetime import datetime
from typing import Any

from inferwatch.collectors.event import encode_event
from inferwatch.collectors.sqlite_bus import SQLiteBus, SQLiteConsumer
from inferwatch.detectors.base import Finding
from inferwatch.detectors.incidents import IncidentManager
from inferwatch.detectors.pipeline import Pipeline
from inferwatch.detectors.service import DetectorService
from inferwatch.detectors.sqlite_store import SQLiteStore
from inferwatch.detectors.store import EventQuery, IncidentQuery, StoreUnavailable
from inferwatch.testing import make_event


class ServerErrors:
    """Flags every 5xx, and counts windows, so tests can see what the service drives."""

    name = "server_errors"

    def __init__(self) -> None:
        self.windows: list[datetime] = []
        self.seen: list[str] = []

    def observe(self, event):
        self.seen.append(event.id)
        if (event.status or 0) < 500:
            return []
        return [Finding(detector=self.name, kind="operational", severity="low", score=0.5,
                        title="server error", summary=f"status {event.status}",
                        subject=f"model:{event.model}",
                        time=event.time, model=event.model, event_ids=[event.id])]

    def close_window(self, end):
        self.windows.append(end)
        return []


class Exploding:
    name = "exploding"

    def observe(self, event):
        raise RuntimeError("bug in a plug-in")

    def close_window(self, end):
        return []


class FlakyStore(SQLiteStore):
    """The real SQLite store, refusing its first ``failures`` incident writes (an outage)."""

    def __init__(self, path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures

    def upsert(self, incidents):
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("simulated outage")
        return super().upsert(incidents)


def _service(tmp_path, store, detectors, **kw):
    bus = SQLiteBus(tmp_path / "bus.db")
    pipeline = Pipeline(detectors, IncidentManager(store), window_s=60, event_store=store)
    return bus, DetectorService(bus.consumer("g"), bus.dead_letters(), pipeline, **kw)


def test_malformed_records_go_to_dead_letters_and_the_rest_is_processed(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    detector = ServerErrors()
    bus, service = _service(tmp_path, store, [detector])
    producer = bus.producer()
    good = [make_event(1000.0 + i, status=500 if i == 2 else 200) for i in range(4)]
    producer.send(encode_event(good[0]))
    producer.send(b"{not json")
    producer.send(b'{"schema": "inferwatch.event/9", "id": "x", "time": "2026-01-01T00:00:00Z"}')
    for ev in good[1:]:
        producer.send(encode_event(ev))
    assert service.run_once(poll_timeout=0) == 6
    assert service.stats.malformed == 2
    assert detector.seen == [e.id for e in good]
    letters = bus.dead_letters().list()
    assert {reason.split(":")[0] for _, _, reason, _ in letters} == {"not JSON", "schema"}
    assert len(store.search_events(EventQuery())) == 4
    assert len(store.list_incidents(IncidentQuery())) == 1
    assert bus.consumer("g").committed() == bus.end_offset()


def test_nothing_is_committed_past_an_unstored_incident(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="inferwatch")
    store = FlakyStore(tmp_path / "s.db", failures=2)
    bus, service = _service(tmp_path, store, [ServerErrors()])
    bus.producer().send(encode_event(make_event(1000.0, status=503)))
    worker = threading.Thread(target=service.run_once, kwargs={"poll_timeout": 0})
    worker.start()
    worker.join(10)
    assert not worker.is_alive()
    assert service.stats.retries["store"] == 2
    assert len(store.list_incidents(IncidentQuery())) == 1
    assert bus.consumer("g").committed() == bus.end_offset()
    said = [r.getMessage() for r in caplog.records if r.name.startswith("inferwatch")]
    assert sum("store failed, retrying in" in m for m in said) == 2
    assert sum("store succeeded again after" in m for m in said) == 1  # the end of the outage is said too


def test_stop_during_outage_leaves_batch_uncommitted_and_restart_files_it_once(tmp_path):
    store = FlakyStore(tmp_path / "s.db", failures=10_000)
    bus, service = _service(tmp_path, store, [ServerErrors()])
    bus.producer().send(encode_event(make_event(1000.0, status=503)))
    raised: list[BaseException] = []

    def run() -> None:
        try:
            service.run_once(0)
        except StoreUnavailable as exc:
            raised.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    while service.stats.retries["store"] == 0:
        worker.join(0.05)
    service.stop()
    worker.join(10)
    assert len(raised) == 1
    assert bus.consumer("g").committed() == 0
    # Restart with a healthy store: the event is redelivered and filed exactly once.
    healthy = SQLiteStore(tmp_path / "s.db")
    bus, again = _service(tmp_path, healthy, [ServerErrors()])
    again.run_once(poll_timeout=0)
    again.run_once(poll_timeout=0)
    incidents = healthy.list_incidents(IncidentQuery())
    assert len(incidents) == 1
    assert incidents[0].count == 1


def test_redelivery_after_crash_does_not_duplicate(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    bus, service = _service(tmp_path, store, [ServerErrors()])
    bus.producer().send(encode_event(make_event(1000.0, status=500, id="ev-crash")))
    service.run_once(poll_timeout=0)
    # Simulate a crash after storing but before committing: reset the committed offset.
    bus.consumer("g").commit({0: 0})
    bus, again = _service(tmp_path, SQLiteStore(tmp_path / "s.db"), [ServerErrors()])
    again.run_once(poll_timeout=0)
    incidents = store.list_incidents(IncidentQuery())
    assert len(incidents) == 1
    assert incidents[0].count == 1
    assert len(store.search_events(EventQuery())) == 1


def test_a_failing_detector_does_not_stop_the_others(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    good = ServerErrors()
    bus, service = _service(tmp_path, store, [Exploding(), good])
    bus.producer().send(encode_event(make_event(1000.0, status=500)))
    service.run_once(poll_timeout=0)
    assert service.pipeline.stats.detector_errors["exploding"] == 1
    assert len(store.list_incidents(IncidentQuery())) == 1


def test_windows_close_by_event_time_and_when_idle(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    detector = ServerErrors()
    now = [10_000.0]
    bus, service = _service(tmp_path, store, [detector], idle_close_s=5, wall_clock=lambda: now[0])
    producer = bus.producer()
    for ts in (1000.0, 1030.0, 1065.0, 1130.0):
        producer.send(encode_event(make_event(ts)))
    service.run_once(poll_timeout=0)
    assert [w.timestamp() for w in detector.windows] == [1020.0, 1080.0]
    service.run_once(poll_timeout=0)  # no records, but not idle long enough
    assert len(detector.windows) == 2
    now[0] += 6
    service.run_once(poll_timeout=0)
    assert [w.timestamp() for w in detector.windows] == [1020.0, 1080.0, 1140.0]


def test_waiting_for_partitions_is_not_idle_time(tmp_path):
    """A restarted batch run must not exit before the group hands it a partition."""
    store = SQLiteStore(tmp_path / "s.db")
    bus = SQLiteBus(tmp_path / "bus.db")
    bus.producer().send(encode_event(make_event(1000.0, status=500)))
    now = [0.0]

    class JoiningConsumer(SQLiteConsumer):
        """The real embedded consumer, given its partition only after 30 s (a group handover)."""

        def assignment(self):
            return {0} if now[0] >= 30 else set()

        def poll(self, max_records=500, timeout=1.0):
            now[0] += 5
            return super().poll(max_records, 0) if self.assignment() else []

    consumer = JoiningConsumer(bus.path, "g", bus.topic)
    pipeline = Pipeline([ServerErrors()], IncidentManager(store), window_s=60, event_store=store)
    service = DetectorService(consumer, bus.dead_letters(), pipeline, wall_clock=lambda: now[0])
    stats = service.run(max_idle_s=10)
    assert stats.records == 1
    assert len(store.list_incidents(IncidentQuery())) == 1


def test_incidents_resolve_when_traffic_stops(tmp_path):
    """No events, no windows closing: quiet incidents still resolve, event time running on with
    the wall clock from the newest event."""
    store = SQLiteStore(tmp_path / "s.db")
    now = [10_000.0]
    bus = SQLiteBus(tmp_path / "bus.db")
    pipeline = Pipeline([ServerErrors()], IncidentManager(store, resolve_after_s=600), window_s=60,
                        event_store=store)
    service = DetectorService(bus.consumer("g"), bus.dead_letters(), pipeline, idle_close_s=5,
                              wall_clock=lambda: now[0])
    bus.producer().send(encode_event(make_event(1000.0, status=500)))
    service.run_once(poll_timeout=0)
    (incident,) = store.list_incidents(IncidentQuery())
    assert incident.status == "open"
    for _ in range(9):  # 9 minutes of silence: not yet
        now[0] += 60
        service.run_once(poll_timeout=0)
    assert store.get(incident.id).status == "open"
    now[0] += 120
    service.run_once(poll_timeout=0)
    resolved = store.get(incident.id)
    assert resolved.status == "resolved"
    assert resolved.history[-1].note == "auto: quiet for 10m"


class WaitingDrift:
    """A drift collector that holds a window for a few polls (markers still to come)."""

    def __init__(self, polls: int) -> None:
        self.polls_left = polls
        self.polled = 0

    @property
    def waiting(self) -> int:
        return 1 if self.polls_left > 0 else 0

    def poll(self):
        self.polled += 1
        self.polls_left -= 1
        return []

    def commit(self) -> None:
        pass


def test_a_batch_run_does_not_end_while_drift_windows_wait_to_be_judged(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    now = [10_000.0]

    def clock():
        now[0] += 10
        return now[0]

    bus = SQLiteBus(tmp_path / "bus.db")
    pipeline = Pipeline([ServerErrors()], IncidentManager(store), window_s=60, event_store=store)
    drift = WaitingDrift(polls=6)
    service = DetectorService(bus.consumer("g"), bus.dead_letters(), pipeline, wall_clock=clock,
                              drift=drift)
    service.run(max_idle_s=15, poll_timeout=0)
    assert drift.waiting == 0          # it went on until the held window was judged
    assert drift.polled >= 6


def test_a_batch_run_that_ends_detects_and_commits_what_the_merger_still_holds(tmp_path):
    """The exit check reads the clock after run_once's idle close did: in between (a slow drift
    poll, here half a second) the run can turn idle enough to end while the partitions did not
    yet look quiet to the merger. What it still holds must not be left read but undetected."""
    from inferwatch.collectors.bus import BusRecord

    store = SQLiteStore(tmp_path / "s.db")
    now = [10_000.0]
    events = [(0, 0, make_event(1000.0, status=500)), (0, 1, make_event(1001.0)),
              (1, 0, make_event(1005.0, status=500))]  # partition 1 runs ahead: held back

    class TwoPartitions:
        def __init__(self) -> None:
            self.pending = [BusRecord("t", p, o, None, encode_event(e)) for p, o, e in events]
            self.committed: dict[int, int] = {}

        def poll(self, max_records=500, timeout=1.0):
            now[0] += 1.0
            out, self.pending = self.pending, []
            return out

        def commit(self, positions):
            self.committed.update(positions)

        def assignment(self):
            return {0, 1}

    class SlowDrift:
        waiting = 0

        def poll(self):
            now[0] += 0.5
            return []

        def commit(self) -> None:
            pass

    consumer = TwoPartitions()
    detector = ServerErrors()
    pipeline = Pipeline([detector], IncidentManager(store), window_s=60, event_store=store)
    service = DetectorService(consumer, None, pipeline, idle_close_s=5, wall_clock=lambda: now[0],
                              drift=SlowDrift())
    service.run(max_idle_s=5, poll_timeout=0)
    assert consumer.committed == {0: 2, 1: 1}
    assert sorted(detector.seen) == sorted(e.id for _, _, e in events)
    assert len(store.list_incidents(IncidentQuery())) == 1  # both 5xx, one subject


def _flood_service(tmp_path, interval_s: float, now: list[float]):
    """The service as ``inferwatch detect`` builds it on the embedded bus: request_rate, its store
    keeping checkpoints, ``interval_s`` between them (0: none)."""
    from inferwatch.detectors.registry import build_detectors

    store = SQLiteStore(tmp_path / "s.db")
    bus = SQLiteBus(tmp_path / "bus.db")
    pipeline = Pipeline(build_detectors(["request_rate"]), IncidentManager(store), window_s=60,
                        event_store=store)
    service = DetectorService(bus.consumer("g"), bus.dead_letters(), pipeline, idle_close_s=5,
                              wall_clock=lambda: now[0], checkpoints=store, checkpoint_interval_s=interval_s,
                              checkpoint_key="g:events")
    return bus, store, service


def _flood_then_restart(tmp_path, interval_s: float) -> tuple[list[Any], Any]:
    """Ordinary callers for ten windows, then a new caller floods the open window and the service
    is stopped (SIGTERM) before that window closes; a new service starts on the same bus and store."""
    now = [50_000.0]
    bus, store, service = _flood_service(tmp_path, interval_s, now)
    producer = bus.producer()
    t0 = 1_767_225_600.0
    ordinary = [make_event(t0 + minute * 60 + i, principal=f"user{i % 20}")
                for minute in range(11) for i in range(40)]
    flood = [make_event(t0 + 600 + 3 + i * 0.05, principal="flooder") for i in range(300)]
    before = sorted([*ordinary[:420], *flood], key=lambda e: e.ts)  # up to 20 s into minute 10
    producer.send_many([(encode_event(e), None) for e in before])
    while service.run_once(poll_timeout=0):
        now[0] += 1
    service.stop()
    service.run(max_idle_s=0)  # returns at once: the exit path of `inferwatch detect`
    service.close()
    # The rest of minute 10 comes after the restart, then minute 12 closes it.
    after = [*ordinary[420:], *(make_event(t0 + 720 + i, principal=f"user{i % 20}") for i in range(40))]
    producer.send_many([(encode_event(e), None) for e in after])
    bus, store, again = _flood_service(tmp_path, interval_s, now)
    now[0] += 30
    while again.run_once(poll_timeout=0):
        now[0] += 1
    now[0] += 10
    again.run_once(poll_timeout=0)
    found = store.list_incidents(IncidentQuery())
    return found, again


def test_a_restart_mid_window_judges_that_window_from_the_checkpoint(tmp_path):
    found, again = _flood_then_restart(tmp_path, interval_s=60)
    assert again.stats.restored_from == "g:events:all"
    assert [(i.detector, i.subject) for i in found] == [("request_rate", "principal:flooder")]
    assert "300 requests in one window" in found[0].title
    assert again.stats.skipped_restored == 0  # offsets were committed with the checkpoint


def test_without_checkpoints_the_window_open_at_a_restart_is_lost(tmp_path):
    # What checkpoints fix: offsets committed every batch, state dropped at the stop.
    found, again = _flood_then_restart(tmp_path, interval_s=0)
    assert again.stats.restored_from is None
    assert found == []


def test_records_read_again_after_a_crash_are_not_counted_twice(tmp_path):
    """Checkpoint saved, then the process dies before committing: the records the state already
    holds are read again and skipped, not counted a second time."""
    now = [50_000.0]
    bus, _, service = _flood_service(tmp_path, 60, now)
    producer = bus.producer()
    t0 = 1_767_225_600.0
    producer.send_many([(encode_event(make_event(t0 + i * 0.1, principal="busy")), None) for i in range(200)])
    while service.run_once(poll_timeout=0):
        now[0] += 1
    service.stop()
    service.run(max_idle_s=0)
    bus.consumer("g").commit({0: 0})  # as if the commit after the save never happened
    bus, _, again = _flood_service(tmp_path, 60, now)
    while again.run_once(poll_timeout=0):
        now[0] += 1
    assert again.stats.skipped_restored == 200
    tally = again.pipeline.detectors[0]._window["principal:busy"]
    assert tally.count == 200


def test_a_checkpoint_too_large_is_not_saved_but_offsets_are_committed(tmp_path, monkeypatch, caplog):
    from inferwatch.detectors import service as service_module

    monkeypatch.setattr(service_module, "MAX_CHECKPOINT_BYTES", 100)
    now = [50_000.0]
    bus, store, service = _flood_service(tmp_path, 60, now)
    bus.producer().send_many([(encode_event(make_event(1_767_225_600.0 + i, principal="p")), None)
                              for i in range(50)])
    while service.run_once(poll_timeout=0):
        now[0] += 1
    service.stop()
    service.run(max_idle_s=0)
    assert store.load_checkpoint("g:events:all") is None
    assert service.stats.checkpoints == 0
    assert bus.consumer("g").committed() == bus.end_offset()
    assert "over the 0 MB a checkpoint may take: not saved" in caplog.text


def test_a_checkpoint_older_than_the_committed_offsets_is_not_restored(tmp_path, caplog):
    """A checkpoint the group has committed past (a later save was skipped or went elsewhere)
    holds older state than what was read since: restoring it would count those events twice."""
    now = [50_000.0]
    bus, _, service = _flood_service(tmp_path, 60, now)
    producer = bus.producer()

    def send(start: float) -> None:
        producer.send_many([(encode_event(make_event(start + i, principal="p")), None) for i in range(50)])

    send(1_767_225_600.0)
    while service.run_once(poll_timeout=0):
        now[0] += 1
    service.stop()
    service.run(max_idle_s=0)
    send(1_767_225_700.0)
    bus.consumer("g").commit({0: bus.end_offset()})  # as a run that could not save its checkpoint does
    bus, _, again = _flood_service(tmp_path, 60, now)
    again.run_once(poll_timeout=0)
    assert again.stats.restored_from is None
    assert "the group has committed past it" in caplog.text


def test_a_checkpoint_that_cannot_be_read_starts_the_detectors_afresh(tmp_path, caplog):
    now = [50_000.0]
    bus, store, service = _flood_service(tmp_path, 60, now)
    store.save_checkpoint("g:events:all", b"\x93\x03\x00")  # not one
    bus.producer().send(encode_event(make_event(1_767_225_600.0, principal="p")))
    assert service.run_once(poll_timeout=0) == 1
    assert service.stats.restored_from is None
    assert service.pipeline.stats.events == 1
    assert "could not be read (the detectors start afresh)" in caplog.text


def test_records_skipped_after_a_restore_are_not_idle_time(tmp_path):
    """Reading back what the restored state holds takes wall time; the window it is in must not
    be closed as idle meanwhile (that would judge one window twice)."""
    now = [50_000.0]
    bus, _, service = _flood_service(tmp_path, 60, now)
    producer = bus.producer()
    producer.send_many([(encode_event(make_event(1_767_225_600.0 + i * 0.1, principal="p")), None)
                        for i in range(100)])
    while service.run_once(poll_timeout=0):
        now[0] += 1
    service.stop()
    service.run(max_idle_s=0)
    bus.consumer("g").commit({0: 0})  # a crash between the save and the commit
    bus, _, again = _flood_service(tmp_path, 60, now)
    again.batch_size = 10
    while again.run_once(poll_timeout=0):
        now[0] += 10  # slow reads: 100 s for the 100 records skipped, past idle_close_s (5 s)
    assert again.stats.skipped_restored == 100
    assert again.pipeline.stats.windows_closed == 0


class TwoPartitions:
    """A consumer of partitions 0 and 1 whose assignment a test changes, as a rebalance does."""

    def __init__(self, records: dict[int, list[Any]], committed: dict[int, int]) -> None:
        self.records, self.committed = records, committed
        self.owned = {0, 1}
        self.next = dict(committed)
        self.commits: list[dict[int, int]] = []

    def assignment(self) -> set[int]:
        return set(self.owned)

    def committed_offsets(self) -> dict[int, int]:
        return dict(self.committed)

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Any]:
        from inferwatch.collectors.bus import BusRecord

        out = []
        for p in sorted(self.owned):
            for offset, value in enumerate(self.records[p]):
                if offset >= self.next.get(p, 0):
                    out.append(BusRecord("t", p, offset, None, value))
                    self.next[p] = offset + 1
        return out

    def commit(self, positions: dict[int, int]) -> None:
        self.commits.append(dict(positions))
        self.committed.update({p: o for p, o in positions.items() if p in self.owned})

    def close(self) -> None:
        pass


def test_a_partition_lost_after_a_restore_is_not_committed_back_to_the_checkpoint(tmp_path):
    """Restored at {0: 10, 1: 10}; partition 1 goes to another member, which commits 1: 50; it
    comes back to this one: the next checkpoint must not commit 1: 10 (rewinding it)."""
    from inferwatch.detectors.registry import build_detectors

    def events(p: int, n: int) -> list[bytes]:
        return [encode_event(make_event(1_767_225_600.0 + i + p / 10, principal=f"p{p}")) for i in range(n)]

    store = SQLiteStore(tmp_path / "s.db")
    now = [50_000.0]

    def service_on(consumer: TwoPartitions) -> DetectorService:
        pipeline = Pipeline(build_detectors(["request_rate"]), IncidentManager(store), window_s=60)
        return DetectorService(consumer, SQLiteBus(tmp_path / "bus.db").dead_letters(), pipeline,
                               idle_close_s=5, wall_clock=lambda: now[0], checkpoints=store,
                               checkpoint_interval_s=60, checkpoint_key="g:t")

    first = service_on(TwoPartitions({0: events(0, 10), 1: events(1, 10)}, {}))
    while first.run_once(poll_timeout=0):
        now[0] += 1
    first.stop()
    first.run(max_idle_s=0)
    saved = first.consumer.commits[-1]  # the last event of one partition may still be held
    assert saved[0] >= 9
    assert saved[1] >= 9

    consumer = TwoPartitions({0: events(0, 20), 1: events(1, 10)}, dict(saved))
    again = service_on(consumer)
    again.run_once(poll_timeout=0)
    assert again.stats.restored_from == "g:t:0,1"
    consumer.owned = {0}  # a rebalance: partition 1 goes to another member ...
    again.run_once(poll_timeout=0)
    consumer.committed[1] = 50  # ... which reads on and commits
    consumer.next[1] = 50
    consumer.owned = {0, 1}  # and gives it back
    now[0] += 61
    while again.run_once(poll_timeout=0):
        now[0] += 1
    again.stop()
    again.run(max_idle_s=0)
    assert all(c.get(1, 50) >= 50 for c in consumer.commits), consumer.commits
    assert consumer.committed == {0: 20, 1: 50}


def test_an_input_key_no_detector_reads_is_warned_about_once_per_key(tmp_path, caplog):
    store = SQLiteStore(tmp_path / "s.db")
    detector = ServerErrors()
    bus, service = _service(tmp_path, store, [detector])
    producer = bus.producer()
    sent = []
    for i in range(5):
        event = json.loads(encode_event(make_event(1000.0 + i)))
        event["input"] = {"prompt": "Ignore all previous instructions", **({"tenant": "a"} if i >= 3 else {})}
        producer.send(json.dumps(event).encode())
        sent.append(event["id"])
    with caplog.at_level(logging.WARNING, logger="inferwatch.detectors.service"):
        assert service.run_once(poll_timeout=0) == 5
    assert detector.seen == sent  # processed, not dead-lettered
    assert service.stats.malformed == 0
    warned = [r.getMessage() for r in caplog.records if "read by no built-in detector" in r.getMessage()]
    assert len(warned) == 2
    assert "key=input.prompt did_you_mean=input.text first_event=" + sent[0] in warned[0]
    assert "key=input.tenant did_you_mean=input.features.tenant first_event=" + sent[3] in warned[1]
    assert service.stats.unread_keys.events == 5


def test_a_service_gone_silent_is_filed_while_no_event_comes(tmp_path):
    """The integrity detector's silence needs no event to be found: the idle service asks it."""
    from inferwatch.detectors.integrity import IntegrityDetector

    store = SQLiteStore(tmp_path / "s.db")
    now = [10_000.0]
    bus = SQLiteBus(tmp_path / "bus.db")
    pipeline = Pipeline([IntegrityDetector()], IncidentManager(store), window_s=60)
    service = DetectorService(bus.consumer("g"), bus.dead_letters(), pipeline, idle_close_s=5,
                              wall_clock=lambda: now[0])
    producer = bus.producer()
    for i in range(40 * 30):  # 40 minutes, 30 calls a minute
        producer.send(encode_event(make_event(1000.0 + 2 * i, service="chat")))
    while service.run_once(poll_timeout=0):
        pass
    assert service.stats.records == 1200
    assert store.list_incidents(IncidentQuery()) == []
    for _ in range(9):  # 9 minutes of nothing at all: not yet
        now[0] += 60
        service.run_once(poll_timeout=0)
    assert store.list_incidents(IncidentQuery()) == []
    now[0] += 120
    service.run_once(poll_timeout=0)
    (incident,) = store.list_incidents(IncidentQuery())
    assert (incident.kind, incident.subject, incident.detector) == ("integrity", "service:chat", "integrity")
    assert "has gone silent" in incident.title


def test_a_member_reading_some_partitions_tells_the_detectors(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    store = SQLiteStore(tmp_path / "s.db")
    bus = SQLiteBus(tmp_path / "bus.db")
    owned = [{0, 1}]
    told: list[bool] = []

    class Member(SQLiteConsumer):
        """The embedded consumer dressed as one member of a group over a four-partition topic."""

        def assignment(self):
            return owned[0]

        def partitions(self):
            return {0, 1, 2, 3}

    class Listening(ServerErrors):
        def partitions_changed(self, owned: list[int], complete: bool) -> None:
            told.append((owned, complete))

    pipeline = Pipeline([Listening()], IncidentManager(store), window_s=60)
    service = DetectorService(Member(bus.path, "g", bus.topic), bus.dead_letters(), pipeline)
    service.run_once(poll_timeout=0)
    owned[0] = {0, 1, 2, 3}  # the other member left: this one reads everything now
    service.run_once(poll_timeout=0)
    service.run_once(poll_timeout=0)
    assert told == [([0, 1], False), ([0, 1, 2, 3], True)]
    said = "event=seq_gaps_not_judged detectors=server_errors partitions=[0, 1] of=[0, 1, 2, 3]"
    assert said in caplog.text


def test_a_dead_lettered_event_of_an_agent_is_filed_as_refused_not_lost(tmp_path):
    from inferwatch.detectors.integrity import IntegrityDetector

    store = SQLiteStore(tmp_path / "s.db")
    bus = SQLiteBus(tmp_path / "bus.db")
    pipeline = Pipeline([IntegrityDetector()], IncidentManager(store), window_s=60)
    service = DetectorService(bus.consumer("g"), bus.dead_letters(), pipeline)
    producer = bus.producer()
    events = [make_event(1000.0 + i * 0.1, service="chat") for i in range(2000)]
    for i, event in enumerate(events):
        line = encode_event(event)
        if i == 500:  # a producer bug: a status as text
            line = line.replace(b'"status":200', b'"status":"OK"')
        producer.send(line)
    while service.run_once(poll_timeout=0):
        pass
    service.pipeline.store(service.pipeline.close_open_window(final=True))
    assert service.stats.malformed == 1
    (incident,) = store.list_incidents(IncidentQuery())
    assert incident.detector == "integrity"
    assert incident.evidence["refused_as_malformed"] == 1
    assert incident.evidence["lost_after_agent"] == 0
    assert "status" in next(iter(incident.evidence["refused_reasons"]))


def _silence_setup(tmp_path, consumer_class):
    from inferwatch.detectors.integrity import IntegrityDetector

    store = SQLiteStore(tmp_path / "s.db")
    now = [10_000.0]
    bus = SQLiteBus(tmp_path / "bus.db")
    producer = bus.producer()
    for i in range(40 * 30):
        producer.send(encode_event(make_event(1000.0 + 2 * i, service="chat")))
    pipeline = Pipeline([IntegrityDetector()], IncidentManager(store), window_s=60)
    consumer = consumer_class(bus.path, "g", bus.topic)
    service = DetectorService(consumer, bus.dead_letters(), pipeline, idle_close_s=5,
                              wall_clock=lambda: now[0])
    while service.run_once(poll_timeout=0):
        pass
    return store, service, now


def test_a_member_cut_off_from_its_bus_judges_no_silence(tmp_path, caplog):
    answering = [True]

    class Cut(SQLiteConsumer):
        def receiving(self):
            return answering[0]

    store, service, now = _silence_setup(tmp_path, Cut)
    answering[0] = False  # the brokers stop answering: no events, but no silence either
    for _ in range(20):
        now[0] += 60
        service.run_once(poll_timeout=0)
    assert store.list_incidents(IncidentQuery()) == []
    assert "event=bus_not_answering" in caplog.text
    answering[0] = True  # answering again, and still nothing comes: now that is silence
    now[0] += 60
    service.run_once(poll_timeout=0)
    assert [i.subject for i in store.list_incidents(IncidentQuery())] == ["service:chat"]


def test_a_member_left_without_partitions_judges_no_silence(tmp_path):
    owned = [{0}]

    class Member(SQLiteConsumer):
        def assignment(self):
            return owned[0]

    store, service, now = _silence_setup(tmp_path, Member)
    owned[0] = set()  # the group gave this member nothing: it reads no traffic at all
    for _ in range(20):
        now[0] += 60
        service.run_once(poll_timeout=0)
    assert store.list_incidents(IncidentQuery()) == []
