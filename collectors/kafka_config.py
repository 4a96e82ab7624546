"""Kafka client configuration and errors, shared by the producer, the consumer and the admin.

One function maps :class:`~inferwatch.collectors.settings.BusSettings` to kafka-python's keyword
arguments, so security settings (TLS, SASL) are spelled once; secrets pass through a string type
that prints as asterisks, because kafka-python logs its whole configuration at debug level.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import kafka.errors as kerr

from inferwatch.collectors.bus import BusUnavailable
from inferwatch.collectors.settings import BusSettings

log = logging.getLogger("inferwatch.collectors.kafka_bus")

Role = Literal["producer", "consumer", "admin"]


@dataclass(frozen=True, slots=True)
class KafkaTuning:
    """Client timeouts and limits; the defaults ride out a two-minute broker outage losslessly."""

    max_block_ms: int = 2_000  # longest send() waits for metadata of a topic it has not seen
    bootstrap_timeout_ms: int = 10_000  # first contact with the cluster when a client is built
    request_timeout_ms: int = 30_000
    delivery_timeout_ms: int = 120_000  # how long a buffered record is retried before it fails
    reconnect_backoff_max_ms: int = 1_000  # reconnect within about a second of a broker's return
    commit_timeout_ms: int = 10_000
    # kafka-python 3 has no buffer_memory: its accumulator grows without bound, so we cap it.
    max_buffer_bytes: int = 32 << 20


class _Masked(str):
    """A secret as kafka-python needs it (a ``str``) that shows asterisks when repr'd or logged."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'**********'"


def kafka_config(settings: BusSettings, role: Role, tuning: KafkaTuning | None = None) -> dict[str, Any]:
    """All bus settings as kafka-python keyword arguments for one client ``role``.

    The only place settings meet kafka-python. The SASL password is masked in any repr of the
    result, because kafka-python's admin client logs its whole configuration at debug level.

    >>> kafka_config(BusSettings(compression="none"), "producer")["compression_type"] is None
    True
    """
    t = tuning or KafkaTuning()
    config: dict[str, Any] = {
        "bootstrap_servers": list(settings.bootstrap_servers),
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": t.request_timeout_ms,
        "bootstrap_timeout_ms": t.bootstrap_timeout_ms,
        "reconnect_backoff_max_ms": t.reconnect_backoff_max_ms,
    }
    if settings.security_protocol.startswith("SASL"):
        password = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
        config["sasl_mechanism"] = settings.sasl_mechanism
        config["sasl_plain_username"] = settings.sasl_username
        config["sasl_plain_password"] = _Masked(password)
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(settings, name) is not None:
            config[name] = str(getattr(settings, name))
    if role == "producer":
        config.update(
            acks="all",
            enable_idempotence=True,  # the broker drops the duplicates that retries would create
            retries=2_147_483_647,  # bounded by delivery_timeout_ms, not by a count
            delivery_timeout_ms=t.delivery_timeout_ms,
            max_block_ms=t.max_block_ms,
            linger_ms=settings.linger_ms,
            compression_type=None if settings.compression == "none" else settings.compression,
            # an auto-created topic gets the broker's default partitions, silently breaking scale-out
            allow_auto_create_topics=False,
        )
    elif role == "consumer":
        config.update(enable_auto_commit=False, auto_offset_reset="earliest")
    return config


def forbid_topic_auto_creation(metadata: Any) -> None:
    # kafka-python 3.0.12 does not pass allow_auto_create_topics on to its cluster metadata, so a
    # send to (or a subscription on) a missing topic makes the broker create it with its default
    # partition count. Harmless once kafka-python passes the setting on itself.
    config = getattr(metadata, "config", None)
    if isinstance(config, dict):
        config["allow_auto_create_topics"] = False


def describe_error(exc: BaseException) -> str:
    text = str(exc)  # kafka-python 3 errors mostly name their class already
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"


def unavailable(servers: Sequence[str], doing: str, exc: BaseException) -> BusUnavailable:
    if _no_broker_answered(exc):  # what it was about to do is beside the point
        doing = "could not be reached"
    return BusUnavailable(
        f"Kafka at {','.join(servers)} {doing}: {describe_error(exc)}. Check that the brokers are up and "
        "reachable, and INFERWATCH_BUS__BOOTSTRAP_SERVERS and the security settings."
    )


def _no_broker_answered(exc: BaseException) -> bool:
    """kafka-python's 'Unable to bootstrap from [...]' (or NoBrokersAvailable in other versions)."""
    no_brokers = getattr(kerr, "NoBrokersAvailable", None)
    if no_brokers is not None and isinstance(exc, no_brokers):
        return True
    return isinstance(exc, kerr.KafkaTimeoutError) and "bootstrap" in str(exc).lower()


@contextmanager
def guard(servers: Sequence[str], doing: str) -> Iterator[None]:
    """Turn any kafka-python error in the block into BusUnavailable naming the servers."""
    try:
        yield
    except kerr.KafkaError as exc:
        raise unavailable(servers, doing, exc) from exc

