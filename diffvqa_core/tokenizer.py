"""Tokenizer of the answer decoder (paper sec. 3.5): GPT-2's, or a local BPE when it is not at hand.

The decoder's vocabulary gains the special tokens <pad> <img> <qtn> <ans>; answers end with the
end-of-answer token ``<|endoftext|>`` (GPT-2's end-of-text). Without GPT-2's tokenizer on disk (no machine
of this project reaches the hub) a byte-level BPE is trained with ``tokenizers`` on the benchmark's
question and answer corpus (``vocabulary.builtin_corpus()``); training is deterministic, and the result is
saved beside every checkpoint.
"""

from __future__ import annotations

import copy
import functools

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from diffvqa_core.data.vocabulary import builtin_corpus

PAD, IMG, QTN, ANS = "<pad>", "<img>", "<qtn>", "<ans>"
EOS = "<|endoftext|>"
SPECIAL_TOKENS = (PAD, IMG, QTN, ANS, EOS)


@functools.lru_cache(maxsize=4)
def _train_local_bpe(vocab_size: int) -> Tokenizer:
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(sorted(set(builtin_corpus())), trainer=trainer)
    return bpe


def local_tokenizer(vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Trains (once per process) the local byte-level BPE with the decoder's special tokens.

    Args:
        vocab_size: target vocabulary size, special tokens included.

    Returns:
        A fresh fast tokenizer; <pad> <img> <qtn> <ans> <|endoftext|> have ids 0-4.
    """
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=copy.deepcopy(_train_local_bpe(vocab_size)), pad_token=PAD, eos_token=EOS,
        bos_token=EOS, unk_token=EOS,
    )
    return add_decoder_tokens(wrapped)


def add_decoder_tokens(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Registers <pad> <img> <qtn> <ans> (and the end-of-answer token) as special tokens, in place."""
    tokenizer.add_special_tokens({"pad_token": PAD, "eos_token": EOS})
    tokenizer.add_tokens([IMG, QTN, ANS], special_tokens=True)
    tokenizer.padding_side = "right"
    return tokenizer


def load_tokenizer(name: str | None, vocab_size: int) -> PreTrainedTokenizerBase:
    """GPT-2's tokenizer if ``name`` is found locally (a directory or the local cache), else the local BPE.

    Never contacts the hub (``local_files_only=True``), so a missing tokenizer costs no waiting.

    Args:
        name: hub id or directory of a GPT-2 tokenizer, or None.
        vocab_size: size of the local BPE used as the fallback.
    """
    if name:
        try:
            return add_decoder_tokens(AutoTokenizer.from_pretrained(name, local_files_only=True))
        except (OSError, ValueError):
            pass
    return local_tokenizer(vocab_size)


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """Ids of the decoder's special tokens, keyed pad / img / qtn / ans / eos."""
    ids = tokenizer.convert_tokens_to_ids([PAD, IMG, QTN, ANS, EOS])
    return dict(zip(("pad", "img", "qtn", "ans", "eos"), ids, strict=True))
