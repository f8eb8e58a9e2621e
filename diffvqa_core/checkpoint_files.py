"""Where a DiffVQA checkpoint's files are and what a reviewer is told about them, without loading PyTorch.

``DiffVQAPipeline.from_pretrained`` loads a folder of ``config.json``, ``model.safetensors`` and the tokenizer's
files; ``checkpoint_facts`` reads what the review app shows of it (name, SHA-256 of the weights, whether it is the
bundled demo, the config) from the files alone, so that the app's UI process can show them while the model itself
is still loading in its own process.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "demo_model"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_folder(path: str | Path | None) -> Path:
    """The folder a checkpoint argument names: None is the bundled demo."""
    return Path(path) if path is not None else DEMO_CHECKPOINT


def is_demo_folder(directory: Path) -> bool:
    """Whether ``directory`` is the bundled demo checkpoint."""
    return directory.resolve() == DEMO_CHECKPOINT.resolve()


def checkpoint_facts(path: str | Path | None) -> dict[str, Any] | None:
    """``checkpoint_name``, ``checkpoint_sha256``, ``is_demo`` and ``config`` (the dict of ``config.json``) of a
    checkpoint folder, as ``DiffVQAPipeline.from_pretrained`` would report them; None when the folder lacks its
    config or weights (then only loading it can say what is wrong)."""
    directory = checkpoint_folder(path)
    config, weights = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not (config.is_file() and weights.is_file()):
        return None
    try:
        settings = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {"checkpoint_name": directory.name, "checkpoint_sha256": file_sha256(weights),
            "is_demo": is_demo_folder(directory), "config": settings}
