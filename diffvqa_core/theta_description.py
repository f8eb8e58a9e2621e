"""Theta in words for a reviewer: rotation, scale and shift of the main image's content (no torch needed)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def describe_theta(theta: Any, image_size: int) -> str:
    """Describes in words what the warp does to the main image's content, for a reviewer.

    Theta maps output to input coordinates, so the content moves by the inverse map
    x_out = A^-1 (x_in - t). Its rotation (clockwise as displayed, image y pointing down), per-axis scale
    and shift are reported; shifts are in pixels of an ``image_size`` square image.

    Args:
        theta: (2, 3) affine parameters.
        image_size: side of the model input in pixels.

    Returns:
        e.g. "rotation +1.2 deg, scale 1.01 x 0.99, shift 3.1 px right, 2.0 px down".
    """
    theta = np.asarray(theta.detach().cpu() if hasattr(theta, "detach") else theta, dtype=np.float64)
    if theta.shape != (2, 3):
        raise ValueError(f"theta must be 2x3, got {theta.shape}")
    inverse = np.linalg.inv(theta[:, :2])
    shift = -inverse @ theta[:, 2] * (image_size / 2.0)  # normalised [-1, 1] spans image_size pixels
    angle = math.degrees(math.atan2(inverse[1, 0], inverse[0, 0]))
    scale_x = math.hypot(inverse[0, 0], inverse[1, 0])
    scale_y = float(np.linalg.det(inverse)) / scale_x
    horizontal = f"{abs(shift[0]):.1f} px {'right' if shift[0] >= 0 else 'left'}"
    vertical = f"{abs(shift[1]):.1f} px {'down' if shift[1] >= 0 else 'up'}"
    return f"rotation {angle:+.1f} deg, scale {scale_x:.2f} x {scale_y:.2f}, shift {horizontal}, {vertical}"
