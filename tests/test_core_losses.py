"""Auxiliary losses of eq. 2 and 11-18 and the lambda schedule of eq. 7."""

from __future__ import annotations

import pytest
import torch

from diffvqa_core.losses import (gram_loss, gram_matrix, koleo_loss, lambda_schedule, language_modeling_loss,
                                 mask_consistency_loss, prediction_loss, registration_loss)


def test_registration_loss_is_zero_at_identity():
    theta = torch.eye(2, 3).expand(4, 2, 3)
    assert registration_loss(theta).item() == 0.0


def test_registration_loss_grows_away_from_identity():
    theta = torch.eye(2, 3).expand(1, 2, 3).clone()
    theta[0, 0, 2] = 0.2
    assert registration_loss(theta).item() > 0.0


def test_gram_loss_is_zero_for_identical_feature_maps():
    x = torch.randn(2, 16, 8)
    assert gram_loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-10)


def test_gram_loss_is_positive_for_different_feature_maps():
    torch.manual_seed(0)
    assert gram_loss(torch.randn(2, 16, 8), torch.randn(2, 16, 8)).item() > 0.0


def test_gram_matrix_has_unit_diagonal_over_n():
    x = torch.randn(1, 10, 4)
    assert torch.allclose(gram_matrix(x).diagonal(dim1=1, dim2=2), torch.full((1, 10), 0.1))


def test_koleo_is_finite_for_duplicated_samples():
    z = torch.randn(1, 8).repeat(4, 1).requires_grad_(True)
    loss = koleo_loss(z)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_koleo_is_lower_for_spread_samples():
    spread = torch.eye(4)
    close = torch.ones(4, 4) + 0.01 * torch.eye(4)
    assert koleo_loss(spread) < koleo_loss(close)


@pytest.mark.parametrize(("progress", "expected"), [(0.0, 1.0), (0.5, 0.75), (1.0, 0.5)])
def test_lambda_schedule_follows_cosine_from_one_to_half(progress, expected):
    assert lambda_schedule(progress) == pytest.approx(expected)


def test_mask_consistency_is_zero_when_masked_equals_gated():
    full, gate = torch.randn(2, 9, 4), torch.rand(2, 9, 4)
    assert mask_consistency_loss(gate * full, full, gate).item() == 0.0


def test_prediction_loss_is_zero_for_perfect_reconstruction():
    x = torch.randn(2, 9, 4)
    assert prediction_loss(x, x).item() == 0.0


def test_language_modeling_loss_ignores_padding():
    logits = torch.zeros(1, 3, 5)
    logits[0, 0, 2] = 50.0
    targets = torch.tensor([[2, 1, 1]])
    assert language_modeling_loss(logits, targets, torch.tensor([[1, 0, 0]])).item() == pytest.approx(0.0, abs=1e-6)


def _blob_image(shift_px: float = 0.0) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    blob = torch.exp(-((yy - 30.0) ** 2 + (xx - 26.0 - shift_px) ** 2) / 60.0)
    return blob.expand(1, 3, 64, 64).clone()


def test_image_similarity_is_zero_up_to_gain_and_offset():
    from diffvqa_core.losses import image_similarity_loss

    image = _blob_image()
    assert image_similarity_loss(image, 0.2 + 0.5 * image, 32).item() == pytest.approx(0.0, abs=1e-5)


def test_image_similarity_grows_with_misalignment_and_its_gradient_points_back():
    from diffvqa_core.losses import image_similarity_loss
    from diffvqa_core.registration import warp

    ref = _blob_image()
    losses = [image_similarity_loss(_blob_image(shift), ref, 32).item() for shift in (0.0, 3.0, 6.0)]
    assert losses[0] < losses[1] < losses[2]
    # main = ref moved 4 px right: sampling further right (t_x > 0) registers it, so the gradient on t_x is < 0.
    theta = torch.eye(2, 3).unsqueeze(0).requires_grad_(True)
    image_similarity_loss(warp(_blob_image(4.0), theta), ref, 32).backward()
    assert theta.grad[0, 0, 2].item() < 0.0
