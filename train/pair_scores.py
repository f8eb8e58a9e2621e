"""Registration and mask-localisation scores on data with synthetic ground truth (one entry per pair).

Several questions share an image pair, and theta and the masks do not depend on the question, so each
distinct (subject, main study, reference study) pair is scored once:

- registration: mean corner displacement in pixels before (identity) and after the predicted theta
  (``diffvqa_core.metrics.corner_displacement``, eq. 1-2);
- mask: on pairs whose change mask is non-empty, the pointing game (fraction of pairs whose mask maximum
  lies inside the change) and the pixel AUROC against the change mask, for the fused mask M (eq. 7), the
  DINO prior U (eq. 4) and the adaptive mask F (eq. 6).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from train.answering import BatchAnswers

MASKS = {"fused": "fused_mask", "prior": "prior_mask", "adaptive": "adaptive_mask"}


class PairScores:
    """Accumulates ground truth and predictions batch by batch; :meth:`summary` scores them."""

    def __init__(self) -> None:
        self.seen: set[tuple[Any, Any, Any]] = set()
        self.before_px: list[float] = []
        self.after_px: list[float] = []
        self.masks: dict[str, list[np.ndarray]] = {name: [] for name in MASKS}
        self.changes: list[np.ndarray] = []

    def add(self, batch: dict[str, Any], result: BatchAnswers) -> None:
        """Records the pairs of a collated batch (with ``gt_theta`` and ``change_mask``) not seen yet."""
        from diffvqa_core.metrics import corner_displacement

        height, width = batch["main"].shape[-2:]
        for i, key in enumerate(zip(batch["subject_id"], batch["study_id"], batch["ref_id"])):
            if key in self.seen:
                continue
            self.seen.add(key)
            gt_theta = batch["gt_theta"][i].double().numpy()
            theta = result.theta[i].detach().double().cpu().numpy()
            self.before_px.append(corner_displacement(gt_theta, None, height=height, width=width))
            self.after_px.append(corner_displacement(gt_theta, theta, height=height, width=width))
            change = batch["change_mask"][i].numpy() > 0.5
            if change.any():
                self.changes.append(change)
                for name, attribute in MASKS.items():
                    mask = getattr(result, attribute)[i, 0].detach().float().cpu().numpy()
                    self.masks[name].append(mask.astype(np.float16))

    def summary(self) -> dict[str, dict[str, Any]]:
        """Returns {"registration": {...}, "mask": {...}} as described in the module docstring."""
        from diffvqa_core.metrics import mask_auroc, pointing_game

        scores: dict[str, dict[str, Any]] = {
            "registration": {"pairs": len(self.before_px), "before_px": _mean(self.before_px),
                             "after_px": _mean(self.after_px)},
            "mask": {"changed_pairs": len(self.changes)},
        }
        if self.changes:
            for name, masks in self.masks.items():
                masks32 = [m.astype(np.float32) for m in masks]
                hits = [pointing_game(m, c) for m, c in zip(masks32, self.changes)]
                scores["mask"][name] = {"pointing_game": float(np.mean(hits)),
                                        "auroc": mask_auroc(masks32, self.changes)}
        return scores


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None
