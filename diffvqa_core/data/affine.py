"""Affine poses in torch's ``affine_grid`` convention (normalised coordinates, ``align_corners=False``).

A pose ``theta`` (2x3) maps an output location ``x`` (normalised to [-1, 1]) to the input location it samples:
``warped(x) = image(theta . x)``. The synthetic benchmark stores the pose of the main visit relative to the
reference visit in this convention, so a perfect registration predicts ``inverse(theta_gt)``.
"""

from __future__ import annotations

import cv2
import numpy as np


def to_homogeneous(theta: np.ndarray) -> np.ndarray:
    """(2, 3) affine -> (3, 3) homogeneous matrix."""
    return np.vstack([np.asarray(theta, dtype=np.float64), [0.0, 0.0, 1.0]])


def invert(theta: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine, as a (2, 3) affine."""
    return np.linalg.inv(to_homogeneous(theta))[:2]


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer . inner`` for (2, 3) affines (``inner`` is applied first)."""
    return (to_homogeneous(outer) @ to_homogeneous(inner))[:2]


def random_pose(rng: np.random.Generator, max_rotation_deg: float, max_log_scale: float,
                max_shift: float) -> np.ndarray:
    """A near-identity (2, 3) pose: rotation, isotropic scale and translation drawn uniformly.

    Args:
        rng: random generator.
        max_rotation_deg: largest rotation in degrees.
        max_log_scale: largest |log(scale)|.
        max_shift: largest translation per axis, as a fraction of the image side (normalised units / 2).
    """
    angle = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg))
    scale = np.exp(rng.uniform(-max_log_scale, max_log_scale))
    shift = rng.uniform(-max_shift, max_shift, size=2) * 2.0
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[cos, -sin, shift[0]], [sin, cos, shift[1]]], dtype=np.float64)


def _pixel_to_normalised(height: int, width: int) -> np.ndarray:
    return np.array([[2.0 / width, 0.0, 1.0 / width - 1.0],
                     [0.0, 2.0 / height, 1.0 / height - 1.0],
                     [0.0, 0.0, 1.0]])


def warp(image: np.ndarray, theta: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Sample ``image`` at ``theta . x`` for every output pixel ``x`` (what ``grid_sample`` would do).

    Args:
        image: (H, W) array.
        theta: (2, 3) pose in normalised coordinates, ``align_corners=False``.
        interpolation: OpenCV interpolation flag.

    Returns:
        (H, W) warped array; samples outside the image repeat its border.
    """
    height, width = image.shape[:2]
    to_norm = _pixel_to_normalised(height, width)
    pixel_map = (np.linalg.inv(to_norm) @ to_homogeneous(theta) @ to_norm)[:2]
    return cv2.warpAffine(image, pixel_map, (width, height), flags=interpolation | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)
