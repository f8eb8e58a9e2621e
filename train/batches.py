"""Opening the benchmark splits and batching them reproducibly across processes and resumes.

The order of training samples is a pure function of (seed, epoch): each epoch draws one permutation, cut
into global batches of ``batch_size x num_processes`` samples, each process taking its slice. Augmentation
is a pure function of (seed, epoch, sample): every item is drawn under its own seeded RNGs. Neither depends
on worker processes or on where a run was interrupted, so ``--resume`` starts mid-epoch at the exact batch
and sees the exact pixels an uninterrupted run would.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from diffvqa_core.data.layout import QUESTIONS_CSV, STUDIES_CSV


def open_split(
    root: str | Path | None,
    split: str | None,
    *,
    question_types: Sequence[str] | None,
    image_size: int,
    augment: bool,
    seed: int = 0,
):
    """Opens one split of a Medical-Diff-VQA layout (real or synthetic) with clear errors.

    Rows whose images are missing are dropped by the reader, which warns with their count
    (``dataset.missing``).

    Args:
        root: directory holding mimic_pair_questions.csv, mimic_all.csv and files/.
        split: "train", "val" or "test" (None: every row).
        question_types: families to keep (None = all seven).
        image_size: side of the square model input.
        augment: brightness / contrast / sharpness augmentation (training only).
        seed: the reader's augmentation seed.

    Returns:
        A ``diffvqa_core.data.DiffVQADataset``.

    Raises:
        FileNotFoundError: when ``root`` is not a benchmark directory.
        ValueError: when the split has no usable rows.
    """
    from diffvqa_core.data import DiffVQADataset

    if root is None:
        raise FileNotFoundError("no data root: pass --data-root DIR or set data_root in the config")
    root = Path(root)
    for name in (QUESTIONS_CSV, STUDIES_CSV):
        if not (root / name).is_file():
            raise FileNotFoundError(
                f"{root} is not a Medical-Diff-VQA directory: {name} not found there. The data root must hold "
                "mimic_pair_questions.csv, mimic_all.csv and the MIMIC-CXR-JPG files/ tree (see README, "
                "'Reproducing the paper'), or be the output of `python -m train synth`"
            )
    dataset = DiffVQADataset(root, split=split, question_types=list(question_types) if question_types else None,
                             image_size=image_size, augment=augment, seed=seed)
    if len(dataset) == 0:
        kinds = ", ".join(question_types) if question_types else "any"
        raise ValueError(f"split {split!r} of {root} has no usable rows (question types: {kinds}; "
                         f"{dataset.missing} dropped because their images are missing under {root / 'files'})")
    return dataset


class SeededItems(Dataset):
    """Wraps a dataset so that item ``(epoch, index)`` is drawn under RNGs seeded from (seed, epoch, index).

    The process's own RNG states are left untouched, so the training loop's dropout stream does not depend
    on how many items were loaded in the main process.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        item_seed = zlib.crc32(f"{self.seed}/{epoch}/{index}".encode())
        python_state, numpy_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(item_seed)
                random.seed(item_seed)
                np.random.seed(item_seed)
                return self.dataset[index]
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


class EpochBatchSampler(Sampler):
    """This process's training batches of one epoch, optionally starting after ``start`` batches.

    Yields lists of ``(epoch, index)`` keys for :class:`SeededItems`. The last incomplete global batch is
    dropped so every process takes the same number of optimiser steps. With ``epoch_samples`` an epoch is
    the first ``epoch_samples`` rows of that epoch's permutation (a fresh random subset each epoch). With
    ``weights`` (one positive number per row) the permutation is drawn without replacement in proportion to
    them, so heavier rows come earlier and fill more of an ``epoch_samples`` subset.
    """

    def __init__(self, num_samples: int, batch_size: int, *, rank: int, world_size: int, seed: int,
                 epoch_samples: int | None = None, weights: Sequence[float] | None = None) -> None:
        if weights is not None and (len(weights) != num_samples or min(weights) <= 0):
            raise ValueError(f"weights must hold {num_samples} positive numbers, one per row")
        self.weights = None if weights is None else torch.tensor(weights, dtype=torch.float64)
        self.num_samples, self.batch_size = num_samples, batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        per_epoch = num_samples if epoch_samples is None else min(num_samples, epoch_samples)
        self.steps_per_epoch = per_epoch // (batch_size * world_size)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Selects the epoch's permutation and the number of its batches already trained."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is None:
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = torch.multinomial(self.weights, self.num_samples, replacement=False, generator=generator).tolist()
        global_batch = self.batch_size * self.world_size
        for step in range(self.start, self.steps_per_epoch):
            offset = step * global_batch + self.rank * self.batch_size
            yield [(self.epoch, i) for i in order[offset:offset + self.batch_size]]


def question_weights(dataset, weights: dict[str, float] | None) -> list[float] | None:
    """Each training row's sampling weight from its question family (families not named weigh 1)."""
    if not weights:
        return None
    return [float(weights.get(row["question_type"], 1.0)) for row in dataset.rows]


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stacks tensors (main, ref and, on synthetic data, gt_theta and change_mask); lists the rest."""
    batch = {}
    for key in items[0]:
        values = [item[key] for item in items]
        batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return batch


def training_loader(dataset: Dataset, sampler: EpochBatchSampler, *, seed: int, num_workers: int) -> DataLoader:
    """A loader over ``sampler``'s batches; its own generator keeps worker seeding off the global RNG."""
    return DataLoader(
        SeededItems(dataset, seed), batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed), pin_memory=torch.cuda.is_available(),
    )


def evaluation_loader(
    dataset: Dataset, *, batch_size: int, rank: int = 0, world_size: int = 1, num_workers: int = 0,
    limit: int | None = None,
) -> DataLoader:
    """A loader over this process's share (every ``world_size``-th row) in file order.

    Args:
        limit: keep only the first ``limit`` rows of that share.
    """
    indices = list(range(rank, len(dataset), world_size))[:limit]
    return DataLoader(
        Subset(dataset, indices), batch_size=batch_size, shuffle=False, collate_fn=collate,
        num_workers=num_workers, pin_memory=torch.cuda.is_available(),
    )
