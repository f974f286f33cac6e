"""Does a refactor change any output? Segment the same real scans with two commits and compare every file.

    python -m benchmarks.same_outputs --ref 106483f [--data ../shared/data]

Runs ``python -m model.predict`` from a temporary checkout of ``--ref`` and from this working tree,
with the committed trained model (``benchmarks/fidelity_checkpoint``), on the same inputs: the real
volumes of ``--data/scans`` as Kaggle slice folders, one of them as NIfTI and one as a DICOM series
(so the SEG and RTSTRUCT exports are written too), with ``--bowel-bag --margin-mm 5``. Both runs use
the torch engine in fp32, so the comparison does not depend on which engine this CPU would pick.

Each file must be byte-identical, except where the format stores a time or a fresh identifier:
gzip members and zip entries are compared by their uncompressed bytes and names, DICOM files
element by element with UIDs, dates, times and group lengths blanked.
Writes ``benchmarks/results/same-outputs.json``; exit status 1 when any file differs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "benchmarks" / "fidelity_checkpoint"
SHARED_DATA = REPO.parent / "shared" / "data"
RESULT = REPO / "benchmarks" / "results" / "same-outputs.json"
#: DICOM value representations that hold a fresh identifier or the time of writing.
UNSTABLE_VRS = {"UI", "DA", "TM", "DT"}


def make_inputs(data: Path, dst: Path) -> list[Path]:
    """The real volumes as slice folders, plus one as NIfTI and one as a DICOM series."""
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(REPO / "tests"))
    from rt_series import write_mr_series  # the suite's DICOM writer: one series, written once for both runs

    from model.scans import load_scan

    dst.mkdir(parents=True, exist_ok=True)
    volumes = sorted(p for p in (data / "scans").iterdir() if p.is_dir())
    inputs = list(volumes)
    nifti_scan = load_scan(sorted(volumes[0].glob("*.png")))
    import nibabel as nib

    nifti = dst / "as_nifti.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(nifti_scan.voxels.transpose(2, 1, 0)), nifti_scan.affine), nifti)
    inputs.append(nifti)
    slices = sorted(volumes[-1].glob("*.png"))[20:44]
    voxels = np.stack([np.asarray(Image.open(p)) for p in slices]).astype(np.uint16) * 16
    write_mr_series(voxels, dst / "as_dicom")
    inputs.append(dst / "as_dicom")
    return inputs


def run_predict(tree: Path, inputs: list[Path], out: Path) -> None:
    env = {**os.environ, "UWMGI_ENGINE": "torch", "UWMGI_PRECISION": "fp32", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "model.predict", *map(str, inputs), "--out", str(out), "--model", str(CHECKPOINT),
           "--bowel-bag", "--margin-mm", "5"]
    result = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"model.predict failed in {tree}:\n{result.stderr[-3000:]}")


def dicom_elements(path: Path) -> list[str]:
    """Every element of a DICOM file as text, UIDs, dates, times and group lengths blanked, sequences walked."""
    import pydicom

    lines: list[str] = []

    def walk(ds, prefix: str) -> None:
        for elem in ds:
            if elem.VR == "SQ":
                for i, item in enumerate(elem.value):
                    walk(item, f"{prefix}{elem.tag}[{i}].")
            else:
                # A group length (gggg,0000) counts the bytes of its group's values, fresh UIDs included, whose
                # length varies: blanked with them (a SEG once compared different by its 0002 group length alone).
                value = "*" if elem.VR in UNSTABLE_VRS or elem.tag.element == 0 else repr(elem.value)
                lines.append(f"{prefix}{elem.tag} {elem.VR} {value}")

    ds = pydicom.dcmread(path)
    walk(ds.file_meta, "meta.")
    walk(ds, "")
    return lines


def comparable(path: Path):
    """What must be equal between the two runs for this file."""
    name = path.name
    if name.endswith(".gz"):
        return gzip.decompress(path.read_bytes())
    if name.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            return [(info.filename, zf.read(info)) for info in zf.infolist()]
    if name.endswith(".dcm"):
        return dicom_elements(path)
    return path.read_bytes()


def compare(ref_out: Path, new_out: Path) -> dict:
    ref_files = {p.relative_to(ref_out).as_posix() for p in ref_out.rglob("*") if p.is_file()}
    new_files = {p.relative_to(new_out).as_posix() for p in new_out.rglob("*") if p.is_file()}
    differing = sorted(f for f in ref_files & new_files if comparable(ref_out / f) != comparable(new_out / f))
    return {"files_compared": len(ref_files & new_files), "only_in_ref": sorted(ref_files - new_files),
            "only_in_new": sorted(new_files - ref_files), "differing": differing,
            "identical": not differing and ref_files == new_files}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, help="the commit to compare this working tree with")
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--result", type=Path, default=RESULT)
    parser.add_argument("--keep", type=Path, help="copy both runs' outputs here, to look at a difference")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ref_tree = tmp / "ref"
        subprocess.run(["git", "worktree", "add", "--detach", str(ref_tree), args.ref], cwd=REPO, check=True,
                       capture_output=True)
        try:
            inputs = make_inputs(args.data, tmp / "inputs")
            run_predict(ref_tree, inputs, tmp / "out_ref")
            run_predict(REPO, inputs, tmp / "out_new")
            report = compare(tmp / "out_ref", tmp / "out_new")
            if args.keep:
                for out in ("out_ref", "out_new"):
                    shutil.copytree(tmp / out, args.keep / out, dirs_exist_ok=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(ref_tree)], cwd=REPO, check=False)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                capture_output=True, text=True).stdout.strip())
    result = {"ref": args.ref, "new": head + (" with uncommitted changes" if dirty else ""),
              "date": time.strftime("%Y-%m-%d"), "inputs": [p.name for p in inputs], **report}
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if report["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
