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
