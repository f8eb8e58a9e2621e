"""``python -m train pretrain-encoder``: finding classification pretraining of phi's backbone (issue 5)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch
from safetensors.torch import load_file

from diffvqa_core import DiffVQAConfig, DiffVQAModel
from diffvqa_core.data.vocabulary import FINDINGS
from train.__main__ import main
from train.pretrain_encoder import finding_targets
from train_support import make_synthetic_set


def test_targets_mark_presence_and_the_patients_sides():
    target = finding_targets([
        {"name": "pleural effusion", "location": "bilateral"},
        {"name": "atelectasis", "location": "retrocardiac"},
        {"name": "cardiomegaly", "location": ""},
        {"name": "pneumothorax", "location": "right apical"},
    ]).reshape(3, len(FINDINGS))
    present, left, right = target
    index = {name: FINDINGS.index(name) for name in ("pleural effusion", "atelectasis", "cardiomegaly", "pneumothorax")}
    assert present.sum() == 4 and all(present[i] == 1 for i in index.values())
    assert left[index["pleural effusion"]] == right[index["pleural effusion"]] == 1
    assert (left[index["atelectasis"]], right[index["atelectasis"]]) == (1, 0)
    assert left[index["cardiomegaly"]] == right[index["cardiomegaly"]] == 0
    assert (left[index["pneumothorax"]], right[index["pneumothorax"]]) == (0, 1)


def test_pretrained_backbone_loads_through_timm_into_the_model(tmp_path):
    root = make_synthetic_set(tmp_path / "synth")
    out = tmp_path / "encoder"
    args = ["pretrain-encoder", "--data-root", str(root), "--out", str(out), "--epochs", "1", "--max-steps", "2",
            "--batch-size", "4", "--threads", "1"]
    assert main(args) == 0
    log = json.loads((out / "training_log.json").read_text())
    assert log["steps"] == 2 and np.isfinite(log["loss_last_20"]) and log["history"][-1]["films"] > 0
    saved = load_file(str(out / "model.safetensors"))
    config = dataclasses.replace(DiffVQAConfig.from_preset("tiny"), image_encoder_pretrained=True,
                                 image_encoder_weights=str(out))
    torch.manual_seed(0)
    backbone = DiffVQAModel(config).image_encoder.backbone.state_dict()
    assert saved.keys() == backbone.keys()
    assert all(torch.equal(saved[name], backbone[name]) for name in saved)
    torch.manual_seed(0)
    random = DiffVQAModel(DiffVQAConfig.from_preset("tiny")).image_encoder.backbone.state_dict()
    assert not all(torch.equal(saved[name], random[name]) for name in saved)  # not the random init it started from
