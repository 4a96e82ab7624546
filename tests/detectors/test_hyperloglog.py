"""HyperLogLog distinct counting: accuracy, exact merge and fold, stable hashes."""

from __future__ import annotations

import doctest
import subprocess
import sys

import pytest

from inferwatch.detectors import hyperloglog
from inferwatch.detectors.hyperloglog import HyperLogLog, estimate, fold, hash64, merge


def sketch_of(items: range, precision: int, tag: str = "") -> HyperLogLog:
    sketch = HyperLogLog(precision)
    for i in items:
        sketch.add(hash64(f"{tag}item {i}"))
    return sketch


@pytest.mark.parametrize(("precision", "tolerance"), [(6, 0.4), (8, 0.2), (12, 0.06)])
@pytest.mark.parametrize("n", [1, 10, 100, 1_000, 30_000])
def test_estimates_are_within_a_few_standard_errors(precision: int, tolerance: float, n: int) -> None:
    assert sketch_of(range(n), precision).estimate() == pytest.approx(n, rel=tolerance)


def test_small_counts_are_nearly_exact() -> None:
    for n in (1, 2, 5, 10, 20):
        assert round(sketch_of(range(n), 12).estimate()) == n


def test_repeats_do_not_count() -> None:
    sketch = sketch_of(range(50), 8)
    before = bytes(sketch.registers)
    for i in range(50):
        sketch.add(hash64(f"item {i}"))
    assert bytes(sketch.registers) == before


def test_merge_is_the_sketch_of_the_union() -> None:
    a, b = sketch_of(range(0, 600), 8), sketch_of(range(400, 1000), 8)
    assert merge(a.registers, b.registers) == bytes(sketch_of(range(1000), 8).registers)
    with pytest.raises(ValueError, match="merge"):
        merge(a.registers, bytes(64))


@pytest.mark.parametrize("n", [0, 3, 64, 5_000])
@pytest.mark.parametrize(("high", "low"), [(8, 6), (12, 6), (12, 8), (8, 8)])
def test_folding_equals_sketching_at_the_lower_precision(n: int, high: int, low: int) -> None:
    assert fold(sketch_of(range(n), high).registers, low) == bytes(sketch_of(range(n), low).registers)


def test_fold_refuses_to_raise_precision() -> None:
    with pytest.raises(ValueError, match="precision"):
        fold(bytes(64), 8)


def test_empty_sketch_counts_zero_and_precision_is_checked() -> None:
    assert estimate(bytes(256)) == 0.0
    with pytest.raises(ValueError, match="precision"):
        HyperLogLog(3)


def test_hash_is_the_same_in_another_process() -> None:
    """``hash()`` of a string changes between processes; a replay must count the same."""
    code = "from inferwatch.detectors.hyperloglog import hash64; print(hash64('customer 1001'))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(other.stdout) == hash64("customer 1001")
    assert hash64("\ud800 lone surrogate") != hash64("")  # never raises on odd text


def test_docstring_examples() -> None:
    assert doctest.testmod(hyperloglog).failed == 0
