"""Fixtures for the inference package's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.rle import RleVolume, read_rle_csv, read_volume_shapes


@pytest.fixture(scope="session")
def rle_volumes(shared_data: Path) -> dict[str, RleVolume]:
    """The 9 real ground-truth volumes of ``rle/train.csv``, decoded once per session."""
    rle = shared_data / "rle"
    return read_rle_csv(rle / "train.csv", read_volume_shapes(rle / "volumes.csv"))
