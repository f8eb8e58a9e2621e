"""Checks on everything a reviewer or a script hands to the store, before anything is written.

Each check either returns a clean value or raises :class:`FeedbackValidationError` (a ``ValueError``) with
a message fit to show a reviewer. Text is NFC-normalised, control characters other than tab and newline are
dropped (PostgreSQL refuses NUL in text), and lengths are bounded so that a pasted book cannot fill the
database.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from typing import Final

VERDICTS: Final[tuple[str, ...]] = ("agree", "partly", "disagree")
MASK_RATINGS: Final[tuple[int, ...]] = (1, 2, 3, 4, 5)

MAX_REVIEWER: Final = 100
MAX_QUESTION: Final = 1_000
MAX_ANSWER: Final = 2_000
MAX_CORRECTION: Final = 2_000
MAX_COMMENT: Final = 4_000
MAX_SHORT: Final = 200  # names: checkpoint, model, question type

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class FeedbackValidationError(ValueError):
    """A value handed to :class:`~feedback_db.FeedbackStore` is not acceptable; nothing was stored."""


def clean_text(value: object, field: str, max_len: int, *, required: bool = False) -> str:
    """Normalise free text and enforce its length.

    Args:
        value: the text (``None`` counts as empty).
        field: the field's name, for the message.
        max_len: most characters allowed after cleaning.
        required: whether an empty text is an error.

    Returns:
        The NFC-normalised text without control characters (tab and newline kept), stripped.

    Raises:
        FeedbackValidationError: not a string, empty while required, too long, or not encodable as UTF-8.
    """
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise FeedbackValidationError(f"{field} must be text, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FeedbackValidationError(f"{field} contains characters that cannot be stored (invalid Unicode)") from exc
    text = _CONTROL.sub("", unicodedata.normalize("NFC", value).replace("\r\n", "\n").replace("\r", "\n")).strip()
    if required and not text:
        raise FeedbackValidationError(f"{field} must not be empty")
    if len(text) > max_len:
        raise FeedbackValidationError(f"{field} is too long: {len(text):,} characters (at most {max_len:,})")
    return text


def check_verdict(verdict: object) -> str:
    """Return the verdict if it is one of :data:`VERDICTS`, else raise."""
    if not isinstance(verdict, str) or verdict.strip().lower() not in VERDICTS:
        raise FeedbackValidationError(f"verdict must be one of {', '.join(VERDICTS)}; got {verdict!r:.40}")
    return verdict.strip().lower()


def check_mask_rating(rating: object) -> int | None:
    """Return the rating (1-5) or ``None`` (not rated); anything else raises."""
    if rating is None or rating == "":
        return None
    if isinstance(rating, bool):
        raise FeedbackValidationError("mask rating must be a whole number from 1 to 5")
    if isinstance(rating, float) and rating.is_integer():
        rating = int(rating)
    if isinstance(rating, str) and rating.strip().isdigit():
        rating = int(rating.strip())
    if not isinstance(rating, int) or rating not in MASK_RATINGS:
        raise FeedbackValidationError(f"mask rating must be a whole number from 1 to 5; got {rating!r:.20}")
    return rating


def check_sha256(value: object, field: str) -> str:
    """Return a lower-case hex SHA-256 digest, or raise."""
    if not isinstance(value, str) or not _SHA256.match(value.strip().lower()):
        raise FeedbackValidationError(f"{field} must be a SHA-256 hex digest (64 hex characters)")
    return value.strip().lower()


_CHECKPOINT_MARKER = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def check_checkpoint_hash(value: object) -> str:
    """Return a checkpoint's SHA-256, or a short marker such as ``random-init`` for an untrained model."""
    text = value.strip().lower() if isinstance(value, str) else ""
    if not (_SHA256.match(text) or _CHECKPOINT_MARKER.match(text)):
        raise FeedbackValidationError("checkpoint sha256 must be a SHA-256 hex digest (or a marker like random-init)")
    return text


def check_lambda(lam: object) -> float:
    """Return the fusion weight lambda as a float in [0, 1], or raise."""
    try:
        value = float(lam)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise FeedbackValidationError(f"lambda must be a number in [0, 1]; got {lam!r:.20}") from exc
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise FeedbackValidationError(f"lambda must be a number in [0, 1]; got {value}")
    return value


def check_theta(theta: object) -> list[list[float]]:
    """Return theta as a 2x3 nested list of finite floats (accepts ndarrays and nested sequences)."""
    rows = theta.tolist() if hasattr(theta, "tolist") else theta
    try:
        out = [[float(v) for v in row] for row in rows]  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise FeedbackValidationError("theta must be a 2x3 matrix of numbers") from exc
    if len(out) != 2 or any(len(row) != 3 for row in out) or not all(math.isfinite(v) for row in out for v in row):
        raise FeedbackValidationError("theta must be a 2x3 matrix of finite numbers")
    return out


def check_mask_summary(summary: object) -> dict[str, dict[str, float | list[int]]]:
    """Return mask summaries ``{"U"|"F"|"M": {stat: number or [row, col]}}`` as plain JSON-able values."""
    if summary is None:
        return {}
    if not isinstance(summary, dict):
        raise FeedbackValidationError("mask summary must be a mapping of mask name to statistics")
    out: dict[str, dict[str, float | list[int]]] = {}
    for name, stats in summary.items():
        if not isinstance(stats, dict):
            raise FeedbackValidationError(f"mask summary of {name!r:.20} must be a mapping")
        clean: dict[str, float | list[int]] = {}
        for key, value in stats.items():
            if isinstance(value, Sequence) and not isinstance(value, str):
                clean[str(key)[:32]] = [int(v) for v in value]
            else:
                number = float(value)
                if not math.isfinite(number):
                    raise FeedbackValidationError(f"mask summary {name}.{key} is not finite")
                clean[str(key)[:32]] = number
        out[str(name)[:16]] = clean
    return out
