"""``python -m train fit``: two stages, logging, checkpoints, exact resume, clear errors, two processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from train_support import REPO_ROOT, make_synthetic_set, one_torch_thread, small_config, write_yaml
from train.__main__ import main as train_main
from train.fit import fit

pytestmark = pytest.mark.slow  # each run builds a model and scores validation with Java (~20-60 s in all)

LOSS_TERMS = {"lm", "reg", "mask_main", "mask_ref", "pred_main", "pred_ref", "gram", "gram_mask", "koleo"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synthetic_set(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def straight_run(data_root, tmp_path_factory):
    """4 steps without interruption: epoch 0 (stage 1, encoder frozen), epoch 1 (stage 2)."""
    output = tmp_path_factory.mktemp("straight")
    with one_torch_thread():
        state = fit(small_config(data_root, output))
    return output, state


@pytest.fixture(scope="module")
def split_run(data_root, tmp_path_factory):
    """The same run stopped after step 1 (mid-epoch, stage 1), then resumed to the end."""
    output = tmp_path_factory.mktemp("split")
    config = small_config(data_root, output)
    with one_torch_thread():
        fit(config, max_steps=1)
        shutil.copytree(output / "last", output / "step1")
        state = fit(config, resume=True)
    return output, state


def _records(output, kind):
    lines = (output / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_resume_continues_exactly(straight_run, split_run):
    (straight, straight_state), (split, split_state) = straight_run, split_run
    assert split_state == straight_state
    a, b = load_file(str(straight / "last" / "model.safetensors")), load_file(str(split / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    losses = [[r["loss"] for r in _records(run, "train")] for run in (straight, split)]
    assert len(losses[0]) == 4
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_each_loss_term_is_logged_every_step(straight_run):
    output, _ = straight_run
    rows = _records(output, "train")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["stage"] for r in rows] == [1, 1, 2, 2]
    assert all(LOSS_TERMS <= r.keys() and {"loss", "lambda", "lr", "samples_per_s"} <= r.keys() for r in rows)
    assert rows[0]["lambda"] == 1.0 and rows[-1]["lambda"] < rows[0]["lambda"]
    header = (output / "train_steps.csv").read_text().splitlines()[0].split(",")
    assert LOSS_TERMS <= set(header)
    assert len((output / "train_steps.csv").read_text().splitlines()) == 5


def test_each_epoch_is_validated_with_the_official_metrics(straight_run):
    output, state = straight_run
    rows = _records(output, "val")
    assert [r["epoch"] for r in rows] == [0, 1]
    assert {"Bleu_1", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"} <= rows[0].keys()
    assert state.best_cider == max(r["CIDEr"] for r in rows)


def test_stage_one_freezes_the_image_encoder(data_root, straight_run, split_run):
    from accelerate.utils import set_seed

    from diffvqa_core import DiffVQAModel

    config = small_config(data_root, split_run[0])
    set_seed(config.seed)  # fit seeds the same way before building the model
    initial = DiffVQAModel(config.model_config()).state_dict()
    step1 = load_file(str(split_run[0] / "step1" / "model.safetensors"))
    final = load_file(str(straight_run[0] / "last" / "model.safetensors"))
    encoder = [k for k in step1 if k.startswith("image_encoder.backbone.")]
    assert encoder
    assert all(torch.equal(initial[k], step1[k]) for k in encoder)  # stage 1: phi frozen...
    assert not all(torch.equal(initial[k], step1[k]) for k in step1)  # ...while the rest trains
    assert any(not torch.equal(step1[k], final[k]) for k in encoder)  # stage 2 trains phi


def test_checkpoints_hold_only_safetensors_and_json(straight_run):
    output, _ = straight_run
    for name in ("best", "last"):
        files = [p for p in (output / name).rglob("*") if p.is_file()]
        assert {p.suffix for p in files} <= {".json", ".safetensors", ".txt"}, files
    assert not any(p.name.startswith(".") for p in output.iterdir())  # no staging directory left behind


def test_resume_refuses_another_architecture(straight_run, data_root, tmp_path):
    output = tmp_path / "run"
    shutil.copytree(straight_run[0], output)
    other = small_config(data_root, output, model={**small_config(data_root, output).model, "mask_head_hidden": 48})
    with pytest.raises(ValueError, match="mask_head_hidden"):
        fit(other, resume=True)


def test_resume_refuses_a_different_data_order(straight_run, data_root, tmp_path):
    output = tmp_path / "run"
    shutil.copytree(straight_run[0], output)
    with pytest.raises(ValueError, match="train_batch_size"):
        fit(small_config(data_root, output, train_batch_size=4), resume=True)


def test_resume_without_checkpoint_is_a_clear_error(data_root, tmp_path, capsys):
    config = write_yaml(small_config(data_root, tmp_path / "empty"), tmp_path / "c.yaml")
    assert train_main(["fit", "--config", str(config), "--resume"]) == 2
    assert "no resumable checkpoint" in capsys.readouterr().err


def test_wrong_data_root_is_a_clear_error(data_root, tmp_path, capsys):
    config = write_yaml(small_config(data_root, tmp_path / "out"), tmp_path / "c.yaml")
    assert train_main(["fit", "--config", str(config), "--data-root", str(tmp_path)]) == 2
    assert "mimic_pair_questions.csv not found" in capsys.readouterr().err


def test_seed_flag_overrides_the_config(data_root, tmp_path):
    config = write_yaml(small_config(data_root, tmp_path / "seeded"), tmp_path / "c.yaml")
    assert train_main(["fit", "--config", str(config), "--seed", "7", "--max-steps", "1"]) == 0
    assert yaml.safe_load((tmp_path / "seeded" / "train_config.yaml").read_text())["seed"] == 7


def test_two_processes_agree_on_the_step_count(data_root, tmp_path):
    config = small_config(data_root, tmp_path / "ddp", train_batch_size=4, val_max_batches=1)
    path = write_yaml(config, tmp_path / "ddp.yaml")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "train", "fit", "--config", str(path)]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "process 0: stopped at step 4" in result.stdout and "process 1: stopped at step 4" in result.stdout
    state = json.loads((tmp_path / "ddp" / "last" / "train_state.json").read_text())["state"]
    assert state["num_processes"] == 2 and state["global_step"] == 4


def test_validation_answers_at_the_lambda_training_reached(straight_run, data_root, monkeypatch):
    from accelerate import Accelerator

    from diffvqa_core import DiffVQAModel
    from train import validation
    from train.batches import open_split

    output, _ = straight_run
    last_lambda = {r["epoch"]: r["lambda"] for r in _records(output, "train")}  # each epoch's last step
    rows = _records(output, "val")
    assert [r["lambda"] for r in rows] == [last_lambda[r["epoch"]] for r in rows]
    assert 1.0 > rows[0]["lambda"] > rows[1]["lambda"] > 0.5  # cosine from lambda_start 1 to lambda_end 0.5
    seen = []
    real = validation.answer_batch
    monkeypatch.setattr(validation, "answer_batch",
                        lambda model, batch, device, decoding: seen.append(decoding.lam) or real(model, batch, device,
                                                                                                 decoding))
    monkeypatch.setattr("diffvqa_core.metrics.score_answers", lambda references, predictions: {"CIDEr": 0.0})
    config = small_config(data_root, output)
    model = DiffVQAModel.from_pretrained(output / "last")
    val_set = open_split(config.data_root, "val", question_types=config.question_types,
                         image_size=model.config.image_size, augment=False)
    with one_torch_thread():
        validation.validate(Accelerator(cpu=True), model, val_set, config, lam=0.8125)
    assert seen and set(seen) == {0.8125}


def test_init_parts_takes_only_the_named_parts_of_a_trained_run(straight_run, data_root, tmp_path):
    trained_output, _ = straight_run
    output = tmp_path / "from_parts"
    config = small_config(data_root, output, init_weights=str(trained_output / "last"), init_parts=["prior."],
                          epochs_stage1=1, epochs_stage2=0)
    with one_torch_thread():
        fit(config, max_steps=1)
    trained = load_file(str(trained_output / "last" / "model.safetensors"))
    started = load_file(str(output / "last" / "model.safetensors"))
    prior = [name for name in started if name.startswith("prior.")]
    assert prior and all(torch.equal(started[name], trained[name]) for name in prior)  # frozen, taken as trained
    # phi's backbone is frozen in stage 1 too: taken, it would equal the trained run's (which trained it in stage 2)
    backbone = [name for name in started if name.startswith("image_encoder.backbone.")]
    assert backbone and not all(torch.equal(started[name], trained[name]) for name in backbone)  # started as built
