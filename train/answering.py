"""Answer generation over batches, shared by validation during training and ``train evaluate``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Decoding:
    """How answers are generated (the literature: greedy, beam 2, or beam 10 with no-repeat 3-grams)."""

    num_beams: int = 1
    max_new_tokens: int = 40
    no_repeat_ngram_size: int = 0
    lam: float | None = None  # fusion weight of eq. 7; None = the model's inference_lambda (0.5)
    grammar: bool = False  # not in the paper: answers held to the benchmark's answer grammar
    readout: bool = True  # False: the decoder answers even where the config's difference_readout says change_heads


def images_to(batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's (B, 3, H, W) main and reference images on ``device``."""
    return batch["main"].to(device, non_blocking=True), batch["ref"].to(device, non_blocking=True)


@dataclass
class BatchAnswers:
    """Answers of a batch and what the model saw: theta (B, 2, 3); U, F, M (B, 1, H, W)."""

    answers: list[str]
    theta: torch.Tensor
    prior_mask: torch.Tensor
    adaptive_mask: torch.Tensor
    fused_mask: torch.Tensor


@torch.no_grad()
def answer_batch(model, batch: dict[str, Any], device: torch.device, decoding: Decoding) -> BatchAnswers:
    """Generates one answer per question of a collated batch, keeping the registration and the masks.

    Args:
        model: an unwrapped DiffVQAModel in eval mode.
        batch: from ``train.batches.collate``.
        device: where the model lives.
        decoding: beam width, length limits, lambda.

    Returns:
        The answers in batch order, with theta and the prior, adaptive and fused masks.
    """
    main, ref = images_to(batch, device)
    lam = model.config.inference_lambda if decoding.lam is None else decoding.lam
    state = model.visual_state(main, ref)
    output = model.answer(
        state, list(batch["question"]), lam, num_beams=decoding.num_beams,
        max_new_tokens=decoding.max_new_tokens, no_repeat_ngram_size=decoding.no_repeat_ngram_size,
        grammar=decoding.grammar, readout=decoding.readout,
    )
    return BatchAnswers(output.answers, state.registration.theta, state.prior.union, state.adaptive.fused,
                        output.fused_mask)
