"""Temporal subtraction (issue 17, part 2): registered main minus reference, intensity-matched inside the body,
through the films' window, on a diverging colormap centred at 0; on screen beside the masks and in the review
picture that exports carry."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from app_support import REPO
from review_app import rendering
from review_app.subtraction import SUBTRACTION_RANGE, subtraction_rgb, temporal_subtraction

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _chest(size: int = 128, seed: int = 0) -> np.ndarray:
    """A bright body with two dark lungs and some texture, in [0, 1]."""
    rng = np.random.default_rng(seed)
    film = np.full((size, size), 0.1, np.float32)
    cv2.rectangle(film, (size // 8, size // 10), (7 * size // 8, size - 1), 0.75, -1)
    for x in (size // 4, size // 2 + size // 16):
        cv2.ellipse(film, (x + size // 10, size // 2), (size // 8, size // 4), 0, 0, 360, 0.35, -1)
    return np.clip(film + rng.normal(0, 0.01, film.shape).astype(np.float32), 0, 1)


def test_a_film_minus_itself_is_zero() -> None:
    film = _chest()
    assert np.abs(temporal_subtraction(film, film, IDENTITY).difference).max() < 1e-5


def test_a_change_of_exposure_alone_cancels() -> None:
    film = _chest()
    brighter = np.clip(film * 1.15 + 0.04, 0, 1)
    result = temporal_subtraction(brighter, film, IDENTITY)
    assert np.abs(result.difference[result.body]).mean() < 0.01
    assert result.body.mean() > 0.3  # the body, not the dark outside, was matched


def test_denser_now_is_positive_and_red_less_dense_is_negative_and_blue() -> None:
    ref = _chest()
    main = ref.copy()
    cv2.circle(main, (40, 64), 8, 0.7, -1)  # a new opacity in the right lung
    result = temporal_subtraction(main, ref, IDENTITY)
    assert result.difference[64, 40] > 0.2
    red = subtraction_rgb(result.difference)[64, 40]
    assert red[0] > red[2] + 60
    blue = subtraction_rgb(-result.difference)[64, 40]
    assert blue[2] > blue[0] + 60
    zero = subtraction_rgb(np.zeros((1, 1)))[0, 0]
    assert zero.max() < 40  # unchanged is (nearly) black: the reading room's dark screen


def test_a_narrower_window_amplifies_the_difference_inside_it() -> None:
    ref = _chest()
    main = ref.copy()
    cv2.circle(main, (40, 64), 8, 0.45, -1)  # a faint opacity: 0.35 -> 0.45
    wide = temporal_subtraction(main, ref, IDENTITY, center=0.5, width=1.0).difference[64, 40]
    narrow = temporal_subtraction(main, ref, IDENTITY, center=0.4, width=0.3).difference[64, 40]
    assert narrow > 2.5 * wide > 0


def test_where_the_registered_film_has_no_data_the_difference_is_zero() -> None:
    film = _chest()
    shifted = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]])  # samples beyond the main film's right edge
    result = temporal_subtraction(film, film, shifted)
    assert not result.overlap[:, -10:].any() and result.overlap[:, :10].all()
    assert np.all(result.difference[~result.overlap] == 0)


@pytest.fixture(scope="module")
def synthetic_pairs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                              np.ndarray]]:
    """(main, reference, true registration, change mask) of the 12-pair synthetic benchmark's changed pairs."""
    from diffvqa_core.data.reader import DiffVQADataset
    from diffvqa_core.imaging import read_image

    root = tmp_path_factory.mktemp("subtraction-bench")
    subprocess.run([sys.executable, "-m", "train", "synth", "--out", str(root), "--pairs", "12", "--seed", "5",
                    "--size", "128", "--workers", "1"], check=True, capture_output=True, cwd=REPO)
    data = DiffVQADataset(root, split=None, question_types=["difference"])
    pairs = []
    for row in data.rows:
        stem = root / "ground_truth" / f"{row['study_id']}_{row['ref_id']}"
        change = cv2.imread(f"{stem}_change.png", cv2.IMREAD_GRAYSCALE) > 127
        if change.mean() < 0.01:
            continue
        theta_gt = np.array(json.loads(Path(f"{stem}.json").read_text())["theta_gt"])
        pairs.append((read_image(data.image_path(row["study_id"])), read_image(data.image_path(row["ref_id"])),
                      rendering.invert_theta(theta_gt), change))
    assert len(pairs) >= 6
    return pairs


def _contrast(main: np.ndarray, ref: np.ndarray, theta: np.ndarray, change: np.ndarray) -> float:
    """Mean |difference| where the findings changed over the 95th percentile of it in the unchanged body."""
    result = temporal_subtraction(main, ref, theta)
    magnitude = np.abs(result.difference)
    changed = cv2.resize(change.astype(np.uint8), magnitude.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
    return float(magnitude[changed].mean() / np.percentile(magnitude[~changed & result.body], 95))


def test_a_drawn_in_change_stands_out_of_a_registered_synthetic_pair(synthetic_pairs) -> None:
    registered = [_contrast(main, ref, theta, change) for main, ref, theta, change in synthetic_pairs]
    unregistered = [_contrast(main, ref, IDENTITY, change) for main, ref, _, change in synthetic_pairs]
    # measured (seed 5, 128 px, 9 changed pairs): median 3.2 registered, 1.0 unregistered
    assert np.median(registered) > 2.5
    assert sum(ratio > 2.0 for ratio in registered) >= 0.7 * len(registered)
    assert np.median(unregistered) < 1.5  # the registration is what makes the change stand out


def test_the_screen_and_the_review_picture_carry_the_subtraction() -> None:
    from PIL import Image

    ref = _chest(200)
    main = ref.copy()
    cv2.circle(main, (60, 100), 12, 0.7, -1)
    masks = {name: np.full((16, 16), 0.5, np.float32) for name in ("U", "F", "M")}
    views = rendering.render_views(main, ref, IDENTITY, masks, rendering.Display(), 0.5)
    assert views.subtraction is not None and views.subtraction.shape == (200, 200, 3)
    assert views.subtraction[100, 60, 0] > views.subtraction[100, 60, 2] + 60  # the new opacity is red
    with Image.open(io.BytesIO(rendering.review_png(views, "M", 0.5))) as picture:
        width = picture.size[0]
    without = rendering.Views(views.reference, views.main, views.registered, views.reference_plain,
                              views.mask_strip, views.mask_tiles)
    with Image.open(io.BytesIO(rendering.review_png(without, "M", 0.5))) as picture:
        assert width > 1.4 * picture.size[0]  # reference | main | subtraction


def test_the_colour_scale_spans_the_documented_range() -> None:
    ends = subtraction_rgb(np.array([[-SUBTRACTION_RANGE, SUBTRACTION_RANGE, 2 * SUBTRACTION_RANGE]]))[0]
    assert ends[0, 2] > ends[0, 0] and ends[1, 0] > ends[1, 2]
    assert np.array_equal(ends[1], ends[2])  # beyond the range: clipped to full colour
