"""The Scan tab's bad-input battery (tests/scan_bad_inputs.py) through the handler, the HTTP API and the CLI.

For each case: a clear one-line message or a correct result; the next request is answered; no file
lands outside Gradio's temp dir and the app's scratch dir; no traceback reaches the user; and no
DICOM patient tag reaches a message, a note, the server log, the CLI's output or an exported file.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import pytest

import rt_series
from bad_inputs import assert_one_clean_line, server_path
from locations import REPO
from scan_bad_inputs import SCAN_CASES, ScanCase, good_scan, gunzipped
from scan_fixtures import PATIENT_BIRTH_DATE, PATIENT_ID, PATIENT_NAME
from ui import scan_tab, server

PATIENT_TAGS = (PATIENT_NAME, PATIENT_ID, PATIENT_BIRTH_DATE, PATIENT_NAME.split("^")[1],
                rt_series.PATIENT_NAME, rt_series.PATIENT_ID, rt_series.ACCESSION_NUMBER)
REFUSED = [c for c in SCAN_CASES if c.refuse]
READ = [c for c in SCAN_CASES if c.shape]


def _make(case: ScanCase, root: Path, shared: Path) -> list[Path]:
    folder = root / case.id
    folder.mkdir()
    paths = case.make(folder, shared)
    if case.id.startswith("dicom"):  # the privacy checks below are not vacuous
        name = rt_series.PATIENT_NAME if case.id == "dicom-rt-series" else PATIENT_NAME
        assert all(name.encode() in p.read_bytes() for p in paths)
    return paths


def _assert_private(text: str | bytes, where: str) -> None:
    data = text.encode() if isinstance(text, str) else text
    for tag in PATIENT_TAGS:
        assert tag.encode() not in data, f"a patient tag ({tag}) reached {where}"


#: The one deliberate exception: a DICOM SEG and an RTSTRUCT must carry the patient's identifiers to file
#: under the right patient (docs/dicom_export.md). Only these two exports, and only if they are what they say.
DICOM_EXPORTS = {"_seg.dcm": "1.2.840.10008.5.1.4.1.1.66.4", "_rtstruct.dcm": "1.2.840.10008.5.1.4.1.1.481.3"}


def _assert_private_file(path: Path) -> None:
    """The file's bytes, gunzipped, and for a zip every member's name and bytes (not the two DICOM exports)."""
    import pydicom

    for suffix, sop_class in DICOM_EXPORTS.items():
        if path.name.endswith(suffix):
            assert pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID == sop_class, path.name
            return
    data = gunzipped(path)
    _assert_private(data, path.name)
    if data[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.infolist():
                _assert_private(member.filename.encode() + archive.read(member), f"{path.name}:{member.filename}")


def _assert_dicom_exports(case: ScanCase, downloads: list) -> None:
    """The complete series, and only it, gets the two DICOM exports (the exception above is not vacuous)."""
    exported = sorted(suffix for suffix in DICOM_EXPORTS for p in downloads if str(p).endswith(suffix))
    assert exported == (sorted(DICOM_EXPORTS) if case.id == "dicom-rt-series" else []), (case.id, exported)


def _assert_labels_fit(downloads: list[str], shape: tuple[int, int, int]) -> None:
    labels = next(Path(p) for p in downloads if str(p).endswith("_labels.nii.gz"))
    d, h, w = shape
    assert nib.load(labels).shape == (w, h, d)


# --------------------------------------------------------------------------- the handler, in-process


def _segment(paths: list[Path]) -> tuple:
    """Drain ``segment_scan_files``; its last value."""
    *_, last = scan_tab.segment_scan_files([str(p) for p in paths])
    return last


@pytest.mark.parametrize("case", SCAN_CASES, ids=lambda c: c.id)
def test_scan_battery_through_handler(tiny_model, shared_data, tmp_path, monkeypatch, case):
    import tempfile

    import gradio as gr

    paths = _make(case, tmp_path, shared_data)
    temp = tmp_path / "temp"  # where zips are extracted: must be empty again afterwards
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    scratch_before = set(server.SCRATCH.root.iterdir())
    if case.refuse:
        with pytest.raises(gr.Error) as info:
            _segment(paths)
        assert_one_clean_line(info.value.message, case.id, case.refuse)
        _assert_private(info.value.message, "the message")
        assert set(server.SCRATCH.root.iterdir()) == scratch_before, "a refused upload left output files"
    else:
        note, slider, overlay, *_, downloads, _, state, _ = _segment(paths)
        assert state.scan.shape == case.shape and state.organ_masks.shape == (3, *case.shape)
        assert slider.maximum == max(case.shape[0], 2) and overlay[0].shape == case.shape[1:]
        assert case.note is None or re.search(case.note, note), note
        _assert_labels_fit(downloads, case.shape)
        _assert_dicom_exports(case, downloads)
        _assert_private(note, "the notes")
        for path in downloads:
            _assert_private_file(Path(path))
    assert not any(temp.iterdir()), "extracted files outlived the request"
    # Whether the next request is answered matters for the live server: see the HTTP test.


# --------------------------------------------------------------------------- the HTTP API, against the live server


@pytest.fixture(scope="module")
def log_start(server) -> int:
    """Where this module's part of the server log begins."""
    return server.log.stat().st_size


def _predict(client, paths: list[Path]):
    from gradio_client import handle_file

    from ui import overlays

    return client.predict([handle_file(str(p)) for p in paths], None, None, 0.5, overlays.ORGAN_CHOICES,
                          api_name="/segment_scan")


@pytest.mark.slow
@pytest.mark.parametrize("case", SCAN_CASES, ids=lambda c: c.id)
def test_scan_battery_through_http(server, client, log_start, shared_data, tmp_path, case):
    from gradio_client.exceptions import AppError

    paths = _make(case, tmp_path, shared_data)
    before = server.stray_files()
    if case.refuse:
        with pytest.raises(AppError) as info:
            _predict(client, paths)
        assert_one_clean_line(info.value.message, case.id, case.refuse)
        _assert_private(info.value.message, "the message")
    else:
        note, slider, *_, table, _, _, downloads, _, _ = _predict(client, paths)
        assert slider["maximum"] == max(case.shape[0], 2) and len(table["data"]) == 3
        assert case.note is None or re.search(case.note, note), note
        files = [server_path(f) for f in downloads]
        _assert_labels_fit(files, case.shape)
        _assert_dicom_exports(case, files)
        _assert_private(note, "the notes")
        for path in files:
            _assert_private_file(path)
    # The server answers the next request, and nothing was written outside its temp dirs.
    note, *_ = _predict(client, good_scan(tmp_path, shared_data))
    assert ": 2 slices 234×234" in note, note
    assert server.stray_files() - before == set()
    assert server.proc.poll() is None


@pytest.mark.slow
def test_server_log_holds_no_patient_tags_upload_names_or_tracebacks(server, log_start):
    """Runs after the battery in this module: the server log it wrote."""
    with open(server.log, "rb") as log:
        log.seek(log_start)
        text = log.read()
    _assert_private(text, "the server log")
    assert b"upl-" not in text, "an upload's file name reached the log"
    assert b"Traceback" not in text, text.decode(errors="replace")[-3000:]


# --------------------------------------------------------------------------- the CLI, one process per outcome


def _cli(inputs: list[Path], out: Path, ckpt: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    env.pop("MODEL", None)
    run = subprocess.run([sys.executable, "-m", "model.predict", *map(str, inputs), "--out", str(out),
                          "--model", str(ckpt)], cwd=REPO, env=env, capture_output=True, timeout=300)
    # Bytes, not text=True: universal newlines would turn a progress bar's carriage returns into lines.
    return subprocess.CompletedProcess(run.args, run.returncode, run.stdout.decode(), run.stderr.decode())


@pytest.fixture(scope="module")
def cli_runs(shared_data, softmax_ckpt, tmp_path_factory):
    """All refused cases in one run, all readable ones in another (each process loads the model once)."""
    root = tmp_path_factory.mktemp("cli")
    inputs = {case.id: _make(case, root, shared_data) for case in SCAN_CASES}
    refused = _cli([p for c in REFUSED for p in inputs[c.id]], root / "out-refused", softmax_ckpt)
    read = _cli([p for c in READ for p in inputs[c.id]], root / "out", softmax_ckpt)
    return refused, read, inputs, root / "out"


@pytest.mark.slow
def test_cli_refuses_each_bad_scan_in_one_line(cli_runs):
    refused, *_ = cli_runs
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert refused.stdout == ""
    assert "Traceback" not in refused.stderr
    # Lines holding a carriage return are progress bars (transformers' "Loading weights" while the model loads);
    # "progress:" lines follow each scan and one "cohort:" line sums up the run.
    lines = [line for line in refused.stderr.split("\n")
             if line and "\r" not in line and not line.startswith(("progress: ", "cohort: "))]
    assert len(lines) == len(REFUSED) and all(line.startswith("error: ") for line in lines), lines
    _assert_private(refused.stderr, "the CLI's stderr")


@pytest.mark.slow
@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.id)
def test_cli_message_for_each_bad_scan(cli_runs, case):
    refused, *_ = cli_runs
    lines = [line for line in refused.stderr.split("\n") if f"/{case.id}/" in line]
    assert len(lines) == 1, refused.stderr[-2000:]
    *_, message = lines[0].split(": ", 2)
    assert_one_clean_line(message, case.id, case.refuse)


@pytest.mark.slow
def test_cli_reads_each_scan_and_exports_no_patient_tags(cli_runs):
    from model.scans import load_scan

    _, read, inputs, out = cli_runs
    assert read.returncode == 0, read.stderr[-2000:]
    assert "Traceback" not in read.stderr and "error:" not in read.stderr
    _assert_private(read.stdout + read.stderr, "the CLI's output")
    lines = read.stdout.splitlines()
    assert len(lines) == len(READ)
    for case in READ:
        paths = inputs[case.id]
        name = load_scan(paths if len(paths) > 1 else paths[0]).name
        d, h, w = case.shape
        assert any(line.startswith(f"{name}: {d} slices {w}×{h}, stomach ") for line in lines), (case.id, lines)
        assert nib.load(out / f"{name}_labels.nii.gz").shape == (w, h, d)
    exported = sorted(out.iterdir())
    assert any(p.name == "series_labels.nii.gz" for p in exported)  # the DICOM series was exported
    assert len([p for p in exported if p.name.endswith(tuple(DICOM_EXPORTS))]) == 2  # the complete one's pair
    for path in exported:
        _assert_private_file(path)
