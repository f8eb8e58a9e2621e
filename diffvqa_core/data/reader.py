"""Reader of the Medical-Diff-VQA benchmark files (real, or the synthetic benchmark in the same layout).

One item per row of ``mimic_pair_questions.csv``: the main (current) and reference (earlier) films, the
question and its answer, and a stable row id (the row's 0-based position in the CSV) for scoring.

- Image per study: as the benchmark chose it, the study's first PA/AP dicom listed in ``mimic_all.csv``,
  else its first dicom (``mimic_all.csv`` usually has one row per study already).
- Order: the reference must be the earlier study. Medical-Diff-VQA v1.0.1 has ``difference`` rows whose
  main and reference ids are swapped relative to their sibling rows; where ``study_date`` (then
  ``study_order``) says the reference is the later study, the two ids are swapped back. The answer is kept.
- Missing files: rows whose films (or, for the synthetic benchmark, ground truth) are missing are dropped,
  counted in ``missing`` and reported once with a warning; each study is checked once.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from diffvqa_core.data import layout
from diffvqa_core.data.augment import photometric_jitter
from diffvqa_core.data.finding_labels import encode_pair
from diffvqa_core.imaging import to_model_input

log = logging.getLogger(__name__)
FRONTAL_VIEWS = frozenset({"PA", "AP", "postero-anterior", "antero-posterior"})


def study_images(studies: pd.DataFrame) -> pd.DataFrame:
    """One row per study: its first frontal (PA/AP) dicom, else its first dicom.

    Args:
        studies: ``mimic_all.csv`` as strings.

    Returns:
        Frame indexed by ``study_id`` with ``subject_id``, ``dicom_id`` and a numeric ``chronology``
        (``study_date``, ties broken by ``study_order``; NaN when the date is unknown).
    """
    frontal = studies["view"].isin(FRONTAL_VIEWS)
    chosen = studies.assign(_other=~frontal).sort_values("_other", kind="stable")
    chosen = chosen.drop_duplicates("study_id", keep="first").set_index("study_id")
    date = pd.to_numeric(chosen["study_date"], errors="coerce")
    order = pd.to_numeric(chosen["study_order"], errors="coerce").fillna(0.0)
    return chosen.assign(chronology=date * 1000.0 + order)[["subject_id", "dicom_id", "chronology"]]


def reference_first(questions: pd.DataFrame, images: pd.DataFrame) -> pd.DataFrame:
    """Swap ``study_id``/``ref_id`` where the reference is later than the main study."""
    when = images["chronology"]
    swapped = questions["ref_id"].map(when) > questions["study_id"].map(when)
    fixed = questions.copy()
    fixed.loc[swapped, ["study_id", "ref_id"]] = questions.loc[swapped, ["ref_id", "study_id"]].to_numpy()
    return fixed


class DiffVQADataset(Dataset):
    """Medical-Diff-VQA rows as tensors.

    Items are dicts that ``default_collate`` batches: ``row_id``, ``main`` and ``ref`` ((3, S, S) float in
    [0, 1]), ``question``, ``answer``, ``question_type``, ``subject_id``, ``study_id``, ``ref_id``; plus, when
    the root holds synthetic ground truth (``has_ground_truth``), ``gt_theta`` ((2, 3) float32, the main
    visit's pose relative to the reference frame), ``change_mask`` ((S, S) float32 in {0, 1}, reference
    frame), and ``finding_labels`` ((K, 7) int64) and ``pair_labels`` ((2,) int64), the per-finding targets of
    ``diffvqa_core.data.finding_labels``.

    Args:
        root: data root holding the CSVs and ``files/``.
        split: "train", "val" or "test" (the ``split`` column); None for all rows.
        question_types: keep only these families (e.g. ``["difference"]``); None for all.
        image_size: side of the square model input.
        augment: random brightness/contrast/sharpness, independently per visit (training only).
        seed: mixed with torch's global generator (reseeded per DataLoader worker and epoch) to draw the
            augmentation factors.
    """

    def __init__(self, root: str | Path, split: str | None = "train", question_types: list[str] | None = None,
                 image_size: int = 384, augment: bool = False, seed: int = 0) -> None:
        self.root = Path(root)
        self.image_size = image_size
        self.augment = augment
        self.seed = seed
        self.has_ground_truth = (self.root / layout.GROUND_TRUTH_DIR).is_dir()
        questions = pd.read_csv(self.root / layout.QUESTIONS_CSV, dtype=str, keep_default_na=False)
        questions.insert(0, "row_id", questions.index.astype(str))
        if split is not None:
            questions = questions[questions["split"] == split]
        if question_types is not None:
            questions = questions[questions["question_type"].isin(list(question_types))]
        self.images = study_images(pd.read_csv(self.root / layout.STUDIES_CSV, dtype=str, keep_default_na=False))
        questions = reference_first(questions, self.images)
        available = self._available(questions)
        self.missing = int((~available).sum())
        if self.missing:
            message = (f"{self.missing} of {len(questions)} rows dropped: image or ground-truth file missing "
                       f"under {self.root}")
            log.warning(message)
            warnings.warn(message, stacklevel=2)
        columns = ["row_id", "question", "answer", "question_type", "subject_id", "study_id", "ref_id"]
        self.rows = questions.loc[available, columns].to_dict("records")

    def _available(self, questions: pd.DataFrame) -> np.ndarray:
        """Rows whose two films (and ground truth, if any) exist: one stat per study, one per pair."""
        studies = pd.unique(pd.concat([questions["study_id"], questions["ref_id"]]))
        exists = {study: study in self.images.index and os.path.exists(self.image_path(study)) for study in studies}
        ok = questions["study_id"].map(exists) & questions["ref_id"].map(exists)
        if self.has_ground_truth:
            pairs = questions[["study_id", "ref_id"]].drop_duplicates().itertuples(index=False)
            truth = {pair: layout.sidecar_path(self.root, *pair).exists() for pair in pairs}
            ok &= pd.Series(list(zip(questions["study_id"], questions["ref_id"])), index=questions.index).map(truth)
        return ok.to_numpy(dtype=bool)

    def image_path(self, study_id: str) -> Path:
        """Film chosen for a study."""
        image = self.images.loc[study_id]
        return layout.image_path(self.root, image["subject_id"], study_id, image["dicom_id"])

    def __len__(self) -> int:
        return len(self.rows)

    def film(self, study_id: str) -> torch.Tensor:
        """A study's film as model input: (3, S, S) float in [0, 1], no augmentation."""
        path = self.image_path(study_id)
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise OSError(f"cannot read image {path}")
        return to_model_input(gray.astype(np.float32) / 255.0, self.image_size)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        item = {**row, "main": self.film(row["study_id"]), "ref": self.film(row["ref_id"])}
        if self.augment:
            rng = np.random.default_rng([self.seed, index, int(torch.randint(2**62, ()).item())])
            item["main"] = photometric_jitter(item["main"], rng)
            item["ref"] = photometric_jitter(item["ref"], rng)
        if self.has_ground_truth:
            item.update(self._ground_truth(row["study_id"], row["ref_id"]))
        return item

    def _ground_truth(self, study_id: str, ref_id: str) -> dict[str, torch.Tensor]:
        record = json.loads(layout.sidecar_path(self.root, study_id, ref_id).read_text())
        mask = cv2.imread(str(layout.change_mask_path(self.root, study_id, ref_id)), cv2.IMREAD_GRAYSCALE)
        mask = cv2.resize(mask, (self.image_size, self.image_size), interpolation=cv2.INTER_NEAREST)
        findings, pair = encode_pair(record["findings_main"], record["findings_ref"], record["view"])
        return {"gt_theta": torch.tensor(record["theta_gt"], dtype=torch.float32),
                "change_mask": torch.from_numpy((mask > 127).astype(np.float32)),
                "finding_labels": torch.from_numpy(findings), "pair_labels": torch.from_numpy(pair)}
