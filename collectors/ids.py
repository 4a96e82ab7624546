"""Time-sortable identifiers (UUIDv7, RFC 9562) for events and incidents."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid

PSEUDONYM = re.compile(r"p_[0-9a-f]{24}")
"""A principal's pseudonym as the agent writes it: ``p_`` and 24 hex digits (keyed HMAC)."""
_CUT_SHORT = re.compile(r"p_[0-9a-f]{1,23}")


def cut_short_pseudonym(value: str) -> bool:
    """Whether ``value`` is the start of a pseudonym, not a whole one (copied short).

    >>> cut_short_pseudonym("p_0f3a"), cut_short_pseudonym("p_" + "0" * 24), cut_short_pseudonym("p_bob")
    (True, False, False)
    """
    return _CUT_SHORT.fullmatch(value) is not None

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7(unix_ms: int | None = None) -> str:
    """Return a UUIDv7 string: 48 bits of Unix milliseconds, then randomness.

    Within one process, ids made in the same millisecond still sort in creation order
    (a 12-bit counter fills ``rand_a``), so ``sorted(ids)`` is creation order.

    >>> a, b = uuid7(), uuid7()
    >>> a < b and uuid.UUID(a).version == 7
    True
    """
    global _last_ms, _counter
    with _lock:
        ms = int(time.time() * 1000) if unix_ms is None else unix_ms
        if ms <= _last_ms and unix_ms is None:
            ms = _last_ms
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                ms += 1
                _counter = 0
        else:
            _counter = int.from_bytes(os.urandom(2), "big") & 0x3FF
        _last_ms = max(_last_ms, ms)
        counter = _counter
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= counter << 64
    value |= 0b10 << 62
    value |= rand_b
    return str(uuid.UUID(int=value))
