"""WSGI middleware: each HTTP request to a Flask (or any WSGI) app becomes events.

::

    from flask import Flask
    from inferwatch.agent import InferwatchWSGIMiddleware, configure

    app = Flask(__name__)
    configure()
    app.wsgi_app = InferwatchWSGIMiddleware(app.wsgi_app)   # Flask: keep `app` itself a Flask

It behaves like the ASGI :class:`~inferwatch.agent.InferwatchMiddleware`:

* the request body reaches the app unchanged: ``wsgi.input`` is wrapped so that what the app
  reads (``read``, ``readinto``, ``readline``, ``readlines``, iteration) is copied as it passes, up to
  ``agent.max_body_bytes``; nothing is read ahead of the app; the wrapper offers ``readinto`` and
  ``read1`` only when the server's stream does (gunicorn's does not);
* the response goes out unchanged and undelayed: each chunk of the app's iterable (and of the
  legacy ``write()`` callable) is copied and handed to the server at once, streamed responses
  included; the iterable's ``close()`` is always called, and ``len()`` is kept when the app's
  iterable has one;
* the app's exceptions propagate exactly as raised (and are recorded: status 500, ``error`` =
  the exception's type); failures in inferwatch's own code are swallowed and counted;
* the event is queued when the server closes the response (after its last byte), and built on
  the shipper thread; ``duration_ms`` runs to the last chunk;
* ``exclude_paths`` (health checks, metrics, docs) pass straight through; ``metrics_path``,
  when given, is answered with the agent's Prometheus metrics.

The call's span and :mod:`inferwatch.agent.context` are current while the app runs and while
its response iterable is read, so ``set_principal()`` works in a Flask view and inside a
streamed generator. ``endpoint`` is Flask's (Werkzeug's) route rule (``/items/<int:id>``) when
the app exposes it, else the path.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from types import TracebackType
from typing import Any

from opentelemetry.trace import SpanKind

from inferwatch.agent.capture import BodyCapture, MiddlewareBase, record_exchange
from inferwatch.agent.core import Agent, Attachment, Call
from inferwatch.agent.metrics import CONTENT_TYPE

__all__ = ["InferwatchWSGIMiddleware"]

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_log = logging.getLogger("inferwatch.agent")


_HANDLED_ERROR = "inferwatch.handled_error"
"""The ``environ`` key where the type of an exception the framework answered itself is left."""
_flask_hooked = False


def _note_flask_exception(sender: object, exception: BaseException, **extra: object) -> None:
    # Flask turns a view's exception into its 500 page inside ``wsgi_app``: the middleware
    # around it never sees it raised. The request's environ is the one the middleware holds.
    try:
        from flask import request

        request.environ[_HANDLED_ERROR] = type(exception).__name__
    except Exception:  # never break the app's error handling
        _log.debug("event=flask_exception_not_noted", exc_info=True)


def _hook_flask() -> None:
    """Listen to Flask's ``got_request_exception`` when Flask is in use (never imported here)."""
    global _flask_hooked
    if _flask_hooked or "flask" not in sys.modules:
        return
    try:
        from flask import got_request_exception

        got_request_exception.connect(_note_flask_exception)
        _flask_hooked = True
    except Exception:  # an old or odd Flask: the event keeps its status, without the type
        _log.debug("event=flask_hook_failed", exc_info=True)


class InferwatchWSGIMiddleware(MiddlewareBase[WSGIApp]):
    """Records every HTTP request through the WSGI ``app`` as inference events, failing open.

    ``agent`` defaults to :func:`~inferwatch.agent.get_agent` at the first request.
    ``operation`` and ``model``, when given, override what the bodies say. ``metrics_path``
    (e.g. ``"/metrics"``), when given, is answered with the agent's Prometheus metrics. Around a
    Flask app, an exception Flask answers with its own 500 page is recorded with its type too.
    """

    def __init__(self, app: WSGIApp, *args: Any, **kwargs: Any) -> None:
        super().__init__(app, *args, **kwargs)
        _hook_flask()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request."""
        path = environ.get("PATH_INFO") or ""
        if path == self.metrics_path:
            return self._serve_metrics(start_response)
        agent = self._resolve_agent()
        if agent is None or path in self.exclude_paths:
            return self.app(environ, start_response)
        exchange: _Exchange | None = None
        try:
            exchange = _Exchange(agent, self._begin(agent, environ, path), path, environ)
            stream = environ.get("wsgi.input")
            if stream is not None:
                environ["wsgi.input"] = _CopyingInput(stream, exchange)
        except Exception as exc:
            agent.note_internal_error(exc)
        if exchange is None:
            return self.app(environ, start_response)
        observed = exchange

        def capturing_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            observed.on_start(status, headers)
            write = start_response(status, headers, exc_info)
            return observed.copying(write)

        token = exchange.attach()
        try:
            result = self.app(environ, capturing_start_response)
        except BaseException as exc:
            exchange.detach(token)
            exchange.finish(exc)
            raise
        exchange.detach(token)
        if isinstance(result, list | tuple):  # already made: no app code runs while it is read
            return _ListResponse(result, exchange)
        if hasattr(result, "__len__"):
            return _SizedResponse(result, exchange)
        return _ObservedResponse(result, exchange)

    def _begin(self, agent: Agent, environ: Environ, path: str) -> Call:
        call = agent.begin(
            operation=self.operation,
            model=self.model,
            endpoint=path,
            headers=_headers(environ),
            client_ip=environ.get("REMOTE_ADDR"),
            kind=SpanKind.SERVER,
        )
        # Set when the span ends, on the shipper thread: attributes cost more than the span.
        call.span_attributes = {"http.request.method": environ.get("REQUEST_METHOD", ""), "url.path": path}
        return call

    def _serve_metrics(self, start_response: StartResponse) -> list[bytes]:
        agent = self._resolve_agent()
        body = agent.metrics_text().encode() if agent is not None else b"# inferwatch agent unavailable\n"
        status = "200 OK" if agent is not None else "503 Service Unavailable"
        start_response(status, [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(body)))])
        return [body]


class _Exchange:
    """One request in flight: its call, what was captured, and whether it was recorded."""

    __slots__ = ("agent", "call", "capture", "done", "environ", "failure", "path")

    def __init__(self, agent: Agent, call: Call, path: str, environ: Environ) -> None:
        self.agent = agent
        self.call = call
        self.capture = BodyCapture(agent.settings.max_body_bytes)
        self.path = path
        self.environ = environ
        self.failure: BaseException | None = None
        self.done = False

    def attach(self) -> Attachment | None:
        try:
            return self.call.attach()
        except Exception as exc:
            self.agent.note_internal_error(exc)
            return None

    def detach(self, token: Attachment | None) -> None:
        if token is None:
            return
        try:
            Call.detach(token)
        except Exception as exc:
            self.agent.note_internal_error(exc)

    def on_request(self, data: bytes) -> None:
        try:
            self.capture.add_request(data)
        except Exception as exc:
            self.agent.note_internal_error(exc)

    def on_start(self, status: str, headers: list[tuple[str, str]]) -> None:
        try:
            names: dict[str, str] = {}
            for name, value in headers:
                names.setdefault(name.lower(), value)
            self.capture.start_response(_status_code(status), names)
            # Flask forgets its request once the view is done; while it answers, it is still here.
            rule = getattr(getattr(self.environ.get("werkzeug.request"), "url_rule", None), "rule", None)
            if isinstance(rule, str):  # Flask/Werkzeug's route template, e.g. /items/<int:item_id>
                self.call.endpoint = rule
        except Exception as exc:
            self.agent.note_internal_error(exc)

    def on_chunk(self, data: bytes) -> None:
        try:
            self.capture.add_response(data)
        except Exception as exc:
            self.agent.note_internal_error(exc)

    def copying(self, write: Callable[[bytes], object]) -> Callable[[bytes], object]:
        def copying_write(data: bytes) -> object:
            self.on_chunk(data)
            return write(data)

        return copying_write

    def finish(self, failure: BaseException | None = None) -> None:
        """Queue the call's events (once), after the last byte went out or on failure."""
        if self.done:
            return
        self.done = True
        try:
            self.capture.finish()
            record_exchange(self.agent, self.call, self.path, self.capture, failure or self.failure,
                            error=self.environ.get(_HANDLED_ERROR))
        except Exception as exc:
            self.agent.note_internal_error(exc)


class _ObservedResponse:
    """The app's response iterable, copied chunk by chunk as the server reads it."""

    __slots__ = ("_exchange", "_iterator", "_result")

    def __init__(self, result: Iterable[bytes], exchange: _Exchange) -> None:
        self._result = result
        self._exchange = exchange
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        exchange = self._exchange
        token = exchange.attach()  # the app's generator runs here: keep its span and context current
        try:
            if self._iterator is None:
                self._iterator = iter(self._result)
            chunk = next(self._iterator)
        except StopIteration:
            exchange.capture.finish()
            raise
        except BaseException as exc:
            exchange.failure = exc
            raise
        finally:
            exchange.detach(token)
        exchange.on_chunk(chunk)
        return chunk

    def close(self) -> None:
        """Close the app's iterable (PEP 3333), then record the call."""
        exchange = self._exchange
        token = exchange.attach()
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        except BaseException as exc:
            exchange.failure = exchange.failure or exc
            raise
        finally:
            exchange.detach(token)
            exchange.finish()


class _SizedResponse(_ObservedResponse):
    """Keeps ``len()`` for servers that use it to set ``Content-Length`` (wsgiref does)."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._result)  # type: ignore[arg-type]


class _ListResponse:
    """A response the app made as a list: copied as it is read, recorded when closed."""

    __slots__ = ("_chunks", "_exchange")

    def __init__(self, chunks: list[bytes] | tuple[bytes, ...], exchange: _Exchange) -> None:
        self._chunks = chunks
        self._exchange = exchange

    def __len__(self) -> int:
        return len(self._chunks)

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self._exchange.on_chunk(chunk)
            yield chunk
        self._exchange.capture.finish()

    def close(self) -> None:
        """Record the call (a list has nothing to close)."""
        self._exchange.finish()


class _CopyingInput:
    """``wsgi.input`` as the app sees it: the same stream, copied as the app reads it.

    It has exactly the methods of the server's stream: ``readinto`` and ``read1`` (which WSGI does
    not require, and gunicorn's body lacks) exist only when the server's stream has them, since
    readers such as Werkzeug's ``LimitedStream`` choose how to read with ``hasattr``.
    """

    __slots__ = ("_exchange", "_stream")

    def __init__(self, stream: Any, exchange: _Exchange) -> None:
        self._stream = stream
        self._exchange = exchange

    def read(self, *args: Any) -> bytes:
        data: bytes = self._stream.read(*args)
        self._exchange.on_request(data)
        return data

    def _read1(self, read1: Callable[..., bytes], *args: Any) -> bytes:
        data = read1(*args)
        self._exchange.on_request(data)
        return data

    def _readinto(self, readinto: Callable[[Any], int | None], buffer: Any) -> int | None:
        count = readinto(buffer)  # Werkzeug's LimitedStream reads this way when the stream can
        if count:
            with memoryview(buffer) as view:
                self._exchange.on_request(bytes(view[:count]))
        return count

    def readline(self, *args: Any) -> bytes:
        data: bytes = self._stream.readline(*args)
        self._exchange.on_request(data)
        return data

    def readlines(self, *args: Any) -> list[bytes]:
        lines: list[bytes] = self._stream.readlines(*args)
        for line in lines:
            self._exchange.on_request(line)
        return lines

    def __iter__(self) -> Iterator[bytes]:
        for line in self._stream:
            self._exchange.on_request(line)
            yield line

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._stream, name)  # AttributeError when the server's stream has none
        if name == "readinto":
            return partial(self._readinto, attr)
        if name == "read1":
            return partial(self._read1, attr)
        return attr


def _headers(environ: Environ) -> dict[str, str]:
    headers = {
        key[5:].replace("_", "-").lower(): value for key, value in environ.items() if key[:5] == "HTTP_"
    }
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    return headers


def _status_code(status: str) -> int | None:
    code = status.split(" ", 1)[0]
    return int(code) if code.isdigit() else None
