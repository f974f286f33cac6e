"""Kaggle slice files (``slice_NNNN_W_H_PW_PH.png``) or other slice images, stacked into a scan."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..image import DEFAULT_PIXEL_SPACING_MM, ImageError, KaggleSliceName, parse_kaggle_name, read_slice
from .base import DEFAULT_SLICE_THICKNESS_MM, MAX_SLICES, Scan, ScanError, centred_affine, natural_key, stack_voxels
from .kaggle import case_day_in


def kaggle_order(files: list[Path]) -> tuple[list[int], list[KaggleSliceName]] | None:
    """The Kaggle reading of slice files: ``(order, names)``, ``order`` the indices of ``files`` by slice number.

    ``None`` when no file has a Kaggle name (``slice_NNNN_W_H_PW_PH.png``). :class:`ScanError` when
    only some do, a slice number repeats, or the names give different pixel spacings.
    """
    parsed = [parse_kaggle_name(p) for p in files]
    if not all(parsed):
        if any(parsed):
            raise ScanError("Some files have Kaggle slice names and some do not; upload one scan at a time.")
        return None
    order = sorted(range(len(files)), key=lambda i: parsed[i].slice_number)
    numbers = [parsed[i].slice_number for i in order]
    if len(set(numbers)) != len(numbers):
        dup = next(n for n in numbers if numbers.count(n) > 1)
        raise ScanError(f"Slice number {dup} appears twice; upload one scan at a time.")
    if len({p.pixel_spacing_mm for p in parsed}) > 1:
        raise ScanError("The slice names give different pixel spacings; upload one scan at a time.")
    return order, parsed


def read_slice_files(files: list[Path], name: str, slice_thickness_mm: float | None = None,
                     root: Path | None = None, context: str = "") -> Scan:
    """Stack slice images into a scan.

    Kaggle names (``slice_NNNN_W_H_PW_PH.png``) give the order and the pixel spacing; other
    names are ordered naturally with 1.5 mm pixels assumed. Slices are stacked as given: gaps
    in the numbering are reported, not filled. The Kaggle PNGs carry no orientation, so the
    affine assumes the usual axial view and slice numbers increasing towards the head.
    ``context`` (the folder or zip the files came from) and the files' paths under ``root``
    are searched for the case and day; files from two case/day folders are refused.
    """
    if len(files) > MAX_SLICES:
        raise ScanError(f"{len(files)} slices is over the {MAX_SLICES}-slice limit.")
    notes: list[str] = []
    kaggle = kaggle_order(files)
    if kaggle is not None:
        order, parsed = kaggle
        numbers = [parsed[i].slice_number for i in order]
        row_mm, col_mm = parsed[0].pixel_spacing_mm
        missing = numbers[-1] - numbers[0] + 1 - len(numbers)
        if missing:
            notes.append(f"{missing} slice numbers are missing between {numbers[0]} and {numbers[-1]}; "
                         "slices are stacked as given, so volumes leave out the missing slices.")
    else:
        order = sorted(range(len(files)), key=lambda i: natural_key(files[i].name))
        numbers = list(range(1, len(files) + 1))
        row_mm = col_mm = DEFAULT_PIXEL_SPACING_MM
        notes.append(f"Slices ordered by file name; {DEFAULT_PIXEL_SPACING_MM} mm pixels assumed "
                     "(Kaggle names slice_NNNN_W_H_PW_PH.png carry the spacing).")
    if slice_thickness_mm is not None and float(slice_thickness_mm) > 0:
        thickness = float(slice_thickness_mm)
    else:
        thickness = DEFAULT_SLICE_THICKNESS_MM
        notes.append(f"Slice thickness {thickness:g} mm (the dataset's value) assumed; enter another if it differs.")

    slices = []
    for i in order:
        try:
            slices.append(read_slice(files[i], allow_flat=True))
        except ImageError as err:
            raise ScanError(str(err)) from None
        if slices[-1].shape != slices[0].shape:
            h0, w0 = slices[0].shape
            h, w = slices[-1].shape
            raise ScanError(f"{files[i].name} is {w}×{h} px but the first slice is {w0}×{h0}; "
                            "all slices of a scan must have one size.")
        if kaggle is not None:
            p = parsed[i]
            if (p.height, p.width) != slices[-1].shape:
                raise ScanError(f"{files[i].name} is {slices[-1].shape[1]}×{slices[-1].shape[0]} px, "
                                "not the size its name gives.")
    voxels = stack_voxels(slices)
    # Radiological view: columns run towards the patient's left (−x in RAS), rows towards posterior (−y). The
    # files carry no origin: the stack's middle voxel is put there.
    affine = centred_affine(np.diag([-col_mm, -row_mm, thickness, 1.0]), voxels.shape)
    rel = [(f.relative_to(root) if root else f).as_posix() for f in files]
    case_days = {cd for cd in (case_day_in(f"{context}/{r}") for r in rel) if cd}
    if len(case_days) > 1:
        raise ScanError(f"The files come from {len(case_days)} different scans (case/day folders); upload one.")
    case_day = case_days.pop() if case_days else case_day_in(name)
    return Scan(voxels, (thickness, row_mm, col_mm), affine, tuple(numbers), case_day or name, "slices",
                case_day=case_day, kaggle_named=kaggle is not None, notes=notes)
