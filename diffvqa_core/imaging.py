"""Image reading, preprocessing and display for radiographs.

Reading (PNG/JPEG 8/16 bit, DICOM), safe failure on bad input, windowing and overlays live here;
everything downstream works on grayscale float32 arrays in [0, 1] of shape (H, W).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch


def to_model_input(gray: np.ndarray, size: int) -> torch.Tensor:
    """Resize a grayscale radiograph to the model's square input and replicate it to 3 channels.

    Args:
        gray: (H, W) float array in [0, 1].
        size: output side in pixels (384 in the paper).

    Returns:
        (3, size, size) float32 tensor in [0, 1]. The aspect ratio is not kept: the benchmark's baselines
        resize the whole film to a square, and so do we, in training and at inference alike.
    """
    gray = np.asarray(gray, dtype=np.float32)
    interp = cv2.INTER_AREA if min(gray.shape[:2]) > size else cv2.INTER_LINEAR
    resized = cv2.resize(gray, (size, size), interpolation=interp)
    tensor = torch.from_numpy(np.clip(resized, 0.0, 1.0))
    return tensor.unsqueeze(0).expand(3, size, size).contiguous()
