"""The benchmark reader on a small fixture written in the real Medical-Diff-VQA schema."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import default_collate

from diffvqa_core.data import DiffVQADataset, layout

# subject, study, dicom, view, split, date, order (two dicoms for study 50000002: lateral listed first).
STUDIES = [
    ("10000001", "50000001", "d-1", "postero-anterior", "train", "21000101", "1.0"),
    ("10000001", "50000002", "d-2-lat", "lateral", "train", "21000301", "2.0"),
    ("10000001", "50000002", "d-2-pa", "postero-anterior", "train", "21000301", "2.0"),
    ("10000001", "50000003", "d-3", "antero-posterior", "train", "21000601", "3.0"),
    ("10000002", "50000011", "d-11", "postero-anterior", "test", "21100101", "1.0"),
    ("10000002", "50000012", "d-12", "postero-anterior", "test", "21100505", "2.0"),
    ("10000003", "50000021", "d-21", "antero-posterior", "val", "21200101", "1.0"),
    ("10000003", "50000022", "d-22-missing", "antero-posterior", "val", "21200202", "2.0"),
]
# main, subject, ref, type, question, answer, split; row 3 has main/ref swapped as in v1.0.1.
QUESTIONS = [
    ("50000002", "10000001", "50000001", "abnormality", "what abnormalities are seen in this image?", "edema", "train"),
    ("50000002", "10000001", "50000001", "difference", "what has changed compared to the reference image?",
     "the main image has an additional finding of edema than the reference image. ", "train"),
    ("50000003", "10000001", "50000002", "view", "which view is this image taken?", "AP view", "train"),
    ("50000002", "10000001", "50000003", "difference", "what has changed compared to the reference image?",
     "nothing has changed.", "train"),
    ("50000012", "10000002", "50000011", "difference", "what has changed compared to the reference image?",
     "nothing has changed.", "test"),
    ("50000022", "10000003", "50000021", "difference", "what has changed compared to the reference image?",
     "nothing has changed.", "val"),
]


@pytest.fixture(scope="module")
def real_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mimic")
    rows = []
    for subject, study, dicom, view, split, date, order in STUDIES:
        labels = {label: "" for label in layout.CHEXPERT_LABELS}
        rows.append({"subject_id": subject, "study_id": study, **labels, "dicom_id": dicom, "view": view,
                     "split": split, "study_date": date, "study_order": order})
        if "missing" not in dicom:
            path = layout.image_path(root, subject, study, dicom)
            path.parent.mkdir(parents=True, exist_ok=True)
            brightness = 200 if view == "lateral" else 40 + int(study[-2:])
            cv2.imwrite(str(path), np.full((60, 50), brightness, np.uint8))
    pd.DataFrame(rows, columns=list(layout.STUDY_COLUMNS)).to_csv(root / layout.STUDIES_CSV, index=False)
    pd.DataFrame(QUESTIONS, columns=list(layout.QUESTION_COLUMNS)).to_csv(root / layout.QUESTIONS_CSV, index=False)
    return root


def _dataset(root, **kwargs) -> DiffVQADataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DiffVQADataset(root, image_size=32, **kwargs)


def test_rows_with_a_missing_image_are_counted_and_reported_once(real_root):
    with pytest.warns(UserWarning, match="1 of 6 rows dropped") as record:
        ds = DiffVQADataset(real_root, split=None, image_size=32)
    assert ds.missing == 1 and len(ds) == 5 and len(record) == 1


def test_split_filter_keeps_only_that_split(real_root):
    assert {ds_row["subject_id"] for ds_row in _dataset(real_root, split="train").rows} == {"10000001"}
    assert [row["row_id"] for row in _dataset(real_root, split="test").rows] == ["4"]
    assert len(_dataset(real_root, split="val")) == 0


def test_question_type_filter_and_row_ids_are_the_csv_positions(real_root):
    ds = _dataset(real_root, split=None, question_types=["difference"])
    assert [row["row_id"] for row in ds.rows] == ["1", "3", "4"]
    assert all(row["question_type"] == "difference" for row in ds.rows)


def test_one_image_per_study_is_its_first_frontal_dicom(real_root):
    ds = _dataset(real_root, split="train")
    assert ds.image_path("50000002").name == "d-2-pa.jpg"
    main = ds[0]["main"]  # study 50000002: PA film has grey 42, the lateral one 200
    assert torch.allclose(main, torch.full_like(main, 42 / 255), atol=2 / 255)


def test_swapped_difference_row_gets_the_earlier_study_as_reference(real_root):
    row = next(r for r in _dataset(real_root, split="train").rows if r["row_id"] == "3")
    assert (row["study_id"], row["ref_id"]) == ("50000003", "50000002")


def test_items_collate_and_real_roots_have_no_ground_truth(real_root):
    ds = _dataset(real_root, split="train")
    batch = default_collate([ds[0], ds[1]])
    assert not ds.has_ground_truth and "gt_theta" not in batch
    assert batch["main"].shape == (2, 3, 32, 32) and batch["ref"].dtype == torch.float32
    assert batch["row_id"] == ["0", "1"] and isinstance(batch["answer"][1], str)


def test_augmentation_changes_intensities_within_range(real_root):
    torch.manual_seed(0)
    plain, jittered = _dataset(real_root, split="train")[2], _dataset(real_root, split="train", augment=True)[2]
    assert not torch.equal(plain["main"], jittered["main"])
    assert 0.0 <= float(jittered["main"].min()) and float(jittered["main"].max()) <= 1.0
