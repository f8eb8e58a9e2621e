"""DiffVQAPipeline: image files and a question in, an Analysis (answer, warp, masks) out.

The pipeline reads both visits with ``imaging.read_image``, resizes them to the model input, and runs the
model's stages (``model.py``). Stages 1-4 (registration, DINO prior U, unmasked features, adaptive mask F)
do not depend on lambda or on the question: they are cached on the Analysis, so ``reanalyze`` only fuses
(eq. 7), re-encodes the masked pair (eq. 8-9) and decodes (eq. 10), and ``fuse`` recomputes M for an
overlay without any network pass.

Speed (``python -m diffvqa_core.bench`` measures each against the machine's limits): everything runs under
``torch.inference_mode``; the visual state of the last few pairs is kept (keyed by the pixels), so a new
question about the same pair skips stages 1-4 too; ``dtype=torch.bfloat16`` opts into bf16 autocast (about
twice the matmul rate on CPUs with AVX-512 BF16 / AMX and on recent GPUs; answers may differ from fp32).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from diffvqa_core import imaging
from diffvqa_core.analysis_view import AnalysisView
from diffvqa_core.checkpoint_files import DEMO_CHECKPOINT, file_sha256, is_demo_folder
from diffvqa_core.config import DiffVQAConfig
from diffvqa_core.fusion import check_lambda, fuse_for_display
from diffvqa_core.model import WEIGHTS_FILE, DiffVQAModel, VisualState
from diffvqa_core.tokenizer import local_tokenizer

MAX_QUESTION_CHARS = 1000
RANDOM_INIT = "random-init"
DTYPES = (torch.float32, torch.bfloat16)


def inference_context(dtype: torch.dtype, device: torch.device | str = "cpu") -> contextlib.AbstractContextManager:
    """``torch.inference_mode`` for fp32; ``no_grad`` + autocast for bf16.

    Not inference mode under autocast: there autocast's cache of bf16 weight copies is bypassed, so every
    decoded token would cast all of GPT-2's weights again (measured 2.3x slower per token than fp32).
    """
    if dtype == torch.float32:
        return torch.inference_mode()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.no_grad())
    stack.enter_context(torch.autocast(device_type=torch.device(device).type, dtype=dtype))
    return stack


class QuestionError(ValueError):
    """A question the model cannot take (empty or too long); the message is meant for the person asking."""


@dataclass
class Analysis(AnalysisView):
    """One answered case (the fields of ``AnalysisView``) with the features of its pair, which ``reanalyze`` reuses
    (``_state``: registration, masks and unmasked features, stages 1-4)."""

    _state: VisualState | None = field(default=None, repr=False, compare=False)


def _plane(tensor: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) tensor -> (H, W) float32 array of its first channel."""
    return tensor[0, 0].detach().float().cpu().numpy().astype(np.float32)


class DiffVQAPipeline:
    """Runs a DiffVQAModel on image pairs for a person.

    Args:
        model: the model (put in eval mode here).
        checkpoint_name: what the app shows as the loaded checkpoint.
        checkpoint_sha256: digest of model.safetensors, or "random-init".
        is_demo: whether this is the bundled demo checkpoint (trained on synthetic data).
        dtype: torch.float32 (default), or torch.bfloat16 to run the networks under bf16 autocast (opt-in:
            faster where the hardware has bf16 matmuls, answers may differ slightly from fp32).
        state_cache_size: how many image pairs keep their visual state (stages 1-4) for new questions.
        grammar: hold answers to the benchmark's answer grammar for the question's form (not in the paper;
            ``diffvqa_core.constrained_decoding``): the app never shows an answer the benchmark could not write.
    """

    def __init__(self, model: DiffVQAModel, *, checkpoint_name: str, checkpoint_sha256: str,
                 is_demo: bool = False, dtype: torch.dtype = torch.float32, state_cache_size: int = 2,
                 grammar: bool = True) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype}")
        self.model = model.eval()
        self.checkpoint_name = checkpoint_name
        self.checkpoint_sha256 = checkpoint_sha256
        self.is_demo = is_demo
        self.dtype = dtype
        self.state_cache_size = state_cache_size
        self.grammar = grammar
        self._states: OrderedDict[str, VisualState] = OrderedDict()

    def _inference(self) -> contextlib.AbstractContextManager:
        """The context every network pass of the pipeline runs in (see ``inference_context``)."""
        return inference_context(self.dtype, next(self.model.parameters()).device)

    def clear_cache(self) -> None:
        """Forgets the cached visual states (the next ``analyze`` of any pair runs every stage)."""
        self._states.clear()

    def _visual_state(self, main_input: torch.Tensor, ref_input: torch.Tensor) -> VisualState:
        """Stages 1-4 of the pair, from the cache when the same pixels were analysed recently."""
        if self.state_cache_size <= 0:
            return self.model.visual_state(main_input, ref_input)
        digest = hashlib.sha256()
        for tensor in (main_input, ref_input):
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
        key = digest.hexdigest()
        if key in self._states:
            self._states.move_to_end(key)
            return self._states[key]
        state = self.model.visual_state(main_input, ref_input)
        self._states[key] = state
        while len(self._states) > self.state_cache_size:
            self._states.popitem(last=False)
        return state

    @property
    def config(self) -> DiffVQAConfig:
        """The model's config."""
        return self.model.config

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, *, dtype: torch.dtype = torch.float32,
                        device: torch.device | str = "cpu") -> DiffVQAPipeline:
        """Loads a checkpoint directory; None means the bundled demo checkpoint (assets/demo_model).

        ``dtype=torch.bfloat16`` opts into bf16 autocast (see the class); ``device`` is where the model runs
        (``diffvqa_core.devices.resolve_device`` turns "auto" / "cuda" into one, with a clear error).

        Raises:
            FileNotFoundError: when the directory or its files are missing.
            ValueError: a pickle checkpoint (never read), or weights that do not match the config.
        """
        directory = Path(path) if path is not None else DEMO_CHECKPOINT
        if not directory.exists():
            hint = (" (the bundled demo checkpoint is missing: use a full clone or pass a checkpoint folder)"
                    if path is None else "")
            raise FileNotFoundError(f"no diffvqa checkpoint at {directory}{hint}")
        model = DiffVQAModel.from_pretrained(directory).to(device)
        return cls(model, checkpoint_name=directory.name, checkpoint_sha256=file_sha256(directory / WEIGHTS_FILE),
                   is_demo=path is None or is_demo_folder(directory), dtype=dtype)

    @classmethod
    def from_config(cls, config: DiffVQAConfig, *, dtype: torch.dtype = torch.float32) -> DiffVQAPipeline:
        """A pipeline over a randomly initialised model (no pretrained part is fetched): tests, benchmarks."""
        model = DiffVQAModel(config, local_tokenizer(config.local_tokenizer_vocab_size), load_pretrained_parts=False)
        return cls(model, checkpoint_name=RANDOM_INIT, checkpoint_sha256=RANDOM_INIT, dtype=dtype)

    # ------------------------------------------------------------------------------------ analysis
    def analyze(self, main: imaging.ImageSource, ref: imaging.ImageSource, question: str,
                lam: float | None = None, num_beams: int = 1, max_new_tokens: int | None = None) -> Analysis:
        """Reads both visits, registers, builds the masks and answers the question.

        Args:
            main: current visit: path, bytes, PIL image or ndarray.
            ref: reference (earlier) visit, same kinds.
            question: the question, 1 to 1000 characters.
            lam: fusion weight lambda in [0, 1]; None uses the config's inference value (0.5).
            num_beams: 1 for greedy decoding, more for beam search.
            max_new_tokens: longest answer in tokens (None: the config's ``max_answer_len``, as in training).

        Raises:
            imaging.ImageReadError: for an image that cannot be read.
            QuestionError: for an empty or overlong question.
            ValueError: for lambda outside [0, 1].
        """
        question = self._check_question(question)
        size = self.config.image_size
        device = next(self.model.parameters()).device
        main_input = imaging.to_model_input(imaging.read_image(main), size).unsqueeze(0).to(device)  # (1, 3, S, S)
        ref_input = imaging.to_model_input(imaging.read_image(ref), size).unsqueeze(0).to(device)
        with self._inference():  # one region: under bf16 autocast each weight is cast once per case
            state = self._visual_state(main_input, ref_input)
            return self._answer(state, _plane(main_input), question, lam, num_beams, max_new_tokens)

    def reanalyze(self, analysis: Analysis, lam: float | None = None, question: str | None = None,
                  num_beams: int | None = None, max_new_tokens: int | None = None) -> Analysis:
        """Answers again from the cached registration, unmasked features and masks of ``analysis``.

        Only the fusion (eq. 7), the masked re-encoding (eq. 8-9) and decoding run again.

        Args:
            analysis: a previous result of ``analyze`` (or ``reanalyze``).
            lam: new fusion weight; None keeps the previous one.
            question: a new question about the same pair; None keeps the previous one.
            num_beams: None keeps the previous setting.
            max_new_tokens: longest answer in tokens (None: the config's ``max_answer_len``).
        """
        question = self._check_question(analysis.question if question is None else question)
        with self._inference():
            return self._answer(analysis._state, analysis.main_image, question, analysis.lam if lam is None else lam,
                                analysis.num_beams if num_beams is None else num_beams, max_new_tokens)

    def fuse(self, analysis: Analysis, lam: float) -> np.ndarray:
        """M for another lambda, for an overlay only: (S, S) float32 in [0, 1], no network pass."""
        return fuse_for_display(analysis.prior_mask, analysis.adaptive_mask, lam,
                                use_saliency_mask=self.config.use_saliency_mask)

    def _answer(self, state: VisualState, main_image: np.ndarray, question: str, lam: float | None,
                num_beams: int, max_new_tokens: int | None) -> Analysis:
        lam = self._check_lambda(self.config.inference_lambda if lam is None else lam)
        result = self.model.answer(state, [question], lam, num_beams=num_beams,
                                   max_new_tokens=max_new_tokens or self.config.max_answer_len, grammar=self.grammar)
        return Analysis(
            answer=result.answers[0], question=question, lam=lam,
            theta=state.registration.theta[0].detach().float().cpu().numpy(),
            main_image=main_image, ref_image=_plane(state.ref),
            registered_main=_plane(state.registration.registered_main),
            prior_mask=_plane(state.prior.union), adaptive_mask=_plane(state.adaptive.fused),
            fused_mask=_plane(result.fused_mask), num_beams=num_beams, _state=state,
            answered_by="change heads" if any(result.from_change_heads) else "decoder",
        )

    @staticmethod
    def _check_question(question: str) -> str:
        if not isinstance(question, str):
            raise QuestionError(f"the question must be text, not {type(question).__name__}")
        if not question.isascii():
            try:
                question.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: the tokenizer would fail with a TypeError
                raise QuestionError("the question contains invalid Unicode characters: type it again") from None
        question = question.strip()
        if not question:
            raise QuestionError("the question is empty: type a question about the two images")
        if len(question) > MAX_QUESTION_CHARS:
            raise QuestionError(f"the question is {len(question)} characters long; the limit is "
                                f"{MAX_QUESTION_CHARS}")
        return question

    @staticmethod
    def _check_lambda(lam: float) -> float:
        return check_lambda(lam)


__all__ = ["Analysis", "DiffVQAPipeline", "QuestionError"]
