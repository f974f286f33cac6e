"""The real inter-day organ changes in the shared Kaggle ground truth, for docs/compare.md.

    python docs/days_truth.py [--data ../shared/data] [--out docs/days_truth.json] [--cases 122 ...]

For every case with two or more days in ``DATA/kaggle/train.csv.gz``, each later day is compared
with the case's first day, as ``python -m model.predict --compare-days`` does: organ volumes (ml)
and raw centroid shifts (mm, LR/AP/SI and length) from the real labels and the spacing in
``DATA/kaggle/volumes.csv``, measured with :mod:`model.days` in its Kaggle convention (the middle
voxel of each stack at the origin). No images, so no registration: these are the raw numbers.

Every measurement is checked against an independent one: SimpleITK's LabelShapeStatistics on a
label image whose geometry is built here from the spacing alone. The largest disagreements go to
the JSON's ``check``; the script fails if they exceed 1e-6 ml or mm.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model import days, registration  # noqa: E402
from model.labels import ORGANS  # noqa: E402
from model.measure import organ_volumes_ml  # noqa: E402
from model.rle import RleCsv  # noqa: E402
from model.scans import Scan  # noqa: E402

PERCENTILES = (5, 25, 50, 75, 95)
TOLERANCE = 1e-6


def measure(masks: np.ndarray, spacing: tuple[float, float, float], case_day: str) -> tuple[np.ndarray, np.ndarray]:
    """``(O,)`` ml and ``(O, 3)`` RAS mm of one case-day, by :mod:`model.days`."""
    s, r, c = spacing
    scan = Scan(np.zeros(masks.shape[1:], np.uint8), spacing, np.diag([-c, -r, s, 1.0]),
                tuple(range(masks.shape[1])), case_day, "slices", case_day=case_day)
    return organ_volumes_ml(masks, spacing), days.organ_centroids_mm(masks, registration.patient_affine(scan))


def measure_independently(masks: np.ndarray, spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The same by SimpleITK: an LPS image centred on the middle voxel (LPS x, y = RAS −x, −y)."""
    import SimpleITK as sitk

    s, r, c = spacing
    d, h, w = masks.shape[1:]
    volumes, centroids = np.zeros(len(masks)), np.full((len(masks), 3), np.nan)
    for o, mask in enumerate(masks):
        if not mask.any():
            continue
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        image.SetSpacing((c, r, s))
        image.SetOrigin((-c * (w - 1) / 2, -r * (h - 1) / 2, -s * (d - 1) / 2))
        stats = sitk.LabelShapeStatisticsImageFilter()
        stats.Execute(image)
        volumes[o] = stats.GetPhysicalSize(1) / 1000.0
        x, y, z = stats.GetCentroid(1)
        centroids[o] = (-x, -y, z)
    return volumes, centroids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "days_truth.json")
    parser.add_argument("--cases", nargs="*", type=int, help="only these case numbers (default: all)")
    args = parser.parse_args(argv)

    geometry = {}
    with open(args.data / "kaggle" / "volumes.csv", newline="") as f:
        for row in csv.DictReader(f):
            pixel, thickness = float(row["pixel_spacing_mm"]), float(row["slice_thickness_mm"])
            geometry[row["case_day"]] = ((int(row["height"]), int(row["width"])), (thickness, pixel, pixel))
    by_case = defaultdict(list)
    for case_day in geometry:
        case, day = map(int, re.fullmatch(r"case(\d+)_day(\d+)", case_day).groups())
        if args.cases is None or case in args.cases:
            by_case[case].append(day)
    multi = {case: sorted(d) for case, d in sorted(by_case.items()) if len(d) > 1}
    wanted = [f"case{case}_day{day}" for case, ds in multi.items() for day in ds]
    rows = RleCsv(args.data / "kaggle" / "train.csv.gz", wanted)

    pairs, worst_ml, worst_mm = [], 0.0, 0.0
    for case, case_days in multi.items():
        measured = {}
        for day in case_days:
            case_day = f"case{case}_day{day}"
            shape, spacing = geometry[case_day]
            masks = rows.volume(case_day, shape).masks
            volumes, centroids = measure(masks, spacing, case_day)
            check_volumes, check_centroids = measure_independently(masks, spacing)
            worst_ml = max(worst_ml, float(np.abs(volumes - check_volumes).max()))
            present = ~np.isnan(centroids[:, 0])
            assert (present == ~np.isnan(check_centroids[:, 0])).all()
            if present.any():
                worst_mm = max(worst_mm, float(np.abs(centroids[present] - check_centroids[present]).max()))
            measured[day] = shape, volumes, centroids, masks.shape[1]
        first = case_days[0]
        shape_a, volumes_a, centroids_a, slices_a = measured[first]
        for day in case_days[1:]:
            shape_b, volumes_b, centroids_b, slices_b = measured[day]
            for o, organ in enumerate(ORGANS):
                shift = centroids_b[o] - centroids_a[o]
                known = bool(np.isfinite(shift).all())
                pairs.append({
                    "case": f"case{case}", "day_a": f"day{first}", "day_b": f"day{day}", "organ": organ,
                    "grid_a": f"{shape_a[1]}x{shape_a[0]}x{slices_a}", "grid_b": f"{shape_b[1]}x{shape_b[0]}x{slices_b}",
                    "volume_a_ml": round(float(volumes_a[o]), 3), "volume_b_ml": round(float(volumes_b[o]), 3),
                    "volume_change_pct": (round(100 * float(volumes_b[o] / volumes_a[o] - 1), 2)
                                          if volumes_a[o] > 0 else None),
                    "raw_shift_mm": [round(float(v), 2) for v in shift] if known else None,
                    "raw_shift_length_mm": round(float(np.linalg.norm(shift)), 2) if known else None,
                })
    if worst_ml > TOLERANCE or worst_mm > TOLERANCE:
        raise SystemExit(f"model.days disagrees with SimpleITK: {worst_ml} ml, {worst_mm} mm")

    result = {
        "source": "shared/data/kaggle/train.csv.gz (real labels) and volumes.csv (spacing); docs/days_truth.py",
        "convention": "RAS mm, middle voxel of each stack at the origin; later days against the case's first day",
        "cases": len(multi), "case_days": sum(len(d) for d in multi.values()),
        "pairs": len(pairs) // len(ORGANS),
        "pairs_on_different_grids": sum(p["grid_a"] != p["grid_b"] for p in pairs) // len(ORGANS),
        "check": {"independent": "SimpleITK LabelShapeStatisticsImageFilter (PhysicalSize, Centroid)",
                  "largest_volume_difference_ml": worst_ml, "largest_centroid_difference_mm": worst_mm},
        "summary": summarise(pairs),
        "rows": pairs,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    return 0


def summarise(pairs: list[dict]) -> dict:
    """Per organ: how many pairs, how often absent, percentiles of the volume change and shifts."""
    summary = {}
    for organ in ORGANS:
        rows = [p for p in pairs if p["organ"] == organ]
        both = [p for p in rows if p["raw_shift_mm"] is not None]
        change = [p["volume_change_pct"] for p in both]
        length = [p["raw_shift_length_mm"] for p in both]
        components = np.abs(np.array([p["raw_shift_mm"] for p in both]))
        summary[organ] = {
            "pairs": len(rows), "present_both_days": len(both),
            "absent_one_day": sum((p["volume_a_ml"] > 0) != (p["volume_b_ml"] > 0) for p in rows),
            "absent_both_days": sum(p["volume_a_ml"] == 0 and p["volume_b_ml"] == 0 for p in rows),
            "volume_change_pct": _percentiles(change),
            "abs_volume_change_pct_median": round(float(np.median(np.abs(change))), 1),
            "raw_shift_length_mm": _percentiles(length),
            # A different field of view moves the image centre, so raw shifts mix set-up and motion.
            "raw_shift_length_mm_same_grid": _percentiles([p["raw_shift_length_mm"] for p in both
                                                           if p["grid_a"] == p["grid_b"]]),
            "raw_shift_length_mm_different_grids": _percentiles([p["raw_shift_length_mm"] for p in both
                                                                 if p["grid_a"] != p["grid_b"]]),
            "abs_raw_shift_median_mm": {axis: round(float(np.median(components[:, i])), 1)
                                        for i, axis in enumerate(("LR", "AP", "SI"))},
        }
    return summary


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {f"p{q}": round(float(np.percentile(values, q)), 1) for q in PERCENTILES}


if __name__ == "__main__":
    sys.exit(main())
