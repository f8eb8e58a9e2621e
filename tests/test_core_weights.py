"""Checkpoints and pretrained parts: save/load round trip, library loaders, the paper preset's shapes."""

from __future__ import annotations

import dataclasses
import json

import pytest
import timm
import torch
from safetensors.torch import save_file
from transformers import BitImageProcessor, Dinov2Config, Dinov2Model, GPT2Config, GPT2LMHeadModel

from diffvqa_core import DiffVQAConfig, DiffVQAModel
from diffvqa_core.tokenizer import local_tokenizer


def build(**overrides) -> DiffVQAModel:
    torch.manual_seed(0)
    return DiffVQAModel(dataclasses.replace(DiffVQAConfig.from_preset("tiny"), **overrides)).eval()


def inputs(model: DiffVQAModel):
    torch.manual_seed(1)
    size = model.config.image_size
    text = model.tokenize(["is there any pleural effusion?"], ["yes"])
    return torch.rand(1, 3, size, size), torch.rand(1, 3, size, size), text


def test_save_load_round_trips_to_identical_outputs(tmp_path):
    model = build()
    model.save_pretrained(tmp_path)
    loaded = DiffVQAModel.from_pretrained(tmp_path)
    main, ref, text = inputs(model)
    with torch.no_grad():
        before, after = model(main, ref, **text), loaded(main, ref, **text)
    assert torch.equal(before.logits, after.logits)
    assert all(torch.equal(before.terms[k], after.terms[k]) for k in before.terms)
    assert model.generate(main, ref, ["what has changed?"], max_new_tokens=6) == \
        loaded.generate(main, ref, ["what has changed?"], max_new_tokens=6)
    assert loaded.config == model.config


def test_checkpoint_holds_config_safetensors_and_tokenizer_only(tmp_path):
    build().save_pretrained(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in names)


def test_mismatched_weights_raise_value_error_naming_the_keys(tmp_path):
    build().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["question_layers"] = 1
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="question_encoder.encoder.layers.1"):
        DiffVQAModel.from_pretrained(tmp_path)


def test_missing_checkpoint_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        DiffVQAModel.from_pretrained(tmp_path)


def test_pretrained_parts_load_through_the_libraries_loaders(tmp_path):
    tiny = DiffVQAConfig.from_preset("tiny")
    torch.manual_seed(123)
    swin = timm.create_model(tiny.image_encoder, num_classes=5, img_size=tiny.image_size,
                             **tiny.image_encoder_overrides)
    (tmp_path / "swin").mkdir()
    save_file({k: v.contiguous() for k, v in swin.state_dict().items()}, str(tmp_path / "swin" / "model.safetensors"))
    dino = Dinov2Model(Dinov2Config(**tiny.prior_overrides))
    dino.save_pretrained(tmp_path / "dino")
    BitImageProcessor(image_mean=[0.4, 0.4, 0.4], image_std=[0.3, 0.3, 0.3]).save_pretrained(tmp_path / "dino")
    tokenizer = local_tokenizer(tiny.local_tokenizer_vocab_size)
    tokenizer.save_pretrained(tmp_path / "tok")
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), **tiny.decoder_overrides))
    gpt2.save_pretrained(tmp_path / "gpt2")
    config = dataclasses.replace(
        tiny, image_encoder_pretrained=True, image_encoder_weights=str(tmp_path / "swin"),
        prior=str(tmp_path / "dino"), prior_pretrained=True, decoder=str(tmp_path / "gpt2"),
        decoder_pretrained=True, tokenizer=str(tmp_path / "tok"),
    )
    model = DiffVQAModel(config)
    assert torch.equal(model.image_encoder.backbone.patch_embed.proj.weight, swin.patch_embed.proj.weight)
    assert torch.equal(model.prior.backbone.embeddings.cls_token, dino.embeddings.cls_token)
    assert torch.equal(model.decoder.gpt2.transformer.h[0].attn.c_attn.weight, gpt2.transformer.h[0].attn.c_attn.weight)
    assert len(model.tokenizer) == len(tokenizer)
    assert model.config.prior_mean == (0.4, 0.4, 0.4) and model.config.prior_std == (0.3, 0.3, 0.3)


@pytest.fixture(scope="module")
def paper_model() -> DiffVQAModel:
    torch.manual_seed(0)
    return DiffVQAModel(DiffVQAConfig.from_preset("paper").random_init()).eval()


@pytest.mark.slow
def test_paper_preset_has_the_papers_shapes(paper_model):
    image = torch.rand(1, 3, 384, 384)
    with torch.no_grad():
        tokens = paper_model.image_encoder.backbone_tokens(image)
        grid = paper_model.prior.attention_grid(image)
    assert tokens.shape == (1, 144, 1024)
    assert grid.shape == (1, 1, 37, 37)
    assert paper_model.prior.input_size == 518
    assert paper_model.decoder.width == 768
    assert len(paper_model.question_encoder.encoder.layers) == 6
    assert paper_model.question_encoder.encoder.layers[0].self_attn.num_heads == 12
    assert paper_model.image_encoder.projector.transformer.self_attn.num_heads == 8


@pytest.mark.slow
def test_paper_preset_runs_one_forward_pass(paper_model):
    text = paper_model.tokenize(["what has changed compared to the reference image?"], ["nothing has changed"])
    with torch.no_grad():
        out = paper_model(torch.rand(1, 3, 384, 384), torch.rand(1, 3, 384, 384), **text)
    assert torch.isfinite(out.loss)
    assert out.fused_mask.shape == (1, 1, 384, 384)
    assert out.masked.masked_main.shape == (1, 144, 768)
