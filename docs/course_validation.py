"""The course report's validation numbers, for docs/course.md.

    python docs/course_validation.py [--data ../shared/data] [--out docs/course_validation.json]

Runs the cases of ``tests/course_cases.py`` (the ones ``tests/model/test_course.py`` holds to their
bounds) and writes what each gives:

- ``phantom``: a 20 mm sphere target and a 10 mm cylinder organ 12 mm away (and overlapping it by
  6 mm) on 1.5 × 1.5 × 3 mm voxels: minimum distance, ring and in-target volumes against the analytic ones;
  ``naive_ring_relative_error``: the same rings from scipy's voxel-centre distance map, for comparison;
- ``dose``: a dose falling 0.5 Gy/mm from the sphere's centre: Dmax, D0.5cc, D2cc, V20Gy, V30Gy of
  the cylinder against its analytic DVH, on the real spacing and on 1.25 × 1.25 × 1.5 mm voxels;
- ``motion``: day B with the anatomy moved by a known motion and the organ 6 mm nearer the target,
  through the real registration;
- ``plastimatch``: our cumulative DVH against ``plastimatch dvh`` on a real scan (its real labels as
  an RTSTRUCT, a synthetic RTDOSE);
- ``real_labels``: the course table of a real case's days from the shared ground truth, with a synthetic target.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import course_cases as K  # noqa: E402
from model.course_report import course_rows  # noqa: E402
from model.measure import volume_ml  # noqa: E402


def naive_ring_errors(phantom: K.Phantom) -> list[float]:
    """Ring volumes from scipy's distance to the nearest target voxel centre, relative to the analytic shells."""
    from scipy.ndimage import distance_transform_edt

    distance = distance_transform_edt(~phantom.target(), sampling=phantom.spacing_mm)
    voxel_cc = volume_ml(1, phantom.spacing_mm)
    return [K.relative(np.count_nonzero((distance > a) & (distance <= b)) * voxel_cc, phantom.shell_cc(a, b))
            for a, b in ((0, 10), (10, 20))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "course_validation.json")
    args = parser.parse_args(argv)

    real = K.Phantom()
    fine = K.Phantom(shape=(110, 150, 150), spacing_mm=(1.5, 1.25, 1.25))
    result: dict = {"bounds": {"min_distance": "one voxel (1.5 mm)", "ring_volume": 0.03, "dose": 0.02,
                               "plastimatch_pct_of_volume": 1.0}}
    result["phantom"] = {
        "target_radius_mm": real.radius_mm, "cylinder_radius_mm": real.cylinder_radius_mm,
        "cases": [K.phantom_errors(replace(real, gap_mm=gap)) for gap in (12.0, -6.0)],
        "naive_ring_relative_error": naive_ring_errors(real),
    }
    result["dose"] = {"d0_gy": real.d0_gy, "gy_per_mm": real.gy_per_mm,
                      "cases": [K.dose_errors(real), K.dose_errors(fine)]}
    result["motion"] = {"motion_vox": list(K.MOTION_VOX), "organ_motion_vox": list(K.ORGAN_MOTION_VOX),
                        **K.motion_errors(real)}
    with tempfile.TemporaryDirectory() as tmp:
        result["plastimatch"] = K.plastimatch_agreement(args.data / "scans" / "volume_276x276", "case146_day25",
                                                        args.data / "kaggle" / "train.csv.gz", Path(tmp) / "work")
    course, volumes, centre = K.real_label_course(args.data / "kaggle")
    rows = course_rows(course, K.REAL_CASE, "truth")
    keep = ("day", "organ", "volume_ml", "in_target_cc", "ring_0_10mm_cc", "ring_10_20mm_cc", "min_distance_mm")
    result["real_labels"] = {
        "case": K.REAL_CASE, "target_radius_mm": K.TARGET_RADIUS_MM, "target_centre_ras_mm": centre,
        "registration": "identity (the shared ground truth has no images)",
        "volume_vs_days_module_max_abs_ml": max(abs(o.volume_ml - v) for d in course.days
                                                for o, v in zip(d.organs, volumes[d.label])),
        "rows": [{k: (round(float(row[k]), 3) if isinstance(row[k], (float, np.floating)) else row[k]) for k in keep}
                 for row in rows],
    }
    args.out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
