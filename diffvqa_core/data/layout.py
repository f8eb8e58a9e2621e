"""Where the benchmark's files live under a data root (real Medical-Diff-VQA and the synthetic one alike).

Real layout (PhysioNet + MIMIC-CXR-JPG): ``mimic_pair_questions.csv``, ``mimic_all.csv`` and
``files/p{subject_id[:2]}/p{subject_id}/s{study_id}/{dicom_id}.jpg``. The synthetic benchmark adds one
ground-truth sidecar per (main, reference) pair under ``ground_truth/``.
"""

from __future__ import annotations

from pathlib import Path

QUESTIONS_CSV = "mimic_pair_questions.csv"
STUDIES_CSV = "mimic_all.csv"
GROUND_TRUTH_DIR = "ground_truth"

QUESTION_COLUMNS: tuple[str, ...] = (
    "study_id", "subject_id", "ref_id", "question_type", "question", "answer", "split",
)
CHEXPERT_LABELS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
)
STUDY_COLUMNS: tuple[str, ...] = (
    ("subject_id", "study_id") + CHEXPERT_LABELS + ("dicom_id", "view", "split", "study_date", "study_order")
)


def image_path(root: Path, subject_id: str, study_id: str, dicom_id: str) -> Path:
    """``files/p{subject_id[:2]}/p{subject_id}/s{study_id}/{dicom_id}.jpg`` under ``root``."""
    subject_id, study_id = str(subject_id), str(study_id)
    return Path(root) / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}" / f"{dicom_id}.jpg"


def sidecar_path(root: Path, study_id: str, ref_id: str) -> Path:
    """Ground-truth JSON of the pair (main ``study_id``, reference ``ref_id``)."""
    return Path(root) / GROUND_TRUTH_DIR / f"{study_id}_{ref_id}.json"


def change_mask_path(root: Path, study_id: str, ref_id: str) -> Path:
    """Change-mask PNG of the pair, in the reference (canonical) frame at image resolution."""
    return Path(root) / GROUND_TRUTH_DIR / f"{study_id}_{ref_id}_change.png"
