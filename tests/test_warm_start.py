"""Warm start from a trained checkpoint (train.warm_start): which parts are taken, which start as built."""

from __future__ import annotations

import torch

from tests.tiny_model_support import build_tiny_model
from train.warm_start import load_matching_weights


def _trained_checkpoint(tmp_path):
    trained = build_tiny_model()
    with torch.no_grad():
        for tensor in trained.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(1.0)
    trained.save_pretrained(tmp_path / "trained")
    return trained.state_dict()


def test_only_takes_the_named_parts_and_leaves_the_rest_as_built(tmp_path):
    trained = _trained_checkpoint(tmp_path)
    built = {name: tensor.clone() for name, tensor in build_tiny_model().state_dict().items()}
    model = build_tiny_model()
    report = load_matching_weights(model, tmp_path / "trained", only=("prior.", "registration."))
    state = model.state_dict()
    assert report["loaded"] and report["not_taken"]
    assert all(name.startswith(("prior.", "registration.")) for name in report["loaded"])
    assert not any(name.startswith(("prior.", "registration.")) for name in report["not_taken"])
    for name in report["loaded"]:
        assert torch.equal(state[name], trained[name].to(state[name].dtype))
    moved = [name for name in report["not_taken"] if state[name].is_floating_point()]
    assert moved and all(torch.equal(state[name], built[name]) for name in moved)


def test_without_only_every_matching_parameter_is_taken(tmp_path):
    _trained_checkpoint(tmp_path)
    report = load_matching_weights(build_tiny_model(), tmp_path / "trained")
    assert report["loaded"] and not report["not_taken"]


def test_tensors_of_the_named_parts_the_model_has_no_place_for_are_reported(tmp_path):
    from safetensors.torch import load_file, save_file

    from train.warm_start import unplaced_named_tensors

    _trained_checkpoint(tmp_path)
    weights = tmp_path / "trained" / "model.safetensors"
    state = load_file(str(weights))
    state["prior.extra_scale"] = torch.ones(3)  # a tensor of a named part that this model's config does not build
    name = next(k for k in state if k.startswith("registration.") and k.endswith("weight"))
    state[name] = torch.ones(1)  # and one of another shape
    save_file(state, str(weights))
    model = build_tiny_model()
    report = load_matching_weights(model, tmp_path / "trained", only=("prior.", "registration."))
    assert unplaced_named_tensors(report, ("prior.", "registration.")) == sorted(["prior.extra_scale", name])
    assert unplaced_named_tensors(report, ("decoder.",)) == [] and unplaced_named_tensors(report, ()) == []


def test_a_tied_tensor_saved_once_is_reported_tied_not_new(tmp_path):
    """GPT-2's input embedding is its output layer's tensor, saved once: a warm start loads it through the other
    name, and the report must not call it new (the run log once said "1 new or reshaped" for every demo recipe)."""
    trained = build_tiny_model()
    with torch.no_grad():
        trained.decoder.gpt2.lm_head.weight.add_(0.5)
    trained.save_pretrained(tmp_path / "trained")
    model = build_tiny_model()
    report = load_matching_weights(model, tmp_path / "trained")
    assert report["new"] == [] and report["tied"] == ["decoder.gpt2.transformer.wte.weight"]
    assert torch.equal(model.decoder.gpt2.transformer.wte.weight, trained.decoder.gpt2.transformer.wte.weight)
