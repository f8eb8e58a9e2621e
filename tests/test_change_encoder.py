"""The change encoder (not in the paper): labels, fresh pairs, the network, its place in the model, its pretraining."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from diffvqa_core import DiffVQAConfig, DiffVQAModel
from diffvqa_core.change import (ChangeEncoder, ChangeEncoderConfig, change_label_loss, change_mask_loss,
                                 load_change_encoder, read_findings)
from diffvqa_core.data.finding_labels import (CHANGES, FINDING_COLUMNS, HEAD_SIZES, IGNORE, LABELLED_FINDINGS,
                                              decode_pair, encode_pair, reverse_pair)
from diffvqa_core.data.findings import Finding, first_visit, next_visit
from diffvqa_core.data.grammar import difference_answer
from diffvqa_core.metrics import corner_displacement
from tests.tiny_model_support import build_tiny_model
from train.__main__ import main as train_main
from train.online_pairs import OnlinePairs

SMALL = ChangeEncoderConfig(input_size=64, widths=(8, 16, 16, 32), token_width=32, query_layers=1, heads=2)
CHANGE_MODEL = dict(change_encoder=True, change_encoder_shape={"input_size": 64, "widths": [8, 16, 16, 32],
                                                               "token_width": 32, "query_layers": 1, "heads": 2},
                    adaptive_mask_source="change_encoder", reference_tokens="change_tokens",
                    alpha_change_mask=1.0, alpha_change_labels=1.0)


def test_labels_round_trip_to_the_same_difference_answer():
    rng = np.random.default_rng(1)
    for _ in range(200):
        ref = first_visit(rng)
        main = next_visit(ref, rng)
        rows, pair = encode_pair(main, ref, "AP")
        assert rows.shape == (len(LABELLED_FINDINGS), len(FINDING_COLUMNS))
        assert pair[0] == (main != ref) and pair[1] == 1
        assert difference_answer(*decode_pair(rows)) == difference_answer(main, ref)


def test_reversed_labels_are_the_labels_of_the_pair_read_backwards():
    rng = np.random.default_rng(2)
    type_column = FINDING_COLUMNS.index("type")
    kinds = set()
    for _ in range(200):
        ref = first_visit(rng)
        main = next_visit(ref, rng)
        forwards, _ = encode_pair(main, ref, "PA")
        backwards, _ = encode_pair(ref, main, "PA")
        reversed_rows = reverse_pair(forwards)
        other = [c for c in range(len(FINDING_COLUMNS)) if c != type_column]
        assert np.array_equal(reversed_rows[:, other], backwards[:, other])
        stated = reversed_rows[:, type_column] != IGNORE  # a type is kept only where it is known
        assert np.array_equal(reversed_rows[stated, type_column], backwards[stated, type_column])
        assert difference_answer(*decode_pair(reversed_rows)) == difference_answer(ref, main)
        kinds |= {CHANGES[c] for c in forwards[:, 6]}
    assert {"added", "missing", "level"} <= kinds


def test_read_backwards_swaps_the_chosen_pairs_only():
    from train.pretrain_change import read_backwards

    items = list(OnlinePairs(5, 64, generation_size=96, augment=False, residual=False, limit=4))
    batch = {k: torch.stack([i[k] for i in items]) for k in ("ref", "registered_main", "finding_labels")}
    chosen = torch.tensor([True, False, True, False])
    out = read_backwards(batch, chosen)
    assert torch.equal(out["ref"][0], batch["registered_main"][0]) and torch.equal(out["ref"][1], batch["ref"][1])
    assert torch.equal(out["registered_main"][2], batch["ref"][2])
    assert torch.equal(out["finding_labels"][0], torch.from_numpy(reverse_pair(batch["finding_labels"][0].numpy())))
    assert torch.equal(out["finding_labels"][3], batch["finding_labels"][3])


def test_labels_mark_what_does_not_apply_as_ignored():
    rows, _ = encode_pair({"cardiomegaly": Finding("cardiomegaly", level="mild")}, {}, "PA")
    heart = rows[LABELLED_FINDINGS.index("cardiomegaly")]
    assert list(heart[:2]) == [0, 1] and heart[2] == IGNORE and heart[4] == IGNORE  # no level before, no location
    assert CHANGES[heart[6]] == "added"
    absent = rows[LABELLED_FINDINGS.index("edema")]
    assert list(absent) == [0, 0, IGNORE, IGNORE, IGNORE, IGNORE, CHANGES.index("unchanged")]


def test_online_pairs_are_fresh_registered_and_deterministic():
    stream = OnlinePairs(5, 64, generation_size=96, augment=False, residual=False, limit=6)
    first, again = list(stream), list(stream)
    assert len(first) == 6
    assert all(torch.equal(a["registered_main"], b["registered_main"]) for a, b in zip(first, again))
    other = list(OnlinePairs(5, 64, generation_size=96, augment=False, residual=False, offset=1000, limit=2))
    assert not torch.equal(first[0]["ref"], other[0]["ref"])
    for item in first:
        assert item["registered_main"].shape == item["ref"].shape == (3, 64, 64)
        assert item["finding_labels"].shape == (len(LABELLED_FINDINGS), len(FINDING_COLUMNS))
        # the main film is brought back onto the reference frame: closer to the reference than the raw main film
        aligned = (item["registered_main"] - item["ref"]).abs().mean()
        raw = (item["main"] - item["ref"]).abs().mean()
        if corner_displacement(item["gt_theta"].double().numpy(), None, height=64, width=64) > 0.5:
            assert aligned < raw


def test_residual_scale_leaves_the_pairs_further_off_the_reference():
    """`pretrain-change --residual-scale`: the same pairs, the registered main placed with a larger random residual."""
    def misalignment(scale: float) -> float:
        items = list(OnlinePairs(5, 64, generation_size=96, augment=False, residual_scale=scale, limit=6))
        return float(np.mean([(i["registered_main"] - i["ref"]).abs().mean() for i in items]))

    exact = list(OnlinePairs(5, 64, generation_size=96, augment=False, residual=False, limit=6))
    none = float(np.mean([(i["registered_main"] - i["ref"]).abs().mean() for i in exact]))
    assert none <= misalignment(1.0) < misalignment(4.0)


def test_change_encoder_outputs_a_map_tokens_and_one_head_per_label_column():
    encoder = ChangeEncoder(SMALL)
    out = encoder(torch.rand(2, 3, 96, 96), torch.rand(2, 3, 96, 96))
    assert out.mask_logits.shape == (2, 1, 16, 16)
    assert out.tokens.shape == (2, len(LABELLED_FINDINGS) + 1, 32)
    assert {k: v.shape[-1] for k, v in out.finding_logits.items()} == {c: HEAD_SIZES[c] for c in FINDING_COLUMNS}
    rows = read_findings(out)
    assert rows.shape == (2, len(LABELLED_FINDINGS), len(FINDING_COLUMNS))
    difference_answer(*decode_pair(rows[0]))  # whatever it reads is an answer the grammar can write


def test_multiscale_tokens_read_the_finer_grid_too():
    encoder = ChangeEncoder(ChangeEncoderConfig(**{**SMALL.__dict__, "multiscale_tokens": True}))
    out = encoder(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
    assert out.tokens.shape == (2, len(LABELLED_FINDINGS) + 1, 32)
    assert encoder.fine_positions.shape == (1, 4 * (64 // 16) ** 2, 32)
    out.tokens.sum().backward()
    assert encoder.fine_token_proj.weight.grad.abs().sum() > 0  # the queries do read the stride-8 tokens


def test_label_loss_ignores_columns_that_do_not_apply_and_learns_a_fixed_pair():
    torch.manual_seed(0)
    encoder = ChangeEncoder(SMALL)
    ref, main = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    rows, pair = encode_pair({"edema": Finding("edema", "bilateral", "mild")}, {}, "PA")
    labels, pairs = torch.from_numpy(rows)[None], torch.from_numpy(pair)[None]
    mask = torch.zeros(1, 64, 64)
    mask[:, 20:40, 20:40] = 1
    optimizer = torch.optim.Adam(encoder.parameters(), lr=3e-3)
    for _ in range(60):
        out = encoder(ref, main)
        loss = change_label_loss(out, labels, pairs) + change_mask_loss(out.mask_logits, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    out = encoder(ref, main)
    assert difference_answer(*decode_pair(read_findings(out)[0])) == (
        "the main image has an additional finding of edema than the reference image. ")


def test_model_with_change_encoder_trains_every_term_and_rebuilds_from_its_checkpoint(tmp_path):
    model = build_tiny_model(**CHANGE_MODEL)
    main, ref = torch.rand(2, 3, 192, 192), torch.rand(2, 3, 192, 192)
    text = model.tokenize(["what has changed compared to the reference image?"] * 2, ["nothing has changed."] * 2)
    rows, pair = encode_pair({}, {}, "PA")
    out = model(main, ref, text["question_ids"], text["question_mask"], text["answer_ids"], text["answer_mask"],
                change_mask=torch.zeros(2, 192, 192), finding_labels=torch.from_numpy(rows)[None].repeat(2, 1, 1),
                pair_labels=torch.from_numpy(pair)[None].repeat(2, 1))
    assert out.terms["change_mask"] > 0 and out.terms["change_labels"] > 0
    assert torch.allclose(out.adaptive_mask, torch.sigmoid(torch.nn.functional.interpolate(
        out.state.change.mask_logits, size=(192, 192), mode="bilinear", align_corners=False)))
    out.loss.backward()
    assert model.change_encoder.stages[0][0].weight.grad is not None
    model.save_pretrained(tmp_path)
    again = DiffVQAModel.from_pretrained(tmp_path)
    assert again.change_encoder.config == model.change_encoder.config
    model.eval()
    assert again.generate(main, ref, ["is there edema?"] * 2) == model.generate(main, ref, ["is there edema?"] * 2)


def test_without_targets_the_change_terms_are_zero():
    model = build_tiny_model(**CHANGE_MODEL)
    text = model.tokenize(["is there edema?"], ["yes"])
    out = model(torch.rand(1, 3, 192, 192), torch.rand(1, 3, 192, 192), text["question_ids"],
                text["question_mask"], text["answer_ids"], text["answer_mask"])
    assert out.terms["change_mask"] == 0 and out.terms["change_labels"] == 0


def test_change_options_need_the_encoder():
    with pytest.raises(ValueError, match="change_encoder: true"):
        DiffVQAConfig.from_dict({**DiffVQAConfig.from_preset("tiny").to_dict(), "reference_tokens": "change_tokens"})
    paper = DiffVQAConfig.from_preset("paper")
    assert not paper.change_encoder and paper.adaptive_mask_source == "tokens" and paper.alpha_change_mask == 0


@pytest.mark.slow
def test_pretrain_change_writes_an_encoder_the_model_loads(tmp_path):
    out = tmp_path / "change"
    assert train_main(["pretrain-change", "--out", str(out), "--steps", "4", "--batch-size", "4",
                       "--image-size", "64", "--input-size", "64", "--widths", "8", "16", "16", "32",
                       "--token-width", "32", "--generation-size", "96", "--val-pairs", "6", "--eval-every", "2",
                       "--workers", "0", "--threads", "1"]) == 0
    log = json.loads((out / "training_log.json").read_text())
    assert [h["step"] for h in log["history"]] == [2, 4]
    assert 0.0 <= log["history"][-1]["phantom"]["map_auroc"] <= 1.0
    encoder = load_change_encoder(out)
    assert encoder.config.input_size == 64
    model = build_tiny_model(**{**CHANGE_MODEL, "change_encoder_shape": {}, "change_encoder_weights": str(out)})
    assert torch.equal(model.change_encoder.queries, encoder.queries)
    assert tuple(model.config.change_encoder_shape["widths"]) == (8, 16, 16, 32)


def test_a_run_whose_encoder_shape_comes_from_its_weights_matches_its_own_checkpoint(tmp_path):
    """`fit --resume` compares the checkpoint's model config with the run's: the run leaves the encoder's shape to
    change_encoder_weights, the built model records it, and the two must still be the same architecture."""
    from train.checkpoint import check_same_architecture
    from train.fit import resolved_architecture
    from train.pretrain_change import save

    save(ChangeEncoder(SMALL), tmp_path / "change")
    config = dataclasses.replace(DiffVQAConfig.from_preset("tiny"), **{
        **CHANGE_MODEL, "change_encoder_shape": {}, "change_encoder_weights": str(tmp_path / "change")})
    built = DiffVQAModel(config, None)
    check_same_architecture(built.config.to_dict(), resolved_architecture(config), tmp_path)
    other = dataclasses.replace(config, change_encoder_weights=None, change_encoder_shape={**CHANGE_MODEL[
        "change_encoder_shape"], "token_width": 16})
    with pytest.raises(ValueError, match="change_encoder_shape"):
        check_same_architecture(built.config.to_dict(), resolved_architecture(other), tmp_path)


def test_warm_start_keeps_a_change_encoder_loaded_from_its_own_weights(tmp_path):
    from train.pretrain_change import save
    from train.warm_start import load_matching_weights, own_weight_prefixes

    torch.manual_seed(3)
    save(ChangeEncoder(SMALL), tmp_path / "change")
    fresh = load_change_encoder(tmp_path / "change")
    trained = build_tiny_model(**CHANGE_MODEL)  # another change encoder (seeded differently), saved as a checkpoint
    with torch.no_grad():
        trained.registration.head.bias.add_(0.25)  # a trained part that differs from a freshly built one
    trained.save_pretrained(tmp_path / "trained")
    model = build_tiny_model(**{**CHANGE_MODEL, "change_encoder_shape": {},
                                "change_encoder_weights": str(tmp_path / "change")})
    assert own_weight_prefixes(model) == ("change_encoder.",)
    report = load_matching_weights(model, tmp_path / "trained", keep=own_weight_prefixes(model))
    assert report["kept"] and all(name.startswith("change_encoder.") for name in report["kept"])
    assert torch.equal(model.change_encoder.queries, fresh.queries)
    assert not torch.equal(model.change_encoder.queries, trained.change_encoder.queries)
    assert torch.equal(model.registration.head.bias, trained.registration.head.bias)
    assert own_weight_prefixes(trained) == ()


def test_pretraining_can_start_from_the_encoder_inside_a_model_checkpoint_at_another_side(tmp_path):
    """`pretrain-change --init CHECKPOINT --input-size S`: the model's change encoder, its token positions resized
    to the new grid (a smooth field stays smooth), everything else the same weights."""
    from train.pretrain_change import initial_encoder, resize_positions

    model = build_tiny_model(**CHANGE_MODEL)
    model.save_pretrained(tmp_path / "model")
    same = initial_encoder(tmp_path / "model")
    assert same.config == model.change_encoder.config
    for name, value in model.change_encoder.state_dict().items():
        assert torch.equal(same.state_dict()[name], value), name
    larger = initial_encoder(tmp_path / "model", input_size=96)
    assert larger.config.input_size == 96 and larger.positions.shape[1] == 6 * 6
    assert torch.equal(larger.queries, model.change_encoder.queries)
    assert torch.equal(larger.stages[0][0].weight, model.change_encoder.stages[0][0].weight)
    ramp = torch.linspace(0, 1, 4).view(1, 4, 1, 1).expand(1, 4, 4, 2).reshape(1, 16, 2)  # rows 0 .. 1
    resized = resize_positions(ramp, 8).reshape(8, 8, 2)
    assert torch.all(resized[1:, :, 0] >= resized[:-1, :, 0] - 1e-6) and torch.allclose(resized[:, 0], resized[:, 5])
    with pytest.raises(FileNotFoundError, match="neither"):
        initial_encoder(tmp_path)


def test_pretrain_change_with_zero_steps_writes_the_checkpoints_encoder_unchanged(tmp_path):
    """`pretrain-change --init CHECKPOINT --steps 0`: the change encoder taken out of a model checkpoint as it is, in
    the folder form change_encoder_weights reads (how demo_retrained_encoder.yaml gets its encoder)."""
    model = build_tiny_model(**CHANGE_MODEL)
    with torch.no_grad():
        model.change_encoder.queries.add_(0.5)  # trained: not what a fresh build would give
    model.save_pretrained(tmp_path / "model")
    assert train_main(["pretrain-change", "--init", str(tmp_path / "model"), "--steps", "0",
                       "--out", str(tmp_path / "change")]) == 0
    taken = load_change_encoder(tmp_path / "change")
    assert taken.config == model.change_encoder.config
    for name, value in model.change_encoder.state_dict().items():
        assert torch.equal(taken.state_dict()[name], value), name
    with pytest.raises(SystemExit, match="give --init"):
        train_main(["pretrain-change", "--steps", "0", "--out", str(tmp_path / "none")])
