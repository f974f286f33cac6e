"""The correction editor's value ⇄ masks (ui/editor.py): the layer decides the organ, alpha the pixel, the grid is kept;
and the page head that names the layers."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from model import labels
from ui import editor
from ui.editor import FRAME_ALPHA, MASK_ALPHA, MIN_ALPHA, EditError, editor_value, layers_to_masks

STOMACH, SMALL, LARGE = range(3)


def test_editor_layers_round_trip_at_the_slices_own_grid(kaggle_scan):
    scan, masks = kaggle_scan
    value = editor_value(scan.display_slice(3), masks[:, 3])
    assert value["background"].shape == (310, 360, 3)
    assert [layer.shape for layer in value["layers"]] == [(310, 360, 4)] * 3
    # Each layer holds its organ in the organ's colour, half see-through, (all but) transparent elsewhere.
    stomach = value["layers"][STOMACH]
    assert tuple(stomach[masks[STOMACH, 3]][0]) == (*labels.rgb("stomach"), MASK_ALPHA)
    assert (stomach[~masks[STOMACH, 3], 3] == FRAME_ALPHA).all()
    np.testing.assert_array_equal(layers_to_masks(value["layers"], (310, 360)), masks[:, 3])


def test_the_layer_decides_the_organ_and_alpha_decides_the_pixel():
    layers = [np.zeros((4, 5, 4), dtype=np.uint8) for _ in range(3)]
    layers[STOMACH][..., 3] = FRAME_ALPHA  # the frame: not an organ pixel
    layers[SMALL][1, 2] = (255, 255, 0, 255)  # painted in a foreign colour: still small bowel
    layers[SMALL][2, 2] = (0, 154, 23, MIN_ALPHA - 1)  # an anti-aliased stroke edge: not enough
    layers[LARGE][3, 4] = (0, 0, 0, MIN_ALPHA)
    found = layers_to_masks(layers, (4, 5))
    expected = np.zeros((3, 4, 5), dtype=bool)
    expected[SMALL, 1, 2] = expected[LARGE, 3, 4] = True
    np.testing.assert_array_equal(found, expected)


@pytest.mark.parametrize("layers, message", [
    ([np.zeros((360, 310, 4), np.uint8)] * 3, "layer is 310×360 px; the slice is 360×310"),  # transposed
    ([np.zeros((155, 180, 4), np.uint8)] * 3, "layer is 180×155 px; the slice is 360×310"),  # the displayed size
    ([np.zeros((310, 360, 4), np.uint8)] * 2, "The editor sent 2 layers; it needs one per organ (3)"),
    ([], "The editor sent 0 layers"),
])
def test_layers_off_the_slices_grid_are_refused(layers, message):
    with pytest.raises(EditError, match=message.replace("(", r"\(").replace(")", r"\)")):
        layers_to_masks(layers, (310, 360))


def test_layers_the_editor_shifted_are_refused(kaggle_scan):
    """After a larger image, Gradio draws smaller layers centred in the old canvas: a transparent band."""
    scan, masks = kaggle_scan
    value = editor_value(scan.display_slice(3), masks[:, 3])
    for dy, dx in ((5, 10), (0, 3), (2, 0)):
        shifted = [np.zeros_like(layer) for layer in value["layers"]]
        for layer, sent in zip(shifted, value["layers"]):
            layer[dy:, dx:] = sent[:310 - dy, :360 - dx]
        with pytest.raises(EditError, match="shifted the layers off the slice"):
            layers_to_masks(shifted, (310, 360))
    # Erasing a whole edge in one layer is an edit, not a shift.
    value["layers"][STOMACH][:, 0] = 0
    value["layers"][STOMACH][0, :] = 0
    assert not layers_to_masks(value["layers"], (310, 360))[STOMACH, :, 0].any()


def test_the_page_head_names_the_layers_from_the_one_list_of_organs():
    head = editor.editor_head()
    organs = json.loads(re.search(r"const ORGANS = (\[.*?\]);", head).group(1))
    assert organs == [{"name": labels.DISPLAY_NAMES[o], "colour": labels.COLOURS[o]} for o in labels.ORGANS]
    assert "__ORGANS__" not in head and head.count("<script>") == 1 and head.rstrip().endswith("</script>")
    assert "button[aria-label='Color'] { display: none; }" in head
