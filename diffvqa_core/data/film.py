"""From density to an 8-bit film: tone curve, per-visit exposure, unsharpness and quantum noise."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Exposure:
    """Per-visit exposure: ``contrast * (film ** gamma - 0.5) + 0.5 + brightness``."""

    gamma: float = 1.0
    contrast: float = 1.0
    brightness: float = 0.0

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Exposure:
        """A plausible visit-to-visit exposure difference (gamma 0.85-1.18, contrast 0.9-1.1, +-0.04)."""
        return cls(float(np.exp(rng.uniform(-0.16, 0.16))), float(rng.uniform(0.9, 1.1)),
                   float(rng.uniform(-0.04, 0.04)))

    def to_dict(self) -> dict[str, float]:
        """Plain dict for JSON sidecars."""
        return {"gamma": self.gamma, "contrast": self.contrast, "brightness": self.brightness}


def tone(density: np.ndarray) -> np.ndarray:
    """Film response: soft shoulder and toe, so dense tissue saturates gently and air stays dark."""
    return (1.0 - np.exp(-1.5 * np.clip(density, 0.0, None))) / (1.0 - np.exp(-1.5))


def expose(density: np.ndarray, exposure: Exposure, rng: np.random.Generator,
           noise: float = 0.012) -> np.ndarray:
    """Render density to an 8-bit film.

    Args:
        density: (H, W) float32 density.
        exposure: the visit's exposure.
        rng: visit-level generator for the noise.
        noise: standard deviation of the additive noise (fraction of full scale).

    Returns:
        (H, W) uint8 image.
    """
    film = np.clip(tone(density), 0.0, 1.0) ** exposure.gamma
    film = exposure.contrast * (film - 0.5) + 0.5 + exposure.brightness
    film = cv2.GaussianBlur(film.astype(np.float32), (0, 0), 0.6)
    grain = rng.standard_normal(film.shape, dtype=np.float32)
    film += noise * (grain + 0.5 * cv2.GaussianBlur(grain, (0, 0), 1.5))
    return np.clip(film * 255.0 + 0.5, 0, 255).astype(np.uint8)
