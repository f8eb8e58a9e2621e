"""The trainer's two checkpoints, ``OUTPUT/best`` and ``OUTPUT/last``, written atomically.

Both are model directories (``save_pretrained``: config.json, model.safetensors, tokenizer) that
``DiffVQAModel.from_pretrained`` and ``python -m train evaluate`` load, plus ``train_state.json``. ``last``
also holds what ``--resume`` needs: optimizer (safetensors + JSON), scheduler (JSON) and the RNG states of
every process (safetensors + JSON). No file is a pickle.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from train import state_io
from train.atomic import atomic_directory, recover_directory

TRAIN_STATE = "train_state.json"


@dataclass
class TrainState:
    """Where a run stands. ``batch_in_epoch`` batches of ``epoch`` are done (0 at an epoch's start)."""

    global_step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    total_steps: int = 0
    lam: float = 1.0  # lambda of eq. 7 at the last step taken
    best_cider: float | None = None
    best_step: int | None = None
    num_processes: int = 1


def save_checkpoint(
    path: Path,
    model,
    state: TrainState,
    train_config: dict[str, Any],
    *,
    optimizer_state: dict[str, Any] | None = None,
    scheduler_state: dict[str, Any] | None = None,
    rng_states: list[dict[str, Any]] | None = None,
) -> None:
    """Writes a checkpoint directory whole, replacing ``path`` only once every file is on disk.

    Args:
        path: e.g. ``OUTPUT/last``.
        model: the unwrapped DiffVQAModel.
        state: the run's position.
        train_config: the TrainConfig as a dict (recorded for provenance).
        optimizer_state: ``optimizer.state_dict()`` (resume checkpoints).
        scheduler_state: ``scheduler.state_dict()`` (resume checkpoints).
        rng_states: RNG states of every process, index = rank (resume checkpoints).
    """
    with atomic_directory(path) as staging:
        model.save_pretrained(staging)
        payload = {"state": dataclasses.asdict(state), "train_config": train_config}
        (staging / TRAIN_STATE).write_text(json.dumps(payload, indent=2), encoding="utf-8")
        if optimizer_state is not None:
            state_io.save_optimizer(optimizer_state, staging)
        if scheduler_state is not None:
            state_io.save_scheduler(scheduler_state, staging)
        if rng_states is not None:
            state_io.save_rng_states(rng_states, staging)


def resume_directory(path: Path) -> Path:
    """Returns the complete checkpoint at ``path`` (recovering an interrupted swap).

    Raises:
        FileNotFoundError: when there is no checkpoint to resume from.
    """
    path = recover_directory(path)
    if not (path / TRAIN_STATE).is_file() or not (path / state_io.OPTIMIZER_JSON).is_file():
        raise FileNotFoundError(f"--resume: no resumable checkpoint at {path} (run without --resume first)")
    return path


def read_train_state(path: Path) -> TrainState:
    """Reads the TrainState stored in a checkpoint directory."""
    payload = json.loads((path / TRAIN_STATE).read_text(encoding="utf-8"))
    return TrainState(**payload["state"])


def check_same_data_order(path: Path, config, state: TrainState, num_processes: int) -> None:
    """Refuses to resume with settings that change which samples each step sees.

    Raises:
        ValueError: naming the batch size, seed, question types or process count that differ.
    """
    saved = json.loads((path / TRAIN_STATE).read_text(encoding="utf-8"))["train_config"]
    keys = ("train_batch_size", "seed", "question_types", "epoch_samples", "question_weights")
    differing = [f"{k}: checkpoint {saved.get(k)!r} vs config {getattr(config, k)!r}"
                 for k in keys if saved.get(k) != getattr(config, k)]
    if state.num_processes != num_processes:
        differing.append(f"processes: checkpoint {state.num_processes} vs now {num_processes}")
    if differing:
        raise ValueError(f"cannot continue {path} exactly: the data order would change ({'; '.join(differing)})")


def check_same_architecture(saved: dict[str, Any], wanted: dict[str, Any], path: Path) -> None:
    """Refuses to resume a checkpoint whose model config differs from the run's.

    Raises:
        ValueError: naming every differing DiffVQAConfig field.
    """
    keys = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
    if keys:
        details = "; ".join(f"{k}: checkpoint {saved.get(k)!r} vs config {wanted.get(k)!r}" for k in keys)
        raise ValueError(f"checkpoint {path} was trained with a different model configuration ({details})")
