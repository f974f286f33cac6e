"""The correction editor's value ⇄ organ masks, for Gradio's ``ImageEditor``.

The editor shows a slice with one layer per organ, in :data:`model.labels.ORGANS` order, each
pre-filled with the organ's mask in its colour (:func:`editor_value`). What comes back is read by
the layer, never by the colour: a pixel belongs to the layer's organ when the layer is at least
half as opaque as the pre-filled mask there (:data:`MIN_ALPHA`), so the brush colour and
anti-aliased stroke edges do not matter and the eraser (alpha 0) removes. Layers must come back
at the slice's own pixel grid; any other size is refused (:class:`EditError`), never resampled.
Every other layer pixel is sent at alpha :data:`FRAME_ALPHA` (invisible): Gradio 6.31 places
layers loaded from Python in the largest canvas the editor has held, so after a larger slice (an
earlier scan) they come back shifted, with a transparent band along the top or left edge. Such
layers are refused too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from model import labels
from model.image import ImageError

#: Opacity of the pre-filled organ masks in the editor (0..255): the slice stays visible under them.
MASK_ALPHA = 160
#: A layer pixel is in its organ from this opacity on: half a pre-filled or painted pixel.
MIN_ALPHA = MASK_ALPHA // 2
#: The opacity of every other layer pixel: invisible, but a layer that comes back shifted shows it.
FRAME_ALPHA = 1
#: The brush colours: each organ's colour, painted as opaque as the pre-filled masks.
BRUSH_COLOURS = [(labels.COLOURS[o], round(MASK_ALPHA / 255, 2)) for o in labels.ORGANS]
#: The brush's and eraser's radius, image pixels: fine enough for a bowel wall.
BRUSH_PX = 6


def editor_head() -> str:
    """The page ``<head>``: the script (``ui/editor_layers.js``) that names each editor layer after its organ and paints
    in the active organ's colour (Gradio 6.31 names every layer it loads from Python "Layer 1"), and a style that
    hides the editors' colour picker (elem_ids ending in ``-editor``)."""
    organs = [{"name": labels.DISPLAY_NAMES[o], "colour": labels.COLOURS[o]} for o in labels.ORGANS]
    script = (Path(__file__).with_name("editor_layers.js").read_text(encoding="utf-8")
              .replace("__ORGANS__", json.dumps(organs)))
    # The colour follows the layer, so the colour picker (which would contradict it) is hidden.
    style = "[id$='-editor'] button[aria-label='Color'] { display: none; }"
    return f"<style>{style}</style>\n<script>\n{script}</script>"


class EditError(ImageError):
    """An edit that cannot be applied; ``str(err)`` is one line a person can act on."""


@dataclass(frozen=True)
class EditorState:
    """What the editor was opened on: the tab state's ``token``, on the Scan tab the slice (0-based), and the
    slice's masks ``(O, H, W) bool`` at that moment (``opened``), so that Apply writes only the brush's strokes."""

    token: str
    slice_index: int | None = None
    opened: np.ndarray | None = None


def strokes_over(current: np.ndarray, opened: np.ndarray | None, edited: np.ndarray) -> np.ndarray:
    """``(O, H, W) bool``: the editor's masks ``edited`` where they differ from the masks it was ``opened`` on (the
    brush's strokes, a Reset's reverted pixels), the slice's ``current`` masks elsewhere.

    The editor holds the slice as it was when opened; clicks, a propagation, a fill or an undo may have changed
    the slice since. Writing the editor's masks whole would silently take those changes back.
    """
    return edited if opened is None else np.where(edited != opened, edited, current)


def editor_value(display: np.ndarray, slice_masks: np.ndarray) -> dict:
    """The editor's value for one slice: ``display`` ``(H, W) uint8`` as the background, and one
    ``(H, W, 4) uint8`` RGBA layer per organ from ``slice_masks`` ``(O, H, W) bool``, its mask in
    the organ's colour at :data:`MASK_ALPHA`, and at :data:`FRAME_ALPHA` elsewhere."""
    background = np.repeat(np.asarray(display, dtype=np.uint8)[..., None], 3, axis=-1)
    layers = []
    for o, organ in enumerate(labels.ORGANS):
        layer = np.zeros((*display.shape, 4), dtype=np.uint8)
        layer[..., 3] = FRAME_ALPHA
        layer[slice_masks[o]] = (*labels.rgb(organ), MASK_ALPHA)
        layers.append(layer)
    return {"background": background, "layers": layers, "composite": None}


def layers_to_masks(layers, shape: tuple[int, int]) -> np.ndarray:
    """The editor's layers (one per organ, ``(H, W, 4)`` RGBA arrays or PIL images) → ``(O, H, W) bool``.

    Raises :class:`EditError` when there is not one layer per organ, a layer is not ``shape``
    ``(H, W)``, or every layer is transparent along its whole first row or first column (shifted
    by the editor; see the module notes): the layers must stay on the slice's pixel grid.
    """
    layers = list(layers or [])
    if len(layers) != len(labels.ORGANS):
        raise EditError(f"The editor sent {len(layers)} layers; it needs one per organ ({len(labels.ORGANS)}). "
                        "Open the slice in the editor again.")
    masks = np.zeros((len(labels.ORGANS), *shape), dtype=bool)
    alphas = []
    for o, layer in enumerate(layers):
        pixels = np.asarray(layer.convert("RGBA") if isinstance(layer, Image.Image) else layer)
        if pixels.shape[:2] != tuple(shape):
            raise EditError(f"The edited {labels.DISPLAY_NAMES[labels.ORGANS[o]]} layer is "
                            f"{pixels.shape[1] if pixels.ndim > 1 else '?'}×{pixels.shape[0]} px; the slice is "
                            f"{shape[1]}×{shape[0]}. Open the slice in the editor again and do not resize it.")
        alpha = pixels[..., 3] if pixels.ndim == 3 and pixels.shape[2] == 4 else pixels.reshape(shape)
        masks[o] = alpha >= MIN_ALPHA
        alphas.append(alpha)
    if all(not a[0].any() for a in alphas) or all(not a[:, 0].any() for a in alphas):
        raise EditError("The editor shifted the layers off the slice (it last showed a larger image); "
                        "reload the page, then open the slice in the editor again.")
    return masks


def edited_masks(value: dict | None, shape: tuple[int, int]) -> np.ndarray:
    """The masks of an ``ImageEditor`` value (``{"layers": ...}``, or nothing): :func:`layers_to_masks`."""
    return layers_to_masks((value or {}).get("layers"), shape)
