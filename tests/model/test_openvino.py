"""The OpenVINO engine: how it is chosen, its pinned precision, its numpy pre/post against torch's,
its cache, its masks on real slices, and serving without torch.

Every engine and precision is forced explicitly, so no outcome depends on the CPU the suite lands on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import ClassVar

import numpy as np
import openvino as ov
import pytest
import torch
import torch.nn.functional as F

from benchmarks.fidelity import CHECKPOINT as FIDELITY_MODEL
from benchmarks.fidelity import MIN_AGREEMENT, MIN_DICE, fidelity, real_slices
from locations import REPO
from model.engines import choose as engine
from model.engines import machine
from model.engines import torch as inference
from model.engines import openvino as ovr
from model.checkpoint import IMAGENET_MEAN, IMAGENET_STD
from model.engines.choose import ENGINE_ENV, choose_engine, load_segmenter
from model.engines.torch import Segmenter, choose_runtime
from model.engines.openvino import OpenVinoSegmenter

AVX2_ONLY = frozenset({"avx", "avx2", "fma"})
AVX512 = AVX2_ONLY | {"avx512f", "avx512_bf16"}


@pytest.fixture
def ov_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache for the conversions of one test, and no engine/precision from the shell."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for name in (ENGINE_ENV, machine.PRECISION_ENV, machine.FORCE_FP32_ENV):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "hub"


# --------------------------------------------------------------------------- choosing the engine


def test_engine_default_per_machine(monkeypatch):
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    monkeypatch.delenv(machine.PRECISION_ENV, raising=False)
    assert choose_engine(flags=AVX512, gpu=False)[0] == "openvino"
    assert choose_engine("bf16", flags=AVX512, gpu=False)[0] == "openvino"
    assert choose_engine(flags=AVX2_ONLY, gpu=False) == ("torch", "CPU without AVX-512, where OpenVINO was not measured to win")
    assert choose_engine(flags=AVX512, gpu=True) == ("torch", "GPU present")
    assert choose_engine("exact", flags=AVX512, gpu=False)[0] == "torch"  # the reference runs on torch only
    assert choose_engine("fp16", flags=AVX512, gpu=False)[0] == "torch"


def test_environment_forces_the_engine(monkeypatch):
    monkeypatch.setenv(ENGINE_ENV, "torch")
    assert choose_engine(flags=AVX512, gpu=False) == ("torch", "forced")
    monkeypatch.setenv(ENGINE_ENV, "openvino")
    assert choose_engine(flags=AVX2_ONLY, gpu=True) == ("openvino", "forced")
    with pytest.raises(ValueError, match="fp32 or bf16"):
        choose_engine("exact")
    monkeypatch.setenv(ENGINE_ENV, "tensorrt")
    with pytest.raises(ValueError, match="torch, openvino"):
        choose_engine()


# --------------------------------------------------------------------------- numpy twins of the torch pre/post


@pytest.mark.parametrize("size_in, size_out", [(266, 96), (360, 288), (310, 288), (234, 288), (72, 266), (72, 40), (5, 5)])
@pytest.mark.parametrize("antialias", [True, False])
def test_resize_is_torch_bilinear(size_in, size_out, antialias):
    image = np.random.default_rng(size_in).uniform(0, 255, (2, 3, size_in, size_in + 7)).astype(np.float32)
    want = F.interpolate(torch.from_numpy(image), size=(size_out, size_out + 3), mode="bilinear",
                         align_corners=False, antialias=antialias).numpy()
    got = ovr.resize(image, (size_out, size_out + 3), antialias)
    # 0..255: rounding only (torch computes source positions in float32, hence up to ~0.01);
    # the wrong filter or an off-by-half-pixel grid is off by whole grey levels.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-2)
    assert np.abs(got - want).mean() < 1e-3


def test_pixel_values_and_decisions_are_torch_s():
    rng = np.random.default_rng(7)
    stretched = rng.uniform(0, 255, (2, 1, 70, 90)).astype(np.float32)
    mean, std = inference.channel_stats(IMAGENET_MEAN, 3), inference.channel_stats(IMAGENET_STD, 3)
    want = inference.pixel_values(torch.from_numpy(stretched), (64, 48), mean, std).numpy()
    got = ovr.pixel_values(stretched, (64, 48), mean.flatten().numpy(), std.flatten().numpy())
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    logits = rng.normal(0, 3, (3, 4, 40, 50)).astype(np.float32)
    logits[0, :, 0, 0] = 1.0  # a tie: both take the first maximum
    for multi_label, channels in ((False, (1, 2, 3)), (True, (0, 1, 2))):
        want_masks = inference.decide(torch.from_numpy(logits), channels, multi_label).numpy()
        np.testing.assert_array_equal(ovr.decide(logits, channels, multi_label), want_masks)
        np.testing.assert_allclose(ovr.organ_probabilities(logits, channels, multi_label),
                                   inference.organ_probabilities(torch.from_numpy(logits), channels, multi_label).numpy(),
                                   rtol=0, atol=1e-6)
    assert ovr.decide(logits, (1, 2, 3), False)[0, :, 0, 0].tolist() == [False, False, False]  # channel 0 won the tie


# --------------------------------------------------------------------------- the converted model


class RecordingCore(ov.Core):
    """``ov.Core`` that records the config every ``compile_model`` call asks for."""

    configs: ClassVar[list[dict]] = []

    def compile_model(self, model, device_name=None, config=None):
        RecordingCore.configs.append(dict(config or {}))
        return super().compile_model(model, device_name, config)


def test_default_path_pins_f32_whatever_the_cpu(softmax_ckpt, ov_cache, monkeypatch):
    """OpenVINO picks bf16 by itself on CPUs with AVX512-BF16/AMX: the default path must ask for f32,
    and the compiled model must say f32. Both are checked, so this fails on any CPU if the pin goes."""
    monkeypatch.setattr(ov, "Core", RecordingCore)
    RecordingCore.configs.clear()
    seg = load_segmenter(str(softmax_ckpt), engine="openvino")
    assert isinstance(seg, OpenVinoSegmenter)
    assert RecordingCore.configs[-1]["INFERENCE_PRECISION_HINT"] == "f32"
    assert seg.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert "inference precision f32" in seg.describe() and "OpenVINO" in seg.describe()


def test_bf16_is_opt_in(softmax_ckpt, ov_cache, monkeypatch):
    monkeypatch.setenv(machine.PRECISION_ENV, "bf16")
    seg = load_segmenter(str(softmax_ckpt), engine="openvino")
    native = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert seg.compiled.get_property("INFERENCE_PRECISION_HINT") == (ov.Type.bf16 if native else ov.Type.f32)
    assert seg.runtime.precision == "bf16"


def test_conversion_is_cached_keyed_and_fp32(softmax_ckpt, multilabel_ckpt, ov_cache, caplog):
    with caplog.at_level("WARNING", logger="model.engines.openvino"):
        first = load_segmenter(str(softmax_ckpt), engine="openvino")
    assert sum("converting" in r.message for r in caplog.records) == 1
    caplog.clear()
    with caplog.at_level("WARNING", logger="model.engines.openvino"):
        load_segmenter(str(softmax_ckpt), engine="openvino")
    assert not caplog.records  # the second load converts nothing
    load_segmenter(str(multilabel_ckpt), engine="openvino")
    folders = sorted(p.name for p in ov_cache.iterdir() if p.name.startswith("openvino--"))
    assert len(folders) == 2  # one per checkpoint
    key = ovr.cache_dir(first.info, first.contract).name
    assert first.info.weights_sha256[:16] in key and f"ov{ov.get_version().split('-')[0]}" in key
    assert "static-b1-3x64x64" in key
    weights = ov.Core().read_model(ov_cache / key / ovr.MODEL_XML).get_ops()
    constants = [op for op in weights if op.get_type_name() == "Constant" and op.get_output_size() == 1
                 and op.get_output_element_type(0).is_real()]
    assert constants and all(op.get_output_element_type(0) == ov.Type.f32 for op in constants)  # no fp16 weights


@pytest.mark.parametrize("ckpt", ["softmax_ckpt", "multilabel_ckpt"])
def test_same_masks_and_probabilities_as_torch_fp32(ckpt, request, ov_cache):
    path = str(request.getfixturevalue(ckpt))
    ours = load_segmenter(path, engine="openvino")
    torch_fp32 = Segmenter.load(path, runtime=choose_runtime("cpu", precision="fp32"))
    slices = np.random.default_rng(3).integers(0, 4000, (5, 70, 90)).astype(np.uint16)
    with torch.inference_mode():
        np.testing.assert_allclose(ours.forward(ours.preprocess(slices)), torch_fp32.forward(torch_fp32.preprocess(slices)).numpy(),
                                   rtol=1e-4, atol=1e-4)
    p_ours, p_torch = np.empty((5, 3, 70, 90), np.float32), np.empty((5, 3, 70, 90), np.float32)
    masks, want = ours.predict(slices, p_ours), torch_fp32.predict(slices, p_torch)
    np.testing.assert_allclose(p_ours, p_torch, atol=1e-4)
    # A random model's logits tie along class borders; kernels differing in the last bits may flip a
    # pixel there on another CPU, so: identical where the decision is clear, and at most 0.1 % elsewhere.
    if ours.contract.multi_label:  # each organ's sigmoid against the threshold
        clear = np.abs(p_torch - 0.5) > 1e-5
    else:  # the winning class (background included) against the runner-up, per pixel
        classes = np.sort(np.concatenate([1 - p_torch.sum(axis=1, keepdims=True), p_torch], axis=1), axis=1)
        clear = np.broadcast_to((classes[:, -1] - classes[:, -2] > 1e-5)[:, None], masks.shape)
    assert clear.mean() > 0.5  # a random model's probabilities are close, but mostly not within 1e-5
    np.testing.assert_array_equal(masks[clear], want[clear])
    assert (masks != want).mean() < 1e-3
    volume = slices[:, None].repeat(2, axis=1).reshape(10, 70, 90)
    ours_masks = ours.segment_scan(volume, chunk_slices=4).run().organ_masks
    assert (ours_masks != torch_fp32.segment_scan(volume).run().organ_masks).mean() < 1e-3


# --------------------------------------------------------------------------- fidelity on real slices


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_openvino_fidelity_on_real_slices(shared_data, ov_cache, precision):
    """The default (fp32) holds the bar against the exact model on every real slice and volume; bf16 is
    measured and reported (benchmarks/README.md) but must not be the default."""
    groups = real_slices(shared_data)
    exact = Segmenter.load(FIDELITY_MODEL, runtime=choose_runtime("cpu", precision="exact"))
    ours = load_segmenter(FIDELITY_MODEL, engine="openvino", precision=precision)
    worst_agreement, worst_dice = 1.0, 1.0
    for name, slices in groups.items():
        want = exact.predict(slices)
        assert want.any(axis=(0, 2, 3)).all(), f"{name}: the model finds no organ, agreement would be trivial"
        agreement, worst, judged = fidelity(ours.predict(slices), want)
        assert judged > 10
        worst_agreement, worst_dice = min(worst_agreement, agreement), min(worst_dice, worst)
    if precision == "fp32":
        assert worst_agreement >= MIN_AGREEMENT, f"OpenVINO fp32: {worst_agreement:.4%} identical pixels"
        assert worst_dice >= MIN_DICE, f"OpenVINO fp32: a slice's organ Dice vs exact fp32 is {worst_dice:.4f}"
    else:
        # bf16 is a measurement (benchmarks/README.md): it runs at bf16 only where the CPU has it (else
        # f32, and says so), and how many pixels it keeps depends on the kernels, so no band here.
        assert 0 < worst_agreement <= 1 and 0 <= worst_dice <= 1
        native = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        assert ours.compiled.get_property("INFERENCE_PRECISION_HINT") == (ov.Type.bf16 if native else ov.Type.f32)


# --------------------------------------------------------------------------- serving without torch


NO_TORCH = """
import json, os, sys
import numpy as np
{body}
print(json.dumps({{"torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules, "out": out}}))
"""


def _run_without_torch(body: str, env: dict) -> dict:
    result = subprocess.run([sys.executable, "-c", NO_TORCH.format(body=body)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_model_process_and_cli_import_no_torch_with_a_cached_model(softmax_ckpt, ov_cache, tmp_path, shared_data):
    import os

    load_segmenter(str(softmax_ckpt), engine="openvino")  # fills the cache
    env = {**os.environ, "HF_HUB_CACHE": str(ov_cache), ENGINE_ENV: "openvino", "HF_HUB_OFFLINE": "1"}
    worker = _run_without_torch(
        "from model.engines import process as worker\n"
        f"facts = worker._load({str(softmax_ckpt)!r}, None, os.getppid())\n"
        "masks = worker._predict(np.random.default_rng(0).integers(0, 255, (2, 40, 50)).astype(np.uint8))\n"
        "out = [facts['description'], list(masks.shape)]", env)
    assert not worker["torch"] and not worker["transformers"]
    assert "OpenVINO" in worker["out"][0] and worker["out"][1] == [2, 3, 40, 50]
    scan = shared_data / "scans" / "volume_276x276"
    cli = _run_without_torch(
        "from model.predict import main\n"
        f"out = main([{str(scan)!r}, '--out', {str(tmp_path / 'out')!r}, '--model', {str(softmax_ckpt)!r}])", env)
    assert not cli["torch"] and not cli["transformers"] and cli["out"] == 0
    assert any((tmp_path / "out").glob("*_labels.nii.gz"))


def test_convert_cli_builds_the_cache_ahead(softmax_ckpt, ov_cache, caplog, capsys):
    from model import convert

    assert convert.main(["--openvino", "--model", str(softmax_ckpt)]) == 0
    assert "OpenVINO model cached in" in capsys.readouterr().out
    assert len(list(ov_cache.glob("openvino--*/model.xml"))) == 1
    caplog.clear()
    with caplog.at_level("WARNING", logger="model.engines.openvino"):
        load_segmenter(str(softmax_ckpt), engine="openvino")
    assert not caplog.records  # the app's first start converts nothing
    with pytest.raises(SystemExit):
        convert.main([])  # neither paths nor --openvino


def test_a_failed_conversion_falls_back_to_torch_unless_forced(softmax_ckpt, ov_cache, monkeypatch, caplog):
    def read_only_cache(*args):
        raise PermissionError("[Errno 13] Permission denied: '/hub'")

    monkeypatch.setattr(ovr, "convert", read_only_cache)
    monkeypatch.setattr(engine, "choose_engine", lambda precision=None, engine=None: (engine or "openvino", "default"))
    with caplog.at_level("WARNING", logger="model.engines.choose"):
        seg = load_segmenter(str(softmax_ckpt))
    assert isinstance(seg, Segmenter) and "OpenVINO could not convert" in seg.describe()
    assert any("Permission denied" in r.message and "torch instead" in r.message for r in caplog.records)
    monkeypatch.setattr(engine, "choose_engine", lambda precision=None, engine=None: ("openvino", "forced"))
    with pytest.raises(ovr.ConversionError, match="Could not convert the checkpoint for OpenVINO .PermissionError"):
        load_segmenter(str(softmax_ckpt))


def test_the_engine_runs_numpy_blas_on_one_thread(softmax_ckpt, ov_cache):
    """Its resize products are tiny; threaded OpenBLAS deadlocked in them (``single_threaded_numpy_blas``)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    with threadpool_limits(limits=2, user_api="blas"):  # as a fresh process on a 2-vCPU machine starts
        load_segmenter(str(softmax_ckpt), engine="openvino")
        assert {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"} == {1}
