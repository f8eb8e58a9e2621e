"""Multi-crop augmentation for grayscale chest radiographs (2 global crops + several local ones).

DINO's recipe with the colour parts dropped (a radiograph has one channel): random resized crops,
brightness/contrast jitter (exposure differs between visits), Gaussian blur (always on global crop 1,
rarely on global crop 2, half the time on local crops) and solarisation on global crop 2.

Horizontal flips are off by default. A frontal chest film is not mirror symmetric (heart, aortic knob
and gastric bubble on the patient's left, displayed on the image's right by convention), and the prior
should keep that laterality: a flip-invariant embedding would treat a right-sided finding and its mirror
as the same thing. ``hflip_prob`` turns them on for data where laterality does not matter.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2


def _photometric(hflip_prob: float) -> list:
    return [
        v2.RandomHorizontalFlip(p=hflip_prob),
        v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4)], p=0.8),
    ]


def _blur(size: int, p: float) -> v2.Transform:
    kernel = max(3, (size // 10) | 1)  # odd, about a tenth of the crop
    return v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=p)


class MultiCrop:
    """Turn one (1, H, W) film in [0, 1] into normalised 3-channel crops: 2 global, then ``local_crops`` local.

    Args:
        image_size: side of the global crops (the model's input size).
        local_size: side of the local crops (a multiple of the patch size).
        local_crops: number of local crops.
        mean: pixel mean used for normalisation.
        std: pixel standard deviation used for normalisation.
        global_scale: area range of global crops, as a fraction of the film.
        local_scale: area range of local crops.
        hflip_prob: probability of a horizontal flip (0: keep laterality, see the module docstring).
    """

    def __init__(
        self,
        image_size: int,
        local_size: int,
        local_crops: int,
        mean: float,
        std: float,
        global_scale: tuple[float, float],
        local_scale: tuple[float, float],
        hflip_prob: float = 0.0,
    ) -> None:
        def crop(size: int, scale: tuple[float, float]) -> v2.Transform:
            return v2.RandomResizedCrop(size, scale=scale, antialias=True)

        self.global_1 = v2.Compose([crop(image_size, global_scale), *_photometric(hflip_prob), _blur(image_size, 1.0)])
        self.global_2 = v2.Compose(
            [
                crop(image_size, global_scale),
                *_photometric(hflip_prob),
                _blur(image_size, 0.1),
                v2.RandomSolarize(threshold=0.5, p=0.2),
            ]
        )
        self.local = v2.Compose([crop(local_size, local_scale), *_photometric(hflip_prob), _blur(local_size, 0.5)])
        self.local_crops = local_crops
        self.mean, self.std = mean, std

    def __call__(self, film: torch.Tensor) -> list[torch.Tensor]:
        """Return [global_1, global_2, local_1, ...], each (3, s, s) float32, normalised."""
        views = [self.global_1(film), self.global_2(film)] + [self.local(film) for _ in range(self.local_crops)]
        return [((v.clamp(0.0, 1.0) - self.mean) / self.std).expand(3, -1, -1).contiguous() for v in views]
