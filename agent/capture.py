"""What the HTTP middlewares (ASGI and WSGI) keep of an exchange while it streams by.

:class:`BodyCapture` copies request and response bytes up to a limit (counting all of them) and
notes the status and the response's content type. :func:`record_exchange` hands the result to
the agent with the reading of the bodies deferred to the shipper thread, so the request path
pays for copying bytes, not for parsing JSON or redacting text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from typing import Generic, TypeVar

from inferwatch.agent.content import CallContent
from inferwatch.agent.core import Agent, AgentLookup, Call
from inferwatch.agent.extract import HttpExchange, extract_http
from inferwatch.collectors.settings import CaptureMode

DEFAULT_EXCLUDED_PATHS = frozenset(
    {"/health", "/healthz", "/livez", "/readyz", "/metrics", "/favicon.ico", "/docs", "/openapi.json"}
)
"""Paths the middlewares pass straight through without recording (health checks, metrics, docs)."""


App = TypeVar("App")


class MiddlewareBase(Generic[App]):
    """The options and agent lookup the ASGI and WSGI middlewares share.

    ``agent`` defaults to :func:`~inferwatch.agent.get_agent` at the first request; a
    mis-configured agent leaves requests served unmonitored, said once in the log.
    """

    def __init__(
        self,
        app: App,
        agent: Agent | None = None,
        *,
        operation: str | None = None,
        model: str | None = None,
        exclude_paths: Collection[str] = DEFAULT_EXCLUDED_PATHS,
        metrics_path: str | None = None,
    ) -> None:
        self.app = app
        self.operation = operation
        self.model = model
        self.exclude_paths = frozenset(exclude_paths)
        self.metrics_path = metrics_path
        self._resolve_agent = AgentLookup(agent)


class BodyCapture:
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

    def add_request(self, body: bytes) -> None:
        """Note a piece of the request body, as the application reads it."""
        self.request_bytes += len(body)
        room = self.limit - len(self.request)
        if room > 0:
            self.request += body[:room]

    def start_response(self, status: int | None, headers: Mapping[str, str]) -> None:
        """Note the response status and headers (lower-case names)."""
        self.status = status
        self.content_type = headers.get("content-type", "").lower()
        self.encoding = headers.get("content-encoding", "").lower()

    def add_response(self, body: bytes) -> None:
        """Note a piece of the response body, as it is sent."""
        self.response_bytes += len(body)
        room = self.limit - len(self.response)
        if room > 0:
            self.response += body[:room]

    def finish(self) -> None:
        """The last response byte has gone."""
        if self.finished_at is None:
            self.finished_at = time.perf_counter()

    def reader(self, path: str, mode: CaptureMode) -> Callable[[], CallContent]:
        """A function that reads the captured bodies into the call's content (run it later)."""

        def read() -> CallContent:
            exchange = HttpExchange(
                path=path,
                request_body=bytes(self.request),
                request_bytes=self.request_bytes,
                response_body=bytes(self.response),
                response_bytes=self.response_bytes,
                response_content_type=self.content_type,
                response_encoding=self.encoding,
                limit=self.limit,
            )
            return extract_http(exchange, mode)

        return read


def record_exchange(
    agent: Agent, call: Call, path: str, capture: BodyCapture, failure: BaseException | None,
    error: str | None = None,
) -> None:
    """Queue the call's events; the bodies are read on the shipper thread. ``error`` names an
    exception the framework handled itself (answering 500), when ``failure`` is ``None``."""
    status = capture.status
    if status is None and isinstance(failure, Exception):
        status = 500  # what the server answers for an exception before the response started
    if failure is not None:
        error = type(failure).__name__
    read = capture.reader(path, agent.settings.capture)
    agent.record(call, read, status=status, error=error, end=capture.finished_at)
