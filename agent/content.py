"""What one call carried, as the integrations hand it to the agent, and the capture policy.

:class:`CallContent` is the common result of reading a call, whether from HTTP bodies
(:mod:`inferwatch.agent.extract`) or from a function's arguments and return value
(:mod:`inferwatch.agent.decorator`). It holds one :class:`Row` per event: a batched request
gives several rows that share the call's trace.

The capture mode (``agent.capture``) governs text only:

* ``none``: no prompt or completion text leaves the process; ``chars`` and ``tokens`` still do;
* ``redacted`` (default): text passes through :func:`inferwatch.collectors.redaction.redact`;
* ``full``: text is kept as it was.

Tabular ``features`` are kept in every mode, because drift detection needs them; their string
values are redacted unless the mode is ``full``. Captured text is cut to
:data:`MAX_TEXT_CHARS` so an event stays well under the 1 MiB event limit (``chars`` still
counts all of it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from inferwatch.collectors.event import EventInput, EventOutput, Scalar
from inferwatch.collectors.redaction import capture_text, redact_cut
from inferwatch.collectors.settings import CaptureMode

MAX_FEATURES: Final = 512
MAX_FEATURE_CHARS: Final = 1024


@dataclass(slots=True)
class Row:
    """One event's worth of a call: what went in and what came out."""

    input: EventInput = field(default_factory=EventInput)
    output: EventOutput = field(default_factory=EventOutput)


@dataclass(slots=True)
class CallContent:
    """Everything read from one call; ``rows`` empty means one event with no content."""

    operation: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    max_tokens: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reasons: tuple[str, ...] = ()
    rows: list[Row] = field(default_factory=list)
    attributes: dict[str, Scalar] = field(default_factory=dict)




def text_input(text: str | None, mode: CaptureMode, *, chars: int | None = None) -> EventInput:
    """An :class:`EventInput` for ``text``; ``chars`` defaults to its length."""
    size = chars if chars is not None else (len(text) if text is not None else None)
    return EventInput(text=capture_text(text, mode), chars=size)


def text_output(
    text: str | None, mode: CaptureMode, *, chars: int | None = None, finish_reason: str | None = None
) -> EventOutput:
    """An :class:`EventOutput` for generated ``text``."""
    size = chars if chars is not None else (len(text) if text is not None else None)
    return EventOutput(text=capture_text(text, mode), chars=size, finish_reason=finish_reason)


def as_scalar(value: object) -> tuple[bool, Scalar]:
    """``(True, value)`` for a JSON scalar (NumPy scalars unwrapped), else ``(False, None)``."""
    if value is None or isinstance(value, str | bool | int | float):
        return True, value
    item = getattr(value, "item", None)  # numpy.float64(0.5).item() -> 0.5, without importing numpy
    if callable(item) and getattr(value, "ndim", None) == 0:
        try:
            unwrapped = item()
        except Exception:
            return False, None
        if unwrapped is None or isinstance(unwrapped, str | bool | int | float):
            return True, unwrapped
    return False, None


def features_from(items: Iterable[tuple[object, object]], mode: CaptureMode) -> dict[str, Scalar]:
    """Features from name/value pairs: scalars only, strings redacted unless ``mode`` is full."""
    features: dict[str, Scalar] = {}
    for name, value in items:
        if len(features) >= MAX_FEATURES:
            break
        ok, scalar = as_scalar(value)
        if not ok:
            continue
        if isinstance(scalar, str):
            full = mode is CaptureMode.FULL
            scalar = scalar[:MAX_FEATURE_CHARS] if full else redact_cut(scalar, MAX_FEATURE_CHARS)
        features[str(name)] = scalar
    return features


def mapping_features(row: Mapping[object, object], mode: CaptureMode) -> dict[str, Scalar]:
    """Features from a mapping of name to value."""
    return features_from(row.items(), mode)
