"""The demo run: server and agent, detector service, traffic phases, and the verdict.

It exits non-zero when one of the expected incidents (input drift on the iris model, the
flooding caller, the prompt-injecting caller, the caller extracting the model, the events the
agent lost while its bus was cut) did not appear, so it doubles as an end-to-end check of the
spine.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inferwatch import render
from inferwatch.agent import Agent, InferwatchMiddleware
from inferwatch.collectors.bus import BusUnavailable, EventProducer
from inferwatch.collectors.settings import DEFAULT_HMAC_KEY, Settings
from inferwatch.demo.server import BackgroundServer, IrisModel, build_app
from inferwatch.demo.traffic import EXTRACTION_KEY, FLOOD_KEY, INJECTION_KEY, Phase, Traffic
from inferwatch.detectors.alerts.config import DEFAULT_GROUP_WAIT
from inferwatch.detectors.incidents import Incident
from inferwatch.detectors.service import DetectorService
from inferwatch.detectors.store import IncidentQuery
from inferwatch.runtime import NotifierThread, build_service, open_bus, open_store, start_notifier

# Short windows and a small warm-up so the whole story fits in well under a minute.
DEMO_DETECT: dict[str, Any] = {
    "window_s": 2.0,
    "idle_close_s": 1.0,
    "options": {
        "drift": {"reference_events": 600, "reference_sample_size": 500, "min_events": 100},
        "request_rate": {"min_requests": 30},
        # Every demo caller connects from loopback: one address for all 23 principals is the
        # demo's set-up, not key cycling.
        "auth_abuse": {"max_principals_per_ip": 50},
    },
}


class CutBus:
    """The demo's producer with a switch: while ``cut``, every send fails as an unreachable bus's
    would, so the agent drops what it cannot send (the demo keeps no spool) and counts it."""

    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer
        self.cut = False

    def send(self, value: bytes, key: str | None = None) -> None:
        self._check()
        self.producer.send(value, key)

    def send_many(self, records: list[tuple[bytes, str | None]]) -> None:
        self._check()
        send_many = getattr(self.producer, "send_many", None)
        if send_many is None:
            for value, key in records:
                self.producer.send(value, key)
        else:
            send_many(records)

    def _check(self) -> None:
        if self.cut:
            raise BusUnavailable("the demo cut the agent off its bus for a moment")

    def __getattr__(self, name: str) -> Any:  # flush, close, stats: the real producer's
        return getattr(self.producer, name)


def cut_for(bus: CutBus, run: Callable[[], Phase]) -> Phase:
    """Run a traffic phase with the agent cut off its bus."""
    bus.cut = True
    try:
        return run()
    finally:
        bus.cut = False


DEMO_HMAC_KEY = "inferwatch-demo-only-key"
"""The pseudonym key the demo uses when the settings keep the public default (which the agent
refuses outside the demo); printed, as it is no secret, so `inferwatch pseudonym` can be tried."""


def demo_settings(settings: Settings, home: str | None, distributed: bool = False) -> Settings:
    """The user's settings with the demo's service name and windows; ``distributed`` moves the
    bus to Kafka and the store to Elasticsearch (addresses from the user's settings)."""
    data = settings.model_dump()
    data["agent"].update(service="demo-model-server", model="iris")
    if data["agent"]["hmac_key"].get_secret_value() == DEFAULT_HMAC_KEY:
        data["agent"]["hmac_key"] = DEMO_HMAC_KEY  # the demo's callers are made up
    data["detect"] = {**data["detect"], **DEMO_DETECT,
                      "options": {**DEMO_DETECT["options"], **data["detect"]["options"]}}
    # Each run's detectors start afresh: restored from the last run's checkpoint, the flooding
    # caller's own baseline would hold the earlier floods, and after a few runs its flood would
    # look usual to it (request_rate accepts a lasting step-up; the demo would fail). The store
    # is kept, so a run still updates or reopens the incidents of the one before.
    data["detect"]["checkpoint_interval_s"] = 0.0
    if distributed:
        data["bus"]["kind"] = "kafka"
        data["store"]["kind"] = "elasticsearch"
    if home:
        data["bus"]["path"] = Path(home) / "bus.db"
        data["store"]["path"] = Path(home) / "store.db"
    return Settings.model_validate(data)


def _again(settings: Settings, user_settings: Settings) -> str:
    """What the hint's commands need in front to read the store the demo wrote: the environment
    for Elasticsearch when ``--distributed`` chose it, ``--store`` for a ``--home``."""
    store = settings.store
    if store.kind == "elasticsearch":  # also when the environment chose it: `make demo-distributed`
        # sets it for the demo's process only, not in the shell that reads the hint
        from inferwatch.detectors.es_store import redacted_urls  # never a password on screen

        urls = ",".join(redacted_urls([url]) for url in store.urls)
        prefix = ("" if store.index_prefix == "inferwatch"
                  else f"INFERWATCH_STORE__INDEX_PREFIX={store.index_prefix} ")
        return f"INFERWATCH_STORE__KIND=elasticsearch INFERWATCH_STORE__URLS={urls} {prefix}"
    if store.kind == "sqlite" and store.path != user_settings.store.path:
        return f"INFERWATCH_STORE__PATH={store.path} "
    return ""


def run_demo(
    user_settings: Settings, *, home: str | None = None, as_json: bool = False, distributed: bool = False
) -> int:
    """Run the demo; return the process exit code."""
    settings = demo_settings(user_settings, home, distributed)
    started = datetime.now(UTC)
    out = sys.stdout

    def say(text: str) -> None:
        if not as_json:
            print(text, flush=True)

    say(f"inferwatch demo: bus {_where(settings, 'bus')}, store {_where(settings, 'store')}")

    bus = open_bus(settings)
    producer = CutBus(bus.producer())
    agent = Agent(settings.agent, producer)
    expected = {
        "input drift": ("drift", "model:iris"),
        "flooding caller": ("request_rate", f"principal:{agent.pseudonymizer.pseudonym(FLOOD_KEY)}"),
        "prompt injection": ("prompt_injection", f"principal:{agent.pseudonymizer.pseudonym(INJECTION_KEY)}"),
        "model extraction": ("model_extraction",
                             f"principal:{agent.pseudonymizer.pseudonym(EXTRACTION_KEY)}"),
        "events lost": ("integrity", f"agent:{agent.id}"),
    }
    say(f"  callers: {FLOOD_KEY} is {expected['flooding caller'][1]}, "
        f"{INJECTION_KEY} is {expected['prompt injection'][1]}, "
        f"{EXTRACTION_KEY} is {expected['model extraction'][1]}")
    if settings.agent.hmac_key.get_secret_value() == DEMO_HMAC_KEY:
        say(f"  pseudonyms are keyed with the demo's own key: `echo {FLOOD_KEY} | "
            f"INFERWATCH_AGENT__HMAC_KEY={DEMO_HMAC_KEY} inferwatch pseudonym` gives the first")
    earlier = len(open_store(settings).list_incidents(IncidentQuery(limit=1000)))
    if earlier:
        afresh = ("" if settings.store.kind == "elasticsearch"
                  else "; `--home DIR` starts with an empty store")
        say(f"  the store already holds {earlier} incident(s) from earlier runs: a problem seen again "
            f"within the hour updates (or reopens) its incident (the detectors start afresh each "
            f"run){afresh}")
    announced: set[str] = set()

    def announce(incident: Incident) -> None:
        line = announcement(incident, announced, started)
        if line is not None:
            say(line)

    service = build_service(settings, on_incident=announce)
    notifier = start_notifier(settings)
    if notifier is not None:
        say(f"  paging with {notifier.path} (see `inferwatch alerts log` afterwards)")
    detector = threading.Thread(target=service.run, name="demo-detector", daemon=True)
    detector.start()
    model = IrisModel()
    with BackgroundServer(InferwatchMiddleware(build_app(model), agent=agent)) as server:
        say(f"  model server with the agent on {server.url}")
        traffic = Traffic(server.url, model.data)
        try:
            phases: list[tuple[str, Callable[[], Phase]]] = [
                ("normal traffic from 20 callers", lambda: traffic.normal(6.0)),
                ("input drift: petal length +2.5 cm, sepal width x1.5", lambda: traffic.drift(4.0)),
                ("normal traffic again", lambda: traffic.normal(2.0)),
                ("the agent loses its bus for a second: what it cannot send is dropped, and counted",
                 lambda: cut_for(producer, lambda: traffic.normal(1.0))),
                (f"{FLOOD_KEY} floods the model", lambda: traffic.flood(2.5)),
                (f"{INJECTION_KEY} tries prompt injections", traffic.injections),
                (f"{EXTRACTION_KEY} queries at random and sweeps a template",
                 lambda: traffic.extraction(4.0)),
            ]
            for title, run_phase in phases:
                say(f"phase: {title}")
                phase = run_phase()
                say(f"  {phase.requests} requests sent, {phase.errors} errors")
        finally:
            traffic.close()
    agent.shutdown(timeout=10.0)
    _drain(service, agent.stats().shipper.sent)
    service.stop()
    detector.join(timeout=30)
    service.close()
    if notifier is not None:
        _settle_alerts(notifier, say)

    store = open_store(settings)
    filed = store.list_incidents(IncidentQuery(since=started, limit=1000))
    missing = [name for name, (det, subject) in expected.items()
               if not any(i.detector == det and i.subject == subject for i in filed)]
    if as_json:
        for incident in filed:
            render.json_line(incident.public_dict(), out)
    else:
        say("")
        render.incidents_table(filed, out)
        again = _again(settings, user_settings)
        say(f"\n{service.stats.records} events processed; {len(filed)} incidents from this run "
            f"(see them again with `{again}inferwatch incidents list`, one in full "
            f"with `{again}inferwatch incidents show ID`)")
    if missing:
        print(f"inferwatch demo: FAILED, expected incidents did not appear: {', '.join(missing)}",
              file=sys.stderr)
        return 1
    say(f"demo: all {len(expected)} expected kinds of incident were filed")
    return 0


def announcement(incident: Incident, announced: set[str], started: datetime) -> str | None:
    """The line the demo prints for an incident written, once per incident and run (``announced``
    holds the ids already announced): filed by this run (its first finding is from after
    ``started``; a held finding can make that first write count two), or one from an earlier run
    seen again."""
    if incident.id in announced:
        return None
    announced.add(incident.id)
    if incident.first_seen >= started:
        what = "incident filed"
    elif any(entry.action == "reopened" and entry.at >= started for entry in incident.history):
        what = "incident reopened (filed by an earlier run and resolved since)"
    else:
        what = f"incident updated (filed by an earlier run; {incident.count} findings so far)"
    return f"  >> {what}: [{incident.severity}] {incident.title} ({incident.subject})"


def _settle_alerts(notifier: NotifierThread, say: Callable[[str], None]) -> None:
    """Let the notifier page what the run filed: wait out group_wait and pending deliveries."""
    waits = [r.group_wait for _, r in notifier.config.route.walk() if r.group_wait is not None]
    longest = max([DEFAULT_GROUP_WAIT, *waits])
    settled = notifier.wait_settled(timeout=longest + 30.0)
    notifier.close()
    stats = notifier.notifier.stats if notifier.notifier is not None else None
    if stats is not None:
        say(f"  notifier: {stats.decided} notifications decided, {stats.delivered} delivered, "
            f"{stats.retried} retries, {stats.failed} failed"
            + ("" if settled else " (some were still waiting when the demo ended)"))


def _drain(service: DetectorService, sent: int, timeout: float = 30.0) -> None:
    """Wait until the detector has read what the agent sent and judged the last window."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (service.stats.records >= sent and service.pipeline.clock.open_end is None
                and not service.drift_waiting):  # on Kafka, drift is judged from the summaries topic
            return
        time.sleep(0.1)


def _where(settings: Settings, part: str) -> str:
    if part == "bus":
        if settings.bus.kind == "kafka":
            return f"Kafka {','.join(settings.bus.bootstrap_servers)} topic {settings.bus.topic}"
        return str(settings.bus.path)
    if settings.store.kind == "elasticsearch":
        return f"Elasticsearch {','.join(settings.store.urls)} prefix {settings.store.index_prefix}"
    return str(settings.store.path)
