"""Warm start: initialise a new model from a trained checkpoint's weights wherever names and shapes match.

Used by ``init_weights`` in a training config (not in the paper): a recipe that adds a part (the change encoder)
starts every other part (prior, image encoder, registration, question encoder, decoder) from a model trained
before, instead of repeating that model's pretraining. Only safetensors are read.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from diffvqa_core.model import WEIGHTS_FILE, refuse_pickle_checkpoint


def resolve_init_checkpoint(name: str) -> Path:
    """A checkpoint directory; "demo" is the bundled demo model."""
    if name == "demo":
        from diffvqa_core.pipeline import DEMO_CHECKPOINT

        return DEMO_CHECKPOINT
    return Path(name)


def load_matching_weights(model: torch.nn.Module, checkpoint: str | Path,
                          keep: tuple[str, ...] = (), only: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Copies into ``model`` every tensor of ``checkpoint``'s weights whose name and shape match, except those whose
    name starts with one of ``keep`` (parts the model already loaded from their own weights) and, when ``only`` is
    given, those whose name starts with none of ``only`` (parts left to start as built).

    Returns:
        {"loaded": names copied, "mismatched": names in both with different shapes, "new": the model's names the
        checkpoint lacks, "tied": the model's names the checkpoint lacks whose tensor is one it holds under another
        name (GPT-2's input embedding, tied to its output layer, is saved once), "unused": the checkpoint's names
        the model lacks, "kept": names left as they were, "not_taken": names outside ``only``, left as built}.

    Raises:
        FileNotFoundError: when the checkpoint has no model.safetensors.
    """
    directory = resolve_init_checkpoint(str(checkpoint))
    refuse_pickle_checkpoint(directory)
    if not (directory / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"init_weights: no {WEIGHTS_FILE} in {directory}")
    source = load_file(str(directory / WEIGHTS_FILE))
    target = model.state_dict()
    report: dict[str, list[str]] = {"loaded": [], "mismatched": [], "new": [], "tied": [], "kept": [],
                                    "not_taken": [], "unused": sorted(set(source) - set(target))}
    sharing: dict[tuple, list[str]] = {}  # names that are one tensor (tied weights)
    for name, tensor in target.items():
        sharing.setdefault((tensor.data_ptr(), tensor.shape), []).append(name)
    with torch.no_grad():
        for name, tensor in target.items():
            if keep and name.startswith(keep):
                report["kept"].append(name)
            elif only and not name.startswith(only):
                report["not_taken"].append(name)
            elif name not in source:
                twins = [n for n in sharing[(tensor.data_ptr(), tensor.shape)] if n != name and n in source]
                report["tied" if twins else "new"].append(name)
            elif source[name].shape != tensor.shape:
                report["mismatched"].append(name)
            else:
                tensor.copy_(source[name].to(tensor.dtype))
                report["loaded"].append(name)
    return report


def unplaced_named_tensors(report: dict[str, list[str]], only: tuple[str, ...]) -> list[str]:
    """The checkpoint's tensors under the ``only`` prefixes that did not go into the model (no such name in it, or
    another shape): a sign that the model's config differs from the checkpoint's in those parts."""
    return sorted(name for name in report["unused"] + report["mismatched"] if only and name.startswith(only))


def own_weight_prefixes(model) -> tuple[str, ...]:
    """Parameter-name prefixes of the parts a model config loads from their own weights (a warm start keeps them):
    the change encoder when ``change_encoder_weights`` names a ``pretrain-change`` output, the registration when
    ``registration_weights`` names a ``pretrain-registration`` output."""
    own = ("change_encoder.",) if model.config.change_encoder and model.config.change_encoder_weights else ()
    return own + (("registration.",) if model.config.registration_weights else ())
