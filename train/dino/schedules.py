"""Per-step schedules of DINO: learning rate, teacher momentum and teacher temperature."""

from __future__ import annotations

import numpy as np


def cosine_schedule(start: float, end: float, total_steps: int, warmup_steps: int = 0) -> np.ndarray:
    """Linear warmup from 0 to ``start`` over ``warmup_steps``, then a half cosine from ``start`` to ``end``.

    Args:
        start: value after warmup.
        end: value at the last step.
        total_steps: length of the schedule.
        warmup_steps: steps of linear warmup (clipped to the schedule's length).

    Returns:
        (total_steps,) float array.
    """
    warmup_steps = min(warmup_steps, total_steps)
    warmup = np.linspace(0.0, start, warmup_steps, endpoint=False)
    steps = np.arange(total_steps - warmup_steps)
    denominator = max(len(steps) - 1, 1)
    cosine = end + 0.5 * (start - end) * (1.0 + np.cos(np.pi * steps / denominator))
    return np.concatenate([warmup, cosine])


def teacher_temperature_schedule(start: float, end: float, total_steps: int, warmup_steps: int) -> np.ndarray:
    """Linear warmup of the teacher temperature from ``start`` to ``end``, then constant (DINO: 0.04 -> 0.07)."""
    warmup_steps = min(warmup_steps, total_steps)
    return np.concatenate([np.linspace(start, end, warmup_steps), np.full(total_steps - warmup_steps, end)])
