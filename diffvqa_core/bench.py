"""Inference speed against this machine's own limits: ``python -m diffvqa_core.bench``.

One run measures, on this machine and in this process:

* the limits: dense matmul rate (fp32, and bf16 where the hardware has it) and memory bandwidth
  (``machine_limits``);
* the FLOPs of one ``analyze`` per stage (``torch.utils.flop_counter.FlopCounterMode``): registration, the
  DINO prior (2 passes), phi on the unmasked pair and on the masked pair (2 Swin passes each), the
  question encoder, the decoder prefill and one decoded token;
* the time of each stage, of ``analyze`` (every stage, nothing cached), of ``reanalyze`` (a new lambda:
  fusion, masked pair, question, decoding), of the overlay-only re-fusion (``pipe.fuse``) and per decoded
  token;
* peak memory: this process's RSS high-water mark, and that of a fresh process that builds the pipeline
  and analyses one case (what the review app needs);
* with ``--bf16``: the same times under the pipeline's opt-in bf16 mode, its speed-up, and how often its
  answers agree with fp32.

Every time is printed beside its floor: FLOPs / matmul rate for compute-bound stages, weight bytes /
bandwidth for a decoded token (GPT-2 reads every weight once per token; the KV cache avoids recomputing
the prefix). ``time / floor`` is 1.0 at the machine's limit.

``--device cuda`` (or ``auto``, the default, on a machine with a GPU) measures the GPU instead: its own matmul rate
and bandwidth, times taken after ``torch.cuda.synchronize``, and its peak allocated memory beside the RSS.

The model has random weights (``--checkpoint DIR`` benchmarks a trained one). With random weights the
paper preset has no GPT-2 tokenizer on this offline machine; the decoder's vocabulary is then padded to
GPT-2's (50257 + 4 added tokens) so that the lm_head, the largest single matmul of each decoded token,
costs what it costs in the real model (``--decoder-vocab``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on the hub (a tokenizer lookup retries ~46 s)
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from diffvqa_core.machine_limits import (  # noqa: E402
    MachineLimits,
    bf16_supported,
    measure_machine_limits,
    measure_matmul_gflops,
)

GPT2_VOCAB = 50257 + 4  # GPT-2's tokenizer plus <pad> <img> <qtn> <ans>
QUESTION = "what has changed compared to the reference image?"
AGREEMENT_QUESTIONS = (
    "what has changed compared to the reference image?",
    "is there any pleural effusion?",
    "where is the pleural effusion located?",
    "what level is the cardiomegaly?",
)
ENCODER_STAGES = ("registration", "prior", "image_encoder_unmasked", "image_encoder_masked", "question_encoder")
# change_encoder (not in the paper) takes no time in a model without one.
STAGES = (ENCODER_STAGES[:3] + ("change_encoder", "adaptive_mask", "fusion") + ENCODER_STAGES[3:]
          + ("decoder_prefill", "decode_token"))
TARGETS = {  # name -> (measured key, comparison, threshold): the targets of issue 7, paper preset, fp32
    "encoder stages at >= 80% of the matmul rate": ("encoder_fraction_of_matmul_rate", ">=", 0.8),
    "per decoded token <= 1.3 x weight-bytes/bandwidth floor": ("decode_token_time_over_floor", "<=", 1.3),
    "reanalyze <= 0.5 x analyze": ("reanalyze_over_analyze", "<=", 0.5),
    "overlay-only re-fusion <= 50 ms": ("refusion_ms", "<=", 50.0),
    "app-process peak memory <= 3.5 GB": ("app_peak_rss_gb", "<=", 3.5),
}


# ------------------------------------------------------------------------------------------- FLOPs
def _attention_flops(batch_heads: int, queries: int, keys: int, head_dim: int) -> int:
    return 4 * batch_heads * queries * keys * head_dim  # Q K^T and attention @ V


def _sdpa_cpu_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """aten._scaled_dot_product_flash_attention_for_cpu (no formula in torch's registry): (..., L, E)."""
    return _attention_flops(math.prod(query[:-2]), query[-2], key[-2], query[-1])


def _addmm_activation_flops(bias, a, b, *args, out_shape=None, **kwargs) -> int:
    """aten._addmm_activation: addmm fused with ReLU/GELU."""
    return 2 * a[0] * a[1] * b[1]


def _encoder_layer_flops(src, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias, *args,
                         out_shape=None, **kwargs) -> int:
    """aten._transformer_encoder_layer_fwd (nn.TransformerEncoderLayer's inference fast path)."""
    ffn_1, ffn_2 = args[7], args[9]  # ffn_weight_1, ffn_weight_2 after use_gelu .. norm_bias_2
    tokens = math.prod(src[:-1])
    linear = qkv_weight[0] * qkv_weight[1] + proj_weight[0] * proj_weight[1] + ffn_1[0] * ffn_1[1] + ffn_2[0] * ffn_2[1]
    return 2 * tokens * linear + _attention_flops(math.prod(src[:-2]) * num_heads, src[-2], src[-2],
                                                  embed_dim // num_heads)


def _mha_flops(query, key, value, embed_dim, num_head, qkv_weight, qkv_bias, proj_weight, proj_bias, *args,
               out_shape=None, **kwargs) -> int:
    """aten._native_multi_head_attention (nn.MultiheadAttention's inference fast path)."""
    tokens = math.prod(query[:-1])
    linear = qkv_weight[0] * qkv_weight[1] + proj_weight[0] * proj_weight[1]
    return 2 * tokens * linear + _attention_flops(math.prod(query[:-2]) * num_head, query[-2], key[-2],
                                                  embed_dim // num_head)


FLOP_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
    torch.ops.aten._addmm_activation: _addmm_activation_flops,
    torch.ops.aten._transformer_encoder_layer_fwd: _encoder_layer_flops,
    torch.ops.aten._native_multi_head_attention: _mha_flops,
}


# ----------------------------------------------------------------------------------------- helpers
def _now() -> float:
    """The time after the GPU's queued work is done (stage times on a GPU are otherwise launch times)."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


def gpu_peak_bytes(device: torch.device) -> int | None:
    """Peak memory allocated by PyTorch on ``device`` (None on a CPU)."""
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def peak_rss_bytes() -> int:
    """This process's resident-set high-water mark, in bytes.

    Linux: ``VmHWM`` of /proc/self/status, which belongs to this program image; ``ru_maxrss`` would carry
    over the parent's peak across fork + exec. Elsewhere: ``resource.getrusage`` (bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _summary(seconds: list[float]) -> dict[str, float]:
    """Best (the figure compared with floors, as the limits are best-of too) and median, in ms."""
    return {"best_ms": 1e3 * min(seconds), "median_ms": 1e3 * statistics.median(seconds), "runs": len(seconds)}


def test_pair(seed: int, size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic pair of smooth grey images (float32 in [0, 1]), different for each seed."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((2, size // 32, size // 32)).astype(np.float32)
    images = []
    for plane in coarse:
        image = np.kron(plane, np.ones((32, 32), np.float32))
        images.append(np.clip(0.8 * image + 0.2 * rng.random((size, size), dtype=np.float32), 0.0, 1.0))
    return images[0], images[1]


def build_pipeline(preset: str, checkpoint: str | None, decoder_vocab: int | None):
    """The fp32 pipeline to measure: a checkpoint, or the preset with random weights (seed 0)."""
    from diffvqa_core import DiffVQAConfig, DiffVQAPipeline

    if checkpoint:
        return DiffVQAPipeline.from_pretrained(None if checkpoint == "demo" else checkpoint)
    torch.manual_seed(0)
    pipe = DiffVQAPipeline.from_config(DiffVQAConfig.from_preset(preset).random_init())
    gpt2 = pipe.model.decoder.gpt2
    if decoder_vocab and decoder_vocab > gpt2.config.vocab_size:
        gpt2.resize_token_embeddings(decoder_vocab, mean_resizing=False)
    return pipe


def decoder_weight_bytes(model, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of GPT-2 weights read per decoded token: every block, the final norm and the lm_head.

    Under bf16 autocast the matrices are read as bf16 (cast once per case) and the norms stay fp32.
    """
    gpt2 = model.decoder.gpt2
    params = list(gpt2.transformer.h.parameters()) + list(gpt2.transformer.ln_f.parameters())
    params.append(gpt2.get_output_embeddings().weight)
    size = 2 if dtype == torch.bfloat16 else 4
    return sum(p.numel() * (size if p.ndim >= 2 else 4) for p in params)


def kv_cache_bytes(model, context: int) -> int:
    """Bytes of keys and values (fp32) attended over by one token at ``context`` positions."""
    cfg = model.decoder.gpt2.config
    return 2 * cfg.n_layer * context * cfg.n_embd * 4


# -------------------------------------------------------------------------------------- the stages
class StageRecorder:
    """Runs stages one at a time, timing each call or counting its FLOPs."""

    def __init__(self, count_flops: bool) -> None:
        self.count_flops = count_flops
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self.flops: dict[str, list[int]] = defaultdict(list)

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        if self.count_flops:
            with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counter:
                result = fn()
            self.flops[name].append(counter.get_total_flops())
            return result
        start = _now()
        result = fn()
        self.seconds[name].append(_now() - start)
        return result


def run_stages(model, main: torch.Tensor, ref: torch.Tensor, question: str, lam: float, tokens: int,
               record: StageRecorder) -> int:
    """One analyze, stage by stage, exactly as ``DiffVQAPipeline.analyze`` runs them (inference path).

    Decodes ``tokens`` tokens whatever they are (no stop at the end-of-answer token), so that the time per
    token is measured over a fixed count. Returns the prefix length.
    """
    from diffvqa_core.model import VisualState

    registration = record("registration", lambda: model.register(main, ref))
    prior = record("prior", lambda: model.prior_mask(registration.registered_main, ref))
    features = record("image_encoder_unmasked", lambda: model.encode(torch.cat([registration.registered_main, ref])))
    features_main, features_ref = features.chunk(2)
    change = record("change_encoder", lambda: model.read_change(registration.registered_main, ref))
    adaptive = record("adaptive_mask", lambda: model.adaptive_mask(features_main, features_ref, change))
    state = VisualState(registration, ref, features_main, features_ref, prior, adaptive, change)
    fused = record("fusion", lambda: model.fuse(prior.union, adaptive.fused, lam))
    masked = record("image_encoder_masked", lambda: model.masked_encode(state, fused, with_mask_image=False))
    text = model.tokenize([question])
    encoded = record("question_encoder", lambda: model.encode_question(text["question_ids"], text["question_mask"]))
    prefix = model.decoder.build_prefix(*model.image_slots(masked, state), encoded, text["question_mask"])
    decoding = record("decoder_prefill", lambda: model.decoder.prefill(prefix))
    for _ in range(tokens - 1):
        token = decoding.logits.float().argmax(-1)
        decoding = record("decode_token", lambda: model.decoder.step(decoding, token))  # noqa: B023
    return prefix.embeddings.shape[1]


class ForwardCounter:
    """Counts GPT-2 forward calls (prefill + one per further token): tokens decoded by an analyze."""

    def __init__(self, model) -> None:
        self.calls = 0
        self._hook = model.decoder.gpt2.register_forward_pre_hook(self._count)

    def _count(self, *_: Any) -> None:
        self.calls += 1

    def close(self) -> None:
        self._hook.remove()


def measure_end_to_end(pipe, repeats: int, tokens: int, warmup: int = 1, seed: int = 0) -> dict[str, Any]:
    """analyze (nothing cached), analyze of a new question on a cached pair, reanalyze, fuse."""
    counter = ForwardCounter(pipe.model)
    try:
        analyze, analyze_tokens, cached, reanalyze, reanalyze_tokens, refuse = [], [], [], [], [], []
        analysis = None
        for i in range(warmup + repeats):  # warm-up rounds first (allocator, thread pool, lazy inits)
            timed = i >= warmup
            main, ref = test_pair(seed + i)
            pipe.clear_cache()
            counter.calls = 0
            start = _now()
            analysis = pipe.analyze(main, ref, QUESTION, max_new_tokens=tokens)
            elapsed = _now() - start
            if timed:
                analyze.append(elapsed)
                analyze_tokens.append(counter.calls)
            start = _now()
            pipe.analyze(main, ref, AGREEMENT_QUESTIONS[1], max_new_tokens=tokens)
            if timed:
                cached.append(_now() - start)
            counter.calls = 0
            start = _now()
            pipe.reanalyze(analysis, lam=0.3 if i % 2 else 0.7, max_new_tokens=tokens)
            if timed:
                reanalyze.append(_now() - start)
                reanalyze_tokens.append(counter.calls)
        for j in range(max(20, 5 * repeats)):
            start = _now()
            pipe.fuse(analysis, (j % 10) / 10)
            refuse.append(_now() - start)
    finally:
        counter.close()
    return {
        "analyze": {**_summary(analyze), "tokens": analyze_tokens},
        "analyze_cached_pair_new_question": _summary(cached),
        "reanalyze": {**_summary(reanalyze), "tokens": reanalyze_tokens},
        "refusion": _summary(refuse),
    }


def measure_stages(model, repeats: int, tokens: int, size: int, autocast: torch.dtype | None,
                   warmup: int = 1) -> dict[str, Any]:
    """FLOPs (one counted run) and best-of-``repeats`` time of each stage."""
    from diffvqa_core import imaging

    main_array, ref_array = test_pair(100)
    main = imaging.to_model_input(main_array, size).unsqueeze(0)
    ref = imaging.to_model_input(ref_array, size).unsqueeze(0)
    from diffvqa_core.pipeline import inference_context

    device = next(model.parameters()).device
    main, ref = main.to(device), ref.to(device)
    dtype = autocast or torch.float32
    flops = StageRecorder(count_flops=True)
    timer = StageRecorder(count_flops=False)
    with inference_context(dtype, device):  # exactly as the pipeline runs: one region per case
        prefix_len = run_stages(model, main, ref, QUESTION, 0.5, 2, flops)
    for i in range(warmup + repeats):  # warm-up rounds first
        with inference_context(dtype, device):
            run_stages(model, main, ref, QUESTION, 0.5, tokens, StageRecorder(False) if i < warmup else timer)
    return {
        "prefix_tokens": prefix_len,
        "flops": {name: statistics.mean(values) for name, values in flops.flops.items()},
        "seconds": {name: min(values) for name, values in timer.seconds.items()},
        "median_seconds": {name: statistics.median(values) for name, values in timer.seconds.items()},
    }


def stage_table(stages: dict[str, Any], limits: MachineLimits, model, dtype: torch.dtype) -> dict[str, Any]:
    """Each stage's time beside its floor: FLOPs / matmul rate, or weight bytes / bandwidth per token."""
    rate = limits.matmul_gflops["bfloat16" if dtype == torch.bfloat16 else "float32"] * 1e9
    rows = {}
    for name in STAGES:
        seconds = stages["seconds"][name]
        flops = stages["flops"][name]
        row = {"gflop": flops / 1e9, "time_ms": 1e3 * seconds, "median_ms": 1e3 * stages["median_seconds"][name],
               "gflop_per_s": flops / seconds / 1e9 if seconds > 0 else float("nan")}
        if name == "decode_token":
            weight_bytes = decoder_weight_bytes(model, dtype)
            row["weight_bytes"] = weight_bytes
            row["kv_cache_bytes"] = kv_cache_bytes(model, stages["prefix_tokens"])
            row["floor"] = "weight bytes / copy bandwidth"
            row["floor_ms"] = 1e3 * weight_bytes / (limits.copy_gb_per_s * 1e9)
            row["floor_read_ms"] = 1e3 * weight_bytes / (limits.read_gb_per_s * 1e9)
            row["time_over_read_floor"] = seconds * 1e3 / row["floor_read_ms"]
        else:
            row["floor"] = "FLOPs / matmul rate"
            row["floor_ms"] = 1e3 * flops / rate
        row["time_over_floor"] = row["time_ms"] / row["floor_ms"] if row["floor_ms"] > 0 else float("nan")
        rows[name] = row
    encoder_flops = sum(stages["flops"][n] for n in ENCODER_STAGES)
    encoder_seconds = sum(stages["seconds"][n] for n in ENCODER_STAGES)
    encoder = {"gflop": encoder_flops / 1e9, "time_ms": 1e3 * encoder_seconds,
               "floor_ms": 1e3 * encoder_flops / rate, "gflop_per_s": encoder_flops / encoder_seconds / 1e9}
    encoder["fraction_of_matmul_rate"] = encoder["gflop_per_s"] * 1e9 / rate
    return {"stages": rows, "encoder_stages": encoder,
            "analyze_gflop": sum(stages["flops"][n] for n in STAGES if n != "decode_token") / 1e9}


# ------------------------------------------------------------------------------------ bf16 agreement
def answer_agreement(fp32_pipe, bf16_pipe, cases: int, tokens: int) -> dict[str, Any]:
    """Answers of the fp32 and bf16 pipelines on the same cases: exact agreement and mask differences."""
    same, mask_diff, theta_diff, rows = 0, 0.0, 0.0, []
    for i in range(cases):
        main, ref = test_pair(1000 + i)
        question = AGREEMENT_QUESTIONS[i % len(AGREEMENT_QUESTIONS)]
        a = fp32_pipe.analyze(main, ref, question, max_new_tokens=tokens)
        b = bf16_pipe.analyze(main, ref, question, max_new_tokens=tokens)
        same += a.answer == b.answer
        mask_diff = max(mask_diff, float(np.abs(a.fused_mask - b.fused_mask).max()))
        theta_diff = max(theta_diff, float(np.abs(a.theta - b.theta).max()))
        rows.append({"question": question, "fp32": a.answer, "bf16": b.answer})
    return {"cases": cases, "same_answer_fraction": same / cases, "fused_mask_max_abs_diff": mask_diff,
            "theta_max_abs_diff": theta_diff, "answers": rows}


# --------------------------------------------------------------------------------------- app memory
def app_memory_probe(preset: str, checkpoint: str | None, decoder_vocab: int | None, tokens: int,
                     device: torch.device | None = None) -> dict:
    """In this (fresh) process: build the pipeline, analyse one case, report the RSS high-water mark (and the
    GPU's peak allocation on a GPU)."""
    device = device or torch.device("cpu")
    pipe = build_pipeline(preset, checkpoint, decoder_vocab)
    pipe.model.to(device)
    built = peak_rss_bytes()
    main, ref = test_pair(7)
    analysis = pipe.analyze(main, ref, QUESTION, max_new_tokens=tokens)
    pipe.reanalyze(analysis, lam=0.3, max_new_tokens=tokens)
    return {"peak_rss_bytes_after_build": built, "peak_rss_bytes": peak_rss_bytes(),
            "gpu_peak_bytes": gpu_peak_bytes(device)}


def measure_app_memory(args: argparse.Namespace) -> dict[str, Any]:
    """Runs ``app_memory_probe`` in a fresh interpreter (so nothing of this run inflates it)."""
    command = [sys.executable, "-m", "diffvqa_core.bench", "--app-memory-probe", "--preset", args.preset,
               "--tokens", str(args.tokens), "--threads", str(torch.get_num_threads()), "--device", args.device]
    if args.checkpoint:
        command += ["--checkpoint", args.checkpoint]
    if args.decoder_vocab is not None:
        command += ["--decoder-vocab", str(args.decoder_vocab)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                      os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"app-memory probe failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------- the run
def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement of one benchmark run, as a JSON-serialisable dict."""
    started = _now()
    phases: dict[str, float] = {}

    def phase(name: str) -> None:
        phases[name] = round(_now() - started - sum(phases.values()), 2)

    from diffvqa_core.devices import resolve_device

    device = resolve_device(args.device)
    quick = args.preset == "tiny" and not args.checkpoint
    limits = measure_machine_limits(device, quick=quick)
    if args.bf16 and "bfloat16" not in limits.matmul_gflops:  # not native here: its floor is the emulated rate
        size, repeats = (512, 2) if quick else (2048, 5)
        limits.matmul_gflops["bfloat16"] = measure_matmul_gflops(torch.bfloat16, size=size, repeats=repeats,
                                                                 device=device)
    phase("limits")
    pipe = build_pipeline(args.preset, args.checkpoint, args.decoder_vocab)
    pipe.model.to(device)
    phase("build")
    model = pipe.model
    size = pipe.config.image_size
    result: dict[str, Any] = {
        "preset": args.preset, "checkpoint": args.checkpoint or "random-init", "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average_start": list(os.getloadavg()),
        "repeats": args.repeats, "warmup": args.warmup, "tokens": args.tokens,
        "parameters": sum(p.numel() for p in model.parameters()),
        "decoder_vocab": model.decoder.gpt2.config.vocab_size,
        "limits": {"matmul_gflops": limits.matmul_gflops, "copy_gb_per_s": limits.copy_gb_per_s,
                   "read_gb_per_s": limits.read_gb_per_s, "bf16_native": bf16_supported(device)},
    }
    stages = measure_stages(model, args.repeats, args.tokens, size, None, args.warmup)
    result["fp32"] = stage_table(stages, limits, model, torch.float32)
    phase("fp32_stages")
    result["fp32"]["end_to_end"] = measure_end_to_end(pipe, args.repeats, args.tokens, args.warmup)
    phase("fp32_end_to_end")
    if args.bf16:
        from diffvqa_core import DiffVQAPipeline

        bf16_pipe = DiffVQAPipeline(model, checkpoint_name=pipe.checkpoint_name,
                                    checkpoint_sha256=pipe.checkpoint_sha256, dtype=torch.bfloat16)
        stages_bf16 = measure_stages(model, args.repeats, args.tokens, size, torch.bfloat16, args.warmup)
        result["bf16"] = stage_table(stages_bf16, limits, model, torch.bfloat16)
        result["bf16"]["end_to_end"] = measure_end_to_end(bf16_pipe, args.repeats, args.tokens, args.warmup)
        phase("bf16_timing")
        result["bf16"]["speedup"] = {
            key: result["fp32"]["end_to_end"][key]["best_ms"] / result["bf16"]["end_to_end"][key]["best_ms"]
            for key in ("analyze", "reanalyze")}
        result["bf16"]["speedup"]["decode_token"] = (result["fp32"]["stages"]["decode_token"]["time_ms"]
                                                     / result["bf16"]["stages"]["decode_token"]["time_ms"])
        result["bf16"]["agreement"] = answer_agreement(pipe, bf16_pipe, args.agreement_cases, args.tokens)
        phase("bf16_agreement")
    result["memory"] = {"bench_peak_rss_bytes": peak_rss_bytes(), "bench_gpu_peak_bytes": gpu_peak_bytes(device)}
    if not args.no_app_memory:
        result["memory"]["app_process"] = measure_app_memory(args)
        phase("app_memory_probe")
    result["phase_seconds"] = phases
    result["targets"] = check_targets(result)
    result["load_average_end"] = list(os.getloadavg())
    result["wall_seconds"] = _now() - started
    return result


def check_targets(result: dict[str, Any]) -> dict[str, Any]:
    """Each target of issue 7 (set for the paper preset in fp32) with the measured value and whether met."""
    fp32 = result["fp32"]
    e2e = fp32["end_to_end"]
    app = result["memory"].get("app_process")
    measured = {
        "encoder_fraction_of_matmul_rate": fp32["encoder_stages"]["fraction_of_matmul_rate"],
        "decode_token_time_over_floor": fp32["stages"]["decode_token"]["time_over_floor"],
        "reanalyze_over_analyze": e2e["reanalyze"]["best_ms"] / e2e["analyze"]["best_ms"],
        "refusion_ms": e2e["refusion"]["best_ms"],
        "app_peak_rss_gb": app["peak_rss_bytes"] / 1e9 if app else float("nan"),
    }
    targets = {}
    for label, (key, op, threshold) in TARGETS.items():
        value = measured[key]
        met = value >= threshold if op == ">=" else value <= threshold
        targets[label] = {"key": key, "value": value, "threshold": threshold, "met": bool(met and math.isfinite(value))}
    return targets


# --------------------------------------------------------------------------------------- printing
def _fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}" if math.isfinite(value) else "n/a"


def report(result: dict[str, Any]) -> str:
    """The human-readable report: limits, per-stage table, end-to-end times, memory, targets."""
    limits = result["limits"]
    lines = [
        f"diffvqa bench: preset={result['preset']} checkpoint={result['checkpoint']} device={result['device']}"
        + (f" ({result['gpu']})" if result.get("gpu") else "") + f" torch={result['torch']} "
        f"threads={result['threads']} cpu={result['cpu_capability']} params={result['parameters'] / 1e6:.1f}M "
        f"decoder_vocab={result['decoder_vocab']} repeats={result['repeats']} tokens={result['tokens']}",
        f"load average at start {', '.join(f'{v:.2f}' for v in result['load_average_start'])}; "
        f"at end {', '.join(f'{v:.2f}' for v in result['load_average_end'])}",
        "machine limits: matmul " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in limits["matmul_gflops"].items())
        + f"; copy bandwidth {limits['copy_gb_per_s']:.1f} GB/s (read+write); read {limits['read_gb_per_s']:.1f} GB/s",
    ]
    for mode in ("fp32", "bf16"):
        if mode not in result:
            continue
        table = result[mode]
        lines += ["", f"[{mode}] stages of one analyze (best of {result['repeats']}; floor = FLOPs / matmul rate, "
                      "decode_token: weight bytes / copy bandwidth)",
                  f"  {'stage':<24}{'GFLOP':>9}{'time ms':>11}{'floor ms':>11}{'time/floor':>11}{'GFLOP/s':>10}"]
        for name, row in table["stages"].items():
            lines.append(f"  {name:<24}{_fmt(row['gflop'], 2):>9}{_fmt(row['time_ms']):>11}{_fmt(row['floor_ms']):>11}"
                         f"{_fmt(row['time_over_floor'], 2):>11}{_fmt(row['gflop_per_s']):>10}")
        enc = table["encoder_stages"]
        token = table["stages"]["decode_token"]
        lines += [
            f"  encoder stages (registration, prior x2, Swin x4, question): {_fmt(enc['gflop'], 1)} GFLOP in "
            f"{_fmt(enc['time_ms'])} ms = {_fmt(enc['gflop_per_s'])} GFLOP/s = "
            f"{100 * enc['fraction_of_matmul_rate']:.0f}% of the matmul rate",
            f"  decode token: {token['weight_bytes'] / 1e6:.0f} MB weights (+{token['kv_cache_bytes'] / 1e6:.0f} MB KV "
            f"cache); vs read-only bandwidth floor {_fmt(token['floor_read_ms'])} ms: "
            f"{_fmt(token['time_over_read_floor'], 2)}x",
            f"  one analyze: {_fmt(table['analyze_gflop'], 1)} GFLOP before decoding",
        ]
        e2e = table["end_to_end"]
        lines.append(f"  analyze {_fmt(e2e['analyze']['best_ms'])} ms (median {_fmt(e2e['analyze']['median_ms'])}, "
                     f"{e2e['analyze']['tokens']} tokens); same pair, new question "
                     f"{_fmt(e2e['analyze_cached_pair_new_question']['best_ms'])} ms")
        lines.append(f"  reanalyze (new lambda) {_fmt(e2e['reanalyze']['best_ms'])} ms "
                     f"(median {_fmt(e2e['reanalyze']['median_ms'])}, {e2e['reanalyze']['tokens']} tokens) = "
                     f"{e2e['reanalyze']['best_ms'] / e2e['analyze']['best_ms']:.2f} x analyze; "
                     f"re-fusion (overlay only) {_fmt(e2e['refusion']['best_ms'], 2)} ms")
        if mode == "bf16":
            speed = table["speedup"]
            agree = table["agreement"]
            lines.append(f"  bf16 speed-up: analyze {speed['analyze']:.2f}x, reanalyze {speed['reanalyze']:.2f}x, "
                         f"decode token {speed['decode_token']:.2f}x; answers equal to fp32 in "
                         f"{100 * agree['same_answer_fraction']:.0f}% of {agree['cases']} cases; fused mask max |diff| "
                         f"{agree['fused_mask_max_abs_diff']:.4f}, theta max |diff| {agree['theta_max_abs_diff']:.5f}")
    memory = result["memory"]
    if memory.get("bench_gpu_peak_bytes") is not None:
        lines += ["", f"GPU peak allocated: this benchmark process {memory['bench_gpu_peak_bytes'] / 1e9:.2f} GB"
                  + (f"; fresh app process {memory['app_process']['gpu_peak_bytes'] / 1e9:.2f} GB"
                     if "app_process" in memory else "")]
    lines += ["", f"peak memory: this benchmark process {memory['bench_peak_rss_bytes'] / 1e9:.2f} GB"
              + (f"; fresh app process (build + analyze + reanalyze) "
                 f"{memory['app_process']['peak_rss_bytes'] / 1e9:.2f} GB "
                 f"(after build {memory['app_process']['peak_rss_bytes_after_build'] / 1e9:.2f} GB)"
                 if "app_process" in memory else "")]
    lines += ["", "targets (issue 7; set for the paper preset, fp32):"]
    for label, target in result["targets"].items():
        lines.append(f"  [{'met' if target['met'] else 'MISSED'}] {label}: {_fmt(target['value'], 2)}")
    lines.append(f"wall time {result['wall_seconds']:.0f} s")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m diffvqa_core.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="paper", choices=("paper", "tiny"), help="model preset (random weights)")
    parser.add_argument("--checkpoint", default=None,
                        help="benchmark a trained checkpoint directory instead ('demo': the bundled one)")
    parser.add_argument("--json", default=None, help="also write every figure to this JSON file")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each measurement (best is reported)")
    parser.add_argument("--tokens", type=int, default=24, help="decoded tokens per case")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before the timed ones")
    parser.add_argument("--bf16", action="store_true", help="also measure the opt-in bf16 mode and its agreement")
    parser.add_argument("--agreement-cases", type=int, default=8, help="cases compared between bf16 and fp32")
    parser.add_argument("--decoder-vocab", type=int, default=None,
                        help="pad a random decoder's vocabulary to this size (default: GPT-2's for the paper preset)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="auto", metavar="auto|cpu|cuda",
                        help="where to measure (default auto: CUDA when PyTorch sees a GPU, else the CPU)")
    parser.add_argument("--no-app-memory", action="store_true", help="skip the fresh-process memory probe")
    parser.add_argument("--app-memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.tokens < 2:
        parser.error("--repeats must be >= 1 and --tokens >= 2")
    if args.decoder_vocab is None and args.preset == "paper" and not args.checkpoint:
        args.decoder_vocab = GPT2_VOCAB
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from diffvqa_core.devices import DeviceError, resolve_device

    try:
        device = resolve_device(args.device)
    except DeviceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.app_memory_probe:
        print(json.dumps(app_memory_probe(args.preset, args.checkpoint, args.decoder_vocab, args.tokens, device)))
        return 0
    result = run(args)
    print(report(result), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
