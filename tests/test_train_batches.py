"""Batching: data order and augmentation are functions of (seed, epoch, sample) only, so resume is exact."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from train.batches import EpochBatchSampler, SeededItems, open_split


def _batches(sampler):
    return [[index for _, index in batch] for batch in sampler]


def test_processes_take_disjoint_equal_shards_of_each_epoch():
    shards = [EpochBatchSampler(23, 3, rank=r, world_size=2, seed=5) for r in range(2)]
    for shard in shards:
        shard.set_epoch(1)
    zero, one = (_batches(s) for s in shards)
    assert len(zero) == len(one) == 23 // 6
    seen = [i for batch in zero + one for i in batch]
    assert len(seen) == len(set(seen)) == 18


def test_epochs_reshuffle_and_a_resumed_epoch_yields_the_remaining_batches():
    sampler = EpochBatchSampler(20, 4, rank=0, world_size=1, seed=0)
    sampler.set_epoch(0)
    epoch0 = _batches(sampler)
    sampler.set_epoch(1)
    assert _batches(sampler) != epoch0
    sampler.set_epoch(0, start=2)
    assert len(sampler) == 3 and _batches(sampler) == epoch0[2:]


class _Noisy(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return torch.rand(1).item() + np.random.rand() + random.random()


def test_items_are_reproducible_and_leave_the_global_rng_alone():
    items = SeededItems(_Noisy(), seed=3)
    torch.manual_seed(0)
    expected_next = torch.rand(1)
    torch.manual_seed(0)
    first = items[(0, 2)]
    assert torch.rand(1) == expected_next
    assert items[(0, 2)] == first and items[(1, 2)] != first


def test_wrong_data_root_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="mimic_pair_questions.csv not found"):
        open_split(tmp_path, "train", question_types=None, image_size=64, augment=False)


def test_rows_with_missing_images_are_counted_and_an_empty_split_is_an_error(tmp_path):
    from train_support import make_synthetic_set

    root = make_synthetic_set(tmp_path / "synth")
    films = sorted((root / "files").rglob("*.jpg"))
    complete = open_split(root, "train", question_types=None, image_size=64, augment=False)
    films[0].unlink()
    with pytest.warns(UserWarning, match="rows dropped"):
        partial = open_split(root, "train", question_types=None, image_size=64, augment=False)
    assert partial.missing > 0 and len(partial) + partial.missing == len(complete)
    for film in films[1:]:
        film.unlink()
    with pytest.raises(ValueError, match="no usable rows"), pytest.warns(UserWarning):
        open_split(root, "train", question_types=None, image_size=64, augment=False)


def test_epoch_samples_cut_each_epoch_to_a_fresh_subset():
    sampler = EpochBatchSampler(100, 4, rank=0, world_size=1, seed=0, epoch_samples=20)
    assert sampler.steps_per_epoch == 5
    seen = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        seen.append({i for batch in sampler for _, i in batch})
    assert len(seen[0]) == len(seen[1]) == 20 and seen[0] != seen[1]
    assert EpochBatchSampler(10, 4, rank=0, world_size=1, seed=0, epoch_samples=1000).steps_per_epoch == 2


def test_weighted_rows_fill_more_of_each_epoch_and_the_order_is_still_a_function_of_the_epoch():
    weights = [4.0] * 100 + [1.0] * 300  # rows 0-99 weigh four times the others: 4 x 100 / (400 + 300) = 57%
    sampler = EpochBatchSampler(400, 10, rank=0, world_size=1, seed=3, epoch_samples=200, weights=weights)
    sampler.set_epoch(1)
    first = _batches(sampler)
    heavy = sum(index < 100 for batch in first for index in batch) / 200
    assert 0.4 < heavy < 0.75  # uniform sampling would give 25%
    sampler.set_epoch(1, start=5)
    assert _batches(sampler) == first[5:]
    with pytest.raises(ValueError, match="positive"):
        EpochBatchSampler(3, 1, rank=0, world_size=1, seed=0, weights=[1.0, 0.0, 1.0])


def test_question_weights_weigh_each_row_by_its_family():
    from train.batches import question_weights

    class Rows:
        rows = [{"question_type": "difference"}, {"question_type": "presence"}]

    assert question_weights(Rows(), {"difference": 4.0}) == [4.0, 1.0]
    assert question_weights(Rows(), None) is None
