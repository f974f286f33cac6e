"""The torch engine: the model on torch, its precisions, and the folded decode head.

:class:`Segmenter` fills in the steps of :class:`~model.engines.base.SegmenterBase`'s one
``predict`` on torch. On CPUs where OpenVINO wins, :func:`model.engines.choose.load_segmenter`
serves :class:`model.engines.openvino.OpenVinoSegmenter` instead, which runs the model this
module folds (:func:`fold_decode_head`) and has numpy twins of its pre- and post-processing.
How torch runs (device, precision, graph rewrites) is chosen once per process by
:func:`choose_runtime`. The default on
every machine is a path whose masks agree with the exact fp32 model on real slices
(``tests/model/test_fastpath.py``, ``tests/model/test_openvino.py``; the numbers are in
``benchmarks/README.md``); ``UWMGI_PRECISION`` picks another.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import checkpoint as ckpt
from .base import SegmenterBase, channel_values, stretched_inputs
from .machine import FORCE_FP32_ENV, PRECISION_ENV, cpu_flags, requested_precision

#: ``exact``: the unmodified fp32 eager model. ``fp32``: fp32 with the folded decode head (the
#: same function, rounded differently). ``bf16``/``fp16``: autocast matmuls and convolutions over
#: fp32 weights, with the folded head.
PRECISIONS = ("exact", "fp32", "bf16", "fp16")
#: CPU flags (as in /proc/cpuinfo) with native bf16 dot products; elsewhere bf16 is emulated (slow).
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    """Where and how the model runs on torch: a device and one of :data:`PRECISIONS`.

    Weights stay fp32 on every path; ``bf16``/``fp16`` run under autocast, which keeps the
    normalisation layers and softmax in fp32.
    """

    device: torch.device
    precision: str = "fp32"
    channels_last: bool = False
    reason: str = ""
    engine: ClassVar[str] = "torch"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")

    @property
    def autocast(self) -> torch.dtype | None:
        return _AUTOCAST.get(self.precision)

    @property
    def fold_head(self) -> bool:
        """Replace the decode head by :class:`FoldedDecodeHead` (the same function, about half the FLOPs)."""
        return self.precision != "exact"

    @property
    def exact(self) -> bool:
        """The reference fp32 eager path."""
        return self.precision == "exact"

    def describe(self) -> str:
        if self.device.type == "cuda":
            name = torch.cuda.get_device_name(self.device)
        else:
            waits = os.environ.get("OMP_WAIT_POLICY", "unset").lower()
            name = f"CPU, {torch.get_num_threads()} threads, OpenMP wait policy {waits}"
        parts = [f"{str(self.autocast).removeprefix('torch.')} autocast" if self.autocast else "float32"]
        if self.fold_head:
            parts.append("folded decode head")
        if self.channels_last:
            parts.append("channels_last")
        text = f"torch {torch.__version__.split('+')[0]} on {name} ({self.device.type}; {', '.join(parts)})"
        return f"{text}: {self.reason}" if self.reason else text


def choose_runtime(device: str | None = None, *, precision: str | None = None,
                   flags: frozenset[str] | None = None) -> Runtime:
    """The path this process runs, chosen once at start-up.

    Defaults hold the fidelity bar (per-organ Dice >= 0.98 per slice and >= 99.99 % identical
    pixels against ``exact`` on real slices with a trained model):

    - CPU: ``fp32`` with the folded head. bf16 autocast does *not* hold the bar (per-slice Dice
      down to 0.94 on a real volume), even with the head in fp32, so it is opt-in, and slow where
      the CPU lacks AVX512-BF16/AMX (emulated).
    - GPU: ``fp16`` autocast with channels_last. Run on a CPU its masks depend on that CPU's fp16
      kernels (held the bar on a Zen 4 EPYC, not on an AMX Xeon: benchmarks/results/fidelity-cpu-*.md),
      so only ``benchmarks/gpu.py`` judges it, on the GPU itself; no GPU was lent to measure it yet.

    ``precision`` (else ``UWMGI_PRECISION``, else ``UWMGI_FP32=1`` meaning ``exact``) overrides
    the default on any device. ``flags`` stands in for :func:`cpu_flags` (tests, benchmarks).
    """
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    chosen_by = "chosen"
    if precision is None:
        precision = requested_precision()
        if precision is not None:
            explicit = os.environ.get(PRECISION_ENV, "").strip()
            chosen_by = f"{PRECISION_ENV}={precision}" if explicit else f"{FORCE_FP32_ENV}=1"
    else:
        chosen_by = "forced"
    if precision is None:
        if dev.type == "cuda":
            return Runtime(dev, "fp16", channels_last=True, reason="GPU default: fp16 autocast")
        return Runtime(dev, "fp32", reason="CPU default: fp32 (bf16 changes the masks)")
    if precision not in PRECISIONS:
        raise ValueError(f"{PRECISION_ENV} must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    reason = f"{precision} ({chosen_by})"
    if dev.type == "cpu" and precision == "bf16":
        native = sorted(CPU_BF16_FLAGS & (cpu_flags() if flags is None else flags))
        reason += f"; CPU has {'/'.join(native)}" if native else "; emulated: this CPU lacks AVX512-BF16/AMX"
    elif dev.type == "cpu" and precision == "fp16":
        reason += "; emulated on CPU"
    return Runtime(dev, precision, channels_last=dev.type == "cuda" and precision != "exact", reason=reason)


class FoldedDecodeHead(nn.Module):
    """SegFormer's all-MLP decode head, rewritten to cost a small fraction of its FLOPs.

    The original projects every stage to ``D`` channels, upsamples to the first stage's size,
    concatenates (4·D channels) and fuses with a 1×1 conv, then batch norm (eval) and ReLU.
    Projection, bilinear upsampling, the fuse conv and eval batch norm are all linear, and a
    per-pixel channel map commutes with a per-channel spatial resampling, so the fuse conv and
    batch norm fold into each stage's projection, applied *before* upsampling at the stage's own
    resolution: ``ReLU(Σ_i up(A_i x_i) + b)``. Same function; differs only by rounding
    (folded in float64). Our own code because no library ships this rewrite.
    """

    def __init__(self, head: nn.Module):
        super().__init__()
        width = head.config.decoder_hidden_size
        projections = list(head.linear_projections)
        fuse = head.linear_fuse.weight.detach().double().flatten(1)  # (D, n·D); stages concatenated last-first
        bn = head.batch_norm
        scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
        bias = bn.bias.detach().double() - bn.running_mean.double() * scale
        weights = []
        for i, mlp in enumerate(projections):
            block = fuse[:, (len(projections) - 1 - i) * width:(len(projections) - i) * width]
            weights.append(scale[:, None] * (block @ mlp.proj.weight.detach().double()))
            bias = bias + scale * (block @ mlp.proj.bias.detach().double())
        dtype = head.linear_fuse.weight.dtype
        self.stage_weights = nn.ParameterList(
            nn.Parameter(w[:, :, None, None].to(dtype), requires_grad=False) for w in weights)
        self.bias = nn.Parameter(bias.to(dtype), requires_grad=False)
        self.classifier = head.classifier

    @staticmethod
    def supports(model: nn.Module) -> bool:
        head = getattr(model, "decode_head", None)
        return (head is not None and hasattr(head, "linear_fuse") and isinstance(head.activation, nn.ReLU)
                and getattr(model.config, "reshape_last_stage", True) is not False)

    def forward(self, encoder_hidden_states, **kwargs) -> torch.Tensor:
        # One image at a time, accumulating in place: the fused map is D channels at the first
        # stage's resolution, and a whole batch of such temporaries spilled the caches and
        # page-faulted fresh buffers at every op on the CPU (benchmarks/README.md has the timings).
        # On a GPU the loop adds a few kernel launches per image; benchmarks/gpu.py times batches.
        return torch.cat([self._fuse([stage[i:i + 1] for stage in encoder_hidden_states])
                          for i in range(encoder_hidden_states[0].shape[0])])

    def _fuse(self, stages: list[torch.Tensor]) -> torch.Tensor:
        first = stages[0]
        fused = F.conv2d(first, self.stage_weights[0], self.bias)
        for stage, weight in zip(stages[1:], self.stage_weights[1:]):
            fused.add_(F.interpolate(F.conv2d(stage, weight), size=first.shape[2:], mode="bilinear",
                                     align_corners=False))
        return self.classifier(fused.relu_())


def fold_decode_head(model: nn.Module) -> nn.Module:
    """``model`` with its decode head replaced in place by :class:`FoldedDecodeHead` where it
    :meth:`~FoldedDecodeHead.supports` it; the torch engine and the OpenVINO conversion both serve this."""
    if FoldedDecodeHead.supports(model):
        model.decode_head = FoldedDecodeHead(model.decode_head)
    return model


def channel_stats(values: tuple[float, ...] | list[float], num_channels: int) -> torch.Tensor:
    """Per-channel mean or std (:func:`~model.engines.base.channel_values`) as ``(1, C, 1, 1) float32``."""
    return torch.tensor(channel_values(values, num_channels), dtype=torch.float32).view(1, num_channels, 1, 1)


def pixel_values(stretched: torch.Tensor, size: tuple[int, int], mean: torch.Tensor, std: torch.Tensor,
                 rescale_factor: float = 1 / 255) -> torch.Tensor:
    """Intensity-stretched stacks → model input; the one resize-and-normalise step of serving and training.

    ``stretched``: ``(N, C, H, W)`` float in 0..255 (the output of :func:`normalize_intensity`), where
    ``C`` is 1 (replicated to the model's channels) or the model's channel count. ``mean``/``std``:
    ``(1, C_model, 1, 1)`` from :func:`channel_stats`. Returns ``(N, C_model, h, w)`` float32.
    """
    channels = mean.shape[1]
    if stretched.shape[1] == 1:
        stretched = stretched.expand(-1, channels, -1, -1)
    elif stretched.shape[1] != channels:
        raise ValueError(f"the model takes {channels} channels, got {stretched.shape[1]}")
    # Bilinear with antialiasing matches the PIL resize the blog's app served with.
    x = F.interpolate(stretched, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return (x * rescale_factor - mean) / std


def decide(logits: torch.Tensor, organ_channels: tuple[int, ...] | list[int], multi_label: bool,
           threshold: float = 0.5) -> torch.Tensor:
    """Logits ``(N, K, H, W)`` → organ masks ``(N, O, H, W)`` bool; ``organ_channels[i]`` is organ i's channel.

    Multi-label heads: one sigmoid per organ, thresholded independently, so overlapping organs stay
    overlapping. Softmax heads: argmax over all classes, background included.
    """
    channels = list(organ_channels)
    if multi_label:
        return torch.sigmoid(logits[:, channels]) > threshold
    winner = logits.argmax(dim=1, keepdim=True)
    return winner == torch.tensor(channels, device=logits.device).view(1, -1, 1, 1)


def organ_probabilities(logits: torch.Tensor, organ_channels: tuple[int, ...] | list[int],
                        multi_label: bool) -> torch.Tensor:
    """Logits ``(N, K, H, W)`` → each organ's probability ``(N, O, H, W)`` float32, the scores :func:`decide` uses.

    Multi-label heads: the organ's sigmoid, the very values :func:`decide` thresholds. Softmax
    heads: the organ's softmax probability over all classes, background included; the organ
    :func:`decide` picks has the largest probability of the pixel's classes.
    """
    channels = list(organ_channels)
    if multi_label:
        return torch.sigmoid(logits[:, channels])
    return torch.softmax(logits.float(), dim=1)[:, channels]


class Segmenter(SegmenterBase):
    """A loaded contract checkpoint, ready to predict on torch. Load once per process.

    ``predict`` and the volume verbs (``segment_scan``, ``segment_slices``, ``segment_volume_steps``)
    come from :class:`~model.engines.base.SegmenterBase`, shared with the OpenVINO engine; this
    class fills in the five steps on torch.
    """

    def __init__(self, model, contract: ckpt.Contract, info: ckpt.CheckpointInfo | None = None,
                 runtime: Runtime | None = None, batch_size: int = 8, threshold: float = 0.5):
        self.contract = contract
        self.threshold = threshold  # multi-label heads only
        self.info = info
        self.runtime = runtime or choose_runtime()
        self.batch_size = batch_size
        model = model.eval()
        if self.runtime.fold_head:
            model = fold_decode_head(model)  # in place: the Segmenter owns the model
        self.model = model.to(self.runtime.device, dtype=torch.float32)
        if self.runtime.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._mean = channel_stats(contract.image_mean, contract.num_channels).to(self.runtime.device)
        self._std = channel_stats(contract.image_std, contract.num_channels).to(self.runtime.device)

    @classmethod
    def load(cls, model: str | os.PathLike | None = None, revision: str | None = None,
             device: str | None = None, runtime: Runtime | None = None) -> "Segmenter":
        """Resolve (local dir, Hub repo, or the blog's default), verify and load a checkpoint.

        ``runtime`` overrides :func:`choose_runtime` (e.g. ``choose_runtime(precision="exact")``).
        """
        local_dir, info = ckpt.resolve(None if model is None else str(model), revision)
        contract = ckpt.read_contract(local_dir)
        return cls(ckpt.load_model(local_dir), contract, info, runtime or choose_runtime(device))

    def preprocess(self, slices: np.ndarray) -> torch.Tensor:
        """Raw slices → the model's normalised input ``(N, C, h, w)``.

        ``slices``: ``(N, H, W)`` (one slice each, replicated to the channels) or ``(N, C, H, W)``
        (2.5D stacks), any numeric dtype. Intensity is stretched per image (per stack).
        """
        x = torch.from_numpy(stretched_inputs(slices)).to(self.runtime.device, dtype=torch.float32)
        c = self.contract
        return pixel_values(x, c.input_size, self._mean, self._std, c.rescale_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input ``(N, C, h, w)`` → logits ``(N, K, h/4, w/4)`` float32, on the chosen path."""
        rt = self.runtime
        x = x.to(memory_format=torch.channels_last if rt.channels_last else torch.contiguous_format)
        with torch.autocast(rt.device.type, dtype=rt.autocast, enabled=rt.autocast is not None):
            return self.model(pixel_values=x).logits.float()

    def upsample(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def decide(self, logits: torch.Tensor) -> np.ndarray:
        """Logits ``(N, K, H, W)`` at full size → organ masks ``(N, O, H, W)`` bool (:func:`decide`)."""
        return decide(logits, self.contract.organ_channels, self.contract.multi_label, self.threshold).cpu().numpy()

    def probabilities(self, logits: torch.Tensor) -> np.ndarray:
        """Logits ``(N, K, H, W)`` at full size → organ probabilities ``(N, O, H, W)`` float32 (:func:`organ_probabilities`)."""
        return organ_probabilities(logits, self.contract.organ_channels, self.contract.multi_label).cpu().numpy()

    @torch.inference_mode()
    def predict(self, slices: np.ndarray, probabilities: np.ndarray | None = None) -> np.ndarray:
        """:meth:`SegmenterBase.predict <model.engines.base.SegmenterBase.predict>`, without autograd."""
        return super().predict(slices, probabilities)
