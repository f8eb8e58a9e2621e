"""What a reviewer sees of one analysis: the answer, the warp and the masks as plain arrays (no torch here).

``diffvqa_core.pipeline.Analysis`` adds the features a re-answer reuses; the review app's model process sends
``review_app.model_process.RemoteAnalysis``, these fields and a handle to those features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the review app starts its model process before numpy is imported
    import numpy as np


@dataclass
class AnalysisView:
    """One answered case, with everything a reviewer looks at (HxW arrays at the model input size).

    Attributes:
        answer: the generated answer.
        question: the question as asked.
        lam: fusion weight lambda used for ``fused_mask`` and the answer.
        theta: (2, 3) affine parameters (output -> input coordinates, see ``registration``).
        main_image: (S, S) float32 main visit in [0, 1].
        ref_image: (S, S) float32 reference visit in [0, 1].
        registered_main: (S, S) float32 main visit after registration.
        prior_mask: (S, S) float32 DINO union U in [0, 1].
        adaptive_mask: (S, S) float32 adaptive mask F in [0, 1].
        fused_mask: (S, S) float32 M in [0, 1].
        num_beams: beams used for decoding.
        answered_by: "decoder", or "change heads" when the change encoder's own reading answered
            (``difference_readout``, not in the paper).
    """

    answer: str
    question: str
    lam: float
    theta: np.ndarray
    main_image: np.ndarray
    ref_image: np.ndarray
    registered_main: np.ndarray
    prior_mask: np.ndarray
    adaptive_mask: np.ndarray
    fused_mask: np.ndarray
    num_beams: int
    answered_by: str = "decoder"
