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
