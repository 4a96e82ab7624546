"""A caller's recent prompts, to recognise templated and near-duplicate sweeps.

Extraction and enumeration through a text model look like one prompt sent over and over with a
slot filled differently each time (``What is the capital of {country}?``, ``Classify the
sentiment: {sentence}``) or with small edits. Per caller, :class:`PromptHistory` keeps the
SimHash fingerprints and checksums of the last few distinct prompts, the start and end of the
previous one, and whether each of the last 64 prompts was part of a sweep. All comparisons are
on normalised text (:func:`~inferwatch.detectors.sketches.normalise_text`), so randomised
casing, white space and punctuation do not hide a template. A new prompt is

* an **exact repeat** when its normalised text equals one of the last few: a retry or a health
  check, never part of a sweep;
* a **near-duplicate** when its SimHash is within ``simhash_bits`` of one of the last few;
* **templated** when it shares at least ``template_chars`` characters of fixed text at its start
  and end with the previous prompt and what differs (the slot) is at most ``max_slot_chars``
  long in both. A batch job that wraps whole documents in one instruction has long slots and
  is not a sweep; a sweep over countries, ids or sentences has short ones.

>>> history = PromptHistory(size=4)
>>> [history.add(normalise_prompt(f"What is the capital of {c}?"), simhash_bits=10, template_chars=16,
...              max_slot_chars=80).member for c in ("France", "Chad", "Peru")]
[False, True, True]
>>> history.add(normalise_prompt("WHAT is the capital of   PERU"), simhash_bits=10, template_chars=16,
...             max_slot_chars=80).repeat
True
>>> history.recent, history.members
(4, 2)
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any, Final

from inferwatch.collectors.event import InferenceEvent
from inferwatch.detectors.sketches import hamming64, normalise_text, simhash64, text_tag
from inferwatch.detectors.state import IdSample, note_model

RING: Final = 64
"""Prompts over which the sweep share is measured (the last 64 a caller sent)."""
KEPT_CHARS: Final = 64
"""Characters of the previous prompt's start and end kept to find a template."""
LADDER: Final = (96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
"""Longer shared starts and ends are recognised by checksums of prefixes (suffixes) of these
lengths, so that a long fixed instruction with a short slot is a template too."""
LONG_PROMPT_HALF: Final = 4096
EXAMPLE_CHARS: Final = 40
"""Characters of a template's fixed start (and end) shown in evidence."""
SAMPLE_IDS: Final = 10


@dataclass(frozen=True)
class PromptMatch:
    """How a prompt relates to the caller's previous ones; ``head``/``tail`` are the shared
    fixed text when it is templated (empty otherwise)."""

    repeat: bool = False
    near_duplicate: bool = False
    templated: bool = False
    head: str = ""
    tail: str = ""

    @property
    def member(self) -> bool:
        """Part of a sweep: a near-duplicate or a fill of a template, not an exact repeat."""
        return self.near_duplicate or self.templated


_REPEAT: Final = PromptMatch(repeat=True)


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _common_suffix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(reversed(a), reversed(b), strict=False):
        if x != y:
            break
        n += 1
    return n


def normalise_prompt(text: str) -> str:
    """:func:`~inferwatch.detectors.sketches.normalise_text` of a prompt; of a very long one
    (over 8 KiB), of its first and last 4 KiB only, which is all the comparisons use.

    >>> normalise_prompt("Ignore  THIS, please!")
    'ignore this please'
    """
    if len(text) > 2 * LONG_PROMPT_HALF:
        text = text[:LONG_PROMPT_HALF] + " " + text[-LONG_PROMPT_HALF:]
    return normalise_text(text)


def _ends(text: str) -> array[int] | None:
    """Checksums of the text's first and last ``n`` characters for ``n`` in :data:`LADDER`
    shorter than the text (0 for the others); ``None`` when the text is not longer than 96."""
    if len(text) <= LADDER[0]:
        return None
    tags = array("I", bytes(8 * len(LADDER)))
    for i, n in enumerate(LADDER):
        if n >= len(text):
            break
        tags[i] = text_tag(text[:n]) or 1
        tags[len(LADDER) + i] = text_tag(text[-n:]) or 1
    return tags


class PromptHistory:
    """The last ``size`` distinct prompts of one caller (fingerprints only) and sweep flags.

    Memory: ``16 * size`` bytes of fingerprints and checksums, up to 128 characters and 20
    checksums of the previous prompt's ends, and a 64-bit flag ring: about 800 bytes with
    Python's object overheads at the default ``size`` of 8.
    """

    __slots__ = ("fingerprints", "flags", "pos", "prev_ends", "prev_head", "prev_len", "prev_tail", "recent",
                 "size")

    def __init__(self, size: int) -> None:
        self.fingerprints = array("Q", bytes(16 * size))  # size SimHashes, then size checksums
        self.size = 0
        self.pos = 0
        self.prev_head = ""
        self.prev_tail = ""
        self.prev_len = 0
        self.prev_ends: array[int] | None = None
        self.flags = 0
        """Bit *i* set when the prompt *i* places back was part of a sweep."""
        self.recent = 0
        """Prompts the flags cover (at most :data:`RING`)."""

    @property
    def members(self) -> int:
        """Sweep members among the last :attr:`recent` prompts."""
        return self.flags.bit_count()

    @property
    def share(self) -> float:
        """Share of the last :attr:`recent` prompts that were part of a sweep."""
        return self.members / self.recent if self.recent else 0.0

    def add(self, normalised: str, *, simhash_bits: int, template_chars: int,
            max_slot_chars: int) -> PromptMatch:
        """Compare a (normalised, non-empty) prompt with the previous ones, then remember it."""
        capacity = len(self.fingerprints) // 2
        tag = text_tag(normalised)
        if tag in self.fingerprints[capacity : capacity + self.size]:
            self._push(False)
            return _REPEAT
        sim = simhash64(normalised)
        near = any(hamming64(sim, old) <= simhash_bits for old in self.fingerprints[: self.size])
        ends = _ends(normalised)
        head, tail = self._template(normalised, ends, template_chars, max_slot_chars)
        match = PromptMatch(near_duplicate=near, templated=head is not None,
                            head=head or "", tail=tail or "")
        self._push(match.member)
        self.fingerprints[self.pos] = sim
        self.fingerprints[capacity + self.pos] = tag
        self.pos = (self.pos + 1) % capacity
        self.size = min(self.size + 1, capacity)
        self.prev_head = normalised[:KEPT_CHARS]
        self.prev_tail = normalised[-KEPT_CHARS:]
        self.prev_len = len(normalised)
        self.prev_ends = ends
        return match

    def _push(self, member: bool) -> None:
        self.flags = ((self.flags << 1) | int(member)) & ((1 << RING) - 1)
        self.recent = min(self.recent + 1, RING)

    def _template(self, text: str, ends: array[int] | None, template_chars: int,
                  max_slot_chars: int) -> tuple[str | None, str | None]:
        if not self.prev_len:
            return None, None
        head = _common_prefix(self.prev_head, text[:KEPT_CHARS])
        tail = _common_suffix(self.prev_tail, text[-KEPT_CHARS:])
        prev = self.prev_ends
        if ends is not None and prev is not None:  # both long: the shared part may go on
            steps = len(LADDER)
            if head == KEPT_CHARS:
                head = max((n for i, n in enumerate(LADDER) if ends[i] and ends[i] == prev[i]), default=head)
            if tail == KEPT_CHARS:
                tail = max((n for i, n in enumerate(LADDER, start=steps) if ends[i] and ends[i] == prev[i]),
                           default=tail)
        tail = min(tail, min(len(text), self.prev_len) - head)
        fixed = head + tail
        if fixed < template_chars or max(len(text), self.prev_len) - fixed > max_slot_chars:
            return None, None
        return text[:head], text[len(text) - tail :]


@dataclass
class SweepWindow:
    """One caller's prompts in the open window: counts, the template they share, sample ids."""

    prompts: int = 0
    repeats: int = 0
    near_duplicates: int = 0
    templated: int = 0
    members: int = 0
    head: str | None = None
    tail: str | None = None
    models: list[str] = field(default_factory=list)
    ids: IdSample = field(default_factory=lambda: IdSample(limit=SAMPLE_IDS))

    def add(self, match: PromptMatch, event: InferenceEvent) -> None:
        """Count one prompt; a sweep member's id is sampled and its template folded in."""
        self.prompts += 1
        self.repeats += match.repeat
        self.near_duplicates += match.near_duplicate
        self.templated += match.templated
        note_model(self.models, event.model)
        if not match.member:
            return
        self.members += 1
        self.ids.add(event)
        if match.templated:
            # The template is what every templated pair of the window shares.
            if self.head is None or self.tail is None:
                self.head, self.tail = match.head, match.tail
            else:
                self.head = self.head[: _common_prefix(self.head, match.head)]
                self.tail = self.tail[len(self.tail) - _common_suffix(self.tail, match.tail) :]

    def example(self) -> str | None:
        """The template with its slot as ``{…}``, at most 40 characters either side, or ``None``.

        >>> SweepWindow(head="what is the capital of ", tail="").example()
        'what is the capital of {…}'
        """
        head, tail = (self.head or "")[:EXAMPLE_CHARS], (self.tail or "")[-EXAMPLE_CHARS:]
        return f"{head}{{…}}{tail}" if head.strip() or tail.strip() else None

    def evidence(self, history: PromptHistory) -> dict[str, Any]:
        """The counts behind a sweep finding, JSON-ready."""
        return {
            "recent_prompts": history.recent,
            "sweep_prompts": history.members,
            "sweep_share": round(history.share, 4),
            "prompts_in_window": self.prompts,
            "sweep_prompts_in_window": self.members,
            "near_duplicates_in_window": self.near_duplicates,
            "templated_in_window": self.templated,
            "exact_repeats_in_window": self.repeats,
            "example_template": self.example(),
        }
