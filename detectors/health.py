"""The detector service's own health: ``/metrics`` for Prometheus and ``/healthz`` for probes.

Who watches the watcher: a detector service that has stopped reading, or hangs, files no
incident and pages nobody, which looks exactly like a quiet day. With ``detect.metrics_port`` set,
``inferwatch detect`` serves on ``detect.metrics_host`` (loopback by default):

* ``GET /metrics`` — the Prometheus text exposition (:func:`service_metrics`): records read,
  malformed, incident writes, commits, checkpoints, retries by operation, detector errors, windows
  closed, late events; when records last came (wall clock), the newest event time detected (its
  lag), whether a store or bus outage is being retried, whether the bus answers this member's
  fetches, the partitions it owns; and,
  when it pages, its notifier's notifications decided, delivered (by receiver), failed, retried,
  its turns that raised (and whether they still do) and whether it holds the paging lease;
* ``GET /healthz`` — ``200 ok`` while the service's loop (or its retrying of an outage) has
  turned within ``stall_after_s``; else ``503`` naming how long: a liveness probe restarts a
  process that hangs. An outage of Kafka or Elasticsearch is not a hang (the service waits on it,
  committing nothing, and says so in ``inferwatch_detect_retrying``): a restart would not help.

Alert on these in Prometheus (see docs/oncall.md), e.g. no record for a while although agents
send, or event-time lag growing.

The server is the standard library's (a thread per connection, each timed out after
:data:`CONNECTION_TIMEOUT_S`), answering from counters the service keeps anyway: it reads plain
ints and floats, never the detectors' state. ``metrics_host`` may be IPv4 or IPv6 (``::`` for
every address of an IPv6 pod).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Final

from inferwatch import __version__
from inferwatch.collectors.prometheus import CONTENT_TYPE, Exposition

if TYPE_CHECKING:
    from inferwatch.detectors.alerts.notifier import NotifierStats
    from inferwatch.detectors.service import DetectorService

log = logging.getLogger(__name__)

STALL_AFTER_S: Final = 300.0
"""``/healthz`` fails when the loop has not turned for this long (a detector window of millions
of events, or a checkpoint, takes seconds, not minutes)."""
RETRIED: Final = ("store", "commit", "checkpoint", "dead_letter")
"""Operations whose retries are always listed (0 until they happen), so alert rules find them."""
CONNECTION_TIMEOUT_S: Final = 10.0
"""A scraper's connection that sends nothing for this long is closed (no thread left waiting)."""


def service_metrics(service: DetectorService, *, group: str, notifier: NotifierStats | None = None) -> str:
    """The service's counters as Prometheus exposition text (``group`` labels every series), and
    its notifier's when it runs one."""
    stats, pipeline = service.stats, service.pipeline.stats
    text = Exposition({"group": group})

    def counter(name: str, help_text: str, value: int) -> None:
        text.counter(f"inferwatch_detect_{name}_total", help_text, value)

    counter("records", "Records read from the bus (events, malformed ones included).", stats.records)
    counter("malformed", "Records refused as malformed and dead-lettered.", stats.malformed)
    counter("incident_writes", "Incidents written to the store (new or updated).", stats.incidents_written)
    counter("commits", "Offset commits.", stats.commits)
    counter("checkpoints", "Detector checkpoints saved.", stats.checkpoints)
    counter("windows_closed", "Event-time windows closed.", pipeline.windows_closed)
    counter("findings", "Findings the detectors made.", pipeline.findings)
    counter("late_events", "Events older than the window open when they came.", pipeline.late_events)
    retried = dict.fromkeys(RETRIED, 0) | dict(stats.retries)
    text.family("inferwatch_detect_retries_total", "counter",
                "Failed tries of an operation on the store or bus, retried (nothing committed meanwhile).",
                [({"operation": what}, n) for what, n in sorted(retried.items())])
    text.family("inferwatch_detect_retrying", "gauge",
                "1 while an outage of the store or bus is being retried, by operation.",
                [({"operation": what}, int(service.retrying == what)) for what in sorted(retried)])
    text.family("inferwatch_detect_detector_errors_total", "counter",
                "Calls of a detector that raised (logged; the others go on).",
                [({"detector": d.name}, pipeline.detector_errors.get(d.name, 0))
                 for d in service.pipeline.detectors])
    if service.last_read_at is not None:
        text.gauge("inferwatch_detect_last_record_timestamp_seconds",
                   "When records last came from the bus (Unix time).", service.last_read_at)
    watermark = service.pipeline.watermark
    if watermark is not None:
        text.gauge("inferwatch_detect_event_time_seconds",
                   "The newest event time seen (Unix time): the wall clock minus this is the lag.", watermark)
    text.gauge("inferwatch_detect_loop_timestamp_seconds",
               "When the service last turned its loop or retried (Unix time).", service.alive_at)
    if service.bus_receiving is not None:
        text.gauge("inferwatch_detect_bus_receiving",
                   "1 while the bus answers this member's fetches, 0 when it does not (cut off from Kafka).",
                   int(service.bus_receiving))
    owned = service.owned_partitions
    if owned is not None:
        text.gauge("inferwatch_detect_partitions", "Partitions of the event topic this member reads.",
                   len(owned))
    text.gauge("inferwatch_detect_info", "The detector service's version.", 1, {"version": __version__})
    if notifier is not None:
        text.counter("inferwatch_notify_decided_total", "Notifications decided (the outbox).",
                     notifier.decided)
        text.family("inferwatch_notify_delivered_total", "counter", "Notifications delivered, by receiver.",
                    [({"receiver": name}, n) for name, n in sorted(notifier.by_receiver.items())])
        text.counter("inferwatch_notify_failed_total", "Notifications given up on (see `alerts log --status "
                     "failed`).", notifier.failed)
        text.counter("inferwatch_notify_retried_total", "Delivery attempts that failed and wait for a retry.",
                     notifier.retried)
        text.counter("inferwatch_notify_tick_errors_total", "Notifier turns that raised "
                     "(`event=notifier_error`: the store unreachable, say); nothing pages while they fail.",
                     notifier.tick_errors)
        text.gauge("inferwatch_notify_failing", "1 while the notifier's turns keep raising, 0 once one "
                   "succeeds.", int(notifier.failing_ticks > 0))
        text.gauge("inferwatch_notify_leading", "1 on the replica holding the paging lease (the one that "
                   "pages).", int(notifier.leading))
    return text.render()


def health(service: DetectorService, *, stall_after_s: float = STALL_AFTER_S,
           now: float | None = None) -> tuple[bool, str]:
    """Whether the service is alive (its loop or its retrying turned lately), and why not."""
    now = time.time() if now is None else now
    stalled = now - service.alive_at
    if stalled > stall_after_s:
        return False, (f"the detector loop has not turned for {stalled:.0f} s (over {stall_after_s:g} s): "
                       "a call that hangs")
    if service.retrying is not None:
        return True, f"ok (retrying {service.retrying}: the store or bus is out)"
    return True, "ok"


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class HealthServer:
    """``/metrics`` and ``/healthz`` on ``host:port`` in a daemon thread (port 0: any free one)."""

    def __init__(self, service: DetectorService, *, group: str, host: str = "127.0.0.1", port: int = 0,
                 stall_after_s: float = STALL_AFTER_S, clock: Callable[[], float] = time.time,
                 notifier: Callable[[], NotifierStats | None] = lambda: None) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            timeout = CONNECTION_TIMEOUT_S

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._answer(200, owner.metrics(), CONTENT_TYPE)
                elif path in ("/healthz", "/-/healthy"):
                    alive, why = health(service, stall_after_s=owner.stall_after_s, now=clock())
                    self._answer(200 if alive else 503, why + "\n", "text/plain; charset=utf-8")
                else:
                    self._answer(404, "not found: /metrics or /healthz\n", "text/plain; charset=utf-8")

            def _answer(self, status: int, body: str, content_type: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass  # a probe every few seconds is not worth a log line

        self.stall_after_s = stall_after_s
        self._service, self._group, self._clock, self._notifier = service, group, clock, notifier
        server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
        self._server = server_class((host, port), Handler)
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, name="inferwatch-health",
                                        daemon=True)
        self._thread.start()
        log.info("event=health_on address=http://%s:%s paths=/metrics,/healthz", self.host, self.port)

    def metrics(self) -> str:
        """The exposition now. The service's loop may add a key to a counter map while it is read
        (a first retry of some operation): read again then."""
        for _ in range(3):
            try:
                return service_metrics(self._service, group=self._group, notifier=self._notifier())
            except RuntimeError:  # "dictionary changed size during iteration"
                continue
        return service_metrics(self._service, group=self._group, notifier=self._notifier())

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
