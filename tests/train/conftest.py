"""Kaggle-layout fixtures for the training package: a synthetic one and one built from the real pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kaggle_layout import (BAR_COL, BAR_LEN, BAR_ROW, BAR_RLE, SYNTH_DEPTH, SYNTH_SCANS, KaggleFixture,
                           synthetic_scan, write_kaggle)
from model.labels import ORGANS
from tiny import tiny_model


@pytest.fixture(scope="session")
def synthetic_kaggle(tmp_path_factory) -> KaggleFixture:
    rng = np.random.default_rng(0)
    scans, truth = {}, {}
    for case_day in SYNTH_SCANS:
        scans[case_day], truth[case_day] = synthetic_scan(rng)
    # One hand-written RLE (large bowel, case12_day0, slice index 3) checks the row-major order.
    truth["case12_day0"][2, 3] = False
    truth["case12_day0"][2, 3, BAR_ROW, BAR_COL:BAR_COL + BAR_LEN] = True
    numbers = {cd: list(range(1, SYNTH_DEPTH + 1)) for cd in SYNTH_SCANS}
    return write_kaggle(tmp_path_factory.mktemp("synthetic_kaggle"), scans, truth, numbers,
                        rle_override={("case12_day0", 3, 2): BAR_RLE})


@pytest.fixture(scope="session")
def pairs_kaggle(shared_data, tmp_path_factory) -> KaggleFixture:
    """The 21 real labelled slices of ``../shared/data/pairs`` as a Kaggle layout.

    8-bit images become 16-bit scans (×257, the same picture); label maps become RLE rows.
    Each case-day's slices form one scan, in slice-number order.
    """
    from model.rle import parse_slice_id

    by_scan: dict[str, list[tuple[int, Path]]] = {}
    for path in sorted((shared_data / "pairs" / "images").glob("*.png")):
        case_day, number = parse_slice_id(path.stem)
        by_scan.setdefault(case_day, []).append((number, path))
    scans, truth, numbers = {}, {}, {}
    for case_day, items in by_scan.items():
        items.sort()
        images = [np.asarray(Image.open(p).convert("L"), dtype=np.uint16) * 257 for _, p in items]
        labels = [np.asarray(Image.open(shared_data / "pairs" / "masks" / p.name)) for _, p in items]
        scans[case_day] = np.stack(images)
        truth[case_day] = np.stack([np.stack(labels) == o + 1 for o in range(len(ORGANS))])
        numbers[case_day] = [n for n, _ in items]
    return write_kaggle(tmp_path_factory.mktemp("pairs_kaggle"), scans, truth, numbers)


@pytest.fixture(scope="session")
def tiny_init(tmp_path_factory) -> Path:
    """A tiny random SegFormer saved with ``save_pretrained``: a local ``--model.init``, no Hub."""
    path = tmp_path_factory.mktemp("tiny_init")
    tiny_model(multi_label=False).save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Train on one thread: on a busy 2-core machine two spinning threads ran a tiny step 20× slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
