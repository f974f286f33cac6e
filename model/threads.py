"""Thread settings for a whole process, made by its entry point before torch loads.

Nothing here runs at import: ``python app.py``, ``python -m model.predict``, ``python -m train``
and the benchmarks call :func:`prefer_sleeping_threads` first thing, where the process starts.
Imports only the standard library.
"""

from __future__ import annotations

import os


def prefer_sleeping_threads() -> None:
    """Let OpenMP threads sleep at barriers instead of spinning, unless the environment already says.

    On small shared VMs (a 2-vCPU Space, CI) a spinning thread loses its time slice to other
    processes, and then every parallel region waits for a descheduled thread; B4 ran several times
    slower under load with spinning threads (``benchmarks/README.md``). libgomp reads
    ``OMP_WAIT_POLICY`` once, when torch loads it, so this must run before ``import torch``.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
