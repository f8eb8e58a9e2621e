"""``python -m train corrections``: the reviewers' corrections as a training set in the benchmark's layout.

Reads the feedback store (each reviewer's latest review of each analysis), keeps the verdicts asked for (by
default ``disagree`` and ``partly``) that carry a corrected answer, finds the two films of each case by hashing
the files under ``--images-from`` (the store keeps only their SHA-256, never pixels), and writes::

    OUT/mimic_pair_questions.csv   one row per (image pair, question): the corrected answer, split train | val
    OUT/mimic_all.csv              one row per film
    OUT/files/p98/p980000xx/s800000xx/<sha256>.jpg
    OUT/corrections.csv            provenance: review id, reviewer, verdict, the model's answer, source files
    OUT/README.txt

which ``python -m train fit --init-from CHECKPOINT --data-root OUT`` fine-tunes on (``train.finetune``). Rules:

* An ``agree`` exported (``--verdicts agree ...``) without a correction keeps the model's answer: a confirmed
  answer is a training row too.
* Difference answers are written as the benchmark writes them (lower case, sentences ending in ". ").
* Several reviewers on the same pair and question: the latest review wins; the others are counted as conflicts.
* A correction the benchmark's answer grammar cannot hold (``diffvqa_core.answer_grammar``) is left out and
  named, unless ``--keep-free-text``: a model answers under that grammar, so it could never say it.
* Ids: each film gets a study id (80000000 + k, films sorted by hash) and its SHA-256 as dicom id; the two films
  of a pair, and every pair sharing a film, get one subject id. No identifier of the source is copied.
* JPEG files are copied byte for byte (so the exported film hashes as the reviewed one); PNG and DICOM films are
  decoded as the app decodes them and written as JPEG (quality 95).
* ``--val-fraction`` (default 0.2) of the pairs, chosen by hash of the pair (stable as corrections are added),
  form the ``val`` split; at least one pair when there are two or more.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffvqa_core.data import layout

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".dcm", ".dicom")
PROVENANCE_CSV = "corrections.csv"
DEFAULT_VERDICTS = ("disagree", "partly")
_STUDY_BASE, _SUBJECT_BASE = 80_000_000, 98_000_000  # apart from MIMIC-CXR (5x, 1x) and synth


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m train corrections``."""
    parser.add_argument("--db", help="feedback database URL (default: $DIFFVQA_DB_URL or the per-user SQLite file)")
    parser.add_argument("--images-from", required=True, action="append", metavar="DIR",
                        help="folder searched (recursively) for the reviewed films by SHA-256; may be repeated")
    parser.add_argument("--out", required=True, help="new folder to write the benchmark layout into")
    parser.add_argument("--verdicts", nargs="+", default=list(DEFAULT_VERDICTS),
                        choices=("agree", "partly", "disagree"), help="verdicts to export (default: disagree partly)")
    parser.add_argument("--reviewer", action="append", help="only this reviewer's reviews (may be repeated)")
    parser.add_argument("--question-type", action="append", help="only this question family (may be repeated)")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="share of pairs held out as the val split (0: every row trains)")
    parser.add_argument("--keep-free-text", action="store_true",
                        help="also export corrections outside the benchmark's answer grammar")


def run(args: argparse.Namespace) -> int:
    """Exports; returns 0, or 2 with a message when nothing could be exported or a flag is wrong."""
    from feedback_db import FeedbackStore

    try:
        with FeedbackStore(args.db) as store:
            report = export_corrections(store, args.images_from, args.out, verdicts=args.verdicts,
                                        reviewers=args.reviewer, question_types=args.question_type,
                                        val_fraction=args.val_fraction, keep_free_text=args.keep_free_text)
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.describe())
    return 0 if report.rows else 2


@dataclass
class ExportReport:
    """What :func:`export_corrections` wrote and what it left out, and why."""

    out: Path
    rows: int = 0
    train_rows: int = 0
    val_rows: int = 0
    films: int = 0
    converted: int = 0  # films re-encoded from PNG / DICOM
    reviews_considered: int = 0
    conflicts: int = 0  # reviews superseded by another reviewer's later review of the same pair and question
    no_answer: list[int] = field(default_factory=list)  # review ids: partly / disagree without a correction
    free_text: list[int] = field(default_factory=list)  # review ids: outside the answer grammar
    images_missing: list[int] = field(default_factory=list)  # review ids: a film not found under the folders

    def describe(self) -> str:
        """A few lines for the terminal."""
        lines = [f"wrote {self.rows} rows ({self.train_rows} train, {self.val_rows} val) on {self.films} films to "
                 f"{self.out} ({self.converted} re-encoded as JPEG) from {self.reviews_considered} reviews"]
        for label, ids in (("without a corrected answer", self.no_answer),
                           ("outside the answer grammar (--keep-free-text keeps them)", self.free_text),
                           ("whose films are not under --images-from", self.images_missing)):
            if ids:
                shown = ", ".join(map(str, ids[:10])) + (" ..." if len(ids) > 10 else "")
                lines.append(f"left out {len(ids)} review(s) {label}: {shown}")
        if self.conflicts:
            lines.append(f"{self.conflicts} review(s) superseded by a later reviewer's correction of the same question")
        return "\n".join(lines)


def export_corrections(store, images_from: list[str | Path] | str | Path, out: str | Path, *,
                       verdicts: tuple[str, ...] | list[str] = DEFAULT_VERDICTS, reviewers: list[str] | None = None,
                       question_types: list[str] | None = None, val_fraction: float = 0.2,
                       keep_free_text: bool = False) -> ExportReport:
    """Writes the corrections of ``store`` as a benchmark folder ``out`` (see the module docstring).

    Args:
        store: a :class:`feedback_db.FeedbackStore`.
        images_from: folder(s) holding the reviewed films (searched recursively, hashed until all are found).
        out: the folder to create; it must not exist or be empty.
        verdicts: verdicts to export.
        reviewers: only these reviewers (None: all).
        question_types: only these families (None: all).
        val_fraction: share of pairs in the val split.
        keep_free_text: keep corrections outside the answer grammar.

    Returns:
        The :class:`ExportReport`.

    Raises:
        FileExistsError: ``out`` holds files.
        FileNotFoundError: a folder of ``images_from`` does not exist.
        ValueError: ``val_fraction`` outside [0, 1).
    """
    from feedback_db.analysis import reviews_frame

    out = Path(out)
    folders = [Path(p) for p in ([images_from] if isinstance(images_from, (str, Path)) else images_from)]
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"--val-fraction must lie in [0, 1), got {val_fraction}")
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"--images-from {folder}: no such folder")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: give a new folder for the export")

    frame = reviews_frame(store)  # each reviewer's latest review of each analysis, newest first
    frame = frame[frame["verdict"].isin(list(verdicts))]
    if reviewers:
        frame = frame[frame["reviewer"].isin(reviewers)]
    if question_types:
        frame = frame[frame["question_type"].isin(question_types)]
    report = ExportReport(out=out, reviews_considered=len(frame))
    chosen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in frame.to_dict("records"):  # newest first: the first review of a (pair, question) wins
        answer = _training_answer(row)
        if answer is None:
            report.no_answer.append(int(row["review_id"]))
            continue
        if not keep_free_text and not _grammatical(row["question"], answer):
            report.free_text.append(int(row["review_id"]))
            continue
        key = (row["main_sha256"], row["ref_sha256"], " ".join(row["question"].lower().split()))
        if key in chosen:
            report.conflicts += chosen[key]["answer"] != answer
            continue
        chosen[key] = {**row, "answer": answer, "model_answer": row["answer"]}

    wanted = {sha for main, ref, _ in chosen for sha in (main, ref)}
    sources = find_films(folders, wanted)
    rows = []
    for key, row in chosen.items():
        if key[0] in sources and key[1] in sources:
            rows.append(row)
        else:
            report.images_missing.append(int(row["review_id"]))
    if rows:
        _write(rows, sources, out, val_fraction, report)
    return report


def _training_answer(row: dict[str, Any]) -> str | None:
    correction = str(row.get("corrected_answer") or "").strip()
    answer = correction or (str(row["answer"]).strip() if row["verdict"] == "agree" else "")
    return benchmark_form(row["question_type"], answer) if answer else None


def benchmark_form(question_type: str, answer: str) -> str:
    """A difference answer as the benchmark writes it: lower case, each sentence ending in ". " (the store strips
    the trailing space), "nothing has changed." alone; other answers unchanged."""
    from diffvqa_core.data.vocabulary import NOTHING_CHANGED

    if question_type != "difference":
        return answer
    text = " ".join(answer.lower().split())
    return text if text == NOTHING_CHANGED or not text.endswith(".") else text + " "


def _grammatical(question: str, answer: str) -> bool:
    from diffvqa_core.answer_grammar import AnswerGrammar

    grammar = AnswerGrammar.for_question(question)
    return grammar is None or grammar.accepts(answer)


def find_films(folders: list[Path], wanted: set[str]) -> dict[str, Path]:
    """SHA-256 -> a file under ``folders`` with those bytes, for each of ``wanted`` found (stops when all are).

    Only files with an image suffix (:data:`IMAGE_SUFFIXES`) are hashed, in sorted order.
    """
    from tqdm.auto import tqdm

    found: dict[str, Path] = {}
    if not wanted:
        return found
    candidates = sorted(p for folder in folders for p in folder.rglob("*")
                        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    for path in tqdm(candidates, desc="hashing films", unit="file", leave=False):
        digest = _file_sha256(path)
        if digest in wanted and digest not in found:
            found[digest] = path
            if len(found) == len(wanted):
                break
    return found


def _file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, as the app identifies a film (``diffvqa_core.imaging.sha256_of``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _subjects(pairs: list[tuple[str, str]]) -> dict[str, int]:
    """Films -> subject number: the connected components of the pairs (union-find), numbered by smallest hash."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = sorted({root(x) for x in parent})
    number = {r: i for i, r in enumerate(roots)}
    return {x: number[root(x)] for x in parent}


def _pair_score(main: str, ref: str) -> int:
    return int(hashlib.sha256(f"{main}/{ref}".encode()).hexdigest()[:12], 16)


def _write(rows: list[dict[str, Any]], sources: dict[str, Path], out: Path, val_fraction: float,
           report: ExportReport) -> None:
    films = sorted({sha for row in rows for sha in (row["main_sha256"], row["ref_sha256"])})
    study = {sha: str(_STUDY_BASE + k) for k, sha in enumerate(films)}
    subject = {sha: str(_SUBJECT_BASE + n) for sha, n in
               _subjects([(r["main_sha256"], r["ref_sha256"]) for r in rows]).items()}
    pairs = sorted({(r["main_sha256"], r["ref_sha256"]) for r in rows}, key=lambda p: _pair_score(*p))
    n_val = 0 if val_fraction == 0 or len(pairs) < 2 else max(1, round(val_fraction * len(pairs)))
    val_pairs = set(pairs[:n_val])

    out.mkdir(parents=True, exist_ok=True)
    split_of_film: dict[str, str] = {}
    questions, provenance = [], []
    for row in sorted(rows, key=lambda r: (study[r["main_sha256"]], study[r["ref_sha256"]], r["question"])):
        main, ref = row["main_sha256"], row["ref_sha256"]
        split = "val" if (main, ref) in val_pairs else "train"
        for sha in (main, ref):
            split_of_film[sha] = "train" if split == "train" else split_of_film.get(sha, "val")
        questions.append({"study_id": study[main], "subject_id": subject[main], "ref_id": study[ref],
                          "question_type": row["question_type"], "question": row["question"],
                          "answer": row["answer"], "split": split})
        provenance.append({"study_id": study[main], "ref_id": study[ref], "split": split,
                           "question": row["question"], "answer": row["answer"],
                           "model_answer": row["model_answer"], "verdict": row["verdict"],
                           "review_id": int(row["review_id"]), "analysis_id": int(row["analysis_id"]),
                           "reviewer": row["reviewer"], "reviewed_at": row["reviewed_at"].isoformat(),
                           "checkpoint_sha256": row["checkpoint_sha256"], "lambda": row["lam"],
                           "main_sha256": main, "ref_sha256": ref,
                           "main_source": str(sources[main]), "ref_source": str(sources[ref])})
    studies = []
    for sha in films:
        target = layout.image_path(out, subject[sha], study[sha], sha)
        target.parent.mkdir(parents=True, exist_ok=True)
        report.converted += _copy_film(sources[sha], target)
        studies.append({"subject_id": subject[sha], "study_id": study[sha],
                        **{label: "" for label in layout.CHEXPERT_LABELS},
                        "dicom_id": sha, "view": "", "split": split_of_film[sha], "study_date": "", "study_order": ""})
    _write_csv(out / layout.QUESTIONS_CSV, layout.QUESTION_COLUMNS, questions)
    _write_csv(out / layout.STUDIES_CSV, layout.STUDY_COLUMNS, studies)
    _write_csv(out / PROVENANCE_CSV, tuple(provenance[0]), provenance)
    (out / "README.txt").write_text(
        "Reviewers' corrections exported by `python -m train corrections` in the Medical-Diff-VQA layout.\n"
        "mimic_pair_questions.csv: the corrected answers (split train / val); mimic_all.csv: one row per film;\n"
        "files/: the films, named by their SHA-256; corrections.csv: which review each row comes from.\n"
        "Fine-tune: python -m train fit --init-from CHECKPOINT --data-root THIS_FOLDER\n", encoding="utf-8")
    report.rows, report.films = len(questions), len(films)
    report.val_rows = sum(q["split"] == "val" for q in questions)
    report.train_rows = report.rows - report.val_rows


def _copy_film(source: Path, target: Path) -> bool:
    """Copies a JPEG byte for byte; decodes anything else as the app does and writes a JPEG. True if re-encoded."""
    with open(source, "rb") as handle:
        is_jpeg = handle.read(3) == b"\xff\xd8\xff"
    if is_jpeg:
        shutil.copyfile(source, target)
        return False
    import cv2
    import numpy as np

    from diffvqa_core.imaging import read_image

    gray = np.clip(read_image(source) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if not cv2.imwrite(str(target), gray, [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f"could not write {target}")
    return True


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
