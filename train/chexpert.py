"""MIMIC-CXR-JPG films with their CheXpert labels: the data of phi's second pretraining (paper sec. 3.3).

The paper's Swin-B is "first pretrained on ImageNet-21k and further trained on classification tasks on the
MIMIC-CXR dataset with CheXpert labels". MIMIC-CXR-JPG 2.0.0 ships, beside ``files/``:

- ``mimic-cxr-2.0.0-chexpert.csv(.gz)``: one row per study (subject_id, study_id) and the 14 CheXpert labels,
  each 1 (positive), 0 (negative), -1 (uncertain) or blank (not mentioned in the report);
- ``mimic-cxr-2.0.0-metadata.csv(.gz)``: one row per image (dicom_id, subject_id, study_id, ViewPosition, ...);
- ``mimic-cxr-2.0.0-split.csv(.gz)``: the official train / validate / test split per image.

A study's labels go to each of its images of the chosen views (frontal PA and AP by default, as in the
Medical-Diff-VQA pairs), read from ``files/p{subject_id[:2]}/p{subject_id}/s{study_id}/{dicom_id}.jpg``.
Blank is negative (the report does not mention the finding), the usual reading of these files. Uncertain (-1)
follows ``uncertain`` (the policies of the CheXpert paper, Irvin et al. 2019): "ignore" (default; U-Ignore: the
label is left out of the loss and of the AUROC for that image), "ones" (U-Ones) or "zeros" (U-Zeros). The paper
does not say which it used.

Training reads the official "train" split, validation its "validate" split; "test" is never read. With
``hold_out`` (a Medical-Diff-VQA root), patients whose pairs are in that benchmark's validation or test split
are dropped from training as well, so the encoder never saw a film of a patient the VQA model is scored on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from diffvqa_core.data.layout import CHEXPERT_LABELS, QUESTIONS_CSV, image_path

CHEXPERT_CSV = "mimic-cxr-2.0.0-chexpert.csv"
METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv"
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv"
UNCERTAINTY_POLICIES = ("ignore", "ones", "zeros")
SPLIT_NAMES = {"train": "train", "val": "validate"}  # our names -> the split file's


def find_csv(root: Path, name: str, *, required: bool = True) -> Path | None:
    """``root/name`` or ``root/name.gz`` (as PhysioNet ships it).

    Raises:
        FileNotFoundError: when ``required`` and neither exists.
    """
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    if required:
        raise FileNotFoundError(f"{name} (or {name}.gz) not found in {root}: give the MIMIC-CXR-JPG folder that "
                                "holds it (see docs/reproducing.md)")
    return None


def label_targets(values: pd.DataFrame, policy: str) -> tuple[np.ndarray, np.ndarray]:
    """Targets and loss mask of the 14 labels under an uncertainty policy.

    Args:
        values: (n, 14) CheXpert values 1 / 0 / -1 / NaN (blank).
        policy: "ignore", "ones" or "zeros" (what -1 becomes).

    Returns:
        (n, 14) float32 targets in {0, 1} and (n, 14) float32 mask (0 where a label does not count).
    """
    if policy not in UNCERTAINTY_POLICIES:
        raise ValueError(f"uncertainty policy must be one of {UNCERTAINTY_POLICIES}, got {policy!r}")
    raw = values.to_numpy(dtype=np.float32, na_value=np.nan)
    unknown = ~np.isin(raw, (1.0, 0.0, -1.0)) & ~np.isnan(raw)
    if unknown.any():
        row, column = map(int, np.argwhere(unknown)[0])
        raise ValueError(f"CheXpert label {values.columns[column]!r} has the value {float(raw[row, column]):g}; "
                         "expected 1, 0, -1 or blank")
    uncertain = raw == -1.0
    targets = (raw == 1.0).astype(np.float32)
    if policy == "ones":
        targets[uncertain] = 1.0
    mask = np.ones_like(targets)
    if policy == "ignore":
        mask[uncertain] = 0.0
    return targets, mask


def _ids(frame: pd.DataFrame) -> pd.DataFrame:
    for column in ("subject_id", "study_id"):
        frame[column] = frame[column].astype(str).str.replace(r"\.0$", "", regex=True)
    return frame


@dataclass
class ChexpertIndex:
    """The images of one split with their targets: paths (n,), targets and mask (n, 14); what was dropped."""

    paths: list[Path]
    targets: np.ndarray
    mask: np.ndarray
    missing_images: int
    held_out_subjects: int


def chexpert_index(root: Path, split: str, *, images_root: Path | None = None, views: tuple[str, ...] = ("PA", "AP"),
                   policy: str = "ignore", hold_out: Path | None = None) -> ChexpertIndex:
    """Joins labels, metadata and split into the images of ``split`` ("train" or "val") that exist on disk.

    Args:
        root: folder with the three MIMIC-CXR-JPG CSV files (``.csv`` or ``.csv.gz``).
        split: "train" or "val" (the split file's "validate").
        images_root: folder holding ``files/`` (default: ``root``).
        views: ViewPosition values to keep.
        policy: what uncertain labels become (see the module docstring).
        hold_out: a Medical-Diff-VQA root; its validation and test patients are left out of "train".

    Raises:
        FileNotFoundError: a CSV file is missing.
        ValueError: an unknown split or policy, a label value outside 1 / 0 / -1 / blank, or no image left.
    """
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {tuple(SPLIT_NAMES)}, got {split!r}")
    images_root = images_root or root
    labels = _ids(pd.read_csv(find_csv(root, CHEXPERT_CSV), dtype={"subject_id": str, "study_id": str}))
    missing = [c for c in ("subject_id", "study_id", *CHEXPERT_LABELS) if c not in labels.columns]
    if missing:
        raise ValueError(f"{CHEXPERT_CSV} lacks the column(s) {', '.join(missing)}")
    metadata = _ids(pd.read_csv(find_csv(root, METADATA_CSV), dtype=str,
                                usecols=["dicom_id", "subject_id", "study_id", "ViewPosition"]))
    metadata = metadata[metadata["ViewPosition"].isin(views)]
    splits = pd.read_csv(find_csv(root, SPLIT_CSV), dtype=str, usecols=["dicom_id", "split"])
    metadata = metadata.merge(splits, on="dicom_id", how="inner")
    metadata = metadata[metadata["split"] == SPLIT_NAMES[split]]
    held_out = 0
    if hold_out is not None and split == "train":
        questions = pd.read_csv(Path(hold_out) / QUESTIONS_CSV, dtype=str, usecols=["subject_id", "split"])
        patients = set(questions.loc[questions["split"].isin(["val", "test"]), "subject_id"])
        held_out = int(metadata["subject_id"].isin(patients).sum())
        metadata = metadata[~metadata["subject_id"].isin(patients)]
    rows = metadata.merge(labels, on=["subject_id", "study_id"], how="inner").sort_values("dicom_id")
    targets, mask = label_targets(rows[list(CHEXPERT_LABELS)], policy)
    paths = [image_path(images_root, s, t, d) for s, t, d in zip(rows["subject_id"], rows["study_id"],
                                                                   rows["dicom_id"], strict=True)]
    present = np.array([p.is_file() for p in paths], dtype=bool)
    if not present.any():
        raise ValueError(f"no {split} image of views {', '.join(views)} found under {images_root / 'files'} "
                         f"({len(paths)} listed)")
    return ChexpertIndex([p for p, ok in zip(paths, present, strict=True) if ok], targets[present], mask[present],
                         int((~present).sum()), held_out)


def read_film(path: Path, size: int) -> torch.Tensor:
    """A JPEG film as model input (3, size, size) in [0, 1]; decoded at a reduced scale when it is large.

    ``Image.draft`` lets libjpeg decode at 1/2, 1/4 or 1/8 scale (never below ``size``): a 2,500 x 3,000
    MIMIC-CXR film is read about 4 to 8 times faster, for the same square input after the area resize.
    """
    from diffvqa_core.imaging import to_model_input

    with Image.open(path) as image:
        image.draft("L", (size, size))
        gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    return to_model_input(gray, size)


class ChexpertFilms(Dataset):
    """One item per image: the film (3, S, S), its 14 targets and their loss mask (14,) each."""

    def __init__(self, index: ChexpertIndex, image_size: int, augment: bool, seed: int) -> None:
        self.index, self.image_size, self.augment, self.seed = index, image_size, augment, seed

    def __len__(self) -> int:
        return len(self.index.paths)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from diffvqa_core.data.augment import photometric_jitter

        film = read_film(self.index.paths[item], self.image_size)
        if self.augment:
            film = photometric_jitter(film, np.random.default_rng([self.seed, item, int(torch.randint(2**62, ()))]))
        return film, torch.from_numpy(self.index.targets[item]), torch.from_numpy(self.index.mask[item])
