"""Validation during training: generate answers on the validation split and score them officially.

The paper selects its checkpoint by validation CIDEr (sec. 4.1). Every process answers its share of the
split; the main process scores all answers with ``diffvqa_core.metrics.score_answers`` (PTBTokenizer,
corpus-level BLEU / METEOR / ROUGE-L / CIDEr keyed by row id) and shares the scores with the others.
"""

from __future__ import annotations

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from tqdm.auto import tqdm

from train.answering import Decoding, answer_batch
from train.batches import evaluation_loader
from train.config import TrainConfig


def validate(accelerator: Accelerator, model, dataset, config: TrainConfig) -> dict[str, float]:
    """Answers the validation split (or its first ``val_max_batches`` batches per process) and scores it.

    Args:
        accelerator: the run's accelerator.
        model: the unwrapped DiffVQAModel; left in train mode afterwards.
        dataset: the validation DiffVQADataset.
        config: decoding settings and batch size.

    Returns:
        The official scores (Bleu_1..4, METEOR, ROUGE_L, CIDEr), identical on every process.
    """
    limit = config.val_max_batches * config.eval_batch_size if config.val_max_batches else None
    loader = evaluation_loader(
        dataset, batch_size=config.eval_batch_size, rank=accelerator.process_index,
        world_size=accelerator.num_processes, num_workers=config.num_workers, limit=limit,
    )
    max_new_tokens = config.eval_max_new_tokens or model.config.max_answer_len
    decoding = Decoding(config.eval_num_beams, max_new_tokens, config.eval_no_repeat_ngram_size,
                        grammar=config.eval_grammar)
    rows = []
    model.eval()
    for batch in tqdm(loader, desc="validation", leave=False, disable=not accelerator.is_main_process):
        with accelerator.autocast():
            answers = answer_batch(model, batch, accelerator.device, decoding).answers
        rows.extend(zip(batch["row_id"], batch["answer"], answers))
    model.train()
    rows = gather_object(rows)
    scores = [None]
    if accelerator.is_main_process:
        from diffvqa_core.metrics import score_answers

        scores = [score_answers({r: ref for r, ref, _ in rows}, {r: pred for r, _, pred in rows})]
    return broadcast_object_list(scores)[0]
