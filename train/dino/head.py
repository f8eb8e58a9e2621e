"""DINO projection head and the student/teacher network that wraps a ``Dinov2Model`` backbone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Dinov2Model


class DINOHead(nn.Module):
    """MLP projection, L2 bottleneck and a weight-normalised prototype layer (DINO's head).

    The last layer is the weight-normed linear layer of DINO with its gain frozen at 1
    (``norm_last_layer=True``): each prototype row is L2-normalised on the fly, which is what
    ``weight_norm`` with a fixed ``g = 1`` computes, without the parametrisation machinery.

    Args:
        in_dim: width of the backbone's CLS embedding.
        out_dim: number of prototypes K (65536 in DINO; a few thousand suffice for a small CPU run).
        hidden_dim: width of the MLP's hidden layers.
        bottleneck_dim: width of the L2-normalised bottleneck.
    """

    def __init__(self, in_dim: int, out_dim: int = 4096, hidden_dim: int = 512, bottleneck_dim: int = 128) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        self.prototypes = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        # Only each row's direction matters. Unit rows (rather than DINO's std 0.02 entries, norm ~0.23 at 128-d)
        # make Adam's steps of ~lr per entry rotate the prototypes ~4x more slowly: a gentler effective
        # prototype learning rate at the high learning rates a short CPU run needs.
        with torch.no_grad():
            self.prototypes.copy_(F.normalize(torch.randn(out_dim, bottleneck_dim), dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, in_dim) embeddings to (B, out_dim) prototype logits (cosines in [-1, 1])."""
        x = self.mlp(x)
        # The logits are divided by temperatures as low as 0.04 downstream: keep this layer in float32 under
        # bf16 autocast, where a cosine's rounding error (~0.4 %) would become a sizeable logit error.
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = F.normalize(x.float(), dim=-1)  # (B, bottleneck)
            return F.linear(x, F.normalize(self.prototypes, dim=-1))  # (B, K)


class DINONetwork(nn.Module):
    """Backbone + head applied to a list of crops, grouped by resolution (DINO's ``MultiCropWrapper``).

    Args:
        backbone: the ViT whose CLS embedding (``pooler_output``, after the final LayerNorm) is projected.
        head: the projection head.
    """

    def __init__(self, backbone: Dinov2Model, head: DINOHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed and project each crop's CLS token.

        Args:
            crops: V tensors of shape (B, 3, h_v, w_v); consecutive crops of one size run in one pass.

        Returns:
            (V * B, D) CLS embeddings and (V * B, K) logits, crop-major (the first B rows are crop 0).
        """
        outputs, start = [], 0
        while start < len(crops):
            end = start
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            cls = self.backbone(pixel_values=torch.cat(crops[start:end])).pooler_output  # (n * B, D)
            outputs.append(cls)
            start = end
        embeddings = torch.cat(outputs)
        return embeddings, self.head(embeddings)
