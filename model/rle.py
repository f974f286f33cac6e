"""Kaggle run-length encoding of organ masks, and ``train.csv``-style files of them.

A mask is flattened in row-major (C) order over ``(height, width)`` before run-length
encoding, with 1-indexed starts. Checked on the real ``train.csv`` (``tests/model/test_rle.py``):
read row-major, none of its 124,140 runs crosses the end of an image row; read column-major,
thousands cross the end of a column on the 360x310 (W x H) scans. An organ's run is a piece
of one line, so row-major is the order the masks were written in.

A file has one row per slice and organ: ``id,class,segmentation`` for ground truth, or
``id,class,predicted`` for a submission. Slice ids look like ``case123_day20_slice_0065``.
A whole Kaggle ``train.csv`` decodes to ~8 GB of masks, so :class:`RleCsv` reads the file
once as strings and decodes one case-day at a time.
"""

from __future__ import annotations

import csv
import gzip
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.labels import KAGGLE_CLASSES, ORGANS
from model.scans.kaggle import CASE_DAY_PATTERN

_SLICE_ID = re.compile(rf"(?P<case_day>{CASE_DAY_PATTERN})_slice_(?P<slice>\d+)")
_CLASS_INDEX = {kaggle: ORGANS.index(organ) for organ, kaggle in KAGGLE_CLASSES.items()}
#: Accepted names of the RLE column, ground truth first.
RLE_COLUMNS = ("segmentation", "predicted")


def rle_encode(mask: np.ndarray) -> str:
    """Encode a ``(H, W)`` bool mask as ``"start length ..."`` (1-indexed, row-major); ``""`` if empty."""
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise TypeError(f"rle_encode expects a bool mask, got {mask.dtype} (threshold it first)")
    if mask.ndim != 2:
        raise ValueError(f"rle_encode expects an (H, W) mask, got shape {mask.shape}")
    padded = np.concatenate(([False], mask.ravel(order="C"), [False]))
    # Positions where the value changes, 1-indexed: alternately a run's start and its end + 1.
    edges = np.flatnonzero(padded[1:] != padded[:-1]) + 1
    runs = edges.reshape(-1, 2)
    runs[:, 1] -= runs[:, 0]
    return " ".join(map(str, runs.ravel().tolist()))


def rle_decode(rle: str | float | None, shape: tuple[int, int]) -> np.ndarray:
    """Decode a Kaggle RLE string into a ``(H, W)`` bool mask for ``shape = (H, W)``.

    ``""``, ``None`` and NaN (an empty cell read by pandas) decode to an empty mask.
    Raises ``ValueError`` unless the string is pairs of positive integers whose runs are
    sorted, do not overlap and stay inside the image.
    """
    height, width = _check_shape(shape)
    size = height * width
    if rle is None or (isinstance(rle, float) and math.isnan(rle)):
        return np.zeros((height, width), dtype=bool)
    if not isinstance(rle, str):
        raise ValueError(f"RLE must be a string, got {type(rle).__name__}: {rle!r}")
    tokens = rle.split()
    if not tokens:
        return np.zeros((height, width), dtype=bool)
    if len(tokens) % 2:
        raise ValueError(f"RLE has an odd number of values ({len(tokens)}): {_clip(rle)}")
    bad = next((t for t in tokens if not (t.isascii() and t.isdigit() and len(t) < 19)), None)
    if bad is not None:  # 19 digits would overflow int64; no image has that many pixels
        raise ValueError(f"RLE value {bad!r} is not a pixel number or run length: {_clip(rle)}")
    runs = np.array(tokens, dtype=np.int64).reshape(-1, 2)
    starts, lengths = runs[:, 0], runs[:, 1]
    ends = starts + lengths  # 1-indexed, exclusive
    if starts.min() < 1 or lengths.min() < 1:
        raise ValueError(f"RLE starts and lengths must be at least 1: {_clip(rle)}")
    if np.any(starts[1:] < ends[:-1]):
        raise ValueError(f"RLE runs are unsorted or overlap: {_clip(rle)}")
    if ends[-1] - 1 > size:
        raise ValueError(
            f"RLE run ends at pixel {ends[-1] - 1}, past the {height}x{width} image ({size} pixels)"
        )
    delta = np.zeros(size + 1, dtype=np.int8)
    delta[starts - 1] += 1
    delta[ends - 1] -= 1  # runs do not overlap, so each index gets at most one start and one end
    return (np.cumsum(delta[:-1], dtype=np.int8) > 0).reshape(height, width)


def parse_slice_id(kaggle_id: str) -> tuple[str, int]:
    """``"case123_day20_slice_0065"`` → ``("case123_day20", 65)``; ``ValueError`` otherwise."""
    match = _SLICE_ID.fullmatch(kaggle_id.strip())
    if match is None:
        raise ValueError(f"not a Kaggle slice id like 'case123_day20_slice_0065': {kaggle_id!r}")
    return match["case_day"], int(match["slice"])


def slice_id(case_day: str, slice_number: int) -> str:
    """``("case123_day20", 65)`` → ``"case123_day20_slice_0065"``."""
    return f"{case_day}_slice_{slice_number:04d}"


@dataclass(frozen=True)
class RleVolume:
    """The organ masks of one scan (one case and day), as read from or written to a CSV.

    ``slice_numbers``: the slice numbers the file lists, ascending; numbers it skips are not
    filled in. ``masks``: ``(O, D, H, W) bool``, organs in :data:`model.labels.ORGANS` order,
    one slice per entry of ``slice_numbers``.
    """

    case_day: str
    slice_numbers: tuple[int, ...]
    masks: np.ndarray

    def __post_init__(self) -> None:
        if self.masks.dtype != bool:
            raise TypeError(f"{self.case_day}: masks must be bool, got {self.masks.dtype}")
        if self.masks.ndim != 4 or self.masks.shape[:2] != (len(ORGANS), len(self.slice_numbers)):
            raise ValueError(
                f"{self.case_day}: masks must be (O={len(ORGANS)}, D={len(self.slice_numbers)}, H, W),"
                f" got {self.masks.shape}"
            )


class RleCsv:
    """A ``train.csv`` (or ``.csv.gz``) or submission file read once as RLE strings, decoded one case-day at a time.

    Columns: ``id``, ``class`` and ``segmentation`` or ``predicted``; optionally ``height`` and
    ``width``. The strings of a whole Kaggle ``train.csv`` take tens of MB; its decoded masks
    take ~8 GB, so :meth:`volume` decodes only the case-day asked for, and does so on every call.
    Rows of a case-day need not be contiguous.

    With ``case_days``, rows of other case-days are skipped once their id and class are checked:
    only the requested scans' strings are kept, and duplicate rows and bad RLE are found only there.
    A requested case-day the file lacks is simply absent from :attr:`case_days`.
    """

    def __init__(self, path: str | Path, case_days: Iterable[str] | None = None):
        self.path = path
        wanted = None if case_days is None else set(case_days)
        self._slices: dict[str, dict[int, list[str | None]]] = {}
        #: ``{case_day: (H, W)}`` from the file's ``height`` and ``width`` columns; empty without them.
        self.shapes: dict[str, tuple[int, int]] = {}
        opener = gzip.open if str(path).endswith(".gz") else open  # the shared kaggle/train.csv.gz
        with opener(path, "rt", newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            rle_column = next((c for c in RLE_COLUMNS if c in columns), None)
            if "id" not in columns or "class" not in columns or rle_column is None:
                raise ValueError(f"{path}: need columns id, class and one of {RLE_COLUMNS}; got {columns}")
            has_shape = "height" in columns and "width" in columns
            for line, row in enumerate(reader, start=2):
                try:
                    case_day, number = parse_slice_id(row["id"] or "")
                except ValueError as err:
                    raise ValueError(f"{path}:{line}: {err}") from None
                organ = _CLASS_INDEX.get(row["class"])
                if organ is None:
                    raise ValueError(f"{path}:{line}: unknown class {row['class']!r}")
                if wanted is not None and case_day not in wanted:
                    continue
                rles = self._slices.setdefault(case_day, {}).setdefault(number, [None] * len(ORGANS))
                if rles[organ] is not None:
                    raise ValueError(f"{path}:{line}: second row for {row['id']} {row['class']}")
                rles[organ] = row[rle_column] or ""
                if has_shape:
                    shape = (int(row["height"]), int(row["width"]))
                    if self.shapes.setdefault(case_day, shape) != shape:
                        raise ValueError(f"{path}:{line}: {case_day} changes shape to {shape}")

    @property
    def case_days(self) -> tuple[str, ...]:
        """The case-days kept, in order of first appearance in the file."""
        return tuple(self._slices)

    def __contains__(self, case_day: object) -> bool:
        return case_day in self._slices

    def slice_numbers(self, case_day: str) -> tuple[int, ...]:
        """The slice numbers the file lists for ``case_day``, ascending (nothing decoded)."""
        return tuple(sorted(self._by_number(case_day)))

    def volume(self, case_day: str, shape: tuple[int, int] | None = None) -> RleVolume:
        """Decode one case-day: masks ``(O, D, H, W) bool``, ``(H, W)`` from ``shape`` or the file.

        A slice missing a row for some organ has that organ empty.
        """
        by_number = self._by_number(case_day)
        shape = shape or self.shapes.get(case_day)
        if shape is None:
            raise ValueError(f"{self.path}: no (height, width) for {case_day}; pass shapes=")
        numbers = sorted(by_number)
        masks = np.zeros((len(ORGANS), len(numbers), *shape), dtype=bool)
        for d, number in enumerate(numbers):
            for o, rle in enumerate(by_number[number]):
                try:
                    masks[o, d] = rle_decode(rle, shape)
                except ValueError as err:
                    raise ValueError(f"{self.path}: {slice_id(case_day, number)} {ORGANS[o]}: {err}") from None
        return RleVolume(case_day, tuple(numbers), masks)

    def masks_on(self, case_day: str, slice_numbers: Iterable[int], shape: tuple[int, int] | None = None,
                 strict: bool = False) -> RleVolume:
        """One case-day's masks on a scan's slices: ``train.csv`` → slice masks, the one way.

        ``slice_numbers``: the scan's slices in its order; the result has one slice per entry,
        ``(O, D, H, W) bool``. A slice the file has no rows for is empty (as in the competition's
        file); rows for slices the scan lacks are dropped, or with ``strict`` refused with
        ``ValueError`` when they hold a mask.
        """
        slice_numbers = tuple(slice_numbers)
        volume = self.volume(case_day, shape)
        masks = np.zeros((len(ORGANS), len(slice_numbers), *volume.masks.shape[2:]), dtype=bool)
        position = {n: d for d, n in enumerate(slice_numbers)}
        for d, number in enumerate(volume.slice_numbers):
            if number in position:
                masks[:, position[number]] = volume.masks[:, d]
            elif strict and volume.masks[:, d].any():
                raise ValueError(f"{slice_id(case_day, number)}: {Path(self.path).name} has a mask for a slice "
                                 "with no image")
        return RleVolume(case_day, slice_numbers, masks)

    def _by_number(self, case_day: str) -> dict[int, list[str | None]]:
        if case_day not in self._slices:
            raise ValueError(f"{self.path}: no rows for {case_day}")
        return self._slices[case_day]


def write_rle_csv(path: str | Path, volumes: Iterable[RleVolume], column: str = "predicted") -> None:
    """Write volumes as ``id,class,<column>`` rows, one per slice and organ (what :class:`RleCsv` reads)."""
    if column not in RLE_COLUMNS:
        raise ValueError(f"column must be one of {RLE_COLUMNS}, got {column!r}")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "class", column])
        for volume in volumes:
            for d, number in enumerate(volume.slice_numbers):
                kaggle_id = slice_id(volume.case_day, number)
                for o, organ in enumerate(ORGANS):
                    writer.writerow([kaggle_id, KAGGLE_CLASSES[organ], rle_encode(volume.masks[o, d])])


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    if len(shape) != 2 or not all(isinstance(n, (int, np.integer)) and n > 0 for n in shape):
        raise ValueError(f"shape must be two positive integers (H, W), got {shape!r}")
    return int(shape[0]), int(shape[1])


def _clip(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
