"""The Compare days tab's work, without Gradio: two uploads in, a table, a picture and two downloads out.

Each day's upload is a scan in any format :func:`model.scans.load_scan` reads. It may also hold an
earlier result of that scan, its ``<scan>_masks.zip`` or ``<scan>_labels.nii.gz`` download; then
those masks are compared and the model is not run for that day. Day A is the reference.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from skimage.segmentation import find_boundaries

from . import labels
from .days import TABLE_HEADERS, DayComparison, check_3d, compare_days, table, write_changes_csv
from .image import normalize_intensity
from .measure import busiest_slice
from .outputs import save_label_nifti
from .scans import Scan, ScanError, load_scan

__all__ = ["TABLE_HEADERS", "compare_uploads", "picture"]

#: Upload names taken as an earlier result (this app's downloads) rather than as the scan.
RESULT_SUFFIXES = ("_masks.zip", "_labels.nii.gz", "_labels.nii")
#: Squares of the checkerboard panel, in pixels of A's grid.
CHECKER_PX = 32


def compare_uploads(paths_a: list[str], paths_b: list[str], get_segmenter: Callable, out_dir: Path,
                    slice_thickness_mm: float | None = None) -> tuple[str, list[list], np.ndarray, list[str]]:
    """Compare two uploaded days: a note, the table rows (:data:`TABLE_HEADERS`), the picture
    (:func:`picture`) and the downloads ``<A>_vs_<B>_changes.csv`` and ``<B>_on_<A>_labels.nii.gz``
    (B's masks on A's grid, as the Scan tab's label NIfTI). Raises :class:`ScanError` with one line."""
    scan_a, results_a = _read("A", paths_a, slice_thickness_mm)
    scan_b, results_b = _read("B", paths_b, slice_thickness_mm)
    masks_a, masks_b = _masks(scan_a, results_a, get_segmenter), _masks(scan_b, results_b, get_segmenter)
    comparison = compare_days(scan_a, masks_a, scan_b, masks_b)
    stem = f"{scan_a.name}_vs_{scan_b.name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    changes = write_changes_csv(comparison.rows(scan_a.name, scan_a.name, scan_b.name), out_dir / f"{stem}_changes.csv")
    labels_b = save_label_nifti(comparison.masks_b_on_a, scan_a,
                                out_dir / f"{scan_b.name}_on_{scan_a.name}_labels.nii.gz")
    index = busiest_slice(masks_a)
    note = "\n\n".join(dict.fromkeys([  # the two days often share a caveat (assumed thickness): say it once
        f"**A** {scan_a.describe()}. **B** {scan_b.describe()}.",
        f"Rigid registration: {comparison.registration.describe()}.",
        f"Slice {scan_a.slice_numbers[index]} of A (the one with most organ area): A, then B resampled onto A's "
        "grid, then a checkerboard of both. Bright contours: day A; pale contours: day B after alignment.",
        *comparison.notes, *scan_a.notes, *scan_b.notes,
    ]))
    return note, table(comparison), picture(comparison, scan_a, masks_a, index), [str(changes), str(labels_b)]


def picture(comparison: DayComparison, scan_a: Scan, masks_a: np.ndarray, index: int) -> np.ndarray:
    """``(H, 3W, 3) uint8``: A | B on A's grid | checkerboard, at slice ``index``, both days' organ contours."""
    a = scan_a.display_slice(index)
    b = normalize_intensity(comparison.image_b_on_a[index])
    rows, cols = np.indices(a.shape)
    checker = np.where((rows // CHECKER_PX + cols // CHECKER_PX) % 2 == 0, a, b)
    panels = []
    for grey in (a, b, checker):
        rgb = np.repeat(grey[..., None], 3, axis=2)
        for o, organ in enumerate(labels.ORGANS):
            colour = np.array(labels.rgb(organ))
            pale = (colour + 2 * 255) // 3
            rgb[find_boundaries(comparison.masks_b_on_a[o, index], mode="inner")] = pale
            rgb[find_boundaries(masks_a[o, index], mode="inner")] = colour
        panels.append(rgb)
    return np.concatenate(panels, axis=1)


def _read(day: str, paths: list[str], slice_thickness_mm: float | None) -> tuple[Scan, list[Path]]:
    paths = [Path(p) for p in paths]
    results = [p for p in paths if p.name.lower().endswith(RESULT_SUFFIXES)]
    scan_paths = [p for p in paths if p not in results]
    if not scan_paths:
        raise ScanError(f"Day {day}: upload its scan (slice files, a .zip, NIfTI or DICOM), and optionally "
                        "its earlier _masks.zip or _labels.nii.gz.")
    scan = load_scan(scan_paths, slice_thickness_mm)
    check_3d(scan, day)  # before the model runs
    return scan, results


def _masks(scan: Scan, results: list[Path], get_segmenter: Callable) -> np.ndarray:
    """The earlier result's masks when one was uploaded, else the model's; ``(O, D, H, W) bool``."""
    if results:
        from .compare import load_ground_truth

        return load_ground_truth(results[:1], scan)[0]
    return get_segmenter().segment_scan(scan).run().organ_masks
