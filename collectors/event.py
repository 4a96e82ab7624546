"""The event contract ``inferwatch.event/1`` and its JSON codec.

One :class:`InferenceEvent` describes one inference call. Fields follow the table in
``docs/events.md``; unknown fields are kept (``extra="allow"``) so that a newer agent's
additions survive a trip through an older detector. Decoding is pydantic-core's Rust JSON
parser; anything that does not decode raises :class:`MalformedEvent` with a reason a person
can act on, and never anything else.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SCHEMA: Final = "inferwatch.event/1"
SCHEMA_MAJOR: Final = 1
LATEST_TIME: Final = datetime(9999, 1, 1, tzinfo=UTC)
"""Events at or after this are refused: the event-time window such an event opens must end at a
time a datetime can hold (an event at 9999-12-31T23:59:30Z used to stop the pipeline)."""
MAX_EVENT_BYTES: Final = 1 << 20  # 1 MiB: far above a redacted chat turn, far below a memory problem

Scalar = str | int | float | bool | None
_SCHEMA_RE = re.compile(r"^inferwatch\.event/(\d+)(?:\.\d+)?$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")


class MalformedEvent(ValueError):
    """An event that cannot be accepted; ``reason`` says what is wrong and where."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_schema(value: str) -> str:
    """``value`` if it names a schema of the major version this reader knows, else ValueError."""
    match = _SCHEMA_RE.match(value)
    if match is None:
        raise ValueError(f"schema must look like 'inferwatch.event/1', got {value!r}")
    if int(match.group(1)) != SCHEMA_MAJOR:
        raise ValueError(
            f"schema {value!r} is a major version this reader does not know "
            f"(it reads {SCHEMA}); upgrade inferwatch on the detector side"
        )
    return value


def check_ids(trace_id: str | None, span_id: str | None) -> tuple[str | None, str | None]:
    """The OpenTelemetry trace and span ids if they are well formed (or absent), else ValueError."""
    if trace_id is not None and not _HEX32.match(trace_id):
        raise ValueError("trace_id must be 32 lowercase hex digits (an OpenTelemetry trace id)")
    if span_id is not None and not _HEX16.match(span_id):
        raise ValueError("span_id must be 16 lowercase hex digits (an OpenTelemetry span id)")
    return trace_id, span_id


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    features: dict[str, Scalar] | None = None
    text: str | None = None
    chars: Annotated[int, Field(ge=0)] | None = None
    tokens: Annotated[int, Field(ge=0)] | None = None


class EventInput(_Part):
    """What went into the model: tabular ``features`` or (redacted) ``text``, and its size."""


class EventOutput(_Part):
    """What came out: a ``label`` and ``score`` for classifiers, ``text`` for generators."""

    label: str | int | float | bool | None = None
    score: float | None = None
    finish_reason: str | None = None


class AgentInfo(BaseModel):
    """The agent instance that captured the event; gaps in ``seq`` reveal lost events.

    ``dropped`` is how many events this agent instance had lost (dropped and counted: queue full,
    bus unavailable, spool full, ...) when it sent this one; a producer that does not count
    leaves it out. The ``integrity`` detector compares the two: gaps the agent counted itself,
    and gaps it did not (lost after the agent).
    """

    model_config = ConfigDict(extra="allow")

    id: str
    seq: Annotated[int, Field(ge=0)]
    version: str | None = None
    dropped: Annotated[int, Field(ge=0)] | None = None


class InferenceEvent(BaseModel):
    """One inference call, as the agent saw it (schema ``inferwatch.event/1``).

    >>> ev = InferenceEvent(id="e1", time="2026-01-01T00:00:00Z", service="svc", model="m")
    >>> decode_event(encode_event(ev)).model == "m"
    True
    """

    # NaN and infinity are not JSON: an event carrying them could not be stored or read back.
    model_config = ConfigDict(extra="allow", populate_by_name=True, allow_inf_nan=False)

    schema_: str = Field(default=SCHEMA, alias="schema")
    id: Annotated[str, Field(min_length=1, max_length=128)]
    time: datetime
    duration_ms: Annotated[float, Field(ge=0)] = 0.0
    service: str = "unknown"
    model: str | None = None
    model_version: str | None = None
    operation: str | None = None
    endpoint: str | None = None
    principal: str | None = None
    client_ip: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    status: int | None = None
    error: str | None = None
    input: EventInput = Field(default_factory=EventInput)
    output: EventOutput = Field(default_factory=EventOutput)
    attributes: dict[str, Scalar] = Field(default_factory=dict)
    agent: AgentInfo | None = None

    @field_validator("schema_")
    @classmethod
    def _known_major(cls, value: str) -> str:
        return check_schema(value)

    @field_validator("time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("time must carry a UTC offset (RFC 3339, e.g. 2026-01-01T00:00:00Z)")
        try:
            value = value.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first representable instant
            raise ValueError("time is out of range (before 0001-01-01 or after 9999-12-31 in UTC)") from None
        if value >= LATEST_TIME:
            raise ValueError(f"time is out of range (not before {LATEST_TIME:%Y-%m-%d} in UTC)")
        return value

    @field_validator("trace_id")
    @classmethod
    def _trace_hex(cls, value: str | None) -> str | None:
        return check_ids(value, None)[0]

    @field_validator("span_id")
    @classmethod
    def _span_hex(cls, value: str | None) -> str | None:
        return check_ids(None, value)[1]

    @property
    def ts(self) -> float:
        """Event time as Unix seconds, the clock every detector runs on."""
        return self.time.timestamp()

    @property
    def extra_fields(self) -> dict[str, Any]:
        """Fields this reader does not know, kept as they came."""
        return dict(self.model_extra or {})


class PartView(Protocol):
    """What a bulk reader sees of an event's ``input`` (see :class:`EventView`)."""

    @property
    def features(self) -> Mapping[str, Scalar] | None: ...
    @property
    def text(self) -> str | None: ...
    @property
    def chars(self) -> int | None: ...
    @property
    def tokens(self) -> int | None: ...


class OutputView(PartView, Protocol):
    """What a bulk reader sees of an event's ``output``."""

    @property
    def label(self) -> str | int | float | bool | None: ...
    @property
    def score(self) -> float | None: ...
    @property
    def finish_reason(self) -> str | None: ...


class AgentView(Protocol):
    """What a bulk reader sees of an event's ``agent`` (see :class:`AgentInfo`)."""

    @property
    def id(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def dropped(self) -> int | None: ...


class EventView(Protocol):
    """The fields of an event a bulk reader may rely on, read-only.

    Both :class:`InferenceEvent` and the lighter ``LiteEvent`` of
    :mod:`inferwatch.collectors.fast_event` (what ``inferwatch replay`` decodes to when every
    detector takes views) have them, with the same values for the same line. Not here: ``time``
    as a datetime (use ``ts``), ``attributes``, the agent's ``version`` and fields this reader does
    not know.
    """

    @property
    def id(self) -> str: ...
    @property
    def ts(self) -> float: ...
    @property
    def service(self) -> str: ...
    @property
    def model(self) -> str | None: ...
    @property
    def model_version(self) -> str | None: ...
    @property
    def operation(self) -> str | None: ...
    @property
    def endpoint(self) -> str | None: ...
    @property
    def principal(self) -> str | None: ...
    @property
    def client_ip(self) -> str | None: ...
    @property
    def trace_id(self) -> str | None: ...
    @property
    def span_id(self) -> str | None: ...
    @property
    def status(self) -> int | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def duration_ms(self) -> float: ...
    @property
    def input(self) -> PartView: ...
    @property
    def output(self) -> OutputView: ...
    @property
    def agent(self) -> AgentView | None: ...


def encode_event(event: InferenceEvent) -> bytes:
    """Serialise an event to compact JSON bytes (the bus and file format)."""
    return event.model_dump_json(by_alias=True, exclude_none=True).encode()


def event_to_dict(event: InferenceEvent) -> dict[str, Any]:
    """The event as a JSON-ready dict, as :func:`encode_event` would write it."""
    return event.model_dump(mode="json", by_alias=True, exclude_none=True)


def oversized(size: int, max_bytes: int = MAX_EVENT_BYTES) -> str:
    """The reason an event of ``size`` bytes is refused (also for a line never read whole)."""
    return f"event is {size} bytes, over the {max_bytes}-byte limit"


def decode_event(data: bytes | str, *, max_bytes: int = MAX_EVENT_BYTES) -> InferenceEvent:
    """Parse and validate one event; raise :class:`MalformedEvent` naming the problem.

    A feature (or attribute) that is ``NaN`` or ``±Infinity`` (not JSON, but what Python's
    ``json.dumps`` writes for a pandas gap) is read as missing (``null``), as the agent records it
    and a baseline file reads it, instead of refusing the whole event: a surge of such gaps is
    drift to report.

    >>> decode_event('{"id":"e1","time":"2026-01-01T00:00:00Z","service":"s","model":"m",'
    ...              '"input":{"features":{"x":NaN,"y":1.5}}}').input.features
    {'x': None, 'y': 1.5}
    """
    if len(data) > max_bytes:
        raise MalformedEvent(oversized(len(data), max_bytes))
    try:
        return InferenceEvent.model_validate_json(data)
    except ValidationError as exc:
        cleaned = _non_finite_features_as_missing(data, exc)
        if cleaned is not None:
            try:
                return InferenceEvent.model_validate_json(cleaned)
            except ValidationError as again:
                exc = again
        raise MalformedEvent(_describe(exc)) from None


def _non_finite_features_as_missing(data: bytes | str, exc: ValidationError) -> str | None:
    """``data`` again with ``NaN``/``±Infinity`` features as ``null``, when that is what failed;
    else ``None``. Only on the error path: an ordinary event pays nothing for it."""
    if not any((err["loc"][1:2] == ("features",) or err["loc"][:1] == ("attributes",))
               and isinstance(err.get("input"), float) and not math.isfinite(err["input"])
               for err in exc.errors(include_url=False)):
        return None
    try:
        doc = json.loads(data)  # Python's reader takes NaN and Infinity
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    places = [doc.get(part, {}).get("features") if isinstance(doc.get(part), dict) else None
              for part in ("input", "output")]
    for features in [*places, doc.get("attributes")]:
        if isinstance(features, dict):
            for key, value in features.items():
                if isinstance(value, float) and not math.isfinite(value):
                    features[key] = None
    return json.dumps(doc, allow_nan=True)


def salvage_agent(data: bytes | str) -> tuple[str, int] | None:
    """``(agent.id, agent.seq)`` of a line :func:`decode_event` refused, when it still carries
    them (a JSON object whose ``agent`` has a non-empty string ``id`` and an integer ``seq`` ≥ 0);
    else ``None``. Lets the ``integrity`` detector count a refused event as refused, not lost.

    >>> salvage_agent(b'{"id":"e1","time":"yesterday","agent":{"id":"a1","seq":7}}')
    ('a1', 7)
    >>> salvage_agent(b'not json') is None, salvage_agent(b'{"agent":{"id":"a1","seq":true}}') is None
    (True, True)
    """
    if len(data) > MAX_EVENT_BYTES:
        return None
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    agent = doc.get("agent") if isinstance(doc, dict) else None
    if not isinstance(agent, dict):
        return None
    agent_id, seq = agent.get("id"), agent.get("seq")
    if isinstance(agent_id, str) and agent_id and type(seq) is int and seq >= 0:
        return agent_id, seq
    return None


_FIRST_LINE_AT = re.compile(r" at line 1 column (\d+)$")


def _not_json(message: str, raw: object) -> str:
    """pydantic's ``Invalid JSON: … at line 1 column 2`` for one event (a line of a file, a record
    on the bus), as a reader would say it."""
    detail = message.removeprefix("Invalid JSON: ")
    if isinstance(raw, str | bytes) and not raw.strip():
        return "not JSON: empty"
    if detail.startswith("EOF while parsing"):
        return "not JSON: it ends inside its JSON (cut short, or one object written over several lines?)"
    return "not JSON: " + _FIRST_LINE_AT.sub(r" at column \1", detail)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        if err["type"] == "json_invalid":
            parts.append(_not_json(err["msg"], err.get("input")))
            continue
        where = ".".join(str(p) for p in err["loc"]) or "(document)"
        hint = ""
        if where == "time" and isinstance(err.get("input"), str | int | float):
            form = "" if err["type"] == "value_error" else "; expected RFC 3339, e.g. 2026-01-01T12:00:00.5Z"
            hint = f" (got {str(err['input'])[:40]!r}{form})"
        if err["type"] == "finite_number" and isinstance(err.get("input"), float):
            hint = " (NaN and Infinity are not JSON: write null for a missing value, or leave the field out)"
        parts.append(f"{where}: {err['msg']}{hint}")
    more = exc.error_count() - len(parts)
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)
