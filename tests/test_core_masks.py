"""Saliency masks (eq. 4-8): ranges, the frozen prior, and M = 1 as the unmasked baseline (sec. 3.8)."""

from __future__ import annotations

import pytest
import torch

from diffvqa_core import DiffVQAModel
from tiny_model_support import build_tiny_model as build


@pytest.fixture(scope="module")
def model() -> DiffVQAModel:
    return build()


@pytest.fixture(scope="module")
def batch(model):
    torch.manual_seed(1)
    size = model.config.image_size
    text = model.tokenize(["is there any pleural effusion?", "what has changed?"], ["yes", "the edema is worse"])
    return torch.rand(2, 3, size, size), torch.rand(2, 3, size, size), text


def test_masks_lie_in_unit_interval(model, batch):
    main, ref, text = batch
    out = model(main, ref, **text, lam=0.7)
    for mask in (out.prior_mask, out.adaptive_mask, out.fused_mask, out.state.prior.attention_main):
        assert mask.shape == (2, 1, model.config.image_size, model.config.image_size)
        assert mask.min() >= 0.0 and mask.max() <= 1.0


def test_fused_mask_is_lambda_blend_of_prior_and_adaptive(model, batch):
    main, ref, text = batch
    out = model(main, ref, **text, lam=0.3)
    assert torch.allclose(out.fused_mask, 0.3 * out.prior_mask + 0.7 * out.adaptive_mask)


def test_identity_mask_reduces_to_unmasked_baseline(batch):
    main, ref, text = batch
    out = build(use_saliency_mask=False)(main, ref, **text)
    assert torch.equal(out.fused_mask, torch.ones_like(out.fused_mask))
    assert torch.equal(out.masked.masked_main, out.state.features_main)
    assert torch.equal(out.masked.masked_ref, out.state.features_ref)
    assert out.terms["mask_main"].item() == 0.0


def test_all_ones_mask_through_the_masked_path_gives_unmasked_features(model, batch):
    main, ref, _ = batch
    model.eval()
    with torch.no_grad():
        state = model.visual_state(main, ref)
        masked = model.masked_encode(state, torch.ones_like(state.prior.union), with_mask_image=False)
    assert torch.allclose(masked.masked_main, state.features_main, atol=1e-5)
    assert torch.allclose(masked.masked_ref, state.features_ref, atol=1e-5)


def test_prior_is_frozen_and_stays_in_eval_mode(model, batch):
    main, ref, text = batch
    model.train()
    model(main, ref, **text).loss.backward()
    assert not model.prior.training and not model.prior.backbone.training
    assert all(p.grad is None and not p.requires_grad for p in model.prior.parameters())
    model.zero_grad(set_to_none=True)


def test_prior_attention_is_min_max_scaled_per_image(model, batch):
    main, _, _ = batch
    grid = model.prior.attention_grid(main)
    assert grid.shape == (2, 1, model.prior.grid_size, model.prior.grid_size)
    assert torch.allclose(grid.flatten(1).amin(1), torch.zeros(2))
    assert torch.allclose(grid.flatten(1).amax(1), torch.ones(2))
