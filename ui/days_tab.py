"""Compare days (the Course tab's first button, ui/course_tab.py): two uploaded days of one patient, a note, a table, a picture and two downloads."""

from __future__ import annotations

import numpy as np
from skimage.segmentation import find_boundaries

from model import labels
from model.days import ComparedDayFiles, DayComparison, compare_day_files
from model.image import normalize_intensity
from model.measure import busiest_slice
from model.scans import Scan

from . import server
from .tables import days_rows, slice_label

#: Squares of the checkerboard panel, in pixels of A's grid.
CHECKER_PX = 32


def compare_days_files(files_a, files_b):
    """The tab's outputs: note, table (:data:`ui.tables.DAYS_HEADERS`), picture and downloads
    (:func:`model.days.compare_day_files`)."""
    with server.user_errors("comparing days", "These two scans could not be compared; try another pair."):
        return days_view(compare_day_files(server.upload_paths(files_a), server.upload_paths(files_b),
                                         server.MODEL.get, server.scratch_dir()))


def days_view(done: ComparedDayFiles) -> tuple[str, list[list], np.ndarray, list[str]]:
    """The note, the table rows, the picture at A's busiest slice, and the downloads."""
    scan_a, scan_b, comparison = done.scan_a, done.scan_b, done.comparison
    index = busiest_slice(done.masks_a)
    note = "\n\n".join(dict.fromkeys([  # the two days often share a caveat (assumed thickness): say it once
        f"**A** {scan_a.describe()}. **B** {scan_b.describe()}.",
        f"Rigid registration: {comparison.registration.describe()}.",
        f"Slice {slice_label(scan_a, index)} of A (the one with most organ area): A, then B resampled onto A's "
        "grid, then a checkerboard of both. Bright contours: day A; pale contours: day B after alignment.",
        *comparison.notes, *scan_a.notes, *scan_b.notes,
    ]))
    return (note, days_rows(comparison), picture(comparison, scan_a, done.masks_a, index),
            [str(done.changes_csv), str(done.labels_b_on_a)])


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
