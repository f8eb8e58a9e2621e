"""Command line of the trainer: ``python -m train <command> [options]``.

Each command lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int``; this file only
dispatches, so ``python -m train synth`` does not import the trainer and vice versa.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = {
    "synth": ("train.synth", "write a synthetic longitudinal benchmark in the Medical-Diff-VQA layout"),
    "fit": ("train.fit", "two-stage training (Accelerate: CPU, one GPU or many)"),
    "evaluate": ("train.evaluate", "generate answers and score them with the official protocol"),
    "pretrain-prior": ("train.pretrain_prior", "DINO self-distillation of a small ViT prior"),
    "pretrain-encoder": ("train.pretrain_encoder", "finding classification pretraining of the image encoder"),
    "pretrain-change": ("train.pretrain_change", "the change encoder (not in the paper) on fresh synthetic pairs"),
    "pretrain-registration": ("train.pretrain_registration",
                              "the affine registration alone, against the generator's pose (not in the paper)"),
    "export": ("train.export", "copy a checkpoint for shipping, weights stored in float16"),
    "results-table": ("train.results_table", "markdown results table from `evaluate` outputs"),
    "probe-changes": ("train.probe_changes", "linear probe: how much 'what changed' a model's features carry"),
    "corrections": ("train.corrections", "the review store's corrections as a benchmark folder to fine-tune on"),
    "gpu-check": ("train.gpu_check", "the paper's path on one GPU in minutes: speeds, memory, the full run's time"),
}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        # Only the chosen command's module is imported: building all parsers would import torch for `synth`.
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(command_parser)
            command_parser.set_defaults(_run=module.run)
    args = parser.parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
