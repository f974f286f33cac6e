"""The machine facts: CPU flags, a GPU, the precision variables, and the process's thread settings.

A leaf module (standard library only): :mod:`model.engines.choose` picks an engine from it and
:mod:`model.engines.torch` a precision, without importing each other. Nothing here runs at
import: ``python app.py``, ``python -m model.predict``, ``python -m train`` and the benchmarks
call :func:`prefer_sleeping_threads` first thing, where the process starts.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable that picks the precision (``model.engines.torch.PRECISIONS``).
PRECISION_ENV = "UWMGI_PRECISION"
#: ``UWMGI_FP32=1`` is the older spelling of ``UWMGI_PRECISION=exact``, still honoured.
FORCE_FP32_ENV = "UWMGI_FP32"


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where that file does not exist)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def nvidia_gpu_present() -> bool:
    """Whether an NVIDIA driver is loaded: a GPU torch may use (checked without importing torch)."""
    return Path("/proc/driver/nvidia/version").exists()


def requested_precision() -> str | None:
    """The precision the environment asks for (``UWMGI_PRECISION``, else ``UWMGI_FP32=1`` → ``exact``), or ``None``."""
    precision = os.environ.get(PRECISION_ENV, "").strip().lower() or None
    if precision is None and os.environ.get(FORCE_FP32_ENV, "").lower() in ("1", "true", "yes"):
        return "exact"
    return precision


def prefer_sleeping_threads() -> None:
    """Let OpenMP threads sleep at barriers instead of spinning, unless the environment already says.

    On small shared VMs (a 2-vCPU Space, CI) a spinning thread loses its time slice to other
    processes, and then every parallel region waits for a descheduled thread; B4 ran several times
    slower under load with spinning threads (``benchmarks/README.md``). libgomp reads
    ``OMP_WAIT_POLICY`` once, when torch loads it, so this must run before ``import torch``.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
