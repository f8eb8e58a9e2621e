"""``python -m train export``: copy a trained checkpoint into a shippable folder, weights stored in float16.

The bundled demo (``assets/demo_model``) is made this way from ``runs/demo/best``: config, tokenizer and
``model.safetensors`` with every float32 tensor stored as float16 (half the bytes).
``DiffVQAModel.from_pretrained`` copies them back into float32 parameters, so the model computes in float32
exactly as trained, from weights rounded to half precision. The command reports the largest weight change.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options."""
    parser.add_argument("--checkpoint", required=True, type=Path, help="trained model folder (e.g. runs/demo/best)")
    parser.add_argument("--out", required=True, type=Path, help="destination folder (created or overwritten)")
    parser.add_argument("--keep-fp32", action="store_true", help="store float32 weights as they are")


def export(checkpoint: Path, out: Path, *, half: bool = True) -> float:
    """Writes ``out`` from ``checkpoint``; returns the largest absolute weight change of the export."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from diffvqa_core import DiffVQAModel
    from diffvqa_core.model import WEIGHTS_FILE

    model = DiffVQAModel.from_pretrained(checkpoint)
    model.save_pretrained(out)
    weights = out / WEIGHTS_FILE
    if not half:
        return 0.0
    with safe_open(str(weights), "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(weights))
    halved = {name: t.half() if t.dtype == torch.float32 else t for name, t in tensors.items()}
    save_file(halved, str(weights), metadata=metadata)
    return max(float((tensors[n] - halved[n].float()).abs().max()) for n in tensors if tensors[n].numel())


def run(args: argparse.Namespace) -> int:
    """Export and report."""
    try:
        change = export(args.checkpoint, args.out, half=not args.keep_fp32)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file()) / 1e6
    print(f"exported {args.checkpoint} to {args.out} ({size:.1f} MB); largest weight change {change:.2e}")
    return 0
