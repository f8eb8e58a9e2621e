"""``python -m train pretrain-change``: train the change encoder (not in the paper) on a stream of fresh pairs.

The change encoder (``diffvqa_core.change``) reads the registered pixel pair and learns, from the synthetic
generator's ground truth, a dense change map (the model's adaptive mask F) and one token per finding carrying
what happened to it (added, missing, level changed, with the levels), which the answer decoder reads. Training
it alone first is cheap (no image encoder, no prior, no decoder) and can see far more pairs than a training
set holds: pairs are simulated on the fly (``train.online_pairs``), never the same twice.

Every ``--eval-every`` steps it is scored on fixed validation pairs drawn with another seed, on phantoms and,
with ``--backgrounds``, on real films (``--val-backgrounds`` holds films out of training): change-map pixel
AUROC and pointing game, and what its tokens say when read back as a difference answer
(``change.read_findings`` then the benchmark grammar): change F1, exact answers on changed pairs, and
"nothing has changed." precision / recall. That read-back is an upper bound on what the answer decoder can be
taught to say from these tokens, and tells the two apart when the full model falls short.

Writes ``OUT/model.safetensors`` (the encoder's state dict), ``OUT/change_encoder.json`` (its shape), and
``OUT/training_log.json``; the best validation change F1 so far is kept, the weights are written at every
evaluation so that an interrupted run leaves a usable encoder. ``change_encoder_weights: OUT`` in a model config
loads it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from diffvqa_core.change import CONFIG_FILE, WEIGHTS_FILE
from train.fresh_pair_runs import add_stream_arguments, collate, training_loader, validation_pairs, warmup_cosine

LOG_FILE = "training_log.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options."""
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--steps", type=int, default=3000,
                        help="training steps; 0 writes the --init encoder as it is (to take the change encoder out "
                             "of a model checkpoint, for change_encoder_weights)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--mask-weight", type=float, default=1.0, help="weight of the change-map loss")
    parser.add_argument("--label-weight", type=float, default=1.0, help="weight of the finding-label loss")
    parser.add_argument("--image-size", type=int, default=192, help="the model's input side")
    parser.add_argument("--input-size", type=int, default=None, help="side the encoder reads (default: image size)")
    parser.add_argument("--widths", type=int, nargs=4, default=None, help="channels of the four stages")
    parser.add_argument("--token-width", type=int, default=None)
    parser.add_argument("--multiscale-tokens", action="store_true",
                        help="the finding queries also read the stride-8 grid (small findings)")
    add_stream_arguments(parser, generation_size=(256, 512), val_pairs=300)
    parser.add_argument("--reverse-fraction", type=float, default=0.0,
                        help="share of each batch read backwards (main and reference swapped, added and missing "
                             "swapped): the generator adds findings 2.6x as often as it removes them, and without "
                             "this the encoder read most removals as additions")
    parser.add_argument("--residual-scale", type=float, default=1.0,
                        help="residual misregistration left on each registered pair, in multiples of ~1 px at the "
                             "corners (training and validation pairs): the learned registration leaves ~2.6 px on "
                             "real films, and an encoder trained at 1 px read that misalignment as change")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-seed", type=int, default=None,
                        help="seed of the validation pairs (default: --seed + 1); keep it to compare runs")
    parser.add_argument("--init", type=Path,
                        help="start from this pretrain-change output, or from the change encoder inside a model "
                             "checkpoint folder (config.json + model.safetensors, e.g. assets/demo_model); its shape, "
                             "with --multiscale-tokens the stride-8 tokens added at random, and with --input-size "
                             "another side (the token positions resized)")


def read_backwards(batch: dict, chosen: torch.Tensor) -> dict:
    """The batch with the ``chosen`` pairs read backwards: the registered main as the reference and the reference
    as the main (both lie on the reference frame, so the change mask stays), their labels reversed
    (``finding_labels.reverse_pair``)."""
    from diffvqa_core.data.finding_labels import reverse_pair

    if not bool(chosen.any()):
        return batch
    pick = chosen.view(-1, 1, 1, 1)
    out = dict(batch)
    out["ref"] = torch.where(pick, batch["registered_main"], batch["ref"])
    out["registered_main"] = torch.where(pick, batch["ref"], batch["registered_main"])
    reversed_rows = torch.from_numpy(reverse_pair(batch["finding_labels"].numpy()))
    out["finding_labels"] = torch.where(chosen.view(-1, 1, 1), reversed_rows, batch["finding_labels"])
    return out


@torch.no_grad()
def score(encoder, items: list[dict], batch_size: int = 32) -> dict[str, float]:
    """Change-map localisation and the read-back difference answers of ``encoder`` on fixed pairs."""
    from diffvqa_core.change import change_map, read_findings
    from diffvqa_core.data.finding_labels import decode_pair
    from diffvqa_core.data.grammar import difference_answer
    from diffvqa_core.metrics import change_agreement, mask_auroc, pointing_game

    was_training = encoder.training
    encoder.eval()
    maps, changes, answers = [], [], []
    for start in range(0, len(items), batch_size):
        batch = collate(items[start:start + batch_size])
        output = encoder(batch["ref"], batch["registered_main"])
        probability = change_map(output.mask_logits, batch["ref"].shape[-1])[:, 0].numpy()
        predicted = read_findings(output)
        for i in range(len(predicted)):
            truth = difference_answer(*decode_pair(batch["finding_labels"][i].numpy()))
            answers.append((truth, difference_answer(*decode_pair(predicted[i]))))
            mask = batch["change_mask"][i].numpy() > 0.5
            if mask.any():
                maps.append(probability[i])
                changes.append(mask)
    encoder.train(was_training)
    agreement = change_agreement(answers)
    return {"pairs": len(items), "changed_pairs": len(changes),
            "map_auroc": mask_auroc(maps, changes) if changes else None,
            "pointing_game": float(np.mean([pointing_game(m, c) for m, c in zip(maps, changes)])) if changes else None,
            **{f"answer_{k}": v for k, v in agreement.items() if k != "questions"}}


def resize_positions(positions: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, g*g, C) learned token positions on a g x g grid -> (1, grid*grid, C), bicubic (a new input side)."""
    old = int(round(positions.shape[1] ** 0.5))
    if old == grid:
        return positions
    square = positions.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    square = torch.nn.functional.interpolate(square, size=(grid, grid), mode="bicubic", align_corners=False)
    return square.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)


def initial_encoder(source: Path, multiscale_tokens: bool = False, input_size: int | None = None):
    """The change encoder to start from: a ``pretrain-change`` output, or the ``change_encoder.*`` weights of a model
    checkpoint folder (its ``config.json`` gives the shape). Parts the stored encoder lacks (the stride-8 tokens
    with ``multiscale_tokens``) start at random; with another ``input_size`` the token positions are resized."""
    from diffvqa_core.change import ChangeEncoder, ChangeEncoderConfig

    if (source / CONFIG_FILE).is_file():
        shape = json.loads((source / CONFIG_FILE).read_text(encoding="utf-8"))
        state = load_file(str(source / WEIGHTS_FILE))
    elif (source / "config.json").is_file():
        shape = json.loads((source / "config.json").read_text(encoding="utf-8")).get("change_encoder_shape")
        if not shape:
            raise ValueError(f"{source}/config.json has no change encoder (change_encoder_shape)")
        prefix = "change_encoder."
        state = {k[len(prefix):]: v.float() for k, v in load_file(str(source / WEIGHTS_FILE)).items()
                 if k.startswith(prefix)}
    else:
        raise FileNotFoundError(f"{source} holds neither {CONFIG_FILE} (pretrain-change) nor config.json (a model)")
    shape["multiscale_tokens"] = bool(shape.get("multiscale_tokens")) or multiscale_tokens
    if input_size:
        shape["input_size"] = input_size
    encoder = ChangeEncoder(ChangeEncoderConfig(**shape))
    grid = encoder.config.input_size // 16
    for name, side in (("positions", grid), ("fine_positions", 2 * grid)):
        if name in state:
            state[name] = resize_positions(state[name], side)
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"{source}: weights the change encoder does not have: {', '.join(unexpected)}")
    print(f"started from {source} (input {encoder.config.input_size} px); "
          f"new: {', '.join(missing) if missing else 'nothing'}")
    return encoder


def save(encoder, out: Path) -> None:
    """Writes the encoder's weights and shape into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in encoder.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    (out / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(encoder.config), indent=1) + "\n", encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    """Train, validate every ``--eval-every`` steps, keep the weights and a training log."""
    from diffvqa_core.change import ChangeEncoder, ChangeEncoderConfig, change_label_loss, change_mask_loss
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.init:
        encoder = initial_encoder(args.init, args.multiscale_tokens, args.input_size)
    else:
        shape = {"input_size": args.input_size or args.image_size}
        if args.widths:
            shape["widths"] = tuple(args.widths)
        if args.token_width:
            shape["token_width"] = args.token_width
        shape["multiscale_tokens"] = args.multiscale_tokens
        encoder = ChangeEncoder(ChangeEncoderConfig(**shape))
    if args.steps == 0:
        if not args.init:
            raise SystemExit("pretrain-change: --steps 0 writes the --init encoder unchanged; give --init")
        save(encoder, args.out)
        print(f"saved {args.out / WEIGHTS_FILE} (the encoder of {args.init}, not trained)")
        return 0
    validation = validation_pairs(args, args.seed + 1 if args.val_seed is None else args.val_seed, args.image_size,
                                  residual_scale=args.residual_scale)
    loader = training_loader(args, args.image_size, residual_scale=args.residual_scale)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    schedule = warmup_cosine(optimizer, args.steps, warmup=max(1, args.steps // 30))
    parameters = sum(p.numel() for p in encoder.parameters())
    print(f"pretrain-change: {parameters / 1e6:.2f} M parameters, {args.steps} steps of {args.batch_size} fresh pairs, "
          f"input {encoder.config.input_size} px, backgrounds {args.backgrounds or 'none'} "
          f"(fraction {args.background_fraction if args.backgrounds else 0.0})")
    history, curve, best = [], [], None
    start = time.perf_counter()
    bar = tqdm(total=args.steps, desc="pretrain-change", unit="step")
    encoder.train()
    flips = torch.Generator().manual_seed(args.seed)
    for step, batch in enumerate(loader, start=1):
        if args.reverse_fraction > 0:
            batch = read_backwards(batch, torch.rand(len(batch["ref"]), generator=flips) < args.reverse_fraction)
        output = encoder(batch["ref"], batch["registered_main"])
        mask_loss = change_mask_loss(output.mask_logits, batch["change_mask"])
        label_loss = change_label_loss(output, batch["finding_labels"], batch["pair_labels"])
        loss = args.mask_weight * mask_loss + args.label_weight * label_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        curve.append((mask_loss.item(), label_loss.item()))
        bar.update()
        bar.set_postfix(mask=f"{np.mean([c[0] for c in curve[-50:]]):.4f}",
                        labels=f"{np.mean([c[1] for c in curve[-50:]]):.4f}")
        if step % args.eval_every == 0 or step == args.steps:
            scores = {name: score(encoder, items) for name, items in validation.items()}
            entry = {"step": step, "pairs_seen": step * args.batch_size, "seconds": round(time.perf_counter() - start),
                     "mask_loss": float(np.mean([c[0] for c in curve[-args.eval_every:]])),
                     "label_loss": float(np.mean([c[1] for c in curve[-args.eval_every:]])), **scores}
            history.append(entry)
            tqdm.write(json.dumps(entry))
            f1 = float(np.mean([s["answer_f1"] for s in scores.values()]))
            if best is None or f1 >= best:
                best = f1
                save(encoder, args.out)
            log = {"command": "pretrain-change", **{k: str(v) if isinstance(v, Path) else v
                                                    for k, v in vars(args).items() if not k.startswith("_")},
                   "parameters": parameters, "threads": torch.get_num_threads(), "best_mean_answer_f1": best,
                   "history": history}
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / LOG_FILE).write_text(json.dumps(log, indent=1), encoding="utf-8")
        if step >= args.steps:
            break
    bar.close()
    print(f"saved {args.out / WEIGHTS_FILE} (best mean validation change F1 {best:.3f}) after "
          f"{time.perf_counter() - start:.0f} s")
    return 0
