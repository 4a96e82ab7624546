"""The detector service's /metrics and /healthz, served over real HTTP on loopback."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import pytest

from inferwatch.collectors.event import encode_event
from inferwatch.collectors.sqlite_bus import SQLiteBus
from inferwatch.detectors.health import HealthServer, health, service_metrics
from inferwatch.detectors.incidents import IncidentManager
from inferwatch.detectors.pipeline import Pipeline
from inferwatch.detectors.registry import build_detectors
from inferwatch.detectors.service import DetectorService
from inferwatch.detectors.sqlite_store import SQLiteStore
from inferwatch.detectors.store import StoreUnavailable
from inferwatch.testing import make_event


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _get(url: str) -> tuple[int, str, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def _series(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def _service(tmp_path, clock: Clock) -> tuple[SQLiteBus, DetectorService]:
    bus = SQLiteBus(tmp_path / "bus.db")
    store = SQLiteStore(tmp_path / "store.db")
    pipeline = Pipeline(build_detectors(["request_rate", "integrity"]), IncidentManager(store), window_s=60,
                        event_store=store)
    return bus, DetectorService(bus.consumer("g"), bus.dead_letters(), pipeline, wall_clock=clock)


def test_metrics_count_what_the_service_did_and_health_says_it_turns(tmp_path):
    clock = Clock(1_767_225_600.0)
    bus, service = _service(tmp_path, clock)
    producer = bus.producer()
    for i in range(5):
        producer.send(encode_event(make_event(1_767_225_000.0 + i)))
    producer.send(b"{not json")
    server = HealthServer(service, group="g", port=0, clock=clock)
    try:
        status, kind, before = _get(f"http://127.0.0.1:{server.port}/metrics")
        assert status == 200
        assert kind.startswith("text/plain; version=0.0.4")
        assert _series(before)['inferwatch_detect_records_total{group="g"}'] == 0
        assert 'inferwatch_detect_last_record_timestamp_seconds{group="g"}' not in _series(before)

        clock.now += 1
        assert service.run_once(poll_timeout=0) == 6
        series = _series(_get(f"http://127.0.0.1:{server.port}/metrics")[2])
        assert series['inferwatch_detect_records_total{group="g"}'] == 6
        assert series['inferwatch_detect_malformed_total{group="g"}'] == 1
        assert series['inferwatch_detect_last_record_timestamp_seconds{group="g"}'] == clock.now
        assert series['inferwatch_detect_event_time_seconds{group="g"}'] == 1_767_225_004.0
        assert series['inferwatch_detect_retries_total{group="g",operation="store"}'] == 0
        assert series['inferwatch_detect_retrying{group="g",operation="store"}'] == 0
        assert series['inferwatch_detect_detector_errors_total{group="g",detector="integrity"}'] == 0
        assert 'inferwatch_detect_info{group="g",version=' in "".join(series)

        assert _get(f"http://127.0.0.1:{server.port}/healthz")[:3:2] == (200, "ok\n")
        clock.now += 301  # the loop has not turned for longer than STALL_AFTER_S
        status, _, why = _get(f"http://127.0.0.1:{server.port}/healthz")
        assert status == 503
        assert "has not turned for 301 s" in why
        assert _get(f"http://127.0.0.1:{server.port}/nope")[0] == 404
    finally:
        server.close()
        service.close()


def test_an_outage_being_retried_is_alive_and_says_what_it_retries(tmp_path):
    clock = Clock(1_767_225_600.0)
    _, service = _service(tmp_path, clock)
    attempts = threading.Event()

    def store_down() -> None:
        clock.now += 400  # each try long after the last turn of the loop
        if attempts.is_set():
            service.stop()
        attempts.set()
        raise StoreUnavailable("elasticsearch unreachable")

    with pytest.raises(StoreUnavailable):
        service._retry("store", store_down)
    assert service.retrying == "store"
    assert health(service, now=clock.now) == (True, "ok (retrying store: the store or bus is out)")
    series = _series(service_metrics(service, group="g"))
    assert series['inferwatch_detect_retrying{group="g",operation="store"}'] == 1
    assert series['inferwatch_detect_retries_total{group="g",operation="store"}'] == 2
    service.close()


def test_a_port_in_use_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from inferwatch.cli import main

    _, service = _service(tmp_path, Clock(0.0))
    taken = HealthServer(service, group="g", port=0)
    try:
        monkeypatch.setenv("INFERWATCH_DETECT__METRICS_PORT", str(taken.port))
        assert main(["detect", "--bus", str(tmp_path / "b.db"), "--store", str(tmp_path / "s.db"),
                     "--exit-when-idle", "1"]) == 2
        assert f"detect.metrics_port: cannot serve on 127.0.0.1:{taken.port}" in capsys.readouterr().err
    finally:
        taken.close()
        service.close()


def test_the_notifier_counts_are_served_when_it_pages(tmp_path):
    from inferwatch.detectors.alerts.notifier import NotifierStats

    _, service = _service(tmp_path, Clock(0.0))
    assert "inferwatch_notify" not in service_metrics(service, group="g")
    stats = NotifierStats(decided=3, delivered=2, failed=1, retried=4, by_receiver={"oncall": 2},
                          tick_errors=5, failing_ticks=2, leading=True)
    series = _series(service_metrics(service, group="g", notifier=stats))
    assert series['inferwatch_notify_delivered_total{group="g",receiver="oncall"}'] == 2
    assert series['inferwatch_notify_failed_total{group="g"}'] == 1
    assert series['inferwatch_notify_retried_total{group="g"}'] == 4
    assert series['inferwatch_notify_decided_total{group="g"}'] == 3
    assert series['inferwatch_notify_tick_errors_total{group="g"}'] == 5
    assert series['inferwatch_notify_failing{group="g"}'] == 1
    assert series['inferwatch_notify_leading{group="g"}'] == 1
    service.close()


class CutOff:
    """The embedded bus's consumer, as Kafka's looks while the broker cannot be reached."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def poll(self, max_records, timeout):
        return []

    def receiving(self) -> bool:
        return False

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_member_cut_off_from_its_bus_says_so(tmp_path):
    bus = SQLiteBus(tmp_path / "bus.db")
    store = SQLiteStore(tmp_path / "store.db")
    clock = Clock(1_767_225_600.0)
    pipeline = Pipeline(build_detectors(["integrity"]), IncidentManager(store), window_s=60,
                        event_store=store)
    service = DetectorService(CutOff(bus.consumer("g")), bus.dead_letters(), pipeline, wall_clock=clock)
    assert "inferwatch_detect_bus_receiving" not in service_metrics(service, group="g")  # not asked yet
    service.run_once(poll_timeout=0)
    clock.now += 60  # a quiet minute: the service looks at why
    service.run_once(poll_timeout=0)
    assert _series(service_metrics(service, group="g"))['inferwatch_detect_bus_receiving{group="g"}'] == 0
    service.close()


def test_it_serves_on_ipv6_too(tmp_path):
    clock = Clock(0.0)
    _, service = _service(tmp_path, clock)
    server = HealthServer(service, group="g", host="::1", port=0, clock=clock)
    try:
        assert _get(f"http://[::1]:{server.port}/healthz")[0] == 200
    finally:
        server.close()
        service.close()
