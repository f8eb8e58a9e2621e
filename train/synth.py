"""``python -m train synth``: write a synthetic longitudinal benchmark in the Medical-Diff-VQA layout.

See ``diffvqa_core.data.synthetic`` for what is written and the ground-truth convention.
"""

from __future__ import annotations

import argparse
import os
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``synth`` command."""
    parser.add_argument("--out", required=True, help="output folder (the benchmark's data root)")
    parser.add_argument("--pairs", type=int, required=True, help="number of (main, reference) pairs")
    parser.add_argument("--seed", type=int, default=0, help="same seed and pairs give byte-identical files")
    parser.add_argument("--backgrounds", default=None,
                        help="folder of real frontal radiographs to use as anatomy (default: procedural phantoms)")
    parser.add_argument("--background-fraction", type=float, default=1.0,
                        help="with --backgrounds: share of patients drawn on a real film, the rest on phantoms")
    parser.add_argument("--size", type=int, default=512, help="film side in pixels")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="processes (the output does not depend on it)")


def run(args: argparse.Namespace) -> int:
    """Generate the benchmark and print where it went and how fast."""
    from diffvqa_core.data.synthetic import generate_benchmark

    start = time.perf_counter()
    root = generate_benchmark(args.out, args.pairs, seed=args.seed, size=args.size,
                              backgrounds=args.backgrounds, workers=args.workers,
                              background_fraction=args.background_fraction)
    seconds = time.perf_counter() - start
    print(f"wrote {args.pairs} pairs to {root} in {seconds:.1f} s ({args.pairs / seconds:.1f} pairs/s)")
    return 0
