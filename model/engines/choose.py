"""Which engine runs the model, torch or OpenVINO, and the one call that loads a segmenter on it.

Imports only the standard library (and, when it loads, :mod:`model.engines.openvino`): the model's
process and ``python -m model.predict`` decide here, and with a cached OpenVINO model never
import torch or transformers (``tests/model/test_openvino.py`` checks ``sys.modules``).

Default per machine, by what was measured to win and hold the fidelity bar
(``benchmarks/README.md``, ``benchmarks/results/``):

- CPU with AVX-512 (x86): OpenVINO at fp32, its precision hint pinned to f32. On a 2-vCPU Zen 4
  it runs the folded model 1.8× faster than torch fp32 at batch 1, same masks.
- Any other CPU (AVX2-only, ARM): torch fp32. OpenVINO was not measured to win there (the
  release wheel cannot be capped to AVX2 on an AVX-512 machine), so it is not used there.
- A GPU: torch (fp16 autocast), whatever OpenVINO would do on the CPU.

``UWMGI_ENGINE=torch|openvino`` forces the engine; ``UWMGI_PRECISION`` the precision
(``exact`` and ``fp16`` exist on torch only).
"""

from __future__ import annotations

import importlib.util
import logging
import os

from .machine import cpu_flags, nvidia_gpu_present, requested_precision

log = logging.getLogger(__name__)

#: Environment variable that forces the engine: one of :data:`ENGINES`.
ENGINE_ENV = "UWMGI_ENGINE"
ENGINES = ("torch", "openvino")
#: Precisions OpenVINO runs here (``fp32`` is the default; ``bf16`` is opt-in, as on torch).
OPENVINO_PRECISIONS = ("fp32", "bf16")
#: CPU flags (as in /proc/cpuinfo) where OpenVINO fp32 was measured to beat torch fp32.
OPENVINO_WINS_FLAGS = frozenset({"avx512f"})


def choose_engine(precision: str | None = None, *, flags: frozenset[str] | None = None,
                  gpu: bool | None = None, engine: str | None = None) -> tuple[str, str]:
    """``(engine, reason)``: ``"torch"`` or ``"openvino"``, and why, for the About line.

    ``engine`` (else ``UWMGI_ENGINE``) forces it; ``precision`` is the one asked for (else the
    environment's). ``flags`` and ``gpu`` stand in for this machine's (tests, benchmarks).
    """
    engine = engine or os.environ.get(ENGINE_ENV, "").strip().lower() or None
    precision = precision or requested_precision()
    if engine is not None:
        if engine not in ENGINES:
            raise ValueError(f"{ENGINE_ENV} must be one of {', '.join(ENGINES)}, not {engine!r}")
        if engine == "openvino" and precision not in (None, *OPENVINO_PRECISIONS):
            raise ValueError(f"OpenVINO runs {' or '.join(OPENVINO_PRECISIONS)}, not {precision!r}")
        return engine, "forced"
    if precision not in (None, *OPENVINO_PRECISIONS):
        return "torch", f"precision {precision} runs on torch only"
    if nvidia_gpu_present() if gpu is None else gpu:
        return "torch", "GPU present"
    if importlib.util.find_spec("openvino") is None:
        return "torch", "OpenVINO is not installed"
    if not OPENVINO_WINS_FLAGS & (cpu_flags() if flags is None else flags):
        return "torch", "CPU without AVX-512, where OpenVINO was not measured to win"
    return "openvino", "CPU with AVX-512, where OpenVINO fp32 beats torch"


def load_segmenter(model: str | None = None, revision: str | None = None, *, engine: str | None = None,
                   precision: str | None = None):
    """The checkpoint ready to predict on the chosen engine: a :class:`~model.engines.torch.Segmenter`
    (torch) or a :class:`~model.engines.openvino.OpenVinoSegmenter`.

    With a cached OpenVINO conversion nothing here imports torch; without one the model is
    loaded with torch once, converted and cached (logged), then served by OpenVINO. If the
    conversion fails, a default choice falls back to torch (logged); a forced one raises.
    Raises :class:`~model.checkpoint.CheckpointError` for a checkpoint that cannot load.
    """
    asked = precision or requested_precision()
    chosen, reason = choose_engine(asked, engine=engine)
    if chosen == "openvino":
        from .openvino import ConversionError, OpenVinoSegmenter

        try:
            return OpenVinoSegmenter.load(model, revision, precision=asked or "fp32", reason=reason)
        except ConversionError as err:
            if reason == "forced":
                raise
            log.warning("%s Serving on torch instead.", err)
            reason = "OpenVINO could not convert this checkpoint"
    from dataclasses import replace

    from .torch import Segmenter, choose_runtime

    runtime = choose_runtime(precision=precision)  # None: it reads the environment itself
    return Segmenter.load(model, revision, runtime=replace(runtime, reason=f"{runtime.reason}; torch: {reason}"))
