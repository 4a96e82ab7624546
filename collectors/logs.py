"""Logging set-up shared by every inferwatch process (the CLI and the proxy's event worker).

One line per record, ``key=value`` after the level and logger, and the client libraries kept to
what inferwatch does not already say better.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["configure_logging", "quieten_clients"]

FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"


def configure_logging(level: str) -> None:
    """Log to stderr at ``level`` (``info``, ``debug``...) in inferwatch's format, clients quietened."""
    logging.basicConfig(level=level.upper(), format=FORMAT, stream=sys.stderr)
    quieten_clients()


class _MissingTopicNoise(logging.Filter):
    """kafka-python logs an ERROR for every metadata refresh that lacks a topic (about ten a
    second while a producer waits); inferwatch names a missing topic once, and creates it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "not found in cluster metadata" not in record.getMessage()


class _RepeatLimit(logging.Filter):
    """At most one record a minute per logger and message template of the client libraries.

    Through an outage kafka-python logs an ERROR per connection attempt (410 in 50 s in an
    on-call walk-through, the service's own line naming the fix buried among them). The first
    of each kind passes, the rest of the minute are counted, and the next that passes says how
    many were not shown. A filter on the handler: a logger's own filters do not see its
    children's records.
    """

    def __init__(self, prefixes: tuple[str, ...] = ("kafka", "elastic_transport"), every_s: float = 60.0,
                 ) -> None:
        super().__init__()
        self.prefixes, self.every_s = prefixes, every_s
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes) or record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        last = self._last.get(key)
        if last is not None and record.created - last < self.every_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        if len(self._last) >= 1024:  # templates are few; a flood of distinct ones starts afresh
            self._last.clear()
            self._held.clear()
        self._last[key] = record.created
        held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} [{held} more like this in the last {self.every_s:.0f} s not shown]"
        return True


def quieten_clients() -> None:
    """Client libraries log every request or connection at INFO, which drowns what matters;
    Kafka's and Elasticsearch's clients also warn on every retry of an outage (hundreds of lines,
    tracebacks included), which inferwatch's own messages already name once. At debug level
    everything is kept."""
    if logging.root.level <= logging.DEBUG:
        return
    for chatty, least in (("httpx", logging.WARNING), ("httpcore", logging.WARNING),
                          ("kafka", logging.ERROR), ("elastic_transport", logging.ERROR)):
        logging.getLogger(chatty).setLevel(max(least, logging.root.level))
    cluster = logging.getLogger("kafka.cluster")
    if not any(isinstance(f, _MissingTopicNoise) for f in cluster.filters):
        cluster.addFilter(_MissingTopicNoise())
    for handler in logging.root.handlers:
        if not any(isinstance(f, _RepeatLimit) for f in handler.filters):
            handler.addFilter(_RepeatLimit())
