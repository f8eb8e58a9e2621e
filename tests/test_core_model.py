"""DiffVQAModel: loss terms and total (eq. 18), ablation switches, tokenization, generation, training."""

from __future__ import annotations

import pytest
import torch

from diffvqa_core import DiffVQAModel
from diffvqa_core.model import LOSS_TERMS
from tiny_model_support import build_tiny_model as build

QUESTIONS = ["is there any pleural effusion?", "what has changed compared to the reference image?"]
ANSWERS = ["yes", "the main image has additional findings of edema"]


@pytest.fixture(scope="module")
def model() -> DiffVQAModel:
    return build()


@pytest.fixture(scope="module")
def images(model):
    torch.manual_seed(1)
    size = model.config.image_size
    return torch.rand(2, 3, size, size), torch.rand(2, 3, size, size)


def test_forward_returns_every_loss_term_and_weighted_total(model, images):
    out = model(*images, **model.tokenize(QUESTIONS, ANSWERS), lam=0.5)
    assert set(out.terms) == set(LOSS_TERMS)
    assert all(term.ndim == 0 and torch.isfinite(term) for term in out.terms.values())
    cfg = model.config
    expected = (out.terms["lm"] + out.terms["reg"] + cfg.alpha_similarity * out.terms["sim"]
                + cfg.alpha_mask * (out.terms["mask_main"] + out.terms["mask_ref"])
                + cfg.alpha_pred * (out.terms["pred_main"] + out.terms["pred_ref"])
                + cfg.alpha_gram * (out.terms["gram"] + out.terms["gram_mask"])
                + cfg.alpha_koleo * out.terms["koleo"])
    assert torch.allclose(out.loss, expected)
    assert out.theta.shape == (2, 2, 3)
    assert out.logits.shape[:2] == model.tokenize(QUESTIONS, ANSWERS)["answer_ids"].shape


def test_without_unsupervised_losses_total_is_lm_plus_reg(images):
    model = build(use_unsupervised_losses=False)
    out = model(*images, **model.tokenize(QUESTIONS, ANSWERS))
    assert torch.allclose(out.loss, out.terms["lm"] + out.terms["reg"])


def test_without_registration_main_image_is_untouched(images):
    model = build(use_registration=False)
    state = model.visual_state(*images)
    assert torch.equal(state.registration.theta, torch.eye(2, 3).expand(2, 2, 3))
    assert state.registration.registered_main is images[0]


def test_pooled_mask_gate_uses_mask_on_token_grid(images):
    model = build(mask_gate="pooled_mask")
    out = model(*images, **model.tokenize(QUESTIONS, ANSWERS))
    assert out.masked.mask is None
    assert model.mask_gate(out.masked, out.fused_mask).shape == (2, model.image_encoder.num_tokens, 1)


def test_tokenize_ends_answers_with_end_of_answer_token(model):
    text = model.tokenize(QUESTIONS, ANSWERS)
    eos = model.decoder.token_ids["eos"]
    lengths = text["answer_mask"].sum(1)
    assert [text["answer_ids"][i, n - 1].item() for i, n in enumerate(lengths)] == [eos, eos]
    assert text["question_ids"].shape == text["question_mask"].shape


def test_empty_question_cannot_be_tokenized(model):
    with pytest.raises(ValueError):
        model.tokenize([""])


def test_set_image_encoder_trainable_freezes_the_backbone_only(model):
    model.set_image_encoder_trainable(False)
    assert not any(p.requires_grad for p in model.image_encoder.backbone.parameters())
    assert all(p.requires_grad for p in model.image_encoder.projector.parameters())  # new, not pretrained
    assert all(p.requires_grad for p in model.mask_head.parameters())
    model.set_image_encoder_trainable(True)
    assert all(p.requires_grad for p in model.image_encoder.parameters())


def test_generate_greedy_equals_single_beam(model, images):
    model.eval()
    greedy = model.generate(*images, QUESTIONS, max_new_tokens=8)
    assert greedy == model.generate(*images, QUESTIONS, max_new_tokens=8, num_beams=1)
    assert len(model.generate(*images, QUESTIONS, max_new_tokens=8, num_beams=3, no_repeat_ngram_size=2)) == 2


def test_kv_cache_output_equals_recomputation(model, images):
    model.eval()
    cached = model.generate(*images, QUESTIONS, max_new_tokens=8, use_cache=True)
    assert cached == model.generate(*images, QUESTIONS, max_new_tokens=8, use_cache=False)


def test_greedy_tokens_match_teacher_forced_argmax(model, images):
    model.eval()
    text = model.tokenize(QUESTIONS)
    with torch.no_grad():
        state = model.visual_state(*images)
        masked = model.masked_encode(state, model.fuse(state.prior.union, state.adaptive.fused, 0.5),
                                     with_mask_image=False)
        prefix = model.prefix(masked, text["question_ids"], text["question_mask"])
        generated = model.decoder.generate(prefix, max_new_tokens=6)  # (B, T)
        is_eos = (generated == model.decoder.token_ids["eos"]).long()
        valid = (is_eos.cumsum(1) - is_eos) == 0  # up to and including the first end-of-answer token
        logits = model.decoder(prefix, generated, valid.long())
    assert torch.equal(logits.argmax(-1)[valid], generated[valid])


@pytest.mark.slow
def test_tiny_loss_falls_over_50_steps_on_a_fixed_batch(images):
    model = build()
    model.train()
    text = model.tokenize(QUESTIONS, ANSWERS)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    history = []
    for _ in range(50):
        loss = model(*images, **text, lam=0.75).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert sum(history[-5:]) / 5 < 0.5 * sum(history[:5]) / 5


def test_similarity_term_joins_the_total_only_with_registration_on(images):
    text = None
    for use_registration in (True, False):
        model = build(alpha_similarity=2.0, use_registration=use_registration)
        text = text or model.tokenize(QUESTIONS, ANSWERS)
        out = model(*images, **text)
        assert out.terms["sim"].item() > 0.0  # two random images are far from similar
        weight = 2.0 if use_registration else 0.0  # without registration nothing could lower it
        assert model.loss_weights()["sim"] == weight


def test_question_only_baseline_ignores_the_images(images):
    model = build(use_images=False)
    text = model.tokenize(QUESTIONS, ANSWERS)
    out = model(*images, **text)
    assert out.loss.item() == pytest.approx(out.terms["lm"].item())
    assert all(out.terms[name].item() == 0.0 for name in LOSS_TERMS if name != "lm")
    out.loss.backward()
    assert all(p.grad is None for p in model.image_encoder.parameters())
    assert model.decoder.gpt2.transformer.wte.weight.grad is not None
    model.eval()
    other = (torch.zeros_like(images[0]), torch.ones_like(images[1]))
    with torch.no_grad():
        assert torch.equal(model(*images, **text).logits, model(*other, **text).logits)
    assert model.generate(*images, QUESTIONS, max_new_tokens=6) == model.generate(*other, QUESTIONS, max_new_tokens=6)


def test_difference_reference_tokens_put_main_minus_reference_in_the_second_image_slot(images):
    model = build(reference_tokens="difference", use_saliency_mask=False).eval()
    text = model.tokenize(QUESTIONS)
    with torch.no_grad():
        state = model.visual_state(*images)
        masked = model.masked_encode(state, torch.ones_like(state.prior.union), with_mask_image=False)
        prefix = model.prefix(masked, text["question_ids"], text["question_mask"])
    tokens = state.features_main.shape[1]
    second = prefix.embeddings[:, tokens + 2: 2 * tokens + 2]  # after [<img>, f_main, <img>]
    assert torch.allclose(second, state.features_main - state.features_ref)
    with pytest.raises(ValueError, match="reference_tokens"):
        build(reference_tokens="sum")


def test_unmasked_difference_reference_tokens_read_the_masked_main_and_the_unmasked_change(images):
    model = build(reference_tokens="unmasked_difference").eval()
    text = model.tokenize(QUESTIONS)
    with torch.no_grad():
        state = model.visual_state(*images)
        fused = model.fuse(state.prior.union, state.adaptive.fused, 0.5)
        masked = model.masked_encode(state, fused, with_mask_image=False)
        prefix = model.prefix(masked, text["question_ids"], text["question_mask"], state)
        with pytest.raises(ValueError, match="unmasked features"):
            model.prefix(masked, text["question_ids"], text["question_mask"])
        assert len(model.generate(*images, QUESTIONS, max_new_tokens=3)) == len(QUESTIONS)
    tokens = state.features_main.shape[1]
    assert torch.allclose(prefix.embeddings[:, 1: tokens + 1], masked.masked_main)
    assert torch.allclose(prefix.embeddings[:, tokens + 2: 2 * tokens + 2], state.features_main - state.features_ref)
    assert not torch.allclose(masked.masked_main, state.features_main)  # the first slot is the masked one
