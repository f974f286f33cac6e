"""Paths and small helpers that test modules import (``from conftest import`` is ambiguous once
several folders have a conftest.py, so nothing is imported from there)."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

from benchmarks.served import free_port  # noqa: F401 - the one helper, re-exported for the tests

REPO = Path(__file__).resolve().parents[1]
#: Real dataset pieces, read-only, laid next to the repository (see its README.md).
SHARED_DATA = REPO.parent / "shared" / "data"


def read_csv_table(path: Path) -> tuple[tuple[str, ...], list[dict[str, str]]]:
    """A CSV file with a header row: ``(columns, rows)``, each row a ``{column: text}`` dict."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return tuple(reader.fieldnames), list(reader)


def read_volume_shapes(path: Path) -> dict[str, tuple[int, int]]:
    """The shared data's ``rle/volumes.csv`` (``case_day,width,height,...``) as ``{case_day: (H, W)}``."""
    with open(path, newline="") as f:
        return {row["case_day"]: (int(row["height"]), int(row["width"])) for row in csv.DictReader(f)}


def decode_rle_file(path: Path, shapes: dict[str, tuple[int, int]] | None = None) -> dict:
    """Every case-day of an RLE file through :class:`model.rle.RleCsv`: ``{case_day: RleVolume}``, file order."""
    from model.rle import RleCsv

    rows = RleCsv(path)
    return {case_day: rows.volume(case_day, (shapes or {}).get(case_day)) for case_day in rows.case_days}


def require_tool(name: str) -> str:
    """The path of a command-line tool; skips when absent, fails under CI, whose .ci/run installs it."""
    import pytest

    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {name} is missing (apt-get install plastimatch dicom3tools)")
        pytest.skip(f"{name} is not installed (apt-get install plastimatch dicom3tools)")
    return path
