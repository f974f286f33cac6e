"""The Kaggle UW-Madison GI Tract layout, read directly, cached once, served as 2D or 2.5D slices.

Layout: ``DATA_DIR/train.csv`` (``id,class,segmentation``, 3 rows per slice, RLE via
:mod:`model.rle`) and ``DATA_DIR/train/caseN/caseN_dayD/scans/slice_NNNN_W_H_PW_PH.png``
(16-bit greyscale, width before height in the name).

Data preparation is a separate step (:func:`build_cache`, run by ``prepare_data``): every scan
becomes ``<case_day>.image.npy`` ``(D, H, W) uint16`` and ``<case_day>.masks.npy``
``(D, H, W) uint8`` with bit ``o`` set where organ ``ORGANS[o]`` is (the mask download's codec,
:func:`model.mask_png.encode_mask_png`), so overlaps survive. An epoch then reads memory-mapped
arrays instead of decoding ~38k PNGs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model.checkpoint import IMAGENET_MEAN, IMAGENET_STD
from model.engines import torch as torch_engine
from model.engines.base import stack_slices
from model.image import normalize_intensity, read_slice
from model.labels import ORGANS
from model.mask_png import decode_mask_png, encode_mask_png
from model.rle import RleCsv
from model.scans.base import ScanError
from model.scans.kaggle import case_of, scan_folders  # case_of: the patient, the unit of the split
from model.scans.slices import kaggle_order

#: Scans the competition hosts reported as wrongly segmented, dropped when ``drop_faulty`` is on.
#: Source: the hosts' note on the Kaggle discussion board of "UW-Madison GI Tract Image
#: Segmentation" (2022), as quoted in this project's issue #3. Keep the list here and only here.
FAULTY_SCANS: tuple[str, ...] = ("case7_day0", "case81_day30")

_CACHE_VERSION = 1


@dataclass(frozen=True)
class ScanFiles:
    """One scan's slice files, sorted by slice number."""

    case_day: str
    slice_numbers: tuple[int, ...]
    paths: tuple[Path, ...]
    shape: tuple[int, int]  # (H, W)


def index_scans(data_dir: str | Path) -> dict[str, ScanFiles]:
    """Find every scan under ``data_dir/train``; keyed by case-day, sorted by name.

    The folders and the slice names are read as the app reads them (:mod:`model.scans.kaggle`,
    :func:`model.scans.slices.kaggle_order`); the pixels are read here, kept 16-bit for the cache.
    """
    scans = {}
    for case_day, scan_dir in scan_folders(data_dir).items():
        paths = list(scan_dir.glob("slice_*.png"))
        if not paths:
            continue
        try:
            kaggle = kaggle_order(paths)
        except ScanError as err:
            raise ValueError(f"{scan_dir}: {err}") from None
        if kaggle is None:
            raise ValueError(f"{scan_dir}: not Kaggle slice names slice_NNNN_W_H_PW_PH.png")
        order, names = kaggle
        shapes = {(name.height, name.width) for name in names}
        if len(shapes) != 1:
            raise ValueError(f"{scan_dir}: slices of different sizes {sorted(shapes)}")
        scans[case_day] = ScanFiles(case_day, tuple(names[i].slice_number for i in order),
                                    tuple(paths[i] for i in order), shapes.pop())
    if not scans:
        raise FileNotFoundError(f"no scans under {Path(data_dir) / 'train'}/caseN/caseN_dayD/scans/")
    return dict(sorted(scans.items()))


def read_scan(files: ScanFiles) -> np.ndarray:
    """Decode a scan's slices into ``(D, H, W) uint16`` (8-bit files are widened, values kept)."""
    scan = np.zeros((len(files.paths), *files.shape), dtype=np.uint16)
    for d, path in enumerate(files.paths):
        image = read_slice(path)
        if image.shape != files.shape:
            raise ValueError(f"{path}: decoded {image.shape}, the name says {files.shape}")
        if image.min() < 0 or image.max() > np.iinfo(np.uint16).max:
            raise ValueError(f"{path}: values outside 0..65535")
        scan[d] = image
    return scan


#: Cached organ bits ``(...) uint8`` → ``(O, ...) bool``: the mask download's codec, one bit per organ.
organ_masks = decode_mask_png


def read_scan_masks(truth: RleCsv, files: ScanFiles) -> np.ndarray:
    """One scan's ``train.csv`` masks → ``(D, H, W) uint8`` organ bits, aligned with ``files``.

    Decodes only this scan. Slices without rows are empty, as in the competition's file.
    """
    if files.case_day not in truth:
        return np.zeros((len(files.slice_numbers), *files.shape), dtype=np.uint8)
    return encode_mask_png(truth.masks_on(files.case_day, files.slice_numbers, files.shape, strict=True).masks)


def build_cache(data_dir: str | Path, cache_dir: str | Path) -> Path:
    """Convert the Kaggle layout once into per-scan ``.npy`` files; reuse them while ``train.csv`` is unchanged.

    Writes ``index.json`` last, so an interrupted build is redone rather than half-used.
    """
    data_dir, cache_dir = Path(data_dir), Path(cache_dir)
    csv_path = data_dir / "train.csv"
    stat = csv_path.stat()
    stamp = {"version": _CACHE_VERSION, "data_dir": str(data_dir.resolve()),
             "train_csv": [stat.st_size, stat.st_mtime_ns]}
    index_path = cache_dir / "index.json"
    if index_path.is_file() and json.loads(index_path.read_text()).get("stamp") == stamp:
        return cache_dir
    cache_dir.mkdir(parents=True, exist_ok=True)
    truth = RleCsv(csv_path)  # RLE strings only; each scan is decoded in turn
    scans = {}
    for case_day, files in index_scans(data_dir).items():
        for suffix, array in (("image", read_scan(files)), ("masks", read_scan_masks(truth, files))):
            tmp = cache_dir / f"{case_day}.{suffix}.tmp.npy"
            np.save(tmp, array)
            os.replace(tmp, cache_dir / f"{case_day}.{suffix}.npy")
        scans[case_day] = {"slices": list(files.slice_numbers), "shape": list(files.shape)}
    index_path.write_text(json.dumps({"stamp": stamp, "scans": scans}, indent=1))
    return cache_dir


def read_cache_index(cache_dir: str | Path) -> dict[str, dict]:
    """``{case_day: {"slices": [...], "shape": [H, W]}}`` of a cache written by :func:`build_cache`."""
    return json.loads((Path(cache_dir) / "index.json").read_text())["scans"]


def split_cases(case_days: list[str], folds: int, fold: int) -> tuple[list[str], list[str]]:
    """GroupKFold over patients: ``(train, val)`` case-days of ``fold``; a case is never on both sides.

    Deterministic for a given list of case-days (scikit-learn's GroupKFold without shuffling).
    ``folds=1`` trains on every case and validates on none: fine-tuning on corrections made in the
    app (``<scan>_corrections.zip``), which may hold a single case.
    """
    from sklearn.model_selection import GroupKFold

    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in 0..{folds - 1}, got {fold}")
    case_days = sorted(case_days)
    if folds == 1:
        return case_days, []
    groups = [case_of(cd) for cd in case_days]
    if len(set(groups)) < folds:
        raise ValueError(f"{folds} folds need at least {folds} cases, the data has {len(set(groups))}")
    train_idx, val_idx = list(GroupKFold(n_splits=folds).split(case_days, groups=groups))[fold]
    return [case_days[i] for i in train_idx], [case_days[i] for i in val_idx]


def pixel_values(stack_u8: np.ndarray, size: int | tuple[int, int], num_channels: int = 3,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """A normalised stack ``(C, H, W) uint8`` → model input ``(num_channels, h, w) float32``,
    through the serving code's own :func:`model.engines.torch.pixel_values`."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    x = torch.from_numpy(np.ascontiguousarray(stack_u8)).float()[None]
    return torch_engine.pixel_values(x, size, torch_engine.channel_stats(mean, num_channels),
                                  torch_engine.channel_stats(std, num_channels))[0]


def train_augmentations():
    """The training-only augmentations (albumentations), applied at native size before the resize.

    The blog passed the rotation limit in radians to a parameter that takes degrees (so it rotated
    by under a degree); here it is ±15 real degrees.
    """
    import albumentations as A

    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.Affine(translate_percent=(-0.0625, 0.0625), scale=(0.9, 1.1), rotate=(-15.0, 15.0), p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
        A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.05, 0.1), hole_width_range=(0.05, 0.1),
                        fill=0, fill_mask=None, p=0.5),
    ])


class SliceDataset(torch.utils.data.Dataset):
    """Slices of cached scans as model inputs and targets.

    Each item is a dict: ``pixel_values`` ``(C, h, w) float32``; ``labels`` at the training size,
    ``(O, h, w) float32`` for multi-label heads or ``(h, w) int64`` class ids for softmax heads
    (pixels of two organs become background there, as the blog did); ``organ_masks`` ``(O, H, W)
    bool`` at native size (the metric's truth); ``case_day`` and ``slice_index`` (into the scan).
    """

    def __init__(self, cache_dir: str | Path, items: list[tuple[str, int]], size: int,
                 slice_offsets: list[int] | None = None, multi_label: bool = True, augment=None):
        self.cache_dir = Path(cache_dir)
        self.items = items
        self.size = size
        self.slice_offsets = list(slice_offsets) if slice_offsets else None
        self.multi_label = multi_label
        self.augment = augment
        self._scans: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # opened lazily, per worker

    def __len__(self) -> int:
        return len(self.items)

    def scan(self, case_day: str) -> tuple[np.ndarray, np.ndarray]:
        """Memory-mapped ``(image (D, H, W) uint16, masks (D, H, W) uint8 bits)`` of a scan."""
        if case_day not in self._scans:
            self._scans[case_day] = tuple(np.load(self.cache_dir / f"{case_day}.{s}.npy", mmap_mode="r")
                                          for s in ("image", "masks"))
        return self._scans[case_day]

    def __getitem__(self, i: int) -> dict:
        case_day, d = self.items[i]
        image, bits = self.scan(case_day)
        stack = normalize_intensity(stack_slices(image, d, self.slice_offsets or [0]))  # as served
        masks = organ_masks(np.asarray(bits[d]))  # (O, H, W) bool
        target = masks
        if self.augment is not None:
            out = self.augment(image=stack.transpose(1, 2, 0), mask=masks.transpose(1, 2, 0).astype(np.uint8))
            stack, target = out["image"].transpose(2, 0, 1), out["mask"].transpose(2, 0, 1).astype(bool)
        x = pixel_values(stack, self.size, num_channels=len(self.slice_offsets or [0, 0, 0]))
        small = F.interpolate(torch.from_numpy(np.ascontiguousarray(target)).float()[None], size=x.shape[-2:],
                              mode="nearest-exact")[0]
        if self.multi_label:
            labels = small
        else:
            ids = torch.arange(1, len(ORGANS) + 1).view(-1, 1, 1)
            labels = torch.where(small.sum(0) == 1, (small * ids).sum(0), 0).long()
        return {"pixel_values": x, "labels": labels, "organ_masks": torch.from_numpy(masks),
                "case_day": case_day, "slice_index": d}


def collate(items: list[dict]) -> dict:
    """Stack inputs and targets; keep native-size masks (sizes differ between scans) as a list."""
    return {
        "pixel_values": torch.stack([it["pixel_values"] for it in items]),
        "labels": torch.stack([it["labels"] for it in items]),
        "organ_masks": [it["organ_masks"] for it in items],
        "case_day": [it["case_day"] for it in items],
        "slice_index": [it["slice_index"] for it in items],
    }
