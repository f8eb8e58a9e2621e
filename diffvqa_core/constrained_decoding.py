"""Decoding held to the benchmark's answer grammar (not in the paper): the decoder can only write answers the
benchmark could write (``diffvqa_core.answer_grammar``).

``GrammarLogitsProcessor`` is a transformers ``LogitsProcessor``: for every row of a batch (every beam) it keeps
the best-scoring tokens that continue the row's text within its question's grammar, and the end-of-answer
token only where the text is a whole answer; everything else gets -inf. Rows whose question has no known form
are left free.

It checks lazily, in descending score order, and stops after ``keep`` allowed tokens: greedy search needs the
best allowed token only, and beam search over ``num_beams`` beams takes at most ``2 * num_beams`` candidates per
beam from scores that are already log-probabilities over the whole vocabulary, so keeping that many per row
gives exactly the search a full mask would, at a few grammar checks per token instead of one per vocabulary
entry. Checks are cached by (text, token).
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from diffvqa_core.answer_grammar import AnswerGrammar


class GrammarLogitsProcessor(LogitsProcessor):
    """Masks, per row, every token that would leave its question's answer grammar.

    Args:
        tokenizer: the decoder's tokenizer (byte-level BPE: a row's text is the concatenation of its tokens).
        grammars: one grammar (or None: free) per question of the batch.
        num_beams: rows per question (row r belongs to question r // num_beams).
        eos_token_id: the end-of-answer token.
        skip_token_ids: tokens that are never text (padding, the prefix's special tokens).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, grammars: list[AnswerGrammar | None], *, num_beams: int,
                 eos_token_id: int, skip_token_ids: set[int]) -> None:
        self.grammars, self.num_beams, self.eos = grammars, num_beams, eos_token_id
        self.skip = set(skip_token_ids) | {eos_token_id}
        self.pieces = [tokenizer.decode([i]) for i in range(len(tokenizer))]
        self.keep = 2 * num_beams
        self.cache: dict[tuple[AnswerGrammar, str, int], bool] = {}

    def text(self, ids: list[int]) -> str:
        """The text of a row's generated tokens (special tokens dropped)."""
        return "".join(self.pieces[i] for i in ids if i not in self.skip)

    def allowed(self, grammar: AnswerGrammar, text: str, token: int) -> bool:
        """Whether ``token`` may follow ``text`` under ``grammar``."""
        key = (grammar, text, token)
        if key not in self.cache:
            if token == self.eos:
                self.cache[key] = grammar.accepts(text)
            elif token in self.skip:
                self.cache[key] = False
            else:
                self.cache[key] = grammar.allows_prefix(text + self.pieces[token])
        return self.cache[key]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """(rows, T) generated ids so far and (rows, V) scores -> scores with the disallowed tokens at -inf."""
        masked = torch.full_like(scores, float("-inf"))
        order = scores.argsort(dim=-1, descending=True).tolist()
        for row, ranking in enumerate(order):
            grammar = self.grammars[row // self.num_beams]
            if grammar is None:
                masked[row] = scores[row]
                continue
            ids = input_ids[row].tolist()
            if self.eos in ids:  # a finished row (greedy pads after it): whatever follows is discarded
                masked[row] = scores[row]
                continue
            text = self.text(ids)
            kept = _first_allowed(ranking, lambda t: self.allowed(grammar, text, t), self.keep)
            if not kept:  # no continuation fits (cannot happen with a byte-level vocabulary): end the answer
                kept = [self.eos]
            index = torch.tensor(kept, device=scores.device)
            masked[row, index] = scores[row, index]
        return masked


def _first_allowed(ranking: list[int], allowed, count: int) -> list[int]:
    found = []
    for token in ranking:
        if allowed(token):
            found.append(token)
            if len(found) == count:
                break
    return found
