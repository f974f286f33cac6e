"""AnnotatedImage values (ui/overlays.py): mask × opacity, one per visible organ or TP/FP/FN."""

from __future__ import annotations

import numpy as np
import pytest

from ui.overlays import CONFUSION_COLOURS, confusion_annotations, organ_annotations, uncertainty_annotation


def test_organ_annotations_list_every_visible_organ_at_the_opacity():
    masks = np.zeros((3, 10, 10), dtype=bool)
    masks[1, :4, :5] = True
    ann = organ_annotations(masks, opacity=0.25, visible=["small_bowel", "large_bowel"])
    assert [name for _, name in ann] == ["Small bowel", "Large bowel"]  # the empty one too, for the legend
    assert ann[0][0].max() == pytest.approx(0.25) and ann[0][0].dtype == np.float32
    np.testing.assert_array_equal(ann[0][0] > 0, masks[1])
    assert organ_annotations(masks, opacity=3.0)[1][0].max() == 1.0  # clipped


def test_confusion_and_uncertainty_annotations():
    pred = np.zeros((3, 4, 4), dtype=bool)
    truth = np.zeros((3, 4, 4), dtype=bool)
    pred[0, 0, :2] = True
    truth[0, 0, 1:3] = True
    ann = confusion_annotations(pred, truth, opacity=0.5)
    assert [name for _, name in ann] == list(CONFUSION_COLOURS)
    assert np.argwhere(ann[0][0] == 0.5).tolist() == [[0, 1]] and np.argwhere(ann[1][0] == 0.5).tolist() == [[0, 0]]
    layer, name = uncertainty_annotation(np.full((2, 2), 0.8, np.float32), opacity=0.5)
    assert name.startswith("Uncertain") and layer.max() == pytest.approx(0.4)
