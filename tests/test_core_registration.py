"""Micro affine registration (eq. 1-2) and its description for reviewers."""

from __future__ import annotations

import numpy as np
import torch

from diffvqa_core.losses import registration_loss
from diffvqa_core.registration import AffineRegistration, describe_theta, warp


def test_registration_starts_at_identity_with_zero_loss():
    torch.manual_seed(0)
    module = AffineRegistration(size=32, channels=(4, 8))
    main, ref = torch.rand(2, 3, 48, 48), torch.rand(2, 3, 48, 48)
    theta = module(main, ref)
    assert torch.equal(theta, torch.eye(2, 3).expand(2, 2, 3))
    assert registration_loss(theta).item() == 0.0
    assert torch.allclose(warp(main, theta), main, atol=1e-5)


def test_positive_translation_moves_content_left():
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, :, 4] = 1.0
    theta = torch.tensor([[[1.0, 0.0, 0.25], [0.0, 1.0, 0.0]]])  # samples 1 px to the right
    assert warp(image, theta)[0, 0, 0].argmax().item() == 3


def test_describe_theta_of_identity():
    assert describe_theta(np.eye(2, 3), 384) == "rotation +0.0 deg, scale 1.00 x 1.00, shift 0.0 px right, 0.0 px down"


def test_describe_theta_reports_content_motion_in_pixels():
    theta = np.array([[1.0, 0.0, -0.1], [0.0, 1.0, 0.05]])
    assert describe_theta(theta, 200) == "rotation +0.0 deg, scale 1.00 x 1.00, shift 10.0 px right, 5.0 px up"


def test_the_affine_head_reads_a_pooled_grid_not_one_global_average():
    module = AffineRegistration(size=32, channels=(4, 8), pool=4)
    assert module.head.in_features == 8 * 4 * 4
    assert AffineRegistration(size=32, channels=(4, 8), pool=1).head.in_features == 8


def test_pose_loss_is_the_corner_error_metric_and_zero_for_the_inverse_pose():
    import pytest

    from diffvqa_core.data import affine
    from diffvqa_core.losses import pose_loss
    from diffvqa_core.metrics import corner_displacement

    rng = np.random.default_rng(0)
    gt = np.stack([affine.random_pose(rng, max_rotation_deg=4, max_log_scale=0.05, max_shift=0.05)
                   for _ in range(3)])
    guess = torch.tensor(np.stack([affine.random_pose(rng, max_rotation_deg=1, max_log_scale=0.01,
                                                      max_shift=0.01) for _ in range(3)]), requires_grad=True)
    loss = pose_loss(guess, torch.tensor(gt), 192)
    expected = np.mean([corner_displacement(gt[i], guess[i].detach().double().numpy(), height=192, width=192)
                        for i in range(3)])
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    loss.backward()
    assert guess.grad.abs().sum() > 0
    inverse = torch.tensor(np.stack([affine.invert(g) for g in gt]))
    assert pose_loss(inverse, torch.tensor(gt), 192).item() == pytest.approx(0.0, abs=1e-4)


def test_model_adds_the_pose_term_only_with_a_weight_and_a_synthetic_pose():
    from tests.tiny_model_support import build_tiny_model

    model = build_tiny_model(alpha_pose=1.0)
    main, ref = torch.rand(2, 3, 192, 192), torch.rand(2, 3, 192, 192)
    text = model.tokenize(["is there edema?"] * 2, ["no"] * 2)
    args = (main, ref, text["question_ids"], text["question_mask"], text["answer_ids"], text["answer_mask"])
    pose = torch.tensor([[[1.0, 0.05, 0.1], [-0.05, 1.0, 0.0]]] * 2)
    with_pose, without = model(*args, gt_theta=pose), model(*args)
    assert with_pose.terms["pose"] > 0 and without.terms["pose"] == 0
    assert model.loss_weights()["pose"] == 1.0
    assert build_tiny_model().loss_weights()["pose"] == 0.0


def test_pretrain_registration_writes_weights_the_model_loads_and_a_warm_start_keeps(tmp_path):
    """`python -m train pretrain-registration` (not in the paper): a few steps on fresh pairs, scored as the share
    of the corner error left; `registration_weights` loads exactly those weights, of the config's shape only."""
    import json

    import pytest
    from safetensors.torch import load_file

    from train.__main__ import main as train_main
    from train.warm_start import load_matching_weights, own_weight_prefixes
    from tests.tiny_model_support import build_tiny_model

    out = tmp_path / "registration"
    assert train_main(["pretrain-registration", "--out", str(out), "--steps", "4", "--batch-size", "4",
                       "--image-size", "64", "--size", "64", "--channels", "8", "16", "32",
                       "--generation-size", "96", "--val-pairs", "6", "--eval-every", "2", "--lr", "1e-2",
                       "--workers", "0", "--threads", "1"]) == 0
    log = json.loads((out / "training_log.json").read_text())
    assert [h["step"] for h in log["history"]] == [2, 4]
    assert log["history"][-1]["phantom_error_left"] > 0 and "real_error_left" not in log["history"][-1]
    saved = load_file(str(out / "model.safetensors"))
    assert not torch.equal(saved["head.bias"], torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))  # it trained

    model = build_tiny_model(registration_weights=str(out))  # the tiny preset's shape: 64 px, (8, 16, 32), pool 4
    assert all(torch.equal(model.registration.state_dict()[k], v) for k, v in saved.items())
    assert own_weight_prefixes(model) == ("registration.",)
    trained = build_tiny_model()
    trained.save_pretrained(tmp_path / "trained")
    report = load_matching_weights(model, tmp_path / "trained", keep=own_weight_prefixes(model))
    assert report["kept"] and all(name.startswith("registration.") for name in report["kept"])
    assert torch.equal(model.registration.head.bias, saved["head.bias"])
    assert own_weight_prefixes(trained) == ()
    with pytest.raises(ValueError, match="shape"):
        build_tiny_model(registration_weights=str(out), registration_size=32)
    with pytest.raises(FileNotFoundError, match="registration.json"):
        build_tiny_model(registration_weights=str(tmp_path))
