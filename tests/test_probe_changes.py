"""``python -m train probe-changes``: the linear probe of "what changed" in a model's image features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffvqa_core.metrics import mean_auroc
from train.probe_changes import change_labels, fit_linear_probe
from train_support import SMALL_MODEL, make_synthetic_set, one_torch_thread
from train.__main__ import main as train_main


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synthetic_set(tmp_path_factory.mktemp("synth"))


def _checkpoint(directory, **changes):
    from diffvqa_core import DiffVQAConfig, DiffVQAModel

    torch.manual_seed(0)
    config = DiffVQAConfig.from_dict({**DiffVQAConfig.from_preset("tiny").to_dict(), **SMALL_MODEL, **changes})
    DiffVQAModel(config).save_pretrained(directory)
    return directory


def test_probe_separates_a_linear_signal_and_not_noise():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(400, 12, generator=generator)
    labels = torch.stack([(x[:, 0] > 0), (x[:, 1] + x[:, 2] > 0.5)], dim=1).float()
    scores = fit_linear_probe(x[:300], labels[:300], x[300:], weight_decay=1e-3)
    assert mean_auroc(scores, labels[300:].numpy()) > 0.95
    noise = torch.randn(400, 12, generator=generator)
    scores = fit_linear_probe(noise[:300], labels[:300], noise[300:], weight_decay=1e-3)
    assert abs(mean_auroc(scores, labels[300:].numpy()) - 0.5) < 0.15


def test_change_labels_are_the_findings_of_one_visit_only(data_root):
    from diffvqa_core.data import layout
    from diffvqa_core.data.vocabulary import FINDINGS

    sidecar = sorted((data_root / layout.GROUND_TRUTH_DIR).rglob("*.json"))[0]
    record = json.loads(sidecar.read_text())
    main = {f["name"] for f in record["findings_main"]}
    reference = {f["name"] for f in record["findings_ref"]}
    labels = change_labels(data_root, record["study_id"], record["ref_id"]).reshape(2, -1)
    assert {FINDINGS[i] for i in np.flatnonzero(labels[0])} == main - reference
    assert {FINDINGS[i] for i in np.flatnonzero(labels[1])} == reference - main


@pytest.mark.slow
def test_command_writes_both_feature_sets_and_m_equal_one_reads_the_unmasked_ones(data_root, tmp_path):
    results = {}
    for name, changes in (("full", {}), ("plain", {"use_saliency_mask": False})):
        checkpoint = _checkpoint(tmp_path / name, **changes)
        out = tmp_path / f"{name}.json"
        with one_torch_thread():
            assert train_main(["probe-changes", "--checkpoint", str(checkpoint), "--data-root", str(data_root),
                               "--out", str(out), "--batch-size", "4"]) == 0
        results[name] = json.loads(out.read_text())
    full, plain = results["full"], results["plain"]
    assert full["pairs"]["train"] > 0 and full["pairs"]["test"] > 0
    for result in (full, plain):
        for features in ("unmasked", "decoder"):
            assert set(result[features]) == {"added_auroc", "removed_auroc"}
    # M = 1: the decoder reads f_main and f_ref themselves, so both probes see the same numbers.
    np.testing.assert_equal(plain["decoder"], plain["unmasked"])  # (NaN where a split lacks a class)
    assert full["settings"]["lam"] == 0.5
