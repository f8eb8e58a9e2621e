"""The synthetic longitudinal benchmark: Medical-Diff-VQA's files and layout, with ground truth.

``generate_benchmark`` writes ``mimic_pair_questions.csv``, ``mimic_all.csv``, the films under
``files/p../p../s../<dicom_id>.jpg``, a README.txt, and per (main, reference) pair a sidecar
``ground_truth/{study_id}_{ref_id}.json`` plus ``ground_truth/{study_id}_{ref_id}_change.png``.

Ground-truth convention (shared with the metrics): the reference visit is the canonical frame. The main
film is the reference-frame main anatomy and findings warped by ``theta_gt`` (2x3, torch ``affine_grid``
normalised coordinates, ``align_corners=False``): ``main(x) = canonical_main(theta_gt . x)``; a perfect
registration predicts ``inverse(theta_gt)``. The change mask (reference frame, image resolution, 0/255) is
where the findings of the two visits differ (added, removed or level-changed findings), not pose or exposure.

Each patient has 2-4 studies; every study but the first is paired with the one before it. A patient is
simulated by one task from generators seeded by (seed, patient index), so the output is byte-identical
for a seed and a pair count whatever the number of workers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from diffvqa_core.data import affine, layout
from diffvqa_core.data.film import Exposure, expose
from diffvqa_core.data.findings import Finding, chexpert_labels, first_visit, next_visit
from diffvqa_core.data.grammar import pair_questions
from diffvqa_core.data.lesions import findings_density
from diffvqa_core.data.phantom import Anatomy, background_anatomy, phantom_anatomy

CHANGE_THRESHOLD = 0.03  # density difference that counts as a finding change
VIEW_NAMES = {"PA": "postero-anterior", "AP": "antero-posterior"}  # mimic_all.csv's view column
JPEG_QUALITY = 92
POSE_LIMITS = dict(max_rotation_deg=1.5, max_log_scale=0.015, max_shift=0.015)  # per visit; pairs get twice
README = """Synthetic longitudinal chest X-ray benchmark (NOT patient data).

Written by `python -m train synth` (diffvqa) in the file layout of Medical-Diff-VQA (mimic_pair_questions.csv,
mimic_all.csv, files/p../p../s../<dicom_id>.jpg). Anatomy: {anatomy}. Findings are drawn in; identifiers, dates
and labels are invented. ground_truth/ holds, per (main, reference) pair, the affine that maps the
reference frame to the main film (theta_gt, torch affine_grid convention, align_corners=False), the finding
lists of both visits and the change mask in the reference frame. Seed {seed}, {pairs} pairs, {size} px.
"""


@dataclass(frozen=True)
class PatientPlan:
    """What one worker task simulates: a patient's index, number of studies and first study number."""

    index: int
    studies: int
    first_study: int


def plan_patients(pairs: int, seed: int) -> list[PatientPlan]:
    """Split ``pairs`` over patients of 2-4 studies (the last patient is cut to the exact count)."""
    rng = np.random.default_rng([seed, 2**31])
    plans, made, study = [], 0, 0
    while made < pairs:
        studies = min(int(rng.choice([2, 3, 4], p=[0.5, 0.3, 0.2])), pairs - made + 1)
        plans.append(PatientPlan(len(plans), studies, study))
        made, study = made + studies - 1, study + studies
    return plans


def _dicom_id(seed: int, study_id: str) -> str:
    digest = hashlib.sha1(f"diffvqa-synth:{seed}:{study_id}".encode()).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


def _anatomy(plan: PatientPlan, seed: int, size: int, view: str, backgrounds: list[str]) -> Anatomy:
    rng = np.random.default_rng([seed, plan.index, 1])
    if not backgrounds:
        return phantom_anatomy(rng, size, view)
    path = backgrounds[int(rng.integers(len(backgrounds)))]
    gray = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise OSError(f"cannot read background image {path}")
    return background_anatomy(gray.astype(np.float32) / 255.0, size)


def _sidecar(main: dict[str, Finding], ref: dict[str, Finding], theta: np.ndarray, view: str,
             exposures: tuple[Exposure, Exposure], ids: dict[str, str]) -> str:
    record = {
        **ids,
        "theta_gt": np.round(theta, 8).tolist(),
        "findings_main": [f.to_dict() for f in main.values()],
        "findings_ref": [f.to_dict() for f in ref.values()],
        "view": view,
        "exposure_main": exposures[0].to_dict(),
        "exposure_ref": exposures[1].to_dict(),
        "frame": "reference",
    }
    return json.dumps(record, indent=1, sort_keys=True)


@dataclass
class Visit:
    """One simulated study: its findings, pose (canonical -> film), exposure, findings' density and film."""

    findings: dict[str, Finding]
    pose: np.ndarray
    exposure: Exposure
    delta: np.ndarray
    film: np.ndarray  # (S, S) uint8


@dataclass
class Patient:
    """A simulated patient: view, split, anatomy and visits in order (what ``simulate_visits`` returns)."""

    view: str
    split: str
    anatomy: Anatomy
    visits: list[Visit]


def simulate_visits(plan: PatientPlan, seed: int, size: int, backgrounds: list[str]) -> Patient:
    """Simulate one patient's studies in memory (no files), from generators seeded by (seed, patient index).

    Args:
        plan: the patient's plan.
        seed: benchmark seed.
        size: film side in pixels.
        backgrounds: real radiograph paths to use as anatomy (empty: procedural phantoms).
    """
    rng = np.random.default_rng([seed, plan.index, 0])
    view = "PA" if rng.random() < 0.55 else "AP"
    split = str(rng.choice(["train", "val", "test"], p=[0.8, 0.1, 0.1]))
    anatomy = _anatomy(plan, seed, size, view, backgrounds)
    finding_rng = np.random.default_rng([seed, plan.index, 2])
    pose_rng = np.random.default_rng([seed, plan.index, 3])
    noise_rng = np.random.default_rng([seed, plan.index, 5])
    visits: list[Visit] = []
    for k in range(plan.studies):
        findings = first_visit(finding_rng) if k == 0 else next_visit(visits[-1].findings, finding_rng)
        pose = affine.random_pose(pose_rng, **POSE_LIMITS)
        exposure = Exposure.draw(pose_rng)
        delta = findings_density(findings, anatomy, (seed, plan.index))
        film = expose(affine.warp(anatomy.density + delta, pose), exposure, noise_rng)
        visits.append(Visit(findings, pose, exposure, delta, film))
    return Patient(view, split, anatomy, visits)


def pair_pose(main: Visit, ref: Visit) -> np.ndarray:
    """theta_gt of a pair: the main film is the reference-frame content warped by it."""
    return affine.compose(affine.invert(ref.pose), main.pose)


def change_mask(main: Visit, ref: Visit) -> np.ndarray:
    """Where the two visits' findings differ, in the reference frame: (S, S) uint8 in {0, 255}."""
    changed = (np.abs(main.delta - ref.delta) > CHANGE_THRESHOLD).astype(np.float32)
    return (affine.warp(changed, ref.pose) > 0.5).astype(np.uint8) * 255


def simulate_patient(plan: PatientPlan, seed: int, size: int, out: str,
                     backgrounds: list[str]) -> tuple[list[dict], list[dict]]:
    """Simulate one patient and write their films and sidecars.

    Args:
        plan: the patient's plan.
        seed: benchmark seed.
        size: film side in pixels.
        out: output root.
        backgrounds: real radiograph paths to use as anatomy (empty: procedural phantoms).

    Returns:
        (question rows, study rows) for the two CSV files.
    """
    root = Path(out)
    patient = simulate_visits(plan, seed, size, backgrounds)
    view, split = patient.view, patient.split
    rng = np.random.default_rng([seed, plan.index, 0])
    rng.random(), rng.choice(["train", "val", "test"], p=[0.8, 0.1, 0.1])  # the draws of view and split
    subject_id = str(19_000_000 + plan.index)
    date = dt.date(2110, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365 * 60)))
    question_rng = np.random.default_rng([seed, plan.index, 4])

    question_rows, study_rows, study_ids = [], [], []
    for k, visit in enumerate(patient.visits):
        study_id = str(50_000_000 + plan.first_study + k)
        dicom_id = _dicom_id(seed, study_id)
        path = layout.image_path(root, subject_id, study_id, dicom_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), visit.film, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        study_rows.append({"subject_id": subject_id, "study_id": study_id, **chexpert_labels(visit.findings),
                           "dicom_id": dicom_id, "view": VIEW_NAMES[view], "split": split,
                           "study_date": int(date.strftime("%Y%m%d")), "study_order": float(k + 1)})
        date += dt.timedelta(days=int(rng.integers(1, 400)))
        study_ids.append(study_id)
        if k == 0:
            continue
        ref, main = patient.visits[k - 1], visit
        ids = {"study_id": study_id, "ref_id": study_ids[-2], "subject_id": subject_id}
        layout.change_mask_path(root, study_id, ids["ref_id"]).write_bytes(
            cv2.imencode(".png", change_mask(main, ref))[1].tobytes())
        layout.sidecar_path(root, study_id, ids["ref_id"]).write_text(
            _sidecar(main.findings, ref.findings, pair_pose(main, ref), view, (main.exposure, ref.exposure), ids))
        for question_type, question, answer in pair_questions(main.findings, ref.findings, view, question_rng):
            question_rows.append({"study_id": study_id, "subject_id": subject_id, "ref_id": ids["ref_id"],
                                  "question_type": question_type, "question": question, "answer": answer,
                                  "split": split})
    return question_rows, study_rows


def _simulate(args: tuple) -> tuple[int, list[dict], list[dict]]:
    plan = args[0]
    return (plan.studies - 1, *simulate_patient(*args))


def generate_benchmark(out: str | Path, pairs: int, seed: int = 0, size: int = 512,
                       backgrounds: str | Path | None = None, workers: int = 1, progress: bool = True,
                       background_fraction: float = 1.0) -> Path:
    """Write a synthetic benchmark of exactly ``pairs`` (main, reference) pairs under ``out``.

    Args:
        out: output root (created).
        pairs: number of pairs (one difference question each).
        seed: seed; same seed and pairs give byte-identical files.
        size: film side in pixels.
        backgrounds: folder of real frontal radiographs (PNG/JPG) used as anatomy, one per patient.
        workers: processes (the output does not depend on it).
        progress: show a progress bar.
        background_fraction: with ``backgrounds``, the share of patients drawn on a real film (the others on
            phantoms), decided per patient from (seed, patient index).

    Returns:
        The output root.
    """
    root = Path(out)
    (root / layout.GROUND_TRUTH_DIR).mkdir(parents=True, exist_ok=True)
    images = sorted(str(p) for p in Path(backgrounds).iterdir()
                    if p.suffix.lower() in (".png", ".jpg", ".jpeg")) if backgrounds else []
    if backgrounds and not images:
        raise FileNotFoundError(f"no PNG/JPG images in {backgrounds}")
    if not 0.0 <= background_fraction <= 1.0:
        raise ValueError(f"background_fraction must lie in [0, 1], got {background_fraction}")

    def anatomy_sources(plan: PatientPlan) -> list[str]:
        real = background_fraction >= 1.0 or np.random.default_rng([seed, plan.index, 6]).random() < background_fraction
        return images if real else []

    tasks = [(plan, seed, size, str(root), anatomy_sources(plan)) for plan in plan_patients(pairs, seed)]
    question_rows, study_rows = [], []
    with tqdm(total=pairs, unit="pair", desc="synth", disable=not progress) as bar:
        if workers > 1:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                results = pool.imap(_simulate, tasks, chunksize=4)
                for done, questions, studies in results:
                    question_rows += questions
                    study_rows += studies
                    bar.update(done)
        else:
            for task in tasks:
                done, questions, studies = _simulate(task)
                question_rows += questions
                study_rows += studies
                bar.update(done)
    pd.DataFrame(question_rows, columns=list(layout.QUESTION_COLUMNS)).to_csv(
        root / layout.QUESTIONS_CSV, index=False)
    pd.DataFrame(study_rows, columns=list(layout.STUDY_COLUMNS)).to_csv(root / layout.STUDIES_CSV, index=False)
    anatomy = (f"real radiographs from {backgrounds} (one per patient; their licence and attribution apply)"
               if images else "procedural phantoms")
    if images and background_fraction < 1.0:
        anatomy = f"procedural phantoms and, for a share of {background_fraction:g} of the patients, " + anatomy
    (root / "README.txt").write_text(README.format(anatomy=anatomy, seed=seed, pairs=pairs, size=size))
    return root
