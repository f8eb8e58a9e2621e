"""Pretrained parts from local folders, offline, in the formats their libraries write (issue 16, part 1).

Small random models stand in for the real ones, saved exactly as users have them: timm's hub format
(``model.safetensors`` + ``config.json`` from ``timm.models.save_for_hf``), a transformers Dinov2Model with its
``preprocessor_config.json``, and a GPT2LMHeadModel with a GPT-2 style byte-level BPE tokenizer beside it. The
paper preset (small widths where a real size would be slow) is built from them through a weights directory and
through the hub cache layout (``HF_HOME``).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import timm
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import BitImageProcessor, Dinov2Config, Dinov2Model, GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

from diffvqa_core import DiffVQAConfig, DiffVQAModel
from diffvqa_core.data.vocabulary import builtin_corpus
from diffvqa_core.tokenizer import tokenizer_for
from diffvqa_core.weights import WEIGHTS_DIR_ENV, WeightsNotFoundError, pretrained_sources

SWIN_ID = "timm/swin_base_patch4_window12_384.ms_in22k"
DINO_ID = "microsoft/rad-dino"
GPT2_ID = "gpt2"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
SMALL = {  # the paper preset's modules at small widths (the pretrained parts' sizes come from their folders)
    "image_size": 64,
    "image_encoder_overrides": {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2], "window_size": 4},
    "prior_image_size": 64,
    "registration_size": 32,
    "registration_channels": [4, 8],
    "question_layers": 1,
    "mask_head_hidden": 32,
}


def gpt2_style_tokenizer(vocab_size: int = 400) -> GPT2TokenizerFast:
    """A byte-level BPE with GPT-2's end-of-text token, wrapped and saved as GPT-2's tokenizer is."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(sorted(set(builtin_corpus())), trainer=trainer)
    return GPT2TokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                             unk_token="<|endoftext|>")


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict:
    """The three parts saved as their hub repositories hold them, under a weights dir laid out by hub id."""
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(7)
    swin = timm.create_model("swin_base_patch4_window12_384", num_classes=11, img_size=SMALL["image_size"],
                             **SMALL["image_encoder_overrides"])
    timm.models.save_for_hf(swin, root / SWIN_ID, safe_serialization=True)
    dino = Dinov2Model(Dinov2Config(image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2))
    dino.save_pretrained(root / DINO_ID)
    BitImageProcessor(image_mean=[0.41] * 3, image_std=[0.27] * 3).save_pretrained(root / DINO_ID)
    tokenizer = gpt2_style_tokenizer()
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=96, n_layer=1, n_head=4, n_positions=256))
    gpt2.save_pretrained(root / GPT2_ID)
    tokenizer.save_pretrained(root / GPT2_ID)
    return {"root": root, "swin": swin, "dino": dino, "gpt2": gpt2, "tokenizer": tokenizer}


def paper_config(**changes) -> DiffVQAConfig:
    return dataclasses.replace(DiffVQAConfig.from_preset("paper"), **{**SMALL, **changes})


def assert_loaded(model: DiffVQAModel, parts: dict) -> None:
    assert torch.equal(model.image_encoder.backbone.patch_embed.proj.weight, parts["swin"].patch_embed.proj.weight)
    assert torch.equal(model.image_encoder.backbone.layers[3].blocks[0].attn.qkv.weight,
                       parts["swin"].layers[3].blocks[0].attn.qkv.weight)
    assert torch.equal(model.prior.backbone.embeddings.cls_token, parts["dino"].embeddings.cls_token)
    assert torch.equal(model.decoder.gpt2.transformer.h[0].attn.c_attn.weight,
                       parts["gpt2"].transformer.h[0].attn.c_attn.weight)
    tokenizer = parts["tokenizer"]
    assert model.tokenizer.vocab_size == tokenizer.vocab_size == parts["gpt2"].config.vocab_size
    assert len(model.tokenizer) == len(tokenizer) + 4  # <pad> <img> <qtn> <ans>
    text = "the main image has an additional finding of pleural effusion than the reference image."
    assert model.tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]  # GPT-2's ids, not the local BPE's
    assert model.config.prior_mean == (0.41,) * 3 and model.config.prior_std == (0.27,) * 3


def test_paper_architecture_builds_offline_from_a_weights_dir(parts, monkeypatch):
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(parts["root"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = paper_config()
    assert config.image_encoder_pretrained and config.prior_pretrained and config.decoder_pretrained
    origins = {s.part: (s.origin, Path(s.location)) for s in pretrained_sources(config)}
    assert origins == {
        "image encoder": ("weights dir", parts["root"] / SWIN_ID / "model.safetensors"),
        "prior": ("weights dir", parts["root"] / DINO_ID),
        "decoder": ("weights dir", parts["root"] / GPT2_ID),
        "tokenizer": ("weights dir", parts["root"] / GPT2_ID),
    }
    torch.manual_seed(0)
    model = DiffVQAModel(config, tokenizer_for(config)).eval()
    assert_loaded(model, parts)
    torch.manual_seed(1)
    main, ref = torch.rand(2, 1, 3, 64, 64)
    text = model.tokenize(["what has changed compared to the reference image?"], ["nothing has changed."])
    with torch.no_grad():
        out = model(main, ref, **text)
    assert torch.isfinite(out.loss)
    assert isinstance(model.generate(main, ref, ["is there any pleural effusion?"], max_new_tokens=4)[0], str)


def hub_cache_entry(cache: Path, hub_id: str, source: Path) -> None:
    """Copies ``source`` into the hub cache layout: models--org--name/snapshots/<commit>/, refs/main."""
    repo = cache / ("models--" + hub_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(source, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def test_paper_architecture_builds_offline_from_the_hub_cache(parts, tmp_path, monkeypatch):
    home = tmp_path / "hf"
    for hub_id in (SWIN_ID, DINO_ID):
        hub_cache_entry(home / "hub", hub_id, parts["root"] / hub_id)
    hub_cache_entry(home / "hub", "openai-community/gpt2", parts["root"] / GPT2_ID)  # the hub's id for GPT-2 now
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = paper_config()
    assert {s.origin for s in pretrained_sources(config)} == {"hub cache"}
    torch.manual_seed(0)
    assert_loaded(DiffVQAModel(config, tokenizer_for(config)), parts)


@pytest.mark.parametrize("tokenizer", [None, "gpt2"])  # unset, or left at the preset's default
def test_the_tokenizer_defaults_to_the_decoders_own_folder(parts, monkeypatch, tmp_path, tokenizer):
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = paper_config(decoder=str(parts["root"] / GPT2_ID), tokenizer=tokenizer)
    built = tokenizer_for(config)
    assert built.vocab_size == parts["tokenizer"].vocab_size
    assert built("is there any pleural effusion?")["input_ids"] == \
        parts["tokenizer"]("is there any pleural effusion?")["input_ids"]


@pytest.fixture()
def gpt2_without_tokenizer(parts, tmp_path) -> Path:
    folder = tmp_path / "gpt2-no-tokenizer"
    shutil.copytree(parts["root"] / GPT2_ID, folder)
    for name in TOKENIZER_FILES:
        (folder / name).unlink()
    return folder


def test_pretrained_gpt2_without_its_tokenizer_is_an_error_naming_the_files(gpt2_without_tokenizer, monkeypatch):
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = DiffVQAConfig.from_preset("tiny")
    config = dataclasses.replace(config, decoder=str(gpt2_without_tokenizer), decoder_pretrained=True, tokenizer=None)
    with pytest.raises(WeightsNotFoundError, match="tokenizer.json") as error:
        tokenizer_for(config)
    assert str(gpt2_without_tokenizer) in str(error.value)
    # Built directly (the local BPE stands in for the missing tokenizer): refused, never resized to fit.
    with pytest.raises(ValueError, match="vocab.json \\+ merges.txt") as error:
        DiffVQAModel(config)
    message = str(error.value)
    assert str(gpt2_without_tokenizer) in message and "unrelated embedding" in message


def test_missing_parts_offline_are_one_error_naming_each_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as error:
        pretrained_sources(DiffVQAConfig.from_preset("paper"))
    message = str(error.value)
    for folder, files in ((SWIN_ID, "model.safetensors, config.json"),
                          (DINO_ID, "preprocessor_config.json"), (GPT2_ID, "config.json, model.safetensors")):
        assert f"{tmp_path / folder}/" in message and files in message
    assert "tokenizer.json (or vocab.json + merges.txt)" in message


def test_image_encoder_weights_of_another_architecture_are_refused(parts, tmp_path, monkeypatch):
    folder = tmp_path / "not-swin"
    shutil.copytree(parts["root"] / SWIN_ID, folder)
    (folder / "config.json").write_text('{"architecture": "convnext_atto", "num_classes": 11}')
    config = paper_config(image_encoder_weights=str(folder), prior_pretrained=False, decoder_pretrained=False)
    with pytest.raises(ValueError, match="convnext_atto"):
        DiffVQAModel(config)


def test_a_random_decoder_can_pad_its_vocabulary_and_still_rebuilds_itself(tmp_path):
    config = DiffVQAConfig.from_preset("tiny")
    padded = dataclasses.replace(config, decoder_overrides={**config.decoder_overrides, "vocab_size": 4096})
    torch.manual_seed(0)
    model = DiffVQAModel(padded)
    assert model.decoder.gpt2.get_output_embeddings().weight.shape[0] == 4096 > len(model.tokenizer)
    model.save_pretrained(tmp_path)
    assert DiffVQAModel.from_pretrained(tmp_path).decoder.gpt2.config.vocab_size == 4096
    too_small = dataclasses.replace(config, decoder_overrides={**config.decoder_overrides, "vocab_size": 100})
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        DiffVQAModel(too_small)
