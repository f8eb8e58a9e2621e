"""Image encoder phi with its projector (paper sec. 3.3) and the question encoder (sec. 3.4).

phi = projector(backbone(x)): the backbone is a timm model (Swin-B/4 window 12 at 384 px in the paper,
whose last stage gives 12 x 12 = 144 tokens of width 1024); the projector is one linear layer, one 8-head
transformer encoder layer and a two-layer MLP into the decoder width. The question encoder adds learnable
positions to the decoder's (shared) token embeddings and runs transformer encoder layers over them.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from diffvqa_core.config import DiffVQAConfig

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors")


def resolve_weights_file(path: str) -> str:
    """Returns a weights file: ``path`` itself, or the first known weights file inside a directory.

    Raises:
        FileNotFoundError: when nothing loadable is there.
    """
    candidate = Path(path)
    if candidate.is_file():
        return str(candidate)
    for name in WEIGHT_FILES:
        if (candidate / name).is_file():
            return str(candidate / name)
    raise FileNotFoundError(f"no image encoder weights at {path} (looked for {', '.join(WEIGHT_FILES)})")


def build_backbone(config: DiffVQAConfig, *, pretrained: bool) -> nn.Module:
    """Creates the timm backbone without classifier; pretrained weights come from timm's own loader."""
    kwargs = dict(config.image_encoder_overrides)
    kwargs.setdefault("img_size", config.image_size)
    if not pretrained:
        return timm.create_model(config.image_encoder, pretrained=False, num_classes=0, **kwargs)
    overlay = None
    if config.image_encoder_weights:
        overlay = dict(file=resolve_weights_file(config.image_encoder_weights))
    return timm.create_model(config.image_encoder, pretrained=True, num_classes=0,
                             pretrained_cfg_overlay=overlay, **kwargs)


class Projector(nn.Module):
    """Linear -> one transformer encoder layer -> two-layer MLP (sec. 3.3).

    Args:
        in_width: backbone feature width (1024 for Swin-B).
        width: decoder width (768 for GPT-2 small).
        heads: attention heads of the transformer layer (8 in the paper).
    """

    def __init__(self, in_width: int, width: int, heads: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_width, width)
        self.transformer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=4 * width, dropout=0.1, activation="gelu", batch_first=True,
            norm_first=True,
        )
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, in_width) -> (B, N, width)."""
        return self.mlp(self.transformer(self.linear(tokens)))


class ImageEncoder(nn.Module):
    """phi: normalisation, timm backbone, last-stage tokens, projector.

    Args:
        config: model config (timm name, weights, input size).
        width: decoder width the projector maps into.
        pretrained: load the configured weights rather than initialise at random.
    """

    def __init__(self, config: DiffVQAConfig, width: int, *, pretrained: bool) -> None:
        super().__init__()
        self.backbone = build_backbone(config, pretrained=pretrained)
        self.projector = Projector(self.backbone.num_features, width, config.projector_heads)
        self.grid_size = config.image_size // self.backbone.feature_info[-1]["reduction"]
        data_cfg = self.backbone.pretrained_cfg
        self.register_buffer("mean", torch.tensor(data_cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(data_cfg["std"]).view(1, 3, 1, 1), persistent=False)

    @property
    def num_tokens(self) -> int:
        """Tokens per image (144 for Swin-B at 384 px)."""
        return self.grid_size * self.grid_size

    def backbone_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Last-stage backbone tokens: (B, 3, H, W) in [0, 1] -> (B, N, C_backbone)."""
        features = self.backbone.forward_features((images - self.mean) / self.std)
        if features.ndim == 3:  # ViT-like: (B, prefix + N, C)
            return features[:, getattr(self.backbone, "num_prefix_tokens", 0):]
        if getattr(self.backbone, "output_fmt", "NCHW") == "NHWC":  # Swin: (B, h, w, C)
            return features.flatten(1, 2)
        return features.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, h*w, C)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """phi(x): (B, 3, H, W) in [0, 1] -> (B, N, width)."""
        return self.projector(self.backbone_tokens(images))


class QuestionEncoder(nn.Module):
    """Learnable positions + transformer encoder layers over shared token embeddings (sec. 3.4).

    Args:
        width: embedding width (the decoder's).
        max_len: longest question in tokens.
        layers: encoder layers (6 in the paper).
        heads: attention heads (12 in the paper).
    """

    def __init__(self, width: int, max_len: int, layers: int, heads: int) -> None:
        super().__init__()
        self.positions = nn.Parameter(torch.randn(1, max_len, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=4 * width, dropout=0.1, activation="gelu", batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(width), enable_nested_tensor=False)

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encodes a question.

        Args:
            embeddings: (B, L, width) token embeddings from the decoder's table.
            mask: (B, L) 1 for real tokens, 0 for padding.

        Returns:
            (B, L, width) f_text.
        """
        x = embeddings + self.positions[:, : embeddings.shape[1]]  # (B, L, width)
        return self.encoder(x, src_key_padding_mask=~mask.bool())
