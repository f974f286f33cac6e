"""What every engine's segmenter shares: 2.5D input stacks, the volume verbs, the About line.

numpy only, no torch. :class:`model.engines.torch.Segmenter` (torch) and
:class:`model.engines.openvino.OpenVinoSegmenter` (OpenVINO, torch-free) segment a volume the
same way: stack each slice with its neighbours, then call their own ``predict`` on a chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

from ..image import normalize_intensity


def stretched_inputs(slices: np.ndarray) -> np.ndarray:
    """Raw slices ``(N, H, W)`` (one slice each, replicated to the channels later) or ``(N, C, H, W)``
    (2.5D stacks), any numeric dtype, each stretched by :func:`normalize_intensity`: ``(N, C, H, W) uint8``.
    The first step of both engines' pre-processing."""
    slices = np.asarray(slices)
    if slices.ndim == 3:
        slices = slices[:, None]
    if slices.ndim != 4:
        raise ValueError(f"expected (N, H, W) or (N, C, H, W), got {slices.shape}")
    return np.stack([normalize_intensity(s) for s in slices])


def stack_slices(voxels: np.ndarray, index: int, offsets: Iterable[int]) -> np.ndarray:
    """The 2.5D input stack ``(C, H, W)`` for slice ``index`` of ``voxels`` ``(D, H, W)``; edges clamp.

    The one stacking function: serving (:meth:`SegmenterBase.segment_slices`) and training
    (``train.data.SliceDataset``) both build their inputs with it.
    """
    depth = voxels.shape[0]
    return voxels[[min(max(index + o, 0), depth - 1) for o in offsets]]


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


class SegmenterBase:
    """Volume verbs and ``describe`` on top of an engine's ``predict(slices, probabilities=None)``.

    The engine's class sets ``contract`` (a :class:`~model.checkpoint.Contract`), ``info`` (a
    :class:`~model.checkpoint.CheckpointInfo` or ``None``), ``batch_size``, and ``runtime``
    (whose ``describe()`` names the engine, device and precision).
    """

    def describe(self) -> str:
        """One line for the About section: checkpoint, revision, sha, engine and device."""
        info = self.info
        head = "multi-label sigmoid" if self.contract.multi_label else "softmax"
        source = f"{info.source} @ {info.revision or 'latest'} (weights sha256 {info.weights_sha256[:12]}…)" if info else "in-memory model"
        return f"{source}; {head} head, input {self.contract.input_size[0]}×{self.contract.input_size[1]}; running on {self.runtime.describe()}"

    @property
    def slice_offsets(self) -> tuple[int, ...]:
        """Neighbour offsets of the input channels (``(0, 0, 0)`` for single-slice models)."""
        return self.contract.slice_offsets or (0,) * self.contract.num_channels

    def segment_slices(self, voxels: np.ndarray, start: int, stop: int,
                       probabilities: np.ndarray | None = None) -> np.ndarray:
        """Organ masks ``(O, stop - start, H, W) bool`` of slices ``start:stop`` of a volume ``(D, H, W)``.

        Each slice goes in as the checkpoint's 2.5D stack (:attr:`slice_offsets`, edges clamped
        to the volume) or alone for single-slice checkpoints, through ``predict``.
        ``probabilities``: optional ``(O, stop - start, H, W)`` float array to fill, as in ``predict``.
        """
        if any(self.slice_offsets):
            inputs = np.stack([stack_slices(voxels, i, self.slice_offsets) for i in range(start, stop)])
        else:
            inputs = voxels[start:stop]
        if probabilities is None:
            return self.predict(inputs).transpose(1, 0, 2, 3)
        slices_first = np.empty((stop - start, *probabilities.shape[:1], *probabilities.shape[2:]), probabilities.dtype)
        organ_masks = self.predict(inputs, slices_first).transpose(1, 0, 2, 3)
        probabilities[...] = slices_first.transpose(1, 0, 2, 3)
        return organ_masks

    def segment_volume_steps(self, voxels: np.ndarray, organ_masks: np.ndarray,
                             chunk_slices: int | None = None, *,
                             probabilities: np.ndarray | None = None) -> Iterator[int]:
        """Segment a volume ``(D, H, W)`` into ``organ_masks`` ``(O, D, H, W) bool`` chunk by chunk; yield slices done.

        ``probabilities``: optional ``(O, D, H, W)`` float array (float16 halves the memory: 96 MB
        for 144 × 360 × 310), filled with each organ's probability.
        Memory beyond the model stays at one chunk of inputs and logits plus these arrays (48 MB
        of bool masks for 144 × 360 × 310). A caller that stops iterating (a cancelled request)
        stops the work at the next chunk (:func:`model.engines.base.segment_volume_steps`).
        """
        if organ_masks.shape[0] != len(self.contract.organ_channels):
            raise ValueError(f"organ_masks {organ_masks.shape} has not one channel per organ of the checkpoint")
        return segment_volume_steps(self.segment_slices, voxels, organ_masks, chunk_slices or 2 * self.batch_size,
                                    probabilities)

    def segment_volume(self, voxels: np.ndarray, progress=None, chunk_slices: int | None = None) -> np.ndarray:
        """Organ masks ``(O, D, H, W) bool`` of a volume ``(D, H, W)``; ``progress(slices_done)`` after each chunk."""
        organ_masks = np.zeros((len(self.contract.organ_channels), *voxels.shape), dtype=bool)
        for done in self.segment_volume_steps(voxels, organ_masks, chunk_slices):
            if progress is not None:
                progress(done)
        return organ_masks
