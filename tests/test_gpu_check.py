"""``python -m train gpu-check --device cpu``: every step of the GPU check runs, on the tiny preset (issue 16, part 6).

The speeds it prints on a CPU say nothing about a GPU; this test checks that the check itself works end to end
(two stages with validation, a resume, batched evaluation, analyze, the projection), so that the one run on a
GPU does not fail on a path no one has run.
"""

from __future__ import annotations

import json
import math

import pytest

from train.__main__ import main
from train_support import one_torch_thread

# Not marked slow although it takes ~1-2 min on 2 busy cores (it trains, resumes, evaluates and scores with Java 3
# times): issue 16 asks for the GPU check to run on CPU in CI, and CI runs the default selection.


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    with one_torch_thread():
        assert main(["gpu-check", "--device", "cpu", "--out", str(out)]) == 0
    return out, json.loads((out / "gpu_check.json").read_text())


def test_both_stages_train_validate_and_resume(checked):
    _, result = checked
    assert result["device"] == "cpu" and result["plan"]["preset"] == "tiny"
    assert result["steps"] == 2 * result["plan"]["steps_per_stage"] == 4 and result["resumed_at_step"] == 3
    assert [v["epoch"] for v in result["validation"]] == [0, 1]
    assert result["validation"][0]["lambda"] > result["validation"][1]["lambda"]
    assert all(result["train_samples_per_s"][f"stage{s}"] > 0 for s in (1, 2))


def test_evaluation_analyze_memory_and_projection_are_measured(checked):
    out, result = checked
    assert result["evaluate"]["rows"] == result["plan"]["eval_rows"] == 8 and result["evaluate"]["cases_per_s"] > 0
    assert result["batched_model_only"]["cases"] == 8 and result["batched_model_only"]["cases_per_s"] > 0
    assert result["analyze"]["analyze_ms"] > 0
    assert all(gb > 0 for gb in result["peak_memory_gb"].values())
    assert result["peak_memory_kind"] == "RSS high-water mark"
    projection = result["paper_schedule_projection"]
    assert math.isfinite(projection["total_hours"]) and projection["total_hours"] > projection["train_hours"] > 0
    assert (out / "evaluate" / "metrics.json").is_file() and (out / "run" / "best" / "model.safetensors").is_file()
    assert "targets" not in result  # the targets are for a GPU


def test_cuda_without_cuda_is_a_clear_error(monkeypatch, tmp_path, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["gpu-check", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "--device cuda" in capsys.readouterr().err
