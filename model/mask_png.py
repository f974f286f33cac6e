"""The mask PNG: organ masks packed one bit per organ into 8-bit greyscale, and back (the download's codec, and training's cached masks).

All functions take ``organ_masks``: ``(O, H, W)`` bool with ``O`` following
:data:`model.labels.ORGANS`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from . import labels

#: Bit of each organ in the downloadable mask PNG (one bit per organ, so overlaps survive):
#: stomach = 1, small bowel = 2, large bowel = 4. A pixel in both bowels reads 6.
MASK_BITS: dict[str, int] = {organ: 1 << i for i, organ in enumerate(labels.ORGANS)}


def encode_mask_png(organ_masks: np.ndarray) -> np.ndarray:
    """Pack ``(O, ...) bool`` masks into ``(...) uint8``, one bit per organ (see :data:`MASK_BITS`).

    The mask PNG's codec, and training's cached masks ``(O, D, H, W)`` → ``(D, H, W)``: one codec for both.
    """
    packed = np.zeros(organ_masks.shape[1:], dtype=np.uint8)
    for i, organ in enumerate(labels.ORGANS):
        packed |= organ_masks[i].astype(np.uint8) * np.uint8(MASK_BITS[organ])
    return packed


def decode_mask_png(packed: np.ndarray | str | Path) -> np.ndarray:
    """Inverse of :func:`encode_mask_png`: ``(...)`` integer → ``(O, ...)`` bool. ``packed`` may also be the
    downloaded PNG's path."""
    if isinstance(packed, (str, Path)):
        with Image.open(packed) as im:
            packed = np.asarray(im)
    return np.stack([(packed & MASK_BITS[o]) > 0 for o in labels.ORGANS])


def save_mask_png(organ_masks: np.ndarray, path: str | Path) -> Path:
    """Write the bit-packed masks as an 8-bit greyscale PNG."""
    path = Path(path)
    Image.fromarray(encode_mask_png(organ_masks), mode="L").save(path, format="PNG")
    return path
