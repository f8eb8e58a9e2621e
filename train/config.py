"""Training configuration: one typed dataclass read from YAML, refusing keys it does not know.

The paper's training recipe (sec. 3.6 and 4 of shared/seed/000_5a865923d2e78e42.txt) is the default:
stage 1 freezes the image encoder phi for 4 epochs, stage 2 trains everything for 4 more, batch 10 (train)
/ 8 (validation), AdamW with learning rate 1.5e-4 and weight decay 0.05, best checkpoint by validation
CIDEr. What the paper does not state (warm-up, learning-rate decay, gradient clipping, betas) is a field
here with a conventional default, named as such in its comment.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from diffvqa_core.data.vocabulary import QUESTION_TYPES

LR_SCHEDULERS = ("cosine", "linear", "constant")
MIXED_PRECISION = ("no", "bf16")  # fp16 would need its loss-scaler state in the checkpoint


@dataclass
class TrainConfig:
    """Everything ``python -m train fit`` needs besides the command-line flags."""

    # Model: a preset of diffvqa_core/model_configs plus DiffVQAConfig fields that override it.
    model_preset: str = "paper"
    model: dict[str, Any] = field(default_factory=dict)

    # Not in the paper: start every parameter whose name and shape match from this trained checkpoint ("demo" =
    # the bundled one); the rest (parts the checkpoint lacks) start as usual, and a change encoder loaded from
    # change_encoder_weights (registration_weights) keeps those weights. Ignored on --resume.
    init_weights: str | None = None
    # Not in the paper: take from init_weights only the parameters whose names start with one of these prefixes
    # (e.g. [prior., image_encoder.backbone., change_encoder., registration.]: a trained model's perception parts);
    # every other part starts as built. None = every matching parameter. The synthetic results table's rows under
    # the change-encoder recipe start this way, so that each row learns to answer with its own parts switched off.
    init_parts: list[str] | None = None

    # Data: the benchmark's root directory (mimic_pair_questions.csv, mimic_all.csv, files/).
    data_root: str | None = None
    question_types: list[str] | None = None  # None = all seven families; the paper: [difference]
    # Not in the paper: relative sampling weight of a question family among the training rows (families not
    # named weigh 1; None = uniform). {difference: 4} lets a model trained on all seven families see the
    # difference question, the one the review app is about, about half of the time.
    question_weights: dict[str, float] | None = None
    augment: bool = True  # brightness / contrast / sharpness on training images (sec. 4)

    # Two stages (sec. 3.6). The "no stage-1 freeze" ablation is epochs_stage1: 0, epochs_stage2: 8.
    epochs_stage1: int = 4  # image encoder phi frozen
    epochs_stage2: int = 4  # everything trained
    # Not in the paper: an "epoch" of this many training rows, a fresh random subset each epoch (None = the
    # whole split). Lets a CPU run keep the paper's 4 + 4 epoch shape, validation included, on a large set.
    epoch_samples: int | None = None
    train_batch_size: int = 10  # per process (the paper does not say whether its 10 is per GPU)
    eval_batch_size: int = 8

    # Optimiser (sec. 4): AdamW. Betas, warm-up, decay and clipping are not in the paper.
    learning_rate: float = 1.5e-4
    weight_decay: float = 0.05
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # not in the paper: torch default
    lr_scheduler: str = "cosine"  # not in the paper: decay after warm-up, one of LR_SCHEDULERS
    warmup_ratio: float = 0.03  # not in the paper: linear warm-up over this fraction of all steps
    max_grad_norm: float | None = 1.0  # not in the paper: gradient clipping (None = off)
    mixed_precision: str = "no"  # "bf16" halves CPU time on AVX-512 bf16 machines and suits A100s

    # Loading.
    num_workers: int = 2
    seed: int = 42

    # Validation each epoch: decoding and how much of the split to score.
    eval_num_beams: int = 1  # 1 = greedy
    eval_max_new_tokens: int | None = None  # None: the model's max_answer_len, the training answers' limit
    eval_no_repeat_ngram_size: int = 0
    eval_grammar: bool = False  # not in the paper: validate with answers held to the benchmark's answer grammar
    val_max_batches: int | None = None  # per process; None = the whole validation split

    # Logging and checkpoints.
    log_every: int = 1  # steps between rows of metrics.jsonl / train_steps.csv / TensorBoard
    save_every_steps: int = 1000  # steps between saves of OUTPUT/last (also saved after every epoch)
    output_dir: str = "runs/diffvqa"

    def __post_init__(self) -> None:
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"lr_scheduler must be one of {LR_SCHEDULERS}, got {self.lr_scheduler!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        if self.epochs_stage1 < 0 or self.epochs_stage2 < 0 or self.epochs_stage1 + self.epochs_stage2 == 0:
            raise ValueError("epochs_stage1 and epochs_stage2 must be >= 0 and not both 0")
        for name in ("train_batch_size", "eval_batch_size", "log_every", "save_every_steps", "eval_num_beams"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for family, weight in (self.question_weights or {}).items():
            if family not in QUESTION_TYPES:
                raise ValueError(f"question_weights: unknown question family {family!r} (one of {QUESTION_TYPES})")
            if not weight > 0:
                raise ValueError(f"question_weights: the weight of {family!r} must be > 0, got {weight}")
        if self.epoch_samples is not None and self.epoch_samples < 1:
            raise ValueError(f"epoch_samples must be >= 1 or null, got {self.epoch_samples}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must lie in [0, 1), got {self.warmup_ratio}")
        if len(self.adam_betas) != 2:
            raise ValueError(f"adam_betas must have two values, got {self.adam_betas}")

    @property
    def total_epochs(self) -> int:
        """Epochs of both stages together."""
        return self.epochs_stage1 + self.epochs_stage2

    def model_config(self):
        """Builds the model's DiffVQAConfig: the preset with ``model`` overriding its fields.

        Raises:
            ValueError: for an unknown preset or an override that is not a DiffVQAConfig field (naming the
                closest field).
        """
        from diffvqa_core.config import DiffVQAConfig

        known = [f.name for f in dataclasses.fields(DiffVQAConfig)]
        for key in self.model:
            if key not in known:
                raise ValueError(f"unknown model key {key!r} under 'model:'{_suggestion(key, known)}")
        return DiffVQAConfig.from_dict({**DiffVQAConfig.from_preset(self.model_preset).to_dict(), **self.model})

    def to_dict(self) -> dict[str, Any]:
        """Returns the config as plain data (for the run directory and the checkpoint's train state)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        """Builds a config from plain data, checking every key and value type.

        Args:
            data: mapping of field name to value, as read from YAML.
            source: where ``data`` came from, for error messages.

        Raises:
            ValueError: naming an unknown key (with the closest valid one) or a value of the wrong type.
        """
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        values = {}
        for key, value in data.items():
            if key not in names:
                raise ValueError(f"{source}: unknown key {key!r}{_suggestion(str(key), names)}")
            values[key] = _coerce(value, hints[key], f"{source}: {key}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Reads a YAML file of settings (see ``train/configs/``).

        A ``base: other.yaml`` entry (relative to the file) starts from that file's settings; the keys given
        here replace the base's, except ``model``, whose entries are merged into the base's.
        """
        return cls.from_dict(_read_settings(Path(path)), source=str(path))


def _read_settings(path: Path) -> dict[str, Any]:
    """The settings of a YAML file with its ``base`` chain resolved."""
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    if "base" not in data:
        return data
    base = _read_settings(path.parent / str(data.pop("base")))
    return {**base, **data, "model": {**base.get("model", {}), **data.get("model", {})}}


def _suggestion(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else f"; valid keys: {', '.join(valid)}"


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Checks ``value`` against a field's type hint, converting what YAML reads loosely (``1e-4`` is a str)."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, where)
    origin = typing.get_origin(hint) or hint
    if origin is list and isinstance(value, list):
        return [_coerce(v, args[0], where) for v in value] if args else value
    if origin is dict and isinstance(value, dict):
        return value
    if origin is bool and isinstance(value, bool):
        return value
    if origin is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if origin is float and not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    if origin is str and isinstance(value, str):
        return value
    raise ValueError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")
