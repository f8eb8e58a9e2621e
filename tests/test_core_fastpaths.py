"""Fast inference paths give what the plain paths give (tiny preset, random weights).

Each fast path of issue 7 is compared with the plain computation it replaces: the Swin window-attention
fast path with timm's own block forward, one batched phi call with per-image calls, the greedy KV-cache loop
with transformers' ``generate``, the pipeline's visual-state cache with a fresh computation. bf16 is opt-in
and allowed to differ: its agreement with fp32 is reported by ``python -m diffvqa_core.bench --bf16``, and
here only checked to run and give well-formed results.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffvqa_core import DiffVQAConfig, DiffVQAModel, DiffVQAPipeline
from diffvqa_core.encoders import fast_window_attention
from diffvqa_core.tokenizer import local_tokenizer

QUESTIONS = ["is there any pleural effusion?", "what has changed compared to the reference image?"]


@pytest.fixture(scope="module")
def model() -> DiffVQAModel:
    torch.manual_seed(0)
    config = DiffVQAConfig.from_preset("tiny")
    return DiffVQAModel(config, local_tokenizer(config.local_tokenizer_vocab_size)).eval()


@pytest.fixture(scope="module")
def images(model):
    torch.manual_seed(1)
    size = model.config.image_size
    return torch.rand(2, 3, size, size), torch.rand(2, 3, size, size)


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    return rng.random((300, 260)).astype(np.float32), rng.random((280, 240)).astype(np.float32)


def plain_encode(model: DiffVQAModel, images: torch.Tensor) -> torch.Tensor:
    fast_window_attention(model.image_encoder.backbone, enabled=False)
    try:
        return model.encode(images)
    finally:
        fast_window_attention(model.image_encoder.backbone, enabled=True)


def test_swin_fast_path_is_installed_on_every_block(model):
    blocks = [m for m in model.image_encoder.backbone.modules() if type(m).__name__ == "SwinTransformerBlock"]
    assert model.image_encoder.fast_blocks == len(blocks) > 0


def test_swin_fast_path_equals_timm_forward(model, images):
    with torch.inference_mode():
        fast = model.encode(torch.cat(images))
        plain = plain_encode(model, torch.cat(images))
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)


def test_swin_fast_path_follows_new_weights(images):
    torch.manual_seed(2)
    config = DiffVQAConfig.from_preset("tiny")
    model = DiffVQAModel(config, local_tokenizer(config.local_tokenizer_vocab_size)).eval()
    with torch.inference_mode():
        model.encode(images[0])  # builds and caches the attention masks from the current bias tables
    state = {k: v + 0.5 if "relative_position_bias_table" in k else v
             for k, v in model.image_encoder.state_dict().items()}
    model.image_encoder.load_state_dict(state)
    with torch.inference_mode():
        fast = model.encode(images[0])
        plain = plain_encode(model, images[0])
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)


def test_swin_fast_path_is_not_used_when_training(model, images):
    table = next(m for m in model.image_encoder.backbone.modules()
                 if type(m).__name__ == "SwinTransformerBlock").attn.relative_position_bias_table
    model.train()
    try:
        model.encode(images[0][:1]).sum().backward()
        assert table.grad is not None and torch.isfinite(table.grad).all() and table.grad.abs().sum() > 0
    finally:
        model.eval()
        model.zero_grad(set_to_none=True)


def test_batched_encoding_equals_one_image_at_a_time(model, images):
    with torch.inference_mode():
        batched = model.encode(torch.cat(images))  # (4, N, D)
        single = torch.cat([model.encode(image[None]) for image in torch.cat(images)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def test_analyze_runs_prior_once_and_phi_twice_one_batched_call_each(model, pair):
    pipe = DiffVQAPipeline(model, checkpoint_name="t", checkpoint_sha256="t")
    batches = {"prior": [], "encoder": []}
    hooks = [model.prior.register_forward_hook(lambda m, args, out: batches["prior"].append(args[0].shape[0])),
             model.image_encoder.register_forward_hook(lambda m, args, out: batches["encoder"].append(args[0].shape[0]))]
    try:
        pipe.analyze(*pair, QUESTIONS[0], max_new_tokens=3)
    finally:
        for hook in hooks:
            hook.remove()
    assert batches == {"prior": [2], "encoder": [2, 2]}  # [main, ref]; [registered main, ref], [masked main, ref]


def test_greedy_kv_cache_loop_equals_transformers_generate(model, images):
    text = model.tokenize(QUESTIONS)  # two lengths: the shorter question's slot is padded
    assert not bool(text["question_mask"].all())
    with torch.inference_mode():
        state = model.visual_state(*images)
        masked = model.masked_encode(state, model.fuse(state.prior.union, state.adaptive.fused, 0.5),
                                     with_mask_image=False)
        prefix = model.prefix(masked, text["question_ids"], text["question_mask"])
        fast = model.decoder.generate(prefix, max_new_tokens=10)
        library = model.decoder.generate(prefix, max_new_tokens=10, fast=False)
        no_cache = model.decoder.generate(prefix, max_new_tokens=10, use_cache=False)
    assert torch.equal(fast, library)
    assert torch.equal(fast, no_cache)


def test_greedy_loop_without_stopping_decodes_exactly_the_requested_tokens(model, images):
    text = model.tokenize(QUESTIONS[:1])
    with torch.inference_mode():
        state = model.visual_state(images[0][:1], images[1][:1])
        masked = model.masked_encode(state, model.fuse(state.prior.union, state.adaptive.fused, 0.5),
                                     with_mask_image=False)
        prefix = model.prefix(masked, text["question_ids"], text["question_mask"])
        assert model.decoder.greedy(prefix, 7, stop_at_eos=False).shape == (1, 7)


def test_cached_visual_state_gives_the_same_analysis(model, pair):
    cached = DiffVQAPipeline(model, checkpoint_name="t", checkpoint_sha256="t")
    plain = DiffVQAPipeline(model, checkpoint_name="t", checkpoint_sha256="t", state_cache_size=0)
    first = cached.analyze(*pair, QUESTIONS[0], max_new_tokens=6)
    calls = []
    hook = model.prior.register_forward_hook(lambda *_: calls.append(1))
    try:
        again = cached.analyze(*pair, QUESTIONS[1], max_new_tokens=6)  # same pair, new question: from the cache
    finally:
        hook.remove()
    assert calls == []
    expected = plain.analyze(*pair, QUESTIONS[1], max_new_tokens=6)
    assert again.answer == expected.answer
    for name in ("theta", "registered_main", "prior_mask", "adaptive_mask", "fused_mask"):
        np.testing.assert_array_equal(getattr(again, name), getattr(expected, name), err_msg=name)
    np.testing.assert_array_equal(first.prior_mask, again.prior_mask)


def test_visual_state_cache_is_bounded(model):
    pipe = DiffVQAPipeline(model, checkpoint_name="t", checkpoint_sha256="t", state_cache_size=2)
    rng = np.random.default_rng(5)
    for _ in range(4):
        pipe.analyze(rng.random((64, 64)), rng.random((64, 64)), QUESTIONS[0], max_new_tokens=2)
    assert len(pipe._states) == 2
    pipe.clear_cache()
    assert len(pipe._states) == 0


def test_bf16_mode_runs_and_returns_well_formed_analysis(model, pair):
    pipe = DiffVQAPipeline(model, checkpoint_name="t", checkpoint_sha256="t", dtype=torch.bfloat16)
    analysis = pipe.analyze(*pair, QUESTIONS[1], max_new_tokens=6)
    again = pipe.reanalyze(analysis, lam=0.3, max_new_tokens=6)
    size = model.config.image_size
    for result in (analysis, again):
        assert isinstance(result.answer, str)
        for name in ("registered_main", "prior_mask", "adaptive_mask", "fused_mask"):
            array = getattr(result, name)
            assert array.shape == (size, size) and array.dtype == np.float32, name
            assert np.isfinite(array).all() and array.min() >= 0.0 and array.max() <= 1.0, name
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: the weights stay fp32


def test_pipeline_refuses_other_dtypes(model):
    with pytest.raises(ValueError, match="dtype"):
        DiffVQAPipeline(model, checkpoint_name="t", checkpoint_sha256="t", dtype=torch.float16)
