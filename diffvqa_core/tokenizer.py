"""Tokenizer of the answer decoder (paper sec. 3.5): GPT-2's for a pretrained GPT-2, else a local BPE.

The decoder's vocabulary gains the special tokens <pad> <img> <qtn> <ans>; answers end with the
end-of-answer token ``<|endoftext|>`` (GPT-2's end-of-text). A pretrained GPT-2 needs GPT-2's own tokenizer
(``tokenizer_for``: by default from the decoder's own folder, found as ``diffvqa_core.weights`` says; missing,
it is an error naming the files, never a stand-in). A randomly initialised decoder may use a byte-level BPE
trained with ``tokenizers`` on the benchmark's question and answer corpus (``vocabulary.builtin_corpus()``);
training is deterministic, and the result is saved beside every checkpoint.
"""

from __future__ import annotations

import copy
import functools
import logging

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from diffvqa_core.config import DiffVQAConfig
from diffvqa_core.data.vocabulary import builtin_corpus
from diffvqa_core.weights import find_tokenizer, resolve_tokenizer, tokenizer_name

log = logging.getLogger(__name__)

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


def load_tokenizer(name: str | None, vocab_size: int, *, required: bool = False) -> PreTrainedTokenizerBase:
    """GPT-2's tokenizer named ``name`` (a folder, or a hub id found in the weights dir or the hub cache).

    Args:
        name: folder or hub id of a GPT-2 tokenizer, or None for the local BPE.
        vocab_size: size of the local BPE.
        required: the tokenizer must be GPT-2's (a pretrained decoder): a missing one raises, and the hub is
            asked when not offline. Otherwise (a random decoder) a missing one gives the local BPE, with a
            log line, and the hub is never asked.

    Raises:
        diffvqa_core.weights.WeightsNotFoundError: ``required`` and not found, naming the files to put where.
    """
    if name:
        source = resolve_tokenizer(name) if required else find_tokenizer(name)
        if source is not None:
            return add_decoder_tokens(AutoTokenizer.from_pretrained(
                source.location, local_files_only=source.origin != "hub"))
        log.info("tokenizer %r is not on disk: the local BPE stands in (the decoder is randomly initialised)", name)
    return local_tokenizer(vocab_size)


def tokenizer_for(config: DiffVQAConfig) -> PreTrainedTokenizerBase:
    """The decoder's tokenizer for ``config``: GPT-2's, from ``tokenizer`` or else the decoder's own folder, when
    the decoder is pretrained (an error when missing); the named one or the local BPE for a random decoder.

    Raises:
        diffvqa_core.weights.WeightsNotFoundError: a pretrained decoder whose tokenizer is not on disk.
    """
    return load_tokenizer(tokenizer_name(config), config.local_tokenizer_vocab_size,
                          required=config.decoder_pretrained)


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """Ids of the decoder's special tokens, keyed pad / img / qtn / ans / eos."""
    ids = tokenizer.convert_tokens_to_ids([PAD, IMG, QTN, ANS, EOS])
    return dict(zip(("pad", "img", "qtn", "ans", "eos"), ids, strict=True))
