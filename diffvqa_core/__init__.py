"""diffvqa_core: attention-consistent longitudinal chest X-ray difference VQA.

Public surface (see shared/design/ARCHITECTURE.md, "Contracts")::

    from diffvqa_core import DiffVQAConfig, DiffVQAModel, DiffVQAPipeline

Importing this package is cheap: the model and pipeline load on first attribute access.
"""

from __future__ import annotations

import os as _os

# No machine of this project reaches the model hub; never wait on it unless a user opts back in.
_os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

__all__ = ["DiffVQAConfig", "DiffVQAModel", "DiffVQAPipeline", "Analysis"]


def __getattr__(name: str):
    if name == "DiffVQAConfig":
        from diffvqa_core.config import DiffVQAConfig

        return DiffVQAConfig
    if name == "DiffVQAModel":
        from diffvqa_core.model import DiffVQAModel

        return DiffVQAModel
    if name in ("DiffVQAPipeline", "Analysis"):
        from diffvqa_core import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'diffvqa_core' has no attribute {name!r}")
