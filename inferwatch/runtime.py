"""Wiring: build the bus, the store and the pipeline that the settings ask for."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferwatch.collectors.bus import EventBus
from inferwatch.collectors.settings import Settings
from inferwatch.collectors.sqlite_bus import SQLiteBus
from inferwatch.detectors.incidents import Incident, IncidentManager
from inferwatch.detectors.pipeline import Pipeline
from inferwatch.detectors.registry import build_detectors
from inferwatch.detectors.service import DetectorService
from inferwatch.detectors.sqlite_store import SQLiteStore
from inferwatch.detectors.store import Store, StoreUnavailable

log = logging.getLogger("inferwatch.runtime")


def open_bus(settings: Settings) -> EventBus:
    """The event bus named by ``settings.bus`` (Kafka topics are created if missing)."""
    if settings.bus.kind == "kafka":
        from inferwatch.collectors.kafka_bus import KafkaBus

        bus = KafkaBus(settings.bus)
        bus.ensure_topics()
        return bus
    return SQLiteBus(settings.bus.path, topic=settings.bus.topic)


def open_store(settings: Settings, *, existing: bool = False) -> Store:
    """The incident and event store named by ``settings.store`` (set up if needed).

    ``existing``: for commands that only read (or change what is there), a store that does not
    exist yet is :class:`StoreUnavailable` rather than a new, empty one: run in the wrong
    directory, or with a mistyped ``--store``, they would otherwise answer "no incidents" and
    leave an empty database behind. Elasticsearch is then not set up either (no template or
    mapping is written), so an on-call key that may only read can list and search.
    """
    if settings.store.kind == "sqlite" and sqlite_kind(settings.store.path) == "bus":
        raise StoreUnavailable(
            f"{settings.store.path} is an embedded bus (the file --bus or bus.path names), not an incident "
            "store: pass the store's file (--store PATH, store.path)")
    if existing and settings.store.kind == "sqlite" and not Path(settings.store.path).exists():
        raise StoreUnavailable(
            f"no store at {settings.store.path} (store.path, INFERWATCH_STORE__PATH): nothing was recorded "
            "there; run where `inferwatch detect` or `inferwatch demo` ran, or pass --store PATH")
    if settings.store.kind == "elasticsearch":
        from inferwatch.detectors.es_store import ElasticsearchStore

        store = ElasticsearchStore(settings.store)
        if existing:
            store.check_ready()  # no setup: a reader's key may not manage templates
        else:
            store.setup()
        return store
    return SQLiteStore(settings.store.path)


def is_sqlite_file(path: str | Path) -> bool:
    """``path`` is a regular file holding an SQLite database. Only a regular file is looked at:
    reading a pipe's first bytes would take them from its reader."""
    try:
        if str(path) == ":memory:" or not Path(path).is_file():
            return False
        with open(path, "rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def sqlite_kind(path: str | Path) -> str | None:
    """``"bus"`` or ``"store"`` for an SQLite file of inferwatch's, by its tables; ``None`` for
    anything else (no such file, not SQLite, empty, another program's)."""
    import sqlite3

    if not is_sqlite_file(path):
        return None
    try:
        connection = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
        try:
            query = "SELECT name FROM sqlite_master WHERE type='table'"
            tables = {row[0] for row in connection.execute(query)}
        finally:
            connection.close()
    except (OSError, sqlite3.Error):
        return None
    if "incidents" in tables:
        return "store"
    if "log" in tables and "consumer_offsets" in tables:
        return "bus"
    return None


@dataclass
class Detection:
    """A pipeline and the store it writes to."""

    pipeline: Pipeline
    store: Store


def build_detection(
    settings: Settings,
    store: Store,
    *,
    keep_events: bool = True,
    on_incident: Callable[[Incident], None] | None = None,
) -> Detection:
    """Detectors, incident manager and pipeline configured from ``settings.detect``."""
    detectors = build_detectors(settings.detect.enabled, settings.detect.options)
    for detector in detectors:  # detectors that persist state (drift references) keep it in the store
        attach = getattr(detector, "attach_store", None)
        if attach is not None:
            attach(store)
    manager = IncidentManager(
        store,
        bucket_s=settings.detect.incident_bucket_s,
        resolve_after_s=settings.detect.resolve_after_s or None,
    )
    pipeline = Pipeline(
        detectors,
        manager,
        window_s=settings.detect.window_s,
        event_store=store if keep_events else None,
        on_incident=on_incident,
    )
    return Detection(pipeline, store)


def build_service(
    settings: Settings, *, on_incident: Callable[[Incident], None] | None = None
) -> DetectorService:
    """The detector service reading the configured bus and writing the configured store."""
    bus = open_bus(settings)
    detection = build_detection(settings, open_store(settings), on_incident=on_incident)
    consumer = bus.consumer(settings.detect.group, **_membership(settings))
    return DetectorService(
        consumer,
        bus.dead_letters(),
        detection.pipeline,
        batch_size=settings.detect.batch_size,
        idle_close_s=settings.detect.idle_close_s,
        drift=_drift_scale_out(settings, bus, consumer, detection.pipeline),
        checkpoints=detection.store,
        checkpoint_interval_s=settings.detect.checkpoint_interval_s,
        checkpoint_key=f"{settings.detect.group}:{settings.bus.topic}",
    )


def _drift_scale_out(settings: Settings, bus: EventBus, consumer: Any, pipeline: Pipeline) -> Any:
    """On Kafka, the drift detector publishes partial summaries and a collector judges them
    (docs/detectors/drift.md, "Scale-out"); on the embedded bus there is one process: it judges."""
    if settings.bus.kind != "kafka":
        return None
    from inferwatch.collectors.kafka_bus import KafkaBus
    from inferwatch.detectors.drift.detector import DriftDetector
    from inferwatch.detectors.drift.summaries import SummaryCollector, SummaryPublisher

    drift = next((d for d in pipeline.detectors if isinstance(d, DriftDetector)), None)
    if drift is None or not isinstance(bus, KafkaBus):
        return None
    topic = settings.bus.summaries_topic
    drift.publish = SummaryPublisher(bus.producer(topic), consumer.assignment)
    partitions = len(bus.end_offsets())
    return SummaryCollector(bus.consumer(f"{settings.detect.group}.drift", topic, **_membership(settings)),
                            drift.judge, partitions)


def _membership(settings: Settings) -> dict[str, Any]:
    """How a detector process is a member of its consumer groups (events and drift summaries)."""
    detect = settings.detect
    return {"instance_id": detect.instance_id, "session_timeout_s": detect.session_timeout_s}


class NotifierThread(threading.Thread):
    """The notifier (:mod:`inferwatch.detectors.alerts.notifier`) in a daemon thread of its own.

    The routing file is read (and checked) in the constructor, so a bad file fails the command
    at once; the store is opened inside the thread (a SQLite connection belongs to one thread).
    """

    def __init__(self, settings: Settings, path: Path) -> None:
        from inferwatch.detectors.alerts.config import load_alerting_config
        from inferwatch.detectors.alerts.notifier import check_senders

        super().__init__(name="inferwatch-notifier", daemon=True)
        self.settings = settings
        self.path = path
        self.config = load_alerting_config(path)
        check_senders(self.config, path)
        self._stop_event = threading.Event()
        self.notifier: Any = None
        self.ready = threading.Event()

    def run(self) -> None:
        from inferwatch.detectors.alerts.notifier import Notifier

        store = self._open_store()
        if store is None:
            self.ready.set()
            return
        try:
            self.notifier = Notifier(self.config, store, self.settings.alerting)
            self.ready.set()
            self.notifier.run(self._stop_event)
        finally:
            self.ready.set()
            if self.notifier is not None:
                self.notifier.close()
            close = getattr(store, "close", None)
            if close is not None:
                close()

    def _open_store(self) -> Store | None:
        """The store, retried while it cannot be reached (a notifier must not die of a store
        that is restarting); ``None`` when asked to stop first."""
        wait = 1.0
        while not self._stop_event.is_set():
            try:
                return open_store(self.settings)
            except StoreUnavailable as exc:
                log.warning("event=notifier_store_unavailable retry_in_s=%.0f error=%s", wait, exc)
                self._stop_event.wait(wait)
                wait = min(wait * 2, 60.0)
        return None

    def wait_settled(self, timeout: float) -> bool:
        """Wait until two more ticks have run and nothing is waiting (no group in its
        group_wait, no delivery pending); ``False`` when ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        self.ready.wait(timeout)
        notifier = self.notifier
        if notifier is None:
            return False
        start = notifier.ticks
        while time.monotonic() < deadline and self.is_alive():
            if notifier.ticks >= start + 2 and notifier.is_settled:
                return True
            time.sleep(0.1)
        return False

    def close(self, timeout: float = 30.0) -> None:
        """Stop after the current tick and wait (what is still due is delivered at the next
        start: it is in the store's outbox)."""
        self._stop_event.set()
        self.join(timeout)


def start_notifier(settings: Settings) -> NotifierThread | None:
    """Start the notifier when ``alerting.config`` names a routing file; else ``None``. Either way
    the log says so: a service that files incidents nobody is paged about should not be silent."""
    if settings.alerting.config is None:
        log.info("event=notifier_off no routing file (alerting.config, INFERWATCH_ALERTING__CONFIG or "
                 "--routes): incidents are stored, nobody is paged")
        return None
    thread = NotifierThread(settings, settings.alerting.config)
    kinds = {r.name: sorted({kind for kind, _, _ in r.integrations()}) for r in thread.config.receivers}
    receivers = ", ".join(f"{name} ({', '.join(k) or 'no integration: dropped'})"
                          for name, k in kinds.items())
    log.info("event=notifier_on routes=%s receivers=%s", settings.alerting.config, receivers)
    thread.start()
    return thread
