"""Checkpoints: atomic replacement (a crash never leaves a broken one) and pickle-free training state."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from train import state_io
from train.atomic import atomic_directory, recover_directory
from train.optim import build_scheduler
from train.config import TrainConfig


def _write(path, text):
    with atomic_directory(path) as staging:
        (staging / "weights.txt").write_text(text)


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path):
    last = tmp_path / "last"
    _write(last, "step 1")
    with pytest.raises(RuntimeError), atomic_directory(last) as staging:
        (staging / "weights.txt").write_text("step 2, half writ")
        raise RuntimeError("killed mid-write")
    assert (last / "weights.txt").read_text() == "step 1"
    _write(last, "step 3")  # the next save discards the leftover staging directory
    assert (last / "weights.txt").read_text() == "step 3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_crash_between_the_two_renames_is_recovered(tmp_path):
    last = tmp_path / "last"
    _write(last, "step 1")
    last.rename(tmp_path / ".last.old")  # the state right after the first rename of a swap
    assert (recover_directory(last) / "weights.txt").read_text() == "step 1"


def _adamw_after_steps(model, steps):
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.05)
    for _ in range(steps):
        model(torch.ones(2, 3)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    return optimizer


def test_optimizer_state_round_trips_without_pickle(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = _adamw_after_steps(model, 2)
    state_io.save_optimizer(optimizer.state_dict(), tmp_path)
    twin = torch.nn.Linear(3, 2)
    twin.load_state_dict(model.state_dict())
    restored = torch.optim.AdamW(twin.parameters(), lr=0.5)
    restored.load_state_dict(state_io.load_optimizer(tmp_path))
    for m, opt in ((model, optimizer), (twin, restored)):
        m(torch.ones(2, 3)).sum().backward()
        opt.step()
    torch.testing.assert_close(model.weight, twin.weight, rtol=0, atol=0)
    assert {p.suffix for p in tmp_path.iterdir()} == {".json", ".safetensors"}


def test_scheduler_state_round_trips_as_json(tmp_path):
    optimizer = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    scheduler = build_scheduler(optimizer, TrainConfig(), total_steps=100)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    state_io.save_scheduler(scheduler.state_dict(), tmp_path)
    fresh = build_scheduler(torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1.0), TrainConfig(), 100)
    fresh.load_state_dict(state_io.load_scheduler(tmp_path))
    assert fresh.last_epoch == 7 and fresh.get_last_lr() == scheduler.get_last_lr()


def test_rng_states_of_every_process_round_trip(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = state_io.capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    state_io.save_rng_states([state, state], tmp_path)
    state_io.restore_rng_state(state_io.load_rng_state(tmp_path, rank=1))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    with pytest.raises(ValueError, match="2 process"):
        state_io.load_rng_state(tmp_path, rank=2)
