"""Evaluation: the benchmark's answer metrics, mask localisation and registration error.

Answer metrics follow the protocol of every published Medical-Diff-VQA baseline (shared/design/BENCHMARK.md,
"Scoring protocol"): pycocoevalcap at corpus level with one reference per question, keyed by row id;
``PTBTokenizer`` on both sides, then ``Bleu(4)``, ``Meteor()``, ``Rouge()`` and ``Cider()``. SPICE is not
used (it downloads CoreNLP). BLEU is pycocoevalcap's own choice, ``option="closest"``: with a single
reference the "closest" reference length is simply that reference's length, so the brevity penalty compares
the total hypothesis length with the total reference length. CIDEr's document frequencies come from the
scored set itself, so a subset (one question type) scores differently from a slice of the whole set's
per-row scores; :func:`score_by_question_type` therefore rescores each subset.

:func:`change_agreement` is not part of that protocol: it reads difference answers back with the benchmark
grammar's parser and scores only the changes they name, which the sentence-overlap metrics blur.

The localisation and registration measures are the yardsticks of the synthetic benchmark (the paper's
sections 3.1-3.2 and 4): whether a saliency mask points at what changed, and how far the predicted affine
(eq. 1-2) leaves the image corners from where the ground truth puts them.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np

from diffvqa_core.data.grammar import difference_answer_problems, parse_difference_answer
from diffvqa_core.data.vocabulary import NOTHING_CHANGED

ANSWER_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
"""Keys of every score dict, in the order the literature reports them."""

_ROW_FIELDS = ("row_id", "question_type", "reference", "prediction")
_CORNERS = np.array([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])  # (4, 2) normalised (x, y)

Row = Mapping[str, object] | Sequence[object]


# ------------------------------------------------------------------------------------- answer metrics


def score_answers(references: Mapping[object, str], predictions: Mapping[object, str]) -> dict[str, float]:
    """Score predicted answers against references with the published baselines' protocol.

    Whitespace runs (including carriage returns and Unicode line separators, which would otherwise split one answer
    into two lines for the Java tokenizer and misalign every later row) are collapsed to single spaces first;
    this never changes the tokens PTBTokenizer produces from ordinary text.

    Args:
        references: row id -> ground-truth answer (one reference per row).
        predictions: row id -> generated answer; the same ids as ``references``.

    Returns:
        {"Bleu_1", ..., "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"} -> corpus-level float.

    Raises:
        ValueError: if the id sets differ or are empty.
    """
    _check_same_ids(references, predictions)
    with _meteor_process() as meteor:
        return _score(references, predictions, meteor)


def score_by_question_type(rows: Iterable[Row]) -> dict[str, dict[str, float]]:
    """Score all rows together and each question type on its own (re-tokenized, rescored).

    Args:
        rows: dicts with keys row_id, question_type, reference, prediction, or tuples in that order.

    Returns:
        {"all": scores, "<question_type>": scores, ...}, each as returned by :func:`score_answers`.

    Raises:
        ValueError: on a duplicated row id, an empty input, or a question type named "all".
    """
    groups = _group_by_type([_as_row(row) for row in rows])
    with _meteor_process() as meteor:
        return {name: _score(refs, preds, meteor) for name, (refs, preds) in groups.items()}


def _as_row(row: Row) -> tuple[object, str, str, str]:
    """(row_id, question_type, reference, prediction) from a dict or a 4-sequence."""
    if isinstance(row, Mapping):
        return tuple(row[field] for field in _ROW_FIELDS)  # type: ignore[return-value]
    row_id, question_type, reference, prediction = row
    return row_id, question_type, reference, prediction


def _group_by_type(rows: list[tuple[object, str, str, str]]) -> dict[str, tuple[dict, dict]]:
    """{"all": (refs, preds), type: (refs, preds), ...} keyed by row id; types sorted by name."""
    if not rows:
        raise ValueError("no rows to score")
    groups: dict[str, tuple[dict, dict]] = defaultdict(lambda: ({}, {}))
    for row_id, question_type, reference, prediction in rows:
        if question_type == "all":
            raise ValueError('a question type may not be named "all" (it is the key of the overall scores)')
        if row_id in groups["all"][0]:
            raise ValueError(f"duplicated row id {row_id!r}")
        for name in ("all", question_type):
            groups[name][0][row_id] = reference
            groups[name][1][row_id] = prediction
    return {"all": groups["all"], **{name: groups[name] for name in sorted(groups) if name != "all"}}


def _check_same_ids(references: Mapping, predictions: Mapping) -> None:
    """Raise ValueError naming a few ids that only one side has."""
    if set(references) != set(predictions):
        missing = sorted(map(str, set(references) - set(predictions)))
        extra = sorted(map(str, set(predictions) - set(references)))
        raise ValueError(
            f"references and predictions must have the same row ids: {len(missing)} without a prediction "
            f"(e.g. {missing[:3]}), {len(extra)} without a reference (e.g. {extra[:3]})"
        )
    if not references:
        raise ValueError("no answers to score")


def _score(references: Mapping, predictions: Mapping, meteor) -> dict[str, float]:
    """Tokenize both sides with PTBTokenizer and run Bleu(4), METEOR, ROUGE-L and CIDEr."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = _tokenize(references)
    res = _tokenize(predictions)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = dict(zip(ANSWER_METRICS[:4], bleu))
    scores["METEOR"], _ = meteor.compute_score(gts, res)
    scores["ROUGE_L"], _ = Rouge().compute_score(gts, res)
    scores["CIDEr"], _ = Cider().compute_score(gts, res)
    return {name: float(scores[name]) for name in ANSWER_METRICS}


def _tokenize(texts: Mapping[object, str]) -> dict[object, list[str]]:
    """PTBTokenizer (Java; lower-cases, drops punctuation) on {id: [{"caption": text}]}."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = {key: [{"caption": " ".join(str(text).split())}] for key, text in texts.items()}
    tokenized = PTBTokenizer().tokenize(captions)
    if set(tokenized) != set(captions):
        raise RuntimeError("PTBTokenizer returned a different number of lines than it was given")
    return tokenized


@contextlib.contextmanager
def _meteor_process() -> Iterator[object]:
    """One METEOR 1.5 JVM for a batch of scorings, always stopped afterwards (even after an error)."""
    from pycocoevalcap.meteor.meteor import Meteor

    meteor = Meteor()
    try:
        yield meteor
    finally:
        if meteor.lock.locked():  # compute_score failed between acquire and release
            meteor.lock.release()
        process = meteor.meteor_p
        process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            stream.close()


# ------------------------------------------------------------------------ changes a difference answer names


def stated_changes(answer: str) -> set[tuple[str, str]]:
    """The changes a difference answer states, as ("added" | "missing" | "level", finding name) items.

    Read with the benchmark grammar's own parser; "nothing has changed." and text outside the grammar state none.
    """
    levels, added, missing = parse_difference_answer(answer)
    return ({("level", name) for name, _, _ in levels} | {("added", name) for name in added}
            | {("missing", name) for name in missing})


def stated_changes_with_levels(answer: str) -> set[tuple[str, ...]]:
    """As :func:`stated_changes`, with the two level words of each level change: ("level", name, before, after)."""
    levels, added, missing = parse_difference_answer(answer)
    return ({("level", name, before, after) for name, before, after in levels}
            | {("added", name) for name in added} | {("missing", name) for name in missing})


def change_agreement(pairs: Iterable[tuple[str, str]]) -> dict[str, float]:
    """Do difference answers name the right changes? Micro precision / recall / F1 over stated-change items.

    CIDEr and BLEU reward the shared sentence frame ("the main image has an additional finding of ... than
    the reference image."), which a model can write without looking; this scores only the findings named, and
    in which direction (added, missing, level changed). A question whose reference says "nothing has changed."
    and whose prediction says the same counts towards ``exact`` and towards no item.

    Args:
        pairs: (reference answer, predicted answer) per difference question.

    Returns:
        {"questions", "precision", "recall", "f1", "exact", "well_formed", "changed_questions", "exact_changed",
        "nothing_precision", "nothing_recall"}; precision (recall) is 0 when nothing was predicted (expected);
        ``exact`` is the fraction of questions whose predicted set equals the reference's; ``well_formed`` the
        fraction of predictions the benchmark could have written
        (:func:`~diffvqa_core.data.grammar.difference_answer_problems` finds nothing); ``exact_changed`` the
        fraction of questions whose reference names a change that the prediction gets entirely right, level words
        included; ``nothing_precision`` / ``nothing_recall`` score "nothing has changed." as a detector of
        unchanged pairs (None when it was never said / never the truth).

    Raises:
        ValueError: on an empty input.
    """
    questions = true_positive = predicted = expected = exact = well_formed = 0
    changed = exact_changed = said_nothing = truly_nothing = both_nothing = 0
    for reference, prediction in pairs:
        well_formed += not difference_answer_problems(prediction)
        truth, guess = stated_changes(reference), stated_changes(prediction)
        questions += 1
        true_positive += len(truth & guess)
        predicted += len(guess)
        expected += len(truth)
        exact += truth == guess
        reference_nothing = reference.strip() == NOTHING_CHANGED
        prediction_nothing = prediction.strip() == NOTHING_CHANGED
        said_nothing += prediction_nothing
        truly_nothing += reference_nothing
        both_nothing += reference_nothing and prediction_nothing
        if truth:
            changed += 1
            exact_changed += stated_changes_with_levels(reference) == stated_changes_with_levels(prediction)
    if not questions:
        raise ValueError("no difference answers to compare")
    precision = true_positive / predicted if predicted else 0.0
    recall = true_positive / expected if expected else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"questions": questions, "precision": precision, "recall": recall, "f1": f1, "exact": exact / questions,
            "well_formed": well_formed / questions, "changed_questions": changed,
            "exact_changed": exact_changed / changed if changed else None,
            "nothing_precision": both_nothing / said_nothing if said_nothing else None,
            "nothing_recall": both_nothing / truly_nothing if truly_nothing else None}


# --------------------------------------------------------------------------------- mask localisation


def pointing_game(mask: np.ndarray, change_mask: np.ndarray) -> bool:
    """Whether a saliency mask's maximum falls inside the changed region.

    Args:
        mask: (h, w) float saliency; bilinearly resized to the change mask's size when it differs.
        change_mask: (H, W) ground truth; bool, 0/1, or float (> 0.5 counts as changed).

    Returns:
        True if the first maximum (row-major order, as ``np.argmax``) lies in the changed region.

    Raises:
        ValueError: if the change mask is empty (the game is defined only for changed pairs).
    """
    changed = _binary(change_mask)
    if not changed.any():
        raise ValueError("the change mask is empty: the pointing game needs a changed region")
    saliency = _resize_to(np.asarray(mask, dtype=np.float32), changed.shape)
    return bool(changed.flat[int(np.argmax(saliency))])


def mask_auroc(masks: np.ndarray | Sequence[np.ndarray], change_masks: np.ndarray | Sequence[np.ndarray]) -> float:
    """Pixel-level AUROC of saliency masks against change masks, pooled over all images.

    Computed exactly as the Mann-Whitney U statistic: with average ranks r of all pooled scores (ties share
    their mean rank), AUROC = (sum of r over changed pixels - P (P + 1) / 2) / (P N), P changed and N unchanged
    pixels. Ties therefore count one half, so a constant mask scores exactly 0.5.

    Args:
        masks: one (h, w) array, an (n, h, w) array, or a sequence of n 2-D arrays; each is bilinearly
            resized to its change mask's size when they differ.
        change_masks: the matching (H, W) ground truths (bool, 0/1, or float > 0.5 = changed).

    Returns:
        AUROC in [0, 1]: 1 = every changed pixel outscores every unchanged one, 0 = the reverse.

    Raises:
        ValueError: if the counts differ or the pooled pixels are all changed or all unchanged.
    """
    masks, change_masks = _as_mask_list(masks), _as_mask_list(change_masks)
    if len(masks) != len(change_masks):
        raise ValueError(f"{len(masks)} masks but {len(change_masks)} change masks")
    labels = np.concatenate([_binary(change).ravel() for change in change_masks])
    scores = np.concatenate(
        [_resize_to(np.asarray(m, dtype=np.float32), c.shape).ravel() for m, c in zip(masks, change_masks)]
    )
    return _mann_whitney_auroc(scores, labels)


def mean_auroc(scores: np.ndarray, targets: np.ndarray) -> float:
    """Multi-label AUROC: the mean over label columns holding both classes (NaN when none does).

    Args:
        scores: (n, labels) any real scores.
        targets: (n, labels) 0/1 (above 0.5 counts as positive).
    """
    values = [_mann_whitney_auroc(scores[:, c], targets[:, c] > 0.5) for c in range(targets.shape[1])
              if 0 < (targets[:, c] > 0.5).sum() < len(targets)]
    return float(np.mean(values)) if values else float("nan")


def _mann_whitney_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUROC from average ranks; see :func:`mask_auroc`."""
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        raise ValueError("AUROC needs both changed and unchanged pixels")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based mean rank of each distinct value
    rank_sum = average_rank[inverse.ravel()][labels].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def _as_mask_list(masks: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """A list of 2-D arrays from one 2-D array, an (n, H, W) array or a sequence."""
    if isinstance(masks, np.ndarray) and masks.ndim == 2:
        return [masks]
    return [np.asarray(mask) for mask in masks]


def _binary(change_mask: np.ndarray) -> np.ndarray:
    """Boolean change mask: bool as is, numbers > 0.5."""
    return np.asarray(change_mask) > 0.5


def _resize_to(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D float array to ``shape`` = (H, W); a no-op when it already matches."""
    if array.shape == tuple(shape):
        return array
    return cv2.resize(array, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


# ------------------------------------------------------------------------------- registration error


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine ``x -> outer(inner(x))`` (homogeneous product ``outer @ inner``).

    Args:
        outer: (2, 3) affine applied second.
        inner: (2, 3) affine applied first.

    Returns:
        (2, 3) float64 affine.
    """
    return (_homogeneous(outer) @ _homogeneous(inner))[:2]


def invert_affine(theta: np.ndarray) -> np.ndarray:
    """The (2, 3) inverse of an invertible (2, 3) affine."""
    return np.linalg.inv(_homogeneous(theta))[:2]


def corner_displacement(
    theta_gt: np.ndarray, theta_pred: np.ndarray | None = None, *, height: int, width: int
) -> float:
    """Mean pixel distance by which the image corners are still misplaced after registration.

    Convention (torch ``affine_grid``, normalised coordinates in [-1, 1], ``align_corners=False``): the
    synthetic generator made ``main(x) = canonical(theta_gt x)`` with the reference visit as the canonical
    frame, and the model samples ``registered(x) = main(theta_pred x)``, so
    ``registered(x) = canonical(theta_gt (theta_pred x))``. The residual map ``r = theta_gt o theta_pred``
    is the identity for a perfect registration; this returns the mean over the four corners c = (+/-1, +/-1)
    of ``|r(c) - c|`` converted to pixels (x by width / 2, y by height / 2).

    Args:
        theta_gt: (2, 3) ground-truth affine (anything ``np.asarray`` accepts, e.g. a CPU tensor).
        theta_pred: (2, 3) predicted affine, or None for the identity (the error before registration).
        height: image height in pixels.
        width: image width in pixels.

    Returns:
        Mean corner displacement in pixels (0 for a perfect registration).
    """
    residual = np.asarray(theta_gt, dtype=np.float64)
    if theta_pred is not None:
        residual = compose_affine(residual, np.asarray(theta_pred, dtype=np.float64))
    moved = _CORNERS @ residual[:, :2].T + residual[:, 2]  # (4, 2)
    offsets = (moved - _CORNERS) * np.array([width / 2.0, height / 2.0])
    return float(np.linalg.norm(offsets, axis=1).mean())


def _homogeneous(theta: np.ndarray) -> np.ndarray:
    """(3, 3) homogeneous matrix of a (2, 3) affine."""
    theta = np.asarray(theta, dtype=np.float64)
    if theta.shape != (2, 3):
        raise ValueError(f"an affine must have shape (2, 3), got {theta.shape}")
    return np.vstack([theta, [0.0, 0.0, 1.0]])
