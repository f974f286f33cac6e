"""Cutting a volume into chunks of slices for the model: the one loop both segmenters share.

:class:`model.inference.Segmenter` (in this process) and :class:`model.worker.SegmenterProcess`
(the model in its own process, which must not import torch) differ only in how one chunk is
segmented; this module holds the rest, and imports neither.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np


def segment_volume_steps(segment_slices: Callable[..., np.ndarray], voxels: np.ndarray, organ_masks: np.ndarray,
                         chunk_slices: int, probabilities: np.ndarray | None = None) -> Iterator[int]:
    """Fill ``organ_masks`` ``(O, D, H, W) bool`` from a volume ``(D, H, W)`` chunk by chunk; yield slices done.

    ``segment_slices(voxels, start, stop, probabilities_part)`` returns the masks
    ``(O, stop - start, H, W)`` of one chunk. ``probabilities``: optional ``(O, D, H, W)`` float
    array filled alongside. A caller that stops iterating (a cancelled request) stops the work at
    the next chunk.
    """
    depth = voxels.shape[0]
    if organ_masks.ndim != 4 or organ_masks.shape[1:] != voxels.shape:
        raise ValueError(f"organ_masks {organ_masks.shape} does not fit a volume of shape {voxels.shape}")
    if probabilities is not None and probabilities.shape != organ_masks.shape:
        raise ValueError(f"probabilities {probabilities.shape} do not fit masks of shape {organ_masks.shape}")
    for start in range(0, depth, chunk_slices):
        stop = min(start + chunk_slices, depth)
        part = None if probabilities is None else probabilities[:, start:stop]
        organ_masks[:, start:stop] = segment_slices(voxels, start, stop, part)
        yield stop
