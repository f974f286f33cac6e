"""The Scan tab's editor handlers, called directly as Gradio calls them, with an EditorValue dict."""

from __future__ import annotations

import csv
import logging

import gradio as gr
import nibabel as nib
import numpy as np
import pytest

from scan_fixtures import kaggle_slices, zip_files
from ui import overlays, scan_tab, server, slice_tab
from ui.editor import layers_to_masks

STOMACH, SMALL, LARGE = range(3)


def _segment(upload, **kwargs):
    return list(scan_tab.segment_scan_files([str(upload)], None, None, 0.5, overlays.ORGAN_CHOICES, **kwargs))[-1]


def _labels(downloads) -> np.ndarray:
    """The downloaded label NIfTI as ``(D, H, W)`` ids."""
    path = next(p for p in downloads if p.endswith("_labels.nii.gz"))
    return np.asarray(nib.load(path).dataobj).transpose(2, 1, 0)


def test_apply_rewrites_every_output_from_the_corrected_slice(tiny_model, shared_data, tmp_path, caplog):
    files = kaggle_slices(shared_data, "volume_360x310")[60:66]
    upload = zip_files(files, tmp_path / "case9_day4.zip", folder="scans")
    first = _segment(upload)
    state = first[9]
    value, editor = scan_tab.open_scan_editor(state, 3)
    assert value["background"].shape == (310, 360, 3) and len(value["layers"]) == 3
    layers = [layer.copy() for layer in value["layers"]]
    layers[STOMACH][:] = 0  # erase the stomach, paint a block of large bowel (id 3 in the NIfTI wins overlaps)
    layers[LARGE][200:220, 300:340] = (255, 0, 0, 255)
    with caplog.at_level(logging.DEBUG):
        out = scan_tab.apply_scan_edit(state, editor, {"background": value["background"], "layers": layers,
                                                  "composite": None})
    note, slider, overlay, _, table, plot, _, downloads, _, new_state, review = out
    assert slider.value == 3 and "Corrected by hand: " in note
    masks = new_state.organ_masks
    expected = state.organ_masks.copy()
    expected[STOMACH, 2] = False
    expected[LARGE, 2, 200:220, 300:340] = True
    np.testing.assert_array_equal(masks, expected)
    np.testing.assert_array_equal(overlay[1][2][0] > 0, expected[LARGE, 2])  # the overlay shows the edit
    before, after = _labels(first[7]), _labels(downloads)
    block = np.zeros(before.shape, dtype=bool)
    block[2, 200:220, 300:340] = True
    stomach_only = (before == 1) & ~expected[SMALL] & ~expected[LARGE]  # erased stomach pixels become background
    np.testing.assert_array_equal(before != after, (block & (before != 3)) | (stomach_only & (np.arange(6) == 2)[:, None, None]))
    voxel_ml = 3.0 * 1.5 * 1.5 / 1000
    assert [row[1] for row in table[:3]] == [round(expected[o].sum() * voxel_ml, 1) for o in range(3)]
    large_cm2 = round(expected[LARGE, 2].sum() * 1.5 * 1.5 / 100, 2)  # the plot's x is the slider's position
    assert plot[(plot["slice"] == 3) & (plot["organ"] == "Stomach")]["area (cm²)"].tolist() == [0.0]
    assert plot[(plot["slice"] == 3) & (plot["organ"] == "Large bowel")]["area (cm²)"].tolist() == [large_cm2]
    names = sorted(p.rsplit("/", 1)[-1] for p in downloads)
    assert "case9_day4_edits.csv" in names and "case9_day4_corrections.zip" in names
    with open(next(p for p in downloads if p.endswith("_edits.csv")), newline="") as f:
        rows = list(csv.DictReader(f))
    changed = {r["organ"] for r in rows}
    assert changed <= {"stomach", "large_bowel"} and "large_bowel" in changed
    assert {r[1] for r in review if r[2] == "edited"} == {{"stomach": "Stomach", "large_bowel": "Large bowel"}[o]
                                                          for o in changed}
    assert all(r[0] == 3 for r in review if r[2] == "edited")
    # The flags follow the edit (#24): scored again from the corrected masks and the kept probabilities.
    from model.review import review_flags

    probabilities = state.edits.probabilities
    assert probabilities is not None and probabilities.dtype == np.float16 and probabilities.shape == masks.shape
    reviewed = frozenset((2, organ) for organ in changed)
    assert new_state.edits.flags == tuple(review_flags(masks, state.scan.spacing_mm, probabilities,
                                                       state.scan.slice_numbers, reviewed=reviewed))
    assert not any(f.slice_index == 2 and f.organ in changed for f in new_state.edits.flags)
    assert not [r for r in caplog.records if r.name.startswith("uwmgi") and r.levelno >= logging.INFO]

    # Reset: the editor gets the model's own prediction of its slice back.
    reset, _ = scan_tab.reset_scan_editor(new_state, editor)
    np.testing.assert_array_equal(layers_to_masks(reset["layers"], (310, 360)), state.organ_masks[:, 2])


def test_edits_never_land_in_another_scan_and_bad_sizes_are_one_line(tiny_model, shared_data, tmp_path):
    files = kaggle_slices(shared_data, "volume_360x310")[60:64]
    upload = zip_files(files, tmp_path / "case9_day4.zip", folder="scans")
    old_state = _segment(upload)[9]
    value, old_editor = scan_tab.open_scan_editor(old_state, 2)
    value["layers"][SMALL][:10, :10] = (0, 154, 23, 255)
    new_state = _segment(upload)[9]  # the same files again: still a new scan
    with pytest.raises(gr.Error, match="opened on another scan"):
        scan_tab.apply_scan_edit(new_state, old_editor, value)
    _, editor = scan_tab.open_scan_editor(new_state, 2)
    half = {**value, "layers": [layer[::2, ::2] for layer in value["layers"]]}
    with pytest.raises(gr.Error, match="layer is 180×155 px; the slice is 360×310"):
        scan_tab.apply_scan_edit(new_state, editor, half)
    with pytest.raises(gr.Error, match="sent 0 layers"):
        scan_tab.apply_scan_edit(new_state, editor, {"background": None, "layers": [], "composite": None})
    with pytest.raises(gr.Error, match="No scan"):
        scan_tab.apply_scan_edit(None, editor, value)
    not_opened = "Open a slice of this scan in the editor first: Edit this slice"  # not "opened on another scan"
    with pytest.raises(server.Refusal, match=not_opened):
        scan_tab.reset_scan_editor(new_state, None)
    with pytest.raises(server.Refusal, match=not_opened):
        scan_tab.apply_scan_edit(new_state, None, value)
    assert not new_state.edits.edits
    unchanged, editor = scan_tab.open_scan_editor(new_state, 2)
    assert scan_tab.apply_scan_edit(new_state, editor, unchanged) == (gr.skip(),) * 11


def test_slice_tab_editor_writes_the_corrected_mask_png_and_table(tiny_model, shared_data):
    from PIL import Image

    from model.mask_png import decode_mask_png

    image = kaggle_slices(shared_data, "volume_360x310")[62]
    _, rows, _, _, state = slice_tab.segment(str(image))
    value, editor = slice_tab.open_slice_editor(state)
    assert value["background"].shape == (310, 360, 3)
    layers = [layer.copy() for layer in value["layers"]]
    layers[SMALL][:] = 0
    layers[SMALL][10:30, 20:60] = (0, 154, 23, 255)
    overlay, table, mask_png, new_state = slice_tab.apply_slice_edit(state, editor, {**value, "layers": layers})
    expected = state.organ_masks.copy()
    expected[SMALL] = False
    expected[SMALL, 10:30, 20:60] = True
    np.testing.assert_array_equal(new_state.organ_masks, expected)
    np.testing.assert_array_equal(decode_mask_png(np.asarray(Image.open(mask_png))), expected)
    assert table[SMALL][1:3] == ["yes", 800] and table[SMALL][3] == round(800 * 1.5 * 1.5 / 100, 2)
    np.testing.assert_array_equal(overlay[1][SMALL][0] > 0, expected[SMALL])

    # An editor opened on this slice never lands in the next one; bad sizes are one line.
    _, _, _, _, next_state = slice_tab.segment(str(image))
    with pytest.raises(gr.Error, match="opened on another slice"):
        slice_tab.apply_slice_edit(next_state, editor, {**value, "layers": layers})
    with pytest.raises(server.Refusal, match="Open the slice in the editor first: Edit this slice"):
        slice_tab.apply_slice_edit(next_state, None, {**value, "layers": layers})
    with pytest.raises(gr.Error, match="the slice is 360×310"):
        slice_tab.apply_slice_edit(new_state, editor, {**value, "layers": [layer[:300] for layer in layers]})
    with pytest.raises(gr.Error, match="No slice"):
        slice_tab.open_slice_editor(None)
