"""The agent's own counters, for Prometheus and for the logs.

:func:`prometheus_text` renders :meth:`inferwatch.agent.Agent.stats` in the Prometheus text
exposition format (version 0.0.4), ready to serve on ``/metrics``: the proxy's, or the
middleware's ``metrics_path``, or your own route::

    @app.get("/metrics")
    def metrics():
        return PlainTextResponse(get_agent().metrics_text(), media_type=CONTENT_TYPE)

Series (every one labelled ``service``):

* ``inferwatch_agent_events_captured_total`` (counter): events the agent recorded;
* ``inferwatch_agent_events_sent_total``: events the bus accepted (replayed ones too);
* ``inferwatch_agent_events_spooled_total``: events written to the disk spool;
* ``inferwatch_agent_events_replayed_total``: spooled events sent once the bus was back;
* ``inferwatch_agent_events_recovered_total``: events found in the spool at start, left there by
  an earlier process;
* ``inferwatch_agent_events_dropped_total{reason=…}``: events lost, by ``reason``:
  ``queue_full``, ``bus_error``, ``encode_error``, ``after_shutdown``, ``spool_full``,
  ``spool_error``, ``spool_corrupt``, ``shipper_error``;
* ``inferwatch_agent_queue_depth`` (gauge): events waiting in memory;
* ``inferwatch_agent_spool_depth`` and ``inferwatch_agent_spool_bytes`` (gauges): events and
  bytes waiting on disk;
* ``inferwatch_agent_bus_up`` (gauge): 1 when the last send succeeded, 0 while backing off;
* ``inferwatch_agent_internal_errors_total``: failures of inferwatch's own code, swallowed;
* ``inferwatch_agent_info{version=…}`` (gauge): always 1.

>>> from inferwatch.agent.shipper import ShipperStats
>>> from inferwatch.agent.core import AgentStats
>>> shipper = ShipperStats(captured=3, sent=2, dropped_queue_full=1, dropped_bus_error=0,
...                        dropped_encode_error=0, dropped_after_shutdown=0, queue_depth=0)
>>> text = prometheus_text(AgentStats(internal_errors=0, shipper=shipper), service="fraud-api")
>>> print(next(l for l in text.splitlines() if l.startswith("inferwatch_agent_events_sent")))
inferwatch_agent_events_sent_total{service="fraud-api"} 2
>>> stats_line(AgentStats(internal_errors=0, shipper=shipper)).split()[:4]
['event=agent_stats', 'captured=3', 'sent=2', 'dropped=1']
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from inferwatch.collectors.prometheus import CONTENT_TYPE, Exposition

if TYPE_CHECKING:
    from inferwatch.agent.core import AgentStats

__all__ = ["CONTENT_TYPE", "prometheus_text", "stats_line"]

_DROP_REASONS: Final = (
    "queue_full",
    "bus_error",
    "encode_error",
    "after_shutdown",
    "spool_full",
    "spool_error",
    "spool_corrupt",
    "shipper_error",
)


def prometheus_text(stats: AgentStats, *, service: str, version: str | None = None) -> str:
    """``stats`` in the Prometheus text exposition format, one ``service`` label on each series."""
    shipper = stats.shipper
    text = Exposition({"service": service})

    def counter(name: str, help_text: str, value: int) -> None:
        text.counter(f"inferwatch_agent_{name}_total", help_text, value)

    def gauge(name: str, help_text: str, value: float | int) -> None:
        text.gauge(f"inferwatch_agent_{name}", help_text, value)

    counter("events_captured", "Events the agent recorded.", shipper.captured)
    counter("events_sent", "Events the bus accepted, replayed ones included.", shipper.sent)
    counter("events_spooled", "Events written to the disk spool (bus unreachable).", shipper.spooled)
    counter("events_replayed", "Spooled events sent once the bus was back.", shipper.replayed)
    counter("events_recovered", "Events found in the spool at start, left by an earlier process.",
            shipper.recovered)
    text.family(
        "inferwatch_agent_events_dropped_total",
        "counter",
        "Events lost, by reason.",
        [({"reason": reason}, getattr(shipper, f"dropped_{reason}")) for reason in _DROP_REASONS],
    )
    gauge("queue_depth", "Events waiting in memory.", shipper.queue_depth)
    gauge("spool_depth", "Events waiting in the disk spool.", shipper.spool_depth)
    gauge("spool_bytes", "Bytes of spool files held.", shipper.spool_bytes)
    gauge("bus_up", "1 when the last send to the bus succeeded, 0 while backing off.", int(shipper.bus_up))
    counter("internal_errors", "Failures of inferwatch's own code, swallowed.", stats.internal_errors)
    text.gauge("inferwatch_agent_info", "The agent's version.", 1, {"version": version} if version else None)
    return text.render()


def stats_line(stats: AgentStats) -> str:
    """The counters as one ``key=value`` log line (drop reasons only when non-zero)."""
    shipper = stats.shipper
    parts = [
        "event=agent_stats",
        f"captured={shipper.captured}",
        f"sent={shipper.sent}",
        f"dropped={shipper.dropped}",
        f"queue_depth={shipper.queue_depth}",
        f"spooled={shipper.spooled}",
        f"replayed={shipper.replayed}",
        f"spool_depth={shipper.spool_depth}",
        f"bus_up={'true' if shipper.bus_up else 'false'}",
        f"internal_errors={stats.internal_errors}",
    ]
    for reason in _DROP_REASONS:
        value = getattr(shipper, f"dropped_{reason}")
        if value:
            parts.append(f"dropped_{reason}={value}")
    return " ".join(parts)
