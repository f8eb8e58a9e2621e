"""Validation during training: generate answers on the validation split and score them officially.

The paper selects its checkpoint by validation CIDEr (sec. 4.1). Every process answers its share of the
split; the main process scores all answers with ``diffvqa_core.metrics.score_answers`` (PTBTokenizer,
corpus-level BLEU / METEOR / ROUGE-L / CIDEr keyed by row id) and shares the scores with the others.

Validation answers at the fusion weight lambda (eq. 7) the training has reached, the lambda of the epoch's last
step, not at the model's inference lambda: the scores then describe the model as it is being trained (lambda is
about 0.98 after the first of the paper's 8 epochs; a model trained at M ~ U and read at lambda 0.5 scores a
mixture it has not learned yet, and the best-CIDEr choice would rank epochs on it). The cosine schedule ends at
lambda_end, the paper preset's inference lambda (0.5): the last epoch is validated within one step of the lambda
the test split is answered with (0.5000 to four decimals at the paper's schedule). The answers stop at the
model's ``max_answer_len``, the longest training answer.
"""

from __future__ import annotations

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from tqdm.auto import tqdm

from train.answering import Decoding, answer_batch
from train.batches import evaluation_loader
from train.config import TrainConfig


def validate(accelerator: Accelerator, model, dataset, config: TrainConfig, *, lam: float | None = None
             ) -> dict[str, float]:
    """Answers the validation split (or its first ``val_max_batches`` batches per process) and scores it.

    Args:
        accelerator: the run's accelerator.
        model: the unwrapped DiffVQAModel; left in train mode afterwards.
        dataset: the validation DiffVQADataset.
        config: decoding settings and batch size.
        lam: fusion weight of eq. 7: the training's current lambda (None: the model's inference_lambda).

    Returns:
        The official scores (Bleu_1..4, METEOR, ROUGE_L, CIDEr), identical on every process.
    """
    limit = config.val_max_batches * config.eval_batch_size if config.val_max_batches else None
    loader = evaluation_loader(
        dataset, batch_size=config.eval_batch_size, rank=accelerator.process_index,
        world_size=accelerator.num_processes, num_workers=config.num_workers, limit=limit,
    )
    max_new_tokens = config.eval_max_new_tokens or model.config.max_answer_len
    decoding = Decoding(config.eval_num_beams, max_new_tokens, config.eval_no_repeat_ngram_size, lam,
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
