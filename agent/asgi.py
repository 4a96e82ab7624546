"""ASGI middleware: each HTTP request to a FastAPI, Starlette (or any ASGI) app becomes events.

Pure ASGI, so it needs no web framework at import time::

    app = FastAPI()
    app.add_middleware(InferwatchMiddleware)          # or InferwatchMiddleware(app, agent=...)

What it guarantees the application:

* the request body reaches the app unchanged: the middleware copies the ``http.request``
  messages the app reads (up to ``agent.max_body_bytes``) as they pass, so it never reads
  ahead of the app, delays an upload or re-orders messages;
* the response goes out unchanged and undelayed: each message is copied (up to the same limit)
  and passed on at once, streamed responses included;
* the app's own exceptions propagate exactly as raised; a failure in inferwatch's own code is
  swallowed and counted (``agent.stats().internal_errors``) and never reaches the client.

After the response is complete, the bodies are read into events (see
:mod:`inferwatch.agent.extract`) and queued; ``time`` is the request start, ``duration_ms``
runs to the last response byte. Requests to ``exclude_paths`` (health checks, metrics) and
non-HTTP scopes (websocket, lifespan) pass straight through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, MutableMapping
from contextvars import Token
from typing import Any, Final

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from inferwatch.agent.core import Agent, Call, get_agent
from inferwatch.agent.extract import HttpExchange, extract_http

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_EXCLUDED_PATHS: Final = frozenset(
    {"/health", "/healthz", "/livez", "/readyz", "/metrics", "/favicon.ico", "/docs", "/openapi.json"}
)
_log = logging.getLogger("inferwatch.agent")


class InferwatchMiddleware:
    """Records every HTTP request through ``app`` as inference events, failing open.

    ``agent`` defaults to :func:`~inferwatch.agent.get_agent` at the first request.
    ``operation`` and ``model``, when given, override what the bodies say.
    """

    def __init__(
        self,
        app: ASGIApp,
        agent: Agent | None = None,
        *,
        operation: str | None = None,
        model: str | None = None,
        exclude_paths: Collection[str] = DEFAULT_EXCLUDED_PATHS,
    ) -> None:
        self.app = app
        self.operation = operation
        self.model = model
        self.exclude_paths = frozenset(exclude_paths)
        self._agent = agent
        self._agent_unavailable = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        agent = self._resolve_agent() if scope.get("type") == "http" else None
        if agent is None or scope.get("path") in self.exclude_paths:
            await self.app(scope, receive, send)
            return
        capture = _Capture(agent.settings.max_body_bytes)
        call: Call | None = None
        token: Token[Context] | None = None
        with agent.guard():
            call = self._begin(agent, scope)
            token = call.attach()

        async def receive_and_copy() -> Message:
            message = await receive()
            with agent.guard():
                capture.on_request(message)
            return message

        async def copy_and_send(message: Message) -> None:
            with agent.guard():
                capture.on_response(message)
            await send(message)

        failure: BaseException | None = None
        try:
            await self.app(scope, receive_and_copy, copy_and_send)
        except BaseException as exc:  # noted for the event, then re-raised untouched
            failure = exc
            raise
        finally:
            if token is not None:
                with agent.guard():
                    Call.detach(token)
            if call is not None:
                with agent.guard():
                    self._record(agent, call, scope, capture, failure)

    def _resolve_agent(self) -> Agent | None:
        if self._agent is not None:
            return self._agent
        if self._agent_unavailable:
            return None
        try:
            return get_agent()
        except Exception as exc:  # mis-configured agent: serve requests unmonitored, say so once
            self._agent_unavailable = True
            _log.warning("event=agent_unavailable error=%s detail=%s", type(exc).__name__, exc)
            return None

    def _begin(self, agent: Agent, scope: Scope) -> Call:
        client = scope.get("client")
        return agent.begin(
            operation=self.operation,
            model=self.model,
            endpoint=scope.get("path"),
            headers=_headers(scope.get("headers") or ()),
            client_ip=client[0] if client else None,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": scope.get("method", ""), "url.path": scope.get("path", "")},
        )

    def _record(
        self, agent: Agent, call: Call, scope: Scope, capture: _Capture, failure: BaseException | None
    ) -> None:
        route = getattr(scope.get("route"), "path", None)  # Starlette's template, e.g. /items/{id}
        if isinstance(route, str):
            call.endpoint = route
        exchange = HttpExchange(
            path=scope.get("path", ""),
            request_body=bytes(capture.request),
            request_bytes=capture.request_bytes,
            response_body=bytes(capture.response),
            response_bytes=capture.response_bytes,
            response_content_type=capture.content_type,
            response_encoding=capture.encoding,
            limit=capture.limit,
        )
        content = extract_http(exchange, agent.settings.capture)
        status = capture.status
        if status is None and isinstance(failure, Exception):
            status = 500  # what the server answers for an exception before the response started
        error = type(failure).__name__ if failure is not None else None
        agent.record(call, content, status=status, error=error, end=capture.finished_at)


class _Capture:
    """Copies of what passed through, each body cut at ``limit`` bytes but fully counted."""

    __slots__ = (
        "content_type",
        "encoding",
        "finished_at",
        "limit",
        "request",
        "request_bytes",
        "response",
        "response_bytes",
        "status",
    )

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.request = bytearray()
        self.request_bytes = 0
        self.response = bytearray()
        self.response_bytes = 0
        self.status: int | None = None
        self.content_type = ""
        self.encoding = ""
        self.finished_at: float | None = None

    def on_request(self, message: Message) -> None:
        if message.get("type") == "http.request":
            body = message.get("body") or b""
            self.request_bytes += len(body)
            _append_within(self.request, body, self.limit)

    def on_response(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "http.response.start":
            self.status = message.get("status")
            headers = _headers(message.get("headers") or ())
            self.content_type = headers.get("content-type", "").lower()
            self.encoding = headers.get("content-encoding", "").lower()
        elif kind == "http.response.body":
            body = message.get("body") or b""
            self.response_bytes += len(body)
            _append_within(self.response, body, self.limit)
            if not message.get("more_body", False):
                self.finished_at = time.perf_counter()


def _append_within(buffer: bytearray, chunk: bytes, limit: int) -> None:
    room = limit - len(buffer)
    if room > 0:
        buffer += chunk[:room]


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    # ASGI header names are lower-case bytes; the first of repeated headers wins.
    headers: dict[str, str] = {}
    for name, value in raw:
        headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return headers
