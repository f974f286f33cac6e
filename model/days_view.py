"""The Compare days tab's work, without Gradio: two uploads in, the comparison and two downloads out.

Each day's upload is a scan in any format :func:`model.scans.load_scan` reads. It may also hold an
earlier result of that scan, its ``<scan>_masks.zip`` or ``<scan>_labels.nii.gz`` download; then
those masks are compared and the model is not run for that day. Day A is the reference. The
page's note, table and picture are :mod:`ui.days_tab`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .days import DayComparison, check_3d, compare_days, write_changes_csv
from .exports import save_label_nifti
from .scans import Scan, ScanError, load_scan

#: Upload names taken as an earlier result (this app's downloads) rather than as the scan.
RESULT_SUFFIXES = ("_masks.zip", "_labels.nii.gz", "_labels.nii")


@dataclass(frozen=True)
class ComparedUploads:
    """Two uploaded days compared: the scans, A's masks ``(O, D, H, W) bool``, the comparison
    (:class:`model.days.DayComparison`, B's masks and image on A's grid) and the two downloads."""

    scan_a: Scan
    scan_b: Scan
    masks_a: np.ndarray
    comparison: DayComparison
    changes_csv: Path
    labels_b_on_a: Path


def compare_uploads(paths_a: list[str], paths_b: list[str], get_segmenter: Callable, out_dir: Path,
                    slice_thickness_mm: float | None = None) -> ComparedUploads:
    """Compare two uploaded days, writing ``<A>_vs_<B>_changes.csv`` and ``<B>_on_<A>_labels.nii.gz``
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
    return ComparedUploads(scan_a, scan_b, masks_a, comparison, changes, labels_b)


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
        from .truth import load_ground_truth

        return load_ground_truth(results[:1], scan)[0]
    return get_segmenter().segment_scan(scan).run().organ_masks
