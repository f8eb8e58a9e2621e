"""The benchmark's answer grammar and decoding held to it (not in the paper)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffvqa_core.answer_grammar import AnswerGrammar, question_form
from diffvqa_core.constrained_decoding import GrammarLogitsProcessor
from diffvqa_core.data.findings import first_visit, next_visit
from diffvqa_core.data.grammar import difference_answer_problems, pair_questions
from diffvqa_core.tokenizer import local_tokenizer, special_token_ids
from tests.tiny_model_support import build_tiny_model

DIFFERENCE = "what has changed compared to the reference image?"


def test_every_generated_question_has_a_form_whose_grammar_accepts_its_answer():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        ref = first_visit(rng)
        main = next_visit(ref, rng)
        for family, question, answer in pair_questions(main, ref, str(rng.choice(["PA", "AP"])), rng):
            grammar = AnswerGrammar.for_question(question)
            assert grammar is not None and grammar.family == family, question
            assert grammar.accepts(answer), (question, answer)
            seen.add((grammar.family, grammar.form))
    assert len(seen) >= 15  # nearly every question form was exercised


def test_the_more_specific_question_form_wins():
    assert question_form("is there edema in the left lower lung area?") == ("presence", 2)
    assert question_form("is there edema?") == ("presence", 1)
    assert question_form("what has changed in the left lung area?") == ("difference", 1)
    assert question_form("how is the patient?") is None
    assert AnswerGrammar.for_question("how is the patient?") is None


@pytest.mark.parametrize("answer", [
    "the level of edema has changed from mild to mild. ",
    "the main image has additional findings of edema, and edema than the reference image. ",
    "the main image has an additional finding of edema than the reference image. "
    "the main image is missing the finding of edema than the reference image. ",
    "the level of edema has changed from mild to large. ",
    "nothing has changed. the main image has an additional finding of edema than the reference image. ",
    "",
])
def test_difference_grammar_refuses_what_the_benchmark_could_not_write(answer):
    grammar = AnswerGrammar.for_question(DIFFERENCE)
    assert not grammar.accepts(answer)
    assert difference_answer_problems(answer)  # the well-formedness check agrees


def test_prefix_checks_look_ahead_to_a_completion_that_keeps_the_rules():
    grammar = AnswerGrammar.for_question(DIFFERENCE)
    assert grammar.allows_prefix("the level of edema has changed from mild to mi")  # "minimal" completes it
    assert not grammar.allows_prefix("the level of edema has changed from mild to mild.")
    assert grammar.allows_prefix("the level of edema has changed from moderate to moderate")  # "... to severe"
    assert not grammar.allows_prefix("the main image has additional findings of edema, ed")  # edema again
    assert grammar.allows_prefix("the main image has additional findings of edema, at")
    assert not grammar.allows_prefix("nothing has changed. the")


def test_processor_keeps_only_tokens_that_continue_a_grammatical_answer():
    tokenizer = local_tokenizer()
    ids = special_token_ids(tokenizer)
    grammar = AnswerGrammar.for_question("is there edema?")
    processor = GrammarLogitsProcessor(tokenizer, [grammar, None], num_beams=1, eos_token_id=ids["eos"],
                                       skip_token_ids={ids["pad"], ids["img"], ids["qtn"], ids["ans"]})
    scores = torch.randn(2, len(tokenizer))
    out = processor(torch.zeros(2, 0, dtype=torch.long), scores)
    kept = torch.isfinite(out[0]).nonzero().flatten().tolist()
    assert len(kept) == 2  # greedy keeps 2 x beams candidates
    assert all(grammar.allows_prefix(tokenizer.decode([t])) for t in kept)
    assert torch.equal(out[1], scores[1])  # a question of no known form is left free


def test_grammar_decoding_writes_only_well_formed_answers_even_from_an_untrained_model():
    model = build_tiny_model().eval()
    main, ref = torch.rand(2, 3, 192, 192), torch.rand(2, 3, 192, 192)
    questions = [DIFFERENCE, "what level is the edema?"]
    for beams in (1, 2):
        answers = model.generate(main, ref, questions, num_beams=beams, max_new_tokens=60, grammar=True)
        assert AnswerGrammar.for_question(questions[0]).accepts(answers[0]), answers[0]
        assert AnswerGrammar.for_question(questions[1]).accepts(answers[1]), answers[1]
