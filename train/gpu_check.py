"""``python -m train gpu-check``: the paper's whole path on one device in minutes, with the figures that size a run.

On a GPU (``--device auto`` or ``cuda``) it runs the paper preset with random weights (no download: Swin-B,
a RAD-DINO-sized ViT-B/14, GPT-2 small with GPT-2's 50,257 + 4 token head) in bf16, on a small synthetic set
made on the spot (``diffvqa_core.data.synthetic.generate_benchmark``):

1. both training stages (``train fit``: stage 1 with phi's backbone frozen, stage 2 with everything), each
   epoch validated with the official scorer, stopped in the middle of stage 2 and **resumed** (``--resume``);
2. **batched evaluation** (``train evaluate``) of the trained checkpoint, and the model alone answering batches
   already in memory;
3. one ``analyze`` at a time as the app runs it (``diffvqa_core.bench``).

It prints training samples/s per stage, peak GPU memory per phase, cases/s, the time of one ``analyze``,
and the time the paper's full schedule would take on this device (8 epochs of 131,556 difference questions
and their validation on 16,278), beside the targets of issue 16 (>= 80 samples/s in training, >= 100 cases/s
batched). ``--device cpu`` runs the same steps with the tiny preset at toy sizes: a check that every step works
(the test suite runs it), whose speeds say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

PAPER_TRAIN_ROWS = 131_556  # Medical-Diff-VQA difference questions: train / val split (the paper's setting)
PAPER_VAL_ROWS = 16_278
PAPER_EPOCHS = 8
TARGETS = {"train_samples_per_s": 80.0, "batched_cases_per_s": 100.0}  # issue 16, one H200, paper preset bf16


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes of one check: the preset, the synthetic set, the steps and the batches."""

    preset: str
    pairs: int
    image_side: int  # side of the synthetic films
    steps_per_stage: int
    train_batch_size: int
    eval_batch_size: int
    val_batches: int
    eval_rows: int
    mixed_precision: str  # "bf16" or "no"
    decoder_vocab: int | None  # the random decoder's head padded to GPT-2's size (None: the tokenizer's)
    analyze_repeats: int


def plan_for(device_type: str, args: argparse.Namespace) -> Plan:
    """The sizes for a GPU (the paper preset) or a CPU (the tiny preset, toy sizes)."""
    from diffvqa_core.bench import GPT2_VOCAB

    if device_type == "cuda":
        plan = Plan("paper", 0, 384, 60, 10, 64, 2, 512, "bf16", GPT2_VOCAB, 5)
    else:
        plan = Plan("tiny", 0, 128, 2, 4, 4, 1, 8, "no", None, 1)
    if args.preset == "paper" and plan.preset != "paper":  # the paper's model on a CPU: slow, for a dry run
        plan = dataclasses.replace(plan, preset="paper", image_side=384, decoder_vocab=GPT2_VOCAB)
    elif args.preset == "tiny" and plan.preset != "tiny":
        plan = dataclasses.replace(plan, preset="tiny", decoder_vocab=None)
    steps = args.steps_per_stage or plan.steps_per_stage
    batch = args.batch_size or plan.train_batch_size
    # One difference question per pair, 80% of the pairs in training: enough pairs for an epoch without repeats.
    pairs = args.pairs or max(20, math.ceil(steps * batch / 0.8 * 1.2))
    return dataclasses.replace(plan, pairs=pairs, steps_per_stage=steps, train_batch_size=batch,
                               eval_batch_size=args.eval_batch_size or plan.eval_batch_size)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options."""
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto (default): the GPU when PyTorch sees one (paper preset, bf16), else the CPU "
                             "(tiny preset, toy sizes)")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_check"), help="working folder (data, run, "
                        "evaluation, gpu_check.json)")
    parser.add_argument("--preset", choices=("auto", "paper", "tiny"), default="auto",
                        help="auto (default): paper on a GPU, tiny on a CPU")
    parser.add_argument("--pairs", type=int, help="synthetic pairs (default: enough for one epoch per stage)")
    parser.add_argument("--steps-per-stage", type=int, help="optimiser steps of each stage (default 60 on a GPU)")
    parser.add_argument("--batch-size", type=int, help="training batch (default 10, the paper's)")
    parser.add_argument("--eval-batch-size", type=int, help="validation and evaluation batch (default 64 on a GPU)")


def _median_speed(rows: list[dict], stage: int) -> float | None:
    """Median samples/s of a stage's steps, its first three (warm-up) left out (fewer on a short stage)."""
    speeds = [r["samples_per_s"] for r in rows if r["stage"] == stage]
    speeds = speeds[min(3, len(speeds) // 2):]
    return statistics.median(speeds) if speeds else None


class Phases:
    """Wall time and peak memory of each phase of the check: the GPU's peak allocation during the phase, or on a
    CPU the process's RSS high-water mark at its end (the kernel keeps one mark per process)."""

    def __init__(self, device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self.peak_gb: dict[str, float] = {}

    def run(self, name: str, description: str, fn):
        import torch

        from diffvqa_core.bench import peak_rss_bytes

        print(f"\n== gpu-check: {description}", flush=True)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        result = fn()
        self.seconds[name] = time.perf_counter() - start
        peak = (torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else peak_rss_bytes())
        self.peak_gb[name] = peak / 1e9
        return result


def make_data(plan: Plan, out: Path) -> Path:
    """The synthetic set (reused when a previous check made it with the same size)."""
    from diffvqa_core.data.synthetic import generate_benchmark

    root = out / f"data_{plan.pairs}_{plan.image_side}"
    if not (root / "mimic_pair_questions.csv").is_file():
        generate_benchmark(root, plan.pairs, seed=0, size=plan.image_side, workers=min(8, os.cpu_count() or 1))
    return root


def train_config(plan: Plan, data_root: Path, output: Path, device_type: str):
    """paper.yaml (or tiny.yaml) with random weights and the check's sizes."""
    from train.config import TrainConfig

    repo = Path(__file__).resolve().parent
    config = TrainConfig.from_yaml(repo / "configs" / f"{plan.preset}.yaml")
    model = {"image_encoder_pretrained": False, "prior_pretrained": False, "decoder_pretrained": False}
    if plan.decoder_vocab:
        from diffvqa_core.config import DiffVQAConfig

        overrides = DiffVQAConfig.from_preset(plan.preset).decoder_overrides
        model["decoder_overrides"] = {**overrides, "vocab_size": plan.decoder_vocab}
    return dataclasses.replace(
        config, model={**config.model, **model}, data_root=str(data_root), output_dir=str(output),
        question_types=["difference"], question_weights=None, init_weights=None, epochs_stage1=1, epochs_stage2=1,
        epoch_samples=plan.steps_per_stage * plan.train_batch_size, train_batch_size=plan.train_batch_size,
        eval_batch_size=plan.eval_batch_size, val_max_batches=plan.val_batches, mixed_precision=plan.mixed_precision,
        num_workers=min(8, os.cpu_count() or 1) if device_type == "cuda" else 0, log_every=1,
        save_every_steps=10**9, eval_num_beams=1, eval_max_new_tokens=None, eval_grammar=False)


def batched_answer_speed(checkpoint: Path, data_root: Path, plan: Plan, device, dtype) -> dict:
    """Cases/s of the model alone answering batches already on the device (image reading left out)."""
    import torch

    from diffvqa_core import DiffVQAModel
    from diffvqa_core.devices import synchronize
    from diffvqa_core.pipeline import inference_context
    from train.answering import Decoding, answer_batch
    from train.batches import evaluation_loader, open_split

    model = DiffVQAModel.from_pretrained(checkpoint).to(device).eval()
    dataset = open_split(data_root, None, question_types=["difference"], image_size=model.config.image_size,
                         augment=False)
    loader = evaluation_loader(dataset, batch_size=plan.eval_batch_size, limit=plan.eval_rows)
    batches = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in b.items()} for b in loader]
    decoding = Decoding(1, model.config.max_answer_len, 0, None, grammar=False)
    with inference_context(dtype, device):
        answer_batch(model, batches[0], device, decoding)  # warm-up: kernels, allocator
        synchronize(device)
        start = time.perf_counter()
        cases = 0
        for batch in batches:
            cases += len(answer_batch(model, batch, device, decoding).answers)
        synchronize(device)
    seconds = time.perf_counter() - start
    return {"cases": cases, "seconds": seconds, "cases_per_s": cases / seconds, "batch_size": plan.eval_batch_size,
            "max_new_tokens": model.config.max_answer_len}


def analyze_speed(checkpoint: Path, device, dtype, repeats: int) -> dict:
    """One case at a time through the app's pipeline (``bench.measure_end_to_end``): analyze and reanalyze."""
    from diffvqa_core import DiffVQAPipeline
    from diffvqa_core.bench import measure_end_to_end

    pipe = DiffVQAPipeline.from_pretrained(checkpoint, device=device, dtype=dtype)
    timing = measure_end_to_end(pipe, repeats, tokens=24, warmup=1)
    return {"analyze_ms": timing["analyze"]["best_ms"], "analyze_median_ms": timing["analyze"]["median_ms"],
            "reanalyze_ms": timing["reanalyze"]["best_ms"], "tokens": 24}


def check(args: argparse.Namespace) -> dict:
    """Runs every phase; returns the figures (also written to OUT/gpu_check.json)."""
    import torch

    from diffvqa_core.devices import inference_dtype, resolve_device
    from train import evaluate as evaluate_command
    from train.fit import fit
    from train.preflight import check_scorer
    from train.run_log import JSONL

    started = time.perf_counter()
    device = resolve_device(args.device)
    check_scorer()
    plan = plan_for(device.type, args)
    dtype = inference_dtype(device, "auto")
    out = args.out
    run_dir = out / "run"
    phases = Phases(device)
    data_root = phases.run("data", f"synthetic set ({plan.pairs} pairs at {plan.image_side} px)",
                           lambda: make_data(plan, out))
    config = train_config(plan, data_root, run_dir, device.type)
    total_steps = 2 * plan.steps_per_stage
    stop_at = plan.steps_per_stage + max(1, plan.steps_per_stage // 2)
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    phases.run("fit", f"fit, {plan.preset} preset, random weights, stopped at step {stop_at} of {total_steps}",
               lambda: fit(config, max_steps=stop_at, device=args.device))
    state = phases.run("fit_resume", "fit --resume to the end", lambda: fit(config, resume=True, device=args.device))
    if state.global_step != total_steps:
        raise RuntimeError(f"the resumed run stopped at step {state.global_step}, not {total_steps}")
    rows = [json.loads(line) for line in (run_dir / JSONL).read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    val_rows = [r for r in rows if r["kind"] == "val"]

    eval_out = out / "evaluate"
    parser = argparse.ArgumentParser()
    evaluate_command.add_arguments(parser)
    eval_args = parser.parse_args([
        "--checkpoint", str(run_dir / "last"), "--data-root", str(data_root), "--split", "all",
        "--question-type", "difference", "--no-grammar", "--max-samples", str(plan.eval_rows),
        "--batch-size", str(plan.eval_batch_size), "--device", args.device, "--out", str(eval_out),
        *(["--num-workers", "0"] if device.type == "cpu" else [])])
    phases.run("evaluate", f"evaluate, batches of {plan.eval_batch_size}", lambda: evaluate_command.evaluate(eval_args))
    settings = json.loads((eval_out / "settings.json").read_text())
    batched = phases.run("batched", "the model alone on batches in memory", lambda: batched_answer_speed(
        run_dir / "last", data_root, plan, device, dtype))
    analyze = phases.run("analyze", "analyze, one case at a time (the app)", lambda: analyze_speed(
        run_dir / "last", device, dtype, plan.analyze_repeats))

    stage_speed = {stage: _median_speed(train_rows, stage) for stage in (1, 2)}
    projection = None
    if all(stage_speed.values()):
        train_hours = PAPER_TRAIN_ROWS * PAPER_EPOCHS / 2 * (1 / stage_speed[1] + 1 / stage_speed[2]) / 3600
        val_hours = PAPER_VAL_ROWS * PAPER_EPOCHS / settings["cases_per_s"] / 3600
        projection = {"train_hours": train_hours, "validation_hours": val_hours, "total_hours": train_hours + val_hours}
    result = {
        "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__, "plan": dataclasses.asdict(plan), "precision": str(dtype).replace("torch.", ""),
        "train_samples_per_s": {f"stage{k}": v for k, v in stage_speed.items()},
        "steps": state.global_step, "resumed_at_step": stop_at,
        "validation": [{k: r[k] for k in ("epoch", "lambda", "CIDEr")} for r in val_rows],
        "evaluate": {k: settings[k] for k in ("rows", "batch_size", "cases_per_s", "answering_seconds")},
        "batched_model_only": batched, "analyze": analyze,
        "peak_memory_gb": phases.peak_gb,
        "peak_memory_kind": "GPU allocated" if device.type == "cuda" else "RSS high-water mark",
        "phase_seconds": phases.seconds, "paper_schedule_projection": projection,
        "wall_seconds": time.perf_counter() - started,
    }
    if device.type == "cuda":
        result["targets"] = {
            "train_samples_per_s": min(stage_speed.values()) >= TARGETS["train_samples_per_s"],
            "batched_cases_per_s": batched["cases_per_s"] >= TARGETS["batched_cases_per_s"],
        }
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def report(result: dict) -> str:
    """The summary printed at the end."""
    plan = result["plan"]
    speed = result["train_samples_per_s"]
    lines = ["", "== gpu-check summary",
             f"device {result['device']}" + (f" ({result['gpu']})" if result["gpu"] else "")
             + f", torch {result['torch']}, {plan['preset']} preset with random weights, {result['precision']}"]
    lines.append(f"training: stage 1 {speed['stage1']:.1f} samples/s, stage 2 {speed['stage2']:.1f} samples/s "
                 f"(median per step, batch {plan['train_batch_size']}); resumed at step {result['resumed_at_step']}, "
                 f"ended at step {result['steps']}")
    lines.append("validation (per epoch, at the training's lambda): "
                 + "; ".join(f"epoch {v['epoch'] + 1} lambda {v['lambda']:.3f} CIDEr {v['CIDEr']:.3f}"
                             for v in result["validation"]))
    ev, batched, analyze = result["evaluate"], result["batched_model_only"], result["analyze"]
    lines.append(f"evaluate: {ev['rows']} rows in batches of {ev['batch_size']}: {ev['cases_per_s']:.1f} cases/s end "
                 f"to end; the model alone on batches in memory: {batched['cases_per_s']:.1f} cases/s "
                 f"({batched['max_new_tokens']} tokens at most per answer)")
    lines.append(f"analyze (the app, one case, 24 tokens): {analyze['analyze_ms']:.0f} ms; reanalyze "
                 f"{analyze['reanalyze_ms']:.0f} ms")
    lines.append(f"peak memory ({result['peak_memory_kind']}): " + ", ".join(
        f"{name} {gb:.2f} GB" for name, gb in result["peak_memory_gb"].items()))
    lines.append("phase seconds: " + ", ".join(f"{name} {sec:.0f}" for name, sec in result["phase_seconds"].items()))
    projection = result["paper_schedule_projection"]
    if projection:
        lines.append(f"the paper's schedule on this device ({PAPER_EPOCHS} epochs of {PAPER_TRAIN_ROWS:,} rows, "
                     f"validation on {PAPER_VAL_ROWS:,} rows each epoch, one process): training "
                     f"{projection['train_hours']:.1f} h + validation {projection['validation_hours']:.1f} h = "
                     f"{projection['total_hours']:.1f} h"
                     + ("" if result["device"].startswith("cuda") else f" [{plan['preset']} preset on a CPU]"))
    for name, met in result.get("targets", {}).items():
        lines.append(f"target {name} >= {TARGETS[name]:g}: {'met' if met else 'MISSED'}")
    lines.append(f"wall time {result['wall_seconds']:.0f} s")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Runs the check and prints its summary; 2 with a message when the device or the scorer is missing."""
    from diffvqa_core.devices import DeviceError
    from train.preflight import ScorerUnavailableError

    try:
        result = check(args)
    except (DeviceError, ScorerUnavailableError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report(result), flush=True)
    return 0
