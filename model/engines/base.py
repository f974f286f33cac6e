"""The one segmenter template: what every engine shares, and the verb that segments a scan.

:class:`SegmenterBase` owns the sequence of :meth:`~SegmenterBase.predict` (allocate, check the
shapes, batch, pre-process, run, upsample, decide) and the volume verbs on top of it
(:meth:`~SegmenterBase.segment_scan`, chunk by chunk, with 2.5D stacks). An engine fills in only
``preprocess``, ``forward``, ``upsample``, ``decide`` and ``probabilities``: the torch engine
(:mod:`model.engines.torch`) and the OpenVINO engine (:mod:`model.engines.openvino`, torch-free).
The model process (:mod:`model.engines.process`) overrides ``predict`` and ``segment_slices``,
which run in its child.

numpy is imported inside the functions: ``python app.py`` imports this module (through the model
process) before it forks, and numpy would start its BLAS threads in the parent first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def channel_values(values: Iterable[float], num_channels: int) -> list[float]:
    """Per-channel mean or std, one value per input channel; one value (or too few) serves every channel.

    The one reading of the contract's ``image_mean``/``image_std``; each engine makes its own array of it.
    """
    values = list(values)
    return values[:num_channels] if len(values) >= num_channels else values[:1] * num_channels


def stretched_inputs(slices: np.ndarray) -> np.ndarray:
    """Raw slices ``(N, H, W)`` (one slice each, replicated to the channels later) or ``(N, C, H, W)``
    (2.5D stacks), any numeric dtype, each stretched by :func:`normalize_intensity`: ``(N, C, H, W) uint8``.
    The first step of both engines' pre-processing."""
    import numpy as np

    from ..image import normalize_intensity

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


class ScanSegmentation:
    """One scan going through the model, chunk by chunk (:meth:`SegmenterBase.segment_scan`).

    ``organ_masks``: ``(O, D, H, W) bool``, filled as the chunks go. ``probabilities``: each organ's
    probability ``(O, D, H, W) float16`` (96 MB for 144 × 360 × 310), or ``None`` unless they were
    asked for. Iterate to run it (it yields the number of slices done after each chunk; stop
    iterating to cancel at the next chunk), or call :meth:`run` to run what is left.
    """

    def __init__(self, organ_masks: np.ndarray, probabilities: np.ndarray | None, steps: Iterator[int]):
        self.organ_masks, self.probabilities, self._steps = organ_masks, probabilities, steps

    def __iter__(self) -> Iterator[int]:
        return self._steps

    def run(self, progress: Callable[[int], None] | None = None) -> ScanSegmentation:
        """Run the chunks not run yet; ``progress(slices_done)`` after each. Returns ``self``."""
        for done in self._steps:
            if progress is not None:
                progress(done)
        return self


class SegmenterBase:
    """The predict template and the volume verbs, on top of an engine's five steps.

    The engine's class sets ``contract`` (a :class:`~model.checkpoint.Contract`), ``info`` (a
    :class:`~model.checkpoint.CheckpointInfo` or ``None``), ``batch_size``, ``threshold`` and
    ``runtime`` (whose ``describe()`` names the engine, device and precision), and implements
    ``preprocess``, ``forward``, ``upsample``, ``decide`` and ``probabilities``.
    """

    def describe(self) -> str:
        """One line for the About section: checkpoint, revision, sha, engine and device."""
        info = self.info
        head = "multi-label sigmoid" if self.contract.multi_label else "softmax"
        source = f"{info.source} @ {info.revision or 'latest'} (weights sha256 {info.weights_sha256[:12]}…)" if info else "in-memory model"
        return f"{source}; {head} head, input {self.contract.input_size[0]}×{self.contract.input_size[1]}; running on {self.runtime.describe()}"

    @property
    def num_organs(self) -> int:
        return len(self.contract.organ_channels)

    @property
    def slice_offsets(self) -> tuple[int, ...]:
        """Neighbour offsets of the input channels (``(0, 0, 0)`` for single-slice models)."""
        return self.contract.slice_offsets or (0,) * self.contract.num_channels

    # ------------------------------------------------------------------ one batch: what the engines fill in

    def preprocess(self, slices: np.ndarray):
        """Raw slices ``(N, H, W)`` or ``(N, C, H, W)`` → the model's normalised input ``(N, C, h, w)``."""
        raise NotImplementedError

    def forward(self, x):
        """Model input ``(N, C, h, w)`` → logits ``(N, K, h/4, w/4)`` float32."""
        raise NotImplementedError

    def upsample(self, logits, size: tuple[int, int]):
        """Logits → logits at ``size`` (bilinear), before the decision."""
        raise NotImplementedError

    def decide(self, logits) -> np.ndarray:
        """Logits ``(N, K, H, W)`` at full size → organ masks ``(N, O, H, W)`` bool, in :data:`labels.ORGANS` order."""
        raise NotImplementedError

    def probabilities(self, logits) -> np.ndarray:
        """Logits ``(N, K, H, W)`` at full size → each organ's probability ``(N, O, H, W)`` float32."""
        raise NotImplementedError

    def predict(self, slices: np.ndarray, probabilities: np.ndarray | None = None) -> np.ndarray:
        """Segment a batch of slices of one size: the one sequence of every engine.

        ``slices``: ``(N, H, W)`` or ``(N, C, H, W)`` raw intensities. Returns ``(N, O, H, W)`` bool
        at the original resolution. Logits are upsampled to ``H × W`` (bilinear) *before* the decision.
        ``probabilities``: optional ``(N, O, H, W)`` float array (float16 or float32), filled with
        each organ's probability from the same upsampled logits.
        """
        import numpy as np

        slices = np.asarray(slices)
        n, height, width = slices.shape[0], slices.shape[-2], slices.shape[-1]
        out = np.zeros((n, self.num_organs, height, width), dtype=bool)
        if probabilities is not None and probabilities.shape != out.shape:
            raise ValueError(f"probabilities {probabilities.shape} do not fit masks of shape {out.shape}")
        for start in range(0, n, self.batch_size):
            logits = self.upsample(self.forward(self.preprocess(slices[start:start + self.batch_size])), (height, width))
            stop = start + len(logits)
            out[start:stop] = self.decide(logits)
            if probabilities is not None:
                probabilities[start:stop] = self.probabilities(logits)
        return out

    # ------------------------------------------------------------------ volumes

    def segment_slices(self, voxels: np.ndarray, start: int, stop: int,
                       probabilities: np.ndarray | None = None) -> np.ndarray:
        """Organ masks ``(O, stop - start, H, W) bool`` of slices ``start:stop`` of a volume ``(D, H, W)``.

        Each slice goes in as the checkpoint's 2.5D stack (:attr:`slice_offsets`, edges clamped
        to the volume) or alone for single-slice checkpoints, through ``predict``.
        ``probabilities``: optional ``(O, stop - start, H, W)`` float array to fill, as in ``predict``.
        """
        import numpy as np

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
        """Fill ``organ_masks`` ``(O, D, H, W) bool`` from a volume ``(D, H, W)`` chunk by chunk; yield slices done.

        ``probabilities``: optional ``(O, D, H, W)`` float array, filled with each organ's probability.
        Memory beyond the model stays at one chunk of inputs and logits plus these arrays. A caller
        that stops iterating (a cancelled request) stops the work at the next chunk. The shapes are
        checked here, before the first chunk.
        """
        if organ_masks.ndim != 4 or organ_masks.shape[1:] != voxels.shape:
            raise ValueError(f"organ_masks {organ_masks.shape} does not fit a volume of shape {voxels.shape}")
        if organ_masks.shape[0] != self.num_organs:
            raise ValueError(f"organ_masks {organ_masks.shape} has not one channel per organ of the checkpoint")
        if probabilities is not None and probabilities.shape != organ_masks.shape:
            raise ValueError(f"probabilities {probabilities.shape} do not fit masks of shape {organ_masks.shape}")
        return self._chunks(voxels, organ_masks, chunk_slices or 2 * self.batch_size, probabilities)

    def _chunks(self, voxels, organ_masks, chunk_slices: int, probabilities) -> Iterator[int]:
        depth = voxels.shape[0]
        for start in range(0, depth, chunk_slices):
            stop = min(start + chunk_slices, depth)
            part = None if probabilities is None else probabilities[:, start:stop]
            organ_masks[:, start:stop] = self.segment_slices(voxels, start, stop, part)
            yield stop

    def segment_scan(self, scan, *, keep_probabilities: bool = False,
                     chunk_slices: int | None = None) -> ScanSegmentation:
        """The one verb that segments a scan: a :class:`ScanSegmentation` to iterate (progress,
        cancelling) or :meth:`~ScanSegmentation.run`.

        ``scan``: a :class:`model.scans.Scan` or its voxels ``(D, H, W)``. ``keep_probabilities``:
        also fill each organ's probability ``(O, D, H, W) float16`` (the review flags score them);
        otherwise none are allocated. Nothing runs until the result is iterated.
        """
        import numpy as np

        voxels = getattr(scan, "voxels", scan)
        organ_masks = np.zeros((self.num_organs, *voxels.shape), dtype=bool)
        probabilities = np.zeros(organ_masks.shape, dtype=np.float16) if keep_probabilities else None
        steps = self.segment_volume_steps(voxels, organ_masks, chunk_slices, probabilities=probabilities)
        return ScanSegmentation(organ_masks, probabilities, steps)
