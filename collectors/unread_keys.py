"""Keys of an event's ``input`` and ``output`` that the event model does not define.

The contract keeps fields it does not know (docs/events.md), so a newer agent's additions survive
an older detector. The flip side: a prompt written under ``input.prompt`` instead of
``input.text`` is accepted and kept, and read by no detector — no injection check, no hint why.
:func:`unread_keys` names such keys, :func:`suggested` the field probably meant, and
:class:`UnreadKeys` counts them over a file or a stream so that ``inferwatch replay``,
``inferwatch scan`` and the detector service can say so without refusing the event.

>>> from inferwatch.collectors.event import decode_event
>>> event = decode_event(b'{"id":"e1","time":"2026-01-01T00:00:00Z","input":{"prompt":"hi"}}')
>>> unread_keys(event)
['input.prompt']
>>> seen = UnreadKeys()
>>> seen.add(unread_keys(event))
['input.prompt']
>>> seen.summary()
'1 event carried input keys no built-in detector reads: input.prompt (did you mean input.text?)'
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Sequence
from typing import Final

from inferwatch.collectors.event import EventInput, EventOutput, InferenceEvent

KNOWN: Final[dict[str, tuple[str, ...]]] = {
    "input": tuple(EventInput.model_fields),
    "output": tuple(EventOutput.model_fields),
}
"""The keys of ``input`` and ``output`` the event model defines: the ones detectors read."""

# Names other tools give these fields, too far from ours in spelling for difflib to find.
_NAMED_ELSEWHERE: Final[dict[str, dict[str, str]]] = {
    "input": dict.fromkeys(("prompt", "prompts", "content", "message", "messages", "query", "question",
                            "instruction", "instructions", "input", "body"), "text")
    | {"prompt_tokens": "tokens", "input_tokens": "tokens", "length": "chars"},
    "output": dict.fromkeys(("completion", "completions", "response", "answer", "content", "message",
                             "reply", "generated_text", "output", "choices"), "text")
    | {"completion_tokens": "tokens", "output_tokens": "tokens", "prediction": "label", "class": "label",
       "probability": "score", "confidence": "score", "stop_reason": "finish_reason"},
}


_TOP_LEVEL: Final[dict[str, str]] = {
    "features": "input.features", "prompt": "input.text", "text": "input.text", "input_text": "input.text",
    "label": "output.label", "prediction": "output.label", "score": "output.score",
    "response": "output.text", "completion": "output.text", "output_text": "output.text",
}
"""Fields of ``input`` and ``output`` written at the top of the event instead. Other unknown top
keys are not named: a newer agent's fields are kept there, as the contract intends."""


def unread_keys(event: InferenceEvent) -> list[str]:
    """``input.<key>`` and ``output.<key>`` for every key of the event's ``input`` and ``output``
    that the model does not define (kept as extras, read by no built-in detector), and top-level
    keys that name one of their fields (``features``, ``prompt``, ``label``, ...)."""
    found: list[str] = [key for key in event.model_extra or () if key in _TOP_LEVEL]
    for part, extra in (("input", event.input.model_extra), ("output", event.output.model_extra)):
        if extra:
            found += [f"{part}.{key}" for key in extra]
    return found


def suggested(path: str, scalar: bool = False) -> str | None:
    """The defined field ``path`` (``input.prompt``) was probably meant to be, or ``None``. An
    input key holding a plain value (``scalar``: a number, text, boolean) that is no other field's
    name is a tabular feature written beside ``input.features`` instead of in it.

    >>> suggested("input.prompt"), suggested("output.lable"), suggested("input.customer_tier")
    ('input.text', 'output.label', None)
    >>> suggested("input.customer_tier", scalar=True)
    'input.features.customer_tier'
    """
    if path in _TOP_LEVEL:
        return _TOP_LEVEL[path]
    part, _, key = path.partition(".")
    known = KNOWN.get(part, ())
    meant = _NAMED_ELSEWHERE.get(part, {}).get(key.casefold())
    if meant is None:
        close = difflib.get_close_matches(key.casefold(), known, n=1, cutoff=0.75)
        meant = close[0] if close else None
    if meant is None and part == "input" and scalar:
        meant = f"features.{key}"
    return f"{part}.{meant}" if meant is not None else None


def holds_scalar(event: InferenceEvent, path: str) -> bool:
    """Whether the unread key ``path`` of ``event`` (``input.x``) holds a plain value."""
    part, _, key = path.partition(".")
    if part not in KNOWN:
        return False
    extra = (event.input if part == "input" else event.output).model_extra or {}
    return isinstance(extra.get(key), str | int | float | bool)


def described(path: str, scalar: bool = False) -> str:
    """``path`` with the field it was probably meant to be: ``input.prompt (did you mean input.text?)``."""
    meant = suggested(path, scalar)
    return f"{path} (did you mean {meant}?)" if meant else path


class UnreadKeys:
    """How many events carried input or output keys no built-in detector reads, and which keys.

    At most ``max_keys`` distinct keys are remembered (a stream of ever-new keys must not grow
    without bound); events are counted all the same.
    """

    def __init__(self, max_keys: int = 100) -> None:
        self.max_keys = max_keys
        self.events = 0
        """Events that carried at least one such key."""
        self.keys: Counter[str] = Counter()
        """Events per key (the first ``max_keys`` keys seen)."""
        self.scalar: set[str] = set()
        """Keys first seen holding a plain value (see :func:`suggested`)."""

    def add(self, keys: Sequence[str], event: InferenceEvent | None = None) -> list[str]:
        """Count one event's unread ``keys`` (from :func:`unread_keys`, of ``event`` when given);
        the keys not seen before."""
        if not keys:
            return []
        self.events += 1
        new: list[str] = []
        for key in keys:
            if key in self.keys:
                self.keys[key] += 1
            elif len(self.keys) < self.max_keys:
                self.keys[key] = 1
                new.append(key)
                if event is not None and holds_scalar(event, key):
                    self.scalar.add(key)
        return new

    def suggested(self, key: str) -> str | None:
        """:func:`suggested` for a key counted here."""
        return suggested(key, key in self.scalar)

    def summary(self, most: int = 5) -> str | None:
        """``12 events carried input keys no built-in detector reads: input.prompt (did you mean
        input.text?)``, or ``None`` when no event did. With several keys, each says in how many
        events it came: ``input.prompt (12; did you mean input.text?), output.reply (3)``."""
        if not self.events:
            return None
        ranked = [key for key, _ in self.keys.most_common()]
        parts = {key.partition(".")[0] if "." in key else "top-level" for key in ranked}
        where = " and ".join(sorted(parts, key=["top-level", "input", "output"].index))
        shown = []
        for key in ranked[:most]:
            notes = [f"{self.keys[key]:,}"] if len(ranked) > 1 else []
            meant = self.suggested(key)
            if meant is not None:
                notes.append(f"did you mean {meant}?")
            shown.append(f"{key} ({'; '.join(notes)})" if notes else key)
        listing = ", ".join(shown)
        if len(ranked) > most:
            listing += f" and {len(ranked) - most} more"
        if len(self.keys) >= self.max_keys:
            listing += f" (keys past the first {self.max_keys} were not counted)"
        noun = "event" if self.events == 1 else "events"
        return f"{self.events:,} {noun} carried {where} keys no built-in detector reads: {listing}"
