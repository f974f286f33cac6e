"""Click correction on the Scan and Slice tabs (ui/clicks.py), called as Gradio calls the handlers.

Known answers from real labels: nine slices of case139_day0 (a real 234×234 volume with the
competition's truth) where the "model" is the truth with the stomach taken out of the middle five
slices and a large-bowel blob invented on one, and probabilities that follow those masks. A click,
a propagation and a fill between must bring the real stomach back, and the downloads must change
on exactly the slices and organ they touched.
"""

from __future__ import annotations

import csv
import shutil

import gradio as gr
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from model.checkpoint import CheckpointError
from model.edits import ScanEdits
from model.exports import SegmentedScan, write_outputs
from model.measure import measure
from model.metric import dice
from model.rle import RleCsv
from model.scans import load_scan
from scan_fixtures import kaggle_slices
from ui import clicks, slice_tab
from ui.scan_tab import ScanState

STOMACH, SMALL, LARGE = range(3)
MISSED = range(2, 7)  # the slices the "model" missed the stomach on
BLOB_SLICE, BLOB_CENTRE, BLOB_RADIUS = 0, (60, 60), 10


def select(x: int, y: int) -> gr.SelectData:
    """A click on the click image at its pixel ``(x, y)``, as the browser sends it."""
    return gr.SelectData(None, {"index": [x, y], "value": None, "selected": True})


def at(row: int, col: int, shape=(234, 234)) -> gr.SelectData:
    """A click on slice pixel ``(row, col)`` (the middle of its zoomed pixel)."""
    zoom = clicks.zoom_for(shape)
    return select(col * zoom + zoom // 2, row * zoom + zoom // 2)


def deepest(mask: np.ndarray) -> tuple[int, int]:
    """The pixel farthest inside ``mask`` ``(H, W) bool``."""
    distance = ndimage.distance_transform_edt(mask)
    row, col = np.unravel_index(int(np.argmax(distance)), mask.shape)
    return int(row), int(col)


@pytest.fixture(autouse=True, params=["shipped", "training-free"])
def corrector(request, monkeypatch):
    """Each test runs with both correctors the page can use, whatever ``CLICK_REFINER`` says on this machine:
    the click refiner the app ships (its default) and the training-free one (``--click-refiner none``).
    A test that wants another refiner configures it."""
    from model.serving import NO_REFINER
    from ui import server

    monkeypatch.delenv("CLICK_REFINER", raising=False)
    server.MODEL.configure_click_refiner(None if request.param == "shipped" else NO_REFINER)
    assert (server.MODEL.click_refiner() is None) == (request.param == "training-free")
    yield request.param
    server.MODEL.configure_click_refiner(None)


@pytest.fixture()
def labelled(shared_data, tmp_path):
    """``(ScanState, truth (O, D, H, W) bool, downloads)``: nine real slices with a stomach on each, the model's masks
    as described above, the downloads written; the truth's rows from the competition's train.csv."""
    files = kaggle_slices(shared_data, "volume_234x234")
    rle = RleCsv(shared_data / "kaggle" / "train.csv.gz", case_days=["case139_day0"])
    full = load_scan(files)
    truth = rle.masks_on("case139_day0", full.slice_numbers, full.shape[1:]).masks
    areas = truth[STOMACH].sum(axis=(1, 2))
    start = max(range(len(full) - 9), key=lambda d: areas[d:d + 9].min())  # the stomach's largest run
    assert areas[start:start + 9].min() > 300
    folder = tmp_path / "case139_day0" / "scans"
    folder.mkdir(parents=True)
    scan = load_scan([shutil.copy(f, folder) for f in files[start:start + 9]])
    truth = truth[:, start:start + 9]
    masks = truth.copy()
    masks[STOMACH, MISSED.start:MISSED.stop] = False
    rr, cc = np.ogrid[:234, :234]
    blob = (rr - BLOB_CENTRE[0]) ** 2 + (cc - BLOB_CENTRE[1]) ** 2 <= BLOB_RADIUS ** 2
    assert not (blob & truth[:, BLOB_SLICE].any(axis=0)).any()
    masks[LARGE, BLOB_SLICE] |= blob
    probabilities = (masks * 0.9 + 0.05).astype(np.float16)
    out = tmp_path / "segmented"
    result = SegmentedScan(scan, masks, write_outputs(masks, scan, out, probabilities=probabilities),
                           measure(masks, scan), probabilities)
    return ScanState(ScanEdits.of(result)), truth, [str(f) for f in result.outputs.files()]


def labels_nifti(downloads) -> np.ndarray:
    """``(D, H, W)`` label ids of the label NIfTI among the Scan tab's downloads (its outputs' 8th)."""
    path = next(p for p in downloads if p.endswith("_labels.nii.gz"))
    return np.asarray(nib.load(path).dataobj).transpose(2, 1, 0)


def test_a_positive_click_brings_the_missed_stomach_back_and_only_that_slice_and_organ_change(labelled, tiny_model):
    state, truth, downloads = labelled
    before = labels_nifti(downloads)
    d = 4
    row, col = deepest(truth[STOMACH, d])
    image, session, note = clicks.scan_click(state, None, d + 1, "Stomach", clicks.ADD, 0.5, at(row, col))
    assert image.shape == (234 * 4, 234 * 4, 3) and session.clicks == ((STOMACH, row, col, True),)
    assert "1 click on slice 5, not applied yet" in note
    pending = clicks.replay(state.scan.voxels[d], state.edits.probabilities[:, d], state.organ_masks[:, d],
                            session.clicks)
    assert pending[STOMACH, row, col] and dice(pending[STOMACH], truth[STOMACH, d]) > 0.6
    assert np.array_equal(pending[SMALL:], state.organ_masks[SMALL:, d])
    # The image shows the pending mask: the clicked pixel is drawn in the stomach's colour now.
    assert not np.array_equal(image, clicks.click_image(state.scan.display_slice(d), state.organ_masks[:, d]))

    out = clicks.apply_scan_clicks(state, session, d + 1, 0.5)
    new_state, review = out[9], out[10]
    after = labels_nifti(out[7])
    changed = after != before
    assert set(np.flatnonzero(changed.any(axis=(1, 2)))) == {d}
    assert set(np.unique(after[changed])) == {1} and np.array_equal(changed[d], pending[STOMACH] & (before[d] == 0))
    log = next(p for p in out[7] if p.endswith("_edits.csv"))
    rows = list(csv.DictReader(open(log)))
    assert [(r["slice_index"], r["organ"], r["tool"], r["clicks"]) for r in rows] == [
        (str(d), "stomach", "click", f"+{row}:{col}")]
    assert [d + 1, "Stomach", "edited"] == review[[r[0] for r in review].index(d + 1)][:3]
    assert "Applied: 1 click(s) on slice 5 (Stomach)." in out[-1]
    assert [what for _, what in out[-2].undo] == ["1 click(s) on slice 5 (Stomach)."]

    # Undo takes the applied clicks back: the masks and the label NIfTI are the model's again.
    undone = clicks.undo_scan_click(new_state, out[-2], d + 1, 0.5)
    assert np.array_equal(undone[9].organ_masks, state.organ_masks) and not undone[9].edits.edits
    assert np.array_equal(labels_nifti(undone[7]), before) and "Undone" in undone[-1]


def test_a_negative_click_at_an_invented_component_removes_all_of_it(labelled, tiny_model):
    state, truth, _ = labelled
    image, session, _ = clicks.scan_click(state, None, BLOB_SLICE + 1, "Large bowel", clicks.REMOVE, 0.5,
                                          at(*BLOB_CENTRE))
    masks = clicks.replay(state.scan.voxels[BLOB_SLICE], state.edits.probabilities[:, BLOB_SLICE],
                          state.organ_masks[:, BLOB_SLICE], session.clicks)
    blob = state.organ_masks[LARGE, BLOB_SLICE] & ~truth[LARGE, BLOB_SLICE]
    assert not masks[LARGE][blob].any(), "the whole invented piece goes"
    assert not (masks[LARGE] & ~state.organ_masks[LARGE, BLOB_SLICE]).any(), "a removal adds nothing"
    assert np.array_equal(masks[LARGE], truth[LARGE, BLOB_SLICE]), "and nothing else"


def test_a_configured_click_refiner_decides_the_page_clicks(labelled, tiny_model, tmp_path):
    """``--click-refiner DIR``: the Scan tab's clicks go through the refiner saved there (here one that answers
    "organ" on its whole window, so its hand is unmistakable), and Apply writes what it drew."""
    import torch

    from model.engines import click_refiner
    from ui import server

    net = click_refiner.ClickRefiner((4, 8))
    torch.nn.init.zeros_(net.head.weight)
    torch.nn.init.constant_(net.head.bias, 100.0)
    server.MODEL.configure_click_refiner(click_refiner.save(net, tmp_path / "refiner"))
    state, truth, downloads = labelled
    d, (row, col) = 4, (120, 110)
    _, session, _ = clicks.scan_click(state, None, d + 1, "Stomach", clicks.ADD, 0.5, at(row, col))
    out = clicks.apply_scan_clicks(state, session, d + 1, 0.5)
    window = np.zeros((234, 234), bool)
    half = click_refiner.WINDOW // 2
    window[row - half:row + half, col - half:col + half] = True
    assert np.array_equal(out[9].organ_masks[STOMACH, d], state.organ_masks[STOMACH, d] | window)
    assert np.array_equal(out[9].organ_masks[SMALL:], state.organ_masks[SMALL:])
    server.MODEL.configure_click_refiner(tmp_path)  # a folder without one: one line, at load and at a click
    with pytest.raises(CheckpointError, match="holds no click refiner"):
        server.MODEL.click_refiner()
    with pytest.raises(gr.Error, match="Click correction is not available: .* holds no click refiner"):
        clicks.scan_click(state, None, d + 1, "Stomach", clicks.ADD, 0.5, at(row, col))


def test_undo_takes_back_the_last_pending_click_and_the_image_with_it(labelled, tiny_model):
    state, truth, _ = labelled
    d = 3
    first = clicks.scan_click_view(state, None, d + 1, 0.5)[0]
    _, one, _ = clicks.scan_click(state, None, d + 1, "Stomach", clicks.ADD, 0.5, at(*deepest(truth[STOMACH, d])))
    _, two, _ = clicks.scan_click(state, one, d + 1, "Small bowel", clicks.ADD, 0.5, at(5, 5))
    assert len(two.clicks) == 2
    out = clicks.undo_scan_click(state, two, d + 1, 0.5)
    assert out[-2].clicks == one.clicks and not np.array_equal(out[-3], first)
    out = clicks.undo_scan_click(state, out[-2], d + 1, 0.5)
    assert out[-2].clicks == () and np.array_equal(out[-3], first)
    with pytest.raises(gr.Error, match="Nothing to undo"):
        clicks.undo_scan_click(state, out[-2], d + 1, 0.5)


def test_propagate_carries_a_corrected_slice_to_its_neighbours_and_undo_drops_the_proposal(labelled, tiny_model):
    state, truth, _ = labelled
    d = 4
    with pytest.raises(gr.Error, match="Nothing to propagate: the stomach on slice 5 has not been corrected"):
        clicks.propagate_scan(state, None, d + 1, "Stomach")
    # The person fixes slice 5 (here: the true stomach, as the editor would write it), then propagates.
    fixed = state.organ_masks[:, d].copy()
    fixed[STOMACH] = truth[STOMACH, d]
    edits, result = state.edits.apply(d, fixed, tiny_model.scratch_dir())
    corrected = ScanState(edits, None, state.token)
    out = clicks.propagate_scan(corrected, None, d + 1, "Stomach")
    masks = out[9].organ_masks
    changed = {int(i) for i in np.flatnonzero((masks != corrected.organ_masks).any(axis=(0, 2, 3)))}
    assert {d - 1, d + 1} <= changed <= set(MISSED) - {d}, "the missed neighbours, and nothing past them"
    for n in (d - 1, d + 1):
        assert dice(masks[STOMACH, n], truth[STOMACH, n]) > 0.7
    assert np.array_equal(masks[SMALL:], corrected.organ_masks[SMALL:]) and np.array_equal(masks[:, d], fixed)
    assert "Stomach propagated from slice 5 to slices" in out[-1]
    log = {r["tool"] for r in csv.DictReader(open(next(p for p in out[7] if p.endswith("_edits.csv"))))}
    assert log == {"brush", "propagate"}
    undone = clicks.undo_scan_click(out[9], out[-2], d + 1, 0.5)
    assert np.array_equal(undone[9].organ_masks, corrected.organ_masks)


def test_propagate_leaves_a_slice_the_person_corrected_by_hand(labelled, tiny_model):
    state, truth, _ = labelled
    d = 4
    edits = state.edits
    for n in (d + 1, d):  # slice 6 corrected first (their way: a smaller stomach), then slice 5
        fixed = edits.organ_masks[:, n].copy()
        fixed[STOMACH] = truth[STOMACH, n] if n == d else ndimage.binary_erosion(truth[STOMACH, n], iterations=3)
        edits, _ = edits.apply(n, fixed, tiny_model.scratch_dir())
    corrected = ScanState(edits, None, state.token)
    masks = clicks.propagate_scan(corrected, None, d + 1, "Stomach")[9].organ_masks
    assert np.array_equal(masks[STOMACH, d + 1], corrected.organ_masks[STOMACH, d + 1])
    for n in (d - 1, d + 2):  # carried below, and above past the slice corrected by hand
        assert dice(masks[STOMACH, n], truth[STOMACH, n]) > 0.7


def test_pending_clicks_are_applied_before_a_propagation(labelled, tiny_model):
    state, truth, _ = labelled
    d = 4
    _, session, _ = clicks.scan_click(state, None, d + 1, "Stomach", clicks.ADD, 0.5, at(*deepest(truth[STOMACH, d])))
    out = clicks.propagate_scan(state, session, d + 1, "Stomach")
    tools = [r["tool"] for r in csv.DictReader(open(next(p for p in out[7] if p.endswith("_edits.csv"))))]
    assert tools[0] == "click" and "propagate" in tools
    assert len(out[-2].undo) == 1  # one Undo goes back before both, and the notes say both
    assert out[-1].startswith("Applied: 1 click(s) on slice 5 (Stomach), then stomach propagated from slice 5 to ")
    undone = clicks.undo_scan_click(out[9], out[-2], d + 1, 0.5)
    assert np.array_equal(undone[9].organ_masks, state.organ_masks)
    assert undone[-1].startswith("Undone: 1 click(s) on slice 5 (Stomach), then stomach propagated from slice 5 to ")


def test_a_new_scan_starts_with_a_click_note_of_its_own(labelled, tiny_model):
    state, truth, _ = labelled
    _, session, note = clicks.scan_click(state, None, 5, "Stomach", clicks.ADD, 0.5, at(*deepest(truth[STOMACH, 4])))
    assert note.startswith("1 click on slice 5, not applied yet")
    assert clicks.scan_click_start(state, session, 5)[1:] == (session, note)  # the same scan: as it was
    image, kept, note = clicks.scan_click_start(ScanState(state.edits, None), session, 5)  # segmented again
    assert image.shape == (936, 936, 3) and kept.token != session.token and not kept.clicks and note == ""


def test_fill_between_interpolates_the_slices_between_two_corrected_ones(labelled, tiny_model):
    state, truth, _ = labelled
    with pytest.raises(gr.Error, match="Fill between needs the stomach corrected on two slices; it is on 0"):
        clicks.fill_between_scan(state, None, 3, "Stomach")
    edits = state.edits
    for d in (MISSED.start - 1, MISSED.stop):  # the slices either side of the gap, corrected as they are
        fixed = edits.organ_masks[:, d].copy()
        fixed[STOMACH] = ndimage.binary_erosion(truth[STOMACH, d], iterations=1)
        edits, _ = edits.apply(d, fixed, tiny_model.scratch_dir())
        if d == MISSED.start - 1:
            with pytest.raises(gr.Error, match=r"it is on 1 \(2\)"):
                clicks.fill_between_scan(ScanState(edits, None, state.token), None, 3, "Stomach")
    corrected = ScanState(edits, None, state.token)
    out = clicks.fill_between_scan(corrected, None, 3, "Stomach")
    masks = out[9].organ_masks
    changed = {int(i) for i in np.flatnonzero((masks != corrected.organ_masks).any(axis=(0, 2, 3)))}
    assert changed == set(MISSED)
    assert np.mean([dice(masks[STOMACH, d], truth[STOMACH, d]) for d in MISSED]) > 0.7
    assert "Stomach filled on slices 3–7 between the corrected slices 2, 8." in out[-1]


def _corrected(state, truth, slices, tmp, empty=False):
    """``state`` with the stomach of ``slices`` (0-based) set by hand to its truth eroded by a pixel (or removed)."""
    edits = state.edits
    for d in slices:
        fixed = edits.organ_masks[:, d].copy()
        fixed[STOMACH] = False if empty else ndimage.binary_erosion(truth[STOMACH, d], iterations=1)
        edits, _ = edits.apply(d, fixed, tmp)
    return ScanState(edits, None, state.token)


def _stomach_changed(out, state) -> list[int]:
    return [int(d) for d in np.flatnonzero((out[9].organ_masks != state.organ_masks)[STOMACH].any(axis=(1, 2)))]


def test_fill_between_fills_only_around_the_slider_and_never_makes_an_undone_fill_again(labelled, tiny_model):
    state, truth, _ = labelled
    corrected = _corrected(state, truth, (1, 4, 7), tiny_model.scratch_dir())  # slices 2, 5 and 8 on the slider
    between = clicks.fill_between_scan(corrected, None, 3, "Stomach")  # slider on 3: between 2 and 5
    assert _stomach_changed(between, corrected) == [2, 3]
    assert "Stomach filled on slices 3–4 between the corrected slices 2, 5." in between[-1]
    undone = clicks.undo_scan_click(between[9], between[-2], 3, 0.5)
    assert np.array_equal(undone[9].organ_masks, corrected.organ_masks)
    again = clicks.fill_between_scan(undone[9], undone[-2], 7, "Stomach")  # slider on 7: between 5 and 8
    assert _stomach_changed(again, corrected) == [5, 6]  # the fill undone on 3–4 is not made again
    both = clicks.fill_between_scan(corrected, None, 5, "Stomach")  # on a corrected slice: both sides of it
    assert _stomach_changed(both, corrected) == [2, 3, 5, 6]
    assert "between the corrected slices 2, 5, 8." in both[-1]
    with pytest.raises(gr.Error, match=r"Slice 9 is not between two slices where the stomach was corrected and shows "
                                       r"\(2, 5, 8\); move the slider"):
        clicks.fill_between_scan(corrected, None, 9, "Stomach")
    with pytest.raises(gr.Error, match=r"No slice lies between slice 2 and the corrected slices next to it"):
        clicks.fill_between_scan(_corrected(state, truth, (1, 2), tiny_model.scratch_dir()), None, 2, "Stomach")


def test_fill_between_says_when_the_corrected_slices_no_longer_show_the_organ(labelled, tiny_model):
    state, truth, _ = labelled
    removed = _corrected(state, truth, (0, 8), tiny_model.scratch_dir(), empty=True)  # corrected, to no stomach
    with pytest.raises(gr.Error, match="Fill between interpolates the stomach between two corrected slices that show "
                                       "it: it was corrected on 1, 9, and shows on none of them."):
        clicks.fill_between_scan(removed, None, 5, "Stomach")


def test_bad_clicks_get_one_line_and_change_nothing(labelled, tiny_model, shared_data, tmp_path):
    state, _, _ = labelled
    masks = state.organ_masks.copy()
    zoom = clicks.zoom_for((234, 234))
    for evt in (select(234 * zoom, 5), select(5, 234 * zoom + 3), select(-1, 4), gr.SelectData(None, {"index": None, "value": None})):
        with pytest.raises(gr.Error, match="outside the slice"):
            clicks.scan_click(state, None, 1, "Stomach", clicks.ADD, 0.5, evt)
    with pytest.raises(gr.Error, match="outside the slice"):  # no event data: a request the browser never sends
        clicks.scan_click(state, None, 1, "Stomach", clicks.ADD, 0.5)
    with pytest.raises(gr.Error, match="No scan: segment a scan first"):
        clicks.scan_click(None, None, 1, "Stomach", clicks.ADD, 0.5, at(5, 5))
    with pytest.raises(gr.Error, match="No clicks to apply on this slice"):
        clicks.apply_scan_clicks(state, None, 1)
    # A click on a scan that was replaced: the click state belongs to another scan.
    _, session, _ = clicks.scan_click(state, None, 1, "Stomach", clicks.ADD, 0.5, at(100, 100))
    replaced = ScanState(state.edits, None)
    with pytest.raises(gr.Error, match="scan that has been replaced"):
        clicks.scan_click(replaced, session, 1, "Stomach", clicks.ADD, 0.5, at(100, 100))
    with pytest.raises(gr.Error, match="Nothing to propagate"):
        clicks.propagate_scan(state, None, 1, "Large bowel")
    with pytest.raises(gr.Error, match="Pick one organ"):
        clicks.scan_click(state, None, 1, "Liver", clicks.ADD, 0.5, at(5, 5))
    assert np.array_equal(state.organ_masks, masks) and not state.edits.edits


def test_the_slice_tab_click_changes_the_mask_png_at_once_and_undo_restores_it(tiny_model, shared_data):
    from model.mask_png import decode_mask_png
    from PIL import Image

    image = kaggle_slices(shared_data, "volume_234x234")[70]
    overlay, table, mask_path, _, state = slice_tab.segment(str(image), None, 0.5)
    assert state.probabilities.shape == (3, 234, 234) and state.probabilities.dtype == np.float16
    shown = clicks.slice_click_view(state)
    assert shown.shape == (936, 936, 3)
    row, col = 117, 117
    organ = next(o for o in range(3) if not state.organ_masks[o, row, col])
    name = ["Stomach", "Small bowel", "Large bowel"][organ]
    out = clicks.slice_click(state, None, name, clicks.ADD, 0.5, None, False, at(row, col))
    new_overlay, new_table, new_path, new_state, session, new_image = out
    added = new_state.organ_masks & ~state.organ_masks
    assert added[organ, row, col] and not added[[o for o in range(3) if o != organ]].any()
    assert not (state.organ_masks & ~new_state.organ_masks).any()
    png = decode_mask_png(np.asarray(Image.open(new_path)))
    assert np.array_equal(png, new_state.organ_masks) and new_table != table
    # A redraw (the opacity moved) keeps the click's marker while the click stands; not on another slice's masks.
    assert np.array_equal(clicks.slice_click_view(new_state, session, 0.5), new_image)
    assert np.array_equal(clicks.slice_click_view(state, session, 0.5), shown)
    back = clicks.undo_slice_click(new_state, session, 0.5)
    assert np.array_equal(back[3].organ_masks, state.organ_masks)
    assert np.array_equal(decode_mask_png(np.asarray(Image.open(back[2]))), state.organ_masks)
    with pytest.raises(gr.Error, match="No click to undo"):
        clicks.undo_slice_click(back[3], back[4], 0.5)
    with pytest.raises(gr.Error, match="outside the slice"):
        clicks.slice_click(state, None, name, clicks.ADD, 0.5, None, False, select(5000, 5))
    with pytest.raises(gr.Error, match="outside the slice"):
        clicks.slice_click(state, None, name, clicks.ADD, 0.5, None, False)


def _painted(value: dict, organ: int, box: tuple[slice, slice]) -> dict:
    """The editor's ``value`` with a block of ``organ`` painted at ``box``, as the brush leaves its layer."""
    layers = [layer.copy() for layer in value["layers"]]
    layers[organ][box] = (255, 0, 0, 255)
    return {**value, "layers": layers}


def test_an_editor_opened_before_clicks_keeps_them_and_adds_only_its_strokes(labelled, tiny_model, monkeypatch):
    """The brush editor holds the slice as it was when opened. Clicks applied on that slice since (or a
    propagation onto it) must survive the editor's Apply: only the pixels the brush changed are written."""
    from ui import scan_tab

    state, truth, _ = labelled
    d, box = 4, (slice(200, 215), slice(20, 40))
    value, editor = scan_tab.open_scan_editor(state, d + 1)
    _, session, _ = clicks.scan_click(state, None, d + 1, "Stomach", clicks.ADD, 0.5, at(*deepest(truth[STOMACH, d])))
    clicked = clicks.apply_scan_clicks(state, session, d + 1, 0.5)[9]
    assert clicked.organ_masks[STOMACH, d].sum() > state.organ_masks[STOMACH, d].sum() + 100
    notes = []
    monkeypatch.setattr(gr, "Info", notes.append)
    out = scan_tab.apply_scan_edit(clicked, editor, _painted(value, SMALL, box))
    expected = clicked.organ_masks[:, d].copy()
    expected[SMALL][box] = True
    assert np.array_equal(out[9].organ_masks[:, d], expected), "the clicks' stomach stays, the stroke lands"
    assert np.array_equal(np.delete(out[9].organ_masks, d, axis=1), np.delete(clicked.organ_masks, d, axis=1))
    assert notes == ["Slice 5 had changed since it was opened in the editor (clicks, a propagation, a fill or an "
                     "undo): only the pixels you painted or erased were written over it."]
    # An editor left untouched changes nothing, whatever happened to its slice since it was opened.
    value, editor = scan_tab.open_scan_editor(state, d + 2)
    propagated = clicks.propagate_scan(clicked, clicks.ScanClicks(clicked.token), d + 1, "Stomach")[9]
    assert not np.array_equal(propagated.organ_masks[:, d + 1], state.organ_masks[:, d + 1])
    assert scan_tab.apply_scan_edit(propagated, editor, value) == (gr.skip(),) * 11
    assert notes[-1] == "Nothing changed on this slice."


def test_a_slice_tab_editor_opened_before_clicks_keeps_them(tiny_model, shared_data):
    image = kaggle_slices(shared_data, "volume_234x234")[70]
    *_, state = slice_tab.segment(str(image), None, 0.5)
    value, editor = slice_tab.open_slice_editor(state)
    row, col = 117, 117
    organ = next(o for o in range(3) if not state.organ_masks[o, row, col])
    name = ["Stomach", "Small bowel", "Large bowel"][organ]
    clicked = clicks.slice_click(state, None, name, clicks.ADD, 0.5, None, False, at(row, col))[3]
    other, box = (organ + 1) % 3, (slice(5, 15), slice(5, 25))
    new_state = slice_tab.apply_slice_edit(clicked, editor, _painted(value, other, box))[3]
    expected = clicked.organ_masks.copy()
    expected[other][box] = True
    assert np.array_equal(new_state.organ_masks, expected) and new_state.organ_masks[organ, row, col]


def test_undo_takes_back_a_brush_edit_then_the_clicks_before_it(labelled, tiny_model):
    """Apply clicks, then Apply a brush edit on another slice, then Undo: the brush edit goes, the clicks stay
    (before, Undo went back to before the clicks and silently took the brush edit with it); Undo again takes
    the clicks back too, exactly, downloads included."""
    from ui import scan_tab

    state, truth, downloads = labelled
    d, box = 4, (slice(200, 215), slice(20, 40))
    _, session, _ = clicks.scan_click(state, None, d + 1, "Stomach", clicks.ADD, 0.5, at(*deepest(truth[STOMACH, d])))
    out = clicks.apply_scan_clicks(state, session, d + 1, 0.5)
    clicked, session = out[9], out[-2]
    value, editor = scan_tab.open_scan_editor(clicked, 3)
    brushed = clicks.apply_scan_brush(clicked, session, editor, _painted(value, SMALL, box))
    assert brushed[9].organ_masks[SMALL, 2][box].all() and len(brushed[-2].undo) == 2
    assert brushed[-1] == "Applied: the brush edit on slice 3. **Undo** takes it back."
    assert brushed[1].value == 3 and brushed[-3].shape == (234 * 4, 234 * 4, 3)
    undone = clicks.undo_scan_click(brushed[9], brushed[-2], 3, 0.5)
    assert np.array_equal(undone[9].organ_masks, clicked.organ_masks), "back to the clicks, brush stroke gone"
    assert undone[-1] == ("Undone: the brush edit on slice 3. **Undo** again takes back 1 click(s) on slice 5 "
                          "(Stomach).")
    first = clicks.undo_scan_click(undone[9], undone[-2], 3, 0.5)
    assert np.array_equal(first[9].organ_masks, state.organ_masks) and not first[9].edits.edits
    assert first[9].edits.flags == state.edits.flags and first[-1] == "Undone: 1 click(s) on slice 5 (Stomach)."
    assert np.array_equal(labels_nifti(first[7]), labels_nifti(downloads))
    with pytest.raises(gr.Error, match="Nothing to undo"):
        clicks.undo_scan_click(first[9], first[-2], 3, 0.5)
    # An editor Apply that changes nothing leaves the click state (and its undo point) alone.
    value, editor = scan_tab.open_scan_editor(clicked, 3)
    assert clicks.apply_scan_brush(clicked, session, editor, value) == (gr.skip(),) * 14


def test_clicks_pending_on_another_slice_outlive_an_edit_that_left_it_and_only_that(labelled, tiny_model, monkeypatch):
    """Clicks wait on their slice until Apply. A propagation or brush edit elsewhere keeps them (before, any
    applied edit silently dropped them); one that changed their slice drops them, and says so."""
    from ui import scan_tab

    state, truth, _ = labelled
    warnings = []
    monkeypatch.setattr(gr, "Warning", warnings.append)
    d = 4
    fixed = state.organ_masks[:, d].copy()
    fixed[STOMACH] = truth[STOMACH, d]
    edits, _ = state.edits.apply(d, fixed, tiny_model.scratch_dir())
    corrected = ScanState(edits, None, state.token)
    _, far, _ = clicks.scan_click(corrected, None, 1, "Large bowel", clicks.ADD, 0.5, at(100, 100))
    _, near, _ = clicks.scan_click(corrected, None, d, "Stomach", clicks.ADD, 0.5, at(*deepest(truth[STOMACH, d - 1])))

    out = clicks.propagate_scan(corrected, far, d + 1, "Stomach")
    assert 0 not in {int(i) for i in np.flatnonzero((out[9].organ_masks != corrected.organ_masks).any(axis=(0, 2, 3)))}
    assert out[-2].clicks == far.clicks and len(out[-2].undo) == 1 and not warnings
    assert "Applied: Stomach propagated from slice 5" in out[-1] and "1 click on slice 1, not applied yet" in out[-1]
    assert clicks.apply_scan_clicks(out[9], out[-2], 1, 0.5)[9].organ_masks[LARGE, 0, 100, 100]

    out = clicks.propagate_scan(corrected, near, d + 1, "Stomach")  # slice 4 is one it changes
    assert out[-2].clicks == () and warnings == ["1 click not applied on slice 4 was dropped: the edit changed that "
                                                 "slice."]
    value, editor = scan_tab.open_scan_editor(corrected, 2)
    out = clicks.apply_scan_brush(corrected, far, editor, _painted(value, SMALL, (slice(5, 9), slice(5, 9))))
    assert out[-2].clicks == far.clicks and len(warnings) == 1


def test_undo_goes_back_edit_by_edit_up_to_its_limit(labelled, tiny_model, monkeypatch):
    from ui import scan_tab

    monkeypatch.setattr(clicks, "MAX_UNDO", 2)
    state, truth, _ = labelled
    d = 4
    _, session, _ = clicks.scan_click(state, None, d + 1, "Stomach", clicks.ADD, 0.5, at(*deepest(truth[STOMACH, d])))
    states = [state, clicks.apply_scan_clicks(state, session, d + 1, 0.5)]
    states.append(clicks.propagate_scan(states[1][9], states[1][-2], d + 1, "Stomach"))
    value, editor = scan_tab.open_scan_editor(states[2][9], 1)
    states.append(clicks.apply_scan_brush(states[2][9], states[2][-2], editor,
                                          _painted(value, SMALL, (slice(5, 9), slice(5, 9)))))
    assert [what.split(" ")[:2] for _, what in states[3][-2].undo] == [["Stomach", "propagated"], ["the", "brush"]]
    out = states[3]
    for back_to in (2, 1):
        out = clicks.undo_scan_click(out[9], out[-2], d + 1, 0.5)
        assert np.array_equal(out[9].organ_masks, states[back_to][9].organ_masks)
        assert out[9].edits.edits == states[back_to][9].edits.edits
    with pytest.raises(gr.Error, match="Undo goes back 2 at most"):
        clicks.undo_scan_click(out[9], out[-2], d + 1, 0.5)
