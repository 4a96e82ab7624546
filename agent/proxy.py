"""The sidecar reverse proxy: put any model server behind it and every call becomes events.

``inferwatch agent proxy --listen 0.0.0.0:8080 --upstream http://127.0.0.1:8000`` (see
docs/proxy.md). The proxy is an HTTP/1.1 server on asyncio with the ``httptools`` parser
(llhttp, the parser of Node.js: strict about framing, so request smuggling through it fails)
and a pool of keep-alive connections to one fixed upstream.

What it promises the model server and its clients:

* **one fixed upstream, never an open proxy**: requests are sent to ``--upstream`` whatever
  their ``Host`` header says; absolute-form targets (``GET http://elsewhere/ HTTP/1.1``) and
  ``CONNECT`` are refused;
* **bytes through unchanged**: the status, the headers (less the hop-by-hop ones, RFC 9110
  §7.6.1) and the body, both ways. A request body is read whole before it is sent upstream (so
  the size limit applies to chunked uploads too); a response body is written to the client
  chunk by chunk as it arrives, so server-sent events stream;
* **its own errors are JSON and say who answered**: 400 (malformed request), 413 (body over
  ``--max-request-bytes``), 502 (upstream unreachable or broken), 504 (upstream timeout), each
  with ``{"error": {"type", "message", …}}`` and an ``x-inferwatch-proxy-error`` header;
* **nothing of inferwatch on the request path**: after the last response byte has been written,
  the call is handed to a recorder (:mod:`inferwatch.agent.proxy_record`), by default an event
  worker process that reads it into events (span, protocol bodies, redaction, pseudonym) and
  ships them through the agent's bounded queue. The recorder never blocks: when it is behind or
  down, calls are dropped and counted, never waited for, and its failures never reach a client.

``{prefix}healthz``, ``{prefix}livez`` and ``{prefix}metrics`` (prefix ``/-/`` by default) are
answered by the proxy itself and never forwarded, so they cannot shadow the model server's own
``/health`` or ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import select
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol, cast
from urllib.parse import urlsplit

from inferwatch.agent.core import AgentStats
from inferwatch.agent.proxy_metrics import CONTENT_TYPE, ProxyMetrics
from inferwatch.agent.proxy_protocols import Route, route_for
from inferwatch.agent.proxy_record import CallRecord

try:
    import httptools
except ImportError:  # pragma: no cover - the [proxy] extra installs it
    httptools = None  # type: ignore[assignment]

_log = logging.getLogger("inferwatch.agent.proxy")

# RFC 9110 §7.6.1 (plus the legacy Proxy-Connection): these describe one connection, not the
# message, so they are not forwarded. The framing headers are re-made for each side.
HOP_BY_HOP: Final = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"trailer",
    b"upgrade", b"proxy-authenticate", b"proxy-authorization",
})
_DROP_FROM_REQUEST: Final = HOP_BY_HOP | {b"content-length", b"expect"}
_DROP_FROM_RESPONSE: Final = HOP_BY_HOP
_NO_BODY_STATUSES: Final = frozenset({204, 304})
_PAUSE_AFTER_PIPELINED: Final = 8
_SMALL_BODY: Final = 64 * 1024
# Sent once more when a reused upstream connection closes with nothing answered after the request
# was written: the methods RFC 9110 §9.2.2 lets a client retry (as Go's net/http and nginx do).
# Any other (a POST: a generation) may be what the upstream was working on when it died.
_REPEATABLE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# After answering a request it will not read (413, 400, 501...), the proxy reads and drops what the
# client still sends before closing, as nginx's lingering close does: closing with unread bytes
# makes the kernel reset the connection, and a client still writing its body (Python's
# http.client, requests) then sees a reset instead of the answer. Until the client closes, this
# much is dropped, this long passes, or it sends nothing for _LINGER_IDLE_S.
_LINGER_S: Final = 30.0
_LINGER_IDLE_S: Final = 5.0
_LINGER_BYTES: Final = 256 << 20
DEFAULT_EXCLUDED_PATHS: Final = frozenset({
    "/health", "/healthz", "/livez", "/readyz", "/ping", "/metrics", "/favicon.ico",
    "/v2/health/live", "/v2/health/ready",  # KServe v2 / Triton
})
SETTING_HINTS: Final = {
    "max_request_bytes": "--max-request-bytes (INFERWATCH_PROXY__MAX_REQUEST_BYTES)",
    "upstream_timeout_s": "--upstream-timeout (INFERWATCH_PROXY__UPSTREAM_TIMEOUT_S)",
    "connect_timeout_s": "--connect-timeout (INFERWATCH_PROXY__CONNECT_TIMEOUT_S)",
}


class ProxyError(ValueError):
    """The proxy cannot start with this configuration; the message says what to change."""


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """How the proxy listens, where it forwards, and its limits."""

    upstream: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = 8080
    admin_prefix: str = "/-/"
    max_request_bytes: int = 32 * 1024 * 1024
    connect_timeout_s: float = 5.0
    upstream_timeout_s: float = 300.0
    """Longest wait for the response headers, and between two chunks of a response body."""
    client_idle_timeout_s: float = 75.0
    """A client connection with no request in progress is closed after this long."""
    pool_idle_s: float = 4.0
    """Idle upstream connections are closed after this long (below common server keep-alives)."""
    max_idle_connections: int = 64
    principal_from_address: bool = True
    """Callers without a credential get the pseudonym of their address (not of a header)."""
    forwarded_for: bool = False
    """Append the client address to ``X-Forwarded-For`` (off: the request goes as sent)."""
    exclude_paths: frozenset[str] = DEFAULT_EXCLUDED_PATHS
    """Paths forwarded and counted but not recorded as events (health checks, scrapes)."""


@dataclass(frozen=True, slots=True)
class Upstream:
    """The one server the proxy forwards to."""

    host: str
    port: int
    tls: bool
    base_path: str
    host_header: bytes

    @classmethod
    def parse(cls, url: str) -> Upstream:
        """``http://host:port[/base]`` or ``https://…``; anything else raises :class:`ProxyError`."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ProxyError(f"--upstream {url!r} must be an http:// or https:// URL with a host")
        if parts.query or parts.fragment or parts.username:
            raise ProxyError(f"--upstream {url!r} must not carry a query, fragment or credentials")
        tls = parts.scheme == "https"
        try:
            port = parts.port or (443 if tls else 80)
        except ValueError as exc:
            raise ProxyError(f"--upstream {url!r}: {exc}") from None
        default_port = port == (443 if tls else 80)
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        return cls(host, port, tls, parts.path.rstrip("/"),
                   (shown if default_port else f"{shown}:{port}").encode("ascii"))


class _Request:
    """One parsed client request."""

    __slots__ = (
        "body", "body_bytes", "client_ip", "headers", "keep_alive", "method", "path", "perf_start",
        "start_ns", "target", "version",
    )

    def __init__(self, start_ns: int, perf_start: float, client_ip: str | None) -> None:
        self.method = ""
        self.target = b""
        self.path = ""
        self.version = "1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.body_bytes = 0
        self.keep_alive = True
        self.start_ns = start_ns
        self.perf_start = perf_start
        self.client_ip = client_ip

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


@dataclass(slots=True)
class _Reject:
    """A request the proxy answers itself (413, 400, …), in its place in the pipeline."""

    request: _Request | None
    status: int
    kind: str
    message: str
    extra: dict[str, Any]


class _Exchange:
    """One request forwarded upstream and its response coming back."""

    __slots__ = (
        "capture", "capture_limit", "chunked_out", "client", "close_after", "content_encoding",
        "content_type", "done", "error", "finished", "head_sent", "last_activity", "request",
        "response_bytes", "status",
    )

    def __init__(self, client: _ClientConnection, request: _Request, capture_limit: int) -> None:
        self.client = client
        self.request = request
        self.capture_limit = capture_limit
        self.capture = bytearray()
        self.response_bytes = 0
        self.status: int | None = None
        self.head_sent = False
        self.chunked_out = False
        self.close_after = not request.keep_alive
        self.content_type = ""
        self.content_encoding = ""
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.error: str | None = None
        self.finished: float | None = None
        self.last_activity = 0.0


def _readable(transport: asyncio.BaseTransport | None) -> bool:
    """Whether an idle connection's socket has something to read (the upstream's end of stream)
    that the event loop has not handled yet: a connection closed as idle just before it is reused."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or not hasattr(select, "poll"):
        return False
    try:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True  # a socket that cannot be polled is not one to send a request on


class _Pool:
    """Keep-alive connections to the upstream, most recently used first."""

    def __init__(self, proxy: ProxyServer) -> None:
        self.proxy = proxy
        self.idle: deque[_UpstreamConnection] = deque()
        self._ssl = ssl.create_default_context() if proxy.upstream.tls else None
        self._sweeper: asyncio.TimerHandle | None = None

    async def acquire(self) -> tuple[_UpstreamConnection, bool]:
        """An idle connection (``True``: reused) or a new one; raises on connect failure."""
        cutoff = time.monotonic() - self.proxy.config.pool_idle_s
        while self.idle:
            conn = self.idle.pop()
            self.proxy.metrics.upstream_idle = len(self.idle)
            if conn.closed:
                continue
            if conn.idle_since <= cutoff:  # past its idle time (the sweep may not have run yet): the
                conn.close()                 # upstream's keep-alive may be closing it right now
                continue
            if _readable(conn.transport):  # an end of stream (or stray bytes) not handled yet: not reusable
                conn.close()
                continue
            return conn, True
        loop = asyncio.get_running_loop()
        upstream = self.proxy.upstream
        _, conn = await asyncio.wait_for(
            loop.create_connection(
                lambda: _UpstreamConnection(self), upstream.host, upstream.port, ssl=self._ssl,
                server_hostname=upstream.host if self._ssl else None,
            ),
            self.proxy.config.connect_timeout_s,
        )
        return conn, False

    def release(self, conn: _UpstreamConnection) -> None:
        if conn.closed:
            return
        if len(self.idle) >= self.proxy.config.max_idle_connections:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self.idle.append(conn)
        self.proxy.metrics.upstream_idle = len(self.idle)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self.proxy.config.pool_idle_s, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        cutoff = time.monotonic() - self.proxy.config.pool_idle_s
        while self.idle and self.idle[0].idle_since <= cutoff:
            self.idle.popleft().close()
        self.proxy.metrics.upstream_idle = len(self.idle)
        if self.idle:
            self._sweeper = asyncio.get_running_loop().call_later(self.proxy.config.pool_idle_s, self._sweep)

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None


class _UpstreamConnection(asyncio.Protocol):
    """One connection to the upstream; writes each response straight to its client."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.metrics = pool.proxy.metrics
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: _Exchange | None = None
        self.closed = False
        self.idle_since = 0.0
        self.received_any = False
        self.request_written = False  # the whole request is out of our buffer, in the kernel's
        self.close_delimited = False
        self.skip_body = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._out: list[bytes] = []
        self._informational = False
        self._reading_paused = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport.set_write_buffer_limits(high=0)  # resume_writing: the request is all written
        self.metrics.upstream_connections += 1

    def pause_writing(self) -> None:
        pass  # the request is written whole from memory: nothing to hold back

    def resume_writing(self) -> None:
        self.request_written = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.metrics.upstream_connections -= 1
        exchange = self.exchange
        if exchange is None:
            return
        if exchange.status is not None and self.close_delimited:
            self._flush()
            self._complete(exchange, reusable=False)  # the body ran to the end of the connection
        else:
            self._fail(exchange, "upstream_closed" if exc is None else "upstream_reset")

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:  # bytes nobody asked for: this connection is not to be trusted
            self.close()
            return
        self.received_any = True
        exchange.last_activity = asyncio.get_running_loop().time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._flush()
            if self.exchange is not None:  # not an exchange that already completed in this read
                self._fail(self.exchange, "upstream_protocol_error")
            self.close()
            return
        self._flush()

    # httptools callbacks
    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        if exchange is None:  # a second response to one request: refused in data_received
            raise httptools.HttpParserError("response without a request")
        status = self.parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: informational, not forwarded
            self._informational = True
            self._headers, self._reason = [], b""
            return
        exchange.status = status
        request = exchange.request
        client_http11 = request.version == "1.1"
        drop = _DROP_FROM_RESPONSE | _connection_tokens(self._headers)
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, self._reason or b"")]
        has_length = False
        chunked_in = False
        for name, value in self._headers:
            lower = name.lower()
            if lower == b"transfer-encoding":
                chunked_in = True
            if lower in drop:
                continue
            if lower == b"content-length":
                has_length = True
            elif lower == b"content-type":
                exchange.content_type = value.decode("latin-1").lower()
            elif lower == b"content-encoding":
                exchange.content_encoding = value.decode("latin-1").strip().lower()
            lines.append(b"%s: %s\r\n" % (name, value))
        no_body = status in _NO_BODY_STATUSES or request.method == "HEAD"
        self.skip_body = request.method == "HEAD"
        if has_length and chunked_in:
            has_length = False  # RFC 9112 §6.3: Transfer-Encoding wins; the length is not to be sent
            lines = [line for line in lines if not line.lower().startswith(b"content-length:")]
        self.close_delimited = not has_length and not chunked_in and not no_body
        if not has_length and not no_body:
            if client_http11:
                exchange.chunked_out = True
                lines.append(b"transfer-encoding: chunked\r\n")
            else:
                exchange.close_after = True
        if exchange.close_after:
            lines.append(b"connection: close\r\n")
        elif not client_http11:
            lines.append(b"connection: keep-alive\r\n")
        lines.append(b"\r\n")
        self._out.append(b"".join(lines))
        exchange.head_sent = True
        if self.skip_body:  # a HEAD response: llhttp would wait for the body its length announces
            self._flush()
            self._complete(exchange, reusable=False)

    def on_body(self, chunk: bytes) -> None:
        exchange = self.exchange
        if exchange is None or self._informational:
            return
        size = len(chunk)
        exchange.response_bytes += size
        if exchange.error is not None and exchange.response_bytes > exchange.capture_limit:
            self.abandon(exchange.error)  # read on for the record (the client left): no more than that
            return
        room = exchange.capture_limit - len(exchange.capture)
        if room > 0:
            exchange.capture += chunk[:room]
        if exchange.chunked_out:
            self._out.append(b"%x\r\n" % size)
            self._out.append(chunk)
            self._out.append(b"\r\n")
        else:
            self._out.append(chunk)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        exchange = self.exchange
        if exchange is None:
            return
        if exchange.chunked_out:
            self._out.append(b"0\r\n\r\n")
        self._flush()
        self._complete(exchange, reusable=self.parser.should_keep_alive())

    # own
    def send(self, exchange: _Exchange, head: bytes, body: bytes | bytearray) -> None:
        assert self.transport is not None
        self.exchange = exchange
        self.received_any = False
        self._headers, self._reason = [], b""
        exchange.last_activity = asyncio.get_running_loop().time()
        if not body:
            self.transport.write(head)
        elif len(body) <= _SMALL_BODY:
            self.transport.write(head + body)
        else:
            self.transport.writelines((head, body))
        self.request_written = self.transport.get_write_buffer_size() == 0

    def _flush(self) -> None:
        if not self._out:
            return
        out, self._out = self._out, []
        exchange = self.exchange
        if exchange is not None:
            exchange.client.write(b"".join(out) if len(out) > 1 else out[0])

    def _complete(self, exchange: _Exchange, *, reusable: bool) -> None:
        self.exchange = None
        exchange.finished = time.perf_counter()
        if not exchange.done.done():
            exchange.done.set_result(None)
        if reusable and not self.closed:
            self.resume_reading()  # paused for a slow client: the next exchange must read
            self.pool.release(self)
        else:
            self.close()

    def _fail(self, exchange: _Exchange, error: str) -> None:
        self.exchange = None
        exchange.error = exchange.error or error
        exchange.finished = time.perf_counter()
        if not exchange.done.done():
            exchange.done.set_result(None)

    def finish_for_record(self) -> bool:
        """The client left while the answer was coming back: whether to read the rest of it anyway
        (and record it) rather than :meth:`abandon` it. Only a whole answer already made is read
        on: its head is in, it is not a stream of events (a model still generating is stopped),
        and it is no longer than what an event records. Clients that read the status and hang up
        (``urllib`` without ``read()``) otherwise left events with no output, and a secret in it
        unseen by output_leak."""
        exchange = self.exchange
        if (exchange is None or exchange.status is None or "event-stream" in exchange.content_type
                or exchange.response_bytes >= exchange.capture_limit):
            return False
        exchange.error = "client_disconnected"
        self.resume_reading()  # paused for the client, maybe: nobody to wait for now
        return True

    def abandon(self, error: str) -> None:
        """Give up on the response in progress (the upstream sees the connection close)."""
        exchange, self.exchange = self.exchange, None
        self.close()
        if exchange is not None:
            self._fail(exchange, error)

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _ClientConnection(asyncio.Protocol):
    """One client connection: parses requests, forwards them in order, writes the answers."""

    def __init__(self, proxy: ProxyServer) -> None:
        self.proxy = proxy
        self.config = proxy.config
        self.metrics = proxy.metrics
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip: str | None = None
        self.queue: deque[_Request | _Reject] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.request: _Request | None = None
        self.upstream: _UpstreamConnection | None = None
        self.closing = False
        self.paused = False
        self.write_paused = False
        self.last_activity = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._too_large = False
        self._upgrade = False
        self.broken = False
        self.closing_after_queue = False
        self.lingering = False
        self._linger_left = 0
        self._linger_until = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) and peer else None
        self.metrics.client_connections += 1
        self.proxy.connections.add(self)
        self.last_activity = self.loop.time()
        self._idle_timer = self.loop.call_later(self.config.client_idle_timeout_s, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.metrics.client_connections -= 1
        self.proxy.connections.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        # Stop the model's work for a client that left (or was cut off), unless the answer is
        # already made and only needs reading for the event.
        upstream = self.upstream
        if upstream is not None and (self.proxy.shutting_down or not upstream.finish_for_record()):
            upstream.abandon("proxy_shutdown" if self.proxy.shutting_down else "client_disconnected")

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        if self.broken:
            if self.lingering:
                self._linger_left -= len(data)
                if self._linger_left <= 0:
                    self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject_upgrade()
        except httptools.HttpParserError as exc:
            self._reject_malformed(exc)
        if self._too_large:
            self._too_large = False
            self._reject_too_large()
        if len(self.queue) >= _PAUSE_AFTER_PIPELINED and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        # The client closed its side: like nginx (proxy_ignore_client_abort off), take it as the
        # client giving up, so a model still generating for it is stopped (connection_lost).
        return None

    def pause_writing(self) -> None:  # the client reads slower than the upstream answers
        self.write_paused = True
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.upstream is not None:
            self.upstream.resume_reading()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.request = _Request(time.time_ns(), time.perf_counter(), self.client_ip)

    def on_url(self, url: bytes) -> None:
        if self.request is not None:
            self.request.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.request is not None:
            self.request.headers.append((name, value))

    def on_headers_complete(self) -> None:
        request = self.request
        if request is None:
            return
        request.method = self.parser.get_method().decode("ascii", "replace")
        request.version = self.parser.get_http_version()
        request.keep_alive = self.parser.should_keep_alive()
        target = request.target
        request.path = target.split(b"?", 1)[0].decode("latin-1")
        if self.parser.should_upgrade():
            # Refused once feed_data raises HttpParserUpgrade; llhttp completes the message first,
            # which must not queue it for the upstream (the client would get two answers).
            self._upgrade = True
            return
        length = request.header(b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.config.max_request_bytes:
            self._too_large = True
            return
        expect = request.header(b"expect")
        if expect is not None and expect.lower() == b"100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        request = self.request
        if request is None or self._too_large:
            return
        request.body_bytes += len(chunk)
        if request.body_bytes > self.config.max_request_bytes:
            self._too_large = True
            return
        request.body += chunk

    def on_message_complete(self) -> None:
        if self._too_large or self._upgrade:
            return  # answered with 413 / 501 once feed_data returns
        request, self.request = self.request, None
        if request is not None:
            self._enqueue(request)

    # queueing and the worker
    def _enqueue(self, item: _Request | _Reject) -> None:
        self.queue.append(item)
        if self.worker is None:
            self.worker = self.loop.create_task(self._work())

    async def _work(self) -> None:
        try:
            while self.queue and not self.closing:
                item = self.queue.popleft()
                if isinstance(item, _Reject):
                    self._answer_reject(item)
                else:
                    await self.proxy.handle(self, item)
                if self.paused and len(self.queue) < _PAUSE_AFTER_PIPELINED and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
        except Exception as exc:  # a bug of ours: close this connection, keep the proxy serving
            _log.warning("event=proxy_internal_error error=%s", type(exc).__name__, exc_info=True)
            self.close()
        finally:
            self.worker = None
            self.last_activity = self.loop.time()
            if self.closing_after_queue and not self.queue and not self.lingering:
                self.close()

    def _check_idle(self) -> None:
        self._idle_timer = None
        if self.closing:
            return
        idle_for = self.loop.time() - self.last_activity
        if self.worker is None and not self.queue and idle_for >= self.config.client_idle_timeout_s:
            self.close()
            return
        wait = max(0.1, self.config.client_idle_timeout_s - idle_for)
        self._idle_timer = self.loop.call_later(wait, self._check_idle)

    # local answers
    def _reject_too_large(self) -> None:
        request, self.request = self.request, None
        limit = self.config.max_request_bytes
        self._stop_reading()
        self._enqueue(_Reject(request, 413, "request_too_large",
                              f"the request body is larger than the proxy's limit of {limit} bytes",
                              {"limit_bytes": limit, "setting": SETTING_HINTS["max_request_bytes"]}))

    def _reject_malformed(self, exc: Exception) -> None:
        request, self.request = self.request, None
        if request is not None and not request.method and request.target.startswith(b"/"):
            # The request line was read but the headers were not acceptable (say both
            # Content-Length and Transfer-Encoding): still a request worth an event.
            with contextlib.suppress(Exception):
                request.method = self.parser.get_method().decode("ascii", "replace")
            request.path = request.target.split(b"?", 1)[0].decode("latin-1")
        head_parsed = request is not None and bool(request.method)
        self._stop_reading()
        self._enqueue(_Reject(request if head_parsed else None, 400, "bad_request",
                              f"malformed HTTP request: {exc}", {}))

    def _reject_upgrade(self) -> None:
        request, self.request = self.request, None
        self._stop_reading()
        if request is not None and request.method == "CONNECT":
            self._enqueue(_Reject(request, 405, "method_not_allowed",
                                  "CONNECT is refused: this is a reverse proxy for one fixed upstream", {}))
        else:
            self._enqueue(_Reject(request, 501, "upgrade_not_supported",
                                  "protocol upgrades (WebSocket, h2c) are not proxied", {}))

    def _stop_reading(self) -> None:
        self.broken = True
        self.closing_after_queue = True
        if self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def _answer_reject(self, reject: _Reject) -> None:
        self.metrics.rejected[reject.kind] += 1
        self.write_error(reject.status, reject.kind, reject.message, close=True, linger=True, **reject.extra)
        if reject.request is not None:
            self.proxy.record_later(reject.request, reject.status, reject.kind, None)

    def _linger(self) -> None:
        """Close after an answer to a request left unread without losing the answer: end our side
        (the client reads the answer, then end of stream), drop what the client still sends, and
        close when it closes or at the first of :data:`_LINGER_S`, :data:`_LINGER_BYTES` or
        :data:`_LINGER_IDLE_S` without a byte."""
        transport = self.transport
        if transport is None or self.closing or not transport.can_write_eof():
            self.close()
            return
        transport.write_eof()
        self.lingering = True
        self._linger_left = _LINGER_BYTES
        self._linger_until = self.loop.time() + _LINGER_S
        if self.paused:
            self.paused = False
            transport.resume_reading()
        self.loop.call_later(_LINGER_IDLE_S, self._linger_check)

    def _linger_check(self) -> None:
        if self.closing:
            return
        now = self.loop.time()
        if now >= self._linger_until or now - self.last_activity >= _LINGER_IDLE_S:
            self.close()
        else:
            self.loop.call_later(min(_LINGER_IDLE_S, self._linger_until - now), self._linger_check)

    # writing
    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(data)

    def write_response(self, status: int, reason: bytes, content_type: str, body: bytes, *,
                       close: bool, linger: bool = False,
                       extra_headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        head = [b"HTTP/1.1 %d %s\r\n" % (status, reason),
                b"content-type: %s\r\n" % content_type.encode("latin-1"),
                b"content-length: %d\r\n" % len(body)]
        head.extend(b"%s: %s\r\n" % pair for pair in extra_headers)
        if close:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        self.write(b"".join(head) + body)
        if close:
            self._linger() if linger else self.close()

    def write_error(self, status: int, kind: str, message: str, *, close: bool = False, linger: bool = False,
                    **extra: Any) -> None:
        body = json.dumps({"error": {"type": kind, "message": message, **extra}, "proxy": "inferwatch"})
        self.write_response(status, _REASONS.get(status, b"Error"), "application/json", body.encode(),
                            close=close, linger=linger,
                            extra_headers=((b"x-inferwatch-proxy-error", kind.encode()),))

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


_REASONS: Final = {
    400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed", 413: b"Content Too Large",
    501: b"Not Implemented", 502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Timeout",
    200: b"OK",
}


class Recorder(Protocol):
    """Where finished calls go (:mod:`inferwatch.agent.proxy_record`)."""

    @property
    def capture_limit(self) -> int:
        """Bytes of each body to keep for reading."""

    async def start(self) -> None:
        """Get ready to take calls."""

    def submit(self, record: CallRecord, route: Route) -> None:
        """Take one finished call; never blocks, may drop (and count)."""

    def metrics_text(self) -> str:
        """The agent's counters in the Prometheus text format."""

    def stats(self) -> AgentStats | None:
        """The agent's counters, if known yet."""

    async def close(self) -> None:
        """Send what is held and stop."""


class ProxyServer:
    """The proxy: listens, forwards to its one upstream, and hands each call to ``recorder``.

    ``recorder`` may be ``None`` (forward and count, record nothing). Use :meth:`start` inside a
    running event loop, then :meth:`close`; :func:`run` does both around ``serve_forever``.
    """

    def __init__(self, config: ProxyConfig, recorder: Recorder | None) -> None:
        if httptools is None:
            raise ProxyError("the proxy needs httptools: pip install 'inferwatch[proxy]'")
        prefix = config.admin_prefix
        if not prefix.startswith("/") or not prefix.endswith("/") or prefix == "/":
            raise ProxyError(f"--admin-prefix {prefix!r} must start and end with '/' and name a path of "
                             "its own, e.g. /-/ ('/' would take every path from the model server)")
        bad = sorted(path for path in config.exclude_paths if not path.startswith("/"))
        if bad:
            raise ProxyError(f"--exclude-path {bad[0]!r} must be a path starting with '/', e.g. /{bad[0]}")
        self.config = config
        self.upstream = Upstream.parse(config.upstream)
        self.recorder = recorder
        self.metrics = ProxyMetrics()
        self.connections: set[_ClientConnection] = set()
        self.shutting_down = False
        """Set by :meth:`close`: requests it cuts short are ``proxy_shutdown``, not the client leaving."""
        self._pool: _Pool | None = None
        self._server: asyncio.Server | None = None
        self._base = self.upstream.base_path.encode("latin-1")
        self._routes: dict[str, Route] = {}

    @property
    def port(self) -> int:
        """The port actually listened on (useful with ``port=0``)."""
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Bind and start accepting connections."""
        self._pool = _Pool(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ClientConnection(self), self.config.host, self.config.port, backlog=1024,
        )

    async def serve_forever(self) -> None:
        """Serve until cancelled."""
        assert self._server is not None
        await self._server.serve_forever()

    async def close(self, grace_s: float = 5.0) -> None:
        """Stop accepting, let requests in progress finish (within ``grace_s``), close the rest."""
        self.shutting_down = True
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + grace_s
        while any(c.worker is not None for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
        if self._pool is not None:
            self._pool.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    # the request path
    async def handle(self, client: _ClientConnection, request: _Request) -> None:
        """Forward one request and stream its response back; then schedule its recording."""
        if request.path.startswith(self.config.admin_prefix):
            await self._admin(client, request)
            return
        if request.method == "CONNECT":
            client.metrics.rejected["method_not_allowed"] += 1
            client.write_error(405, "method_not_allowed",
                               "CONNECT is refused: this is a reverse proxy for one fixed upstream",
                               close=True)
            self.record_later(request, 405, "method_not_allowed", None)
            return
        if not request.target.startswith(b"/"):
            client.metrics.rejected["absolute_target_refused"] += 1
            client.write_error(400, "absolute_target_refused",
                               "this proxy forwards only to its configured upstream: send an origin-form "
                               "target such as /v1/chat/completions", close=True)
            self.record_later(request, 400, "absolute_target_refused", None)
            return
        assert self._pool is not None
        head = self._request_head(request)
        self.metrics.in_flight += 1
        try:
            exchange = await self._forward(client, request, head)
        finally:
            self.metrics.in_flight -= 1
        if exchange is None:
            return
        if exchange.error in ("client_disconnected", "proxy_shutdown"):
            pass  # nobody to answer; the event says the client left, or the proxy cut it off
        elif exchange.error is not None:
            if not exchange.head_sent:
                self._upstream_failed(client, request, exchange.error)
                return
            client.close()  # the status line is out: all we can do is cut the response short
            self.metrics.upstream_errors[exchange.error] += 1
        elif exchange.close_after:
            client.close()
        self.record_later(request, exchange.status, exchange.error, exchange)

    async def _forward(self, client: _ClientConnection, request: _Request, head: bytes) -> _Exchange | None:
        assert self._pool is not None
        limit = self.recorder.capture_limit if self.recorder is not None else 0
        for attempt in (0, 1):
            try:
                conn, reused = await self._pool.acquire()
            except TimeoutError:
                self._upstream_failed(client, request, "upstream_connect_timeout")
                return None
            except OSError as exc:
                self._upstream_failed(client, request, "upstream_unreachable", detail=str(exc))
                return None
            exchange = _Exchange(client, request, limit)
            client.upstream = conn
            if client.write_paused:
                conn.pause_reading()
            conn.send(exchange, head, request.body)
            timer = _Deadline(exchange, conn, self.config.upstream_timeout_s)
            try:
                await exchange.done
            finally:
                timer.cancel()
                client.upstream = None
            # A reused connection the upstream closed with nothing answered: the keep-alive race
            # (the server closed it as idle as it was picked) if the request was not even all
            # written; else the server may have been working on it (a worker that died mid-
            # generation), and only a method that may be repeated is sent once more, on a new
            # connection (docs/proxy.md, "Retries"; RFC 9110 §9.2.2).
            if (exchange.error in ("upstream_closed", "upstream_reset") and reused and attempt == 0
                    and not conn.received_any and not client.closing
                    and (not conn.request_written or request.method in _REPEATABLE_METHODS)):
                self.metrics.retries += 1
                continue
            return exchange
        return None  # pragma: no cover - the loop always returns

    def _request_head(self, request: _Request) -> bytes:
        drop = _DROP_FROM_REQUEST | _connection_tokens(request.headers)
        lines = [b"%s %s%s HTTP/1.1\r\n" % (request.method.encode("ascii"), self._base, request.target)]
        has_host = False
        forwarded: bytes | None = None
        for name, value in request.headers:
            lower = name.lower()
            if lower in drop:
                continue
            if lower == b"host":
                has_host = True
            elif lower == b"x-forwarded-for" and self.config.forwarded_for:
                forwarded = value
                continue
            lines.append(b"%s: %s\r\n" % (name, value))
        if not has_host:
            lines.append(b"host: %s\r\n" % self.upstream.host_header)
        if self.config.forwarded_for and request.client_ip:
            address = request.client_ip.encode("latin-1")
            lines.append(b"x-forwarded-for: %s\r\n" % (forwarded + b", " + address if forwarded else address))
        if request.body or request.method in ("POST", "PUT", "PATCH"):
            lines.append(b"content-length: %d\r\n" % len(request.body))
        lines.append(b"\r\n")
        return b"".join(lines)

    def _upstream_failed(
        self, client: _ClientConnection, request: _Request, kind: str, detail: str = ""
    ) -> None:
        self.metrics.upstream_errors[kind] += 1
        target = self.config.upstream
        extra: dict[str, Any]
        if kind == "upstream_connect_timeout":
            status, message = 504, (f"connecting to the upstream {target} took longer than "
                                    f"{self.config.connect_timeout_s:g} s")
            extra = {"setting": SETTING_HINTS["connect_timeout_s"]}
        elif kind == "upstream_timeout":
            status, message = 504, (f"the upstream {target} sent nothing for "
                                    f"{self.config.upstream_timeout_s:g} s")
            extra = {"setting": SETTING_HINTS["upstream_timeout_s"]}
        elif kind == "upstream_unreachable":
            status, message = 502, f"the upstream {target} is unreachable" + (f": {detail}" if detail else "")
            extra = {}
        else:
            status, message = 502, f"the upstream {target} failed: {kind.replace('_', ' ')}"
            extra = {}
        client.write_error(status, kind, message, close=not request.keep_alive, **extra)
        self.record_later(request, status, kind, None)

    # the proxy's own endpoints
    async def _admin(self, client: _ClientConnection, request: _Request) -> None:
        name = request.path[len(self.config.admin_prefix):]
        close = not request.keep_alive
        if name == "livez":
            client.write_response(200, b"OK", "application/json", b'{"status":"ok"}', close=close)
        elif name in ("healthz", "readyz"):
            reachable, detail = await self.upstream_reachable()
            body: dict[str, Any] = {"status": "ok" if reachable else "unavailable",
                                    "upstream": self.config.upstream, "upstream_reachable": reachable}
            if detail:
                body["detail"] = detail
            stats = self.recorder.stats() if self.recorder is not None else None
            if stats is not None:  # the events' side: not the probe's verdict, which is the model's
                shipper = stats.shipper
                body["events"] = {"bus_up": shipper.bus_up, "sent": shipper.sent, "dropped": shipper.dropped}
            client.write_response(200 if reachable else 503, b"OK" if reachable else b"Service Unavailable",
                                  "application/json", json.dumps(body).encode(), close=close)
        elif name == "metrics":
            text = self.metrics.render(self.recorder)
            client.write_response(200, b"OK", CONTENT_TYPE, text.encode(), close=close)
        else:
            client.write_error(404, "not_found",
                               f"{request.path} is not one of the proxy's own endpoints: "
                               f"{self.config.admin_prefix}healthz, {self.config.admin_prefix}livez, "
                               f"{self.config.admin_prefix}metrics", close=close)

    async def upstream_reachable(self) -> tuple[bool, str]:
        """Whether the upstream accepts a TCP connection now (within a second or the connect timeout)."""
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self.upstream.host, self.upstream.port),
                min(1.0, self.config.connect_timeout_s),
            )
        except (OSError, TimeoutError) as exc:
            return False, type(exc).__name__ if not str(exc) else str(exc)
        writer.close()
        return True, ""

    # recording, off the request path
    def record_later(self, request: _Request, status: int | None, error: str | None,
                     exchange: _Exchange | None) -> None:
        """Count the call and build its events on a later turn of the loop, after the reply is out."""
        asyncio.get_running_loop().call_soon(self._record, request, status, error, exchange)

    def _record(self, request: _Request, status: int | None, error: str | None,
                exchange: _Exchange | None) -> None:
        end = exchange.finished if exchange is not None and exchange.finished else time.perf_counter()
        route = self._routes.get(request.path)
        if route is None:
            route = route_for(request.path)
            if len(self._routes) < 4096:
                self._routes[request.path] = route
        self.metrics.observe(route.protocol, status or 0, end - request.perf_start)
        recorder = self.recorder
        if recorder is None or request.path in self.config.exclude_paths:
            return
        limit = recorder.capture_limit
        try:
            recorder.submit(CallRecord(
                request.start_ns, end - request.perf_start, request.method, request.path, request.headers,
                request.client_ip, bytes(request.body[:limit]), request.body_bytes, status, error,
                bytes(exchange.capture) if exchange is not None else b"",
                exchange.response_bytes if exchange is not None else 0,
                exchange.content_type if exchange is not None else "",
                exchange.content_encoding if exchange is not None else "",
            ), route)
        except Exception as exc:  # recording must never cost the traffic anything
            self.metrics.record_errors += 1
            _log.debug("event=proxy_record_failed error=%s", type(exc).__name__)


class _Deadline:
    """Fails an exchange when the upstream has sent nothing for ``timeout`` seconds."""

    __slots__ = ("conn", "exchange", "handle", "loop", "timeout")

    def __init__(self, exchange: _Exchange, conn: _UpstreamConnection, timeout: float) -> None:
        self.exchange = exchange
        self.conn = conn
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()
        self.handle: asyncio.TimerHandle | None = self.loop.call_later(timeout, self._fire)

    def _fire(self) -> None:
        exchange = self.exchange
        if exchange.done.done():
            return
        idle = self.loop.time() - exchange.last_activity
        if exchange.client.write_paused or idle < self.timeout:  # a slow client is not the upstream's fault
            self.handle = self.loop.call_later(max(0.05, self.timeout - idle), self._fire)
            return
        self.handle = None
        self.conn.abandon("upstream_timeout")

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


def _connection_tokens(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names listed in ``Connection`` (they are hop-by-hop too)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return frozenset(tokens)


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port``, ``[::1]:port`` or ``:port`` (all interfaces) into a host and a port."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ProxyError(f"--listen {value!r} must be host:port, e.g. 0.0.0.0:8080")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


async def serve(
    config: ProxyConfig,
    recorder: Recorder | None,
    *,
    ready: Callable[[ProxyServer], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the proxy until ``stop`` is set (or the task is cancelled), then close it gracefully."""
    server = ProxyServer(config, recorder)
    if recorder is not None:
        await recorder.start()
    await server.start()
    if ready is not None:
        ready(server)
    try:
        if stop is None:
            await server.serve_forever()
        else:
            await stop.wait()
    finally:
        await server.close()
        if recorder is not None:
            await recorder.close()
