"""OpenVINO on the CPU: the folded model converted once, cached on disk, served without torch.

**Conversion** (torch, once per checkpoint): the fp32 model with
:class:`~model.engines.torch.FoldedDecodeHead` (:func:`~model.engines.torch.fold_decode_head`) goes through ``ov.convert_model`` with a static input
``(1, C, h, w)`` and is saved with fp32 weights (``compress_to_fp16=False``) in
:func:`cache_dir`, next to the converted default checkpoint in the Hugging Face cache, keyed by
the weights' sha256, the config, the input shape policy and the OpenVINO version. OpenVINO's own
compiled-model cache sits inside it (``compiled/``), so later processes skip most of the compile.

**Serving** (numpy + openvino, no torch): :func:`pixel_values`, :func:`decide` and
:func:`organ_probabilities` are numpy twins of the torch functions of :mod:`model.engines.torch`
(the antialiased bilinear resize and the bilinear upsampling of the logits are written as the
same weight matrices torch uses; numpy has no antialiased resize). ``tests/model/test_openvino.py``
checks them against torch and the masks against the exact model on the real slices.

**Precision**: ``INFERENCE_PRECISION_HINT`` is always set: ``f32`` by default (OpenVINO would pick
bf16 by itself on CPUs with AVX512-BF16 or AMX, and bf16 fails the fidelity bar), ``bf16`` only
when asked (``UWMGI_PRECISION=bf16``). **Shapes**: one slice per inference at a static shape;
on a 2-vCPU Zen 4 batch 1 beat batch 8 (``benchmarks/README.md``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np

from .. import checkpoint as ckpt
from .base import SegmenterBase, channel_values, stretched_inputs

log = logging.getLogger(__name__)

#: Bump when the conversion writes something different: it is part of the cache key.
CONVERSION_VERSION = 1
#: One slice per inference, static input shape (part of the cache key).
SHAPE_POLICY = "static-b1"
#: ``UWMGI_PRECISION`` → OpenVINO's ``INFERENCE_PRECISION_HINT``.
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}
MODEL_XML = "model.xml"


def openvino_version() -> str:
    """The installed OpenVINO's version, read without importing it."""
    return metadata.version("openvino")


def cache_dir(info: ckpt.CheckpointInfo, contract: ckpt.Contract) -> Path:
    """The folder of this checkpoint's converted model, in the Hugging Face cache.

    Keyed by the weights' sha256, the config's (architecture), the input shape policy and the
    OpenVINO version, so a change of any of them converts again instead of serving a stale model.
    """
    from huggingface_hub import constants

    config = hashlib.sha256((info.local_dir / ckpt.CONFIG).read_bytes()).hexdigest()[:8]
    shape = f"{contract.num_channels}x{contract.input_size[0]}x{contract.input_size[1]}"
    return (Path(constants.HF_HUB_CACHE) / f"openvino--{info.weights_sha256[:16]}--config-{config}--"
            f"{SHAPE_POLICY}-{shape}--ov{openvino_version()}--v{CONVERSION_VERSION}")


def convert(model, contract: ckpt.Contract, dst: Path) -> Path:
    """Convert a torch ``SegformerForSemanticSegmentation`` (eval, fp32, folded head) into ``dst/model.xml``.

    Written into a temporary folder and renamed, so a crash or a second process never leaves
    half a model behind. Needs torch; returns the path of ``model.xml``.
    """
    import openvino as ov
    import torch

    class Logits(torch.nn.Module):  # the traced graph: pixel values (1, C, h, w) → logits (1, K, h/4, w/4)
        def __init__(self, segformer):
            super().__init__()
            self.segformer = segformer

        def forward(self, pixel_values):
            return self.segformer(pixel_values=pixel_values).logits

    shape = [1, contract.num_channels, *contract.input_size]
    with torch.no_grad():
        converted = ov.convert_model(Logits(model).eval(), example_input=torch.zeros(shape), input=shape)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}."))
    try:
        ov.save_model(converted, tmp / MODEL_XML, compress_to_fp16=False)  # fp16 weights would change the masks
        try:
            tmp.rename(dst)
        except OSError:  # another process converted it first: keep theirs
            if not (dst / MODEL_XML).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst / MODEL_XML


class ConversionError(ckpt.CheckpointError):
    """The checkpoint loads but could not be converted or cached for OpenVINO. ``str(err)`` is one line."""


# --------------------------------------------------------------------------- numpy twins of the torch pre/post


@lru_cache(maxsize=64)
def resize_matrix(size_in: int, size_out: int, antialias: bool) -> np.ndarray:
    """``(size_out, size_in) float32`` weights of torch's bilinear resize along one axis (``align_corners=False``).

    ``antialias=True`` is torch's (and PIL's) antialiased bilinear: a triangle filter widened by
    the scale when shrinking, weights normalised per output pixel. ``False`` is plain bilinear,
    source index clamped at 0 as torch does.
    """
    scale = size_in / size_out
    weights = np.zeros((size_out, size_in), dtype=np.float64)
    for i in range(size_out):
        if antialias:
            support = max(scale, 1.0)
            center = scale * (i + 0.5)
            start = max(int(center - support + 0.5), 0)
            stop = min(int(center + support + 0.5), size_in)
            taps = np.arange(start, stop)
            w = np.clip(1 - np.abs((taps - center + 0.5) / support), 0, None)
            weights[i, start:stop] = w / w.sum()
        else:
            source = max((i + 0.5) * scale - 0.5, 0.0)
            low = min(int(source), size_in - 1)
            high = min(low + 1, size_in - 1)
            frac = source - low
            weights[i, low] += 1 - frac
            weights[i, high] += frac
    return weights.astype(np.float32)


def single_threaded_numpy_blas() -> None:
    """Run numpy's BLAS (OpenBLAS) on one thread in this process, from now on.

    This engine's pre- and post-processing are small matrix products (:func:`resize`), where BLAS
    threads gain nothing. Threaded, they deadlocked here: a ``model.predict`` on OpenVINO spun for 10
    minutes in OpenBLAS's ``inner_thread`` waiting for a worker thread asleep on a futex (OpenBLAS
    0.3.31 in numpy 2.4.6, on a loaded 2-vCPU machine; the workaround OpenBLAS's issues give). The
    setting is process-wide, so it is made once, when the engine loads; OpenVINO's own threads and
    torch's are not affected.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def resize(images: np.ndarray, size: tuple[int, int], antialias: bool) -> np.ndarray:
    """Bilinear resize of ``(..., H, W)`` to ``(..., h, w)`` float32, as ``F.interpolate(mode="bilinear")``."""
    rows = resize_matrix(images.shape[-2], size[0], antialias)
    cols = resize_matrix(images.shape[-1], size[1], antialias)
    return rows @ images.astype(np.float32, copy=False) @ cols.T


def pixel_values(stretched: np.ndarray, size: tuple[int, int], mean: np.ndarray, std: np.ndarray,
                 rescale_factor: float = 1 / 255) -> np.ndarray:
    """numpy twin of :func:`model.engines.torch.pixel_values`: ``(N, C, H, W)`` 0..255 → ``(N, C_model, h, w) float32``.

    ``mean``/``std``: ``(C_model,) float32``. ``C`` is 1 (replicated) or ``C_model``.
    """
    channels = len(mean)
    if stretched.shape[1] not in (1, channels):
        raise ValueError(f"the model takes {channels} channels, got {stretched.shape[1]}")
    x = resize(stretched, size, antialias=True)  # one channel is resized once, then replicated
    x = np.broadcast_to(x, (x.shape[0], channels, *x.shape[2:]))
    return (x * np.float32(rescale_factor) - mean[:, None, None]) / std[:, None, None]


def decide(logits: np.ndarray, organ_channels, multi_label: bool, threshold: float = 0.5) -> np.ndarray:
    """numpy twin of :func:`model.engines.torch.decide`: logits ``(N, K, H, W)`` → organ masks ``(N, O, H, W)`` bool."""
    from scipy.special import expit

    channels = list(organ_channels)
    if multi_label:
        return expit(logits[:, channels]) > threshold
    winner = logits.argmax(axis=1)[:, None]  # the first of equal maxima, as torch.argmax
    return winner == np.asarray(channels).reshape(1, -1, 1, 1)


def organ_probabilities(logits: np.ndarray, organ_channels, multi_label: bool) -> np.ndarray:
    """numpy twin of :func:`model.engines.torch.organ_probabilities`: ``(N, K, H, W)`` → ``(N, O, H, W) float32``."""
    from scipy.special import expit, softmax

    channels = list(organ_channels)
    if multi_label:
        return expit(logits[:, channels]).astype(np.float32)
    return softmax(logits, axis=1)[:, channels].astype(np.float32)


# --------------------------------------------------------------------------- the segmenter


@dataclass(frozen=True)
class OpenVinoRuntime:
    """How the model runs on OpenVINO, for the About line: the precision hint the compiled model really has."""

    precision: str  # "fp32" or "bf16"
    inference_precision: str  # read back from the compiled model: "f32" or "bf16"
    threads: int
    reason: str = ""
    engine = "openvino"

    def describe(self) -> str:
        text = (f"OpenVINO {openvino_version().split('-')[0]} on CPU, {self.threads} threads "
                f"(inference precision {self.inference_precision}, folded decode head, one slice per inference)")
        return f"{text}: {self.reason}" if self.reason else text


class OpenVinoSegmenter(SegmenterBase):
    """A contract checkpoint converted for OpenVINO, no torch: the five steps of
    :class:`~model.engines.base.SegmenterBase`'s ``predict`` in numpy and OpenVINO.

    ``model_xml``: the converted model (:func:`convert`). ``precision``: ``fp32`` (default; hint
    pinned to f32 whatever the CPU) or ``bf16``. Calls are serialised (one infer request).
    """

    def __init__(self, model_xml: str | os.PathLike, contract: ckpt.Contract, info: ckpt.CheckpointInfo | None = None,
                 precision: str = "fp32", reason: str = "", batch_size: int = 8, threshold: float = 0.5):
        import openvino as ov

        if precision not in PRECISION_HINTS:
            raise ValueError(f"OpenVINO runs {' or '.join(PRECISION_HINTS)}, not {precision!r}")
        self.contract, self.info, self.threshold, self.batch_size = contract, info, threshold, batch_size
        model_xml = Path(model_xml)
        self.compiled = ov.Core().compile_model(str(model_xml), "CPU", {
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
            "PERFORMANCE_HINT": "LATENCY",
            "CACHE_DIR": str(model_xml.parent / "compiled"),
        })
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if precision == "fp32" and hint != "f32":  # the pin is the fidelity guarantee: never serve without it
            raise RuntimeError(f"OpenVINO compiled the model at {hint}, not the f32 asked for")
        # bf16 asked on a CPU without bf16 support: OpenVINO runs f32, and the About line says so.
        self.runtime = OpenVinoRuntime(precision, hint, int(self.compiled.get_property("INFERENCE_NUM_THREADS")), reason)
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()
        single_threaded_numpy_blas()
        self._mean = np.asarray(channel_values(contract.image_mean, contract.num_channels), np.float32)
        self._std = np.asarray(channel_values(contract.image_std, contract.num_channels), np.float32)

    @classmethod
    def load(cls, model: str | os.PathLike | None = None, revision: str | None = None, *, precision: str = "fp32",
             reason: str = "") -> OpenVinoSegmenter:
        """Resolve and verify a checkpoint as :meth:`Segmenter.load <model.engines.torch.Segmenter.load>` does;
        convert it on first use (torch is imported then only, and the conversion is logged)."""
        local_dir, info = ckpt.resolve(None if model is None else str(model), revision)
        contract = ckpt.read_contract(local_dir)
        folder = cache_dir(info, contract)
        if not (folder / MODEL_XML).is_file():
            log.warning("OpenVINO: converting the checkpoint once into %s (torch loads for it; later starts reuse it)",
                        folder)
            started = time.monotonic()
            from .torch import fold_decode_head

            torch_model = fold_decode_head(ckpt.load_model(local_dir).eval())
            try:
                convert(torch_model, contract, folder)
            except Exception as err:  # noqa: BLE001 - a read-only cache, an op OpenVINO cannot convert: one line
                raise ConversionError(f"Could not convert the checkpoint for OpenVINO ({type(err).__name__}: "
                                      f"{str(err).splitlines()[0] if str(err) else ''}); "
                                      f"UWMGI_ENGINE=torch serves it on torch.") from None
            log.warning("OpenVINO: converted in %.1f s", time.monotonic() - started)
        return cls(folder / MODEL_XML, contract, info, precision, reason)

    def preprocess(self, slices: np.ndarray) -> np.ndarray:
        """Raw slices ``(N, H, W)`` or ``(N, C, H, W)`` → the model's input ``(N, C, h, w) float32``, as torch's."""
        c = self.contract
        return pixel_values(stretched_inputs(slices), c.input_size, self._mean, self._std, c.rescale_factor)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Input ``(N, C, h, w)`` → logits ``(N, K, h/4, w/4) float32``, one slice per inference."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        with self._lock:
            return np.concatenate([self._request.infer({0: x[i:i + 1]})[0] for i in range(len(x))])

    def upsample(self, logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return resize(logits, size, antialias=False)

    def decide(self, logits: np.ndarray) -> np.ndarray:
        """Logits ``(N, K, H, W)`` at full size → organ masks ``(N, O, H, W)`` bool (:func:`decide`)."""
        return decide(logits, self.contract.organ_channels, self.contract.multi_label, self.threshold)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Logits ``(N, K, H, W)`` at full size → organ probabilities ``(N, O, H, W) float32`` (:func:`organ_probabilities`)."""
        return organ_probabilities(logits, self.contract.organ_channels, self.contract.multi_label)
