"""Every table and plot frame of the page: its headers beside the function that builds its rows.

The numbers come from :mod:`model` (measurements, scores, review flags, day comparisons); here they
are rounded and labelled for ``gr.Dataframe`` and ``gr.LinePlot``, with ``"–"`` where there is none.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from model import labels
from model.course import Course, CourseSettings
from model.course_report import course_rows
from model.days import DayComparison
from model.edits import SliceEdit
from model.measure import OrganVolume, organ_areas, slice_areas_cm2, structure_volumes_ml
from model.metric import Score
from model.planning import Structure
from model.review import ReviewFlag
from model.scans import Scan

#: The Slice tab's measurements.
AREA_HEADERS = ["Organ", "Present", "Pixels", "Area (cm²)"]
#: The Scan tab's measurements.
VOLUME_HEADERS = ["Organ", "Volume (ml)", "Slices", "Largest cross-section (cm²)", "At slice"]
#: The Scan tab's comparison with ground truth.
COMPARISON_HEADERS = ["Organ", "Dice", "Hausdorff (HD)", "Score 0.4·Dice + 0.6·(1−HD)"]
#: The Scan tab's review table; "Slice" is the slider's position (1..S), so a click can jump there.
REVIEW_HEADERS = ["Slice", "Organ", "Score", "Reason"]
#: The Compare days table (the Course tab's first button).
DAYS_HEADERS = ["Organ", "A (ml)", "B (ml)", "Change (%)", "Centroid shift raw (mm)",
                "Centroid shift registered (mm)", "Dice", "HD95 (mm)", "Status"]
#: The Course tab's table: these ``course.csv`` columns (after day and organ), then one column per ring
#: after "In target", and one per constraint at the end ("pass (+0.30)": its status and margin).
COURSE_COLUMNS = {"volume_ml": "Volume (ml)", "in_target_cc": "In target (cc)", "min_distance_mm": "Min distance (mm)",
                  "dmax_gy": "Dmax (Gy)", "d0_5cc_gy": "D0.5cc (Gy)", "d2cc_gy": "D2cc (Gy)"}


def area_rows(organ_masks: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> list[list]:
    """The Slice tab's measurements of ``(O, H, W) bool`` masks: organ, present, pixels, area (cm²)."""
    return [[labels.DISPLAY_NAMES[a.organ], "yes" if a.present else "no", a.pixels, round(a.area_cm2, 2)]
            for a in organ_areas(organ_masks, pixel_spacing_mm)]


def slice_label(scan: Scan, first: int, last: int | None = None) -> int | str:
    """The page's name of slice ``first`` (0-based), or of the slices ``first``-``last``: the slider's position(s),
    1-based, which the review table, the notes and the plot use too; where the scan's own numbers differ (Kaggle
    slice files, numbered by their names), those follow in brackets, so "At slice" never sends a person to the
    wrong slider position."""
    if last is None:
        position, number = first + 1, scan.slice_numbers[first]
        return position if number == position else f"{position} (file {number})"
    positions, numbers = (first + 1, last + 1), (scan.slice_numbers[first], scan.slice_numbers[last])
    text = f"{positions[0]}–{positions[1]}"
    return text if numbers == positions else f"{text} (files {numbers[0]}–{numbers[1]})"


def volume_rows(volumes: list[OrganVolume], structures: list[Structure], scan: Scan) -> list[list]:
    """The Scan tab's measurements: organ, volume (ml), slices, largest cross-section (cm²) and its
    slice per organ, then name, volume and slices per planning structure (``"–"`` where none); slices as
    :func:`slice_label` names them."""
    index = {number: i for i, number in enumerate(scan.slice_numbers)}
    rows = [[labels.DISPLAY_NAMES[v.organ], round(v.volume_ml, 1),
             slice_label(scan, index[v.first_slice], index[v.last_slice]) if v.voxels else "–",
             round(v.largest_area_cm2, 2), slice_label(scan, index[v.largest_slice]) if v.voxels else "–"] for v in volumes]
    for structure, (label, ml) in zip(structures, structure_volumes_ml(structures, scan.spacing_mm)):
        present = np.flatnonzero(structure.mask.any(axis=(1, 2)))
        rows.append([label, round(ml, 1), slice_label(scan, int(present[0]), int(present[-1])) if present.size else "–",
                     "–", "–"])
    return rows


def area_plot_frame(organ_masks: np.ndarray, scan: Scan) -> pd.DataFrame:
    """Per-slice organ areas as the long frame ``gr.LinePlot`` takes: slice (the slider's position), organ, area (cm²)."""
    areas = slice_areas_cm2(organ_masks, scan.spacing_mm)
    return pd.DataFrame({
        "slice": np.tile(np.arange(1, len(scan) + 1), len(labels.ORGANS)),
        "organ": np.repeat([labels.DISPLAY_NAMES[o] for o in labels.ORGANS], len(scan)),
        "area (cm²)": areas.ravel().round(2),
    })


def comparison_rows(score: Score) -> list[list]:
    """``[organ, Dice, HD, score]`` per organ and overall; NaN (nothing to score) shows as ``"–"``."""
    def fmt(value: float) -> float | str:
        return "–" if math.isnan(value) else round(value, 4)

    rows = [[labels.DISPLAY_NAMES[o], fmt(score.dice_per_organ[o]), fmt(score.hausdorff_per_organ[o]),
             fmt(score.score_per_organ[o])] for o in labels.ORGANS]
    return rows + [["All organs", fmt(score.dice), fmt(score.hausdorff), fmt(score.score)]]


def review_rows(flags: tuple[ReviewFlag, ...] | list[ReviewFlag], edits: tuple[SliceEdit, ...] = ()) -> list[list]:
    """The review table: the flags as given (worst first, as :func:`model.review.review_flags` ranks them and the
    review CSV lists them), then one "edited" row per edited slice and organ, by slider position. Its "Slice"
    column is the slider's position."""
    rows = [[f.slice_index + 1, labels.DISPLAY_NAMES[f.organ], f.score, f.reason] for f in flags]
    totals: dict[tuple[int, str], list[int]] = {}
    for e in edits:
        total = totals.setdefault((e.slice_index, e.organ), [0, 0])
        total[0] += e.pixels_added
        total[1] += e.pixels_removed
    for (index, organ), (added, removed) in sorted(totals.items(), key=lambda t: (t[0][0], labels.ORGANS.index(t[0][1]))):
        rows.append([index + 1, labels.DISPLAY_NAMES[organ], "edited",
                     f"corrected by hand: {added} pixels added, {removed} removed"])
    return rows


def days_rows(comparison: DayComparison) -> list[list]:
    """The per-organ numbers of two days (organ, ml A, ml B, %, raw mm, registered mm, Dice, HD95 mm, status)."""
    def fmt(value, digits=1):
        return "" if value is None else round(float(value), digits)

    return [[labels.DISPLAY_NAMES[o.organ], fmt(o.volume_a_ml), fmt(o.volume_b_ml), fmt(o.volume_change_pct),
             fmt(o.raw_shift_length_mm), fmt(o.registered_shift_length_mm), fmt(o.dice_registered, 3),
             fmt(o.hd95_registered_mm), o.status] for o in comparison.organs]


def ring_label(name: str) -> str:
    """``ring_0_10mm`` (:attr:`model.course.CourseSettings.ring_names`) → ``0–10 mm``."""
    low, high = name.removeprefix("ring_").removesuffix("mm").split("_")
    return f"{low}–{high} mm"


def _course_columns(settings: CourseSettings) -> dict[str, str]:
    """The ``course.csv`` columns the Course tab shows, with their headers (the constraints' follow)."""
    rings = {f"{n}_cc": f"Ring {ring_label(n)} (cc)" for n in settings.ring_names}
    return {"volume_ml": COURSE_COLUMNS["volume_ml"], "in_target_cc": COURSE_COLUMNS["in_target_cc"], **rings,
            **{k: v for k, v in COURSE_COLUMNS.items() if k not in ("volume_ml", "in_target_cc")}}


def course_headers(settings: CourseSettings = CourseSettings()) -> list[str]:
    """The Course tab's table headers for ``settings`` (the defaults': no constraint column)."""
    return ["Day", "Organ", *_course_columns(settings).values(), *(c.text for c in settings.constraints)]


def course_table(result: Course | None, case: str = "") -> pd.DataFrame:
    """The Course tab's table: one row per day × organ, the ``course.csv`` columns that fit a screen
    (:data:`COURSE_COLUMNS`, the rings, the constraints), rounded, ``"–"`` where a value does not exist.
    No course (``None``): no rows, the default headers."""
    if result is None:
        return pd.DataFrame(columns=course_headers())
    settings = result.settings
    columns = _course_columns(settings)

    def fmt(value, digits=2):
        return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), digits)

    table = []
    for row in course_rows(result, case):
        cells = [row["day"], labels.DISPLAY_NAMES[row["organ"]], *(fmt(row.get(k)) for k in columns)]
        for c in settings.constraints:
            status, margin = row[c.text], row[f"{c.text} margin"]
            cells.append("–" if status is None else status if margin is None else f"{status} ({margin:+.2f} {c.unit})")
        table.append(cells)
    return pd.DataFrame(table, columns=course_headers(settings))
