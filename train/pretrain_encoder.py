"""``python -m train pretrain-encoder``: supervised finding classification of the image encoder's backbone.

The paper's phi is a Swin-B "first pretrained on ImageNet-21k and further trained on classification tasks on
the MIMIC-CXR dataset with CheXpert labels" (sec. 3.3), then frozen for stage 1 (sec. 3.6).

On real data (``--mimic-cxr DIR``) this is that step: the preset's backbone, starting from its pretrained
weights (the paper preset: ImageNet-21k Swin-B, found as ``diffvqa_core.weights`` says), learns the 14 CheXpert
labels of MIMIC-CXR-JPG's frontal training films (``train.chexpert``: labels, uncertainty policy, split),
on the GPU when there is one (``--device``, ``--bf16``). Validation is the mean AUROC over the labels on the
official validation split. The output is what ``image_encoder_weights`` reads (see below).

On a synthetic benchmark (``--data-root``), where neither those weights nor ImageNet are at hand and a
random-init backbone frozen for stage 1 gives the decoder random features to read, it is the stand-in for that
classification pretraining: it trains the configured timm backbone (the same ``ImageEncoder`` normalisation and
last-stage tokens the model uses) to recognise, on single films of a benchmark root's *training split*, which
findings a study holds and on which side (multi-label: present / left / right for each of the 30 official names;
labels from the synthetic ground-truth sidecars). No change masks, poses or answers are used.

Either way the backbone is saved as timm saves a model for the hub (``timm.models.save_for_hf``:
``model.safetensors`` under timm's own parameter names and ``config.json``), so the model loads it through
timm's pretrained path (``image_encoder_pretrained: true``, ``image_encoder_weights: <out>``) exactly as it
loads the ImageNet-21k checkpoint.

Measured (2026-11-30, CPU, 1 thread, batch 32; ``data/synth_3k`` = ``train synth --pairs 3000 --seed 0 --size
256``: 3,761 training and 513 validation films; validation AUROC of presence, mean over findings, per epoch):
the tiny preset's Swin (lr 1e-3) 0.538, 0.518; ConvNeXt ``convnext_atto`` dims 48-384 (lr 1e-3) 0.531 after
one epoch; ConvNeXt dims 32-256, depths 1-1-3-1 (lr 2e-3, 4 epochs, 346 s) 0.564, 0.602, 0.625, 0.636; the same
for 12 epochs (1040 s) 0.549, 0.563, 0.605, 0.650, 0.665, 0.695, 0.693, 0.724, 0.738, 0.742, 0.745, 0.745. Single
films are hard to label (a "minimal" effusion barely shows, anatomy varies between phantoms); the 12-epoch run
is the demo's backbone (``train/configs/demo.yaml``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from diffvqa_core.data.vocabulary import FINDINGS

WEIGHTS_FILE = "model.safetensors"
LOG_FILE = "training_log.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-root", type=Path, help="synthetic benchmark root (train synth): finding labels")
    source.add_argument("--mimic-cxr", type=Path, metavar="DIR",
                        help="MIMIC-CXR-JPG folder with mimic-cxr-2.0.0-{chexpert,metadata,split}.csv(.gz): the "
                             "paper's CheXpert step")
    parser.add_argument("--out", required=True, type=Path, help="output directory for model.safetensors")
    parser.add_argument("--preset", default="tiny", help="model preset whose image encoder is trained")
    parser.add_argument("--image-encoder", default=None,
                        help="timm model name replacing the preset's (give the same in the training config)")
    parser.add_argument("--image-encoder-overrides", type=json.loads, default=None, metavar="JSON",
                        help='timm keyword arguments replacing the preset\'s, e.g. \'{"depths": [1, 1, 2, 1]}\'')
    parser.add_argument("--random-init", action="store_true",
                        help="start from random weights even where the preset loads pretrained ones")
    parser.add_argument("--weights-dir", metavar="DIR", help="folder of pretrained parts laid out by hub id (the "
                        "paper preset starts from WEIGHTS_DIR/timm/swin_base_patch4_window12_384.ms_in22k)")
    chexpert = parser.add_argument_group("MIMIC-CXR (with --mimic-cxr)")
    chexpert.add_argument("--images-root", type=Path, default=None,
                          help="folder holding files/p../p../s../*.jpg (default: the --mimic-cxr folder)")
    chexpert.add_argument("--views", nargs="+", default=["PA", "AP"], help="ViewPosition values kept (frontal)")
    chexpert.add_argument("--uncertain", choices=("ignore", "ones", "zeros"), default="ignore",
                          help="what an uncertain (-1) label becomes: left out of the loss (U-Ignore, default), "
                               "positive (U-Ones) or negative (U-Zeros); blank is negative")
    chexpert.add_argument("--hold-out", type=Path, default=None, metavar="DIFF_VQA_ROOT",
                          help="leave out of training the patients of this Medical-Diff-VQA root's val/test split")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="auto", metavar="auto|cpu|cuda",
                        help="auto (default): CUDA when PyTorch sees a GPU, else the CPU")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (GPUs, CPUs with AVX-512 bf16)")
    parser.add_argument("--workers", type=int, default=None,
                        help="image-reading processes (default: 2, or up to 8 on a GPU)")


def finding_targets(findings: list[dict]) -> np.ndarray:
    """(3 x 30,) float32 multi-label target: [present | on the patient's left | on the patient's right].

    "bilateral"/"bibasilar" count for both sides, "retrocardiac" for the left; findings without a location
    (cardiomegaly) mark presence only.
    """
    target = np.zeros((3, len(FINDINGS)), dtype=np.float32)
    for finding in findings:
        index = FINDINGS.index(finding["name"])
        location = finding.get("location", "")
        target[0, index] = 1.0
        both = "bilateral" in location or "bibasilar" in location
        target[1, index] = float(both or "left" in location or "retrocardiac" in location)
        target[2, index] = float(both or "right" in location)
    return target.reshape(-1)


class LabelledFilms(Dataset):
    """One item per study of a split: the film as model input (3, S, S), its ``finding_targets`` and a loss mask
    of ones (every synthetic label is known)."""

    def __init__(self, root: Path, split: str, image_size: int, augment: bool, seed: int) -> None:
        from diffvqa_core.data import layout
        from diffvqa_core.data.reader import DiffVQADataset

        pairs = DiffVQADataset(root, split=split, image_size=image_size)
        if not pairs.has_ground_truth:
            raise ValueError(f"{root} has no {layout.GROUND_TRUTH_DIR}/ sidecars: pretrain-encoder --data-root "
                             "needs a synthetic benchmark (python -m train synth); real films: --mimic-cxr")
        labels: dict[str, np.ndarray] = {}
        for study_id, ref_id in sorted({(r["study_id"], r["ref_id"]) for r in pairs.rows}):
            record = json.loads(layout.sidecar_path(root, study_id, ref_id).read_text())
            labels[study_id] = finding_targets(record["findings_main"])
            labels[ref_id] = finding_targets(record["findings_ref"])
        self.pairs, self.augment, self.seed = pairs, augment, seed
        self.studies = sorted(labels)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.studies)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from diffvqa_core.data.augment import photometric_jitter

        study = self.studies[index]
        film = self.pairs.film(study)
        if self.augment:
            film = photometric_jitter(film, np.random.default_rng([self.seed, index, int(torch.randint(2**62, ()))]))
        target = torch.from_numpy(self.labels[study])
        return film, target, torch.ones_like(target)


class FindingClassifier(nn.Module):
    """phi's backbone (normalisation and last-stage tokens as in ``ImageEncoder``) + mean pool + linear."""

    def __init__(self, config, outputs: int = 3 * len(FINDINGS)) -> None:
        super().__init__()
        from diffvqa_core.encoders import ImageEncoder

        # The projector is unused (its width is irrelevant); the backbone loads the config's pretrained weights.
        encoder = ImageEncoder(config, width=8, pretrained=config.image_encoder_pretrained)
        self.encoder = encoder
        self.head = nn.Linear(encoder.backbone.num_features, outputs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, outputs) logits."""
        return self.head(self.encoder.backbone_tokens(images).mean(1))


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy averaged over the labels that count (mask 1): (B, K) each -> scalar."""
    loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
    return (loss * mask).sum() / mask.sum().clamp(min=1.0)


@torch.no_grad()
def predict(model: FindingClassifier, loader: DataLoader, device: torch.device, autocast: bool
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sigmoid scores, targets and masks of a split: (n, K) each."""
    model.eval()
    scores, targets, masks = [], [], []
    for images, labels, mask in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(images.to(device, non_blocking=True))
        scores.append(torch.sigmoid(logits.float()).cpu().numpy())
        targets.append(labels.numpy())
        masks.append(mask.numpy())
    model.train()
    return np.concatenate(scores), np.concatenate(targets), np.concatenate(masks)


def finding_scores(score: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Synthetic labels: presence AUROC (mean over findings), side AUROC, exact-set accuracy of presence at 0.5."""
    from diffvqa_core.metrics import mean_auroc

    names = len(FINDINGS)
    presence_exact = ((score[:, :names] > 0.5) == (target[:, :names] > 0.5)).all(1).mean()
    return {"presence_auroc": mean_auroc(score[:, :names], target[:, :names]),
            "side_auroc": mean_auroc(score[:, names:], target[:, names:]),
            "presence_exact_set": float(presence_exact), "films": int(len(target))}


def chexpert_scores(score: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict:
    """CheXpert labels: AUROC of each label over the films where it counts (None where those hold one class only)
    and their mean."""
    from diffvqa_core.data.layout import CHEXPERT_LABELS
    from diffvqa_core.metrics import mean_auroc

    per_label = {}
    for column, name in enumerate(CHEXPERT_LABELS):
        counted = mask[:, column] > 0
        value = mean_auroc(score[counted, column:column + 1], target[counted, column:column + 1])
        per_label[name] = value if np.isfinite(value) else None  # None: one class only among the counted films
    finite = [v for v in per_label.values() if v is not None]
    return {"mean_auroc": float(np.mean(finite)) if finite else None, "auroc": per_label, "films": int(len(target))}


def encoder_config(args: argparse.Namespace):
    """The preset's DiffVQAConfig with the command's image-encoder choices (pretrained as the preset says)."""
    from diffvqa_core.config import DiffVQAConfig

    config = DiffVQAConfig.from_preset(args.preset)
    if args.random_init:
        config = config.random_init()
    if args.image_encoder:
        config = dataclasses.replace(config, image_encoder=args.image_encoder, image_encoder_weights=None,
                                     image_encoder_overrides=args.image_encoder_overrides or {})
    elif args.image_encoder_overrides is not None:
        config = dataclasses.replace(config, image_encoder_overrides=args.image_encoder_overrides)
    return config


def datasets(args: argparse.Namespace, image_size: int) -> tuple[Dataset, Dataset, str]:
    """Training and validation sets of the chosen source, and its kind ("synthetic" or "chexpert")."""
    if args.data_root is not None:
        return (LabelledFilms(args.data_root, "train", image_size, augment=True, seed=args.seed),
                LabelledFilms(args.data_root, "val", image_size, augment=False, seed=args.seed), "synthetic")
    from train.chexpert import ChexpertFilms, chexpert_index

    options = dict(images_root=args.images_root, views=tuple(args.views), policy=args.uncertain)
    train_index = chexpert_index(args.mimic_cxr, "train", hold_out=args.hold_out, **options)
    val_index = chexpert_index(args.mimic_cxr, "val", **options)
    for name, index in (("training", train_index), ("validation", val_index)):
        if index.missing_images:
            print(f"pretrain-encoder: {index.missing_images} {name} images listed but not on disk were dropped")
    if train_index.held_out_subjects:
        print(f"pretrain-encoder: {train_index.held_out_subjects} training images of {args.hold_out}'s "
              "validation/test patients held out")
    return (ChexpertFilms(train_index, image_size, augment=True, seed=args.seed),
            ChexpertFilms(val_index, image_size, augment=False, seed=args.seed), "chexpert")


def run(args: argparse.Namespace) -> int:
    """Train, evaluate on the validation split, save the backbone and a training log."""
    from diffvqa_core.devices import DeviceError, resolve_device
    from diffvqa_core.weights import set_weights_dir

    try:
        set_weights_dir(args.weights_dir)
        device = resolve_device(args.device)
        return train(args, device)
    except (FileNotFoundError, ValueError, DeviceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def train(args: argparse.Namespace, device: torch.device) -> int:
    """The training loop of ``run`` (flags parsed, device chosen)."""
    import timm

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = encoder_config(args)
    train_set, val_set, kind = datasets(args, config.image_size)
    workers = args.workers if args.workers is not None else min(8 if device.type == "cuda" else 2, os.cpu_count() or 1)
    pin = device.type == "cuda"
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                              drop_last=True, persistent_workers=workers > 0, pin_memory=pin)
    val_loader = DataLoader(val_set, batch_size=64, num_workers=workers, pin_memory=pin)
    if len(train_loader) == 0:
        raise ValueError(f"{len(train_set)} training films are fewer than one batch of {args.batch_size}")
    outputs = int(train_set[0][1].numel())
    model = FindingClassifier(config, outputs).to(device)
    scores = finding_scores if kind == "synthetic" else chexpert_scores
    steps = args.epochs * len(train_loader)
    if args.max_steps:
        steps = min(steps, args.max_steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps)))
    start_from = "random" if not config.image_encoder_pretrained else "pretrained"
    print(f"pretrain-encoder: {len(train_set)} training films, {len(val_set)} validation films ({kind}), {steps} "
          f"steps of {args.batch_size} on {device}; backbone {config.image_encoder} {config.image_encoder_overrides} "
          f"from {start_from} weights")
    start, step, curve, history = time.perf_counter(), 0, [], []
    bar = tqdm(total=steps, desc="pretrain-encoder", unit="step")
    for epoch in range(args.epochs):
        for images, labels, mask in train_loader:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                logits = model(images.to(device, non_blocking=True))
            loss = masked_bce(logits, labels.to(device), mask.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            curve.append(loss.item())
            bar.update()
            bar.set_postfix(loss=f"{np.mean(curve[-20:]):.4f}")
            if step >= steps:
                break
        history.append({"epoch": epoch + 1, "step": step, "train_loss": float(np.mean(curve[-len(train_loader):])),
                        **scores(*predict(model, val_loader, device, args.bf16))})
        tqdm.write(json.dumps(history[-1]))
        if step >= steps:
            break
    bar.close()
    seconds = time.perf_counter() - start
    timm.models.save_for_hf(model.encoder.backbone.cpu(), str(args.out), safe_serialization=True)
    log = {"command": "pretrain-encoder", "source": kind, "data": str(args.data_root or args.mimic_cxr),
           "preset": args.preset, "image_encoder": config.image_encoder,
           "image_encoder_overrides": config.image_encoder_overrides, "start": start_from,
           "image_size": config.image_size, "steps": step, "batch_size": args.batch_size, "lr": args.lr,
           "weight_decay": args.weight_decay, "seed": args.seed, "seconds": round(seconds, 1), "device": str(device),
           "bf16": args.bf16, "threads": torch.get_num_threads(), "history": history,
           "loss_first_20": float(np.mean(curve[:20])), "loss_last_20": float(np.mean(curve[-20:]))}
    if kind == "chexpert":
        log.update(views=args.views, uncertain=args.uncertain, hold_out=str(args.hold_out) if args.hold_out else None)
    (args.out / LOG_FILE).write_text(json.dumps(log, indent=1), encoding="utf-8")
    print(f"saved {args.out / WEIGHTS_FILE} after {step} steps in {seconds:.0f} s; validation {history[-1]}")
    return 0
