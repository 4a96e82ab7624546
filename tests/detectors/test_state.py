"""RowIndex and BaselineTable: the flat per-caller state of request_rate, token_abuse and
behaviour_anomaly, bounded by LRU (in batches) and by event-time TTL."""

from __future__ import annotations

import random
from collections import OrderedDict

import pytest

from inferwatch.detectors.state import EVICT_SHARE, BaselineTable, RowIndex


def test_matches_an_exact_lru_when_batches_are_one_key() -> None:
    """Below EVICT_SHARE keys a batch is one key: the index is an exact LRU with a TTL."""
    rng = random.Random(3)
    index = RowIndex(max_keys=20, ttl_s=8.0)
    reference: OrderedDict[str, float] = OrderedDict()
    evicted = expired = 0
    ts = 0.0
    for step in range(5_000):
        ts += rng.random()
        key = f"k{rng.randrange(60)}"
        if key in reference:
            reference[key] = max(reference[key], ts)
            reference.move_to_end(key)
        else:
            if len(reference) >= 20:
                reference.popitem(last=False)
                evicted += 1
            reference[key] = ts
        index.row(key, ts)
        if step % 97 == 0:
            for old in [k for k, seen in reference.items() if seen < ts - 8.0]:
                del reference[old]
                expired += 1
            index.expire(ts)
        assert set(index.keys()) == set(reference)
    assert (index.evicted, index.expired) == (evicted, expired)
    assert evicted > 100
    assert expired > 0


def test_a_full_index_evicts_a_batch_of_the_least_recently_seen() -> None:
    index = RowIndex(max_keys=4 * EVICT_SHARE, ttl_s=None)
    for i in range(4 * EVICT_SHARE):
        index.row(f"k{i}", float(i))
    index.row("k0", 1_000.0)  # touched: now the most recently seen
    index.row("new", 2_000.0)
    gone = {f"k{i}" for i in range(4 * EVICT_SHARE)} - set(index.keys())
    assert gone == {"k1", "k2", "k3", "k4"}  # a 1/64 batch, oldest first, k0 kept
    assert index.evicted == 4
    assert len(index) == 4 * EVICT_SHARE - 3


def test_a_newcomer_older_than_every_key_still_evicts_a_whole_batch() -> None:
    """Event time running backwards (a file written newest first) must not cost a partial sort
    of the whole index per new key."""
    index = RowIndex(max_keys=4 * EVICT_SHARE, ttl_s=None)
    for i in range(4 * EVICT_SHARE):
        index.row(f"k{i}", 1_000.0 + i)
    index.row("old", 1.0)
    assert index.evicted == 4
    assert {"k0", "k1", "k2", "k3"}.isdisjoint(index.keys())


def test_ties_at_the_edge_of_a_batch_go_by_row_order() -> None:
    """Which of several keys seen at the same moment are evicted must not depend on the partial
    sort's tie-breaking, or two machines would replay a file to different incidents."""
    index = RowIndex(max_keys=4 * EVICT_SHARE, ttl_s=None)
    for i in range(4 * EVICT_SHARE):
        index.row(f"k{i}", 0.0 if i < 100 else 10.0)  # 100 keys tied at the oldest time
    index.row("new", 20.0)
    assert {f"k{i}" for i in range(4)}.isdisjoint(index.keys())  # the lowest rows of the tie
    assert {f"k{i}" for i in range(4, 100)} <= set(index.keys())


def test_a_batch_spares_keys_seen_as_recently_as_the_new_one() -> None:
    index = RowIndex(max_keys=2 * EVICT_SHARE, ttl_s=None)
    index.row("old", 1.0)
    for i in range(2 * EVICT_SHARE - 1):
        index.row(f"now{i}", 5.0)
    index.row("newcomer", 5.0)
    assert "old" not in index
    assert len(index) == 2 * EVICT_SHARE  # only the one seen before the newcomer went
    assert index.evicted == 1


def test_rows_are_reused_and_the_owner_resets_and_extends_them() -> None:
    extended: list[int] = []
    released: list[int] = []
    index = RowIndex(max_keys=2, ttl_s=10.0, extend=lambda: extended.append(1), reset=released.append)
    a, b = index.row("a", 0.0), index.row("b", 1.0)
    c = index.row("c", 2.0)  # evicts a, reuses its row
    assert (a, b, c) == (0, 1, 0)
    assert released == [0]
    assert len(extended) == 2
    assert index.key_of(0) == "c"
    assert index.get("a") is None
    assert index.expire(11.5) == 1
    assert released == [0, 1]
    assert index.key_of(1) is None
    assert index.row("d", 12.0) == 1
    assert len(extended) == 2


def test_keys_rotating_through_a_full_index_keep_it_bounded() -> None:
    index = RowIndex(max_keys=1_000, ttl_s=None)
    for i in range(50_000):
        index.row(f"k{i}", float(i))
    assert len(index) <= 1_000
    assert index.evicted == 50_000 - len(index)
    assert set(index.keys()) == {f"k{i}" for i in range(50_000 - len(index), 50_000)}  # the latest
    assert len(index) > 1_000 - 1_000 // EVICT_SHARE


def test_baseline_table_round_trips_and_forgets_idle_principals() -> None:
    table = BaselineTable(max_keys=3, ttl_s=100.0)
    row, baseline = table.load("principal:a", 0.0)
    assert (baseline.ewma, baseline.windows) == (0.0, 0)
    baseline.learn(40.0, first_cap=30.0, flagged_cap=None, alpha=0.2, flagged_alpha=0.05)
    table.store(row, baseline)
    for t, key in ((50.0, "principal:b"), (60.0, "principal:c"), (70.0, "principal:a")):
        table.load(key, t)
    _, again = table.load("principal:a", 80.0)
    assert (again.ewma, again.windows) == (30.0, 1)  # capped at first_cap, one window
    table.load("principal:d", 90.0)  # full: b, the least recently seen, goes
    assert table.evicted == 1
    assert len(table) == 3
    _, fresh = table.load("principal:b", 95.0)  # back as a newcomer, not with a's old row values
    assert (fresh.ewma, fresh.windows) == (0.0, 0)
    assert "principal:c" not in table  # full again: c (60) made room for b
    assert table.expire(185.0) == 1
    assert len(table) == 2


@pytest.mark.parametrize(("max_keys", "ttl_s"), [(0, None), (5, 0.0), (5, -1.0)])
def test_bounds_are_checked(max_keys: int, ttl_s: float | None) -> None:
    with pytest.raises(ValueError, match=r"max_keys must be at least 1|ttl_s must be positive"):
        RowIndex(max_keys, ttl_s)
