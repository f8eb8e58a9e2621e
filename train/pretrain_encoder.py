"""``python -m train pretrain-encoder``: supervised finding classification of the image encoder's backbone.

The paper's phi is a Swin-B "first pretrained on ImageNet-21k and further trained on classification tasks on
the MIMIC-CXR dataset with CheXpert labels" (sec. 3.3), then frozen for stage 1 (sec. 3.6). Neither those
weights nor ImageNet are reachable here, and a random-init backbone frozen for stage 1 gives the decoder
random features to read. This command is the stand-in for that classification pretraining: it trains the
configured timm backbone (the same ``ImageEncoder`` normalisation and last-stage tokens the model uses)
to recognise, on single films of a benchmark root's *training split*, which findings a study holds and on
which side (multi-label: present / left / right for each of the 30 official names; labels from the
synthetic ground-truth sidecars). No change masks, poses or answers are used. The backbone is saved as
``model.safetensors`` under timm's own parameter names, so the model loads it through timm's pretrained
path (``image_encoder_pretrained: true``, ``image_encoder_weights: <out>``) exactly as it would load the
paper's checkpoint.

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
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from diffvqa_core.data.vocabulary import FINDINGS

WEIGHTS_FILE = "model.safetensors"
LOG_FILE = "training_log.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options."""
    parser.add_argument("--data-root", required=True, type=Path, help="synthetic benchmark root (train synth)")
    parser.add_argument("--out", required=True, type=Path, help="output directory for model.safetensors")
    parser.add_argument("--preset", default="tiny", help="model preset whose image encoder is trained")
    parser.add_argument("--image-encoder", default=None,
                        help="timm model name replacing the preset's (give the same in the training config)")
    parser.add_argument("--image-encoder-overrides", type=json.loads, default=None, metavar="JSON",
                        help='timm keyword arguments replacing the preset\'s, e.g. \'{"depths": [1, 1, 2, 1]}\'')
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


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
    """One item per study of a split: the film as model input (3, S, S) and its ``finding_targets``."""

    def __init__(self, root: Path, split: str, image_size: int, augment: bool, seed: int) -> None:
        from diffvqa_core.data import layout
        from diffvqa_core.data.reader import DiffVQADataset

        pairs = DiffVQADataset(root, split=split, image_size=image_size)
        if not pairs.has_ground_truth:
            raise ValueError(f"{root} has no {layout.GROUND_TRUTH_DIR}/ sidecars: pretrain-encoder needs a "
                             "synthetic benchmark (python -m train synth)")
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

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from diffvqa_core.data.augment import photometric_jitter

        study = self.studies[index]
        film = self.pairs.film(study)
        if self.augment:
            film = photometric_jitter(film, np.random.default_rng([self.seed, index, int(torch.randint(2**62, ()))]))
        return film, torch.from_numpy(self.labels[study])


class FindingClassifier(nn.Module):
    """phi's backbone (normalisation and last-stage tokens as in ``ImageEncoder``) + mean pool + linear."""

    def __init__(self, config) -> None:
        super().__init__()
        from diffvqa_core.encoders import ImageEncoder

        encoder = ImageEncoder(config, width=8, pretrained=False)  # projector unused; its width is irrelevant
        self.encoder = encoder
        self.head = nn.Linear(encoder.backbone.num_features, 3 * len(FINDINGS))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, 90) logits."""
        return self.head(self.encoder.backbone_tokens(images).mean(1))


@torch.no_grad()
def evaluate(model: FindingClassifier, loader: DataLoader) -> dict[str, float]:
    """Presence AUROC (mean over findings) and exact-set accuracy of presence at 0.5 on a split."""
    from diffvqa_core.metrics import mean_auroc

    model.eval()
    scores, targets = [], []
    for images, labels in loader:
        scores.append(torch.sigmoid(model(images)).numpy())
        targets.append(labels.numpy())
    model.train()
    score, target = np.concatenate(scores), np.concatenate(targets)
    names = len(FINDINGS)
    presence_exact = ((score[:, :names] > 0.5) == (target[:, :names] > 0.5)).all(1).mean()
    return {"presence_auroc": mean_auroc(score[:, :names], target[:, :names]),
            "side_auroc": mean_auroc(score[:, names:], target[:, names:]),
            "presence_exact_set": float(presence_exact), "films": int(len(target))}


def run(args: argparse.Namespace) -> int:
    """Train, evaluate on the validation split, save the backbone and a training log."""
    from diffvqa_core.config import DiffVQAConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = DiffVQAConfig.from_preset(args.preset).random_init()
    if args.image_encoder:
        config = dataclasses.replace(config, image_encoder=args.image_encoder,
                                     image_encoder_overrides=args.image_encoder_overrides or {})
    elif args.image_encoder_overrides is not None:
        config = dataclasses.replace(config, image_encoder_overrides=args.image_encoder_overrides)
    train_set = LabelledFilms(args.data_root, "train", config.image_size, augment=True, seed=args.seed)
    val_set = LabelledFilms(args.data_root, "val", config.image_size, augment=False, seed=args.seed)
    workers = min(2, os.cpu_count() or 1)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                              drop_last=True, persistent_workers=True)
    val_loader = DataLoader(val_set, batch_size=64, num_workers=workers)
    model = FindingClassifier(config)
    steps = args.epochs * len(train_loader)
    if args.max_steps:
        steps = min(steps, args.max_steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps)))
    loss_fn = nn.BCEWithLogitsLoss()
    print(f"pretrain-encoder: {len(train_set)} training films, {len(val_set)} validation films, {steps} steps "
          f"of {args.batch_size}; backbone {config.image_encoder} {config.image_encoder_overrides}")
    start, step, curve, history = time.perf_counter(), 0, [], []
    bar = tqdm(total=steps, desc="pretrain-encoder", unit="step")
    for epoch in range(args.epochs):
        for images, labels in train_loader:
            loss = loss_fn(model(images), labels)
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
                        **evaluate(model, val_loader)})
        tqdm.write(json.dumps(history[-1]))
        if step >= steps:
            break
    bar.close()
    seconds = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.encoder.backbone.state_dict().items()}
    save_file(state, str(args.out / WEIGHTS_FILE), metadata={"format": "pt", "timm_model": config.image_encoder})
    log = {"command": "pretrain-encoder", "data_root": str(args.data_root), "preset": args.preset,
           "image_encoder": config.image_encoder, "image_encoder_overrides": config.image_encoder_overrides,
           "image_size": config.image_size, "steps": step, "batch_size": args.batch_size, "lr": args.lr,
           "weight_decay": args.weight_decay, "seed": args.seed, "seconds": round(seconds, 1),
           "threads": torch.get_num_threads(), "history": history,
           "loss_first_20": float(np.mean(curve[:20])), "loss_last_20": float(np.mean(curve[-20:]))}
    (args.out / LOG_FILE).write_text(json.dumps(log, indent=1), encoding="utf-8")
    print(f"saved {args.out / WEIGHTS_FILE} after {step} steps in {seconds:.0f} s; validation {history[-1]}")
    return 0
