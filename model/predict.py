"""Segment whole scans from the command line, writing the files the app's Scan tab offers.

    python -m model.predict INPUT... --out DIR [--model ID_OR_DIR] [--revision REV]

Each INPUT is one scan: a folder of slices, a zip, a NIfTI file or a DICOM folder. Loose
slice (or .dcm) files given together form one scan per folder they sit in. For each scan
it writes ``DIR/<scan>_labels.nii.gz``, ``<scan>_masks.zip``, ``<scan>_organs.glb`` and, for
Kaggle-named slices in a ``caseN_dayM`` folder or zip, ``<scan>_submission.csv``; then it
prints one line with the organ volumes. Research use only, not for diagnosis.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from . import labels
from .checkpoint import CheckpointError, env_model
from .scan import ScanError, Scan, load_scan
from .volume import measure, summary_line, write_outputs


def group_inputs(inputs: list[Path]) -> list[list[Path]]:
    """One entry per scan: folders, zips and NIfTI files alone; loose slice files by parent folder."""
    loose: dict[Path, list[Path]] = defaultdict(list)
    groups = []
    for path in inputs:
        lower = path.name.lower()
        if path.is_dir() or lower.endswith((".zip", ".nii", ".nii.gz")):
            groups.append([path])
        else:
            loose[path.parent].append(path)
    return groups + list(loose.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                        help="slice file(s), a folder of slices, a zip, a NIfTI file or a DICOM folder")
    parser.add_argument("--out", required=True, type=Path, help="folder for the output files")
    parser.add_argument("--model", help="Hub model repo id or local contract checkpoint dir (env MODEL); "
                                        "default: the blog's checkpoint")
    parser.add_argument("--revision", help="Hub revision to pin (env MODEL_REVISION)")
    parser.add_argument("--slice-thickness", type=float, default=None,
                        help="slice thickness in mm for Kaggle slice files (default 3)")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from .inference import Segmenter

    env = env_model()
    try:
        segmenter = Segmenter.load(args.model or env[0], args.revision or env[1])
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    failures = 0
    for group in group_inputs(args.inputs):
        try:
            scan: Scan = load_scan(group if len(group) > 1 else group[0], args.slice_thickness)
        except ScanError as err:
            print(f"error: {group[0]}: {err}", file=sys.stderr)
            failures += 1
            continue
        organ_masks = np.zeros((len(labels.ORGANS), *scan.shape), dtype=bool)
        with tqdm(total=len(scan), desc=scan.name, unit="slice", leave=False, file=sys.stderr) as bar:
            for done in segmenter.segment_volume_steps(scan.voxels, organ_masks):
                bar.update(done - bar.n)
        outputs = write_outputs(organ_masks, scan, args.out)
        print(f"{summary_line(scan, measure(organ_masks, scan))} -> {outputs.nifti.parent}")
        for note in scan.notes:
            print(f"  note: {note}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
