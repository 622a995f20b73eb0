"""Deterministic train / held-out split."""

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facecmp.data import Dataset, ImageRecord, split_dataset
from facecmp.errors import DataError


def dataset(keys) -> Dataset:
    return Dataset("t", [ImageRecord(k, Path(k)) for k in keys])


def train_keys(n_per_folder: dict[str, int]) -> list[str]:
    return [f"{f}/{i:04d}.jpg" for f, n in n_per_folder.items() for i in range(1, n + 1)]


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.integers(3, 30), min_size=1),
    per_folder=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1),
    shuffle_seed=st.integers(0, 1000),
)
def test_split_is_disjoint_complete_and_independent_of_listing_order(sizes, per_folder, seed, shuffle_seed):
    keys = train_keys(sizes)
    train, held = split_dataset(dataset(keys), per_folder=per_folder, seed=seed)
    train_set, held_set = {r.key for r in train.images}, {r.key for r in held.images}
    assert train_set.isdisjoint(held_set)
    assert train_set | held_set == set(keys)
    for folder in sizes:
        assert sum(1 for k in held_set if k.startswith(folder + "/")) == per_folder
    shuffled = keys[:]
    random.Random(shuffle_seed).shuffle(shuffled)
    _, held_again = split_dataset(dataset(shuffled), per_folder=per_folder, seed=seed)
    assert {r.key for r in held_again.images} == held_set


def test_split_keeps_dataset_order_and_depends_on_seed():
    keys = train_keys({"a": 40, "b": 40})
    train, held = split_dataset(dataset(keys), per_folder=10, seed=0)
    assert [r.key for r in train.images] == [k for k in keys if k in {r.key for r in train.images}]
    _, held_other = split_dataset(dataset(keys), per_folder=10, seed=1)
    assert {r.key for r in held.images} != {r.key for r in held_other.images}


def test_test_layout_dataset_holds_out_a_total():
    keys = [f"{i:04d}.jpg" for i in range(1, 21)]
    train, held = split_dataset(dataset(keys), per_folder=5)
    assert (len(train), len(held)) == (15, 5)


def test_holding_out_more_than_a_folder_has_is_a_data_error():
    with pytest.raises(DataError, match="only 3"):
        split_dataset(dataset(train_keys({"a": 3})), per_folder=4)
