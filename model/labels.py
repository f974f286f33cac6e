"""The one place that names the organs, their label ids and their colours.

Label ids follow the blog's training notebook (``id2color``): 1 stomach,
2 small bowel, 3 large bowel, with 0 background for softmax heads. The Space's
original ``app.py`` listed the names in the opposite order
(``enumerate(("Large bowel", "Small bowel", "Stomach"), 1)``) and so showed
stomach and large bowel swapped; we take the order the weights were trained
with, not the order the old UI printed.

Multi-label (sigmoid) heads have one channel per organ in the same order,
without a background channel: channel 0 stomach, 1 small bowel, 2 large bowel.
"""

from __future__ import annotations

from collections.abc import Mapping

BACKGROUND = "background"

#: Organ keys in label-id order (softmax id = index + 1; sigmoid channel = index).
ORGANS: tuple[str, ...] = ("stomach", "small_bowel", "large_bowel")

#: Human-readable names shown in the UI legend, tables and exports.
DISPLAY_NAMES: dict[str, str] = {
    "stomach": "Stomach",
    "small_bowel": "Small bowel",
    "large_bowel": "Large bowel",
}

#: Overlay colours, as in the blog.
COLOURS: dict[str, str] = {
    "stomach": "#007fff",
    "small_bowel": "#009a17",
    "large_bowel": "#ff0000",
}

#: Colour of the bowel bag (a planning structure, not an organ): the two bowels' colours mixed.
BOWEL_BAG_COLOUR = "#ff9a00"

#: Softmax label id of each organ (0 is background).
ORGAN_IDS: dict[str, int] = {organ: i + 1 for i, organ in enumerate(ORGANS)}

#: Class names used in the Kaggle ``train.csv`` ``class`` column.
KAGGLE_CLASSES: dict[str, str] = {organ: organ for organ in ORGANS}


def organs_named(display_names) -> list[str]:
    """The organ keys whose :data:`DISPLAY_NAMES` are in ``display_names`` (``None``: none), in :data:`ORGANS` order."""
    shown = set(display_names or [])
    return [o for o in ORGANS if DISPLAY_NAMES[o] in shown]


def id2label(multi_label: bool) -> dict[int, str]:
    """The ``id2label`` a contract checkpoint's config carries.

    Softmax heads include ``background`` at id 0; multi-label heads do not.
    """
    if multi_label:
        return dict(enumerate(ORGANS))
    return {0: BACKGROUND, **{ORGAN_IDS[o]: o for o in ORGANS}}


def label2id(id2label: Mapping[int, str]) -> dict[str, int]:
    """Invert an ``id2label`` mapping (``SegformerConfig``'s ``label2id``): name → id."""
    return {name: i for i, name in id2label.items()}


def hex_rgb(colour: str) -> tuple[int, int, int]:
    """A ``#rrggbb`` colour as an ``(r, g, b)`` tuple of 0..255 ints."""
    h = colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def rgb(organ: str) -> tuple[int, int, int]:
    """An organ's colour as an ``(r, g, b)`` tuple of 0..255 ints."""
    return hex_rgb(COLOURS[organ])
