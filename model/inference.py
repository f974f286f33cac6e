"""The one core prediction function: raw slices in as a batch, per-organ boolean masks out.

The slice tab, the scan tab, the CLI and the benchmarks all call :meth:`Segmenter.predict`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint as ckpt
from .image import normalize_intensity

#: Environment variable that forces the exact fp32 path everywhere.
FORCE_FP32_ENV = "UWMGI_FP32"


@dataclass(frozen=True)
class Runtime:
    """Where and how the model runs."""

    device: torch.device
    dtype: torch.dtype  # compute dtype of the forward pass

    def describe(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        return f"{name} ({self.device.type}, {str(self.dtype).removeprefix('torch.')})"


def choose_runtime(device: str | None = None) -> Runtime:
    """GPU in bf16 (fp16 where bf16 is unsupported) when available; else the CPU in fp32.

    ``UWMGI_FP32=1`` forces fp32 on any device.
    """
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    force_fp32 = os.environ.get(FORCE_FP32_ENV, "").lower() in ("1", "true", "yes")
    if dev.type == "cuda" and not force_fp32:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
    return Runtime(dev, dtype)


class Segmenter:
    """A loaded contract checkpoint, ready to predict. Load once per process."""

    def __init__(self, model, contract: ckpt.Contract, info: ckpt.CheckpointInfo | None = None,
                 runtime: Runtime | None = None, batch_size: int = 8, threshold: float = 0.5):
        self.contract = contract
        self.threshold = threshold  # multi-label heads only
        self.info = info
        self.runtime = runtime or choose_runtime()
        self.batch_size = batch_size
        self.model = model.eval().to(self.runtime.device, dtype=self.runtime.dtype)
        self._mean = self._per_channel(contract.image_mean)
        self._std = self._per_channel(contract.image_std)

    def _per_channel(self, values: tuple[float, ...]) -> torch.Tensor:
        """``(1, C, 1, 1)`` statistics; a single value (or too few) applies to every channel."""
        n = self.contract.num_channels
        values = values[:n] if len(values) >= n else values[:1] * n
        return torch.tensor(values, dtype=torch.float32, device=self.runtime.device).view(1, n, 1, 1)

    @classmethod
    def load(cls, model: str | os.PathLike | None = None, revision: str | None = None,
             device: str | None = None) -> "Segmenter":
        """Resolve (local dir, Hub repo, or the blog's default), verify and load a checkpoint."""
        local_dir, info = ckpt.resolve(None if model is None else str(model), revision)
        contract = ckpt.read_contract(local_dir)
        return cls(ckpt.load_model(local_dir), contract, info, choose_runtime(device))

    @property
    def slice_offsets(self) -> tuple[int, ...]:
        """Neighbour offsets of the input channels (``(0, 0, 0)`` for single-slice models)."""
        return self.contract.slice_offsets or (0,) * self.contract.num_channels

    def stack_scan(self, scan: np.ndarray, index: int) -> np.ndarray:
        """The input stack ``(C, H, W)`` for slice ``index`` of ``scan`` ``(D, H, W)``; edges clamp."""
        depth = scan.shape[0]
        return scan[[min(max(index + o, 0), depth - 1) for o in self.slice_offsets]]

    def preprocess(self, slices: np.ndarray) -> torch.Tensor:
        """Raw slices → the model's normalised input ``(N, C, h, w)``.

        ``slices``: ``(N, H, W)`` (one slice each, replicated to the channels) or ``(N, C, H, W)``
        (2.5D stacks), any numeric dtype. Intensity is stretched per image (per stack).
        """
        slices = np.asarray(slices)
        if slices.ndim == 3:
            slices = slices[:, None]
        if slices.ndim != 4:
            raise ValueError(f"expected (N, H, W) or (N, C, H, W), got {slices.shape}")
        stretched = np.stack([normalize_intensity(s) for s in slices])
        x = torch.from_numpy(stretched).to(self.runtime.device, dtype=torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, self.contract.num_channels, -1, -1)
        elif x.shape[1] != self.contract.num_channels:
            raise ValueError(f"the model takes {self.contract.num_channels} channels, got {x.shape[1]}")
        # Bilinear with antialiasing matches the PIL resize the blog's app served with.
        x = F.interpolate(x, size=self.contract.input_size, mode="bilinear", align_corners=False, antialias=True)
        x = x * self.contract.rescale_factor
        return (x - self._mean) / self._std

    def decide(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K, H, W)`` at full size → organ masks ``(N, O, H, W)`` bool, in :data:`labels.ORGANS` order."""
        channels = list(self.contract.organ_channels)
        if self.contract.multi_label:
            # One sigmoid per organ, thresholded independently: overlapping organs stay overlapping.
            return torch.sigmoid(logits[:, channels]) > self.threshold
        winner = logits.argmax(dim=1, keepdim=True)
        ids = torch.tensor(channels, device=logits.device).view(1, -1, 1, 1)
        return winner == ids

    @torch.inference_mode()
    def predict(self, slices: np.ndarray, progress=None) -> np.ndarray:
        """Segment a batch of slices of one size.

        ``slices``: ``(N, H, W)`` or ``(N, C, H, W)`` raw intensities. Returns ``(N, O, H, W)`` bool
        at the original resolution. Logits are upsampled to ``H × W`` (bilinear) *before* the decision.
        ``progress``, if given, is called with the number of slices done after each batch.
        """
        slices = np.asarray(slices)
        n, height, width = slices.shape[0], slices.shape[-2], slices.shape[-1]
        out = np.zeros((n, len(self.contract.organ_channels), height, width), dtype=bool)
        for start in range(0, n, self.batch_size):
            x = self.preprocess(slices[start:start + self.batch_size]).to(self.runtime.dtype)
            logits = self.model(pixel_values=x).logits.float()
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            out[start:start + len(x)] = self.decide(logits).cpu().numpy()
            if progress is not None:
                progress(min(start + self.batch_size, n))
        return out

    def describe(self) -> str:
        """One line for the About section: checkpoint, revision, sha and device."""
        info = self.info
        head = "multi-label sigmoid" if self.contract.multi_label else "softmax"
        source = f"{info.source} @ {info.revision or 'latest'} (weights sha256 {info.weights_sha256[:12]}…)" if info else "in-memory model"
        return f"{source}; {head} head, input {self.contract.input_size[0]}×{self.contract.input_size[1]}; running on {self.runtime.describe()}"
