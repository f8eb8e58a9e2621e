"""``python -m train pretrain-prior``: DINO self-distillation of a small ViT prior for machines without RAD-DINO.

The prior of eq. 4 (sec. 3.2) is the CLS-to-patch cosine map of a frozen DINO ViT. The paper uses RAD-DINO
(``microsoft/rad-dino``, a transformers ``Dinov2Model``); this command pretrains a small one with the same
recipe (Caron et al. 2021: EMA teacher, centering and sharpening, multi-crop) on a folder of radiographs or
on a benchmark root, and saves the teacher backbone in the exact ``Dinov2Model`` layout beside a
``BitImageProcessor`` config holding the size, mean and standard deviation it was trained with, so
``Dinov2Model.from_pretrained(out)`` / ``AutoImageProcessor.from_pretrained(out)`` load it as they load
RAD-DINO. A ``training_log.json`` records the settings, the loss curve and the time; with ``--eval-root``
the prior's localisation of ground-truth changes is measured against a random-weight ViT of the same shape
and written to ``prior_eval.json``.

Measured (2026-11-30, CPU, 1 thread, bf16, defaults; 64 changed pairs of a 100-pair ``train synth`` set,
seed 11, ground-truth registration; AUROC pooled over pixels, pointing game = argmax inside the change):

=============================================  ======  ========  =====================
prior                                          AUROC   pointing  teacher entropy / max
=============================================  ======  ========  =====================
mhh_pairs, 300 steps (~250 s CPU)              0.755   0.375     6.7 / 7.6
mhh_pairs, 200 steps                           0.747   0.359     5.2 / 7.6
random-weight ViT, same config and init        0.637   0.266
synthetic phantoms (476 films), 200 steps      0.667   0.156     7.3 / 7.6 (collapsed)
centred Gaussian                               0.772   0.000
abs(main - ref), blurred (sees the change)     0.838   0.828
=============================================  ======  ========  =====================

The trained prior beats a random ViT but, like RAD-DINO, it marks salient anatomy (the lung fields), not
change: a centred Gaussian reaches a similar AUROC by covering the lungs and never points at a change.
On the near-identical procedural phantoms every DINO variant tried collapsed to a uniform teacher.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from transformers import BitImageProcessor, Dinov2Model
from transformers.image_utils import PILImageResampling

from train.dino.images import RadiographBank, find_images
from train.dino.multicrop import MultiCrop
from train.dino.trainer import PretrainSettings, collapse_warning, pretrain, settings_dict, summarise_curve

LOG_FILE = "training_log.json"
EVAL_FILE = "prior_eval.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options."""
    defaults = PretrainSettings()
    parser.add_argument("--images", required=True, type=Path,
                        help="folder of PNG/JPEG radiographs (searched recursively) or a benchmark root (files/**.jpg)")
    parser.add_argument("--out", required=True, type=Path, help="output directory (Dinov2Model layout)")
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="global crop / input side")
    parser.add_argument("--patch-size", type=int, default=defaults.patch_size)
    parser.add_argument("--hidden-size", type=int, default=defaults.hidden_size)
    parser.add_argument("--layers", type=int, default=defaults.layers)
    parser.add_argument("--heads", type=int, default=defaults.heads)
    parser.add_argument("--out-dim", type=int, default=defaults.out_dim, help="prototypes of the DINO head")
    parser.add_argument("--local-crops", type=int, default=defaults.local_crops)
    parser.add_argument("--global-scale", type=float, nargs=2, default=defaults.global_scale, metavar=("MIN", "MAX"),
                        help="area range of the global crops, as fractions of the film")
    parser.add_argument("--local-scale", type=float, nargs=2, default=defaults.local_scale, metavar=("MIN", "MAX"),
                        help="area range of the local crops (larger is easier: phantoms differ little locally)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--max-steps", type=int, default=None, help="optimizer steps (overrides --epochs)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate (cosine decay)")
    parser.add_argument("--warmup-teacher-temp", type=float, default=defaults.teacher_temp[0],
                        help="teacher temperature at the start of the warmup")
    parser.add_argument("--teacher-temp", type=float, default=defaults.teacher_temp[1],
                        help="teacher temperature after the warmup (lower it if the teacher output goes uniform)")
    parser.add_argument("--momentum-teacher", type=float, default=defaults.momentum_teacher,
                        help="initial EMA momentum of the teacher (cosine to 1)")
    parser.add_argument("--warmup-fraction", type=float, default=defaults.warmup_fraction,
                        help="fraction of the steps spent warming up the lr and the teacher temperature")
    parser.add_argument("--freeze-last-layer-steps", type=int, default=defaults.freeze_last_layer_steps,
                        help="steps during which the head's prototypes are not updated (DINO: one epoch)")
    parser.add_argument("--centering", choices=("ema", "sinkhorn"), default=defaults.centering,
                        help="teacher centering: DINO's EMA center or DINOv2's Sinkhorn-Knopp")
    parser.add_argument("--koleo-weight", type=float, default=defaults.koleo_weight,
                        help="weight of DINOv2's KoLeo term on the student's CLS embeddings (0: plain DINO)")
    parser.add_argument("--hflip-prob", type=float, default=defaults.hflip_prob,
                        help="horizontal flip probability (default 0: chest films are not mirror symmetric)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward passes")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (1 is much faster on a CPU other jobs are also using)")
    parser.add_argument("--eval-root", type=Path, default=None,
                        help="synthetic benchmark root with ground-truth change masks: measure the prior on it")
    parser.add_argument("--eval-pairs", type=int, default=64, help="pairs used by --eval-root")


def _check(args: argparse.Namespace) -> str | None:
    """A message for the first invalid option, or None."""
    if not args.images.is_dir():
        return f"--images: folder not found: {args.images}"
    if args.image_size % args.patch_size:
        return f"--image-size {args.image_size} is not a multiple of --patch-size {args.patch_size}"
    if args.hidden_size % args.heads:
        return f"--hidden-size {args.hidden_size} is not divisible by --heads {args.heads}"
    if args.threads is not None and args.threads < 1:
        return f"--threads must be at least 1, got {args.threads}"
    if args.eval_root is not None and not args.eval_root.is_dir():
        return f"--eval-root: folder not found: {args.eval_root}"
    return None


def save_prior(backbone: Dinov2Model, out: Path, image_size: int, mean: float, std: float) -> None:
    """Write the backbone (``config.json`` + ``model.safetensors``) and its preprocessing facts.

    The processor squashes the whole film to ``image_size`` squared (no centre crop), as training and
    ``diffvqa_core.imaging.to_model_input`` do, replicates gray to RGB and normalises with the training
    set's pixel statistics (RAD-DINO's processor likewise carries its own mean and std).
    """
    backbone.cpu().eval().save_pretrained(out)
    side = {"height": image_size, "width": image_size}
    BitImageProcessor(
        do_resize=True,
        size=side,
        resample=PILImageResampling.BILINEAR,
        do_center_crop=False,
        crop_size=side,
        do_rescale=True,
        do_normalize=True,
        image_mean=[mean] * 3,
        image_std=[std] * 3,
        do_convert_rgb=True,
    ).save_pretrained(out)


def run(args: argparse.Namespace) -> int:
    """Pretrain, save the teacher backbone and the log (and the evaluation with ``--eval-root``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    problem = _check(args)
    if problem is not None:
        print(f"pretrain-prior: error: {problem}", file=sys.stderr)
        return 2
    try:
        paths = find_images(args.images)
    except FileNotFoundError as error:
        print(f"pretrain-prior: error: {error}", file=sys.stderr)
        return 2
    settings = PretrainSettings(
        image_size=args.image_size, patch_size=args.patch_size, hidden_size=args.hidden_size, layers=args.layers,
        heads=args.heads, out_dim=args.out_dim, local_crops=args.local_crops,
        global_scale=tuple(args.global_scale), local_scale=tuple(args.local_scale), batch_size=args.batch_size,
        epochs=args.epochs, max_steps=args.max_steps, lr=args.lr, warmup_fraction=args.warmup_fraction,
        teacher_temp=(args.warmup_teacher_temp, args.teacher_temp), momentum_teacher=args.momentum_teacher,
        freeze_last_layer_steps=args.freeze_last_layer_steps, koleo_weight=args.koleo_weight,
        centering=args.centering, hflip_prob=args.hflip_prob, bf16=args.bf16,
        seed=args.seed,
    )
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started, cpu_started = time.perf_counter(), time.process_time()
    bank = RadiographBank(paths, side=2 * settings.image_size, transform=None)
    mean, std = bank.pixel_statistics()
    bank.transform = MultiCrop(
        settings.image_size, settings.local_size, settings.local_crops, mean, std,
        global_scale=settings.global_scale, local_scale=settings.local_scale, hflip_prob=settings.hflip_prob,
    )
    settings.extra = {"images": str(args.images), "n_images": len(bank), "pixel_mean": mean, "pixel_std": std}
    print(f"pretrain-prior: {len(bank)} images from {args.images}; mean {mean:.4f}, std {std:.4f}", file=sys.stderr)
    result = pretrain(bank, settings, device=args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    save_prior(result.teacher.backbone, args.out, settings.image_size, mean, std)
    log = {
        "arguments": {k: str(v) for k, v in vars(args).items() if not k.startswith("_")},
        "settings": settings_dict(settings),
        "steps": result.steps,
        "train_seconds": round(result.seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "loss_curve": summarise_curve(result.history["loss"]),
        "teacher_entropy_curve": summarise_curve(result.history["teacher_entropy"]),
        "collapse_warning": collapse_warning(result.history["teacher_entropy"], settings.out_dim),
        "history": result.history,
    }
    (args.out / LOG_FILE).write_text(json.dumps(log, indent=1))
    if log["collapse_warning"]:
        print(f"pretrain-prior: warning: {log['collapse_warning']}", file=sys.stderr)
    print(f"pretrain-prior: saved the teacher backbone to {args.out} ({result.seconds:.0f} s)", file=sys.stderr)
    if args.eval_root is not None:
        from train.dino.evaluate_prior import evaluate_against_random

        report = evaluate_against_random(args.out, args.eval_root, pairs=args.eval_pairs, seed=args.seed)
        (args.out / EVAL_FILE).write_text(json.dumps(report, indent=1))
        print(json.dumps(report["summary"], indent=1))
    return 0
