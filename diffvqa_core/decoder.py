"""GPT-2 answer decoder with the multimodal prefix of eq. 10 (paper sec. 3.5).

The decoder reads ``[<img>, f_mask_main, <img>, f_mask_ref, <qtn>, f_text, <ans>]`` as input embeddings,
then the answer tokens. The question slot keeps its padding (masked out of attention), so every row of a
batch has the same prefix length and answers start at the same position. Position ids count only
attended positions, in training and in generation alike.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase

from diffvqa_core.config import DiffVQAConfig
from diffvqa_core.tokenizer import special_token_ids


@dataclass
class Prefix:
    """The multimodal prefix: embeddings (B, P, D) and attention mask (B, P)."""

    embeddings: torch.Tensor
    mask: torch.Tensor


def build_gpt2(config: DiffVQAConfig, tokenizer: PreTrainedTokenizerBase, *, pretrained: bool) -> GPT2LMHeadModel:
    """GPT-2 from ``from_pretrained`` (vocabulary resized for the new tokens) or random from GPT2Config."""
    ids = special_token_ids(tokenizer)
    if pretrained:
        model = GPT2LMHeadModel.from_pretrained(config.decoder)
        model.resize_token_embeddings(len(tokenizer))
    else:
        model = GPT2LMHeadModel(GPT2Config(
            vocab_size=len(tokenizer), bos_token_id=ids["eos"], eos_token_id=ids["eos"],
            **config.decoder_overrides,
        ))
    model.config.pad_token_id = ids["pad"]
    return model


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
            masked_ref: (B, N, D) f_mask_ref.
            question: (B, L, D) f_text.
            question_mask: (B, L) 1 for real question tokens.

        Returns:
            Prefix of length P = 2N + L + 4.
        """
        batch = masked_main.shape[0]
        specials = torch.tensor([self.token_ids[k] for k in ("img", "qtn", "ans")], device=masked_main.device)
        img, qtn, ans = self.embed(specials).unsqueeze(0).expand(batch, -1, -1).split(1, dim=1)  # (B, 1, D) each
        embeddings = torch.cat([img, masked_main, img, masked_ref, qtn, question, ans], dim=1)  # (B, P, D)
        ones = question_mask.new_ones(batch, 1)
        image_ones = question_mask.new_ones(batch, masked_main.shape[1])
        mask = torch.cat([ones, image_ones, ones, image_ones, ones, question_mask, ones], dim=1)  # (B, P)
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
    def generate(self, prefix: Prefix, *, num_beams: int = 1, max_new_tokens: int = 40,
                 no_repeat_ngram_size: int = 0, use_cache: bool = True) -> torch.Tensor:
        """Greedy (``num_beams=1``) or beam search after the prefix, with GPT-2's KV cache.

        Returns:
            (B, T) generated token ids, padded with <pad> after the end-of-answer token.
        """
        room = self.max_positions - prefix.embeddings.shape[1]
        if room < 1:
            raise ValueError(f"prefix of {prefix.embeddings.shape[1]} tokens leaves no room in GPT-2's "
                             f"{self.max_positions} positions")
        generation = GenerationConfig(
            max_new_tokens=min(max_new_tokens, room), num_beams=num_beams, do_sample=False,
            no_repeat_ngram_size=no_repeat_ngram_size, eos_token_id=self.token_ids["eos"],
            pad_token_id=self.token_ids["pad"], bos_token_id=self.token_ids["eos"], use_cache=use_cache,
        )
        with warnings.catch_warnings():
            # The n-gram block applying to the answer only, not to the image/question prefix, is intended.
            warnings.filterwarnings("ignore", message="Passing `no_repeat_ngram_size` with `inputs_embeds`")
            return self.gpt2.generate(inputs_embeds=prefix.embeddings, attention_mask=prefix.mask,
                                      generation_config=generation)
