"""DiffVQAConfig: presets, JSON round trip, refusal of unknown keys."""

from __future__ import annotations

import pytest

from diffvqa_core import DiffVQAConfig
from diffvqa_core.config import available_presets


@pytest.mark.parametrize("name", ["paper", "tiny"])
def test_preset_round_trips_through_json(name, tmp_path):
    config = DiffVQAConfig.from_preset(name)
    config.to_json(tmp_path / "config.json")
    assert DiffVQAConfig.from_json(tmp_path / "config.json") == config


def test_paper_preset_holds_the_papers_hyperparameters():
    config = DiffVQAConfig.from_preset("paper")
    assert config.image_size == 384 and config.prior_image_size == 518
    assert (config.reg_w_smooth, config.reg_w_det, config.reg_w_trans) == (1e-4, 1e-5, 1e-6)
    assert (config.alpha_mask, config.alpha_pred, config.alpha_gram, config.alpha_koleo) == (0.1, 0.1, 0.1, 0.001)
    assert (config.lambda_start, config.lambda_end, config.inference_lambda) == (1.0, 0.5, 0.5)
    assert (config.question_layers, config.question_heads, config.projector_heads) == (6, 12, 8)


def test_tiny_preset_asks_for_no_pretrained_weights():
    assert not DiffVQAConfig.from_preset("tiny").uses_pretrained_weights


def test_random_init_turns_every_pretrained_flag_off():
    assert not DiffVQAConfig.from_preset("paper").random_init().uses_pretrained_weights


def test_unknown_key_raises_naming_it():
    data = DiffVQAConfig.from_preset("tiny").to_dict()
    data["lamda_end"] = 0.3
    with pytest.raises(ValueError, match="lamda_end"):
        DiffVQAConfig.from_dict(data)


def test_unknown_preset_raises():
    with pytest.raises(ValueError, match="available"):
        DiffVQAConfig.from_preset("huge")


def test_invalid_ambiguity_choice_raises():
    with pytest.raises(ValueError, match="mask_gate"):
        DiffVQAConfig(mask_gate="mask")


def test_presets_are_listed():
    assert {"paper", "tiny"} <= set(available_presets())
