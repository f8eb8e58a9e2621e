"""Training state as safetensors + JSON: optimizer, learning-rate scheduler and random number generators.

Checkpoints of this project never contain a pickle (loading one can run code): tensors go to safetensors,
everything else to JSON. This covers what ``--resume`` needs to continue a run exactly: the optimizer
moments, the scheduler position, and the RNG states of Python, NumPy, torch (CPU) and every CUDA device of
each process.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_JSON = "optimizer.json"
SCHEDULER_JSON = "scheduler.json"
RNG_TENSORS = "rng_state.safetensors"
RNG_JSON = "rng_state.json"


def save_optimizer(state_dict: dict[str, Any], directory: Path) -> None:
    """Writes ``optimizer.state_dict()``: tensors to safetensors, param groups and scalars to JSON."""
    tensors, scalars = {}, {}
    for param_id, param_state in state_dict["state"].items():
        for name, value in param_state.items():
            key = f"{param_id}.{name}"
            if isinstance(value, torch.Tensor):
                tensors[key] = value.detach().to("cpu").contiguous()
            else:
                scalars[key] = value
    save_file(tensors, str(directory / OPTIMIZER_TENSORS))
    meta = {"param_groups": state_dict["param_groups"], "scalars": scalars}
    (directory / OPTIMIZER_JSON).write_text(json.dumps(meta, indent=1), encoding="utf-8")


def load_optimizer(directory: Path) -> dict[str, Any]:
    """Reads what :func:`save_optimizer` wrote back into an optimizer state dict."""
    meta = json.loads((directory / OPTIMIZER_JSON).read_text(encoding="utf-8"))
    state: dict[int, dict[str, Any]] = {}
    entries = list(load_file(str(directory / OPTIMIZER_TENSORS)).items()) + list(meta["scalars"].items())
    for key, value in entries:
        param_id, name = key.split(".", 1)
        state.setdefault(int(param_id), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_scheduler(state_dict: dict[str, Any], directory: Path) -> None:
    """Writes a learning-rate scheduler's state dict (plain numbers for LambdaLR) as JSON."""
    (directory / SCHEDULER_JSON).write_text(json.dumps(state_dict, indent=1), encoding="utf-8")


def load_scheduler(directory: Path) -> dict[str, Any]:
    """Reads what :func:`save_scheduler` wrote."""
    return json.loads((directory / SCHEDULER_JSON).read_text(encoding="utf-8"))


def capture_rng_state() -> dict[str, Any]:
    """Returns this process's RNG states (Python, NumPy, torch CPU, every CUDA device)."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": np_state[1].astype(np.int64), "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Sets this process's RNGs from a :func:`capture_rng_state` result."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    keys = np.asarray(np_state["keys"], dtype=np.int64).astype(np.uint32)
    np.random.set_state(("MT19937", keys, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_rng_states(states: list[dict[str, Any]], directory: Path) -> None:
    """Writes the RNG states of every process (index = process rank)."""
    tensors, meta = {}, []
    for rank, state in enumerate(states):
        tensors[f"rank{rank}.torch"] = state["torch"].clone()
        tensors[f"rank{rank}.numpy_keys"] = torch.tensor(np.asarray(state["numpy"]["keys"]))
        for device, cuda_state in enumerate(state["cuda"]):
            tensors[f"rank{rank}.cuda{device}"] = cuda_state.clone()
        numpy_scalars = {k: v for k, v in state["numpy"].items() if k != "keys"}
        meta.append({"python": state["python"], "numpy": numpy_scalars, "cuda_devices": len(state["cuda"])})
    save_file(tensors, str(directory / RNG_TENSORS))
    (directory / RNG_JSON).write_text(json.dumps(meta), encoding="utf-8")


def load_rng_state(directory: Path, rank: int) -> dict[str, Any]:
    """Reads one process's RNG states written by :func:`save_rng_states`.

    Raises:
        ValueError: when the checkpoint was written by fewer processes than ``rank + 1``.
    """
    meta = json.loads((directory / RNG_JSON).read_text(encoding="utf-8"))
    if rank >= len(meta):
        raise ValueError(
            f"checkpoint {directory} holds RNG states of {len(meta)} process(es); resume with the same number "
            f"of processes to continue exactly (this is process {rank})"
        )
    tensors = load_file(str(directory / RNG_TENSORS))
    entry = meta[rank]
    return {
        "python": entry["python"],
        "numpy": {"keys": tensors[f"rank{rank}.numpy_keys"].numpy(), **entry["numpy"]},
        "torch": tensors[f"rank{rank}.torch"],
        "cuda": [tensors[f"rank{rank}.cuda{d}"] for d in range(entry["cuda_devices"])],
    }
