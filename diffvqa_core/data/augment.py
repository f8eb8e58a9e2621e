"""Training augmentation of the paper (sec. 4): random brightness, contrast and sharpness.

Factors follow PIL's ``ImageEnhance`` definitions (blend with black, with the mean grey level, with a
smoothed copy). The two visits of a pair get independent factors: real visits differ in exposure and
processing, and registration must not learn to rely on identical intensities.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# PIL's ImageFilter.SMOOTH kernel, the blur that ImageEnhance.Sharpness blends with.
_SMOOTH = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0


def photometric_jitter(image: torch.Tensor, rng: np.random.Generator, strength: float = 0.2) -> torch.Tensor:
    """Randomly change brightness, contrast and sharpness of a grey image replicated to 3 channels.

    Args:
        image: (3, S, S) float tensor in [0, 1] (the three channels are equal).
        rng: random generator for the factors.
        strength: each factor is drawn from [1 - strength, 1 + strength].

    Returns:
        (3, S, S) float tensor in [0, 1].
    """
    brightness, contrast, sharpness = rng.uniform(1.0 - strength, 1.0 + strength, size=3)
    gray = image[0] * float(brightness)  # (S, S)
    mean = gray.mean()
    gray = mean + float(contrast) * (gray - mean)
    padded = F.pad(gray[None, None], (1, 1, 1, 1), mode="replicate")
    smooth = F.conv2d(padded, _SMOOTH.to(gray)[None, None])[0, 0]
    gray = smooth + float(sharpness) * (gray - smooth)
    return gray.clamp(0.0, 1.0).unsqueeze(0).expand(3, -1, -1).contiguous()
