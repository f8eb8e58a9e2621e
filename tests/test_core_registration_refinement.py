"""The ECC refinement of the predicted warp (not in the paper): it finds a known pose from a rough start, keeps the
start when the search runs off, and runs only at inference, only when the config asks for it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffvqa_core.bench import test_pair as smooth_pair
from diffvqa_core.data import affine
from diffvqa_core.metrics import corner_displacement
from diffvqa_core.registration import IDENTITY_THETA, warp
from diffvqa_core.registration_refinement import (
    corner_move_px,
    pixels_to_theta,
    refine_pair,
    refine_theta,
    theta_to_pixels,
)

SIDE = 128
IDENTITY = np.array(IDENTITY_THETA).reshape(2, 3)


def _misaligned_pair(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(main, ref, theta_gt): the main film is the reference content warped by a random pose."""
    ref = smooth_pair(seed, size=SIDE)[0]
    pose = affine.random_pose(np.random.default_rng(seed), max_rotation_deg=3, max_log_scale=0.03, max_shift=0.04)
    main = warp(torch.from_numpy(ref)[None, None], torch.tensor(pose[None], dtype=torch.float32))[0, 0].numpy()
    return main, ref, pose


def test_pixel_and_normalised_warps_convert_both_ways() -> None:
    np.testing.assert_allclose(theta_to_pixels(IDENTITY, SIDE), IDENTITY, atol=1e-12)
    pose = affine.random_pose(np.random.default_rng(1), max_rotation_deg=5, max_log_scale=0.05, max_shift=0.05)
    np.testing.assert_allclose(pixels_to_theta(theta_to_pixels(pose, SIDE), SIDE), pose, atol=1e-12)
    shift = np.array([[1.0, 0.0, 2.0 / SIDE], [0.0, 1.0, 0.0]])  # one pixel in normalised units
    np.testing.assert_allclose(theta_to_pixels(shift, SIDE)[:, 2], [1.0, 0.0], atol=1e-9)
    assert corner_move_px(IDENTITY, shift, SIDE) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ecc_finds_a_known_pose_from_the_identity(seed: int) -> None:
    main, ref, pose = _misaligned_pair(seed)
    before = corner_displacement(pose, None, height=SIDE, width=SIDE)
    refined = refine_pair(main, ref, IDENTITY, max_shift_px=10.0)
    after = corner_displacement(pose, refined, height=SIDE, width=SIDE)
    assert before > 1.0 and after < 0.2 * before


def test_a_search_that_moves_further_than_allowed_keeps_the_start() -> None:
    main, ref, pose = _misaligned_pair(3)
    assert corner_displacement(pose, None, height=SIDE, width=SIDE) > 1.0
    np.testing.assert_array_equal(refine_pair(main, ref, IDENTITY, max_shift_px=0.05), IDENTITY)
    flat = np.full((SIDE, SIDE), 0.5, np.float32)  # nothing to align: ECC fails, the start stays
    np.testing.assert_array_equal(refine_pair(flat, flat, IDENTITY, max_shift_px=10.0), IDENTITY)


def test_refine_theta_works_on_a_batch_and_keeps_device_and_dtype() -> None:
    pairs = [_misaligned_pair(seed) for seed in (4, 5)]
    main = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None].expand(2, 3, SIDE, SIDE)
    ref = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None].expand(2, 3, SIDE, SIDE)
    start = torch.tensor(IDENTITY, dtype=torch.float32).expand(2, 2, 3).clone().requires_grad_()
    refined = refine_theta(main, ref, start, max_shift_px=10.0)
    assert refined.shape == (2, 2, 3) and refined.dtype == torch.float32 and not refined.requires_grad
    for (_, _, pose), theta in zip(pairs, refined):
        before = corner_displacement(pose, None, height=SIDE, width=SIDE)
        assert corner_displacement(pose, theta.double().numpy(), height=SIDE, width=SIDE) < 0.2 * before


def test_the_model_refines_only_at_inference_and_only_when_asked() -> None:
    from diffvqa_core.config import DiffVQAConfig
    from tests.tiny_model_support import build_tiny_model

    main, ref, _ = _misaligned_pair(6)
    size = 192
    as_input = [torch.nn.functional.interpolate(torch.from_numpy(x)[None, None], size=(size, size), mode="bilinear")
                .expand(1, 3, size, size) for x in (main, ref)]
    refining, plain = build_tiny_model(registration_refinement="ecc"), build_tiny_model()
    plain.load_state_dict(refining.state_dict())
    with torch.no_grad():
        network = plain.eval().register(*as_input).theta
        refining.train()
        assert torch.equal(refining.register(*as_input).theta, network)
        refining.eval()
        assert not torch.allclose(refining.register(*as_input).theta, network)
    assert DiffVQAConfig.from_preset("paper").registration_refinement == "none"
    with pytest.raises(ValueError, match="registration_refinement"):
        DiffVQAConfig(registration_refinement="sift")
    with pytest.raises(ValueError, match="registration_refinement_max_px"):
        DiffVQAConfig(registration_refinement_max_px=0.0)
