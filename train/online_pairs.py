"""Fresh synthetic pairs on the fly: a stream that never shows the same pair twice.

The synthetic generator (``diffvqa_core.data.synthetic.simulate_visits``) draws a patient in ~20 ms at 256 px,
faster than a CPU trains on it, so a pretraining run can read fresh pairs instead of re-reading a few thousand
files. Patient ``i`` of worker ``w`` is patient index ``offset + i * workers + w`` of the seed: streams of
different seeds, or of one seed with different offsets, never share a patient.

Each item is one (main, reference) pair with the main film already on the reference frame (the generator's
true pose, perturbed by a small random residual such as a learned registration leaves), as the change encoder
sees it inside the model, plus its ground truth: the change mask and the per-finding labels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from diffvqa_core.data import affine
from diffvqa_core.data.augment import photometric_jitter
from diffvqa_core.data.finding_labels import encode_pair
from diffvqa_core.data.synthetic import JPEG_QUALITY, PatientPlan, change_mask, pair_pose, simulate_visits
from diffvqa_core.imaging import to_model_input
from diffvqa_core.registration import warp

# Residual misregistration after the learned registration: ~1 px at the corners of a 192 px input.
RESIDUAL_POSE = dict(max_rotation_deg=0.3, max_log_scale=0.004, max_shift=0.004)


def _film(film: np.ndarray, size: int) -> torch.Tensor:
    """uint8 film -> JPEG round trip (as the benchmark's files) -> (3, size, size) model input."""
    decoded = cv2.imdecode(cv2.imencode(".jpg", film, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1],
                           cv2.IMREAD_GRAYSCALE)
    return to_model_input(decoded.astype(np.float32) / 255.0, size)


class OnlinePairs(IterableDataset):
    """An endless stream (or the first ``limit`` pairs) of freshly simulated, registered pairs.

    Args:
        seed: generator seed.
        image_size: side of the model input.
        generation_size: side at which films are drawn (then resized, as the benchmark's files are); a sequence
            draws one of its sides per patient (``train synth`` writes 512 px by default, 256 px is 4x faster).
        backgrounds: real radiographs usable as anatomy.
        background_fraction: probability that a patient's anatomy is one of ``backgrounds`` (else a phantom).
        augment: independent brightness / contrast / sharpness jitter per visit (as in training).
        residual: apply a small random residual pose to the registered main.
        residual_scale: size of that residual in multiples of ``RESIDUAL_POSE`` (~1 px at the corners).
        offset: first patient index (keeps validation streams apart from training ones).
        limit: stop after this many pairs (per worker share); None = endless.
    """

    def __init__(self, seed: int, image_size: int, *, generation_size: int | Sequence[int] = 256,
                 backgrounds: Sequence[str] = (), background_fraction: float = 0.0, augment: bool = True,
                 residual: bool = True, residual_scale: float = 1.0, offset: int = 0,
                 limit: int | None = None) -> None:
        if background_fraction > 0 and not backgrounds:
            raise ValueError("background_fraction > 0 needs background images")
        self.seed, self.image_size = seed, image_size
        self.generation_sizes = [generation_size] if isinstance(generation_size, int) else list(generation_size)
        self.backgrounds, self.background_fraction = list(backgrounds), background_fraction
        self.augment, self.residual, self.offset, self.limit = augment, residual, offset, limit
        self.residual_pose = {name: largest * residual_scale for name, largest in RESIDUAL_POSE.items()}

    def patient(self, index: int):
        """Patient ``index`` of this stream (2-4 studies), on a phantom or on a real background."""
        rng = np.random.default_rng([self.seed, index, 7])
        studies = int(rng.choice([2, 3, 4], p=[0.5, 0.3, 0.2]))
        real = rng.random() < self.background_fraction
        size = self.generation_sizes[int(rng.integers(len(self.generation_sizes)))]
        return simulate_visits(PatientPlan(index, studies, 0), self.seed, size,
                               self.backgrounds if real else []), real

    def pairs_of(self, index: int) -> Iterator[dict]:
        """Every consecutive pair of patient ``index``."""
        patient, real = self.patient(index)
        rng = np.random.default_rng([self.seed, index, 8])
        for ref, main in zip(patient.visits, patient.visits[1:]):
            to_reference = affine.invert(pair_pose(main, ref))
            if self.residual:
                to_reference = affine.compose(to_reference, affine.random_pose(rng, **self.residual_pose))
            main_image = _film(main.film, self.image_size)
            registered = warp(main_image[None], torch.tensor(to_reference, dtype=torch.float32)[None])[0]
            ref_image = _film(ref.film, self.image_size)
            if self.augment:
                registered, ref_image = photometric_jitter(registered, rng), photometric_jitter(ref_image, rng)
            mask = cv2.resize(change_mask(main, ref), (self.image_size, self.image_size),
                              interpolation=cv2.INTER_NEAREST)
            findings, pair = encode_pair(main.findings, ref.findings, patient.view)
            yield {"ref": ref_image, "registered_main": registered, "main": main_image,
                   "gt_theta": torch.tensor(pair_pose(main, ref), dtype=torch.float32),
                   "change_mask": torch.from_numpy((mask > 127).astype(np.float32)),
                   "finding_labels": torch.from_numpy(findings), "pair_labels": torch.from_numpy(pair),
                   "real_background": real}

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        made = 0
        limit = math.inf if self.limit is None else math.ceil(self.limit / workers)
        for i in range(10**12):
            for item in self.pairs_of(self.offset + i * workers + worker):
                if made >= limit:
                    return
                yield item
                made += 1
