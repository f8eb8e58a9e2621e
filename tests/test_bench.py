"""Smoke run of the speed benchmark (``python -m diffvqa_core.bench``) on the tiny preset: not a timed test.

It checks that one run produces every figure of issue 7 in its JSON, with finite ratios; how fast the
model is, is the benchmark's business, not this test's.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
STAGES = ("registration", "prior", "image_encoder_unmasked", "change_encoder", "adaptive_mask", "fusion",
          "image_encoder_masked",
          "question_encoder", "decoder_prefill", "decode_token")
END_TO_END = ("analyze", "analyze_cached_pair_new_question", "reanalyze", "refusion")


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "diffvqa_core.bench", "--preset", "tiny", "--repeats", "1", "--tokens", "4",
               "--warmup", "0", "--bf16", "--agreement-cases", "2", "--json", str(out)]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text()), result.stdout


def test_limits_are_measured(bench):
    limits = bench[0]["limits"]
    assert limits["matmul_gflops"]["float32"] > 0
    assert limits["copy_gb_per_s"] > 0 and limits["read_gb_per_s"] > 0
    assert isinstance(limits["bf16_native"], bool)


@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_every_stage_has_flops_time_floor_and_finite_ratio(bench, mode):
    table = bench[0][mode]
    assert set(table["stages"]) == set(STAGES)
    for name, row in table["stages"].items():
        assert row["gflop"] >= 0 and row["time_ms"] > 0, name
        # fusion: M = lambda U + (1 - lambda) F, a few elementwise FLOPs, below counting; change_encoder (not in
        # the paper) does no work in a preset without one, as this random-init tiny model is
        if name != "fusion" and not (name == "change_encoder" and row["gflop"] == 0):
            assert math.isfinite(row["time_over_floor"]) and row["time_over_floor"] > 0, name
    for name in ("prior", "image_encoder_unmasked", "image_encoder_masked", "decoder_prefill", "decode_token"):
        assert table["stages"][name]["gflop"] > 0, name
    token = table["stages"]["decode_token"]
    assert token["weight_bytes"] > 0 and math.isfinite(token["time_over_read_floor"])
    assert math.isfinite(table["encoder_stages"]["fraction_of_matmul_rate"])


@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_end_to_end_times_are_reported(bench, mode):
    e2e = bench[0][mode]["end_to_end"]
    assert set(e2e) == set(END_TO_END)
    for name in END_TO_END:
        assert e2e[name]["best_ms"] > 0 and e2e[name]["median_ms"] > 0, name
    assert e2e["analyze"]["tokens"] and e2e["reanalyze"]["tokens"]


def test_bf16_speedup_and_agreement_are_reported(bench):
    bf16 = bench[0]["bf16"]
    assert all(math.isfinite(v) and v > 0 for v in bf16["speedup"].values())
    agreement = bf16["agreement"]
    assert agreement["cases"] == 2 and 0.0 <= agreement["same_answer_fraction"] <= 1.0
    assert math.isfinite(agreement["fused_mask_max_abs_diff"])


def test_peak_memory_of_bench_and_fresh_app_process(bench):
    memory = bench[0]["memory"]
    assert memory["bench_peak_rss_bytes"] > 0
    assert memory["app_process"]["peak_rss_bytes"] >= memory["app_process"]["peak_rss_bytes_after_build"] > 0


def test_every_target_has_a_finite_value_and_a_verdict(bench):
    targets = bench[0]["targets"]
    assert len(targets) == 5
    for label, target in targets.items():
        assert math.isfinite(target["value"]) and isinstance(target["met"], bool), label


def test_report_prints_each_time_beside_its_floor(bench):
    text = bench[1]
    for word in ("machine limits", "time/floor", "decode_token", "reanalyze", "re-fusion", "bf16 speed-up",
                 "peak memory", "targets"):
        assert word in text, word
