"""``python -m train pretrain-prior``: DINO self-distillation of a small Dinov2 prior (issue 5, part 1)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, Dinov2Model

from diffvqa_core.data.synthetic import generate_benchmark
from train.__main__ import main
from train.dino.evaluate_prior import evaluate_against_random
from train.dino.loss import DINOLoss, sinkhorn_knopp
from train.dino.trainer import PretrainSettings, build_networks, build_optimizer, ema_update, training_step

TINY = dict(image_size=32, patch_size=8, hidden_size=32, layers=1, heads=2, out_dim=64, local_crops=2, batch_size=4)


def _tiny_cli_args(images, out, steps: int = 2) -> list[str]:
    flags = {k.replace("_", "-"): v for k, v in TINY.items()}
    return ["pretrain-prior", "--images", str(images), "--out", str(out), "--max-steps", str(steps),
            *[str(x) for k, v in flags.items() for x in (f"--{k}", v)]]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Six small grayscale PNGs, some in a sub-folder (the search is recursive)."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("pretrain") / "images"
    (folder / "nested").mkdir(parents=True)
    yy, xx = np.mgrid[0:64, 0:64]
    for i in range(6):
        blob = np.exp(-((yy - rng.integers(16, 48)) ** 2 + (xx - rng.integers(16, 48)) ** 2) / 120.0)
        pixels = (255 * np.clip(0.3 * blob + 0.5 * rng.random((64, 64)), 0, 1)).astype(np.uint8)
        Image.fromarray(pixels).save(folder / ("nested" if i % 2 else "") / f"film_{i}.png")
    return folder


def _fixed_crops(settings: PretrainSettings, batch: int = 4) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    sides = [settings.image_size] * 2 + [settings.local_size] * settings.local_crops
    return [torch.randn(batch, 3, s, s, generator=generator) for s in sides]


@pytest.fixture(scope="module")
def tiny_prior(image_folder):
    """A prior pretrained for two steps by the command line."""
    out = image_folder.parent / "prior"
    assert main(_tiny_cli_args(image_folder, out)) == 0
    return out


def test_saved_prior_loads_with_dinov2_from_pretrained(tiny_prior, image_folder):
    out = tiny_prior
    model = Dinov2Model.from_pretrained(out)
    assert (model.config.hidden_size, model.config.patch_size, model.config.num_hidden_layers) == (32, 8, 1)
    assert model.config.image_size == 32 and model.config.drop_path_rate == 0.0
    processor = AutoImageProcessor.from_pretrained(out)
    log = json.loads((out / "training_log.json").read_text())
    assert processor.size == {"height": 32, "width": 32}
    assert processor.image_mean[0] == pytest.approx(log["settings"]["extra"]["pixel_mean"])
    assert log["steps"] == 2 and len(log["history"]["loss"]) == 2 and log["settings"]["extra"]["n_images"] == 6
    pixels = processor(Image.open(next(image_folder.glob("*.png"))), return_tensors="pt")["pixel_values"]
    assert model(pixel_values=pixels).last_hidden_state.shape == (1, 1 + 16, 32)


def test_cli_rejects_missing_image_folder(tmp_path, capsys):
    assert main(_tiny_cli_args(tmp_path / "no_such_folder", tmp_path / "out")) == 2
    assert "folder not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_teacher_is_an_ema_of_the_student_and_gets_no_gradient():
    settings = PretrainSettings(**TINY)
    student, teacher = build_networks(settings)
    before = [p.detach().clone() for p in teacher.parameters()]
    assert all(torch.equal(t, s) for t, s in zip(before, student.parameters()))
    optimizer = build_optimizer(student, settings)
    criterion = DINOLoss(settings.out_dim)
    for _ in range(3):
        training_step(student, teacher, criterion, optimizer, _fixed_crops(settings),
                      lr=1e-3, momentum=0.9, teacher_temp=0.04, settings=settings)
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    trained = [(t, s, b) for t, s, b in zip(teacher.parameters(), student.parameters(), before) if s.grad is not None]
    assert len(trained) > 10
    assert all(not torch.equal(t, b) for t, _, b in trained)  # the teacher followed the student...
    assert all(not torch.equal(t, s) for t, s, _ in trained)  # ...without becoming it


def test_ema_update_moves_teacher_by_one_minus_momentum():
    teacher, student = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    expected = 0.75 * teacher.weight.detach() + 0.25 * student.weight.detach()
    ema_update(teacher, student, momentum=0.75)
    torch.testing.assert_close(teacher.weight.detach(), expected)


def test_loss_is_finite_and_decreases_on_a_fixed_batch():
    settings = PretrainSettings(**TINY)
    student, teacher = build_networks(settings)
    optimizer = build_optimizer(student, settings)
    criterion = DINOLoss(settings.out_dim)
    crops = _fixed_crops(settings)
    losses = [
        training_step(student, teacher, criterion, optimizer, crops,
                      lr=1e-3, momentum=0.99, teacher_temp=0.04, settings=settings)[0]
        for _ in range(20)
    ]
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_koleo_term_is_added_and_reported():
    settings = PretrainSettings(**TINY, koleo_weight=0.1)
    student, teacher = build_networks(settings)
    loss, stats = training_step(student, teacher, DINOLoss(settings.out_dim), build_optimizer(student, settings),
                                _fixed_crops(settings), lr=1e-3, momentum=0.9, teacher_temp=0.04, settings=settings)
    assert np.isfinite(loss) and np.isfinite(stats["koleo"])


def test_center_is_an_ema_of_the_teacher_batch_mean():
    criterion = DINOLoss(out_dim=3, center_momentum=0.9)
    teacher_out = torch.tensor([[1.0, 0.0, 0.0], [3.0, 0.0, 2.0]])
    criterion(torch.zeros(4, 3), teacher_out, teacher_temp=0.04, n_crops=2)
    torch.testing.assert_close(criterion.center, torch.tensor([[0.2, 0.0, 0.1]]))


def test_prior_evaluation_scores_pretrained_random_and_baselines(tiny_prior, tmp_path):
    root = generate_benchmark(tmp_path / "synth", pairs=4, seed=3, size=96, progress=False)
    report = evaluate_against_random(tiny_prior, root, pairs=4, eval_size=32)
    assert set(report["summary"]) == {"pretrained_prior", "random_vit", "centre_gaussian", "abs_difference"}
    assert 1 <= report["n_pairs"] <= 4
    for scores in report["summary"].values():
        assert 0.0 <= scores["auroc"] <= 1.0 and 0.0 <= scores["pointing_game"] <= 1.0


def test_sinkhorn_targets_are_distributions_that_share_out_the_prototypes():
    logits = torch.randn(64, 8, generator=torch.Generator().manual_seed(0)) * 0.3
    targets = sinkhorn_knopp(logits, temperature=0.04, iterations=50)
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(64))
    torch.testing.assert_close(targets.sum(dim=0), torch.full((8,), 8.0), atol=1e-2, rtol=0)
