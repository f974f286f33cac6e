"""The Kaggle layout reader, cache, split and slice dataset, on the synthetic fixture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kaggle_layout import BAR_COL, BAR_LEN, BAR_ROW, SYNTH_DEPTH, SYNTH_SCANS, SYNTH_SHAPE
from model import checkpoint as ckpt
from model.engines.torch import Segmenter
from model.engines.base import stack_slices
from tiny import tiny_model
from train import data
from train.datamodule import UWMGIDataModule


@pytest.fixture(scope="module")
def cache(synthetic_kaggle, tmp_path_factory):
    return data.build_cache(synthetic_kaggle.root, tmp_path_factory.mktemp("cache"))


def test_cache_holds_uint16_scans_and_every_organ_mask(synthetic_kaggle, cache):
    index = data.read_cache_index(cache)
    assert list(index) == sorted(SYNTH_SCANS)
    for case_day, truth in synthetic_kaggle.truth.items():
        image = np.load(cache / f"{case_day}.image.npy")
        assert image.dtype == np.uint16 and image.shape == (SYNTH_DEPTH, *SYNTH_SHAPE)
        assert image.max() > 2000  # 16-bit values survive, not squeezed to 8 bits
        masks = data.organ_masks(np.load(cache / f"{case_day}.masks.npy"))  # (O, D, H, W)
        np.testing.assert_array_equal(masks, truth)
    assert (synthetic_kaggle.truth["case7_day0"][0] & synthetic_kaggle.truth["case7_day0"][1]).any(), \
        "the fixture must contain overlapping organs"


def test_rle_is_read_row_major(cache):
    """The hand-written run "start length" covers BAR_LEN pixels along one row, not down a column."""
    masks = data.organ_masks(np.load(cache / "case12_day0.masks.npy"))
    bar = masks[2, 3]
    assert bar.sum() == BAR_LEN
    assert np.flatnonzero(bar.any(axis=1)).tolist() == [BAR_ROW]
    assert np.flatnonzero(bar.any(axis=0)).tolist() == list(range(BAR_COL, BAR_COL + BAR_LEN))


def test_cache_is_reused_until_train_csv_changes(synthetic_kaggle, cache):
    stamp = (cache / "index.json").stat().st_mtime_ns
    data.build_cache(synthetic_kaggle.root, cache)
    assert (cache / "index.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_group_kfold_never_shares_a_case(folds):
    case_days = list(SYNTH_SCANS)
    seen_val = []
    for fold in range(folds):
        train, val = data.split_cases(case_days, folds, fold)
        assert {data.case_of(cd) for cd in train}.isdisjoint({data.case_of(cd) for cd in val})
        assert sorted(train + val) == sorted(case_days)
        seen_val += val
    assert sorted(seen_val) == sorted(case_days)  # every scan is validated exactly once
    # Both days of case7 always fall on the same side.
    assert all(("case7_day0" in val) == ("case7_day3" in val)
               for val in (data.split_cases(case_days, folds, k)[1] for k in range(folds)))


def test_faulty_scans_are_dropped_and_empty_slices_kept(synthetic_kaggle, cache):
    dm = UWMGIDataModule(str(synthetic_kaggle.root), cache_dir=str(cache), folds=2, fold=0, size=32,
                         num_workers=0)
    dm.setup("fit")
    scans = {cd for cd, _ in dm.train_set.items + dm.val_set.items}
    assert "case7_day0" in data.FAULTY_SCANS and "case7_day0" not in scans and "case7_day3" in scans
    # Every slice of every kept scan, including the empty first and last slices.
    assert len(dm.train_set) + len(dm.val_set) == (len(SYNTH_SCANS) - 1) * SYNTH_DEPTH
    assert ("case12_day0", 0) in dm.train_set.items + dm.val_set.items


def test_empty_slice_fraction_zero_drops_only_empty_training_slices(synthetic_kaggle, cache):
    dm = UWMGIDataModule(str(synthetic_kaggle.root), cache_dir=str(cache), folds=2, size=32,
                         empty_slice_fraction=0.0, num_workers=0)
    dm.setup("fit")
    assert all(0 < d < SYNTH_DEPTH - 1 for _, d in dm.train_set.items)
    assert any(d == 0 for _, d in dm.val_set.items)  # validation keeps everything


@pytest.mark.parametrize("offsets", [None, [-2, 0, 2]])
def test_training_input_matches_the_apps_preprocessing(cache, offsets):
    """Without augmentation, a training input is exactly what Segmenter.preprocess makes of the same slice(s)."""
    dataset = data.SliceDataset(cache, [("case20_day5", 0), ("case20_day5", 4)], size=32, slice_offsets=offsets)
    raw = np.load(cache / "case20_day5.image.npy")
    contract = ckpt.Contract(multi_label=True, organ_channels=(0, 1, 2), input_size=(32, 32),
                             image_mean=ckpt.IMAGENET_MEAN, image_std=ckpt.IMAGENET_STD,
                             slice_offsets=tuple(offsets) if offsets else None)
    segmenter = Segmenter(tiny_model(multi_label=True), contract)
    for i, (_, d) in enumerate(dataset.items):
        served_input = stack_slices(raw, d, segmenter.slice_offsets)[None] if offsets else raw[d][None]
        expected = segmenter.preprocess(served_input)[0]
        torch.testing.assert_close(dataset[i]["pixel_values"], expected, atol=1e-5, rtol=0)


def test_blog_labels_put_overlaps_in_background(synthetic_kaggle, cache):
    truth = synthetic_kaggle.truth["case7_day3"]  # (O, D, H, W)
    d = int(np.flatnonzero((truth[0] & truth[1]).any(axis=(1, 2)))[0])
    item = data.SliceDataset(cache, [("case7_day3", d)], size=SYNTH_SHAPE, multi_label=False)[0]
    labels = item["labels"].numpy()
    overlap = truth[0, d] & truth[1, d]
    assert (labels[overlap] == 0).all()
    assert (labels[truth[0, d] & ~truth[1, d] & ~truth[2, d]] == 1).all()
    assert (labels[truth[1, d] & ~truth[0, d]] == 2).all()
    multi = data.SliceDataset(cache, [("case7_day3", d)], size=SYNTH_SHAPE, multi_label=True)[0]["labels"]
    assert multi[0][torch.from_numpy(overlap)].all() and multi[1][torch.from_numpy(overlap)].all()


def test_augmentations_keep_image_and_masks_aligned(cache):
    dataset = data.SliceDataset(cache, [("case20_day5", 3)] * 4, size=SYNTH_SHAPE, multi_label=True,
                                augment=data.train_augmentations())
    for item in dataset:
        x, labels = item["pixel_values"], item["labels"]
        assert x.shape == (3, *SYNTH_SHAPE) and labels.shape == (3, *SYNTH_SHAPE)
        assert set(labels.unique().tolist()) <= {0.0, 1.0}
        # Organs are bright in the fixture: the labelled pixels stay brighter than the rest.
        organ = labels.any(0)
        if organ.any():
            assert x[0][organ].mean() > x[0][~organ].mean()
