"""GPT-2 answer decoder with the multimodal prefix of eq. 10 (paper sec. 3.5).

The decoder reads ``[<img>, f_mask_main, <img>, f_mask_ref, <qtn>, f_text, <ans>]`` as input embeddings,
then the answer tokens. The question slot keeps its padding (masked out of attention), so every row of a
batch has the same prefix length and answers start at the same position. Position ids count only
attended positions, in training and in generation alike.

Greedy decoding runs its own loop (``prefill`` once, then one ``step`` per token over GPT-2's KV cache):
the same tokens as ``GPT2LMHeadModel.generate`` (a test compares them), without its per-token bookkeeping,
and with the prefill computing logits for the last position only. Beam search uses ``generate``.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import (GenerationConfig, GPT2Config, GPT2LMHeadModel, LogitsProcessor, LogitsProcessorList,
                          PreTrainedTokenizerBase)

from diffvqa_core.config import DiffVQAConfig
from diffvqa_core.tokenizer import special_token_ids
from diffvqa_core.weights import resolve_transformers_part


@dataclass
class Prefix:
    """The multimodal prefix: embeddings (B, P, D) and attention mask (B, P)."""

    embeddings: torch.Tensor
    mask: torch.Tensor


# transformers 5 renamed GPT-2's ``past_key_values`` argument and output to ``cache``; support both.
CACHE_ARGUMENT = "cache" if "cache" in inspect.signature(GPT2LMHeadModel.forward).parameters else "past_key_values"


def _returned_cache(output: Any) -> Any:
    cache = output.get("cache")
    return output.get("past_key_values") if cache is None else cache


@dataclass
class DecodeState:
    """Where greedy decoding stands: GPT-2's KV cache, the attention mask so far (B, T), the position id of
    the next token (B,) and the logits predicting it (B, V)."""

    cache: Any
    mask: torch.Tensor
    next_position: torch.Tensor
    logits: torch.Tensor


def build_gpt2(config: DiffVQAConfig, tokenizer: PreTrainedTokenizerBase, *, pretrained: bool) -> GPT2LMHeadModel:
    """GPT-2 from ``from_pretrained`` (vocabulary grown by the new tokens) or random from GPT2Config.

    A pretrained GPT-2 must come with its own tokenizer: its vocabulary (before the added tokens) must be the
    model's, or every token id would point at an unrelated embedding. A random decoder's table has one row per
    token, or ``decoder_overrides["vocab_size"]`` rows when that is larger (ids no tokenizer produces: a random
    decoder then costs what GPT-2's 50,257-token head costs, for timing).

    Raises:
        ValueError: a pretrained GPT-2 with another tokenizer (naming the files to put where), or a
            ``vocab_size`` override smaller than the tokenizer.
        diffvqa_core.weights.WeightsNotFoundError: GPT-2's weights are not on this machine.
    """
    ids = special_token_ids(tokenizer)
    if pretrained:
        source = resolve_transformers_part(config.decoder, "decoder")
        gpt2_config = GPT2Config.from_pretrained(source.location, local_files_only=source.origin != "hub")
        check_tokenizer_fits(tokenizer, gpt2_config.vocab_size, config, source.location)
        model = GPT2LMHeadModel.from_pretrained(source.location, config=gpt2_config,
                                                local_files_only=source.origin != "hub")
        model.resize_token_embeddings(len(tokenizer))
    else:
        overrides = dict(config.decoder_overrides)
        vocab_size = int(overrides.pop("vocab_size", len(tokenizer)))
        if vocab_size < len(tokenizer):
            raise ValueError(f"decoder_overrides vocab_size {vocab_size} is smaller than the tokenizer's "
                             f"{len(tokenizer)} tokens")
        model = GPT2LMHeadModel(GPT2Config(
            vocab_size=vocab_size, bos_token_id=ids["eos"], eos_token_id=ids["eos"], **overrides,
        ))
    model.config.pad_token_id = ids["pad"]
    return model


def check_tokenizer_fits(tokenizer: PreTrainedTokenizerBase, model_vocab: int, config: DiffVQAConfig,
                         location: str) -> None:
    """Refuses a tokenizer whose base vocabulary is not the pretrained GPT-2's (``model_vocab`` tokens).

    Raises:
        ValueError: saying which files to put where.
    """
    if tokenizer.vocab_size == model_vocab:
        return
    named = f"tokenizer {config.tokenizer!r}" if config.tokenizer else "no tokenizer"
    raise ValueError(
        f"the pretrained GPT-2 at {location} has a {model_vocab}-token vocabulary, but the decoder was given a "
        f"{tokenizer.vocab_size}-token tokenizer ({named} in the config; the local BPE stands in for a missing "
        f"one): every token id would point at an unrelated embedding. Put GPT-2's own tokenizer files "
        f"(tokenizer.json, or vocab.json + merges.txt, with tokenizer_config.json) in {location}, or name their "
        f"folder as `tokenizer` in the config (see docs/reproducing.md)")


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids counting attended tokens only: (B, T) mask -> (B, T) ids (masked slots get 1)."""
    positions = mask.long().cumsum(-1) - 1
    return positions.masked_fill(mask == 0, 1)


class AnswerDecoder(nn.Module):
    """GPT-2 LM head model plus the prefix layout of eq. 10.

    Args:
        config: model config (GPT-2 name or overrides, pretrained flag).
        tokenizer: tokenizer carrying <pad> <img> <qtn> <ans> and the end-of-answer token.
        pretrained: load the configured weights rather than initialise at random.
    """

    def __init__(self, config: DiffVQAConfig, tokenizer: PreTrainedTokenizerBase, *, pretrained: bool) -> None:
        super().__init__()
        self.gpt2 = build_gpt2(config, tokenizer, pretrained=pretrained)
        self.token_ids = special_token_ids(tokenizer)

    @property
    def width(self) -> int:
        """Embedding width D (768 for GPT-2 small)."""
        return self.gpt2.config.n_embd

    @property
    def max_positions(self) -> int:
        """Longest sequence GPT-2's position table covers."""
        return self.gpt2.config.n_positions

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Shared token embeddings: (B, T) ids -> (B, T, D)."""
        return self.gpt2.get_input_embeddings()(ids)

    def build_prefix(self, masked_main: torch.Tensor, masked_ref: torch.Tensor, question: torch.Tensor,
                     question_mask: torch.Tensor) -> Prefix:
        """Lays out [<img>, f_mask_main, <img>, f_mask_ref, <qtn>, f_text, <ans>] (eq. 10).

        Args:
            masked_main: (B, N, D) f_mask_main.
            masked_ref: (B, N', D) f_mask_ref (or what ``reference_tokens`` puts in the second slot).
            question: (B, L, D) f_text.
            question_mask: (B, L) 1 for real question tokens.

        Returns:
            Prefix of length P = N + N' + L + 4.
        """
        batch = masked_main.shape[0]
        specials = torch.tensor([self.token_ids[k] for k in ("img", "qtn", "ans")], device=masked_main.device)
        img, qtn, ans = self.embed(specials).unsqueeze(0).expand(batch, -1, -1).split(1, dim=1)  # (B, 1, D) each
        embeddings = torch.cat([img, masked_main, img, masked_ref, qtn, question, ans], dim=1)  # (B, P, D)
        ones = question_mask.new_ones(batch, 1)
        main_ones = question_mask.new_ones(batch, masked_main.shape[1])
        second_ones = question_mask.new_ones(batch, masked_ref.shape[1])  # the second slot may be shorter
        mask = torch.cat([ones, main_ones, ones, second_ones, ones, question_mask, ones], dim=1)  # (B, P)
        return Prefix(embeddings, mask)

    def forward(self, prefix: Prefix, answer_ids: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits predicting each answer token.

        Args:
            prefix: the multimodal prefix (ends with <ans>).
            answer_ids: (B, T) answer tokens ending with the end-of-answer token.
            answer_mask: (B, T) 1 for real tokens.

        Returns:
            (B, T, V) logits; position t predicts answer_ids[:, t].
        """
        inputs = torch.cat([prefix.embeddings, self.embed(answer_ids[:, :-1])], dim=1)  # (B, P + T - 1, D)
        mask = torch.cat([prefix.mask, answer_mask[:, :-1]], dim=1)  # (B, P + T - 1)
        logits = self.gpt2(inputs_embeds=inputs, attention_mask=mask, position_ids=positions_from_mask(mask),
                           use_cache=False).logits  # (B, P + T - 1, V)
        return logits[:, prefix.embeddings.shape[1] - 1:]

    @torch.no_grad()
    def prefill(self, prefix: Prefix) -> DecodeState:
        """Runs the prefix once, filling the KV cache; logits for its last position only: (B, V)."""
        out = self.gpt2(inputs_embeds=prefix.embeddings, attention_mask=prefix.mask,
                        position_ids=positions_from_mask(prefix.mask), use_cache=True, logits_to_keep=1)
        return DecodeState(_returned_cache(out), prefix.mask, prefix.mask.sum(-1), out.logits[:, -1])

    @torch.no_grad()
    def step(self, state: DecodeState, token_ids: torch.Tensor) -> DecodeState:
        """Feeds one token per row (B,) through the cache: the next state, with logits for the token after."""
        mask = torch.cat([state.mask, state.mask.new_ones(state.mask.shape[0], 1)], dim=1)  # (B, T + 1)
        out = self.gpt2(input_ids=token_ids[:, None], attention_mask=mask, position_ids=state.next_position[:, None],
                        use_cache=True, **{CACHE_ARGUMENT: state.cache})
        return DecodeState(_returned_cache(out), mask, state.next_position + 1, out.logits[:, -1])

    @torch.no_grad()
    def greedy(self, prefix: Prefix, max_new_tokens: int, *, stop_at_eos: bool = True,
               logits_processor: LogitsProcessor | None = None) -> torch.Tensor:
        """Greedy decoding with the KV cache: prefill once, then one cached step per token.

        Rows that have emitted the end-of-answer token continue with <pad>; the loop ends when every row
        has (or after ``max_new_tokens``). ``logits_processor`` (e.g. the answer grammar) may mask tokens first.

        Returns:
            (B, T) token ids, T <= max_new_tokens.
        """
        state = self.prefill(prefix)
        eos, pad = self.token_ids["eos"], self.token_ids["pad"]
        batch = prefix.mask.shape[0]
        finished = torch.zeros(batch, dtype=torch.bool, device=prefix.mask.device)
        tokens: list[torch.Tensor] = []
        for index in range(max_new_tokens):
            logits = state.logits.float()
            if logits_processor is not None:
                so_far = torch.stack(tokens, 1) if tokens else prefix.mask.new_zeros(batch, 0)
                logits = logits_processor(so_far, logits)
            token = logits.argmax(-1)  # (B,)
            token = token.masked_fill(finished, pad)
            tokens.append(token)
            if stop_at_eos:
                finished |= token == eos
                if bool(finished.all()):
                    break
            if index + 1 < max_new_tokens:
                state = self.step(state, token)
        return torch.stack(tokens, dim=1)

    def room(self, prefix: Prefix, max_new_tokens: int) -> int:
        """How many new tokens fit after the prefix in GPT-2's position table (at most ``max_new_tokens``).

        Raises:
            ValueError: when the prefix leaves no room.
        """
        room = self.max_positions - prefix.embeddings.shape[1]
        if room < 1:
            raise ValueError(f"prefix of {prefix.embeddings.shape[1]} tokens leaves no room in GPT-2's "
                             f"{self.max_positions} positions")
        return min(max_new_tokens, room)

    @torch.no_grad()
    def generate(self, prefix: Prefix, *, num_beams: int = 1, max_new_tokens: int = 40,
                 no_repeat_ngram_size: int = 0, use_cache: bool = True, fast: bool = True,
                 logits_processor: LogitsProcessor | None = None) -> torch.Tensor:
        """Greedy (``num_beams=1``) or beam search after the prefix, with GPT-2's KV cache.

        Plain greedy decoding with the cache runs ``greedy`` (same tokens, less overhead per token) unless
        ``fast`` is False; everything else runs ``GPT2LMHeadModel.generate``. ``logits_processor`` applies to
        both (the answer grammar: ``diffvqa_core.constrained_decoding``).

        Returns:
            (B, T) generated token ids, padded with <pad> after the end-of-answer token.
        """
        max_new_tokens = self.room(prefix, max_new_tokens)
        if fast and use_cache and num_beams == 1 and no_repeat_ngram_size == 0:
            return self.greedy(prefix, max_new_tokens, logits_processor=logits_processor)
        generation = GenerationConfig(
            max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
            no_repeat_ngram_size=no_repeat_ngram_size, eos_token_id=self.token_ids["eos"],
            pad_token_id=self.token_ids["pad"], bos_token_id=self.token_ids["eos"], use_cache=use_cache,
        )
        with warnings.catch_warnings():
            # The n-gram block applying to the answer only, not to the image/question prefix, is intended.
            warnings.filterwarnings("ignore", message="Passing `no_repeat_ngram_size` with `inputs_embeds`")
            return self.gpt2.generate(inputs_embeds=prefix.embeddings, attention_mask=prefix.mask,
                                      generation_config=generation,
                                      logits_processor=LogitsProcessorList([logits_processor] if logits_processor
                                                                           else []))
