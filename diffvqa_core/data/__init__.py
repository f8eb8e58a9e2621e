"""Benchmark data: the Medical-Diff-VQA reader and the synthetic longitudinal generator.

``from diffvqa_core.data import DiffVQADataset`` (imports torch on first use); the generator
(``diffvqa_core.data.synthetic``) never imports torch.
"""

from __future__ import annotations

__all__ = ["DiffVQADataset", "generate_benchmark"]


def __getattr__(name: str):
    if name == "DiffVQADataset":
        from diffvqa_core.data.reader import DiffVQADataset

        return DiffVQADataset
    if name == "generate_benchmark":
        from diffvqa_core.data.synthetic import generate_benchmark

        return generate_benchmark
    raise AttributeError(f"module 'diffvqa_core.data' has no attribute {name!r}")
