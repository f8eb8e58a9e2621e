"""``--device auto|cpu|cuda`` and ``--precision`` for the app, ``evaluate`` and ``bench`` (issue 16, part 5).

The CI machines have no GPU; where a test needs "no CUDA" it says so itself (``torch.cuda.is_available`` patched),
so that it means the same on a machine with a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffvqa_core.devices import DeviceError, inference_dtype, resolve_device


@pytest.fixture()
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_is_the_cpu_without_cuda(no_cuda):
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA"])
def test_cuda_without_cuda_is_a_clear_error(no_cuda, name):
    with pytest.raises(DeviceError, match="--device cpu") as error:
        resolve_device(name)
    assert f"--device {name.lower()}" in str(error.value)
    assert "Traceback" not in str(error.value)


@pytest.mark.parametrize("name", ["tpu", "gpu", "mps"])
def test_unknown_devices_are_refused(name):
    with pytest.raises(DeviceError, match="auto, cpu, cuda"):
        resolve_device(name)


def test_precision_is_bf16_on_a_gpu_and_fp32_on_a_cpu_unless_asked(monkeypatch):
    cpu = torch.device("cpu")
    assert inference_dtype(cpu, "auto") == torch.float32
    assert inference_dtype(cpu, "bf16") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    gpu = torch.device("cuda")
    assert inference_dtype(gpu, "auto") == torch.bfloat16
    assert inference_dtype(gpu, "fp32") == torch.float32
    with pytest.raises(DeviceError, match="--precision fp16"):
        inference_dtype(gpu, "fp16")


def test_evaluate_with_cuda_without_cuda_stops_with_a_message(no_cuda, tmp_path, capsys):
    from train.__main__ import main

    code = main(["evaluate", "--checkpoint", "demo", "--data-root", str(tmp_path), "--device", "cuda",
                 "--out", str(tmp_path / "out")])
    assert code == 2
    assert "--device cuda" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bench_with_cuda_without_cuda_stops_with_a_message(no_cuda, capsys):
    from diffvqa_core import bench

    assert bench.main(["--preset", "tiny", "--device", "cuda"]) == 2
    assert "--device cuda" in capsys.readouterr().err


@pytest.fixture(scope="module")
def app_module():
    import app

    return app


# ~20 s alone (importing Gradio, loading the demo), little in the suite where Gradio is already imported
def test_app_device_cpu_answers_on_the_cpu(app_module):
    from diffvqa_core.bench import test_pair

    args = app_module.parse_args(["--device", "cpu"])
    from review_app.model_process import device_placement, load_pipeline

    pipeline = load_pipeline(None, **device_placement(args.device, args.precision))
    assert next(pipeline.model.parameters()).device == torch.device("cpu") and pipeline.dtype == torch.float32
    main, ref = test_pair(3, size=256)
    analysis = pipeline.analyze(main, ref, "is there any pleural effusion?")
    assert isinstance(analysis.answer, str) and analysis.answer
    assert analysis.fused_mask.dtype == np.float32
    bf16 = device_placement("cpu", "bf16")
    assert bf16 == {"device": torch.device("cpu"), "dtype": torch.bfloat16}


def test_app_device_cuda_without_cuda_exits_with_a_message(app_module, no_cuda, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the model loads in a child process: hide CUDA there too
    code = app_module.main(["--device", "cuda", "--db", f"sqlite:///{tmp_path / 'f.sqlite3'}",
                            "--no-synthetic-examples"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device cuda:") and "--device cpu" in err
    assert not (tmp_path / "f.sqlite3").exists()  # stopped before opening anything
