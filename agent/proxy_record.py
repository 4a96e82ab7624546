"""From a proxied call to events, in the proxy's process or in a worker process beside it.

The proxy hands each finished call to a recorder as a :class:`CallRecord`: plain values (the
request's head and captured bodies, the response's status and captured body), nothing more.
Turning it into events — the span, the protocol's bodies read, text redacted, the caller
pseudonymised, the events queued for the bus — costs far more than forwarding the call did
(a chat turn: about half a millisecond of CPU). Two recorders:

* :class:`WorkerRecorder` (the default of ``inferwatch agent proxy``) runs that work in a child
  process, ``python -m inferwatch.agent.proxy_record``, fed through a pipe. In CPython one
  thread holds the interpreter at a time: event building on a thread of the proxy's own process
  would make every proxied request wait for it. In a child process it runs on another core and
  the proxy's event loop only writes one short frame per call. The child runs at a lower CPU
  priority (nice +10), so when cores are scarce forwarding wins. If the child cannot keep up (its
  pipe holds :data:`MAX_PIPE_BYTES`), new calls are dropped and counted, never waited for; if it
  dies it is started again, and the calls in between are counted as dropped.
* :class:`InlineRecorder` does the work on the proxy's event loop, after the response has been
  written (``--inline-events``: one process, and the agent object at hand, as tests use it).

Both build events with :func:`build_events`, so they record exactly the same thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import marshal
import os
import signal
import struct
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple, cast

from opentelemetry.trace import SpanKind
from pydantic import SecretStr

from inferwatch.agent.content import CallContent
from inferwatch.agent.core import Agent, AgentStats, Call
from inferwatch.agent.extract import HttpExchange, decompressed
from inferwatch.agent.principal import credential_from_headers
from inferwatch.agent.proxy_protocols import Route, extract_call, route_for
from inferwatch.agent.shipper import ShipperStats
from inferwatch.collectors.logs import configure_logging
from inferwatch.collectors.redaction import redact_path

if TYPE_CHECKING:
    from inferwatch.collectors.settings import Settings

_log = logging.getLogger("inferwatch.agent.proxy")
_HEADER: Final = struct.Struct("!I")
MAX_PIPE_BYTES: Final = 32 << 20
STATS_INTERVAL_S: Final = 0.5
WORKER_NICENESS: Final = 10
"""The worker runs at a lower CPU priority than the proxy: under contention the request path wins."""
_RESTART_BACKOFF_S: Final = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class CallRecord(NamedTuple):
    """One proxied call, as plain values (so it crosses a pipe as one ``marshal`` frame)."""

    start_ns: int
    duration_s: float
    method: str
    path: str
    headers: list[tuple[bytes, bytes]]
    client_ip: str | None
    request_body: bytes
    request_bytes: int
    status: int | None
    error: str | None
    response_body: bytes
    response_bytes: int
    content_type: str
    content_encoding: str


def build_events(agent: Agent, record: CallRecord, *, principal_from_address: bool,
                 route: Route | None = None) -> None:
    """Record ``record`` with ``agent``: its span, and one event per row, queued for the bus."""
    route = route or route_for(record.path)
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in record.headers}
    span = agent.tracer.start(
        "chat" if route.protocol == "openai" else "predict",
        route.model or agent.settings.model,
        kind=SpanKind.SERVER,
        carrier=headers,
        start_ns=record.start_ns,
        attributes={"http.request.method": record.method, "url.path": redact_path(record.path)},
    )
    credential = credential_from_headers(headers, agent.pseudonymizer.header)
    client_ip = agent.proxies.client(record.client_ip, headers)  # behind a trusted load balancer
    if credential is None and principal_from_address and client_ip:
        credential = "address:" + client_ip  # pseudonymised with the key, like a credential
    now = time.perf_counter()
    call = Call(
        span=span,
        started_ns=record.start_ns,
        perf_start=now - record.duration_s,
        model=route.model,
        endpoint=route.endpoint,
        credential=credential,
        client_ip=client_ip,
    )
    agent.record(call, _content(agent, record, route), status=record.status, error=record.error, end=now)


def _content(agent: Agent, record: CallRecord, route: Route) -> CallContent:
    limit = agent.settings.max_body_bytes
    body, encoding = decoded(record.response_body, record.content_encoding, record.response_bytes, limit)
    exchange = HttpExchange(
        path=record.path,
        request_body=record.request_body,
        request_bytes=record.request_bytes,
        response_body=body,
        response_bytes=record.response_bytes if encoding or record.response_bytes > limit else len(body),
        response_content_type=record.content_type,
        response_encoding=encoding,
        limit=limit,
    )
    content = extract_call(route, exchange, agent.settings.capture)
    if record.content_encoding not in ("", "identity"):
        content.attributes["response_encoding"] = record.content_encoding
    return content


def decoded(body: bytes, encoding: str, size: int, limit: int) -> tuple[bytes, str]:
    """A gzip or deflate response body decoded for reading (when it decodes within ``limit``),
    with the encoding left to say (``""`` once decoded): the protocol readers read the body.

    >>> import gzip
    >>> decoded(gzip.compress(b'{"a": 1}'), "gzip", 28, 1024)
    (b'{"a": 1}', '')
    """
    if encoding in ("", "identity") or size > limit:
        return body, encoding
    plain = decompressed(body, encoding, limit)
    return (body, encoding) if plain is None else (plain, "")


class InlineRecorder:
    """Builds events on the proxy's event loop, after each response (one process)."""

    def __init__(self, agent: Agent, *, principal_from_address: bool = True) -> None:
        self.agent = agent
        self.principal_from_address = principal_from_address
        self.dropped = 0

    @property
    def capture_limit(self) -> int:
        """Bytes of each body to keep for reading."""
        return self.agent.settings.max_body_bytes

    async def start(self) -> None:
        """Nothing to start."""

    def submit(self, record: CallRecord, route: Route) -> None:
        """Record the call now (the caller has its response already)."""
        with self.agent.guard():
            build_events(self.agent, record, principal_from_address=self.principal_from_address, route=route)

    def stats(self) -> AgentStats | None:
        """The agent's counters."""
        return self.agent.stats()

    def metrics_text(self) -> str:
        """The agent's counters in the Prometheus text format."""
        return self.agent.metrics_text()

    async def close(self) -> None:
        """Send what is queued and stop the agent."""
        await asyncio.get_running_loop().run_in_executor(None, self.agent.shutdown, 5.0)


class WorkerRecorder:
    """Builds events in a child process; the proxy's loop only writes a frame per call."""

    def __init__(self, settings: Settings, *, principal_from_address: bool = True,
                 python: str = sys.executable) -> None:
        self.settings = settings
        self.principal_from_address = principal_from_address
        self.python = python
        self.dropped_busy = 0
        self.dropped_down = 0
        self.restarts = 0
        self._stats: AgentStats | None = None
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._closing = False
        self._failures = 0
        self._restart: asyncio.TimerHandle | None = None
        self._exited: asyncio.Future[int] | None = None
        self._started_at = 0.0

    @property
    def capture_limit(self) -> int:
        """Bytes of each body to keep for reading."""
        return self.settings.agent.max_body_bytes

    async def start(self) -> None:
        """Start the worker process and hand it the settings."""
        loop = asyncio.get_running_loop()
        self._exited = loop.create_future()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        transport, _ = await loop.subprocess_exec(
            lambda: _WorkerProtocol(self), self.python, "-m", "inferwatch.agent.proxy_record",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None, env=env,
        )
        self._transport = transport
        self._stdin = cast(asyncio.WriteTransport, transport.get_pipe_transport(0))  # uvloop's: no subclass
        self._started_at = time.monotonic()
        setup = {"settings": _revealed(self.settings.model_dump()),
                 "principal_from_address": self.principal_from_address}
        self._write(json.dumps(setup).encode())  # through the pipe: secrets never touch argv or env

    def submit(self, record: CallRecord, route: Route) -> None:
        """Queue the call for the worker; drop and count it if the worker is down or behind."""
        stdin = self._stdin
        if stdin is None or stdin.is_closing():
            self.dropped_down += 1
            return
        if stdin.get_write_buffer_size() > MAX_PIPE_BYTES:
            self.dropped_busy += 1
            return
        try:
            self._write(marshal.dumps(tuple(record)))
        except (ValueError, OSError):  # a value marshal cannot write; a pipe that just broke
            self.dropped_down += 1

    def _write(self, payload: bytes) -> None:
        assert self._stdin is not None
        self._stdin.write(_HEADER.pack(len(payload)) + payload)

    def stats(self) -> AgentStats | None:
        """The worker's last reported counters (every half second)."""
        return self._stats

    def metrics_text(self) -> str:
        """The worker agent's counters in the Prometheus text format."""
        from inferwatch.agent.metrics import prometheus_text

        stats = self._stats or AgentStats(internal_errors=0, shipper=ShipperStats(0, 0, 0, 0, 0, 0, 0))
        return prometheus_text(stats, service=self.settings.agent.service)

    def on_stats(self, payload: bytes) -> None:
        data = json.loads(payload)
        names = {f.name for f in dataclasses.fields(ShipperStats)}
        shipper = ShipperStats(**{k: v for k, v in data["shipper"].items() if k in names})
        self._stats = AgentStats(internal_errors=data["internal_errors"], shipper=shipper)

    def on_exit(self, code: int | None) -> None:
        self._stdin = None
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(code if code is not None else -1)
        if self._closing:
            return
        uptime = time.monotonic() - self._started_at
        self._failures = 0 if uptime > 60 else self._failures + 1
        delay = _RESTART_BACKOFF_S[min(self._failures, len(_RESTART_BACKOFF_S) - 1)]
        _log.warning("event=proxy_event_worker_exited code=%s restart_in_s=%s", code, delay)
        self._restart = asyncio.get_running_loop().call_later(delay, self._start_again)

    def _start_again(self) -> None:
        self._restart = None
        if self._closing:
            return
        self.restarts += 1
        task = asyncio.get_running_loop().create_task(self.start())
        task.add_done_callback(_log_failure)

    async def close(self, timeout: float = 10.0) -> None:
        """Close the worker's input; it sends what it holds and exits (killed after ``timeout``)."""
        self._closing = True
        if self._restart is not None:
            self._restart.cancel()
        if self._stdin is not None:
            self._stdin.close()
        if self._exited is not None and self._transport is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._exited), timeout)
            except TimeoutError:
                self._transport.kill()
            self._transport.close()


def _revealed(value: Any) -> Any:
    """Settings as JSON values, secrets included (the worker needs the HMAC key and the bus password)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {key: _revealed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_revealed(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _log.warning("event=proxy_event_worker_start_failed error=%s", task.exception())


class _WorkerProtocol(asyncio.SubprocessProtocol):
    def __init__(self, recorder: WorkerRecorder) -> None:
        self.recorder = recorder
        self.buffer = bytearray()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd != 1:
            return
        self.buffer += data
        while len(self.buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self.buffer)
            if len(self.buffer) < _HEADER.size + size:
                break
            payload = bytes(self.buffer[_HEADER.size : _HEADER.size + size])
            del self.buffer[: _HEADER.size + size]
            try:
                self.recorder.on_stats(payload)
            except (ValueError, KeyError, TypeError):
                _log.debug("event=proxy_event_worker_bad_stats")

    def process_exited(self) -> None:
        transport = self.recorder._transport
        self.recorder.on_exit(transport.get_returncode() if transport is not None else None)


# The worker process: python -m inferwatch.agent.proxy_record


def _read_exact(stream: Any, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_frame(stream: Any) -> bytes | None:
    header = _read_exact(stream, _HEADER.size)
    if header is None:
        return None
    return _read_exact(stream, _HEADER.unpack(header)[0])


def worker_main(stdin: Any = None, stdout: Any = None) -> int:
    """Read the settings, then calls, from ``stdin``; report the agent's counters on ``stdout``."""
    from inferwatch.agent.core import configure
    from inferwatch.collectors.settings import Settings

    # Stopping is the parent's decision: it closes our input, we send what we hold and exit.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    setup_frame = _read_frame(stdin)
    if setup_frame is None:
        return 0
    setup = json.loads(setup_frame)
    settings = Settings.model_validate(setup["settings"])
    configure_logging(settings.log_level)  # the proxy's own format, Kafka's client quietened alike
    agent = configure(settings)
    from_address = bool(setup.get("principal_from_address", True))
    routes: dict[str, Route] = {}
    reporter = _Reporter(agent, stdout)
    reporter.start()
    try:
        while True:
            frame = _read_frame(stdin)
            if frame is None:
                break
            with agent.guard():
                record = CallRecord(*marshal.loads(frame))
                route = routes.get(record.path) or route_for(record.path)
                if len(routes) < 4096:
                    routes[record.path] = route
                build_events(agent, record, principal_from_address=from_address, route=route)
    finally:
        agent.shutdown(timeout=5.0)
        reporter.stop()
    return 0


class _Reporter(threading.Thread):
    """Sends the agent's counters to the proxy every :data:`STATS_INTERVAL_S`, and once at the end."""

    def __init__(self, agent: Agent, stdout: Any) -> None:
        super().__init__(name="inferwatch-proxy-stats", daemon=True)
        self.agent = agent
        self.stdout = stdout
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(STATS_INTERVAL_S):
            self.report()

    def stop(self) -> None:
        self.stopping.set()
        self.join(2.0)
        self.report()

    def report(self) -> None:
        stats = self.agent.stats()
        payload = json.dumps({"internal_errors": stats.internal_errors,
                              "shipper": dataclasses.asdict(stats.shipper)}).encode()
        try:
            self.stdout.write(_HEADER.pack(len(payload)) + payload)
            self.stdout.flush()
        except (OSError, ValueError):  # the proxy is gone: nobody to tell
            pass


if __name__ == "__main__":
    sys.exit(worker_main())
