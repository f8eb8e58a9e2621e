"""Image encoder phi with its projector (paper sec. 3.3) and the question encoder (sec. 3.4).

phi = projector(backbone(x)): the backbone is a timm model (Swin-B/4 window 12 at 384 px in the paper,
whose last stage gives 12 x 12 = 144 tokens of width 1024); the projector is one linear layer, one 8-head
transformer encoder layer and a two-layer MLP into the decoder width. The question encoder adds learnable
positions to the decoder's (shared) token embeddings and runs transformer encoder layers over them.

Inference fast path for timm's Swin blocks (``fast_window_attention``): timm shifts the token grid with two
``torch.roll`` calls, partitions it into windows and reverses both afterwards, which copies the activations
about six times per block. Because LayerNorm, the linear layers and the residual are per token, the whole
shift + partition is one fixed permutation of the tokens: the fast path gathers the normalised tokens once
into window order, runs the window attention with ``F.scaled_dot_product_attention`` (relative position bias
and shift mask folded into one cached additive mask), and gathers the result back before the residual. Same
weights, same arithmetic up to float rounding (a test compares it with timm's own forward); used only when
no gradient is being recorded and the module is in eval mode, with timm's forward everywhere else.
"""

from __future__ import annotations

import types

import timm
import torch
import torch.nn.functional as F
from torch import nn

from diffvqa_core.config import DiffVQAConfig
from diffvqa_core.weights import resolve_image_encoder


def build_backbone(config: DiffVQAConfig, *, pretrained: bool) -> nn.Module:
    """Creates the timm backbone without classifier; pretrained weights come through timm's own loader, from the
    file ``diffvqa_core.weights.resolve_image_encoder`` finds (or timm's hub download when online)."""
    kwargs = dict(config.image_encoder_overrides)
    kwargs.setdefault("img_size", config.image_size)
    if pretrained:
        source = resolve_image_encoder(config)
        overlay = {"file": source.location} if source.origin != "hub" else None
        kwargs.update(pretrained=True, pretrained_cfg_overlay=overlay)
    try:
        return timm.create_model(config.image_encoder, num_classes=0, **kwargs)
    except TypeError as error:  # convolutional backbones (ConvNeXt, ResNet) take any input size, no img_size
        if "img_size" not in str(error) or "img_size" in config.image_encoder_overrides:
            raise
        kwargs.pop("img_size")
        return timm.create_model(config.image_encoder, num_classes=0, **kwargs)


def _window_order(height: int, width: int, window: tuple[int, int], shift: tuple[int, int]) -> torch.Tensor:
    """Row-major token indices of an H x W grid in the order of timm's roll(-shift) + window_partition."""
    index = torch.arange(height * width).view(height, width)
    if any(shift):
        index = torch.roll(index, shifts=(-shift[0], -shift[1]), dims=(0, 1))
    index = index.view(height // window[0], window[0], width // window[1], window[1])
    return index.permute(0, 2, 1, 3).reshape(-1)  # (H * W,): window-major, row-major inside each window


def _window_plan(block: nn.Module, height: int, width: int, like: torch.Tensor):
    """The block's token permutation, its inverse and the additive attention mask (nW or 1, heads, N, N).

    Cached on the block, keyed by the grid size, device, dtype and the version of the bias table (so loading
    new weights rebuilds it).
    """
    table = block.attn.relative_position_bias_table
    key = (height, width, like.device, table.data_ptr(), table._version)
    plan = getattr(block, "_diffvqa_window_plan", None)
    if plan is not None and plan[0] == key:
        return plan[1]
    with torch.no_grad():
        order = _window_order(height, width, block.window_size, block.shift_size).to(like.device)
        inverse = torch.argsort(order)
        mask = block.attn._get_rel_pos_bias().float()  # (1, heads, N, N)
        if block.attn_mask is not None:
            mask = mask + block.attn_mask.to(mask).unsqueeze(1)  # (nW, heads, N, N): the shifted windows
        mask = mask.contiguous()
    block._diffvqa_window_plan = (key, (order, inverse, mask))
    return order, inverse, mask


def _fast_swin_block_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A timm SwinTransformerBlock on (B, H, W, C) with one gather in and one gather out (see module doc)."""
    batch, height, width, channels = x.shape
    window_h, window_w = block.window_size
    if (block.training or torch.is_grad_enabled() or height % window_h or width % window_w
            or getattr(block, "dynamic_mask", False)):
        return type(block).forward(block, x)
    order, inverse, mask = _window_plan(block, height, width, x)
    attn = block.attn
    heads, tokens = attn.num_heads, window_h * window_w
    flat = x.reshape(batch, height * width, channels)  # (B, L, C)
    windows = block.norm1(flat).index_select(1, order)  # (B, L, C) in window order
    qkv = attn.qkv(windows).view(-1, tokens, 3, heads, channels // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (B * nW, heads, N, d) each
    if mask.shape[0] > 1:  # shifted windows: one mask per window, repeated over the batch
        mask = mask.unsqueeze(0).expand(batch, -1, -1, -1, -1).reshape(-1, heads, tokens, tokens)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype))  # (B * nW, heads, N, d)
    out = attn.proj(out.transpose(1, 2).reshape(batch, height * width, channels))  # (B, L, C) window order
    flat = flat + out.index_select(1, inverse)
    flat = flat + block.mlp(block.norm2(flat))
    return flat.view(batch, height, width, channels)


def fast_window_attention(backbone: nn.Module, enabled: bool = True) -> int:
    """Switches timm Swin blocks of ``backbone`` to the inference fast path (or back); returns how many."""
    count = 0
    for module in backbone.modules():
        if type(module).__name__ == "SwinTransformerBlock" and hasattr(module, "attn"):
            if enabled:
                module.forward = types.MethodType(_fast_swin_block_forward, module)
            else:
                module.__dict__.pop("forward", None)
            count += 1
    return count


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
        # fp32 into the encoder layer: its fused inference path ignores CPU autocast and would mix dtypes.
        return self.mlp(self.transformer(self.linear(tokens).float()))


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
        self.fast_blocks = fast_window_attention(self.backbone)  # Swin only; 0 for other backbones
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
