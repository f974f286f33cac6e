"""How long an applied edit keeps a person waiting, server side: every download of a large scan written again.

    python -m benchmarks.edits [--data ../shared/data] [--rounds 7]

Apply clicks, Apply edit, Propagate, Fill between and Undo each end in :meth:`model.edits.ScanEdits.write`,
which writes every download of the corrected scan again (label NIfTI, mask PNG zip, surfaces, review CSV,
edit log, corrections zip and, for a DICOM series, the SEG and the RTSTRUCT) and scores the review flags.
This times :meth:`~model.edits.ScanEdits.apply` of one slice's edit on a large real scan:
case47_day29 (``volume_360x310``, 115 slices) with its real labels from ``kaggle/train.csv.gz``, resampled
to 512 pixels wide (MR series seldom come larger in-plane; the app takes up to 256 × 512 × 512), read back through
``model.scans.load_scan`` as a DICOM series and as NIfTI. The edit removes the half of the large bowel left
of its middle on one slice (a different slice each round), as a negative click does.

The masks: one organ a voxel (the later organ where the labels overlap), as a softmax checkpoint draws them
(the blog's, which the app serves by default), for ``dicom`` and ``nifti``; the labels as they are, some voxels
in two organs, as a multi-label checkpoint may draw them, for ``dicom_overlapping`` (the DICOM SEG then goes
to highdicom as stacked segments, which it checks for overlaps: :func:`model.dicom.seg._pixel_array`).

Each round applies one edit to each in turn (:func:`benchmarks.measure.round_robin`), on top of the edits
before it, as a session does; then the downloads of the ``dicom`` state are written once more one by one, to
show where the time goes (``parts_s``; with ``seg_stacked``, the SEG as it was written before, with the stacked
segments, ``label_nifti_as_before``, the label NIfTI written as it was until the volume was handed to
nibabel in NIfTI's own order, ``review_flags``, the review scored over the whole scan as every edit did
before ``review_flags_after_an_edit``: the state's per-slice sums, the edited slice summed again, and
``mask_png_zip``, ``surfaces`` and ``rtstruct`` made whole, as every edit did before ``..._after_an_edit``:
the state's slice PNGs, organ surfaces and traced slices, the edited slice's PNG, the edited organ's surface
and the edited slice's contours made again, :class:`model.exports.WrittenParts`).

Writes ``benchmarks/results/edits.json``: the machine, the scan, every time and their medians.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from model import labels

from .measure import RESULTS, SHARED_DATA, Machine, medians, round_robin

REPO = Path(__file__).resolve().parents[1]
RESULT = RESULTS / "edits.json"
CASE_DAY = "case47_day29"
WIDTH = 512
LARGE_BOWEL = 2
#: The slices edited: those where the large bowel covers at least this many pixels (at 512 wide).
LARGE_BOWEL_MIN_PX = 2000


def large_scans(data: Path, work: Path):
    """``(dicom scan, nifti scan, truth (O, D, H, W) bool)``: the labelled volume resampled to :data:`WIDTH`."""
    import nibabel as nib
    from scipy import ndimage

    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO / "docs"))
    from review_validation import labelled_volumes
    from rt_series import write_mr_series  # the suite's DICOM writer

    from model.scans import load_scan

    scan, truth = labelled_volumes(data, work)[CASE_DAY]
    zoom = WIDTH / scan.shape[2]
    voxels = ndimage.zoom(scan.voxels.astype(np.float32), (1, zoom, zoom), order=1)
    voxels = np.clip(np.rint(voxels), 0, 65535).astype(np.uint16)
    masks = np.stack([ndimage.zoom(m.astype(np.uint8), (1, zoom, zoom), order=0) for m in truth]).astype(bool)
    row_mm, col_mm = scan.spacing_mm[1] / zoom, scan.spacing_mm[2] / zoom
    dicom = load_scan(write_mr_series(voxels, work / "dicom", pixel_spacing=(row_mm, col_mm),
                                      slice_mm=scan.spacing_mm[0]))
    affine = np.diag([-col_mm, -row_mm, scan.spacing_mm[0], 1.0])
    nib.save(nib.Nifti1Image(voxels.transpose(2, 1, 0), affine), work / "scan.nii.gz")
    nifti = load_scan([work / "scan.nii.gz"])
    assert dicom.shape == nifti.shape == masks.shape[1:], (dicom.shape, nifti.shape, masks.shape)
    return dicom, nifti, masks


def edited_slices(masks: np.ndarray, rounds: int) -> list[int]:
    """``rounds + 1`` slices (one for the warm-up) spread over those where the large bowel covers at least
    :data:`LARGE_BOWEL_MIN_PX`, in order."""
    big = np.flatnonzero(masks[LARGE_BOWEL].sum(axis=(1, 2)) >= LARGE_BOWEL_MIN_PX)
    return [int(big[i]) for i in np.linspace(0, len(big) - 1, rounds + 1).round().astype(int)]


def one_organ_a_voxel(masks: np.ndarray) -> np.ndarray:
    """The masks with one organ a voxel, the later organ where the labels overlap (as the label NIfTI has them):
    what a softmax checkpoint draws, the blog's that the app serves by default."""
    from model.exports import label_volume

    ids = label_volume(masks)
    return np.stack([ids == labels.ORGAN_IDS[organ] for organ in labels.ORGANS])


def half_removed(masks: np.ndarray, index: int) -> np.ndarray:
    """Slice ``index``'s masks ``(O, H, W)`` with the large bowel left of its middle column removed."""
    edited = masks[:, index].copy()
    middle = int(np.median(np.nonzero(edited[LARGE_BOWEL])[1]))
    edited[LARGE_BOWEL, :, :middle] = False
    return edited


def seg_stacked(structures, source, path: Path, kinds) -> Path:
    """:func:`model.dicom.seg.write_seg` with the stacked segments, as it was written before the label map."""
    from unittest import mock

    from model.dicom import seg

    with mock.patch.object(seg, "_pixel_array", seg._stacked):
        return seg.write_seg(structures, source, path, algorithm_types=kinds)


def download_parts(state, first: np.ndarray, out: Path) -> dict:
    """Each part of :meth:`model.edits.ScanEdits.write` of ``state`` on its own (``name: fn``), in its order.
    ``first``: the masks before any edit (those of the first edited slice as they were)."""
    import nibabel as nib

    from model.dicom.export import algorithm_types
    from model.dicom.rtstruct import TracedSlices, write_rtstruct
    from model.dicom.seg import write_seg
    from model.edits import write_corrections_zip, write_edit_log
    from model.exports import label_volume, save_label_nifti, save_mask_png_zip, save_organ_meshes
    from model.planning import organ_structures
    from model.review import review_flags

    masks, scan = state.organ_masks, state.scan
    out.mkdir(parents=True, exist_ok=True)
    edited = sorted({e.slice_index for e in state.edits})
    structures = organ_structures(masks)
    kinds = algorithm_types(structures, state.edited_organs)
    # As an edit writes them: the state's slice PNGs, surfaces and review sums, less the edited slice's and organ's.
    kept = state.parts.without(first, masks, edited[:1])
    # The RTSTRUCT as an edit writes it: the slices traced for the masks before the edit of one slice.
    previous = masks.copy()
    previous[:, edited[0]] = first[:, edited[0]]
    before_edit = TracedSlices()
    write_rtstruct(organ_structures(previous), scan.source, out / "previous.dcm", algorithm_types=kinds,
                   traced=before_edit)
    return {
        "review_flags": lambda: review_flags(masks, scan.spacing_mm, state.probabilities, scan.slice_numbers),
        # As an edit scores them: the state's per-slice sums, one slice summed again (WrittenParts.sums).
        "review_flags_after_an_edit": lambda: review_flags(
            masks, scan.spacing_mm, state.probabilities, scan.slice_numbers,
            sums=kept.sums(masks, state.probabilities)),
        "seg": lambda: write_seg(structures, scan.source, out / "seg.dcm", algorithm_types=kinds),
        "seg_stacked": lambda: seg_stacked(structures, scan.source, out / "seg_stacked.dcm", kinds),
        "rtstruct": lambda: write_rtstruct(structures, scan.source, out / "rtstruct.dcm", algorithm_types=kinds),
        "rtstruct_after_an_edit": lambda: write_rtstruct(structures, scan.source, out / "rtstruct.dcm",
                                                         algorithm_types=kinds, traced=TracedSlices(before_edit)),
        "label_nifti": lambda: save_label_nifti(masks, scan, out / "labels.nii.gz"),
        # The label NIfTI as it was written before: a C-ordered copy of the (col, row, slice) volume, which
        # nibabel must then reorder again into NIfTI's Fortran order (the same bytes).
        "label_nifti_as_before": lambda: nib.save(nib.Nifti1Image(
            np.ascontiguousarray(label_volume(masks).transpose(2, 1, 0)), scan.affine), out / "before.nii.gz"),
        "mask_png_zip": lambda: save_mask_png_zip(masks, scan, out / "masks.zip"),
        "mask_png_zip_after_an_edit": lambda: save_mask_png_zip(masks, scan, out / "masks.zip",
                                                                dict(kept.slice_pngs)),
        "surfaces": lambda: save_organ_meshes(masks, scan, out / "organs.glb"),
        "surfaces_after_an_edit": lambda: save_organ_meshes(masks, scan, out / "organs.glb",
                                                            surfaces=dict(kept.surfaces)),
        "edit_log": lambda: write_edit_log(list(state.edits), out / "edits.csv"),
        "corrections_zip": lambda: write_corrections_zip(masks, scan, edited, out / "corrections.zip"),
        # Once every slice was corrected (a whole-scan review): the zip then holds them all.
        "corrections_zip_every_slice": lambda: write_corrections_zip(masks, scan, range(len(scan)), out / "all.zip"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)

    from model.edits import ScanEdits
    from model.exports import SegmentedScan, write_outputs
    from model.measure import measure

    with tempfile.TemporaryDirectory(prefix="edits-bench-") as tmp:
        work = Path(tmp)
        dicom, nifti, masks = large_scans(args.data, work)
        exclusive = one_organ_a_voxel(masks)
        variants = {"dicom": (dicom, exclusive), "dicom_overlapping": (dicom, masks), "nifti": (nifti, exclusive)}
        states, base = {}, {}
        for name, (scan, organ_masks) in variants.items():
            # The flags are scored on these; their values do not matter here.
            probabilities = np.where(organ_masks, 0.9, 0.05).astype(np.float16)
            outputs = write_outputs(organ_masks, scan, work / f"{name}-first", probabilities=probabilities)
            states[name] = ScanEdits.of(SegmentedScan(scan, organ_masks, outputs, measure(organ_masks, scan),
                                                      probabilities))
            base[name] = organ_masks
        slices = iter(edited_slices(masks, args.rounds))
        index = {"slice": next(slices)}
        written = []

        def apply(name):
            def run():
                out = work / f"{name}-{len(written)}"
                done = states[name].apply(index["slice"], half_removed(base[name], index["slice"]), out, tool="click")
                assert done is not None
                states[name] = done[0]  # edits pile up, as in a session
                written.append(out)
                if name == "nifti":  # the last scan of a round: the next round edits another slice
                    index["slice"] = next(slices, index["slice"])
            return run

        times = round_robin({name: apply(name) for name in states}, repeats=args.rounds)
        dicom_files = sorted(p.name for p in written[-3].iterdir())
        parts = round_robin(download_parts(states["dicom"], base["dicom"], work / "parts"), repeats=args.rounds,
                            warmup=0)
        edited = sorted({e.slice_index for e in states["dicom"].edits})  # what the corrections zip holds

    median = medians(times)
    result = {
        "command": "python -m benchmarks.edits" + (f" --rounds {args.rounds}" if args.rounds != 7 else ""),
        "machine": Machine.this().describe(),
        "scan": {"case_day": CASE_DAY, "shape": list(dicom.shape), "spacing_mm": [round(v, 4) for v in dicom.spacing_mm],
                 "voxels_with_an_organ": int(masks.any(axis=0).sum()),
                 "voxels_with_two_organs": int((masks.sum(axis=0) > 1).sum())},
        "edit": "the large bowel left of its middle removed on one slice, a different slice each round",
        "dicom_downloads": dicom_files,
        "slices_edited": edited,
        "seconds": {name: [round(t, 4) for t in samples] for name, samples in times.items()},
        "median_s": {name: round(t, 3) for name, t in median.items()},
        "parts_s": {name: round(t, 3) for name, t in medians(parts).items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median_s"]), json.dumps(result["parts_s"]), "->", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
