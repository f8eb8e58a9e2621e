"""Training configs: YAML with typed fields, unknown keys named with the closest valid one, shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from train.config import TrainConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "train" / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
TABLE_CONFIGS = sorted((CONFIG_DIR / "synthetic_table").glob("*.yaml")) + sorted(
    (CONFIG_DIR / "change_table").glob("*.yaml"))


def _yaml(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_the_closest_valid_key(tmp_path):
    with pytest.raises(ValueError, match=r"unknown key 'learnig_rate' \(did you mean 'learning_rate'\?\)"):
        TrainConfig.from_yaml(_yaml(tmp_path, "learnig_rate: 1.0e-4\n"))


def test_unknown_model_key_names_the_closest_model_field(tmp_path):
    config = TrainConfig.from_yaml(_yaml(tmp_path, "model_preset: tiny\nmodel:\n  use_saliency_msk: false\n"))
    with pytest.raises(ValueError, match=r"'use_saliency_msk'.*did you mean 'use_saliency_mask'"):
        config.model_config()


def test_numbers_yaml_reads_as_strings_become_floats(tmp_path):
    assert TrainConfig.from_yaml(_yaml(tmp_path, "learning_rate: 1e-4\n")).learning_rate == 1e-4


def test_value_of_the_wrong_type_is_refused(tmp_path):
    with pytest.raises(ValueError, match="epochs_stage1: expected int"):
        TrainConfig.from_yaml(_yaml(tmp_path, "epochs_stage1: four\n"))


def test_defaults_are_the_papers_recipe():
    config = TrainConfig()
    assert (config.epochs_stage1, config.epochs_stage2) == (4, 4)
    assert (config.train_batch_size, config.eval_batch_size) == (10, 8)
    assert (config.learning_rate, config.weight_decay) == (1.5e-4, 0.05)


@pytest.mark.parametrize("path", CONFIGS + TABLE_CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_build_their_model_config(path):
    config = TrainConfig.from_yaml(path)
    assert config.model_config().image_size in (192, 384)


def test_ablations_change_one_thing_of_the_paper_config():
    directory = CONFIG_DIR
    paper = TrainConfig.from_yaml(directory / "paper.yaml").to_dict()

    def changes(name):
        config = TrainConfig.from_yaml(directory / name).to_dict()
        return {k: v for k, v in config.items() if v != paper[k] and k != "output_dir"}

    assert changes("ablation_no_freeze.yaml") == {"epochs_stage1": 0, "epochs_stage2": 8}
    assert changes("ablation_no_unsupervised.yaml") == {"model": {"use_unsupervised_losses": False}}
    assert changes("ablation_no_saliency.yaml") == {"model": {"use_saliency_mask": False}}
    assert changes("ablation_unregistered.yaml") == {"model": {"use_registration": False}}


def test_typo_on_the_command_line_exits_with_the_message(tmp_path, capsys):
    from train.__main__ import main

    assert main(["fit", "--config", str(_yaml(tmp_path, "epochs_stage_1: 2\n"))]) == 2
    assert "did you mean 'epochs_stage1'" in capsys.readouterr().err


def test_question_weights_name_known_families_with_positive_weights(tmp_path):
    config = TrainConfig.from_yaml(_yaml(tmp_path, "question_weights: {difference: 4}\n"))
    assert config.question_weights == {"difference": 4.0}
    with pytest.raises(ValueError, match="unknown question family 'diference'"):
        TrainConfig.from_yaml(_yaml(tmp_path, "question_weights: {diference: 4}\n"))
    with pytest.raises(ValueError, match="must be > 0"):
        TrainConfig.from_yaml(_yaml(tmp_path, "question_weights: {difference: 0}\n"))


def _changes_of(base: str, name: str, table: str = "synthetic_table"):
    reference = TrainConfig.from_yaml(CONFIG_DIR / base).to_dict()
    config = TrainConfig.from_yaml(CONFIG_DIR / table / f"{name}.yaml").to_dict()
    changed = {k: v for k, v in config.items() if v != reference[k] and k not in ("output_dir", "model")}
    model = {k: v for k, v in config["model"].items() if v != reference["model"].get(k)}
    return changed, model


def test_each_synthetic_table_row_changes_what_its_name_says_of_the_demo():
    def changes(name):
        return _changes_of("demo.yaml", name)

    assert changes("no_change_tokens") == ({}, {"reference_tokens": "reference"})
    assert changes("paper_adaptive_mask") == ({}, {"adaptive_mask_source": "tokens"})
    assert changes("no_saliency") == ({}, {"use_saliency_mask": False})
    assert changes("no_freeze") == ({"epochs_stage1": 0, "epochs_stage2": 5}, {})
    assert changes("no_unsupervised") == ({}, {"use_unsupervised_losses": False})
    assert changes("unregistered") == ({}, {"use_registration": False})
    assert changes("question_only") == ({}, {"use_images": False, "image_encoder_pretrained": False})


def test_each_earlier_experiment_config_changes_what_its_name_says_of_the_previous_demo():
    def changes(name):
        return _changes_of("synthetic_table/previous_demo.yaml", name)

    paper_slots = {"reference_tokens": "reference"}
    assert changes("full_reference_tokens") == ({}, paper_slots)
    assert changes("full_pooled_gate") == ({}, {**paper_slots, "mask_gate": "pooled_mask"})
    assert changes("full_difference_tokens") == ({}, {"reference_tokens": "difference"})
    assert changes("full_trained_on_difference") == ({"question_types": ["difference"]}, paper_slots)
    assert changes("full_difference_tokens_trained_on_difference") == (
        {"question_types": ["difference"]}, {"reference_tokens": "difference"})
    assert changes("no_saliency_difference_tokens") == (
        {}, {"use_saliency_mask": False, "reference_tokens": "difference"})


def test_the_paper_preset_leaves_every_departure_of_the_demo_off():
    from diffvqa_core.config import DiffVQAConfig

    demo = TrainConfig.from_yaml(CONFIG_DIR / "demo.yaml")
    paper = DiffVQAConfig.from_preset("paper")
    departures = {"change_encoder": False, "adaptive_mask_source": "tokens", "reference_tokens": "reference",
                  "alpha_change_mask": 0.0, "alpha_change_labels": 0.0, "alpha_similarity": 0.0}
    assert {k: getattr(paper, k) for k in departures} == departures
    assert all(demo.model[k] != v for k, v in departures.items())
    assert TrainConfig().question_weights is None and not TrainConfig().eval_grammar and not TrainConfig().init_weights
    shipped = TrainConfig.from_yaml(CONFIG_DIR / "demo_continued.yaml")
    assert paper.difference_readout == "decoder" and shipped.model["difference_readout"] == "change_heads"
    assert paper.alpha_pose == 0.0 and shipped.model["alpha_pose"] > 0
    assert paper.change_gate is None and shipped.model["change_gate"] is not None
    assert paper.registration_weights is None and shipped.model["registration_weights"]
    assert paper.registration_refinement == "none" and shipped.model["registration_refinement"] == "ecc"


def test_the_shipped_demo_continues_demo_yaml_with_pretrained_parts_and_the_readout():
    reference = TrainConfig.from_yaml(CONFIG_DIR / "demo.yaml").to_dict()
    config = TrainConfig.from_yaml(CONFIG_DIR / "demo_continued.yaml").to_dict()
    changed = {k for k, v in config.items() if v != reference[k] and k != "model"}
    model = {k for k, v in config["model"].items() if v != reference["model"].get(k)}
    assert changed == {"init_weights", "epochs_stage1", "epochs_stage2", "learning_rate", "output_dir"}
    assert model == {"change_encoder_weights", "registration_weights", "registration_size", "registration_channels",
                     "registration_refinement", "difference_readout", "change_read_both_ways", "change_threshold",
                     "change_gate", "lambda_start", "alpha_pose"}
    from diffvqa_core import DiffVQAConfig

    paper = DiffVQAConfig.from_preset("paper")  # the registration keeps the paper preset's shape
    assert (config["model"]["registration_size"], tuple(config["model"]["registration_channels"])) == (
        paper.registration_size, paper.registration_channels)
    assert config["epochs_stage2"] == 0  # phi and the change encoder stay frozen: the heads that answer are pretrained


def test_each_change_table_row_changes_what_its_name_says_of_its_full_model():
    def changes(name):
        return _changes_of("change_table/full.yaml", name, table="change_table")

    full = TrainConfig.from_yaml(CONFIG_DIR / "change_table" / "full.yaml")
    assert full.init_weights == "outputs/previous_demo_v5" and full.init_parts == [
        "prior.", "image_encoder.backbone.", "change_encoder.", "registration."]
    assert full.model_config().change_encoder and full.model_config().difference_readout == "change_heads"
    assert changes("no_saliency") == ({}, {"use_saliency_mask": False})
    assert changes("no_unsupervised") == ({}, {"use_unsupervised_losses": False})
    assert changes("no_freeze") == ({"epochs_stage1": 0, "epochs_stage2": 3}, {})
    no_registration = {"use_registration": False, "registration_refinement": "none", "alpha_similarity": 0.0,
                       "alpha_pose": 0.0}
    assert changes("unregistered") == ({}, no_registration)
    without_encoder = {"change_encoder": False, "adaptive_mask_source": "tokens", "reference_tokens": "reference",
                       "difference_readout": "decoder", "change_read_both_ways": False, "change_gate": None,
                       "alpha_change_mask": 0.0, "alpha_change_labels": 0.0}
    assert changes("paper_method") == (
        {"init_parts": ["prior.", "image_encoder.backbone.", "registration."]}, without_encoder)
    assert changes("question_only") == ({"init_parts": ["prior."]}, {"use_images": False, **without_encoder})


def test_the_bundled_checkpoint_is_what_its_recipe_builds():
    """assets/demo_model/config.json is demo_retrained_encoder.yaml's model: demo_192.yaml's with the results table's
    change encoder (one scale), its shape recorded from those weights; nothing else of demo_192.yaml changes."""
    import json

    recipe = TrainConfig.from_yaml(CONFIG_DIR / "demo_retrained_encoder.yaml")
    previous = TrainConfig.from_yaml(CONFIG_DIR / "demo_192.yaml")
    changed = {k for k, v in recipe.to_dict().items() if v != previous.to_dict()[k] and k != "model"}
    assert changed == {"init_weights", "output_dir"}
    assert {k for k, v in recipe.model.items() if v != previous.model.get(k)} == {"change_encoder_weights",
                                                                                  "change_encoder_shape"}
    shipped = json.loads((CONFIG_DIR.parents[1] / "assets" / "demo_model" / "config.json").read_text())
    built = recipe.model_config().to_dict()
    assert shipped["change_encoder_shape"]["multiscale_tokens"] is False
    assert shipped["change_encoder_shape"]["input_size"] == 192
    different = {k for k in built if k != "change_encoder_shape" and shipped.get(k) != built[k]}
    assert different == set(), different
