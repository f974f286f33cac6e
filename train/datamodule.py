"""The LightningDataModule: Kaggle layout → cache → case-level fold → 2D or 2.5D slice loaders."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from . import data


class UWMGIDataModule(L.LightningDataModule):
    """Slices of the UW-Madison GI Tract training set, split by patient.

    Args:
        data_dir: the Kaggle layout (``train.csv`` and ``train/caseN/caseN_dayD/scans/``).
        cache_dir: where the per-scan ``.npy`` cache goes (default ``DATA_DIR/npy_cache``).
        fold: which GroupKFold fold (over cases) is the validation set.
        folds: number of folds.
        size: training input size (square), written into the exported checkpoint.
        slice_offsets: 2.5D channels as neighbouring-slice offsets (e.g. ``[-2, 0, 2]``); ``None``
            for one slice replicated to 3 channels, as the blog did.
        multi_label: one sigmoid channel per organ (overlaps kept) instead of softmax class ids.
        drop_faulty: leave out :data:`train.data.FAULTY_SCANS`.
        empty_slice_fraction: fraction of organ-free training slices kept (chosen once, seeded).
            The default keeps all: the blog dropped them all and never learned "no organ here".
            Validation always keeps every slice.
        augment: use the training augmentations (training loader only).
        batch_size: per device.
        num_workers: data-loader processes per device.
        seed: seeds the empty-slice subsample.
    """

    def __init__(self, data_dir: str, cache_dir: str | None = None, fold: int = 0, folds: int = 5,
                 size: int = 288, slice_offsets: list[int] | None = None, multi_label: bool = True,
                 drop_faulty: bool = True, empty_slice_fraction: float = 1.0, augment: bool = True,
                 batch_size: int = 8, num_workers: int = 2, seed: int = 42):
        super().__init__()
        self.save_hyperparameters()
        self.cache_dir = Path(cache_dir) if cache_dir else Path(data_dir) / "npy_cache"
        self.train_set: data.SliceDataset | None = None
        self.val_set: data.SliceDataset | None = None

    def prepare_data(self) -> None:
        data.build_cache(self.hparams.data_dir, self.cache_dir)  # once per node (local rank 0)

    def split(self) -> tuple[list[str], list[str]]:
        """``(train, val)`` case-days of this fold, faulty scans dropped when asked."""
        index = data.read_cache_index(self.cache_dir)
        train, val = data.split_cases(list(index), self.hparams.folds, self.hparams.fold)
        if self.hparams.drop_faulty:
            train, val = ([cd for cd in part if cd not in data.FAULTY_SCANS] for part in (train, val))
        return train, val

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        train_days, val_days = self.split()
        common = dict(size=hp.size, slice_offsets=hp.slice_offsets, multi_label=hp.multi_label)
        self.train_set = data.SliceDataset(self.cache_dir, self._train_items(train_days), **common,
                                           augment=data.train_augmentations() if hp.augment else None)
        self.val_set = data.SliceDataset(self.cache_dir, self._items(val_days), **common)

    def _items(self, case_days: list[str]) -> list[tuple[str, int]]:
        index = data.read_cache_index(self.cache_dir)
        return [(cd, d) for cd in case_days for d in range(len(index[cd]["slices"]))]

    def _train_items(self, case_days: list[str]) -> list[tuple[str, int]]:
        fraction = self.hparams.empty_slice_fraction
        if fraction >= 1:
            return self._items(case_days)
        rng = np.random.default_rng(self.hparams.seed)
        keep = []
        for cd in case_days:
            has_organ = np.load(self.cache_dir / f"{cd}.masks.npy", mmap_mode="r").any(axis=(1, 2))
            keep += [(cd, d) for d, full in enumerate(has_organ) if full or rng.random() < fraction]
        return keep

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        hp = self.hparams
        return DataLoader(dataset, batch_size=hp.batch_size, shuffle=shuffle, num_workers=hp.num_workers,
                          collate_fn=data.collate, persistent_workers=hp.num_workers > 0,
                          drop_last=shuffle and len(dataset) > hp.batch_size)
