"""DiffVQAModel: the paper's longitudinal VQA model (shared/seed/000_5a865923d2e78e42.txt, sec. 3).

Named stages, in the order of Figure 1:

1. ``register``       micro affine registration of the main image (eq. 1-2)
2. ``prior_mask``     frozen DINO attention, U = max(A_main, A_ref) (eq. 4)
3. ``encode``         phi = timm backbone + projector on the registered main and the reference (eq. 3)
4. ``adaptive_mask``  token masks and the gated fusion F (eq. 5-6); with the change encoder (not in the paper,
   ``diffvqa_core.change``) F is its change map of the registered pixel pair
5. ``fuse``           M = lambda U + (1 - lambda) F (eq. 7)
6. ``masked_encode``  phi on M * I_main, M * I_ref and M itself (eq. 8-9)
7. ``encode_question`` and ``decode``: the GPT-2 prefix of eq. 10, L_lm (eq. 11) or generation.

phi runs twice per sample, each time batched: once on the 2 unmasked images, once on the 3 masked inputs
(masked main, masked reference, M as a 3-channel image). One call over all 5 is impossible: M depends on
F, and F on the unmasked features. Stages 1-4 do not depend on lambda or on the question, so
``visual_state`` returns them for the pipeline to cache.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from diffvqa_core import losses
from diffvqa_core.answer_grammar import AnswerGrammar
from diffvqa_core.change import (ChangeEncoder, ChangeEncoderConfig, ChangeOutput, change_label_loss, change_map,
                                 change_mask_loss, load_change_encoder, read_both_ways)
from diffvqa_core.change_readout import answers_from_heads
from diffvqa_core.config import DiffVQAConfig
from diffvqa_core.constrained_decoding import GrammarLogitsProcessor
from diffvqa_core.decoder import AnswerDecoder, Prefix
from diffvqa_core.encoders import ImageEncoder, QuestionEncoder
from diffvqa_core.masks import (AdaptiveMaps, AdaptiveMaskHead, DinoPrior, GatedFusionHead, PriorMaps,
                                fuse_masks, processor_statistics, resize_mask)
from diffvqa_core.registration import WEIGHTS_FILE as REGISTRATION_WEIGHTS_FILE
from diffvqa_core.registration import AffineRegistration, identity_theta, read_registration_shape, warp
from diffvqa_core.registration_refinement import refine_theta
from diffvqa_core.tokenizer import load_tokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
PICKLE_REFUSAL = ("pickle checkpoints can run code when loaded and are never read; only safetensors and JSON are. "
                  "Convert it to model.safetensors where its source is trusted")
LOSS_TERMS = ("lm", "reg", "sim", "mask_main", "mask_ref", "pred_main", "pred_ref", "gram", "gram_mask", "koleo",
              "change_mask", "change_labels", "pose")


@dataclass
class Registration:
    """theta (B, 2, 3) and the registered main image (B, 3, H, W)."""

    theta: torch.Tensor
    registered_main: torch.Tensor


@dataclass
class VisualState:
    """Everything that depends on the image pair only (stages 1-4), shapes for batch B.

    Attributes:
        registration: theta and the registered main image.
        ref: (B, 3, H, W) reference image in [0, 1].
        features_main: (B, N, D) f_main = phi(registered main).
        features_ref: (B, N, D) f_ref = phi(ref).
        prior: DINO attention maps and their union U.
        adaptive: token masks and the adaptive mask F.
        change: the change encoder's output (change map logits, tokens, label logits), or None without one.
    """

    registration: Registration
    ref: torch.Tensor
    features_main: torch.Tensor
    features_ref: torch.Tensor
    prior: PriorMaps
    adaptive: AdaptiveMaps
    change: ChangeOutput | None = None


@dataclass
class MaskedFeatures:
    """phi of the masked inputs (eq. 9): f_mask_main, f_mask_ref (B, N, D); f_mask = phi(M) or None."""

    masked_main: torch.Tensor
    masked_ref: torch.Tensor
    mask: torch.Tensor | None


@dataclass
class AnswerOutput:
    """Answers decoded from a visual state, with the fused mask M (B, 1, H, W) they were read through, and for
    each answer whether the change encoder's heads gave it (``difference_readout``) rather than the decoder."""

    answers: list[str]
    fused_mask: torch.Tensor
    from_change_heads: list[bool] = dataclasses.field(default_factory=list)


@dataclass
class DiffVQAOutput:
    """Result of a training forward pass.

    Attributes:
        loss: 0-d total of eq. 18.
        terms: each unweighted term (keys ``LOSS_TERMS``), 0-d tensors.
        theta: (B, 2, 3) registration.
        prior_mask: (B, 1, H, W) U.
        adaptive_mask: (B, 1, H, W) F.
        fused_mask: (B, 1, H, W) M.
        logits: (B, T, V) answer logits.
        state: the visual state (unmasked features etc.).
        masked: the masked features.

    The question-only baseline (``use_images`` False) computes no visual stage: theta, the masks, state and
    masked are None and every term but L_lm is 0.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    theta: torch.Tensor | None
    prior_mask: torch.Tensor | None
    adaptive_mask: torch.Tensor | None
    fused_mask: torch.Tensor | None
    logits: torch.Tensor
    state: VisualState | None
    masked: MaskedFeatures | None


class DiffVQAModel(nn.Module):
    """Attention-consistent longitudinal VQA model.

    Args:
        config: the model config.
        tokenizer: decoder tokenizer; None loads GPT-2's named in the config when it is on disk, else
            trains the local BPE.
        load_pretrained_parts: honour the config's pretrained flags; False builds every part at random
            (``from_pretrained`` does so, then loads the whole checkpoint).
    """

    def __init__(self, config: DiffVQAConfig, tokenizer: PreTrainedTokenizerBase | None = None, *,
                 load_pretrained_parts: bool = True) -> None:
        super().__init__()
        if load_pretrained_parts and config.prior_pretrained:
            statistics = processor_statistics(config.prior)
            if statistics is not None:  # normalise as the prior's own processor does, and record it
                config = dataclasses.replace(config, prior_mean=statistics[0], prior_std=statistics[1])
        self.config = config
        self.tokenizer = tokenizer or load_tokenizer(config.tokenizer, config.local_tokenizer_vocab_size)
        build = config if load_pretrained_parts else config.random_init()
        self.decoder = AnswerDecoder(build, self.tokenizer, pretrained=build.decoder_pretrained)
        width = self.decoder.width
        self.registration = self._build_registration(load_pretrained_parts)
        self.image_encoder = ImageEncoder(build, width, pretrained=build.image_encoder_pretrained)
        self.prior = DinoPrior(build, pretrained=build.prior_pretrained)
        self.mask_head = AdaptiveMaskHead(width, config.mask_head_hidden)
        self.fusion_head = GatedFusionHead(config.mask_fusion_kernel)
        self.question_encoder = QuestionEncoder(width, config.max_question_len, config.question_layers,
                                                config.question_heads)
        self.prediction_head = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))  # P
        if config.change_encoder:  # not in the paper (diffvqa_core.change)
            self.change_encoder = self._build_change_encoder(load_pretrained_parts)
            self.config = config = dataclasses.replace(
                config, change_encoder_shape=dataclasses.asdict(self.change_encoder.config))
            token_width = self.change_encoder.config.token_width
            self.change_projection = nn.Sequential(nn.Linear(token_width, width), nn.GELU(), nn.Linear(width, width))

    def _build_registration(self, load_pretrained_parts: bool) -> AffineRegistration:
        """The registration of the config's shape, with the weights of ``registration_weights`` when given."""
        cfg = self.config
        shape = {"registration_size": cfg.registration_size, "registration_channels": cfg.registration_channels,
                 "registration_pool": cfg.registration_pool}
        registration = AffineRegistration(cfg.registration_size, cfg.registration_channels, cfg.registration_pool)
        if load_pretrained_parts and cfg.registration_weights:
            saved = read_registration_shape(cfg.registration_weights)
            if saved != shape:
                raise ValueError(f"the registration in {cfg.registration_weights} has the shape {saved}; the config "
                                 f"asks for {shape}")
            load_model(registration, str(Path(cfg.registration_weights) / REGISTRATION_WEIGHTS_FILE))
        return registration

    def _build_change_encoder(self, load_pretrained_parts: bool) -> ChangeEncoder:
        """The change encoder: loaded from ``change_encoder_weights`` when given (its shape must match a shape
        given in ``change_encoder_shape``), else built at random from that shape."""
        cfg = self.config
        if load_pretrained_parts and cfg.change_encoder_weights:
            encoder = load_change_encoder(cfg.change_encoder_weights)
            stated = ChangeEncoderConfig(**cfg.change_encoder_shape) if cfg.change_encoder_shape else None
            if stated is not None and stated != encoder.config:
                raise ValueError(f"change_encoder_shape {cfg.change_encoder_shape} differs from the shape of the "
                                 f"weights in {cfg.change_encoder_weights}: {dataclasses.asdict(encoder.config)}")
            return encoder
        return ChangeEncoder(ChangeEncoderConfig(**cfg.change_encoder_shape))

    # ----------------------------------------------------------------------------------------- stages
    def register(self, main: torch.Tensor, ref: torch.Tensor) -> Registration:
        """Stage 1 (eq. 1): warp the main image onto the reference; identity when registration is off."""
        if not self.config.use_registration:
            return Registration(identity_theta(main.shape[0], main.device, main.dtype), main)
        theta = self.registration(main, ref)  # (B, 2, 3)
        if self.config.registration_refinement == "ecc" and not self.training:
            theta = refine_theta(main, ref, theta, self.config.registration_refinement_max_px)
        return Registration(theta, warp(main, theta))

    def prior_mask(self, registered_main: torch.Tensor, ref: torch.Tensor) -> PriorMaps:
        """Stage 2 (eq. 4): DINO attention of both visits in one call, and their union U."""
        attention = self.prior(torch.cat([registered_main, ref]))  # (2B, 1, H, W)
        attention_main, attention_ref = attention.chunk(2)
        return PriorMaps(attention_main, attention_ref, torch.maximum(attention_main, attention_ref))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """phi (sec. 3.3): (B, 3, H, W) in [0, 1] -> (B, N, D)."""
        return self.image_encoder(images)

    def adaptive_mask(self, features_main: torch.Tensor, features_ref: torch.Tensor,
                      change: ChangeOutput | None = None) -> AdaptiveMaps:
        """Stage 4 (eq. 5-6): token masks from g, fused by h, resized to the image.

        With ``adaptive_mask_source: change_encoder`` (not in the paper) F is the change encoder's map instead;
        the token masks of eq. 5 are still reported.
        """
        batch, grid = features_main.shape[0], self.image_encoder.grid_size
        tokens = self.mask_head(torch.cat([features_main, features_ref]))  # (2B, N)
        token_main, token_ref = tokens.chunk(2)
        if self.config.adaptive_mask_source == "change_encoder":
            return AdaptiveMaps(token_main, token_ref, change_map(change.mask_logits, self.config.image_size))
        fused = self.fusion_head(token_main.view(batch, 1, grid, grid), token_ref.view(batch, 1, grid, grid))
        return AdaptiveMaps(token_main, token_ref, resize_mask(fused, self.config.image_size))

    def read_change(self, registered_main: torch.Tensor, ref: torch.Tensor) -> ChangeOutput | None:
        """The change encoder on the registered pair (not in the paper); None without one.

        The registered main is detached: the registration learns from its own terms (eq. 2, the NCC term) and
        from L_lm through phi, not from the change encoder's supervised losses. With ``change_read_both_ways``
        the heads' logits are the mean of the forward and the backward reading (``change.read_both_ways``).
        """
        if not self.config.change_encoder:
            return None
        if self.config.change_read_both_ways:
            return read_both_ways(self.change_encoder, ref, registered_main.detach())
        return self.change_encoder(ref, registered_main.detach())

    def fuse(self, union: torch.Tensor, adaptive: torch.Tensor, lam: float) -> torch.Tensor:
        """Stage 5 (eq. 7): M = lambda U + (1 - lambda) F, or M = 1 without the saliency mask."""
        if not self.config.use_saliency_mask:
            return torch.ones_like(union)
        return fuse_masks(union, adaptive, lam)

    def masked_encode(self, state: VisualState, mask: torch.Tensor, *, with_mask_image: bool) -> MaskedFeatures:
        """Stage 6 (eq. 8-9): phi on M * I_main, M * I_ref and (optionally) M, in one batched call.

        Without the saliency mask, M = 1 and the masked images are the unmasked ones, so their features
        are f_main and f_ref themselves (sec. 3.8: the model reduces exactly to the unmasked baseline).
        """
        if not self.config.use_saliency_mask:
            return MaskedFeatures(state.features_main, state.features_ref, None)
        images = [mask * state.registration.registered_main, mask * state.ref]
        if with_mask_image:
            images.append(mask.expand(-1, 3, -1, -1))
        features = self.encode(torch.cat(images))  # (2B or 3B, N, D)
        parts = features.chunk(len(images))
        return MaskedFeatures(parts[0], parts[1], parts[2] if with_mask_image else None)

    def encode_question(self, question_ids: torch.Tensor, question_mask: torch.Tensor) -> torch.Tensor:
        """Question encoder (sec. 3.4): (B, L) ids -> (B, L, D) f_text over the shared embeddings."""
        return self.question_encoder(self.decoder.embed(question_ids), question_mask)

    def visual_state(self, main: torch.Tensor, ref: torch.Tensor) -> VisualState:
        """Stages 1-4 for a batch of pairs (B, 3, H, W) in [0, 1]: what the pipeline caches."""
        registration = self.register(main, ref)
        prior = self.prior_mask(registration.registered_main, ref)
        features = self.encode(torch.cat([registration.registered_main, ref]))  # (2B, N, D)
        features_main, features_ref = features.chunk(2)
        change = self.read_change(registration.registered_main, ref)
        adaptive = self.adaptive_mask(features_main, features_ref, change)
        return VisualState(registration, ref, features_main, features_ref, prior, adaptive, change)

    def image_slots(self, masked: MaskedFeatures,
                    state: VisualState | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's two image token sequences (eq. 10), each (B, N, D), as ``reference_tokens`` says.

        "reference" (the paper): f_mask_main, f_mask_ref. "difference": f_mask_main, f_mask_main - f_mask_ref.
        "unmasked_difference": f_mask_main, f_main - f_ref (the unmasked features of the visual ``state``).
        "change_tokens": f_mask_main, the change encoder's tokens of the ``state`` projected to the decoder width
        (B, K + 1, D).
        """
        mode = self.config.reference_tokens
        if mode == "change_tokens":
            if state is None or state.change is None:
                raise ValueError("reference_tokens 'change_tokens' needs the visual state's change encoder output")
            return masked.masked_main, self.change_projection(state.change.tokens)
        if mode == "difference":
            return masked.masked_main, masked.masked_main - masked.masked_ref
        if mode == "unmasked_difference":
            if state is None:
                raise ValueError("reference_tokens 'unmasked_difference' needs the visual state's unmasked features")
            return masked.masked_main, state.features_main - state.features_ref
        return masked.masked_main, masked.masked_ref

    def prefix(self, masked: MaskedFeatures | None, question_ids: torch.Tensor, question_mask: torch.Tensor,
               state: VisualState | None = None) -> Prefix:
        """The decoder input of eq. 10 from the masked features (and, for some ``reference_tokens``, the
        unmasked ones in ``state``) and the (B, L) question tokens.

        The question-only baseline (``use_images`` False) keeps the layout with zero image tokens (``masked``
        and ``state`` are then ignored and may be None).
        """
        question = self.encode_question(question_ids, question_mask)  # (B, L, D)
        if not self.config.use_images:
            empty = self.no_image_tokens(question)
            return self.decoder.build_prefix(empty.masked_main, empty.masked_ref, question, question_mask)
        return self.decoder.build_prefix(*self.image_slots(masked, state), question, question_mask)

    def decode(self, masked: MaskedFeatures | None, question_ids: torch.Tensor, question_mask: torch.Tensor,
               answer_ids: torch.Tensor, answer_mask: torch.Tensor, state: VisualState | None = None) -> torch.Tensor:
        """Stage 7 (eq. 10-11): teacher-forced answer logits (B, T, V)."""
        return self.decoder(self.prefix(masked, question_ids, question_mask, state), answer_ids, answer_mask)

    def no_image_tokens(self, like: torch.Tensor) -> MaskedFeatures:
        """Empty (B, 0, D) image token sequences for the question-only baseline."""
        empty = like.new_zeros(like.shape[0], 0, like.shape[-1])
        return MaskedFeatures(empty, empty, None)

    # ------------------------------------------------------------------------------------ training
    def forward(self, main: torch.Tensor, ref: torch.Tensor, question_ids: torch.Tensor,
                question_mask: torch.Tensor, answer_ids: torch.Tensor, answer_mask: torch.Tensor,
                lam: float = 0.5, *, change_mask: torch.Tensor | None = None,
                finding_labels: torch.Tensor | None = None, pair_labels: torch.Tensor | None = None,
                gt_theta: torch.Tensor | None = None) -> DiffVQAOutput:
        """Training pass: every loss term of eq. 11-18 and the total.

        Args:
            main: (B, 3, H, W) current visit in [0, 1].
            ref: (B, 3, H, W) reference visit in [0, 1].
            question_ids, question_mask: (B, L) from ``tokenize``.
            answer_ids, answer_mask: (B, T) from ``tokenize`` (answers end with the end-of-answer token).
            lam: fusion weight of eq. 7 (the trainer follows ``losses.lambda_schedule``).
            change_mask: (B, H, W) ground-truth change mask (synthetic data), for the change encoder's map loss.
            finding_labels, pair_labels: (B, K, 7) and (B, 2) targets of its label heads
                (``diffvqa_core.data.finding_labels``). Missing targets leave their terms at 0.
            gt_theta: (B, 2, 3) the synthetic pair's pose, for the supervised pose term (``alpha_pose``).

        Returns:
            DiffVQAOutput with the total loss, each unweighted term, masks and logits.
        """
        if not self.config.use_images:
            return self.question_only_forward(question_ids, question_mask, answer_ids, answer_mask)
        state = self.visual_state(main, ref)
        fused = self.fuse(state.prior.union, state.adaptive.fused, lam)  # (B, 1, H, W)
        masked = self.masked_encode(state, fused, with_mask_image=self.config.mask_gate == "encoded_mask")
        logits = self.decode(masked, question_ids, question_mask, answer_ids, answer_mask, state)
        terms = self.loss_terms(state, masked, fused, logits, answer_ids, answer_mask)
        terms.update(self.change_terms(state, logits, change_mask, finding_labels, pair_labels))
        terms["pose"] = (logits.new_zeros(()) if gt_theta is None or not self.config.use_registration
                         else losses.pose_loss(state.registration.theta, gt_theta, self.config.image_size))
        return DiffVQAOutput(
            loss=self.total_loss(terms), terms=terms, theta=state.registration.theta,
            prior_mask=state.prior.union, adaptive_mask=state.adaptive.fused, fused_mask=fused, logits=logits,
            state=state, masked=masked,
        )

    def question_only_forward(self, question_ids: torch.Tensor, question_mask: torch.Tensor,
                              answer_ids: torch.Tensor, answer_mask: torch.Tensor) -> DiffVQAOutput:
        """Training pass of the question-only baseline: L_lm from the question alone, every other term 0."""
        logits = self.decode(None, question_ids, question_mask, answer_ids, answer_mask)  # no image tokens
        lm = losses.language_modeling_loss(logits, answer_ids, answer_mask)
        terms = {name: (lm if name == "lm" else lm.new_zeros(())) for name in LOSS_TERMS}  # no image: no other term
        return DiffVQAOutput(loss=lm, terms=terms, theta=None, prior_mask=None, adaptive_mask=None,
                             fused_mask=None, logits=logits, state=None, masked=None)

    def loss_terms(self, state: VisualState, masked: MaskedFeatures, fused: torch.Tensor, logits: torch.Tensor,
                   answer_ids: torch.Tensor, answer_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each unweighted term of eq. 11-17 (see ``diffvqa_core.losses`` for the choices made)."""
        cfg = self.config
        target_main, target_ref = state.features_main, state.features_ref
        if cfg.detach_targets:
            target_main, target_ref = target_main.detach(), target_ref.detach()
        gate = self.mask_gate(masked, fused)
        theta = state.registration.theta
        return {
            "lm": losses.language_modeling_loss(logits, answer_ids, answer_mask),
            "reg": losses.registration_loss(theta, cfg.reg_w_smooth, cfg.reg_w_det, cfg.reg_w_trans),
            "sim": losses.image_similarity_loss(state.registration.registered_main, state.ref, cfg.similarity_size),
            "mask_main": losses.mask_consistency_loss(masked.masked_main, target_main, gate),
            "mask_ref": losses.mask_consistency_loss(masked.masked_ref, target_ref, gate),
            "pred_main": losses.prediction_loss(self.prediction_head(masked.masked_main), target_main),
            "pred_ref": losses.prediction_loss(self.prediction_head(masked.masked_ref), target_ref),
            "gram": losses.gram_loss(state.features_main, state.features_ref),
            "gram_mask": losses.gram_loss(masked.masked_main, masked.masked_ref),
            "koleo": losses.koleo_loss(self.koleo_vector(state, masked), cfg.koleo_eps),
        }

    def change_terms(self, state: VisualState, like: torch.Tensor, change_mask: torch.Tensor | None,
                     finding_labels: torch.Tensor | None, pair_labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The change encoder's supervised terms (not in the paper); 0 without the encoder or the targets."""
        zero = like.new_zeros(())
        change = state.change
        return {
            "change_mask": zero if change is None or change_mask is None
            else change_mask_loss(change.mask_logits, change_mask),
            "change_labels": zero if change is None or finding_labels is None or pair_labels is None
            else change_label_loss(change, finding_labels, pair_labels),
        }

    def koleo_vector(self, state: VisualState, masked: MaskedFeatures) -> torch.Tensor:
        """The per-sample vector KoLeo spreads (eq. 17, ``koleo_vector``): mean-pooled tokens, (B, D)."""
        if self.config.koleo_vector == "masked_main":
            return masked.masked_main.mean(1)
        if self.config.koleo_vector == "masked_pair":
            return torch.cat([masked.masked_main, masked.masked_ref], dim=1).mean(1)
        return state.features_main.mean(1)

    def mask_gate(self, masked: MaskedFeatures, fused: torch.Tensor) -> torch.Tensor:
        """Gate of L_mask (eq. 12): phi(M) tokens (B, N, D), or M pooled to the token grid (B, N, 1).

        Without a saliency mask (M = 1) the gate is 1 and L_mask is 0 by construction.
        """
        if masked.mask is not None:
            return masked.mask
        grid = self.image_encoder.grid_size
        return nn.functional.adaptive_avg_pool2d(fused, grid).flatten(2).transpose(1, 2)  # (B, N, 1)

    def loss_weights(self) -> dict[str, float]:
        """Weight of each term in eq. 18 (auxiliaries are 0 when ``use_unsupervised_losses`` is off)."""
        cfg = self.config
        aux = 1.0 if cfg.use_unsupervised_losses else 0.0
        return {
            "lm": 1.0, "reg": 1.0, "sim": cfg.alpha_similarity if cfg.use_registration else 0.0,
            "mask_main": aux * cfg.alpha_mask, "mask_ref": aux * cfg.alpha_mask,
            "pred_main": aux * cfg.alpha_pred, "pred_ref": aux * cfg.alpha_pred,
            "gram": aux * cfg.alpha_gram, "gram_mask": aux * cfg.alpha_gram,
            "koleo": aux * cfg.alpha_koleo,
            "change_mask": cfg.alpha_change_mask, "change_labels": cfg.alpha_change_labels,
            "pose": cfg.alpha_pose if cfg.use_registration else 0.0,
        }

    def total_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Eq. 18: the weighted sum of the terms."""
        return sum(weight * terms[name] for name, weight in self.loss_weights().items() if weight)

    def set_image_encoder_trainable(self, flag: bool) -> None:
        """Freezes (stage 1 of sec. 3.6) or unfreezes phi's pretrained backbone (and the change encoder).

        The paper freezes "the image encoder's weights" so as not to compromise "existing semantic
        information within the pretrained image encoder"; the projector is new (random at the start), so it
        stays trainable: frozen, stage 1 would feed the decoder a fixed random projection. The change encoder
        (not in the paper) is the other pretrained image encoder and is treated alike: frozen in stage 1, its
        projection into the decoder trainable.
        """
        self.image_encoder.backbone.requires_grad_(flag)
        self.image_encoder.projector.requires_grad_(True)
        if self.config.change_encoder:
            self.change_encoder.requires_grad_(flag)
            self.change_projection.requires_grad_(True)

    # ----------------------------------------------------------------------------------- inference
    def tokenize(self, questions: list[str], answers: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Tokenizes questions (and answers, each ending with the end-of-answer token), right-padded.

        Returns:
            question_ids, question_mask (B, L); with answers also answer_ids, answer_mask (B, T).

        Raises:
            ValueError: when a question has no tokens.
        """
        device = self.decoder.gpt2.device
        cfg, tok = self.config, self.tokenizer
        question_tokens = [tok.encode(q, add_special_tokens=False)[: cfg.max_question_len] for q in questions]
        if any(not ids for ids in question_tokens):
            raise ValueError("every question needs at least one token")
        question_ids, question_mask = self._pad(question_tokens, device)
        out = {"question_ids": question_ids, "question_mask": question_mask}
        if answers is not None:
            eos = self.decoder.token_ids["eos"]
            answer_tokens = [tok.encode(a, add_special_tokens=False)[: cfg.max_answer_len - 1] + [eos]
                             for a in answers]
            out["answer_ids"], out["answer_mask"] = self._pad(answer_tokens, device)
        return out

    def _pad(self, rows: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.decoder.token_ids["pad"], dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids.to(device), mask.to(device)

    @torch.no_grad()
    def answer(self, state: VisualState, questions: list[str], lam: float, *, num_beams: int = 1,
               max_new_tokens: int = 40, no_repeat_ngram_size: int = 0, use_cache: bool = True,
               grammar: bool = False, readout: bool = True) -> AnswerOutput:
        """Stages 5-7 from a cached visual state: fuse, masked re-encoding (2 images), generation.

        ``grammar`` (not in the paper) holds each answer to the benchmark's answer grammar for its question's
        form (``diffvqa_core.constrained_decoding``); questions of no known form are answered freely.
        ``readout`` False leaves every answer to the decoder even when the config's ``difference_readout`` is
        "change_heads" (to compare the two).
        """
        fused = self.fuse(state.prior.union, state.adaptive.fused, lam)
        heads: list[str | None] = [None] * len(questions)
        if readout and self.config.difference_readout == "change_heads" and state.change is not None:
            heads = answers_from_heads(state.change, questions, self.config.change_threshold,
                                       self.config.change_gate)
        read = [h is not None for h in heads]
        if all(read):  # nothing left for the decoder
            return AnswerOutput([h for h in heads if h is not None], fused, read)
        masked = self.masked_encode(state, fused, with_mask_image=False) if self.config.use_images else None
        text = self.tokenize(questions)
        prefix = self.prefix(masked, text["question_ids"], text["question_mask"], state)
        processor = self.grammar_processor(questions, num_beams) if grammar else None
        ids = self.decoder.generate(prefix, num_beams=num_beams, max_new_tokens=max_new_tokens,
                                    no_repeat_ngram_size=no_repeat_ngram_size, use_cache=use_cache,
                                    logits_processor=processor)
        decoded = [a.strip() for a in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        answers = [h if h is not None else a for h, a in zip(heads, decoded)]
        return AnswerOutput(answers, fused, read)

    def grammar_processor(self, questions: list[str], num_beams: int) -> GrammarLogitsProcessor:
        """The logits processor that holds each question's answer to its grammar (``num_beams`` rows each)."""
        ids = self.decoder.token_ids
        return GrammarLogitsProcessor(self.tokenizer, [AnswerGrammar.for_question(q) for q in questions],
                                      num_beams=num_beams, eos_token_id=ids["eos"],
                                      skip_token_ids={ids[k] for k in ("pad", "img", "qtn", "ans")})

    @torch.no_grad()
    def generate(self, main: torch.Tensor, ref: torch.Tensor, questions: list[str], lam: float = 0.5,
                 num_beams: int = 1, max_new_tokens: int = 40, no_repeat_ngram_size: int = 0,
                 use_cache: bool = True, grammar: bool = False) -> list[str]:
        """Answers questions about image pairs (B, 3, H, W) in [0, 1]: greedy or beam, with KV cache."""
        state = self.visual_state(main, ref)
        return self.answer(state, questions, lam, num_beams=num_beams, max_new_tokens=max_new_tokens,
                           no_repeat_ngram_size=no_repeat_ngram_size, use_cache=use_cache, grammar=grammar).answers

    # ---------------------------------------------------------------------------------- checkpoints
    def save_pretrained(self, directory: str | Path) -> None:
        """Writes config.json, model.safetensors (shared tensors stored once) and the tokenizer files."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.to_json(directory / CONFIG_FILE)
        save_model(self, str(directory / WEIGHTS_FILE))
        self.tokenizer.save_pretrained(str(directory))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> DiffVQAModel:
        """Rebuilds a model saved by ``save_pretrained``, without fetching any pretrained part.

        Raises:
            FileNotFoundError: when config.json or model.safetensors is missing.
            ValueError: when the weights do not fit the config (names the keys).
        """
        directory = Path(directory)
        refuse_pickle_checkpoint(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory} is not a diffvqa checkpoint: {name} is missing")
        config = DiffVQAConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8")))
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        model = cls(config, tokenizer, load_pretrained_parts=False)
        try:
            load_model(model, str(directory / WEIGHTS_FILE), strict=True)
        except RuntimeError as error:
            raise ValueError(f"weights in {directory / WEIGHTS_FILE} do not match the config: {error}") from error
        except SafetensorError as error:
            raise ValueError(f"{directory / WEIGHTS_FILE} is truncated or not a safetensors file: {error}") from error
        return model.eval()


def refuse_pickle_checkpoint(path: Path) -> None:
    """Raises ValueError for a pickle checkpoint (a file, or a folder with no model.safetensors but a pickle).

    Unpickling can run arbitrary code, so ``pytorch_model.bin`` / ``*.pt`` files are never opened here.
    """
    if path.is_file():
        what = "a pickle file" if path.suffix.lower() in PICKLE_SUFFIXES else "a file"
        raise ValueError(f"{path.name} is {what}; give a checkpoint folder with {CONFIG_FILE} and {WEIGHTS_FILE}"
                         + (f" ({PICKLE_REFUSAL})" if what == "a pickle file" else ""))
    pickles = sorted(p.name for p in path.glob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles and not (path / WEIGHTS_FILE).is_file():
        raise ValueError(f"{path} holds a pickle checkpoint ({', '.join(pickles)}) and no {WEIGHTS_FILE}: "
                         f"{PICKLE_REFUSAL}")
