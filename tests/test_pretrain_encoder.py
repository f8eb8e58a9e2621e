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
from train_support import REPO_ROOT, make_synthetic_set


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


# ------------------------------------------------------------------------------ MIMIC-CXR with CheXpert labels
CHEXPERT_LABELS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
                   "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
                   "Pneumothorax", "Support Devices")


def fake_mimic_cxr(root, *, patients: int = 8) -> dict:
    """A MIMIC-CXR-JPG folder in the real layout: the three gzipped CSV files and files/p../p../s../<dicom>.jpg.

    Each patient has two studies, each a PA (or AP) film and a lateral one; patient 7 is in the official
    validation split, patient 8 in the test split; one listed PA film is missing from disk.
    """
    import pandas as pd
    from PIL import Image

    rng = np.random.default_rng(0)
    labels, metadata, split, written = [], [], [], []
    for p in range(patients):
        subject = str(10000001 + p)
        part = "validate" if p == patients - 2 else "test" if p == patients - 1 else "train"
        for s in range(2):
            study = str(50000000 + 10 * p + s)
            values = rng.choice([1.0, 0.0, -1.0, np.nan], size=len(CHEXPERT_LABELS), p=[0.3, 0.3, 0.1, 0.3])
            values[0] = float(s)  # atelectasis: both classes in every split
            labels.append({"subject_id": subject, "study_id": study, **dict(zip(CHEXPERT_LABELS, values, strict=True))})
            for view in ("PA" if s == 0 else "AP", "LATERAL"):
                dicom = f"{p:02d}{s}{view[:2]}-0f1e2d3c-4b5a6978-8796a5b4-c3d2e1f0"
                metadata.append({"dicom_id": dicom, "subject_id": subject, "study_id": study,
                                 "PerformedProcedureStepDescription": "CHEST (PA AND LAT)", "ViewPosition": view,
                                 "Rows": 360, "Columns": 300})
                split.append({"dicom_id": dicom, "study_id": study, "subject_id": subject, "split": part})
                if (p, s, view) == (1, 0, "PA"):
                    continue  # listed, not downloaded
                path = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                film = (rng.random((45, 38)) * 255).astype(np.uint8)
                Image.fromarray(film).resize((300, 360), Image.BILINEAR).save(path, quality=90)
                written.append(path)
    for name, rows in (("chexpert", labels), ("metadata", metadata), ("split", split)):
        pd.DataFrame(rows).to_csv(root / f"mimic-cxr-2.0.0-{name}.csv.gz", index=False)
    return {"root": root, "labels": labels, "images": written}


def test_uncertain_labels_follow_the_policy_and_blank_is_negative():
    import pandas as pd

    from train.chexpert import label_targets

    values = pd.DataFrame({"Edema": [1.0, 0.0, -1.0, np.nan]})
    for policy, targets, mask in (("ignore", [1, 0, 0, 0], [1, 1, 0, 1]), ("ones", [1, 0, 1, 0], [1, 1, 1, 1]),
                                  ("zeros", [1, 0, 0, 0], [1, 1, 1, 1])):
        got_targets, got_mask = label_targets(values, policy)
        assert got_targets[:, 0].tolist() == targets and got_mask[:, 0].tolist() == mask, policy


def test_a_label_value_outside_the_four_is_refused():
    import pandas as pd
    import pytest

    from train.chexpert import label_targets

    with pytest.raises(ValueError, match="'Edema' has the value 2;"):
        label_targets(pd.DataFrame({"Edema": [1.0, 2.0]}), "ignore")


def test_the_index_keeps_frontal_films_of_the_split_that_are_on_disk(tmp_path):
    from train.chexpert import chexpert_index

    fake = fake_mimic_cxr(tmp_path / "mimic")
    train = chexpert_index(fake["root"], "train")
    assert len(train.paths) == 6 * 2 - 1 and train.missing_images == 1  # 6 training patients, one film missing
    assert all(p.suffix == ".jpg" and "LA" not in p.stem for p in train.paths)  # frontal (PA, AP) only
    val = chexpert_index(fake["root"], "val")
    assert len(val.paths) == 2 and all("p10000007" in str(p) for p in val.paths)  # test patient 8 never read
    first = fake["labels"][0]  # patient 1, study 0: its PA film
    expected = np.array([first[name] for name in CHEXPERT_LABELS], dtype=np.float32)
    assert train.targets[0].tolist() == (expected == 1).astype(np.float32).tolist()
    assert train.mask[0].tolist() == (expected != -1).astype(np.float32).tolist()  # U-Ignore by default


def test_the_index_holds_out_the_vqa_benchmarks_validation_and_test_patients(tmp_path):
    import pandas as pd

    from train.chexpert import chexpert_index

    fake = fake_mimic_cxr(tmp_path / "mimic")
    vqa = tmp_path / "diff-vqa"
    vqa.mkdir()
    pd.DataFrame({"subject_id": ["10000003", "10000004"], "split": ["test", "train"]}).to_csv(
        vqa / "mimic_pair_questions.csv", index=False)
    index = chexpert_index(fake["root"], "train", hold_out=vqa)
    assert index.held_out_subjects == 2 and not any("p10000003" in str(p) for p in index.paths)
    assert any("p10000004" in str(p) for p in index.paths)


def test_pretrain_encoder_trains_on_a_fake_chexpert_csv_and_the_model_loads_it(tmp_path):
    fake = fake_mimic_cxr(tmp_path / "mimic")
    out = tmp_path / "encoder"
    assert main(["pretrain-encoder", "--mimic-cxr", str(fake["root"]), "--out", str(out), "--epochs", "1",
                 "--max-steps", "2", "--batch-size", "4", "--threads", "1", "--workers", "0", "--device", "cpu",
                 "--uncertain", "ones"]) == 0
    log = json.loads((out / "training_log.json").read_text())
    assert log["source"] == "chexpert" and log["uncertain"] == "ones" and log["steps"] == 2
    assert np.isfinite(log["loss_last_20"]) and log["history"][-1]["films"] == 2
    assert set(log["history"][-1]["auroc"]) == set(CHEXPERT_LABELS)
    assert 0.0 <= log["history"][-1]["auroc"]["Atelectasis"] <= 1.0  # labels with one class only: None
    assert json.loads((out / "config.json").read_text())["architecture"] == "swin_base_patch4_window12_384"
    saved = load_file(str(out / "model.safetensors"))
    config = dataclasses.replace(DiffVQAConfig.from_preset("tiny"), image_encoder_pretrained=True,
                                 image_encoder_weights=str(out))
    backbone = DiffVQAModel(config).image_encoder.backbone.state_dict()
    assert saved.keys() == backbone.keys() and all(torch.equal(saved[k], backbone[k]) for k in saved)


def test_the_paper_preset_starts_from_the_imagenet_weights_in_the_weights_dir(tmp_path, capsys, monkeypatch):
    import timm

    from diffvqa_core.weights import WEIGHTS_DIR_ENV

    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)  # --weights-dir sets it: restored after the test

    fake = fake_mimic_cxr(tmp_path / "mimic", patients=4)
    small = {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2], "window_size": 6}
    args = ["pretrain-encoder", "--mimic-cxr", str(fake["root"]), "--preset", "paper", "--image-encoder-overrides",
            json.dumps(small), "--epochs", "1", "--max-steps", "1", "--batch-size", "2", "--threads", "1",
            "--workers", "0", "--device", "cpu", "--lr", "1e-12", "--weight-decay", "0"]
    assert main([*args, "--out", str(tmp_path / "none"), "--weights-dir", str(tmp_path)]) == 2
    assert "timm/swin_base_patch4_window12_384.ms_in22k/" in capsys.readouterr().err  # where to put them
    torch.manual_seed(3)
    imagenet = timm.create_model("swin_base_patch4_window12_384", num_classes=21841, img_size=384, **small)
    timm.models.save_for_hf(imagenet, tmp_path / "weights" / "timm" / "swin_base_patch4_window12_384.ms_in22k",
                            safe_serialization=True)
    out = tmp_path / "encoder"
    assert main([*args, "--out", str(out), "--weights-dir", str(tmp_path / "weights")]) == 0
    assert json.loads((out / "training_log.json").read_text())["start"] == "pretrained"
    saved, start = load_file(str(out / "model.safetensors")), imagenet.state_dict()
    assert all(torch.allclose(saved[k], start[k], atol=1e-6) for k in saved)  # lr 1e-12: still the start


def test_paper_chexpert_config_is_the_paper_config_with_the_encoder_step():
    from train.config import TrainConfig

    configs = REPO_ROOT / "train" / "configs"
    paper = TrainConfig.from_yaml(configs / "paper.yaml").to_dict()
    chexpert = TrainConfig.from_yaml(configs / "paper_chexpert.yaml").to_dict()
    assert {k: v for k, v in chexpert.items() if v != paper[k]} == {
        "model": {"image_encoder_weights": "runs/swin_chexpert"}}
