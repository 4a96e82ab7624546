"""The agent: settings, tracing, pseudonyms and the shipper, tied together.

Integrations (the ASGI middleware, the ``@monitor`` decorator) drive an :class:`Agent` in two
steps: :meth:`Agent.begin` when a call starts (opens its span, notes the time and the caller)
and :meth:`Agent.record` when it is over (closes the span, builds one event per row, queues
them). Everything the agent does on the request path runs inside :meth:`Agent.guard`, which
swallows and counts its own failures so the model server never sees them.

>>> from inferwatch.collectors.settings import AgentSettings
>>> class ListProducer:
...     def __init__(self): self.sent = []
...     def send(self, value, key=None): self.sent.append(value)
...     def flush(self, timeout=None): pass
...     def close(self): pass
>>> agent = Agent(AgentSettings(service="svc", model="churn"), ListProducer())
>>> call = agent.begin(operation="predict")
>>> [e.agent.seq for e in agent.record(call, CallContent(), status=200)]
[0]
>>> agent.shutdown()
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from contextvars import Token
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from types import TracebackType
from typing import Any, NamedTuple

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, TracerProvider
from opentelemetry.util.types import AttributeValue

from inferwatch.agent.content import CallContent, Row, features_from, scalar_value
from inferwatch.agent.context import MAX_PSEUDONYM_CHARS, ContextValues, Scope, enter, leave, open_call_scope
from inferwatch.agent.forking import after_fork_in_child
from inferwatch.agent.metrics import prometheus_text, stats_line
from inferwatch.agent.principal import ProxyChain, Pseudonymizer, client_address, credential_from_headers
from inferwatch.agent.shipper import EventShipper, ShipperStats
from inferwatch.agent.spool import Spool
from inferwatch.agent.telemetry import CallFacts, CallTracer, resolve_tracer_provider
from inferwatch.collectors.bus import EventProducer
from inferwatch.collectors.event import AgentInfo, EventOutput, InferenceEvent
from inferwatch.collectors.ids import uuid7
from inferwatch.collectors.redaction import redact_path
from inferwatch.collectors.settings import (
    DEFAULT_HMAC_KEY,
    AgentSettings,
    BusSettings,
    CaptureMode,
    Settings,
    load_settings,
)

_log = logging.getLogger("inferwatch.agent")
MIN_HMAC_KEY_CHARS = 16
"""Shorter keys get a warning: a short key can be found by trying keys against known API keys."""


class AgentConfigError(ValueError):
    """The agent cannot be built from these settings; the message says what to change."""


def _distribution_version() -> str:
    try:
        return metadata.version("inferwatch")
    except metadata.PackageNotFoundError:
        return "0+unknown"


ContentSource = CallContent | Callable[[], CallContent]
"""What :meth:`Agent.record` takes: the call's content, or a function that reads it later."""


class Attachment(NamedTuple):
    """What :meth:`Call.attach` changed, for :meth:`Call.detach` to undo."""

    otel: Token[Context]
    scope: Token[Scope | None] | None


@dataclass(slots=True)
class Call:
    """One call in flight, from :meth:`Agent.begin` to :meth:`Agent.record`.

    ``credential`` (the raw API key or token) and ``client_ip`` (the raw address) stay in
    memory: they are pseudonymised and truncated when the events are built. ``principal``, when
    set, is a pseudonym already and is used as it is.
    """

    span: Span
    started_ns: int
    perf_start: float
    operation: str | None = None
    model: str | None = None
    endpoint: str | None = None
    principal: str | None = None
    credential: str | None = None
    client_ip: str | None = None
    scope: Scope | None = None
    span_attributes: Mapping[str, AttributeValue] | None = None
    """Span attributes set when the span ends, off the request path (not seen by samplers)."""

    @property
    def started(self) -> datetime:
        """When the call started (UTC)."""
        return datetime.fromtimestamp(self.started_ns / 1e9, UTC)

    def attach(self) -> Attachment:
        """Make the call current: its span (spans the model code opens become its children) and
        its context (:func:`~inferwatch.agent.set_principal` and the like reach it).

        Returns a token for :meth:`detach`, which must run in the same thread or task.
        """
        otel = otel_context.attach(trace.set_span_in_context(self.span))
        return Attachment(otel, enter(self.scope) if self.scope is not None else None)

    @staticmethod
    def detach(token: Attachment) -> None:
        """Undo :meth:`attach`."""
        if token.scope is not None:
            leave(token.scope)
        otel_context.detach(token.otel)


@dataclass(frozen=True, slots=True)
class AgentStats:
    """The agent's counters: its own swallowed failures, and the shipper's."""

    internal_errors: int
    shipper: ShipperStats


class Agent:
    """Captures inference calls as events and spans, and ships the events to the bus."""

    def __init__(
        self,
        settings: AgentSettings,
        producer: EventProducer,
        *,
        tracer_provider: TracerProvider | None = None,
        version: str | None = None,
    ) -> None:
        self.settings = settings
        self.version = version or _distribution_version()
        self.pseudonymizer = Pseudonymizer(settings.hmac_key, header=settings.principal_header)
        self.proxies = ProxyChain(settings.trusted_proxies)
        key = settings.hmac_key.get_secret_value()
        if key == DEFAULT_HMAC_KEY:
            _log.warning(
                "agent.hmac_key is the public default: set INFERWATCH_AGENT__HMAC_KEY to a secret "
                "so caller pseudonyms cannot be reversed"
            )
        elif len(key) < MIN_HMAC_KEY_CHARS:
            _log.warning(
                "agent.hmac_key has %d characters: set INFERWATCH_AGENT__HMAC_KEY to a random secret of "
                "at least %d (e.g. `openssl rand -hex 32`) so caller pseudonyms cannot be guessed back",
                len(key), MIN_HMAC_KEY_CHARS,
            )
        self.tracer = CallTracer(resolve_tracer_provider(settings.service, tracer_provider), self.version)
        spool = None
        if settings.spool_dir is not None:
            spool = Spool(settings.spool_dir, max_bytes=settings.spool_max_bytes, fsync=settings.spool_fsync)
        self._errors_lock = threading.Lock()
        self._internal_errors = 0
        self._last_logged: tuple[Any, ...] | None = None
        self._next_log = time.monotonic() + settings.stats_log_interval_s
        self.shipper = EventShipper(
            producer,
            queue_size=settings.queue_size,
            batch_size=settings.batch_size,
            flush_interval_s=settings.flush_interval_s,
            spool=spool,
            on_tick=self._log_stats,
        )
        self._new_identity()
        after_fork_in_child(self._new_identity)

    def _new_identity(self) -> None:
        # A forked child is a new agent instance: sharing the parent's id and seq would make
        # the two processes' events look like duplicates instead of two gap-free sequences.
        self.id = uuid7()
        self._seq = itertools.count()

    def next_seq(self) -> int:
        """The next sequence number of this agent instance (thread-safe, starts at 0)."""
        return next(self._seq)  # itertools.count.__next__ runs under the GIL: atomic

    def begin(
        self,
        *,
        operation: str | None = None,
        model: str | None = None,
        endpoint: str | None = None,
        headers: Mapping[str, str] | None = None,
        client_ip: str | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> Call:
        """Start a call: note its start, open its span, note the caller from ``headers``.

        ``headers`` are request headers with lower-case names; they give the principal and a
        remote parent (``traceparent``). ``operation`` and ``model``, when given, override what
        the bodies say (and are overridden by :func:`~inferwatch.agent.context`).
        """
        started_ns = time.time_ns()
        span = self.tracer.start(
            operation or "predict",
            model or self.settings.model,
            kind=kind,
            carrier=headers,
            start_ns=started_ns,
            attributes=attributes,
        )
        return Call(
            span=span,
            started_ns=started_ns,
            perf_start=time.perf_counter(),
            operation=operation,
            model=model,
            endpoint=endpoint,
            credential=credential_from_headers(headers, self.pseudonymizer.header) if headers else None,
            client_ip=self.proxies.client(client_ip, headers) if self.proxies.networks else client_ip,
            scope=open_call_scope(),
        )

    def record(
        self,
        call: Call,
        content: ContentSource,
        *,
        status: int | None = None,
        error: str | None = None,
        end: float | None = None,
    ) -> list[InferenceEvent]:
        """Finish ``call``: end its span, queue one event per row of ``content``.

        With a :class:`CallContent`, the events are built now and returned. With a function
        returning one, the function, the span's end and the events' build (pseudonyms,
        redaction) run later on the shipper thread, which keeps the request path short, and
        ``[]`` is returned. ``end`` is a :func:`time.perf_counter` reading of when the call
        finished (default now).
        """
        finished = time.perf_counter() if end is None else end
        if callable(content):
            build = functools.partial(self._build_later, call, content, status, error, finished)
            if not self.shipper.offer(build):
                self.next_seq()  # a call dropped before its build still leaves a gap in agent.seq
                call.span.end()
            return []
        values = call.scope.resolve() if call.scope is not None else None
        events = self._build(call, content, values, status, error, finished)
        for event in events:
            self.shipper.offer(event)
        return events

    def _build_later(
        self,
        call: Call,
        read: Callable[[], CallContent],
        status: int | None,
        error: str | None,
        finished: float,
    ) -> list[InferenceEvent]:
        try:
            values = call.scope.resolve() if call.scope is not None else None
            return self._build(call, read(), values, status, error, finished)
        except Exception as exc:  # on the shipper thread: counted, and the span still ends
            self.note_internal_error(exc)
            with contextlib.suppress(Exception):
                if call.span.is_recording():
                    call.span.end()
            return []

    def _build(
        self,
        call: Call,
        content: CallContent,
        values: ContextValues | None,
        status: int | None,
        error: str | None,
        finished: float,
    ) -> list[InferenceEvent]:
        seconds = max(0.0, finished - call.perf_start)
        operation = call.operation or content.operation or "predict"
        # What the application said (context) wins; then an explicit per-call model; then what
        # the request asked for (an OpenAI-style server serves many models); the configured
        # model is the default for bodies that do not say.
        model = (
            (values.model if values is not None else None)
            or call.model
            or content.request_model
            or content.response_model
            or self.settings.model
        )
        facts = CallFacts(
            operation=operation,
            request_model=content.request_model or model,
            response_model=content.response_model,
            max_tokens=content.max_tokens,
            input_tokens=content.input_tokens,
            output_tokens=content.output_tokens,
            finish_reasons=content.finish_reasons,
            status=status,
            error=error,
        )
        attributes = call.span_attributes
        if attributes and isinstance(attributes.get("url.path"), str):
            # Masked here, on the shipper thread, not where the middleware read it (paths with
            # ids in them miss the cache: about 13 µs each).
            attributes = {**attributes, "url.path": redact_path(str(attributes["url.path"]))}
        trace_id, span_id = self.tracer.finish(
            call.span, facts, call.started_ns + int(seconds * 1e9), attributes
        )
        shared = {
            "time": call.started,
            "duration_ms": seconds * 1000.0,
            "service": self.settings.service,
            "model": model,
            "model_version": self.settings.model_version,
            "operation": operation,
            "endpoint": redact_path(call.endpoint) if call.endpoint else call.endpoint,
            "principal": self._principal(call, values),
            "client_ip": _client_address(call.client_ip, self.settings.truncate_client_ip),
            "trace_id": trace_id,
            "span_id": span_id,
            "status": status,
            "error": error,
        }
        if values is not None and values.attributes:
            content.attributes.update(features_from(values.attributes.items(), self.settings.capture))
        return self._events(content, shared)

    def _label_captured(self, output: EventOutput) -> EventOutput:
        # A string label is a class name, or the text a function returned (@monitor on a
        # generator, a summariser's {"prediction": "..."}): it follows the string-feature rule.
        label, mode = output.label, self.settings.capture
        if not isinstance(label, str) or mode is CaptureMode.FULL:
            return output
        return output.model_copy(update={"label": scalar_value(label, mode)})

    def _principal(self, call: Call, values: ContextValues | None) -> str | None:
        if values is not None and values.principal is not None:
            if values.principal_is_pseudonym:
                return values.principal[:MAX_PSEUDONYM_CHARS]
            return self.pseudonymizer.pseudonym(values.principal)
        if call.principal is not None:
            return call.principal
        return self.pseudonymizer.pseudonym(call.credential) if call.credential else None

    def _events(self, content: CallContent, shared: dict[str, Any]) -> list[InferenceEvent]:
        rows = content.rows or [Row()]
        events = []
        for index, row in enumerate(rows):
            attributes = dict(content.attributes)
            if len(rows) > 1:  # the rows of one batched request share its trace
                attributes.update(batch_index=index, batch_size=len(rows))
            seq = self.next_seq()  # then the count: it includes every drop numbered before this one
            agent_info = AgentInfo(id=self.id, seq=seq, version=self.version,
                                   dropped=self.shipper.dropped_total())
            events.append(
                InferenceEvent(
                    id=uuid7(),
                    input=row.input,
                    output=self._label_captured(row.output),
                    attributes=attributes,
                    agent=agent_info,
                    **shared,
                )
            )
        return events

    def guard(self) -> AbstractContextManager[None]:
        """A context that swallows and counts any exception raised in inferwatch's own code."""
        return _Guard(self)

    def note_internal_error(self, exc: BaseException) -> None:
        """Count a failure of inferwatch's own code (logged once at warning, then at debug)."""
        with self._errors_lock:
            self._internal_errors += 1
            first = self._internal_errors == 1
        level = logging.WARNING if first else logging.DEBUG
        _log.log(level, "event=agent_internal_error error=%s", type(exc).__name__, exc_info=first)

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Send every queued (and spooled) event; ``False`` if that did not finish within ``timeout``."""
        return self.shipper.flush(timeout)

    def shutdown(self, timeout: float | None = 5.0) -> None:
        """Send what is queued (within ``timeout``), stop the shipper and close the producer."""
        self.shipper.shutdown(timeout)

    def stats(self) -> AgentStats:
        """A snapshot of the counters."""
        with self._errors_lock:
            errors = self._internal_errors
        return AgentStats(internal_errors=errors, shipper=self.shipper.stats())

    def metrics_text(self) -> str:
        """The counters in the Prometheus text format (see :mod:`inferwatch.agent.metrics`)."""
        return prometheus_text(self.stats(), service=self.settings.service, version=self.version)

    def _log_stats(self) -> None:
        # Called by the shipper thread after each round: one line per interval, and only when
        # something changed since the last line, so an idle agent stays quiet.
        interval = self.settings.stats_log_interval_s
        now = time.monotonic()
        if not interval or now < self._next_log:
            return
        self._next_log = now + interval
        stats = self.stats()
        key = (stats.internal_errors, dataclasses.astuple(stats.shipper))
        if key == self._last_logged:
            return
        self._last_logged = key
        _log.info("%s", stats_line(stats))


@functools.lru_cache(maxsize=4096)
def _client_address(address: str | None, truncate: bool) -> str | None:
    # Callers come back: parsing an address with ipaddress costs more than the rest of an event.
    return client_address(address, truncate=truncate)


class _Guard(AbstractContextManager[None]):
    __slots__ = ("_agent",)

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False  # KeyboardInterrupt, SystemExit, cancellation: not ours to stop
        with contextlib.suppress(Exception):  # counting must not become the failure it reports
            self._agent.note_internal_error(exc)
        return True


def producer_from_settings(bus: BusSettings) -> EventProducer:
    """The producer ``bus`` describes: the embedded SQLite log, or Kafka.

    Both are imported only when used, which keeps the agent's import light. The Kafka producer
    connects on its first send, so a model server may start before the brokers are reachable;
    the topics themselves are created by the detector service (``inferwatch detect``).
    """
    if bus.kind == "kafka":
        try:
            from inferwatch.collectors.kafka_bus import KafkaBus
        except ImportError as exc:
            raise AgentConfigError(
                "INFERWATCH_BUS__KIND=kafka needs kafka-python: pip install 'inferwatch[kafka]'"
            ) from exc
        return KafkaBus(bus).producer()
    from inferwatch.collectors.sqlite_bus import SQLiteBus

    return SQLiteBus(bus.path, topic=bus.topic).producer()


_lock = threading.RLock()
_agent: Agent | None = None
_atexit_registered = False


def configure(
    settings: Settings | AgentSettings | None = None,
    producer: EventProducer | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Agent:
    """Build the process-wide agent (replacing and shutting down any previous one).

    ``settings`` default to :func:`~inferwatch.collectors.settings.load_settings` (environment
    and config file). Without ``producer``, the bus settings decide where events go. The agent
    is flushed and shut down at interpreter exit.
    """
    global _agent
    with _lock:
        full = load_settings() if settings is None else settings
        agent_settings = full.agent if isinstance(full, Settings) else full
        if producer is None:
            bus = full.bus if isinstance(full, Settings) else load_settings().bus
            producer = producer_from_settings(bus)
        agent = Agent(agent_settings, producer, tracer_provider=tracer_provider)
        previous, _agent = _agent, agent
        _register_atexit()
    if previous is not None:
        previous.shutdown(timeout=2.0)
    return agent


def get_agent() -> Agent:
    """The process-wide agent; configured from the environment on first use if need be."""
    agent = _agent
    if agent is not None:
        return agent
    with _lock:
        return _agent if _agent is not None else configure()


class AgentLookup:
    """The agent a middleware or a decorated function records with: the one it was given, else
    the process-wide one (:func:`get_agent`, configured from the environment at first use).

    When that configuration fails, the caller's code runs unmonitored: said once in the log and
    not retried on every call (which would re-read the settings and reopen the bus each time,
    about 0.5 ms a call); an agent set up later with :func:`configure` is still picked up.
    """

    __slots__ = ("_failed", "_given")

    def __init__(self, agent: Agent | None = None) -> None:
        self._given = agent
        self._failed = False

    def __call__(self) -> Agent | None:
        if self._given is not None:
            return self._given
        if self._failed:
            return _agent
        try:
            return get_agent()
        except Exception as exc:  # mis-configured agent: serve unmonitored, say so once
            self._failed = True
            _log.warning("event=agent_unavailable error=%s detail=%s", type(exc).__name__, exc)
            return None


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_shutdown_at_exit)
        _at_multiprocessing_exit()
        _atexit_registered = True


class _ForkToken:
    """What :func:`multiprocessing.util.register_after_fork` keys its call on (a weak reference)."""


_FORK_TOKEN = _ForkToken()


def _at_multiprocessing_exit() -> None:
    """Flush at the end of a ``multiprocessing`` child too, which skips ``atexit``.

    Its processes (``Process``, ``Pool`` workers, fork or spawn) leave through ``os._exit``
    after running multiprocessing's own finalizers, so the events of their last fraction of a
    second were lost. A finalizer is registered in every such child: from the start for a
    spawned one (it configures its own agent, here, while its main module is imported under
    the child's name), after the fork for a forked one (the registry of finalizers is cleared
    in the child, the after-fork calls are not). A worker killed by ``Pool.terminate()`` (the
    end of ``with Pool()``) runs nothing at all: ``close()`` then ``join()`` lets it finish.
    """
    from multiprocessing import current_process, parent_process, util

    def finalize(_: object = None) -> None:
        util.Finalize(None, _shutdown_at_exit, exitpriority=100)

    if parent_process() is not None or current_process().name != "MainProcess":  # a child already
        finalize()
    util.register_after_fork(_FORK_TOKEN, finalize)


def _shutdown_at_exit() -> None:
    agent = _agent
    if agent is not None:
        agent.shutdown(timeout=2.0)
