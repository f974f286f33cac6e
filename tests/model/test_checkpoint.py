import json
import subprocess
import sys

import pytest
import torch

from model import checkpoint as ckpt
from model import labels
from model.engines.torch import Segmenter, choose_runtime
from tiny import make_original_layout, tiny_model

from locations import REPO


def test_softmax_contract_roundtrip(softmax_ckpt):
    contract = ckpt.read_contract(softmax_ckpt)
    assert not contract.multi_label
    assert contract.organ_channels == (1, 2, 3)
    assert contract.input_size == (64, 64)
    config = json.loads((softmax_ckpt / "config.json").read_text())
    assert config["id2label"] == {"0": "background", "1": "stomach", "2": "small_bowel", "3": "large_bowel"}
    assert (softmax_ckpt / "model.safetensors").is_file()
    assert not (softmax_ckpt / "pytorch_model.bin").exists()


def test_multilabel_contract(multilabel_ckpt):
    contract = ckpt.read_contract(multilabel_ckpt)
    assert contract.multi_label
    assert contract.organ_channels == (0, 1, 2)


def test_label_mapping_follows_training_notebook():
    # The notebook's id2color: 1 stomach (blue), 2 small bowel (green), 3 large bowel (red).
    # The Space's UI enumerated ("Large bowel", "Small bowel", "Stomach") and swapped 1 and 3.
    assert labels.id2label(multi_label=False) == {0: "background", 1: "stomach", 2: "small_bowel", 3: "large_bowel"}
    assert labels.COLOURS == {"stomach": "#007fff", "small_bowel": "#009a17", "large_bowel": "#ff0000"}
    assert labels.label2id(labels.id2label(multi_label=False)) == {
        "background": 0, "stomach": 1, "small_bowel": 2, "large_bowel": 3}
    assert labels.label2id(labels.id2label(multi_label=True)) == {"stomach": 0, "small_bowel": 1, "large_bowel": 2}


def test_loaded_weights_equal_saved(softmax_ckpt):
    seg = Segmenter.load(softmax_ckpt, runtime=choose_runtime("cpu", precision="exact"))  # the fast path folds the head
    reference = tiny_model(multi_label=False, seed=0).state_dict()
    for name, value in seg.model.state_dict().items():
        torch.testing.assert_close(value, reference[name])
    assert seg.info.weights_sha256 == ckpt.sha256_file(softmax_ckpt / "model.safetensors")


def test_generic_labels_are_refused(tmp_path):
    src = make_original_layout(tmp_path / "orig")
    (src / "model.safetensors").write_bytes(b"")
    (src / "preprocessor_config.json").write_text(json.dumps(ckpt.preprocessor_dict(288)))
    with pytest.raises(ckpt.CheckpointError, match="model.convert"):
        ckpt.read_contract(src)


def test_missing_files_message(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="missing config.json"):
        ckpt.read_contract(tmp_path)


def _convert(*args):
    return subprocess.run([sys.executable, "-m", "model.convert", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_convert_cli_with_sha256(tmp_path):
    src = make_original_layout(tmp_path / "orig", seed=3)
    digest = ckpt.sha256_file(src / ckpt.DEFAULT_WEIGHTS)
    result = _convert(src, tmp_path / "out", "--sha256", digest)
    assert result.returncode == 0, result.stderr
    contract = ckpt.read_contract(tmp_path / "out")
    assert contract.input_size == (288, 288)  # the served size, not the config's leftover 224
    assert contract.organ_channels == (1, 2, 3)
    # The converted model computes exactly what the original state dict computes.
    original = tiny_model(multi_label=False, seed=3)
    converted = ckpt.load_model(tmp_path / "out")
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(converted(pixel_values=x).logits, original(pixel_values=x).logits)


def test_convert_refuses_sha_mismatch(tmp_path):
    src = make_original_layout(tmp_path / "orig")
    result = _convert(src, tmp_path / "out", "--sha256", "0" * 64)
    assert result.returncode != 0
    assert "expected 0000" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_default_offline_without_cache_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ckpt.CheckpointError, match="--model DIR"):
        ckpt.resolve(None)


def test_default_converts_once_then_reuses_offline(tmp_path, monkeypatch):
    """The default path with the download replaced by a local original-layout folder."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    src = make_original_layout(tmp_path / "orig", seed=5)
    calls = []

    def fake_download(revision=None):
        calls.append(revision)
        return src

    monkeypatch.setattr(ckpt, "download_default", fake_download)
    monkeypatch.setattr(ckpt, "DEFAULT_SHA256", ckpt.sha256_file(src / ckpt.DEFAULT_WEIGHTS))
    first, info = ckpt.resolve(None)
    second, _ = ckpt.resolve("default")
    assert first == second and calls == [None]
    assert ckpt.read_contract(first).organ_channels == (1, 2, 3)


def test_default_refuses_tampered_download(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    src = make_original_layout(tmp_path / "orig")
    monkeypatch.setattr(ckpt, "download_default", lambda revision=None: src)
    with pytest.raises(ckpt.CheckpointError, match="refusing to load"):
        ckpt.resolve(None)


def test_hub_repo_id_offline_message():
    with pytest.raises(ckpt.CheckpointError, match="Could not download someone/nothing"):
        ckpt.resolve("someone/nothing")


def test_model_choice_merges_arguments_with_the_environment(monkeypatch):
    from model.checkpoint import model_choice

    monkeypatch.delenv("MODEL", raising=False)
    monkeypatch.delenv("MODEL_REVISION", raising=False)
    assert model_choice() == (None, None)
    monkeypatch.setenv("MODEL", "owner/env-model")
    monkeypatch.setenv("MODEL_REVISION", "v1")
    assert model_choice() == ("owner/env-model", "v1")
    assert model_choice("./local", None) == ("./local", "v1")
    assert model_choice("./local", "v2") == ("./local", "v2")
