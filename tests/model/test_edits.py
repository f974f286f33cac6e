"""Correction by hand (model/edits.py): a slice's corrected masks in, the rewrite, the log, the zip, the DICOM marks."""

from __future__ import annotations

import csv
import zipfile

import nibabel as nib
import numpy as np
import pytest

import rt_series
from model.dicom.export import AUTOMATIC, SEMIAUTOMATIC, algorithm_types
from model.edits import ScanEdits, Undo, training_slice
from model.measure import measure
from model.exports import SegmentedScan, write_outputs
from model.planning import PlanningRequest, planning_structures
from model.review import ReviewFlag
from model.scans.dicom import read_dicom_series
from scan_fixtures import kaggle_slices, stack

STOMACH, SMALL, LARGE = range(3)


def segmented(scan, masks, out_dir, **options) -> ScanEdits:
    outputs = write_outputs(masks, scan, out_dir, **options)
    return ScanEdits.of(SegmentedScan(scan, masks, outputs, measure(masks, scan)), **options)


def test_an_applied_edit_rewrites_every_download_for_that_slice_and_organ_only(kaggle_scan, tmp_path):
    scan, masks = kaggle_scan
    state = segmented(scan, masks, tmp_path / "first")
    corrected = masks[:, 2].copy()
    corrected[STOMACH, 100:110, 40:60] = True  # a stroke
    removed = masks[LARGE, 2] & (np.arange(360)[None, :] < 250)
    corrected[LARGE][removed] = False  # the eraser
    assert masks[LARGE, 2].any() and removed.any() and not masks[STOMACH, 2, 100:110, 40:60].any()

    new_state, result = state.apply(2, corrected, tmp_path / "second")
    expected = masks.copy()
    expected[STOMACH, 2, 100:110, 40:60] = True
    expected[LARGE, 2] &= ~removed
    np.testing.assert_array_equal(result.organ_masks, expected)
    np.testing.assert_array_equal(new_state.organ_masks, expected)
    assert state.organ_masks is masks and not state.edits  # the old state is untouched

    files = {p.name: p for p in result.outputs.files()}
    assert {"case9_day4_edits.csv", "case9_day4_corrections.zip", "case9_day4_labels.nii.gz",
            "case9_day4_submission.csv", "case9_day4_masks.zip"} <= set(files)
    label_ids = np.asarray(nib.load(files["case9_day4_labels.nii.gz"]).dataobj).transpose(2, 1, 0)
    before = np.asarray(nib.load(tmp_path / "first" / "case9_day4_labels.nii.gz").dataobj).transpose(2, 1, 0)
    changed = np.argwhere(label_ids != before)
    assert set(changed[:, 0]) == {2}
    assert set(label_ids[2][label_ids[2] != before[2]]) <= {0, 1}  # stomach added, large bowel gone
    assert result.volumes[STOMACH].voxels == masks[STOMACH].sum() + 200

    with open(files["case9_day4_edits.csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [
        {"edit": "1", "slice_index": "2", "slice_number": str(scan.slice_numbers[2]), "organ": "stomach",
         "pixels_added": "200", "pixels_removed": "0", "tool": "brush", "clicks": ""},
        {"edit": "1", "slice_index": "2", "slice_number": str(scan.slice_numbers[2]), "organ": "large_bowel",
         "pixels_added": "0", "pixels_removed": str(int(removed.sum())), "tool": "brush", "clicks": ""},
    ]

    # A second edit on another slice is edit 2; the log keeps the first.
    corrected = new_state.organ_masks[:, 4].copy()
    corrected[SMALL, 0:3, 0:3] = True
    third, result = new_state.apply(4, corrected, tmp_path / "third")
    assert [(e.edit, e.slice_index, e.organ) for e in third.edits] == [
        (1, 2, "stomach"), (1, 2, "large_bowel"), (2, 4, "small_bowel")]
    assert third.edited_organs == {"stomach", "large_bowel", "small_bowel"}


def test_the_corrections_zip_is_a_kaggle_layout_train_reads(kaggle_scan, tmp_path):
    from model.rle import RleCsv
    from train.data import index_scans, read_scan, read_scan_masks
    from model.mask_png import decode_mask_png

    scan, masks = kaggle_scan
    state = segmented(scan, masks, tmp_path / "first")
    for index in (4, 1):
        corrected = state.organ_masks[:, index].copy()
        corrected[SMALL, 50:60, 300:320] = True
        state, result = state.apply(index, corrected, tmp_path / f"after{index}")
    with zipfile.ZipFile(next(p for p in result.outputs.files() if p.name.endswith("_corrections.zip"))) as archive:
        archive.extractall(tmp_path / "data")
    scans = index_scans(tmp_path / "data")
    assert list(scans) == ["case9_day4"]
    files = scans["case9_day4"]
    assert files.slice_numbers == (scan.slice_numbers[1], scan.slice_numbers[4]) and files.shape == (310, 360)
    np.testing.assert_array_equal(read_scan(files), scan.voxels[[1, 4]])  # the raw 16-bit slices, unchanged
    bits = read_scan_masks(RleCsv(tmp_path / "data" / "train.csv"), files)
    np.testing.assert_array_equal(decode_mask_png(bits), state.organ_masks[:, [1, 4]])


def test_float_scans_are_stretched_onto_16_bits_and_integer_ones_kept():
    np.testing.assert_array_equal(training_slice(np.array([[7, 9000]], dtype=np.int16)), [[7, 9000]])
    np.testing.assert_array_equal(training_slice(np.array([[-1.5, 0.0, 1.5]])), [[0, 32768, 65535]])


@pytest.mark.parametrize("kind", ["float32", "float_nan", "float_inf", "all_nan", "int16_negative", "int32_large",
                                  "uint16", "constant"])
def test_some_slices_for_training_are_the_whole_scans_stretch_cut_to_them(kind):
    """Only the slices asked for are converted, with the whole scan's range: the same as converting the whole
    scan ``numpy.nan_to_num`` in float64 and cutting (how it was done: 0.7 s a write on a large float scan)."""
    rng = np.random.default_rng(0)
    voxels = {"float32": lambda: rng.normal(100, 40, (6, 5, 7)).astype(np.float32),
              "float_nan": lambda: np.where(rng.random((6, 5, 7)) < 0.1, np.nan, rng.normal(5, 2, (6, 5, 7))),
              "float_inf": lambda: np.where(rng.random((6, 5, 7)) < 0.05, np.inf, rng.normal(5, 2, (6, 5, 7))),
              "all_nan": lambda: np.full((6, 5, 7), np.nan, np.float32),
              "int16_negative": lambda: rng.integers(-1000, 3000, (6, 5, 7)).astype(np.int16),
              "int32_large": lambda: rng.integers(0, 200_000, (6, 5, 7)).astype(np.int32),
              "uint16": lambda: rng.integers(0, 65536, (6, 5, 7)).astype(np.uint16),
              "constant": lambda: np.full((6, 5, 7), 3.5)}[kind]()
    values = np.nan_to_num(voxels.astype(np.float64))
    lo, hi = values.min(), values.max()
    whole = (voxels.astype(np.uint16) if kind == "uint16" else  # integers within 0..65535 are kept as they are
             np.round((values - lo) * (65535.0 / (hi - lo) if hi > lo else 0.0)).astype(np.uint16))
    np.testing.assert_array_equal(training_slice(voxels), whole)
    np.testing.assert_array_equal(training_slice(voxels, [4, 1]), whole[[4, 1]])


def test_no_change_is_no_edit_and_a_wrong_shape_is_refused(kaggle_scan, tmp_path):
    scan, masks = kaggle_scan
    state = segmented(scan, masks, tmp_path / "first")
    out = tmp_path / "out"
    assert state.apply(1, masks[:, 1].copy(), out) is None and not out.exists() and not state.edits
    with pytest.raises(ValueError, match=r"\(3, 310, 360\)"):
        state.apply(1, masks[:, 1, :, :300], out)
    assert not out.exists()


def test_the_models_prediction_stays_after_an_applied_edit(kaggle_scan, tmp_path):
    scan, masks = kaggle_scan
    state = segmented(scan, masks, tmp_path / "first")
    corrected = masks[:, 3].copy()
    corrected[STOMACH] = False
    state, _ = state.apply(3, corrected, tmp_path / "edited")
    assert not state.organ_masks[STOMACH, 3].any()
    np.testing.assert_array_equal(state.predicted_slice(3), masks[:, 3])


def test_without_probabilities_flags_stay_after_an_edit_except_on_the_edited_slice(kaggle_scan, tmp_path):
    """Where the probabilities were not kept, an edit keeps the model's flags, minus the slice a person
    has just corrected, and writes the review CSV from them."""
    scan, masks = kaggle_scan
    flags = (ReviewFlag(scan.slice_numbers[1], "stomach", 0.8, "uncertain contour", 1),
             ReviewFlag(scan.slice_numbers[2], "small_bowel", 0.5, "possibly missed", 2))
    state = ScanEdits(scan, masks, np.packbits(masks), flags)
    corrected = masks[:, 1].copy()
    corrected[STOMACH, 0:4, 0:4] = ~corrected[STOMACH, 0:4, 0:4]
    edited, result = state.apply(1, corrected, tmp_path / "out")
    assert edited.flags == flags[1:] and result.outputs.flags == flags[1:]
    with open(result.outputs.review, newline="") as f:
        assert [row["slice_index"] for row in csv.DictReader(f)] == ["2"]


def test_with_kept_probabilities_every_edit_scores_the_flags_again(kaggle_scan, tmp_path):
    """Issue #24: the flags follow the edits. The corrected slice-organ is never flagged again, and the
    other slices are ranked anew from the corrected masks and the model's probabilities."""
    from model.review import review_flags

    scan, masks = kaggle_scan
    probabilities = np.where(masks, np.float16(0.97), np.float16(0.0))
    probabilities[STOMACH, 3][masks[STOMACH, 3]] = 0.1  # an unsure stomach on slice 3: the worst slice (0.82)
    probabilities[SMALL, 2][masks[SMALL, 2]] = 0.2  # an unsure small bowel on slice 2: the runner-up (0.67)
    outputs = write_outputs(masks, scan, tmp_path / "first", probabilities=probabilities)
    state = ScanEdits.of(SegmentedScan(scan, masks, outputs, measure(masks, scan), probabilities))
    assert [(f.slice_index, f.organ) for f in state.flags] == [(3, "stomach")]  # one slice: 15 % of 6

    corrected = masks[:, 3].copy()
    corrected[STOMACH, 0:4, 0:4] = ~corrected[STOMACH, 0:4, 0:4]  # a person looked at it and fixed it
    edited, result = state.apply(3, corrected, tmp_path / "second")
    assert [(f.slice_index, f.organ) for f in edited.flags] == [(2, "small_bowel")]
    assert edited.flags == result.outputs.flags == tuple(review_flags(
        result.organ_masks, scan.spacing_mm, probabilities, scan.slice_numbers, reviewed=frozenset({(3, "stomach")})))
    assert edited.probabilities is probabilities  # kept for the next edit, not copied
    with open(result.outputs.review, newline="") as f:
        assert [row["slice_index"] for row in csv.DictReader(f)] == ["2"]


def test_structures_from_an_edited_organ_are_semiautomatic():
    masks = np.zeros((3, 2, 8, 8), dtype=bool)
    structures = planning_structures(masks, (3.0, 1.5, 1.5), bowel_bag_structure=True, margin_mm=3.0)
    from model.planning import organ_structures

    everything = [*organ_structures(masks), *structures]
    keys = [s.key for s in everything]
    assert keys[:4] == ["stomach", "small_bowel", "large_bowel", "bowel_bag"]
    kinds = dict(zip(keys, algorithm_types(everything, {"large_bowel"})))
    assert {k for k, v in kinds.items() if v == SEMIAUTOMATIC} == {
        "large_bowel", "bowel_bag", "large_bowel_prv_3mm", "bowel_bag_prv_3mm"}
    assert set(algorithm_types(everything)) == {AUTOMATIC}


def test_dicom_exports_mark_the_edited_organ_semiautomatic_and_the_rest_automatic(shared_data, tmp_path):
    import highdicom as hd
    import pydicom

    voxels = stack(kaggle_slices(shared_data, "volume_266x266")[60:66])
    scan = read_dicom_series(rt_series.write_mr_series(voxels, tmp_path / "series"), "series")
    masks = rt_series.organ_masks_for(scan.voxels)
    state = segmented(scan, masks, tmp_path / "first", planning=PlanningRequest(bowel_bag=True))
    corrected = masks[:, 2].copy()
    corrected[STOMACH, 0:4, 0:4] = True
    _, result = state.apply(2, corrected, tmp_path / "edited")
    files = {p.name: p for p in result.outputs.files()}

    seg = hd.seg.segread(files["series_seg.dcm"])
    kinds = {str(d.SegmentLabel): str(d.SegmentAlgorithmType) for d in seg.SegmentSequence}
    assert kinds == {"Stomach": "SEMIAUTOMATIC", "Small bowel": "AUTOMATIC", "Large bowel": "AUTOMATIC",
                     "Bowel bag": "AUTOMATIC"}
    stomach = next(d for d in seg.SegmentSequence if d.SegmentLabel == "Stomach")
    assert stomach.SegmentAlgorithmName == "GI tract segmentation (research demo)"
    rtstruct = pydicom.dcmread(files["series_rtstruct.dcm"])
    assert {r.ROIName: r.ROIGenerationAlgorithm for r in rtstruct.StructureSetROISequence} == {
        "Stomach": "SEMIAUTOMATIC", "Small bowel": "AUTOMATIC", "Large bowel": "AUTOMATIC", "Bowel bag": "AUTOMATIC"}
    # The edit is in the SEG's pixels too.
    uids = [str(ds.SOPInstanceUID) for ds in scan.source.datasets]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1],
                                               ignore_spatial_locations=True)
    assert pixels[2, 0:4, 0:4].all() and not masks[STOMACH, 2, 0:4, 0:4].any()
    # Before the edit, everything was automatic.
    first = pydicom.dcmread(tmp_path / "first" / "series_rtstruct.dcm")
    assert {r.ROIGenerationAlgorithm for r in first.StructureSetROISequence} == {"AUTOMATIC"}
    # The edit's files, made from what the first write traced and encoded, are those a write from scratch gives.
    from benchmarks.same_outputs import dicom_elements

    scratch = {p.name: p for p in write_outputs(result.organ_masks, scan, tmp_path / "scratch",
                                                planning=PlanningRequest(bowel_bag=True),
                                                edited_organs={"stomach"}).files()}
    for name in ("series_rtstruct.dcm", "series_seg.dcm"):
        assert dicom_elements(files[name]) == dicom_elements(scratch[name]), name
    assert state.parts.traced.used and result.outputs.parts.traced.used


def test_flags_after_edits_and_an_undo_are_those_scored_from_scratch_though_only_changed_slices_are_summed(
        kaggle_scan, tmp_path, monkeypatch):
    """The segmentation's write sums the review over the whole scan and the state keeps the per-slice sums;
    an edit or undo sums again only the slices it changed. The flags are the ones scoring the whole scan anew
    gives."""
    from model.review import SliceSums, review_flags

    scan, masks = kaggle_scan
    rng = np.random.default_rng(1)
    probabilities = np.clip(np.where(masks, 0.8, 0.1) + rng.normal(0, 0.15, masks.shape), 0, 1).astype(np.float16)
    summed = []
    fill = SliceSums._fill
    monkeypatch.setattr(SliceSums, "_fill", lambda self, m, p, slices: summed.append(list(slices)) or fill(self, m, p, slices))
    outputs = write_outputs(masks, scan, tmp_path / "first", probabilities=probabilities)
    state = ScanEdits.of(SegmentedScan(scan, masks, outputs, measure(masks, scan), probabilities))
    assert summed == [list(range(6))]

    def scratch(s: ScanEdits) -> tuple:
        reviewed = frozenset((e.slice_index, e.organ) for e in s.edits)
        return tuple(review_flags(s.organ_masks, scan.spacing_mm, probabilities, scan.slice_numbers, reviewed=reviewed))

    corrected = masks[:, 1].copy()
    corrected[LARGE, 0:40, 0:60] = ~corrected[LARGE, 0:40, 0:60]
    summed.clear()
    one, _ = state.apply(1, corrected, tmp_path / "one")
    assert summed == [[1]] and one.flags == scratch(one)
    two_masks = {d: np.where(rng.random(one.organ_masks[:, d].shape) < 0.02, ~one.organ_masks[:, d],
                             one.organ_masks[:, d]) for d in (0, 4, 5)}
    summed.clear()
    two, _ = one.apply_slices(two_masks, tmp_path / "two", tool="propagate")
    assert summed == [[0, 4, 5]] and two.flags == scratch(two)
    summed.clear()
    back, _ = Undo.between(one, two).back(two).write(tmp_path / "back")
    assert summed == [[0, 4, 5]] and back.flags == one.flags == scratch(back)
    for s in (state, one, two, back):
        whole = SliceSums.of(s.organ_masks, probabilities)
        np.testing.assert_array_equal(s.parts.review_sums.overlap, whole.overlap)
        np.testing.assert_array_equal(s.parts.review_sums.mass, whole.mass)
        assert not s.parts.stale_sums


def _zip_members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_downloads_after_edits_and_an_undo_are_those_written_from_scratch_though_only_changed_parts_are_made(
        kaggle_scan, tmp_path, monkeypatch):
    """The state keeps each slice's mask PNG and each organ's surface; an edit or undo makes again only the PNGs
    of the slices it changed and the surfaces of the organs it changed there. The mask zip and the surfaces are
    those that writing the same masks from scratch gives."""
    import model.exports as exports

    scan, masks = kaggle_scan
    state = segmented(scan, masks, tmp_path / "first")
    assert sorted(state.parts.slice_pngs) == list(range(6)) and sorted(state.parts.surfaces) == [0, 1, 2]
    encoded, meshed = [], []
    encode, surface = exports.encode_mask_png, exports.organ_surface
    monkeypatch.setattr(exports, "encode_mask_png", lambda m: encoded.append(m.copy()) or encode(m))
    monkeypatch.setattr(exports, "organ_surface", lambda m, *a: meshed.append(m.copy()) or surface(m, *a))

    def as_from_scratch(s: ScanEdits, result, name: str) -> None:
        scratch = write_outputs(s.organ_masks, scan, tmp_path / f"{name}-scratch")
        assert _zip_members(result.outputs.masks_zip) == _zip_members(scratch.masks_zip)
        assert result.outputs.mesh.read_bytes() == scratch.mesh.read_bytes()

    def made(s: ScanEdits, slices, organs) -> None:
        """Only the PNGs of ``slices`` and the surfaces of ``organs`` were made (before the scratch writes)."""
        assert [m.tobytes() for m in encoded] == [s.organ_masks[:, d].tobytes() for d in slices]
        assert [m.tobytes() for m in meshed] == [s.organ_masks[o].tobytes() for o in organs]
        encoded.clear(), meshed.clear()

    corrected = masks[:, 1].copy()
    corrected[LARGE, 0:40, 0:60] = ~corrected[LARGE, 0:40, 0:60]
    one, result = state.apply(1, corrected, tmp_path / "one")
    made(one, [1], [LARGE])
    as_from_scratch(one, result, "one")
    encoded.clear(), meshed.clear()
    two_masks = {d: one.organ_masks[:, d].copy() for d in (0, 4, 5)}
    for d in (0, 4):  # the small bowel changes on two slices; slice 5 is proposed as it was
        two_masks[d][SMALL, 100:120, 100:140] = ~two_masks[d][SMALL, 100:120, 100:140]
    two, result = one.apply_slices(two_masks, tmp_path / "two", tool="propagate")
    made(two, [0, 4, 5], [SMALL])
    as_from_scratch(two, result, "two")
    encoded.clear(), meshed.clear()
    back, result = Undo.between(one, two).back(two).write(tmp_path / "back")
    made(back, [0, 4], [SMALL])
    as_from_scratch(back, result, "back")
    assert _zip_members(result.outputs.masks_zip) == _zip_members(tmp_path / "one" / "case9_day4_masks.zip")


def test_several_slices_are_one_edit_and_the_log_names_the_tool_and_the_clicks(kaggle_scan, tmp_path):
    scan, masks = kaggle_scan
    state = segmented(scan, masks, tmp_path / "first")
    proposed = {d: masks[:, d].copy() for d in (1, 2, 4)}
    for d in (1, 2):
        proposed[d][SMALL, 10:20, 10:30] = True  # two slices change; slice 4 does not
    state, result = state.apply_slices(proposed, tmp_path / "propagated", tool="propagate")
    assert {(e.edit, e.slice_index, e.organ, e.tool) for e in state.edits} == {(1, 1, "small_bowel", "propagate"),
                                                                            (1, 2, "small_bowel", "propagate")}
    assert state.corrected("small_bowel") == [1, 2] and state.corrected("stomach") == []
    clicked = masks[:, 3].copy()
    clicked[STOMACH, 50:60, 50:60] = True
    state, result = state.apply(3, clicked, tmp_path / "clicked", tool="click", clicks={"stomach": "+55:55 -10:12"})
    with open(result.outputs.edit_log, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["edit"], r["slice_index"], r["tool"], r["clicks"]) for r in rows] == [
        ("1", "1", "propagate", ""), ("1", "2", "propagate", ""), ("2", "3", "click", "+55:55 -10:12")]
    assert state.corrected("stomach", tools=("brush", "click")) == [3]  # by hand: what a propagation leaves alone
    assert state.corrected("small_bowel", tools=("brush", "click")) == [] and state.corrected("small_bowel") == [1, 2]
    with pytest.raises(ValueError, match="tool must be one of"):
        state.apply(3, masks[:, 3], tmp_path / "x", tool="lasso")
    with pytest.raises(ValueError, match="outside the scan"):
        state.apply_slices({6: masks[:, 0]}, tmp_path / "x")


def test_writing_an_earlier_state_again_gives_its_downloads_back(kaggle_scan, tmp_path):
    """Undo in the page goes back to the state before an edit and writes it again (ScanEdits.write)."""
    scan, masks = kaggle_scan
    state = segmented(scan, masks, tmp_path / "first")
    changed = masks[:, 2].copy()
    changed[LARGE, :40, :40] = True
    edited, _ = state.apply(2, changed, tmp_path / "edited")
    back, result = state.write(tmp_path / "undone")
    first = nib.load(tmp_path / "first" / f"{scan.name}_labels.nii.gz").get_fdata()
    assert np.array_equal(nib.load(tmp_path / "undone" / f"{scan.name}_labels.nii.gz").get_fdata(), first)
    assert not back.edits and result.outputs.edit_log is None and np.array_equal(result.organ_masks, masks)


def test_an_undo_step_holds_the_changed_slices_only_and_takes_the_edit_back_exactly(kaggle_scan, tmp_path):
    """The page's Undo keeps one :class:`Undo` per applied edit: the slices it changed as they were, the log and the
    flags before it (a flag the edit cleared comes back), not a copy of the whole scan's masks."""
    scan, masks = kaggle_scan
    flags = (ReviewFlag(scan.slice_numbers[1], "stomach", 0.8, "uncertain contour", 1),)
    state = ScanEdits(scan, masks, np.packbits(masks), flags)
    first = state.write(tmp_path / "first")[0]
    changed = {d: masks[:, d].copy() for d in (1, 3)}
    for d in changed:
        changed[d][LARGE, :40, :40] = ~changed[d][LARGE, :40, :40]
    edited, _ = first.apply_slices(changed, tmp_path / "edited", tool="propagate")
    step = Undo.between(first, edited)
    assert sorted(step.slices) == [1, 3] and step.nbytes == 2 * masks[:, 0].nbytes < masks.nbytes / 2
    assert step.fits(edited) and not step.fits(first) and not edited.flags
    back, result = step.back(edited).write(tmp_path / "undone")
    assert np.array_equal(back.organ_masks, masks) and back.edits == () and back.flags == flags
    labels = lambda folder: nib.load(folder / f"{scan.name}_labels.nii.gz").get_fdata()  # noqa: E731
    assert np.array_equal(labels(tmp_path / "undone"), labels(tmp_path / "first")) and result.outputs.edit_log is None
