"""Saliency masks: frozen DINO prior, adaptive mask head, gated fusion and the final fusion (sec. 3.2).

* Prior (eq. 4): A = cosine(CLS, patch) of a frozen Dinov2 model (RAD-DINO in the paper), min-max
  scaled to [0, 1] per image and resized to the image; U = max(A_main, A_ref).
* Adaptive mask (eq. 5-6): m = sigmoid(g(f)) per token with g a 3-layer MLP; F = sigmoid(h(m_main, m_ref))
  with h a one-layer gated CNN over the union, intersection and difference of the token masks.
* Fusion (eq. 7): M = lambda U + (1 - lambda) F. The schedule of lambda is ``losses.lambda_schedule``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from diffvqa_core.fusion import fuse_masks  # noqa: F401  (re-exported: eq. 7 lives there, torch-free)
from torch import nn
from transformers import AutoImageProcessor, Dinov2Config, Dinov2Model

from diffvqa_core.config import DiffVQAConfig
from diffvqa_core.weights import resolve_transformers_part


@dataclass
class PriorMaps:
    """DINO attention of each visit and their union (eq. 4), each (B, 1, H, W) in [0, 1]."""

    attention_main: torch.Tensor
    attention_ref: torch.Tensor
    union: torch.Tensor


@dataclass
class AdaptiveMaps:
    """Token masks m_main, m_ref (B, N) of eq. 5 and the fused adaptive mask F (B, 1, H, W) of eq. 6."""

    token_main: torch.Tensor
    token_ref: torch.Tensor
    fused: torch.Tensor


def build_dinov2(config: DiffVQAConfig, *, pretrained: bool) -> Dinov2Model:
    """Builds the prior backbone: ``Dinov2Model.from_pretrained`` (located as ``diffvqa_core.weights`` says) or
    random weights from Dinov2Config.

    Raises:
        diffvqa_core.weights.WeightsNotFoundError: the prior's weights are not on this machine.
    """
    if pretrained:
        source = resolve_transformers_part(config.prior, "prior")
        return Dinov2Model.from_pretrained(source.location, local_files_only=source.origin != "hub")
    return Dinov2Model(Dinov2Config(**config.prior_overrides))


def processor_statistics(name: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Mean and std of the prior's own image processor (its preprocessor_config.json), if on disk."""
    try:
        source = resolve_transformers_part(name, "prior")
        processor = AutoImageProcessor.from_pretrained(source.location, local_files_only=source.origin != "hub")
    except (OSError, ValueError):
        return None
    return tuple(float(v) for v in processor.image_mean), tuple(float(v) for v in processor.image_std)


class DinoPrior(nn.Module):
    """Frozen DINO attention prior (eq. 4). Never trained: no gradients, always in eval mode.

    Args:
        config: model config (prior name, input size and normalisation).
        pretrained: load the configured weights rather than initialise at random.
    """

    def __init__(self, config: DiffVQAConfig, *, pretrained: bool) -> None:
        super().__init__()
        self.backbone = build_dinov2(config, pretrained=pretrained)
        self.backbone.requires_grad_(False)
        self.input_size = config.prior_image_size
        self.patch_size = self.backbone.config.patch_size
        self.register_buffer("mean", torch.tensor(config.prior_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.prior_std).view(1, 3, 1, 1), persistent=False)
        self.train(False)

    def train(self, mode: bool = True) -> DinoPrior:
        """Keeps the prior in eval mode whatever the rest of the model does."""
        return super().train(False)

    @property
    def grid_size(self) -> int:
        """Patches per side (37 for RAD-DINO at 518 px)."""
        return self.input_size // self.patch_size

    @torch.no_grad()
    def attention_grid(self, images: torch.Tensor) -> torch.Tensor:
        """CLS-to-patch cosine similarity on the patch grid, min-max scaled per image.

        Args:
            images: (B, 3, H, W) in [0, 1].

        Returns:
            (B, 1, g, g) in [0, 1], g = ``grid_size``.
        """
        x = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                          align_corners=False, antialias=True)
        x = (x - self.mean) / self.std
        hidden = self.backbone(pixel_values=x).last_hidden_state  # (B, 1 + g*g, D)
        cls, patches = hidden[:, :1], hidden[:, 1:]
        similarity = F.cosine_similarity(patches, cls, dim=-1)  # (B, g*g)
        low = similarity.amin(dim=1, keepdim=True)
        high = similarity.amax(dim=1, keepdim=True)
        scaled = (similarity - low) / (high - low).clamp_min(1e-6)
        return scaled.view(-1, 1, self.grid_size, self.grid_size)  # (B, 1, g, g)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Attention map A resized to the image: (B, 3, H, W) -> (B, 1, H, W) in [0, 1]."""
        return resize_mask(self.attention_grid(images), images.shape[-1])


class AdaptiveMaskHead(nn.Module):
    """g of eq. 5: a 3-layer MLP on each token -> mask probability.

    Args:
        width: token width C.
        hidden: width of the two hidden layers.
    """

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1)
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N) token mask in [0, 1]."""
        return torch.sigmoid(self.mlp(tokens).squeeze(-1))


class GatedFusionHead(nn.Module):
    """h of eq. 6: one gated conv layer over [union, intersection, difference] of two token masks.

    Union is the element-wise max, intersection the min, difference the absolute difference. The conv
    outputs a value and a gate channel; the logit is value * sigmoid(gate), and F = sigmoid(logit).

    Args:
        kernel: conv kernel size (odd).
    """

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, kernel, padding=kernel // 2)

    def forward(self, mask_main: torch.Tensor, mask_ref: torch.Tensor) -> torch.Tensor:
        """Fuses (B, 1, h, w) token-grid masks into F of shape (B, 1, h, w) in [0, 1]."""
        stacked = torch.cat(
            [torch.maximum(mask_main, mask_ref), torch.minimum(mask_main, mask_ref),
             (mask_main - mask_ref).abs()], dim=1,
        )  # (B, 3, h, w)
        value, gate = self.conv(stacked).chunk(2, dim=1)  # (B, 1, h, w) each
        return torch.sigmoid(value * torch.sigmoid(gate))


def resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of a (B, 1, h, w) mask in [0, 1] to (B, 1, size, size), staying in [0, 1]."""
    if mask.shape[-1] == size and mask.shape[-2] == size:
        return mask
    return F.interpolate(mask, size=(size, size), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
