"""Paths and small helpers that test modules import (``from conftest import`` is ambiguous once
several folders have a conftest.py, so nothing is imported from there)."""

from __future__ import annotations

import socket
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Real dataset pieces, read-only, laid next to the repository (see its README.md).
SHARED_DATA = REPO.parent / "shared" / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
