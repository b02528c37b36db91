"""DeltaStore behaves as the list of deltas it replaces, for every sequence of appends and reads."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core import delta_store
from engine.core.delta_store import BLOCK, DeltaStore

DELTAS = st.lists(st.text(max_size=6), max_size=BLOCK * 5)


@settings(max_examples=200, deadline=None)
@given(deltas=DELTAS, data=st.data())
def test_it_reads_as_the_list_of_its_items_at_every_length(deltas: list[str], data: st.DataObject) -> None:
    store = DeltaStore()
    model: list[str] = []
    checkpoints = set(data.draw(st.lists(st.integers(0, len(deltas)), max_size=6)))
    for i, delta in enumerate([*deltas, None]):
        if i in checkpoints or delta is None:
            assert len(store) == len(model)
            assert store.text() == "".join(model)
            assert [store[j] for j in range(len(model))] == model
            assert [store[-j] for j in range(1, len(model) + 1)] == [
                model[-j] for j in range(1, len(model) + 1)
            ]
            for start in range(len(model) + 2):
                assert store.text_from(start) == "".join(model[start:])
        if delta is not None:
            store.append(delta)
            model.append(delta)


def test_an_index_past_either_end_is_an_index_error() -> None:
    store = DeltaStore()
    for delta in ["ab"] * (BLOCK * 2 + 3):
        store.append(delta)
    for index in (len(store), -len(store) - 1):
        try:
            store[index]
        except IndexError:
            continue
        raise AssertionError(f"store[{index}] did not raise IndexError")


def test_a_long_answer_costs_a_few_bytes_per_delta_not_an_object_each() -> None:
    store = DeltaStore()
    n = BLOCK * 64
    for i in range(n):
        store.append(f"{i % 10000:04d}")
    held = sum(sys.getsizeof(block) for block in store._blocks) + sys.getsizeof(store._ends)
    held += sum(sys.getsizeof(delta) for delta in store._tail)
    as_list = sum(sys.getsizeof(f"{i % 10000:04d}") for i in range(n)) + sys.getsizeof([None] * n)
    assert held < as_list / 4
    assert len(store._blocks) <= 8  # merged like a binary counter: O(log n) blocks


def test_it_keeps_four_bytes_a_delta_and_widens_past_four_gib(monkeypatch: pytest.MonkeyPatch) -> None:
    store = DeltaStore()
    for _ in range(BLOCK * 4):
        store.append("abcd")
    assert store._ends.itemsize == 4  # a stream keeps one end a delta for its life
    # Past the largest offset a 4-byte end holds (made small here), the ends widen; nothing changes.
    monkeypatch.setattr(delta_store, "_WIDE_FROM", 600)
    deltas = ["abcd"] * (BLOCK * 4) + [f"delta {i}" for i in range(BLOCK * 3)]
    for delta in deltas[BLOCK * 4 :]:
        store.append(delta)
    assert store._ends.itemsize == 8
    assert [store[i] for i in range(len(deltas))] == deltas
    assert store.text() == "".join(deltas)
    assert store.text_from(BLOCK * 4 + 5) == "".join(deltas[BLOCK * 4 + 5 :])
