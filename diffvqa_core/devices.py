"""Where the model runs and in which precision: ``--device auto|cpu|cuda`` and ``--precision auto|bf16|fp32``.

``auto`` is CUDA when PyTorch sees a GPU, else the CPU. On a GPU, inference runs under bf16 autocast by default
(``--precision auto``; Ampere or newer), fp32 on request; on a CPU it stays fp32 unless bf16 is asked for (it
pays only on CPUs with AVX-512 BF16 / AMX, see ``diffvqa_core.bench``). Asking for CUDA where there is none is a
:class:`DeviceError` that says why, never a traceback.
"""

from __future__ import annotations

import os

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")
PRECISION_CHOICES = ("auto", "bf16", "fp32")


class DeviceError(ValueError):
    """A device that this machine does not have; the message is meant for the person who asked."""


def _no_cuda_reason() -> str:
    if torch.version.cuda is None:
        return f"this PyTorch ({torch.__version__}) is a CPU-only build"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    hint = f"; CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
    return f"PyTorch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU: no driver or no device{hint}"


def resolve_device(name: str | None) -> torch.device:
    """The torch device for ``--device``: "auto" (or None), "cpu", "cuda" or "cuda:N".

    Raises:
        DeviceError: for CUDA without a visible GPU, a GPU index out of range, or another device name.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceError(f"--device {name}: not a device; use one of {', '.join(DEVICE_CHOICES)} "
                          "(or cuda:N)") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DeviceError(f"--device {name}: only {', '.join(DEVICE_CHOICES)} (or cuda:N) are supported")
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: {_no_cuda_reason()}. Use --device cpu (or auto), or install a "
                          "CUDA build of PyTorch (https://pytorch.org/get-started/locally/)")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s), numbered from 0")
    return device


def inference_dtype(device: torch.device, precision: str | None = "auto") -> torch.dtype:
    """The autocast dtype for ``--precision``: "auto" is bf16 on a GPU that has it, else fp32.

    Raises:
        DeviceError: for an unknown precision name.
    """
    precision = precision or "auto"
    if precision not in PRECISION_CHOICES:
        raise DeviceError(f"--precision {precision}: use one of {', '.join(PRECISION_CHOICES)}")
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp32":
        return torch.float32
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (for timing); nothing to wait for on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
