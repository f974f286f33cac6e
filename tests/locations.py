"""Paths and small helpers that test modules import (``from conftest import`` is ambiguous once
several folders have a conftest.py, so nothing is imported from there)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.served import free_port  # noqa: F401 - the one helper, re-exported for the tests

REPO = Path(__file__).resolve().parents[1]
#: Real dataset pieces, read-only, laid next to the repository (see its README.md).
SHARED_DATA = REPO.parent / "shared" / "data"
