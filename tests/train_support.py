"""Shared helpers of the trainer tests: a small synthetic benchmark and a very small model.

The synthetic set (20 pairs at 128 px, seed 0) has 18 difference rows for training, one for validation and
a test split; with 8 rows per batch that is 2 optimiser steps per epoch. The model keeps every module and
loss of the tiny preset at minimal widths (0.6M parameters, ~0.1 s of CPU per step).
"""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from train.config import TrainConfig

REPO_ROOT = Path(__file__).resolve().parents[1]

SMALL_MODEL = {
    "image_size": 64,
    "image_encoder_overrides": {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2], "window_size": 4},
    "prior_image_size": 64,
    "prior_overrides": {"image_size": 64, "patch_size": 16, "hidden_size": 32, "num_hidden_layers": 1,
                        "num_attention_heads": 2},
    "decoder_overrides": {"n_embd": 64, "n_layer": 1, "n_head": 2, "n_positions": 256},
    "question_layers": 1,
    "question_heads": 2,
    "mask_head_hidden": 32,
    "registration_size": 32,
    "registration_channels": [4, 8],
}


def make_synthetic_set(directory: Path) -> Path:
    """Writes the 20-pair synthetic benchmark with ``python -m train synth`` and returns its root."""
    subprocess.run(
        [sys.executable, "-m", "train", "synth", "--out", str(directory), "--pairs", "20", "--seed", "0",
         "--size", "128", "--workers", "1"],
        check=True, capture_output=True, cwd=REPO_ROOT,
    )
    return directory


def small_config(data_root: Path, output_dir: Path, **changes) -> TrainConfig:
    """tiny.yaml with the small model, one epoch per stage of 2 steps, short validation decoding."""
    config = TrainConfig.from_yaml(REPO_ROOT / "train" / "configs" / "tiny.yaml")
    settings = dict(
        model=SMALL_MODEL, data_root=str(data_root), output_dir=str(output_dir), question_types=["difference"],
        epochs_stage1=1, epochs_stage2=1, train_batch_size=8, eval_batch_size=4, num_workers=0,
        eval_max_new_tokens=6, val_max_batches=1,
    )
    return dataclasses.replace(config, **{**settings, **changes})


def write_yaml(config: TrainConfig, path: Path) -> Path:
    """Writes ``config`` as a YAML file for the command line."""
    import yaml

    path.write_text(yaml.safe_dump(config.to_dict()), encoding="utf-8")
    return path


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Runs torch on one thread: on a shared 2-core machine two threads per process mostly wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
