"""A tiny-preset model built the same way by every core test that needs one."""

from __future__ import annotations

import dataclasses

import torch

from diffvqa_core import DiffVQAConfig, DiffVQAModel


def build_tiny_model(**overrides) -> DiffVQAModel:
    """The tiny preset with ``overrides`` applied, seeded so every test module gets the same weights."""
    torch.manual_seed(0)
    return DiffVQAModel(dataclasses.replace(DiffVQAConfig.from_preset("tiny"), **overrides))
