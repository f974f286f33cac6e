"""The benchmark's machinery on the tiny architecture: it runs and its table has every row. No timings asserted."""

import json
import os
import shutil

import pytest
import torch

from benchmarks import gpu, inprocess, report, whole
from benchmarks.measure import Machine, benchmark_checkpoint, benchmark_scan

AVX2 = Machine("test CPU", ("avx2", "fma"), 2, 2)
NATIVE_BF16 = Machine("test CPU", ("avx2", "fma", "avx512f", "avx512_bf16"), 2, 2)


def test_machine_kind_names_the_results_file():
    assert (AVX2.kind, AVX2.native_bf16) == ("avx2", False)
    assert (NATIVE_BF16.kind, NATIVE_BF16.native_bf16) == ("avx512-bf16", True)
    assert Machine("x", ("amx_bf16", "avx512_bf16"), 2, 2).kind == "amx"
    assert "avx512_bf16" in NATIVE_BF16.describe()


@pytest.mark.slow
def test_benchmark_rows_and_targets(tmp_path, shared_data, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # the OpenVINO rows convert the model
    checkpoint = benchmark_checkpoint("tiny", cache=tmp_path)
    scan = benchmark_scan(4)
    assert scan.voxels.shape == (4, 266, 266) and "real" in scan.source
    rows, measured = inprocess.measure(checkpoint, "tiny", scan, Machine.this(), repeats=2, quick=True, log=lambda s: None)
    folder = tmp_path / "scan"
    folder.mkdir()
    for path in sorted(scan.folder.glob("*.png"))[:3]:
        shutil.copy(path, folder / path.name)
    whole_rows, whole_run = whole.measure(checkpoint, folder, 2, measured, dict(os.environ), log=lambda s: None)
    rows += whole_rows
    names = {(r.section, r.name.split(":")[0]) for r in rows}
    for expected in [("efficiency", "GEMM fp32, torch (best of 1024²)"), ("efficiency", "GEMM fp32, OpenVINO (1024²"),
                     ("efficiency", "best measured fp32 GEMM"),
                     ("efficiency", "theoretical fp32 FMA peak (sanity line, not a target)"),
                     ("in process", "reference"), ("in process", "ours"),
                     ("model only", "exact fp32 eager (torch), batch 1"), ("model only", "chosen path (torch), batch 1"),
                     ("engines", "torch fp32 (folded head), batch 1"), ("engines", "OpenVINO f32, batch 1"),
                     ("engines", "OpenVINO f32, 8 slices a call"), ("engines", "torch bf16 autocast (opt-in), batch 1"),
                     ("engines", "OpenVINO conversion of the checkpoint, once"),
                     ("scan", "ours"), ("whole process", "reference"), ("whole process", "ours"),
                     ("memory", "benchmark process (both models, the scan)")]:
        assert any(name.startswith(expected[1]) for section, name in names if section == expected[0]), expected
    assert all(r.value is not None and r.value > 0 for r in rows if r.unit in ("s/slice", "slices/s", "GFLOP/s"))
    assert whole_run.slices == 3 and whole_run.ours_s > 0 and whole_run.ref_s > 0
    assert measured.nominal_gflop > measured.executed_gflop > 0  # the folded head does less work
    assert 0 < measured.batch1_efficiency
    table = report.format_table(rows)
    assert table.count("\n") == len(rows) + 1
    # Issue #16's targets, the same on every kind of CPU.
    for machine in (AVX2, NATIVE_BF16):
        text = report.targets(machine, measured, whole_run, None)
        assert "≥ 70%" in text and "≤ 0.35×" in text and "≤ 10%" in text


@pytest.mark.slow
def test_gpu_script_smoke_on_cpu(tmp_path):
    assert gpu.main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    (result,) = tmp_path.glob("gpu-*.json")
    rows = {r["measurement"]: r["value"] for r in json.loads(result.read_text())["rows"]}
    assert any(k.startswith("training step, blog recipe") for k in rows)
    assert any(k.startswith("training step, project recipe") for k in rows)
    assert sum(k.startswith("tiny inference") for k in rows) == 3
    assert all(v > 0 for v in rows.values() if not isinstance(v, str))


@pytest.mark.slow
def test_gpu_fidelity_rows_on_cpu(tmp_path, shared_data):
    """The GPU script's fidelity check, run on the CPU over the real labelled pairs only."""
    shutil.copytree(shared_data / "pairs", tmp_path / "pairs")
    rows = {r["measurement"]: (r["value"], r["unit"]) for r in gpu.fidelity_rows(torch.device("cpu"), tmp_path)}
    assert rows["fidelity fp32 (default) vs exact fp32: worst slice-organ Dice"] == (1.0, "held")
    assert rows["fidelity fp16 vs exact fp32: worst slice-organ Dice"][0] >= 0.98
    assert 99.9 < rows["fidelity bf16 vs exact fp32: identical pixels, worst group"][0] < 100
    assert gpu.fidelity_rows(torch.device("cpu"), tmp_path / "absent")[0]["value"].startswith("skipped")
