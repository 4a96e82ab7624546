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

After the response is complete the call is queued; the shipper thread reads the bodies into
events (see :mod:`inferwatch.agent.extract`). ``time`` is the request start, ``duration_ms``
runs to the last response byte. Requests to ``exclude_paths`` (health checks, metrics) and
non-HTTP scopes (websocket, lifespan) pass straight through. The app may name the caller, the
model and extra attributes of the request with :mod:`inferwatch.agent.context`. With
``metrics_path`` set, the middleware answers that path itself with the agent's Prometheus
metrics (:meth:`~inferwatch.agent.Agent.metrics_text`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from opentelemetry.trace import SpanKind

from inferwatch.agent.capture import DEFAULT_EXCLUDED_PATHS, BodyCapture, MiddlewareBase, record_exchange
from inferwatch.agent.core import Agent, Attachment, Call
from inferwatch.agent.metrics import CONTENT_TYPE

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["DEFAULT_EXCLUDED_PATHS", "InferwatchMiddleware"]

_log = logging.getLogger("inferwatch.agent")


class InferwatchMiddleware(MiddlewareBase[ASGIApp]):
    """Records every HTTP request through ``app`` as inference events, failing open.

    ``agent`` defaults to :func:`~inferwatch.agent.get_agent` at the first request.
    ``operation`` and ``model``, when given, override what the bodies say. ``metrics_path``
    (e.g. ``"/metrics"``), when given, is answered with the agent's Prometheus metrics.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path == self.metrics_path:
            await self._serve_metrics(send)
            return
        agent = self._resolve_agent()
        if agent is None or path in self.exclude_paths:
            await self.app(scope, receive, send)
            return
        capture = BodyCapture(agent.settings.max_body_bytes)
        call: Call | None = None
        token: Attachment | None = None
        try:
            call = self._begin(agent, scope)
            token = call.attach()
        except Exception as exc:
            agent.note_internal_error(exc)

        async def receive_and_copy() -> Message:
            message = await receive()
            try:
                if message.get("type") == "http.request":
                    capture.add_request(message.get("body") or b"")
            except Exception as exc:
                agent.note_internal_error(exc)
            return message

        async def copy_and_send(message: Message) -> None:
            try:
                _on_response(capture, message)
            except Exception as exc:
                agent.note_internal_error(exc)
            await send(message)

        failure: BaseException | None = None
        try:
            await self.app(scope, receive_and_copy, copy_and_send)
        except BaseException as exc:  # noted for the event, then re-raised untouched
            failure = exc
            raise
        finally:
            if call is not None:
                try:
                    if token is not None:
                        Call.detach(token)
                    route = getattr(scope.get("route"), "path", None)  # Starlette's template: /items/{id}
                    if isinstance(route, str):
                        call.endpoint = route
                    record_exchange(agent, call, path, capture, failure)
                except Exception as exc:
                    agent.note_internal_error(exc)

    def _begin(self, agent: Agent, scope: Scope) -> Call:
        client = scope.get("client")
        path = scope.get("path", "")
        call = agent.begin(
            operation=self.operation,
            model=self.model,
            endpoint=path,
            headers=_headers(scope.get("headers") or ()),
            client_ip=client[0] if client else None,
            kind=SpanKind.SERVER,
        )
        # Set when the span ends, on the shipper thread: attributes cost more than the span.
        call.span_attributes = {"http.request.method": scope.get("method", ""), "url.path": path}
        return call

    async def _serve_metrics(self, send: Send) -> None:
        agent = self._resolve_agent()
        body = agent.metrics_text().encode() if agent is not None else b"# inferwatch agent unavailable\n"
        headers = [(b"content-type", CONTENT_TYPE.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200 if agent else 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _on_response(capture: BodyCapture, message: Message) -> None:
    kind = message.get("type")
    if kind == "http.response.start":
        capture.start_response(message.get("status"), _headers(message.get("headers") or ()))
    elif kind == "http.response.body":
        capture.add_response(message.get("body") or b"")
        if not message.get("more_body", False):
            capture.finish()


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    # ASGI header names are lower-case bytes; the first of repeated headers wins.
    headers: dict[str, str] = {}
    for name, value in raw:
        headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return headers
