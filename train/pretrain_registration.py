"""``python -m train pretrain-registration``: train the micro affine registration alone (not in the paper) on fresh
pairs, with the generator's pose as the target.

Inside the model, the registration (paper eq. 1) learns only through the answer loss and the near-identity
regulariser (eq. 2), plus, in the demo, a supervised pose term (``alpha_pose``) during a few hundred steps: on
held-out real films it left 63% of the pose difference between the visits, and the change heads, which read the
registered pair, then named changes with F1 0.45 where the generator's true pose gave 0.64 (MODEL_CARD.md).
Trained alone, the registration is a small CNN and sees thousands of pairs in minutes: pairs are simulated on the
fly (``train.online_pairs``, half of them on real films with ``--backgrounds``), and the loss is the mean distance
in pixels by which the image corners stay misplaced (``diffvqa_core.losses.pose_loss``).

Every ``--eval-every`` steps it is scored on fixed validation pairs of another seed, phantoms and (with
``--val-backgrounds``) real films held out of training: the corner error left, as a share of the error before
registration (the figure MODEL_CARD.md reports). Writes ``OUT/model.safetensors`` (the registration's state
dict), ``OUT/registration.json`` (its shape: ``registration_size``, ``registration_channels``,
``registration_pool``) and ``OUT/training_log.json``; the best validation mean is kept.
``registration_weights: OUT`` in a model config loads it (the config's registration shape must match).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_file
from tqdm import tqdm

from diffvqa_core.registration import SHAPE_FILE, WEIGHTS_FILE
from train.fresh_pair_runs import add_stream_arguments, collate, training_loader, validation_pairs, warmup_cosine

LOG_FILE = "training_log.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m train pretrain-registration``."""
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--image-size", type=int, default=192, help="the model's input side")
    parser.add_argument("--size", type=int, default=128, help="side the registration CNN reads (registration_size)")
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 64],
                        help="channels of its stride-2 layers (registration_channels)")
    parser.add_argument("--pool", type=int, default=4, help="side of its pooled grid (registration_pool)")
    add_stream_arguments(parser, generation_size=(256, 256, 384), val_pairs=200)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--val-seed", type=int, default=1, help="seed of the validation pairs")
    parser.add_argument("--init", type=Path, help="start from this pretrain-registration output (same shape)")


@torch.no_grad()
def corner_error_left(registration, batch: dict, image_size: int, chunk: int = 50) -> float:
    """Mean corner error after registration as a share of the error before it (1 = no better than identity)."""
    from diffvqa_core.losses import pose_loss
    from diffvqa_core.registration import identity_theta

    was_training = registration.training
    registration.eval()
    count = len(batch["main"])
    theta = torch.cat([registration(batch["main"][i:i + chunk], batch["ref"][i:i + chunk])
                       for i in range(0, count, chunk)])
    registration.train(was_training)
    before = pose_loss(identity_theta(count), batch["gt_theta"], image_size).item()
    return pose_loss(theta, batch["gt_theta"], image_size).item() / before


def save(registration, args: argparse.Namespace) -> None:
    """Writes the registration's weights and shape into ``args.out``."""
    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in registration.state_dict().items()}
    save_file(state, str(args.out / WEIGHTS_FILE), metadata={"format": "pt"})
    shape = {"registration_size": args.size, "registration_channels": list(args.channels),
             "registration_pool": args.pool}
    (args.out / SHAPE_FILE).write_text(json.dumps(shape, indent=1) + "\n", encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    """Train, validate every ``--eval-every`` steps, keep the best weights and a training log."""
    from diffvqa_core.losses import pose_loss
    from diffvqa_core.registration import AffineRegistration, read_registration_shape
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    registration = AffineRegistration(args.size, tuple(args.channels), args.pool)
    if args.init:
        shape = read_registration_shape(args.init)
        if shape != {"registration_size": args.size, "registration_channels": tuple(args.channels),
                     "registration_pool": args.pool}:
            raise ValueError(f"--init {args.init} has the shape {shape}; pass its --size, --channels and --pool")
        load_model(registration, str(args.init / WEIGHTS_FILE))
    validation = {name: collate(items) for name, items in
                  validation_pairs(args, args.val_seed, args.image_size, residual=False).items()}
    loader = training_loader(args, args.image_size, residual=False)
    optimizer = torch.optim.AdamW(registration.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    schedule = warmup_cosine(optimizer, args.steps, warmup=30)
    history, curve, best = [], [], None
    start = time.perf_counter()
    bar = tqdm(total=args.steps, desc="pretrain-registration", unit="step")
    registration.train()
    for step, batch in enumerate(loader, start=1):
        loss = pose_loss(registration(batch["main"], batch["ref"]), batch["gt_theta"], args.image_size)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        curve.append(loss.item())
        bar.update()
        bar.set_postfix(corner_px=f"{np.mean(curve[-50:]):.3f}")
        if step % args.eval_every == 0 or step == args.steps:
            left = {name: corner_error_left(registration, items, args.image_size)
                    for name, items in validation.items()}
            entry = {"step": step, "pairs_seen": step * args.batch_size, "seconds": round(time.perf_counter() - start),
                     "train_corner_px": float(np.mean(curve[-args.eval_every:])),
                     **{f"{name}_error_left": round(value, 4) for name, value in left.items()}}
            history.append(entry)
            tqdm.write(json.dumps(entry))
            mean = float(np.mean(list(left.values())))
            if best is None or mean <= best:
                best = mean
                save(registration, args)
            log = {"command": "pretrain-registration", **{k: str(v) if isinstance(v, Path) else v
                                                          for k, v in vars(args).items() if not k.startswith("_")},
                   "threads": torch.get_num_threads(), "best_mean_error_left": best, "history": history}
            (args.out / LOG_FILE).write_text(json.dumps(log, indent=1), encoding="utf-8")
        if step >= args.steps:
            break
    bar.close()
    print(f"saved {args.out / WEIGHTS_FILE} (best mean corner error left {best:.3f}) after "
          f"{time.perf_counter() - start:.0f} s")
    return 0
