"""Supply chain: what gets downloaded, how it is loaded, and what the requirements pin.

Spies wrap the real functions (the loads still happen) and record their arguments; an AST scan of
the source backs them up for code paths the spies do not reach.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from transformers import SegformerForSemanticSegmentation

from locations import REPO
from model import checkpoint as ckpt
from model.engines.torch import Segmenter
from tiny import make_original_layout

#: Files a Hub repo may hold that run code or unpickle when loaded.
UNSAFE_NAMES = ["pytorch_model.bin", "model.ckpt", "model.pt", "weights.pkl", "modeling_segformer.py",
                "custom_code/__init__.py", "tf_model.h5", "flax_model.msgpack", "model.onnx", "model.joblib"]


@pytest.fixture
def from_pretrained_calls(monkeypatch):
    calls = []
    real = SegformerForSemanticSegmentation.from_pretrained  # bound to the class

    def spy(cls, *args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(SegformerForSemanticSegmentation, "from_pretrained", classmethod(spy))
    return calls


def test_model_loads_safetensors_only_and_never_remote_code(softmax_ckpt, from_pretrained_calls):
    Segmenter.load(softmax_ckpt)
    assert len(from_pretrained_calls) == 1
    kwargs = from_pretrained_calls[0]
    assert "trust_remote_code" not in kwargs
    assert kwargs["use_safetensors"] is True and kwargs["local_files_only"] is True


def test_hub_repo_is_pinned_and_fetches_only_contract_files(softmax_ckpt, tmp_path, monkeypatch, from_pretrained_calls):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(**kwargs):
        calls.append(kwargs)
        folder = tmp_path / "snapshots" / (kwargs.get("revision") or "main")
        shutil.copytree(softmax_ckpt, folder)
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    segmenter = Segmenter.load("someone/segformer-gi", revision="0123abcd")
    (kwargs,) = calls
    assert kwargs["repo_id"] == "someone/segformer-gi" and kwargs["revision"] == "0123abcd"
    assert "trust_remote_code" not in kwargs
    patterns = kwargs["allow_patterns"]
    assert any(fnmatch.fnmatch("model.safetensors", p) for p in patterns)
    assert not [name for name in UNSAFE_NAMES if any(fnmatch.fnmatch(name, p) for p in patterns)]
    assert segmenter.info.revision == "0123abcd"
    assert "trust_remote_code" not in from_pretrained_calls[0]


def test_default_download_is_pinned_and_verified_before_weights_only_unpickling(tmp_path, monkeypatch):
    """The blog's pickle: sha256 first, then ``torch.load(weights_only=True)``; a given revision is passed on."""
    import huggingface_hub

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    original = make_original_layout(tmp_path / "snapshot" / ckpt.DEFAULT_SUBFOLDER)
    monkeypatch.setattr(ckpt, "DEFAULT_SHA256", ckpt.sha256_file(original / ckpt.DEFAULT_WEIGHTS))
    events, downloads = [], []

    def fake_hf_hub_download(**kwargs):
        downloads.append(kwargs)
        return str(original / kwargs["filename"])

    real_verify, real_load = ckpt.verify_sha256, torch.load

    def spy_verify(path, expected):
        events.append(("verify", Path(path).name))
        return real_verify(path, expected)

    def spy_load(*args, **kwargs):
        events.append(("torch.load", kwargs.get("weights_only")))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hf_hub_download)
    monkeypatch.setattr(ckpt, "verify_sha256", spy_verify)
    monkeypatch.setattr(torch, "load", spy_load)
    ckpt.resolve(None, revision="abc1234")
    assert events == [("verify", ckpt.DEFAULT_WEIGHTS), ("torch.load", True)]
    assert {d["filename"] for d in downloads} == {ckpt.CONFIG, ckpt.DEFAULT_WEIGHTS}
    assert all(d["revision"] == "abc1234" and d["repo_id"] == ckpt.DEFAULT_SPACE for d in downloads)
    assert all("trust_remote_code" not in d for d in downloads)


# --------------------------------------------------------------------------- the source, statically


def _python_sources() -> list[Path]:
    roots = [REPO / "app.py", REPO / "model", REPO / "train", REPO / "benchmarks"]
    return sorted(p for r in roots if r.exists() for p in ([r] if r.is_file() else r.rglob("*.py")))


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            yield node, owner, name, {k.arg: k.value for k in node.keywords}


def test_source_never_trusts_remote_code_or_unpickles_unsafely():
    problems = []
    for path in _python_sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(REPO)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(m.split(".")[0] in ("pickle", "dill", "joblib", "cloudpickle") for m in modules):
                    problems.append(f"{where}:{node.lineno} imports a pickle library")
        for node, owner, name, kwargs in _calls(tree):
            if "trust_remote_code" in kwargs:
                problems.append(f"{where}:{node.lineno} passes trust_remote_code")
            if owner == "torch" and name == "load":
                flag = kwargs.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    problems.append(f"{where}:{node.lineno} torch.load without weights_only=True")
            if name in ("hf_hub_download", "snapshot_download") and "revision" not in kwargs \
                    and not any(k is None for k in kwargs):  # **kwargs forwarding is checked by the spies
                problems.append(f"{where}:{node.lineno} {name} without a revision")
    assert problems == []


def test_inference_package_loads_safetensors_only():
    """model/ and app.py: every from_pretrained asks for safetensors (train/ may start from Hub bases)."""
    problems = []
    for path in [REPO / "app.py", *sorted((REPO / "model").rglob("*.py"))]:
        for node, _, name, kwargs in _calls(ast.parse(path.read_text())):
            if name == "from_pretrained":
                flag = kwargs.get("use_safetensors")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    problems.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert problems == []


# --------------------------------------------------------------------------- requirements and audit

_PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9_,.-]+\])?==[A-Za-z0-9.+!_-]+(\s*;.+)?$")


def test_every_requirement_is_pinned():
    files = sorted(REPO.glob("requirements*.txt")) + sorted(REPO.glob("*/requirements*.txt"))
    assert REPO / "requirements.txt" in files
    loose = []
    for path in files:
        for number, raw in enumerate(path.read_text().splitlines(), 1):
            line = raw.split(" #")[0].strip()
            if not line or line.startswith("#") or re.match(r"^-r\s+\S+$", line):
                continue
            if not _PINNED.match(line):
                loose.append(f"{path.relative_to(REPO)}:{number}: {raw}")
    assert loose == []


def test_dependency_audit_skips_cleanly_offline(tmp_path):
    """``.ci/audit`` must never fail CI for want of a network: with PyPI unreachable it skips with exit 0."""
    blackhole = "http://127.0.0.1:9"
    env = {**os.environ, "HTTPS_PROXY": blackhole, "https_proxy": blackhole, "HTTP_PROXY": blackhole,
           "http_proxy": blackhole, "NO_PROXY": "", "no_proxy": "", "AUDIT_VENV": str(tmp_path / "venv")}
    result = subprocess.run(["bash", str(REPO / ".ci" / "audit")], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "audit skipped" in result.stdout
    assert not (tmp_path / "venv" / "bin" / "pip-audit").exists()  # gave up: nothing could be installed
