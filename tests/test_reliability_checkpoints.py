"""Checkpoints are data, never code: only safetensors and JSON are read, a pickle checkpoint is refused with a
clear message (and never unpickled), and a config/weights mismatch or a damaged weights file is reported by
name, from the Python API and from ``python app.py --checkpoint``. (A missing key is covered in
test_core_weights.py, a different architecture on ``--resume`` in test_train_fit.py.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from app_support import REPO
from reliability_support import save_tiny_checkpoint, write_pickle

import app  # noqa: E402  (app_support puts the repository root on sys.path)

SOURCES = ["app.py", "diffvqa_core", "train", "review_app", "feedback_db"]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


def _copy(checkpoint: Path, target: Path) -> Path:
    import shutil

    return Path(shutil.copytree(checkpoint, target))


@pytest.mark.parametrize("layout", ["folder-with-pytorch_model.bin", "model.pt-file"])
def test_pickle_checkpoint_is_refused_and_never_unpickled(layout: str, tiny_checkpoint: Path, tmp_path: Path) -> None:
    from diffvqa_core import DiffVQAModel, DiffVQAPipeline

    marker = tmp_path / "pickle-ran"
    if layout == "model.pt-file":
        target = write_pickle(tmp_path / "model.pt", marker)
    else:
        target = tmp_path / "pickled"
        target.mkdir()
        (target / "config.json").write_bytes((tiny_checkpoint / "config.json").read_bytes())
        write_pickle(target / "pytorch_model.bin", marker)
    for load in (DiffVQAModel.from_pretrained, DiffVQAPipeline.from_pretrained):
        with pytest.raises(ValueError, match="pickle .*can run code when loaded and are never read"):
            load(target)
    assert not marker.exists()


def test_app_refuses_a_pickle_checkpoint_with_a_message(tiny_checkpoint: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pickle-ran"
    evil = write_pickle(tmp_path / "model.pt", marker)
    status = app.main(["--checkpoint", str(evil), "--db", f"sqlite:///{tmp_path / 'f.sqlite3'}",
                       "--no-synthetic-examples"])
    err = capsys.readouterr().err
    assert status == 2 and "error: model.pt is a pickle file" in err and "Traceback" not in err
    assert not marker.exists()


def test_a_pickle_beside_safetensors_is_ignored(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from diffvqa_core import DiffVQAPipeline

    folder = _copy(tiny_checkpoint, tmp_path / "both")
    marker = tmp_path / "pickle-ran"
    write_pickle(folder / "pytorch_model.bin", marker)
    write_pickle(folder / "optimizer.pt", marker)
    pipeline = DiffVQAPipeline.from_pretrained(folder)
    assert pipeline.checkpoint_name == "both" and not marker.exists()


def _shape_mismatch(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text())
    config["mask_head_hidden"] = 48
    (folder / "config.json").write_text(json.dumps(config))
    return r"size mismatch for mask_head\.mlp\.0\.weight"


def _unexpected_tensor(folder: Path) -> str:
    import torch

    tensors = load_file(str(folder / "model.safetensors"))
    tensors["injected.extra_weight"] = torch.zeros(3)
    save_file(tensors, str(folder / "model.safetensors"))
    return r"injected\.extra_weight"


def _truncated(folder: Path) -> str:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 3])
    return r"model\.safetensors is truncated or not a safetensors file"


def _not_json(folder: Path) -> str:
    (folder / "config.json").write_text("{'image_size': 192,")
    return r"Expecting property name"


def _unknown_config_key(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text())
    config["exec_on_load"] = "import os"
    (folder / "config.json").write_text(json.dumps(config))
    return r"unknown DiffVQAConfig key\(s\): exec_on_load"


DAMAGE = {"shape-mismatch": _shape_mismatch, "unexpected-tensor": _unexpected_tensor, "truncated-weights": _truncated,
          "config-not-json": _not_json, "unknown-config-key": _unknown_config_key}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_or_mismatched_checkpoint_is_a_value_error_naming_the_problem(damage: str, tiny_checkpoint: Path,
                                                                             tmp_path: Path) -> None:
    from diffvqa_core import DiffVQAPipeline

    folder = _copy(tiny_checkpoint, tmp_path / "ckpt")
    expected = DAMAGE[damage](folder)
    with pytest.raises(ValueError, match=expected):
        DiffVQAPipeline.from_pretrained(folder)


def test_app_reports_a_mismatch_by_name_and_exits(tiny_checkpoint: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    folder = _copy(tiny_checkpoint, tmp_path / "ckpt")
    _shape_mismatch(folder)
    status = app.main(["--checkpoint", str(folder), "--db", f"sqlite:///{tmp_path / 'f.sqlite3'}",
                       "--no-synthetic-examples"])
    err = capsys.readouterr().err
    assert status == 2 and "mask_head.mlp.0.weight" in err and "Traceback" not in err


def test_no_code_path_unpickles() -> None:
    """torch.load only with weights_only=True; no pickle/joblib/dill loads; numpy never with allow_pickle."""
    risky = re.compile(r"torch\.load\(|pickle\.loads?\(|joblib\.load|dill\.load|allow_pickle\s*=\s*True|"
                       r"weights_only\s*=\s*False|trust_remote_code\s*=\s*True")
    offenders = []
    for source in SOURCES:
        root = REPO / source
        for path in [root] if root.is_file() else sorted(root.rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if risky.search(line) and "weights_only=True" not in line:
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []
