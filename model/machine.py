"""What this machine and this process's environment ask for: CPU flags, a GPU, the precision variables.

A leaf module (standard library only): :mod:`model.engine` picks an engine from it and
:mod:`model.inference` a precision, without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable that picks the precision (``model.inference.PRECISIONS``).
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
