"""``python -m train export``: a checkpoint copied for shipping with float16 weight storage."""

from __future__ import annotations

import torch

from diffvqa_core import DiffVQAConfig, DiffVQAModel
from train.__main__ import main
from train_support import SMALL_MODEL


def test_export_halves_the_weights_and_loads_back_in_float32(tmp_path):
    torch.manual_seed(0)
    model = DiffVQAModel(DiffVQAConfig.from_dict({**DiffVQAConfig.from_preset("tiny").to_dict(), **SMALL_MODEL}))
    source, out = tmp_path / "trained", tmp_path / "shipped"
    model.save_pretrained(source)
    assert main(["export", "--checkpoint", str(source), "--out", str(out)]) == 0
    size = (out / "model.safetensors").stat().st_size
    assert size < 0.6 * (source / "model.safetensors").stat().st_size
    loaded = DiffVQAModel.from_pretrained(out)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    original = dict(model.state_dict())
    for name, value in loaded.state_dict().items():
        assert torch.allclose(value, original[name], rtol=1e-3, atol=1e-4), name
    assert main(["export", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
