"""DINO's self-distillation loss: cross-entropy between a centred, sharpened teacher and the student."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


CENTERINGS = ("ema", "sinkhorn")


@torch.no_grad()
def sinkhorn_knopp(logits: torch.Tensor, temperature: float, iterations: int = 3) -> torch.Tensor:
    """Teacher targets with equal prototype marginals over the batch (DINOv2's Sinkhorn-Knopp centering).

    Args:
        logits: (N, K) teacher logits.
        temperature: teacher temperature.
        iterations: alternating row/column normalisations.

    Returns:
        (N, K) targets, each row a distribution.
    """
    q = torch.exp((logits - logits.max()) / temperature).t()  # (K, N)
    prototypes, samples = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True) * prototypes  # each prototype carries 1/K of the mass
        q /= q.sum(dim=0, keepdim=True) * samples  # each sample carries 1/N
    return (q * samples).t()


class DINOLoss(nn.Module):
    """Cross-entropy H(P_teacher, P_student) over every (teacher global crop, other student crop) pair.

    Centering (subtracting an EMA of the teacher's mean output) keeps one prototype from dominating;
    sharpening (a low teacher temperature) keeps the output from going uniform. Together they prevent
    the two collapses DINO is known for.

    ``centering="sinkhorn"`` replaces the EMA center by DINOv2's Sinkhorn-Knopp normalisation of the teacher
    batch (each prototype gets an equal share of the batch), the recipe RAD-DINO was trained with. Each of
    the N teacher outputs must then spread over at least K / N prototypes: keep K near the batch size.

    Args:
        out_dim: number of prototypes K.
        student_temp: temperature of the student softmax (0.1 in DINO).
        center_momentum: EMA momentum of the center (0.9 in DINO).
        centering: "ema" (DINO) or "sinkhorn" (DINOv2).
    """

    def __init__(
        self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9, centering: str = "ema"
    ) -> None:
        super().__init__()
        if centering not in CENTERINGS:
            raise ValueError(f"centering must be one of {CENTERINGS}, got {centering!r}")
        self.centering = centering
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(
        self, student_out: torch.Tensor, teacher_out: torch.Tensor, teacher_temp: float, n_crops: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Compute the loss (and, with EMA centering, update the center).

        Args:
            student_out: (n_crops * B, K) student logits, crop-major, the 2 global crops first.
            teacher_out: (2 * B, K) teacher logits for the 2 global crops.
            teacher_temp: current teacher temperature.
            n_crops: number of crops per image (2 global + local ones).

        Returns:
            The scalar loss and monitoring statistics: the teacher's mean per-sample entropy (near 0 means
            one prototype wins everywhere, near log K means uniform output: both are collapse) and the
            entropy of its batch-mean distribution (how many prototypes are in use).
        """
        student_log_probs = F.log_softmax(student_out.float() / self.student_temp, dim=-1).chunk(n_crops)
        if self.centering == "sinkhorn":
            teacher_probs = sinkhorn_knopp(teacher_out.float().detach(), teacher_temp)
        else:
            teacher_probs = F.softmax((teacher_out.float() - self.center) / teacher_temp, dim=-1).detach()
        teacher_chunks = teacher_probs.chunk(2)
        total, pairs = student_out.new_zeros((), dtype=torch.float32), 0
        for t_index, target in enumerate(teacher_chunks):
            for s_index, log_probs in enumerate(student_log_probs):
                if s_index == t_index:  # the same view: nothing to predict
                    continue
                total = total + (-target * log_probs).sum(dim=-1).mean()
                pairs += 1
        if self.centering == "ema":
            self.update_center(teacher_out)
        mean_probs = teacher_probs.mean(dim=0)
        stats = {
            "teacher_entropy": float(-(teacher_probs * teacher_probs.clamp_min(1e-12).log()).sum(-1).mean()),
            "batch_entropy": float(-(mean_probs * mean_probs.clamp_min(1e-12).log()).sum()),
        }
        return total / pairs, stats

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """EMA of the teacher's batch-mean logits."""
        batch_center = teacher_out.float().mean(dim=0, keepdim=True)
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1.0 - self.center_momentum)
