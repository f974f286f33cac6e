"""The benchmark's machinery on the tiny architecture: it runs and its table has every row. No timings asserted."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from benchmarks import gpu, inprocess, report, whole
from benchmarks.fidelity import MIN_AGREEMENT
from benchmarks.measure import Machine, benchmark_checkpoint, benchmark_scan
from locations import REPO

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

    from model.engines.choose import ENGINE_ENV

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # the OpenVINO rows convert the model
    # The chosen path is the machine's (OpenVINO on AVX-512 CPUs, torch elsewhere): force one, so the
    # rows' names are the same on every CPU. The OpenVINO rows are measured either way.
    monkeypatch.setenv(ENGINE_ENV, "torch")
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


def check_fidelity_rows(rows: list[dict]) -> None:
    """What the suite asserts of ``gpu.fidelity_rows`` on a CPU: only what holds whatever its kernels.

    fp32 is the default and must match the exact model. bf16 and fp16 are measurements: how many
    pixels they keep depends on the CPU's reduced-precision kernels (99.31 % with AMX, above 99.9 %
    on Zen 4), so no band is asserted on them, only that they were measured and reported as such.
    """
    by_name = {r["measurement"]: (r["value"], r["unit"]) for r in rows}
    # The default holds the project's bar (fp32 kernels differ only in summation order, well inside it).
    assert by_name["fidelity fp32 (default) vs exact fp32: worst slice-organ Dice"][1] == "held"
    assert by_name["fidelity fp32 (default) vs exact fp32: identical pixels, worst group"][0] >= 100 * MIN_AGREEMENT
    for precision in ("bf16", "fp16"):
        agreement, unit = by_name[f"fidelity {precision} vs exact fp32: identical pixels, worst group"]
        assert unit == "%" and 0 <= agreement <= 100
        dice, verdict = by_name[f"fidelity {precision} vs exact fp32: worst slice-organ Dice"]
        assert 0 <= dice <= 1 and verdict in ("held", "MISSED the bar")


@pytest.mark.slow
def test_gpu_fidelity_rows_on_cpu(tmp_path, shared_data):
    """The GPU script's fidelity check, run on the CPU over the real labelled pairs only."""
    shutil.copytree(shared_data / "pairs", tmp_path / "pairs")
    check_fidelity_rows(gpu.fidelity_rows(torch.device("cpu"), tmp_path))
    assert gpu.fidelity_rows(torch.device("cpu"), tmp_path / "absent")[0]["value"].startswith("skipped")


#: Ways to make torch's CPU bf16/fp16 matmuls run on other kernels than this CPU picks by itself.
OTHER_KERNELS = {
    "oneDNN capped at AVX2 (no AVX512-BF16, no AMX)": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, ""),
    "oneDNN off (torch's own CPU kernels)": ({}, "torch.backends.mkldnn.enabled = False"),
}
FIDELITY_ROWS = """
import json, sys, torch
{prelude}
from benchmarks import gpu
rows = gpu.fidelity_rows(torch.device("cpu"), __import__("pathlib").Path(sys.argv[1]))
print(json.dumps(rows))
"""


@pytest.mark.slow
@pytest.mark.parametrize("kernels", list(OTHER_KERNELS))
def test_fidelity_assertions_hold_on_other_kernels(tmp_path, shared_data, kernels):
    """Guard against a relapse of #22: the assertions above hold when the reduced-precision rows come
    from other kernels than this CPU's own (a stand-in for the CPUs CI may land on)."""
    env_extra, prelude = OTHER_KERNELS[kernels]
    shutil.copytree(shared_data / "pairs", tmp_path / "pairs")
    result = subprocess.run([sys.executable, "-c", FIDELITY_ROWS.format(prelude=prelude), str(tmp_path)],
                            cwd=REPO, env={**os.environ, **env_extra}, capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    print(kernels, {r["measurement"]: r["value"] for r in rows})
    check_fidelity_rows(rows)


def test_page_clicks_places_are_seeded_inside_the_body_and_apart(shared_data):
    """``benchmarks.page_clicks`` clicks where a person would: on the body, never twice on one spot."""
    from PIL import Image
    from scipy import ndimage

    from benchmarks import page_clicks

    files = sorted((shared_data / "scans" / page_clicks.VOLUME).glob("slice_*.png"))
    image = np.asarray(Image.open(files[page_clicks.FIRST + page_clicks.CLICKED - 1]))
    chosen = page_clicks.places(image, 30)
    assert chosen == page_clicks.places(image, 30) and len(set(chosen)) == 30
    body = ndimage.binary_erosion(image > np.percentile(image, 50), iterations=10)
    assert all(body[r, c] for r, c in chosen)
    assert min(abs(a - c) + abs(b - d) for i, (a, b) in enumerate(chosen) for c, d in chosen[i + 1:]) >= 8
    row = page_clicks.summary([0.1, 0.2, 0.3])
    assert (row["clicks"], row["ms_median"], row["ms_max"], row["ms"]) == (3, 200.0, 300.0, [100.0, 200.0, 300.0])
    rounds = page_clicks.pooled([[0.1, 0.2, 0.3], [0.5, 0.7]])
    assert (rounds["clicks"], rounds["ms_median"], rounds["round_ms_median"]) == (5, 300.0, [200.0, 600.0])


def test_edits_benchmark_edits_one_organ_on_one_slice_and_spreads_its_slices():
    """``benchmarks.edits`` removes half the large bowel on the slice of the round and nothing else, each round
    on another slice where the large bowel is large."""
    from benchmarks import edits

    masks = np.zeros((3, 12, 40, 60), dtype=bool)
    masks[2, 2:10, 5:35, 10:51] = True  # 1,230 px of large bowel a slice, columns 10 to 50, on slices 2 to 9
    masks[2, 3, 5:35, 10:51] = False
    masks[2, 3, 0:2, 0:2] = True  # slice 3: too little
    masks[0, :, 20:30, 20:30] = True
    big = [d for d in range(12) if masks[2, d].sum() >= 1000]
    small = edits.LARGE_BOWEL_MIN_PX
    edits.LARGE_BOWEL_MIN_PX = 1000
    try:
        chosen = edits.edited_slices(masks, 3)
    finally:
        edits.LARGE_BOWEL_MIN_PX = small
    assert len(set(chosen)) == 4 and set(chosen) <= set(big) and chosen == sorted(chosen)
    edited = edits.half_removed(masks, 5)
    np.testing.assert_array_equal(edited[:2], masks[:2, 5])  # the other organs untouched
    assert edited[2].sum() == 21 * 30 and not edited[2, :, :30].any() and edited[2, 5:35, 30:51].all()  # middle: 30
    overlapping = masks.copy()
    overlapping[1, 0, 20:30, 20:25] = True  # small bowel over the stomach (no large bowel on slice 0)
    exclusive = edits.one_organ_a_voxel(overlapping)
    assert (exclusive.sum(axis=0) <= 1).all() and (exclusive.any(axis=0) == overlapping.any(axis=0)).all()
    assert exclusive[1, 0, 20:30, 20:25].all() and not exclusive[0, 0, 20:30, 20:25].any()  # the later organ wins
    assert exclusive[0, 0, 20:30, 25:30].all()


def test_same_outputs_compares_dicom_files_whatever_the_length_of_their_fresh_uids(tmp_path):
    """Two writes of one file differ in their UIDs, and so in the lengths the group length elements count;
    ``benchmarks.same_outputs`` blanks both, and still sees a changed value."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    from benchmarks.same_outputs import dicom_elements

    def write(path, uid: str, label: str):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID, ds.ContentLabel = ds.file_meta.MediaStorageSOPClassUID, uid, label
        ds.save_as(path, enforce_file_format=True)
        return path

    a = write(tmp_path / "a.dcm", "1.2.826.0.1.3680043.8.498.1234", "GI_ORGANS")
    b = write(tmp_path / "b.dcm", "1.2.826.0.1.3680043.8.498.123456", "GI_ORGANS")
    c = write(tmp_path / "c.dcm", "1.2.826.0.1.3680043.8.498.1234", "OTHER")
    assert any(line.startswith("meta.(0002,0000) UL") for line in dicom_elements(a))
    assert dicom_elements(a) == dicom_elements(b) != dicom_elements(c)
