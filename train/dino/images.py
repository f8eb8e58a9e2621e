"""Finding and loading the radiographs a prior is pretrained on (a plain folder or a benchmark root)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from diffvqa_core.imaging import read_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def find_images(root: str | Path) -> list[Path]:
    """List the training images under ``root``.

    A benchmark root (real Medical-Diff-VQA or ``train synth`` output) keeps its radiographs in
    ``files/p../p../s../*.jpg``; only those are taken, so sidecar masks or overlays elsewhere under the
    root are never mistaken for radiographs. Any other folder is searched recursively for PNG/JPEG files.

    Args:
        root: a folder of images or a benchmark root.

    Returns:
        Sorted image paths.

    Raises:
        FileNotFoundError: ``root`` is not a folder, or holds no image.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    files_dir = root / "files"
    search_root = files_dir if files_dir.is_dir() else root
    paths = sorted(p for p in search_root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise FileNotFoundError(f"no PNG/JPEG images under {search_root}")
    return paths


class RadiographBank(Dataset):
    """Radiographs held in memory as square uint8 films, each item passed through a transform.

    Films are squashed to a square (as ``diffvqa_core.imaging.to_model_input`` does at inference), at
    ``side`` pixels so that small local crops keep their detail.

    Args:
        paths: image files.
        side: stored side in pixels.
        transform: maps a (1, side, side) float tensor in [0, 1] to the item (e.g. a list of crops).
    """

    def __init__(self, paths: list[Path], side: int, transform) -> None:
        films = [cv2.resize(read_image(p), (side, side), interpolation=cv2.INTER_AREA) for p in paths]
        self.films = torch.from_numpy(np.stack([np.round(f * 255.0) for f in films]).astype(np.uint8))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.films)

    def __getitem__(self, index: int):
        return self.transform(self.films[index].unsqueeze(0).float() / 255.0)

    def pixel_statistics(self) -> tuple[float, float]:
        """Mean and standard deviation of all stored pixels, in [0, 1] units (the normalisation constants)."""
        pixels = self.films.float() / 255.0
        return float(pixels.mean()), float(pixels.std())
