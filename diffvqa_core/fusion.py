"""Eq. 7, M = lambda U + (1 - lambda) F, on tensors or numpy arrays; no torch import (the review app's UI
process re-fuses masks for its overlays without loading PyTorch)."""

from __future__ import annotations

from typing import Any

import numpy as np


def fuse_masks(union: Any, adaptive: Any, lam: float) -> Any:
    """M = lambda U + (1 - lambda) F (eq. 7); works on tensors and on numpy arrays alike."""
    return lam * union + (1.0 - lam) * adaptive


def check_lambda(lam: float) -> float:
    """``lam`` as a float.

    Raises:
        ValueError: outside [0, 1].
    """
    lam = float(lam)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must lie in [0, 1], got {lam}")
    return lam


def fuse_for_display(prior: np.ndarray, adaptive: np.ndarray, lam: float, *, use_saliency_mask: bool = True
                     ) -> np.ndarray:
    """M at ``lam`` for an overlay: (S, S) float32 in [0, 1]; all ones for a model without the saliency mask."""
    lam = check_lambda(lam)
    if not use_saliency_mask:
        return np.ones_like(prior, dtype=np.float32)
    return np.clip(fuse_masks(prior, adaptive, lam), 0.0, 1.0).astype(np.float32)
