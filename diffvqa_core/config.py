"""Configuration of the diffvqa model: one typed dataclass, presets stored as JSON.

Every hyper-parameter of the paper (shared/seed/000_5a865923d2e78e42.txt, sections 3-4) is a field here,
with the paper's value as the "paper" preset (``model_configs/paper.json``). The "tiny" preset keeps every
module and loss with small widths for tests, CPU training and the demo. A checkpoint stores this config as
``config.json`` so that it rebuilds itself.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRESET_DIR = Path(__file__).resolve().parent / "model_configs"

MASK_GATES = ("encoded_mask", "pooled_mask")
REFERENCE_TOKENS = ("reference", "difference", "unmasked_difference", "change_tokens")
ADAPTIVE_MASK_SOURCES = ("tokens", "change_encoder")
DIFFERENCE_READOUTS = ("decoder", "change_heads")
REGISTRATION_REFINEMENTS = ("none", "ecc")
KOLEO_VECTORS = ("masked_main", "masked_pair", "main")


@dataclass
class DiffVQAConfig:
    """All settings of :class:`diffvqa_core.model.DiffVQAModel`.

    Pretrained parts are named by a hub id or a local directory (same layout as the hub). A part whose
    ``*_pretrained`` flag is False is built with random weights from the library's own config class,
    overridden by the matching ``*_overrides`` dict: nothing is downloaded then.
    """

    # Input (sec. 4: 3-channel 384 x 384).
    image_size: int = 384

    # Image encoder phi (sec. 3.3): a timm model name, optionally a weights file or directory.
    image_encoder: str = "swin_base_patch4_window12_384.ms_in22k"
    image_encoder_pretrained: bool = False
    image_encoder_weights: str | None = None  # file or dir (model.safetensors / pytorch_model.bin); None = hub
    image_encoder_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. embed_dim, depths
    projector_heads: int = 8  # the one 8-head transformer encoder layer of the projector

    # Frozen DINO prior (eq. 4): a transformers Dinov2Model (RAD-DINO in the paper).
    prior: str = "microsoft/rad-dino"
    prior_pretrained: bool = False
    prior_overrides: dict[str, Any] = field(default_factory=dict)  # Dinov2Config fields for random init
    prior_image_size: int = 518  # RAD-DINO's input side: 518 / 14 = 37 x 37 patches
    prior_mean: tuple[float, float, float] = (0.5307, 0.5307, 0.5307)  # RAD-DINO processor statistics
    prior_std: tuple[float, float, float] = (0.2583, 0.2583, 0.2583)

    # Answer decoder (eq. 10): GPT-2 (transformers GPT2LMHeadModel) and its tokenizer.
    decoder: str = "gpt2"
    decoder_pretrained: bool = False
    decoder_overrides: dict[str, Any] = field(default_factory=dict)  # GPT2Config fields for random init
    tokenizer: str | None = "gpt2"  # hub id / dir of GPT-2's tokenizer; None or absent -> local BPE
    local_tokenizer_vocab_size: int = 2048

    # Question encoder (sec. 3.4): shared token embeddings + learnable positions -> transformer layers.
    question_layers: int = 6
    question_heads: int = 12
    max_question_len: int = 64
    max_answer_len: int = 64

    # Registration (eq. 1-2): shallow CNN on the downsampled pair.
    registration_size: int = 128
    registration_channels: tuple[int, ...] = (16, 32, 64, 64)
    registration_pool: int = 4  # not in the paper: side of the pooled grid the affine head reads
    # Not in the paper: a `python -m train pretrain-registration` output (the registration trained alone against the
    # generator's pose on fresh pairs, half on real films), loaded when the model is built; its shape must be the
    # three fields above. Trained only inside the model, the demo's registration left 63% of the pose difference on
    # held-out real films (MODEL_CARD.md).
    registration_weights: str | None = None
    # Not in the paper ("none" = the paper): "ecc" refines the network's Theta at inference with OpenCV's intensity
    # alignment (diffvqa_core.registration_refinement), keeping it unless it moves the corners by more than
    # registration_refinement_max_px pixels of the model input. On the development sets the demo's network alone
    # left 36% of the pose difference on held-out real films and 10% on phantoms (MODEL_CARD.md has the figures).
    registration_refinement: str = "none"
    registration_refinement_max_px: float = 3.0

    # Adaptive mask (eq. 5-6).
    mask_head_hidden: int = 256  # width of the 3-layer MLP g
    mask_fusion_kernel: int = 3  # kernel of the 1-layer gated CNN h

    # Loss weights (eq. 2 and 18).
    reg_w_smooth: float = 1e-4
    reg_w_det: float = 1e-5
    reg_w_trans: float = 1e-6
    alpha_mask: float = 0.1
    alpha_pred: float = 0.1
    alpha_gram: float = 0.1
    alpha_koleo: float = 0.001
    koleo_eps: float = 1e-8
    # Not in the paper (0 = the paper): weight of an image-similarity term, 1 - NCC of the registered main and
    # the reference at registration_size, added to L_reg. Trained only through L_lm and eq. 2, our
    # registration drifted away from alignment; this term gives it the signal an unsupervised registration
    # network is normally trained with (see diffvqa_core.losses.image_similarity_loss).
    alpha_similarity: float = 0.0
    similarity_size: int = 128  # side at which that NCC is computed
    # Not in the paper (0 = the paper): weight of a supervised pose term on synthetic pairs, the mean corner error
    # in pixels against the generator's pose (diffvqa_core.losses.pose_loss). On held-out real films the demo's
    # registration left 65% of the pose difference (26% on phantoms), and its change heads, which read the
    # registered pair, named changes with F1 0.45 there, 0.64 with the true pose (MODEL_CARD.md).
    alpha_pose: float = 0.0

    # Fusion weight lambda (eq. 7): cosine from lambda_start to lambda_end over training.
    lambda_start: float = 1.0
    lambda_end: float = 0.5
    inference_lambda: float = 0.5

    # Ablation switches (Table 2). The stage-1 freeze is the trainer's (set_image_encoder_trainable).
    use_unsupervised_losses: bool = True  # False: mask, pred, gram and KoLeo weights are 0
    use_saliency_mask: bool = True  # False: M = 1, the unmasked baseline (sec. 3.8)
    use_registration: bool = True  # False: theta = identity (the "unregistered" row)
    # Not a paper row: False gives the question-only baseline, the decoder reading [<img>, <img>, <qtn>,
    # f_text, <ans>] with no image tokens (how far the language prior alone gets).
    use_images: bool = True
    # Not in the paper ("reference" = the paper): what the decoder's second image slot holds. "difference" puts
    # f_mask_main - f_mask_ref there (token i of the registered main minus token i of the reference), so a
    # change is one token's value rather than a comparison the decoder must learn across N + 1 positions.
    # "unmasked_difference" puts f_main - f_ref there, phi's features of the registered main and the reference
    # before masking: the decoder then reads the masked main visit and the whole image's change (the paper's
    # conclusion speaks of "masked and unmasked image features" forming the prefix; its eq. 10 has masked only).
    # "change_tokens" puts the change encoder's tokens there (one per labelled finding and one for the pair; see
    # below): the decoder then reads the masked main visit and what the change encoder says changed.
    reference_tokens: str = "reference"

    # Not in the paper (all off in the paper preset): the change encoder (diffvqa_core.change), an early-fusion
    # CNN that reads the registered main and the reference as pixels (with their difference) and returns a dense
    # change map and one token per finding. The paper's F reads phi's tokens of each visit apart; in our runs it
    # never learned where the change is (AUROC 0.22) and no decoder input built from phi made the answers name
    # the change reliably (change F1 <= 0.26); a 3-block early-fusion CNN with the change mask as a dense target
    # reached pixel AUROC 0.98 after 100 steps (MODEL_CARD.md has the measured figures of this recipe).
    change_encoder: bool = False
    change_encoder_shape: dict[str, Any] = field(default_factory=dict)  # ChangeEncoderConfig fields
    change_encoder_weights: str | None = None  # a `python -m train pretrain-change` output, loaded when built
    adaptive_mask_source: str = "tokens"  # "tokens": F of eq. 5-6; "change_encoder": F is its change map
    alpha_change_mask: float = 0.0  # weight of the change map's BCE against the ground-truth change mask
    alpha_change_labels: float = 0.0  # weight of its per-finding label losses (diffvqa_core.data.finding_labels)
    # Not in the paper: "change_heads" answers both difference question forms ("what has changed compared to the
    # reference image?", "what has changed in the {region} area?") with the change encoder's own reading of the
    # pair (its per-finding heads, written in the benchmark's grammar: diffvqa_core.change_readout) instead of the
    # decoder's text; the decoder still answers every other question. On fresh phantom pairs the heads named the
    # changes with F1 0.49-0.51 where the decoder reading their tokens wrote 0.35 (MODEL_CARD.md). "decoder" = the
    # paper.
    difference_readout: str = "decoder"
    # With "change_heads": a finding is read as changed when its change head gives "unchanged" a probability
    # below this (the heads' prior favours "unchanged" ~9:1; chosen on a development seed, never the test one).
    change_threshold: float = 0.5
    # Not in the paper: the change heads read the pair forwards and backwards (the reference as the main visit)
    # and average the two readings (diffvqa_core.change.read_both_ways); for an encoder pretrained on pairs read
    # both ways. Change map and tokens stay the forward pass's.
    change_read_both_ways: bool = False
    # Not in the paper: with "change_heads", the pair head's P(any change) decides whether the whole-image question
    # is answered "nothing has changed." (below this) or names changes (at least the most likely one); None = the
    # per-finding threshold alone decides. On development phantoms it raised the precision of "nothing has
    # changed." where findings too faint for their own head went unnamed (MODEL_CARD.md).
    change_gate: float | None = None

    # The paper's three ambiguous points; see diffvqa_core.losses for the reasons behind each default.
    mask_gate: str = "encoded_mask"  # gate of L_mask: phi(M) tokens, or M average-pooled to the token grid
    koleo_vector: str = "masked_main"  # which pooled vector KoLeo spreads over the batch
    detach_targets: bool = True  # stop-gradient on the unmasked targets of L_mask and L_pred

    def __post_init__(self) -> None:
        self.prior_mean = tuple(self.prior_mean)
        self.prior_std = tuple(self.prior_std)
        self.registration_channels = tuple(self.registration_channels)
        if self.mask_gate not in MASK_GATES:
            raise ValueError(f"mask_gate must be one of {MASK_GATES}, got {self.mask_gate!r}")
        if self.reference_tokens not in REFERENCE_TOKENS:
            raise ValueError(f"reference_tokens must be one of {REFERENCE_TOKENS}, got {self.reference_tokens!r}")
        if self.adaptive_mask_source not in ADAPTIVE_MASK_SOURCES:
            raise ValueError(f"adaptive_mask_source must be one of {ADAPTIVE_MASK_SOURCES}, "
                             f"got {self.adaptive_mask_source!r}")
        if self.difference_readout not in DIFFERENCE_READOUTS:
            raise ValueError(f"difference_readout must be one of {DIFFERENCE_READOUTS}, "
                             f"got {self.difference_readout!r}")
        if self.registration_refinement not in REGISTRATION_REFINEMENTS:
            raise ValueError(f"registration_refinement must be one of {REGISTRATION_REFINEMENTS}, "
                             f"got {self.registration_refinement!r}")
        if not self.registration_refinement_max_px > 0.0:
            raise ValueError(f"registration_refinement_max_px must be > 0, got {self.registration_refinement_max_px}")
        if not 0.0 < self.change_threshold < 1.0:
            raise ValueError(f"change_threshold must lie in (0, 1), got {self.change_threshold}")
        if self.change_gate is not None and not 0.0 < self.change_gate < 1.0:
            raise ValueError(f"change_gate must lie in (0, 1) or be None, got {self.change_gate}")
        if self.change_gate is not None and self.difference_readout != "change_heads":
            raise ValueError("change_gate gates the change heads' answers: it needs difference_readout: change_heads")
        needs_encoder = (self.reference_tokens == "change_tokens" or self.adaptive_mask_source == "change_encoder"
                         or self.difference_readout == "change_heads" or self.change_read_both_ways
                         or self.alpha_change_mask
                         or self.alpha_change_labels)
        if needs_encoder and not self.change_encoder:
            raise ValueError("reference_tokens 'change_tokens', adaptive_mask_source 'change_encoder', "
                             "difference_readout 'change_heads' and the change losses need change_encoder: true")
        if self.koleo_vector not in KOLEO_VECTORS:
            raise ValueError(f"koleo_vector must be one of {KOLEO_VECTORS}, got {self.koleo_vector!r}")
        for name in ("lambda_start", "lambda_end", "inference_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffVQAConfig:
        """Builds a config from a dict, refusing keys it does not know.

        Raises:
            ValueError: naming every unknown key.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DiffVQAConfig key(s): {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serialisable dict of every field."""
        data = dataclasses.asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        return data

    @classmethod
    def from_json(cls, path: str | Path) -> DiffVQAConfig:
        """Reads a config written by :meth:`to_json` (or a preset file)."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def to_json(self, path: str | Path) -> None:
        """Writes the config as indented JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_preset(cls, name: str) -> DiffVQAConfig:
        """Loads a named preset ("paper" or "tiny") from ``model_configs/``."""
        path = PRESET_DIR / f"{name}.json"
        if not path.is_file():
            raise ValueError(f"unknown preset {name!r}; available: {', '.join(available_presets())}")
        return cls.from_json(path)

    def random_init(self) -> DiffVQAConfig:
        """Returns a copy with every pretrained flag off: the same architecture, built offline."""
        return dataclasses.replace(
            self, image_encoder_pretrained=False, prior_pretrained=False, decoder_pretrained=False,
            change_encoder_weights=None, registration_weights=None,
        )

    @property
    def uses_pretrained_weights(self) -> bool:
        """Whether building this config loads any pretrained part."""
        return (self.image_encoder_pretrained or self.prior_pretrained or self.decoder_pretrained
                or bool(self.change_encoder_weights) or bool(self.registration_weights))


def available_presets() -> list[str]:
    """Names of the presets shipped in ``model_configs/``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))
