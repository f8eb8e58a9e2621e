"""Micro affine registration of the main image onto the reference (paper sec. 3.1, eq. 1-2).

A shallow CNN looks at the downsampled pair and predicts Theta = [A | t] (2 x 3). Its last layer starts
at zero weight and identity bias, so training starts from the identity warp. Only the main image is
warped, with ``affine_grid`` + ``grid_sample`` (``align_corners=False``).

Convention (eq. 1, x = A x_tgt + t): Theta maps normalised coordinates of the *output* (registered) image
to coordinates of the *input* (main) image, exactly what ``F.affine_grid`` expects. Normalised
coordinates run from -1 (left / top) to +1 (right / bottom).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from diffvqa_core.theta_description import describe_theta  # noqa: F401  (re-exported)

IDENTITY_THETA = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
WEIGHTS_FILE = "model.safetensors"
SHAPE_FILE = "registration.json"
"""Files of a ``python -m train pretrain-registration`` output: the state dict and the shape it was built with."""


class AffineRegistration(nn.Module):
    """Shallow CNN that predicts the affine warp of the main image (eq. 1).

    Args:
        size: side to which both images are downsampled before the CNN.
        channels: output channels of the stride-2 conv layers.
        pool: side of the average-pooled feature grid the linear head reads. The paper does not say; a
            global pool (1) leaves the head almost blind to where structures are, which is what a shift
            needs (in our runs it stalled at ~2/3 of the initial misalignment), so presets use 4.
    """

    def __init__(self, size: int, channels: tuple[int, ...], pool: int = 4) -> None:
        super().__init__()
        self.size = size
        layers: list[nn.Module] = []
        in_ch = 2  # the gray main and reference images, concatenated
        for out_ch in channels:
            layers += [nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1), nn.GroupNorm(1, out_ch), nn.GELU()]
            in_ch = out_ch
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(pool), nn.Flatten())
        self.head = nn.Linear(in_ch * pool * pool, 6)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.copy_(torch.tensor(IDENTITY_THETA))

    def forward(self, main: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """Predicts Theta.

        Args:
            main: (B, 3, H, W) main image in [0, 1].
            ref: (B, 3, H, W) reference image in [0, 1].

        Returns:
            (B, 2, 3) affine parameters [A | t].
        """
        pair = torch.cat([main.mean(1, keepdim=True), ref.mean(1, keepdim=True)], dim=1)  # (B, 2, H, W)
        pair = F.interpolate(pair, size=(self.size, self.size), mode="bilinear", align_corners=False,
                             antialias=True)
        return self.head(self.features(pair)).view(-1, 2, 3)  # (B, 2, 3)


def read_registration_shape(directory: str | Path) -> dict:
    """The shape stored beside pretrained registration weights: ``registration_size``, ``registration_channels``
    (a tuple) and ``registration_pool``, as the config fields of the same names.

    Raises:
        FileNotFoundError: when the folder lacks the shape or the weights (naming the file).
    """
    directory = Path(directory)
    for name in (SHAPE_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} not found: not a `python -m train pretrain-registration` "
                                    "output")
    shape = json.loads((directory / SHAPE_FILE).read_text(encoding="utf-8"))
    return {"registration_size": int(shape["registration_size"]),
            "registration_channels": tuple(int(c) for c in shape["registration_channels"]),
            "registration_pool": int(shape["registration_pool"])}


def identity_theta(batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Returns (batch, 2, 3) identity affine parameters."""
    eye = torch.tensor(IDENTITY_THETA, device=device, dtype=dtype or torch.float32).view(1, 2, 3)
    return eye.expand(batch, 2, 3).clone()


def warp(image: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warps ``image`` with ``theta`` (output coords -> input coords), differentiably.

    Pixels sampled from outside the image repeat the border, so the warp does not paint black wedges
    that the saliency branch could latch onto.

    Args:
        image: (B, C, H, W).
        theta: (B, 2, 3).

    Returns:
        (B, C, H, W) registered image.
    """
    grid = F.affine_grid(theta.to(image.dtype), list(image.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
