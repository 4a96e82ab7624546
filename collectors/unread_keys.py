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


def unread_keys(event: InferenceEvent) -> list[str]:
    """``input.<key>`` and ``output.<key>`` for every key of the event's ``input`` and ``output``
    that the model does not define (kept as extras, read by no built-in detector)."""
    found: list[str] = []
    for part, extra in (("input", event.input.model_extra), ("output", event.output.model_extra)):
        if extra:
            found += [f"{part}.{key}" for key in extra]
    return found


def suggested(path: str) -> str | None:
    """The defined field ``path`` (``input.prompt``) was probably meant to be, or ``None``.

    >>> suggested("input.prompt"), suggested("output.lable"), suggested("input.customer_tier")
    ('input.text', 'output.label', None)
    """
    part, _, key = path.partition(".")
    known = KNOWN.get(part, ())
    meant = _NAMED_ELSEWHERE.get(part, {}).get(key.casefold())
    if meant is None:
        close = difflib.get_close_matches(key.casefold(), known, n=1, cutoff=0.75)
        meant = close[0] if close else None
    return f"{part}.{meant}" if meant is not None else None


def described(path: str) -> str:
    """``path`` with the field it was probably meant to be: ``input.prompt (did you mean input.text?)``."""
    meant = suggested(path)
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

    def add(self, keys: Sequence[str]) -> list[str]:
        """Count one event's unread ``keys`` (from :func:`unread_keys`); the keys not seen before."""
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
        return new

    def summary(self, most: int = 5) -> str | None:
        """``12 events carried input keys no built-in detector reads: input.prompt (did you mean
        input.text?)``, or ``None`` when no event did. With several keys, each says in how many
        events it came: ``input.prompt (12; did you mean input.text?), output.reply (3)``."""
        if not self.events:
            return None
        ranked = [key for key, _ in self.keys.most_common()]
        where = " and ".join(sorted({key.partition(".")[0] for key in ranked}))
        shown = []
        for key in ranked[:most]:
            notes = [f"{self.keys[key]:,}"] if len(ranked) > 1 else []
            meant = suggested(key)
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
