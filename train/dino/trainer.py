"""The DINO training loop: student/teacher ViTs, EMA teacher, multi-crop, AdamW with cosine schedules."""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import Dinov2Config, Dinov2Model

from diffvqa_core.losses import koleo_loss
from train.dino.head import DINOHead, DINONetwork
from train.dino.loss import DINOLoss
from train.dino.schedules import cosine_schedule, teacher_temperature_schedule


@dataclass
class PretrainSettings:
    """Everything that defines a pretraining run (written to the training log).

    Defaults are the recipe that kept the teacher from collapsing for 200-300 CPU steps on the 68 real
    radiographs of shared/data/mhh_pairs (its entropy still drifts upward: 6.7 of at most 7.6 after 300 steps;
    numbers in train/pretrain_prior.py's docstring). Departures from DINO's ImageNet
    values (in brackets): teacher temperature 0.02 throughout [0.04 -> 0.07], EMA momentum from 0.99 [0.996],
    milder crops, 2 local crops [8-10], K = 2048 [65536] and DINOv2's KoLeo term. With DINO's temperatures
    every short run measured here collapsed to a uniform teacher; the other changes were made together and
    their separate effects were not isolated. The learning rate, 5e-5 at batch 16, is close to DINO's
    5e-4 x 16 / 256.
    """

    image_size: int = 160
    patch_size: int = 16
    hidden_size: int = 192
    layers: int = 4
    heads: int = 3
    out_dim: int = 2048  # prototypes K of the DINO head [65536]
    local_crops: int = 2  # [8-10]; each costs a forward/backward pass on CPU
    global_scale: tuple[float, float] = (0.5, 1.0)  # area range of global crops (fraction of the film) [0.4-1]
    local_scale: tuple[float, float] = (0.15, 0.4)  # area range of local crops [0.05-0.4]
    batch_size: int = 16
    epochs: int = 100
    max_steps: int | None = None  # overrides epochs when set
    lr: float = 5e-5  # peak learning rate, cosine to min_lr
    min_lr: float = 1e-5
    warmup_fraction: float = 0.1  # of all steps: linear lr warmup and teacher temperature warmup
    weight_decay: float = 0.04
    clip_grad: float = 3.0
    momentum_teacher: float = 0.99  # EMA momentum, cosine to 1.0
    teacher_temp: tuple[float, float] = (0.02, 0.02)  # warmup start and final value
    student_temp: float = 0.1
    center_momentum: float = 0.9
    centering: str = "ema"  # "ema" (DINO) or "sinkhorn" (DINOv2)
    drop_path: float = 0.1  # student only
    freeze_last_layer_steps: int = 20  # DINO keeps the prototypes fixed for the first epoch
    koleo_weight: float = 0.1  # DINOv2's KoLeo spreading of the student's global-crop CLS embeddings
    hflip_prob: float = 0.0
    bf16: bool = False  # bfloat16 autocast for the forward passes (CPU with AVX-512 bf16, or GPU)
    seed: int = 0
    extra: dict = field(default_factory=dict)  # facts of the run filled in by the caller (data, stats)

    @property
    def local_size(self) -> int:
        """Side of local crops: about 0.4 of the global side (DINO: 96 / 224), at least 2 patches."""
        return max(2, round(0.4 * self.image_size / self.patch_size)) * self.patch_size


def backbone_config(settings: PretrainSettings, drop_path: float = 0.0) -> Dinov2Config:
    """The ``Dinov2Config`` of the small ViT (RAD-DINO's layout: no registers, MLP ratio 4, no SwiGLU)."""
    return Dinov2Config(
        image_size=settings.image_size,
        patch_size=settings.patch_size,
        hidden_size=settings.hidden_size,
        num_hidden_layers=settings.layers,
        num_attention_heads=settings.heads,
        mlp_ratio=4,
        drop_path_rate=drop_path,
    )


def build_optimizer(student: DINONetwork, settings: PretrainSettings) -> torch.optim.AdamW:
    """AdamW on the student; biases, norms, tokens and position embeddings are not decayed (as in DINO)."""
    return torch.optim.AdamW(_param_groups(student, settings.weight_decay), lr=settings.lr)


def build_networks(settings: PretrainSettings) -> tuple[DINONetwork, DINONetwork]:
    """Student and teacher: same architecture, teacher starts as a copy and never receives gradients."""
    torch.manual_seed(settings.seed)
    student_backbone = Dinov2Model(backbone_config(settings, drop_path=settings.drop_path))
    student = DINONetwork(student_backbone, DINOHead(settings.hidden_size, settings.out_dim))
    teacher = DINONetwork(Dinov2Model(backbone_config(settings)), DINOHead(settings.hidden_size, settings.out_dim))
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    return student, teacher


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim <= 1 or "token" in name or "position" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, parameter by parameter."""
    for t_param, s_param in zip(teacher.parameters(), student.parameters(), strict=True):
        t_param.mul_(momentum).add_(s_param.detach(), alpha=1.0 - momentum)


def training_step(
    student: DINONetwork,
    teacher: DINONetwork,
    criterion: DINOLoss,
    optimizer: torch.optim.Optimizer,
    crops: list[torch.Tensor],
    *,
    lr: float,
    momentum: float,
    teacher_temp: float,
    settings: PretrainSettings,
    freeze_prototypes: bool = False,
) -> tuple[float, dict[str, float]]:
    """One DINO step: teacher on the global crops, student on all, AdamW on the student, EMA into the teacher.

    Args:
        student: trained by gradient descent.
        teacher: updated only by EMA of the student.
        criterion: the DINO loss (its center is updated here too).
        optimizer: the student's optimizer.
        crops: [global_1, global_2, local_1, ...], each (B, 3, s, s).
        lr: learning rate of this step.
        momentum: EMA momentum of this step.
        teacher_temp: teacher temperature of this step.
        settings: run settings (gradient clipping, KoLeo weight, bf16).
        freeze_prototypes: drop the gradient of the head's last layer (DINO's first epoch).

    Returns:
        The loss value (DINO + weighted KoLeo) and monitoring statistics.

    Raises:
        FloatingPointError: if the loss is not finite.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    device_type = crops[0].device.type
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=settings.bf16):
        with torch.no_grad():
            _, teacher_out = teacher(crops[:2])  # (2B, K)
        student_cls, student_out = student(crops)  # (n_crops * B, D), (n_crops * B, K)
    loss, stats = criterion(student_out, teacher_out, teacher_temp, len(crops))
    if settings.koleo_weight > 0:
        # DINOv2: KoLeo within each global crop's batch, keeping the student's images apart (anti-collapse).
        koleo = sum(koleo_loss(chunk) for chunk in student_cls[: 2 * len(crops[0])].chunk(2)) / 2
        loss = loss + settings.koleo_weight * koleo
        stats["koleo"] = koleo.item()
    if not torch.isfinite(loss):
        raise FloatingPointError(f"DINO loss is {loss.item()}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(student.parameters(), settings.clip_grad)
    if freeze_prototypes:
        student.head.prototypes.grad = None
    optimizer.step()
    ema_update(teacher, student, momentum)
    return loss.item(), stats


@dataclass
class PretrainResult:
    """What a run returns: the networks and the per-step log."""

    student: DINONetwork
    teacher: DINONetwork
    history: dict[str, list[float]]
    seconds: float
    steps: int


def pretrain(dataset, settings: PretrainSettings, device: str = "cpu", progress: bool = True) -> PretrainResult:
    """Run DINO self-distillation.

    Args:
        dataset: items are lists of crops [global_1, global_2, local_1, ...] (see ``MultiCrop``).
        settings: the run's settings.
        device: torch device.
        progress: show a tqdm bar.

    Returns:
        The trained student and teacher and the per-step history (loss, lr, momentum, teacher temperature,
        teacher entropies).
    """
    student, teacher = build_networks(settings)
    student.to(device).train()
    teacher.to(device).eval()  # no dropout or drop path in the teacher: eval and train modes agree
    criterion = DINOLoss(settings.out_dim, settings.student_temp, settings.center_momentum, settings.centering)
    criterion.to(device)
    generator = torch.Generator().manual_seed(settings.seed)
    loader = DataLoader(
        dataset, batch_size=min(settings.batch_size, len(dataset)), shuffle=True, drop_last=True, generator=generator
    )
    total = settings.max_steps if settings.max_steps is not None else settings.epochs * len(loader)
    warmup = int(settings.warmup_fraction * total)
    lrs = cosine_schedule(settings.lr, settings.min_lr, total, warmup)
    momenta = cosine_schedule(settings.momentum_teacher, 1.0, total)
    temps = teacher_temperature_schedule(*settings.teacher_temp, total, warmup)
    optimizer = build_optimizer(student, settings)
    history: dict[str, list[float]] = {k: [] for k in ("loss", "lr", "momentum", "teacher_temp")}
    history.update(teacher_entropy=[], batch_entropy=[], **({"koleo": []} if settings.koleo_weight > 0 else {}))
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    start = time.perf_counter()
    bar = tqdm(range(total), desc="pretrain-prior", disable=not progress, dynamic_ncols=True)
    for step in bar:
        crops = [c.to(device, non_blocking=True) for c in next(batches)]
        loss, stats = training_step(
            student, teacher, criterion, optimizer, crops,
            lr=float(lrs[step]), momentum=float(momenta[step]), teacher_temp=float(temps[step]),
            settings=settings, freeze_prototypes=step < settings.freeze_last_layer_steps,
        )
        for key, value in (
            ("loss", loss),
            ("lr", float(lrs[step])),
            ("momentum", float(momenta[step])),
            ("teacher_temp", float(temps[step])),
            *stats.items(),
        ):
            history[key].append(value)
        bar.set_postfix(loss=f"{loss:.3f}", H_t=f"{stats['teacher_entropy']:.2f}")
    return PretrainResult(student, teacher, history, time.perf_counter() - start, total)


def summarise_curve(values: list[float], points: int = 10) -> list[dict[str, float]]:
    """A short loss curve: the mean over ``points`` equal windows, tagged with each window's last step."""
    windows = np.array_split(np.asarray(values, dtype=np.float64), min(points, len(values)))
    summary, step = [], 0
    for window in windows:
        step += len(window)
        summary.append({"step": step, "mean": round(float(window.mean()), 4)})
    return summary


def settings_dict(settings: PretrainSettings) -> dict:
    """The settings as JSON-ready data, with the derived local crop size."""
    return {**asdict(settings), "local_size": settings.local_size}



def collapse_warning(teacher_entropy: list[float], out_dim: int, window: int = 10) -> str | None:
    """A message when the teacher's output ended near uniform (mean entropy of the last steps > 0.95 ln K).

    A uniform teacher carries no information about the image: its backbone's CLS token is (nearly) the same
    for every input, and the CLS-patch prior is then no better than a random ViT's.
    """
    final = float(np.mean(teacher_entropy[-window:]))
    if final <= 0.95 * np.log(out_dim):
        return None
    return (f"the teacher output collapsed to near uniform (entropy {final:.2f} of at most {np.log(out_dim):.2f}); "
            "try a lower --teacher-temp, a lower --lr or more varied images")
