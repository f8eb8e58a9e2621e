"""Test-wide settings: never reach for the network, keep torch to the machine's two cores."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_PAIRS = REPO_ROOT.parent / "shared" / "data" / "mhh_pairs"


@pytest.fixture(scope="session")
def mhh_pairs_dir() -> Path:
    """The 40 real longitudinal pairs (CC BY 3.0), read in place from ../shared, never copied in."""
    if not (SHARED_PAIRS / "manifest.csv").exists():
        pytest.fail(f"real radiograph pairs not found at {SHARED_PAIRS}: CI lays ../shared beside the checkout")
    return SHARED_PAIRS
