"""The machine's own limits, measured: dense matmul rate and memory-copy bandwidth.

The speed benchmark (``python -m diffvqa_core.bench``) prints every time next to a floor computed from these
numbers (FLOPs / matmul rate for the encoders, weight bytes / bandwidth per decoded token), so a claim about
speed is always a ratio to what this machine can do, never an absolute number from somewhere else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MachineLimits:
    """Measured peak rates of the current CPU/GPU for the dtypes the model runs in."""

    device: str
    threads: int
    matmul_gflops: dict[str, float]  # dtype name -> GFLOP/s of a square matmul
    copy_gb_per_s: float  # read + write bytes per second of a large tensor copy, in GB/s
    read_gb_per_s: float = float("nan")  # bytes per second read by a reduction over a large tensor, in GB/s


def _best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_gflops(dtype: torch.dtype, *, size: int = 2048, repeats: int = 5,
                          device: torch.device | str = "cpu") -> float:
    """Best-of-``repeats`` rate of one ``size``-cubed matmul, in GFLOP/s (2 n^3 FLOPs per product)."""
    device = torch.device(device)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.mm(a, b)  # warm-up: kernels, caches, thread pool

    def run() -> None:
        torch.mm(a, b)
        _sync(device)

    return 2.0 * size**3 / _best_time(run, repeats) / 1e9


def bf16_supported(device: torch.device | str = "cpu") -> bool:
    """Whether this device runs bf16 matmuls natively (AVX-512 BF16 / AMX on CPUs, Ampere+ on GPUs)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    capability = torch.backends.cpu.get_cpu_capability()
    return "AVX512" in capability.upper() or "AMX" in capability.upper()


def measure_copy_bandwidth(*, megabytes: int = 512, repeats: int = 5, device: torch.device | str = "cpu") -> float:
    """Best-of-``repeats`` bandwidth of copying a large float32 tensor, counting read + write, in GB/s."""
    device = torch.device(device)
    source = torch.empty(megabytes * 2**20 // 4, dtype=torch.float32, device=device).uniform_()
    target = torch.empty_like(source)
    target.copy_(source)

    def run() -> None:
        target.copy_(source)
        _sync(device)

    return 2 * source.numel() * 4 / _best_time(run, repeats) / 1e9


def measure_read_bandwidth(*, megabytes: int = 512, repeats: int = 5, device: torch.device | str = "cpu") -> float:
    """Best-of-``repeats`` bandwidth of reading a large float32 tensor once (a sum), in GB/s.

    Decoding a token reads every weight and writes almost nothing, so this is its tighter floor.
    """
    device = torch.device(device)
    source = torch.empty(megabytes * 2**20 // 4, dtype=torch.float32, device=device).uniform_()
    source.sum()

    def run() -> None:
        source.sum()
        _sync(device)

    return source.numel() * 4 / _best_time(run, repeats) / 1e9


def measure_machine_limits(device: torch.device | str = "cpu", *, quick: bool = False) -> MachineLimits:
    """Measure the matmul rate (fp32, and bf16 where native), the copy and the read bandwidth of ``device``."""
    size, repeats = (512, 2) if quick else (2048, 5)
    rates = {"float32": measure_matmul_gflops(torch.float32, size=size, repeats=repeats, device=device)}
    if bf16_supported(device):
        rates["bfloat16"] = measure_matmul_gflops(torch.bfloat16, size=size, repeats=repeats, device=device)
    megabytes = 64 if quick else 512
    bandwidth = measure_copy_bandwidth(megabytes=megabytes, repeats=repeats, device=device)
    read = measure_read_bandwidth(megabytes=megabytes, repeats=repeats, device=device)
    return MachineLimits(device=str(device), threads=torch.get_num_threads(), matmul_gflops=rates,
                         copy_gb_per_s=bandwidth, read_gb_per_s=read)
