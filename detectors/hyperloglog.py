"""Distinct counting in bounded memory: HyperLogLog registers over stable 64-bit hashes.

A sketch of precision ``p`` is ``2**p`` one-byte registers. An item's 64-bit hash picks a
register with its low ``p`` bits; the register keeps the largest *rank* seen there, one plus
the number of trailing zero bits of the rest of the hash. The number of distinct items is
estimated from the registers (Flajolet et al. 2007), with linear counting while many
registers are still empty, which makes small counts nearly exact. The relative standard error
is about ``1.04 / sqrt(2**p)``: 6.5 % at ``p = 8`` (256 bytes), 13 % at ``p = 6`` (64 bytes),
whether ten or ten million items were added.

Sketches of one precision merge exactly (register-wise maximum), and a sketch folds exactly to
a lower precision, so a per-window sketch can be added to a smaller long-lived one. Hashes come
from :func:`hash64` (BLAKE2b), never from ``hash()``, which differs between processes: a replay
must count the same.

>>> sketch = HyperLogLog(precision=8)
>>> for i in range(1000):
...     sketch.add(hash64(f"prompt {i}"))
>>> 900 < sketch.estimate() < 1100
True
>>> small = HyperLogLog(precision=6)
>>> for i in range(1000):
...     small.add(hash64(f"prompt {i}"))
>>> sketch.folded(6) == bytes(small.registers)    # folding is exact
True
"""

from __future__ import annotations

import hashlib
import math
from functools import cache

MIN_PRECISION = 4
MAX_PRECISION = 16
_INVERSE_POWERS = tuple(2.0**-rank for rank in range(256))


def hash64(data: str | bytes) -> int:
    """A 64-bit hash of ``data`` (text as UTF-8) that is the same in every process, run and replay.

    >>> hash64("hello") == hash64(b"hello"), hash64("hello") == hash64("hello ")
    (True, False)
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def add(registers: bytearray, precision: int, item_hash: int) -> None:
    """Add one 64-bit hash to the registers of a sketch of ``precision`` (in place)."""
    rest = item_hash >> precision
    rank = (rest & -rest).bit_length() if rest else 65 - precision
    index = item_hash & ((1 << precision) - 1)
    if rank > registers[index]:
        registers[index] = rank


def estimate(registers: bytes | bytearray) -> float:
    """The estimated number of distinct hashes added to ``registers``.

    >>> estimate(bytes(64))
    0.0
    """
    m = len(registers)
    empty = registers.count(0)
    if empty:
        linear = m * math.log(m / empty)
        if linear <= 2.5 * m:
            return linear
    alpha = {16: 0.673, 32: 0.697, 64: 0.709}.get(m, 0.7213 / (1.0 + 1.079 / m))
    return alpha * m * m / sum(map(_INVERSE_POWERS.__getitem__, registers))


def merge(a: bytes | bytearray, b: bytes | bytearray) -> bytes:
    """The registers of the union of two sketches of the same precision."""
    if len(a) != len(b):
        raise ValueError(f"cannot merge sketches of {len(a)} and {len(b)} registers")
    return bytes(map(max, a, b))


def fold(registers: bytes | bytearray, precision: int) -> bytes:
    """The registers the same items would have given at the lower ``precision``, exactly.

    The index bits dropped become the lowest bits of the rest of the hash: a register whose
    dropped bits are not all zero has rank one plus their trailing zeros; one whose dropped
    bits are all zero has its rank raised by their number.
    """
    source = len(registers).bit_length() - 1
    if not MIN_PRECISION <= precision <= source:
        raise ValueError(f"cannot fold a sketch of precision {source} to precision {precision}")
    width = 1 << precision
    rows = [bytes(registers[k * width:(k + 1) * width]).translate(_fold_table(source - precision, k))
            for k in range(len(registers) // width)]
    return rows[0] if len(rows) == 1 else bytes(map(max, *rows))


@cache
def _fold_table(dropped: int, high_bits: int) -> bytes:
    if high_bits == 0:
        return bytes([0, *(min(rank + dropped, 255) for rank in range(1, 256))])
    return bytes([0, *([(high_bits & -high_bits).bit_length()] * 255)])


class HyperLogLog:
    """A distinct counter of ``2**precision`` one-byte registers; see the module docstring."""

    __slots__ = ("precision", "registers")

    def __init__(self, precision: int = 8) -> None:
        if not MIN_PRECISION <= precision <= MAX_PRECISION:
            raise ValueError(f"precision must be in [{MIN_PRECISION}, {MAX_PRECISION}], got {precision}")
        self.precision = precision
        self.registers = bytearray(1 << precision)

    def add(self, item_hash: int) -> None:
        """Add one item, given as its 64-bit hash (:func:`hash64`)."""
        add(self.registers, self.precision, item_hash)

    def estimate(self) -> float:
        """The estimated number of distinct items added."""
        return estimate(self.registers)

    def folded(self, precision: int) -> bytes:
        """The registers at a lower ``precision`` (for merging into a smaller sketch)."""
        return fold(self.registers, precision)
