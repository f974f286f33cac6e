"""The memory bound on the scans the Scan tab keeps for its sessions (ui/kept.py)."""

from __future__ import annotations

import gc
import weakref

import gradio as gr
import numpy as np
import pytest

from scan_fixtures import kaggle_slices
from ui import clicks, scan_tab
from ui.kept import RELEASED, KeptScans, array_bytes


class Holder:
    def __init__(self):
        self.released = False

    def release(self):
        self.released = True


def test_the_scans_used_longest_ago_are_released_over_the_budget():
    kept = KeptScans(budget_bytes=250, grace_s=0)
    a, b, c, d = Holder(), Holder(), Holder(), Holder()
    kept.keep("a", a, 100)
    kept.keep("b", b, 100)
    assert kept.total_bytes() == 200 and not a.released
    kept.keep("c", c, 100)  # 300 > 250: the oldest goes
    assert a.released and not b.released and "a" not in kept
    kept.touch("b")  # b used again: c is now the oldest
    kept.keep("d", d, 100)
    assert c.released and not b.released and not d.released
    # An undo point of b goes with b; one of a scan no longer kept is released at once.
    undo, late = Holder(), Holder()
    kept.attach("b", undo)
    kept.attach("a", late)
    assert late.released and not undo.released
    huge = Holder()
    kept.keep("huge", huge, 10_000)  # alone over the budget: the scan just made is always kept
    assert not huge.released and b.released and undo.released and d.released


def test_a_session_gradio_forgot_costs_nothing():
    kept = KeptScans(budget_bytes=250, grace_s=0)
    kept.keep("gone", Holder(), 200)  # nobody holds it any more
    gc.collect()
    assert kept.total_bytes() == 0
    survivor = Holder()
    kept.keep("new", survivor, 200)
    assert not survivor.released


def test_a_scan_in_use_is_not_released_during_its_grace_time():
    """A request that is still working on its scan (used within the grace time) keeps it, over the budget."""
    kept = KeptScans(budget_bytes=150, grace_s=60)
    working, new = Holder(), Holder()
    kept.keep("working", working, 100)
    kept.keep("new", new, 100)
    assert not working.released and kept.total_bytes() == 200  # over the budget, for the grace time
    kept.grace_s = 0  # ... and once it is past
    kept.keep("newer", Holder(), 10)
    assert working.released and not new.released


def test_array_bytes_counts_each_array_once():
    class Box:
        def __init__(self, *arrays):
            self.arrays, self.first = arrays, arrays[0]

    a, b = np.zeros(10, np.uint8), np.zeros(5, np.float32)
    box = Box(a, b)
    assert array_bytes(box, a, None) == 10  # a is box.first: counted once; tuples are not looked into


def _segment(files):
    *_, out = scan_tab.segment_scan_files([str(f) for f in files])
    return out[-2]  # the state


def test_a_released_scan_says_so_and_frees_its_memory(tiny_model, shared_data, monkeypatch):
    """Two sessions' scans where the budget holds one: the older is released, its next action says so in one
    line, its overlays go blank, and its arrays are freed; the newer one works on."""
    files = kaggle_slices(shared_data, "volume_234x234", count=6)
    monkeypatch.setattr(scan_tab, "KEPT", KeptScans(budget_bytes=1, grace_s=0))
    first = _segment(files[:3])
    masks = weakref.ref(first.edits.organ_masks)
    second = _segment(files[3:])
    assert first.released and not first and not second.released
    gc.collect()
    assert masks() is None, "the released scan's masks are still in memory"
    for action in (lambda: scan_tab.open_scan_editor(first, 1),
                   lambda: clicks.apply_scan_clicks(first, None, 1),
                   lambda: clicks.scan_click(first, None, 1, "Stomach", clicks.ADD, 0.5,
                                             gr.SelectData(None, {"index": [10, 10], "value": None}))):
        with pytest.raises(gr.Error, match="This scan was released to keep the server's memory bounded"):
            action()
    assert scan_tab.render_scan(first, 1) == (None, None)
    assert scan_tab.render_scan(second, 1)[0] is not None
    scan_tab.open_scan_editor(second, 1)
    assert RELEASED.endswith("segment it again.")


def test_an_undo_point_counts_its_own_masks_while_it_lives():
    """An undo point holds the masks from before the last edit besides the scan's arrays: they count
    towards the budget while it lives, and not after it is dropped."""
    kept = KeptScans(budget_bytes=250, grace_s=0)
    scan = Holder()
    kept.keep("a", scan, 100)
    undo = Holder()
    kept.attach("a", undo, 120)
    assert kept.total_bytes() == 220
    kept.keep("a", scan, 100)  # the scan edited again: its undo point still lives, still counts
    assert kept.total_bytes() == 220
    other = Holder()
    kept.keep("b", other, 100)  # 320 > 250 only with the undo's masks: a goes
    assert scan.released and undo.released and not other.released
    third = Holder()
    kept.keep("c", third, 100)
    undo_c = Holder()
    kept.attach("c", undo_c, 120)
    del undo_c
    gc.collect()
    assert kept.total_bytes() == 200 and not third.released  # the dropped undo point costs nothing
