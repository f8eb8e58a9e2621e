"""DiffVQAPipeline: analyze / reanalyze / fuse, the feature cache, and input checks."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from diffvqa_core import DiffVQAConfig, DiffVQAPipeline
from diffvqa_core.imaging import ImageReadError
from diffvqa_core import pipeline as pipeline_module
from diffvqa_core.pipeline import QuestionError

QUESTION = "what has changed compared to the reference image?"


@pytest.fixture(scope="module")
def pipe() -> DiffVQAPipeline:
    torch.manual_seed(0)
    return DiffVQAPipeline.from_config(DiffVQAConfig.from_preset("tiny"))


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    return rng.random((300, 260)).astype(np.float32), rng.random((280, 240)).astype(np.float32)


@pytest.fixture(scope="module")
def analysis(pipe, pair):
    return pipe.analyze(*pair, QUESTION, max_new_tokens=6)


def test_analyze_returns_model_size_arrays_in_unit_range(pipe, analysis):
    size = pipe.config.image_size
    assert isinstance(analysis.answer, str) and analysis.question == QUESTION
    assert analysis.theta.shape == (2, 3) and analysis.lam == pipe.config.inference_lambda
    for name in ("main_image", "ref_image", "registered_main", "prior_mask", "adaptive_mask", "fused_mask"):
        array = getattr(analysis, name)
        assert array.shape == (size, size) and array.dtype == np.float32, name
        assert array.min() >= 0.0 and array.max() <= 1.0, name


def test_analyze_reads_image_files(pipe, pair, tmp_path):
    paths = []
    for i, array in enumerate(pair):
        paths.append(tmp_path / f"visit{i}.png")
        Image.fromarray((array * 255).astype(np.uint8)).save(paths[-1])
    assert pipe.analyze(paths[0], str(paths[1]), QUESTION, max_new_tokens=4).fused_mask.shape == (192, 192)


def test_reanalyze_changes_only_the_fusion_weight(pipe, analysis):
    again = pipe.reanalyze(analysis, lam=0.3, max_new_tokens=6)
    assert again.lam == 0.3 and again.question == analysis.question
    np.testing.assert_array_equal(again.prior_mask, analysis.prior_mask)
    np.testing.assert_array_equal(again.adaptive_mask, analysis.adaptive_mask)
    np.testing.assert_allclose(again.fused_mask, 0.3 * analysis.prior_mask + 0.7 * analysis.adaptive_mask, atol=1e-6)


def test_reanalyze_does_not_run_the_prior_or_the_unmasked_encoder_again(pipe, analysis):
    calls = {"prior": 0, "encoder": 0, "registration": 0}
    hooks = [
        pipe.model.prior.register_forward_hook(lambda *_: calls.__setitem__("prior", calls["prior"] + 1)),
        pipe.model.image_encoder.register_forward_hook(lambda *_: calls.__setitem__("encoder", calls["encoder"] + 1)),
        pipe.model.registration.register_forward_hook(
            lambda *_: calls.__setitem__("registration", calls["registration"] + 1)),
    ]
    try:
        pipe.reanalyze(analysis, lam=0.8, max_new_tokens=4)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == {"prior": 0, "encoder": 1, "registration": 0}  # the one encoder call: masked pair


def test_fuse_recomputes_the_overlay_without_a_network_pass(pipe, analysis):
    np.testing.assert_allclose(pipe.fuse(analysis, 1.0), analysis.prior_mask)
    np.testing.assert_allclose(pipe.fuse(analysis, 0.0), analysis.adaptive_mask)


@pytest.mark.parametrize("question", ["", "   ", "x" * 1001])
def test_bad_question_raises_question_error(pipe, pair, question):
    with pytest.raises(QuestionError):
        pipe.analyze(*pair, question)


def test_lambda_outside_unit_interval_raises(pipe, analysis):
    with pytest.raises(ValueError, match="lambda"):
        pipe.reanalyze(analysis, lam=1.5)


def test_unreadable_image_raises_image_read_error(pipe, pair):
    with pytest.raises(ImageReadError):
        pipe.analyze(b"definitely not an image", pair[1], QUESTION)


def test_from_config_is_marked_random_init(pipe):
    assert pipe.checkpoint_sha256 == "random-init" and not pipe.is_demo


def test_from_pretrained_reports_checkpoint_name_and_hash(pipe, pair, tmp_path):
    directory = tmp_path / "my-checkpoint"
    pipe.model.save_pretrained(directory)
    loaded = DiffVQAPipeline.from_pretrained(directory)
    assert loaded.checkpoint_name == "my-checkpoint" and not loaded.is_demo
    assert loaded.checkpoint_sha256 == hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()
    expected = pipe.analyze(*pair, QUESTION, max_new_tokens=6).answer
    assert loaded.analyze(*pair, QUESTION, max_new_tokens=6).answer == expected


def test_missing_demo_checkpoint_raises_file_not_found(monkeypatch, tmp_path):
    monkeypatch.setattr(pipeline_module, "DEMO_CHECKPOINT", tmp_path / "no_demo_here")
    with pytest.raises(FileNotFoundError, match="demo"):
        DiffVQAPipeline.from_pretrained(None)
