"""The package imports cheaply and exposes the contract names."""

import importlib
import subprocess
import sys


def test_public_names_are_exported():
    core = importlib.import_module("diffvqa_core")
    assert set(core.__all__) >= {"DiffVQAConfig", "DiffVQAModel", "DiffVQAPipeline"}


def test_train_cli_lists_its_commands():
    result = subprocess.run([sys.executable, "-m", "train", "--help"], capture_output=True, text=True, check=True)
    for command in ("synth", "fit", "evaluate", "pretrain-prior"):
        assert command in result.stdout
