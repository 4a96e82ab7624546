"""Tell the agent who is calling, which model answers and what else to note, for the current call.

The middleware and ``@monitor`` read the caller from the request (the configured header, or a
``Bearer`` token) and the model from the body. When the application knows better — a user id
from its own session, the model it routed to, a tenant or an experiment arm — it says so here::

    from inferwatch.agent import context, set_principal

    @app.post("/v1/chat/completions")
    def chat(request):
        set_principal(request.user.id)                # this request's caller
        with context(model="llama-3-8b", attributes={"tenant": "acme"}):
            return backend.generate(request.json)

Rules:

* :func:`set_principal`, :func:`set_model` and :func:`set_attributes` change the call in
  flight — the request the middleware (ASGI or WSGI) or the ``@monitor`` function is serving in
  this thread or task, including FastAPI's thread-pool endpoints and tasks the handler started.
  Outside any call they do nothing and return ``False``.
* ``with context(...)`` applies its values to the call in flight (which keeps them: its event is
  written after the response) **and** to every call started inside the block, e.g. a
  ``@monitor`` function called in it. Blocks nest; the innermost value wins.
* What the application sets wins over what the agent read from the request: an explicit
  principal replaces the header's, an explicit model replaces the body's and the middleware's
  ``model=`` option, and attributes are added to the event's (same name: the application's).
* **An explicit principal is pseudonymised** with the same keyed HMAC as API keys
  (``p_`` + 24 hex digits), so a user id or an e-mail address never reaches the bus. Pass
  ``pseudonymized=True`` only for a value that is already a pseudonym (it is then kept as given,
  cut to 128 characters).
* Attribute values must be scalars (``str``, ``int``, ``float``, ``bool``, ``None``); anything
  else is stored as its ``str()``. At most 64 attributes per call, strings cut to 1,024
  characters, and string values are redacted like prompt text unless ``agent.capture`` is
  ``full``; under ``none`` a string longer than 32 characters or with whitespace becomes
  ``[TEXT]`` (:func:`inferwatch.agent.content.scalar_value`).

The state lives in a :class:`contextvars.ContextVar`, so concurrent requests (threads or asyncio
tasks) never see each other's values.

>>> with context(model="churn-v2", attributes={"tenant": "acme"}):
...     current_values().model, current_values().attributes
('churn-v2', {'tenant': 'acme'})
>>> set_principal("alice")   # no call in flight here
False
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Final

from inferwatch.collectors.event import Scalar

MAX_ATTRIBUTES: Final = 64
MAX_ATTRIBUTE_CHARS: Final = 1024
MAX_PSEUDONYM_CHARS: Final = 128


@dataclass(slots=True)
class Scope:
    """Values set for one call (``is_call``) or one ``with context(...)`` block.

    Scopes form a chain to the outermost; the innermost value of each field wins.
    """

    parent: Scope | None = None
    is_call: bool = False
    principal: str | None = None
    principal_is_pseudonym: bool = False
    model: str | None = None
    attributes: dict[str, Scalar] = field(default_factory=dict)

    def update(
        self,
        *,
        principal: str | None = None,
        pseudonymized: bool = False,
        model: str | None = None,
        attributes: Mapping[str, object] | None = None,
    ) -> None:
        """Set the given values (``None`` leaves a field as it is)."""
        if principal is not None:
            self.principal = str(principal)
            self.principal_is_pseudonym = pseudonymized
        if model is not None:
            self.model = str(model)
        if attributes:
            for key, value in attributes.items():
                if len(self.attributes) >= MAX_ATTRIBUTES and str(key) not in self.attributes:
                    break
                self.attributes[str(key)] = _scalar(value)

    def resolve(self) -> ContextValues:
        """The values in force here: each field from the innermost scope that sets it."""
        chain: list[Scope] = []
        scope: Scope | None = self
        while scope is not None:
            chain.append(scope)
            scope = scope.parent
        values = ContextValues()
        for item in reversed(chain):  # outermost first, so inner scopes overwrite
            if item.principal is not None:
                values.principal = item.principal
                values.principal_is_pseudonym = item.principal_is_pseudonym
            if item.model is not None:
                values.model = item.model
            values.attributes.update(item.attributes)
        return values


@dataclass(slots=True)
class ContextValues:
    """A snapshot of what the application set for a call."""

    principal: str | None = None
    principal_is_pseudonym: bool = False
    model: str | None = None
    attributes: dict[str, Scalar] = field(default_factory=dict)

    def is_empty(self) -> bool:
        """``True`` when the application set nothing."""
        return self.principal is None and self.model is None and not self.attributes


_current: ContextVar[Scope | None] = ContextVar("inferwatch_agent_scope", default=None)


def current_scope() -> Scope | None:
    """The innermost scope of this thread or task, if any."""
    return _current.get()


def current_values() -> ContextValues:
    """What is in force here (empty values outside any call or block)."""
    scope = _current.get()
    return scope.resolve() if scope is not None else ContextValues()


def open_call_scope() -> Scope:
    """A new scope for a call that starts now, under whatever block encloses it."""
    return Scope(parent=_current.get(), is_call=True)


def enter(scope: Scope) -> Token[Scope | None]:
    """Make ``scope`` current; give the token back to :func:`leave` in the same thread or task."""
    return _current.set(scope)


def leave(token: Token[Scope | None]) -> None:
    """Undo :func:`enter`."""
    _current.reset(token)


@contextmanager
def context(
    *,
    principal: str | None = None,
    pseudonymized: bool = False,
    model: str | None = None,
    attributes: Mapping[str, object] | None = None,
) -> Iterator[None]:
    """Set the principal, model and attributes for the call in flight and calls started inside.

    ``principal`` is pseudonymised with the agent's HMAC key unless ``pseudonymized`` is true.
    """
    parent = _current.get()
    block = Scope(parent=parent)
    for scope in (_call_in_flight(parent), block):
        if scope is not None:
            scope.update(principal=principal, pseudonymized=pseudonymized, model=model, attributes=attributes)
    token = _current.set(block)
    try:
        yield
    finally:
        _current.reset(token)


def set_principal(principal: str, *, pseudonymized: bool = False) -> bool:
    """Name the caller of the call in flight (pseudonymised unless ``pseudonymized``)."""
    call = _call_in_flight(_current.get())
    if call is None:
        return False
    call.update(principal=principal, pseudonymized=pseudonymized)
    return True


def set_model(model: str) -> bool:
    """Name the model that serves the call in flight."""
    call = _call_in_flight(_current.get())
    if call is None:
        return False
    call.update(model=model)
    return True


def set_attributes(attributes: Mapping[str, object] | None = None, /, **more: object) -> bool:
    """Add attributes to the events of the call in flight: ``set_attributes(tenant="acme")``."""
    call = _call_in_flight(_current.get())
    if call is None:
        return False
    call.update(attributes={**(attributes or {}), **more})
    return True


def _call_in_flight(scope: Scope | None) -> Scope | None:
    while scope is not None and not scope.is_call:
        scope = scope.parent
    return scope


def _scalar(value: object) -> Scalar:
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else str(value)
    return text[:MAX_ATTRIBUTE_CHARS]
