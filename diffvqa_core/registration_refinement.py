"""Refining the predicted warp by intensity alignment (not in the paper): OpenCV's ECC from the network's Theta.

The registration CNN (``registration.AffineRegistration``) predicts Theta in one pass. On films it never saw it can
leave a pixel or two of misalignment, which the change encoder then reads as change. ``refine_theta`` starts
OpenCV's enhanced-correlation-coefficient alignment (``cv2.findTransformECC``, affine motion) from that Theta and
keeps what it finds unless it moved the image corners by more than ``max_shift_px`` from the network's warp (a
diverged search is dropped, the network's Theta kept). Inference only: no gradient flows through it.

Theta's convention is ECC's: both map coordinates of the registered (reference-frame) image to coordinates of the
main image, so the template is the reference and the input is the main image. Theta is in normalised coordinates
(``align_corners=False``); ECC's warp is in pixels, converted both ways here.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

ECC_ITERATIONS = 50
ECC_EPSILON = 1e-5
ECC_GAUSSIAN = 1
"""No extra smoothing inside ECC: on the development sets a 5 or 9 px Gaussian left more misalignment."""


def _pixels_from_normalised(side: int) -> np.ndarray:
    """(3, 3) map from pixel to normalised coordinates of a ``side``-pixel square (``align_corners=False``)."""
    return np.array([[2.0 / side, 0.0, 1.0 / side - 1.0], [0.0, 2.0 / side, 1.0 / side - 1.0], [0.0, 0.0, 1.0]])


def theta_to_pixels(theta: np.ndarray, side: int) -> np.ndarray:
    """(2, 3) normalised Theta -> (2, 3) pixel warp of the same map (output pixel -> input pixel)."""
    to_normalised = _pixels_from_normalised(side)
    return (np.linalg.inv(to_normalised) @ np.vstack([theta, [0.0, 0.0, 1.0]]) @ to_normalised)[:2]


def pixels_to_theta(warp: np.ndarray, side: int) -> np.ndarray:
    """Inverse of ``theta_to_pixels``."""
    to_normalised = _pixels_from_normalised(side)
    return (to_normalised @ np.vstack([warp, [0.0, 0.0, 1.0]]) @ np.linalg.inv(to_normalised))[:2]


def corner_move_px(first: np.ndarray, second: np.ndarray, side: int) -> float:
    """Mean distance in pixels between where two normalised Thetas send the four image corners."""
    corners = np.array([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
    moved = [corners @ theta[:, :2].T + theta[:, 2] for theta in (first, second)]
    return float(np.linalg.norm((moved[0] - moved[1]) * side / 2.0, axis=1).mean())


def refine_pair(main: np.ndarray, ref: np.ndarray, theta: np.ndarray, max_shift_px: float) -> np.ndarray:
    """ECC from ``theta`` on one pair of (S, S) float32 gray images; ``theta`` itself when ECC fails or runs off.

    Returns:
        (2, 3) float64 normalised Theta.
    """
    side = main.shape[-1]
    start = theta_to_pixels(np.asarray(theta, dtype=np.float64), side).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ECC_ITERATIONS, ECC_EPSILON)
    try:
        _, found = cv2.findTransformECC(np.ascontiguousarray(ref, dtype=np.float32),
                                        np.ascontiguousarray(main, dtype=np.float32), start, cv2.MOTION_AFFINE,
                                        criteria, None, ECC_GAUSSIAN)
    except cv2.error:  # no convergence, or a flat image: keep the network's warp
        return np.asarray(theta, dtype=np.float64)
    refined = pixels_to_theta(found.astype(np.float64), side)
    if not np.isfinite(refined).all() or corner_move_px(refined, theta, side) > max_shift_px:
        return np.asarray(theta, dtype=np.float64)
    return refined


def refine_theta(main: torch.Tensor, ref: torch.Tensor, theta: torch.Tensor, max_shift_px: float) -> torch.Tensor:
    """``refine_pair`` for each pair of a batch.

    Args:
        main: (B, C, H, W) main images in [0, 1] (their channel mean is aligned).
        ref: (B, C, H, W) reference images.
        theta: (B, 2, 3) the network's warps.
        max_shift_px: largest corner move (pixels of the input) accepted from ECC.

    Returns:
        (B, 2, 3) refined warps, on ``theta``'s device and dtype, without gradient.
    """
    mains = main.detach().float().mean(1).cpu().numpy()
    refs = ref.detach().float().mean(1).cpu().numpy()
    starts = theta.detach().double().cpu().numpy()
    refined = np.stack([refine_pair(m, r, t, max_shift_px) for m, r, t in zip(mains, refs, starts)])
    return torch.as_tensor(refined, dtype=theta.dtype, device=theta.device)
