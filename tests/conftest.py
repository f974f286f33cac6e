"""Shared fixtures: offline environment, tiny checkpoints and the real data in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# As model.inference does for the app; here it must precede the test modules' own `import torch`.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def require_shared_data() -> Path:
    """``../shared/data``; skips when absent, but fails under CI, where it must be present."""
    if not (SHARED_DATA / "README.md").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the shared test data is missing at {SHARED_DATA}")
        pytest.skip(f"real data not available at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_shared_data()


@pytest.fixture(scope="session")
def softmax_ckpt(tmp_path_factory) -> Path:
    from tiny import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("softmax_ckpt"), multi_label=False)


@pytest.fixture(scope="session")
def multilabel_ckpt(tmp_path_factory) -> Path:
    from tiny import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("multilabel_ckpt"), multi_label=True, seed=1)
