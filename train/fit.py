"""``python -m train fit``: the paper's two-stage training (sec. 3.6 and 4) on HF Accelerate.

The same script runs on CPU, one GPU, or many GPUs / nodes::

    python -m train fit --config train/configs/paper.yaml --data-root DATA --output runs/paper
    accelerate launch --num_processes 4 -m train fit --config train/configs/paper.yaml ...
    torchrun --nproc_per_node 4 -m train fit --config train/configs/paper.yaml ...

Stage 1 (``epochs_stage1`` epochs) freezes the backbone of the image encoder phi (its new projector trains),
stage 2 trains everything; lambda of eq. 7 follows ``diffvqa_core.losses.lambda_schedule`` over the global
progress of both stages. Each epoch ends with validation by the official protocol; the best-CIDEr model is kept
in ``OUTPUT/best`` and the resumable state in ``OUTPUT/last`` (see ``train.checkpoint``). ``--resume`` continues
from ``OUTPUT/last`` exactly: same step, optimizer, scheduler, lambda, RNG states and position in the epoch.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, gather_object, set_seed
from tqdm.auto import tqdm

from diffvqa_core.devices import DEVICE_CHOICES
from diffvqa_core.weights import set_weights_dir
from train import state_io
from train.batches import EpochBatchSampler, open_split, question_weights, training_loader
from train.checkpoint import (
    TrainState,
    check_same_architecture,
    check_same_data_order,
    read_train_state,
    resume_directory,
    save_checkpoint,
)
from train.config import MIXED_PRECISION, TrainConfig
from train.optim import build_optimizer, build_scheduler
from train.preflight import ScorerUnavailableError, check_scorer
from train.run_log import RunLog
from train.validation import validate
from train.warm_start import load_matching_weights, own_weight_prefixes, unplaced_named_tensors

# Synthetic ground truth the losses not in the paper read: the change encoder's terms, the supervised pose term.
CHANGE_TARGETS = ("change_mask", "finding_labels", "pair_labels", "gt_theta")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the flags of ``python -m train fit``."""
    parser.add_argument("--config", help="YAML training config (see train/configs/); optional with --init-from")
    parser.add_argument("--data-root", help="benchmark directory (overrides data_root of the config)")
    parser.add_argument("--output", help="run directory (overrides output_dir of the config)")
    parser.add_argument("--max-steps", type=int, help="stop after this global step (schedules still span "
                        "the configured epochs, so --resume continues the same run)")
    parser.add_argument("--resume", action="store_true", help="continue exactly from OUTPUT/last")
    parser.add_argument("--mixed-precision", choices=MIXED_PRECISION, help="overrides mixed_precision")
    parser.add_argument("--seed", type=int, help="overrides seed (initialisation, data order, augmentation): "
                                                 "repeat a row with other seeds to see run-to-run variation")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                        help="auto (default): the GPU(s) when PyTorch sees one, else the CPU")
    parser.add_argument("--weights-dir", metavar="DIR", help="folder of pretrained parts laid out by hub id "
                        "(WEIGHTS_DIR/gpt2, WEIGHTS_DIR/microsoft/rad-dino, ...; see docs/reproducing.md)")
    from train import finetune

    finetune.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Runs training from parsed flags; returns the exit status (2 with a message on a usage error)."""
    if getattr(args, "init_from", None):
        from train import finetune

        return finetune.run(args)
    if not args.config:
        print("error: fit needs --config (or --init-from CHECKPOINT to fine-tune a trained model)", file=sys.stderr)
        return 2
    try:
        set_weights_dir(args.weights_dir)
        config = TrainConfig.from_yaml(args.config)
        overrides = {"data_root": args.data_root, "output_dir": args.output, "mixed_precision": args.mixed_precision,
                     "seed": args.seed}
        config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
        fit(config, max_steps=args.max_steps, resume=args.resume, device=args.device)
    except (FileNotFoundError, ValueError, ScorerUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def fit(config: TrainConfig, *, max_steps: int | None = None, resume: bool = False,
        device: str = "auto", model=None, train_set=None, val_set=None) -> TrainState:
    """Trains (or resumes) a run described by ``config``.

    Before anything is built, the scorer that validation needs is checked (``train.preflight``) and, for a new
    run, every pretrained part is located (``diffvqa_core.weights``).

    Args:
        config: the training config (data root and output directory included).
        max_steps: stop once the global step reaches this (None: train all epochs).
        resume: continue from ``OUTPUT/last``.
        device: "auto" (GPUs when present), "cpu" or "cuda".
        model: start from this model instead of building one (a fine-tune, ``train.finetune``; not on resume).
        train_set, val_set: use these instead of opening the splits of ``config.data_root``.

    Returns:
        The state the run stopped in (also in ``OUTPUT/last/train_state.json``).

    Raises:
        FileNotFoundError: wrong data root, or ``resume`` without a checkpoint.
        ValueError: config errors, empty splits, a checkpoint of another architecture.
        ScorerUnavailableError: Java or a writable pycocoevalcap is missing (said in seconds, not after an epoch).
        diffvqa_core.weights.WeightsNotFoundError: a pretrained part is not on this machine.
    """
    from diffvqa_core import DiffVQAModel
    from diffvqa_core.devices import resolve_device
    from diffvqa_core.tokenizer import tokenizer_for
    from diffvqa_core.weights import pretrained_sources

    check_scorer()
    accelerator = Accelerator(
        cpu=resolve_device(device).type == "cpu",
        mixed_precision=config.mixed_precision,
        # Stage 1 leaves phi without gradients and the ablations switch losses (hence heads) off.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    say = accelerator.print
    output = Path(config.output_dir)
    set_seed(config.seed)
    model_config = config.model_config()
    # Every missing pretrained part named, before any work (a given model has its weights already).
    sources = [] if resume or model is not None else pretrained_sources(model_config)
    for source in sources:
        say(f"pretrained {source.describe()}")
    if train_set is None:
        train_set = open_split(config.data_root, "train", question_types=config.question_types,
                               image_size=model_config.image_size, augment=config.augment, seed=config.seed)
    if val_set is None:
        val_set = open_split(config.data_root, "val", question_types=config.question_types,
                             image_size=model_config.image_size, augment=False)

    if resume:
        last = resume_directory(output / "last")
        model = DiffVQAModel.from_pretrained(last)
        check_same_architecture(model.config.to_dict(), resolved_architecture(model_config), last)
        state = read_train_state(last)
        check_same_data_order(last, config, state, accelerator.num_processes)
    elif model is not None:
        state = TrainState(num_processes=accelerator.num_processes)
    else:
        model = DiffVQAModel(model_config, tokenizer_for(model_config))
        state = TrainState(num_processes=accelerator.num_processes)
        if config.init_weights:
            named_parts = tuple(config.init_parts or ())
            report = load_matching_weights(model, config.init_weights, keep=own_weight_prefixes(model),
                                           only=named_parts)
            say(f"init_weights {config.init_weights}: {len(report['loaded'])} tensors loaded "
                f"(+{len(report['tied'])} tied to one of them), "
                f"{len(report['new']) + len(report['mismatched'])} new or reshaped (start as built), "
                f"{len(report['kept'])} kept from their own weights, "
                f"{len(report['not_taken'])} outside init_parts (start as built), {len(report['unused'])} unused")
            left = unplaced_named_tensors(report, named_parts)
            if left:
                say(f"warning: init_parts: {len(left)} tensors of the named parts have no place in this model "
                    f"(its config differs from the checkpoint's there): {', '.join(left[:6])}"
                    + (" ..." if len(left) > 6 else ""))

    sampler = EpochBatchSampler(len(train_set), config.train_batch_size, rank=accelerator.process_index,
                                world_size=accelerator.num_processes, seed=config.seed,
                                epoch_samples=config.epoch_samples,
                                weights=question_weights(train_set, config.question_weights))
    if sampler.steps_per_epoch == 0:
        raise ValueError(f"the training split has {len(train_set)} rows, fewer than one global batch of "
                         f"{config.train_batch_size} x {accelerator.num_processes} processes")
    state.total_steps = sampler.steps_per_epoch * config.total_epochs
    # DDP registers only parameters that require gradients when it wraps the model: unfreeze phi first.
    model.set_image_encoder_trainable(True)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, state.total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    if resume:
        optimizer.load_state_dict(state_io.load_optimizer(last))
        scheduler.load_state_dict(state_io.load_scheduler(last))
        state_io.restore_rng_state(state_io.load_rng_state(last, accelerator.process_index))
    elif accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        (output / "train_config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), "utf-8")

    log = RunLog(output, start_step=state.global_step, enabled=accelerator.is_main_process)
    stop = min(max_steps or state.total_steps, state.total_steps)
    say(f"{len(train_set)} training / {len(val_set)} validation rows ({train_set.missing + val_set.missing} "
        f"dropped for missing images); {sampler.steps_per_epoch} steps per epoch "
        f"x {config.total_epochs} epochs on {accelerator.num_processes} process(es), {accelerator.device}")
    progress = tqdm(total=stop, initial=state.global_step, desc="fit", disable=not accelerator.is_main_process)
    samples_per_step = config.train_batch_size * accelerator.num_processes
    while state.epoch < config.total_epochs and state.global_step < stop:
        model.train()
        unwrapped.set_image_encoder_trainable(state.epoch >= config.epochs_stage1)
        sampler.set_epoch(state.epoch, start=state.batch_in_epoch)
        tick = time.perf_counter()
        for batch in training_loader(train_set, sampler, seed=config.seed, num_workers=config.num_workers):
            lam = fusion_lambda(unwrapped, state.global_step / state.total_steps)
            lr = scheduler.get_last_lr()[0]
            terms = train_step(accelerator, model, unwrapped, optimizer, batch, lam, config.max_grad_norm)
            scheduler.step()
            state.global_step, state.batch_in_epoch, state.lam = state.global_step + 1, state.batch_in_epoch + 1, lam
            now = time.perf_counter()
            speed = samples_per_step / max(now - tick, 1e-9)
            tick = now
            if state.global_step % config.log_every == 0:
                terms = {k: v.item() for k, v in accelerator.reduce(terms, reduction="mean").items()}
                log.log("train", state.global_step, {
                    "epoch": state.epoch, "stage": 1 if state.epoch < config.epochs_stage1 else 2,
                    **terms, "lambda": lam, "lr": lr, "samples_per_s": speed,
                })
                progress.set_postfix(loss=f"{terms['loss']:.4f}", samples_s=f"{speed:.1f}", refresh=False)
            progress.update(1)
            if state.global_step >= stop:
                break
            epoch_continues = state.batch_in_epoch < sampler.steps_per_epoch  # the epoch's end saves anyway
            if state.global_step % config.save_every_steps == 0 and epoch_continues:
                save_last(accelerator, unwrapped, optimizer, scheduler, state, config)
        if state.batch_in_epoch >= sampler.steps_per_epoch:
            end_epoch(accelerator, unwrapped, val_set, state, config, log)
        save_last(accelerator, unwrapped, optimizer, scheduler, state, config)
    progress.close()
    log.close()
    accelerator.wait_for_everyone()
    say(f"stopped at step {state.global_step}/{state.total_steps}; best validation CIDEr {state.best_cider}")
    if accelerator.num_processes > 1:
        print(f"process {accelerator.process_index}: stopped at step {state.global_step}", flush=True)
    return state


def resolved_architecture(model_config) -> dict:
    """The model config as a built model records it: a change encoder loaded from ``change_encoder_weights``
    writes its shape into ``change_encoder_shape`` (diffvqa_core.model), so a run's config, which leaves that
    shape to the weights, is compared with its own checkpoint by the shape those weights have."""
    wanted = model_config.to_dict()
    if model_config.change_encoder and model_config.change_encoder_weights and not model_config.change_encoder_shape:
        import json

        from diffvqa_core.change import CONFIG_FILE, ChangeEncoderConfig

        saved = Path(model_config.change_encoder_weights) / CONFIG_FILE  # the shape alone, not the weights
        shape = dataclasses.asdict(ChangeEncoderConfig(**json.loads(saved.read_text(encoding="utf-8"))))
        wanted = dataclasses.replace(model_config, change_encoder_shape=shape).to_dict()
    return wanted


def fusion_lambda(model, progress: float) -> float:
    """Lambda of eq. 7 at ``progress`` of the whole run, from the model's lambda_start / lambda_end."""
    from diffvqa_core.losses import lambda_schedule

    return lambda_schedule(progress, model.config.lambda_start, model.config.lambda_end)


def train_step(accelerator: Accelerator, model, unwrapped, optimizer, batch, lam: float,
               max_grad_norm: float | None) -> dict[str, torch.Tensor]:
    """One optimiser step on a collated batch; returns the detached loss and each of its terms."""
    device = accelerator.device
    text = {k: v.to(device) for k, v in unwrapped.tokenize(list(batch["question"]), list(batch["answer"])).items()}
    targets = {key: batch[key].to(device) for key in CHANGE_TARGETS if key in batch}  # synthetic ground truth
    out = model(batch["main"].to(device), batch["ref"].to(device), text["question_ids"], text["question_mask"],
                text["answer_ids"], text["answer_mask"], lam=lam, **targets)
    accelerator.backward(out.loss)
    terms = {"loss": out.loss.detach().float(), **{k: v.detach().float() for k, v in out.terms.items()}}
    if max_grad_norm is not None:
        terms["grad_norm"] = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm).detach().float()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return terms


def end_epoch(accelerator: Accelerator, model, val_set, state: TrainState, config: TrainConfig, log: RunLog) -> None:
    """Validates at the training's current lambda, keeps OUTPUT/best when CIDEr improved, and moves the state to
    the next epoch."""
    scores = validate(accelerator, model, val_set, config, lam=state.lam)
    log.log("val", state.global_step, {"epoch": state.epoch, "lambda": state.lam, **scores})
    accelerator.print(f"epoch {state.epoch + 1}/{config.total_epochs}: validation at lambda {state.lam:.3f}: "
                      + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    if state.best_cider is None or scores["CIDEr"] > state.best_cider:
        state.best_cider, state.best_step = scores["CIDEr"], state.global_step
        if accelerator.is_main_process:
            save_checkpoint(Path(config.output_dir) / "best", model, state, config.to_dict())
        accelerator.wait_for_everyone()


def save_last(accelerator: Accelerator, model, optimizer, scheduler, state: TrainState, config: TrainConfig) -> None:
    """Writes OUTPUT/last atomically (model, optimizer, scheduler, every process's RNG states, position)."""
    rng_states = gather_object([state_io.capture_rng_state()])
    if accelerator.is_main_process:
        save_checkpoint(Path(config.output_dir) / "last", model, state, config.to_dict(),
                        optimizer_state=optimizer.state_dict(), scheduler_state=scheduler.state_dict(),
                        rng_states=rng_states)
    accelerator.wait_for_everyone()
