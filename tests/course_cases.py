"""The course report's validation cases (:mod:`model.course`): phantoms with analytic answers, a day B
moved by a known motion, plastimatch's DVH of a real scan, and a synthetic target over real labels.

A sphere target (radius ``R``) and a cylinder "organ" (radius ``a``, axis along the slices, at
in-plane distance ``L`` from the sphere's centre), so the gap between their surfaces is
``L - R - a`` (negative: they overlap). A dose falls linearly with the distance from the
sphere's centre, ``D = max(D0 - k r, 0)``. Every answer is a volume of the cylinder inside a ball
around the centre, the integral over z of the area of two intersecting discs (``scipy.integrate.quad``).

``tests/model/test_course.py`` holds each case to its bound; ``docs/course_validation.py`` runs the
same functions and writes the numbers ``docs/course.md`` quotes.
"""

from __future__ import annotations

import csv
import math
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from model import course as C
from model.labels import ORGANS
from model.scans import Scan


@dataclass(frozen=True)
class Phantom:
    shape: tuple[int, int, int] = (56, 128, 128)  # (slice, row, col)
    spacing_mm: tuple[float, float, float] = (3.0, 1.5, 1.5)
    radius_mm: float = 20.0  # the target sphere
    cylinder_radius_mm: float = 10.0
    gap_mm: float = 12.0  # between the sphere's and the cylinder's surfaces
    d0_gy: float = 50.0  # dose at the sphere's centre
    gy_per_mm: float = 0.5  # fall-off with the distance from the centre

    @property
    def centre_vox(self) -> np.ndarray:
        """The sphere's centre ``(slice, row, col)``: a voxel centre."""
        return np.array([s // 2 for s in self.shape], dtype=np.float64)

    @property
    def axis_offset_mm(self) -> float:
        """``L``: in-plane distance of the cylinder's axis from the sphere's centre (along columns)."""
        return self.radius_mm + self.gap_mm + self.cylinder_radius_mm

    def coordinates_mm(self, shift_mm=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each voxel's ``(slice, row, col)`` mm from the (shifted) sphere centre."""
        grids = np.indices(self.shape, dtype=np.float64)
        return tuple((grids[i] - self.centre_vox[i]) * self.spacing_mm[i] - shift_mm[i] for i in range(3))

    def target(self, shift_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
        z, y, x = self.coordinates_mm(shift_mm)
        return z ** 2 + y ** 2 + x ** 2 <= self.radius_mm ** 2

    def organ(self, shift_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
        """The cylinder as stomach (organ 0); the other organs empty: ``(3, D, H, W) bool``."""
        _, y, x = self.coordinates_mm(shift_mm)
        cylinder = y ** 2 + (x - self.axis_offset_mm) ** 2 <= self.cylinder_radius_mm ** 2
        return np.stack([cylinder, np.zeros_like(cylinder), np.zeros_like(cylinder)])

    def dose(self, shift_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
        z, y, x = self.coordinates_mm(shift_mm)
        return np.maximum(self.d0_gy - self.gy_per_mm * np.sqrt(z ** 2 + y ** 2 + x ** 2), 0.0).astype(np.float32)

    # ------------------------------------------------------------------ analytic answers

    @property
    def half_length_mm(self) -> float:
        """Half the cylinder's length: the scan's extent along the slices from the centre (it is cut by the scan)."""
        return min(self.centre_vox[0], self.shape[0] - 1 - self.centre_vox[0]) * self.spacing_mm[0] + \
            self.spacing_mm[0] / 2

    def cylinder_in_ball_cc(self, radius_mm: float) -> float:
        """Volume (cc) of the cylinder within ``radius_mm`` of the sphere's centre."""
        from scipy.integrate import quad

        if radius_mm <= 0:
            return 0.0
        reach = min(radius_mm, self.half_length_mm)

        def area(z: float) -> float:
            return _lens_area(math.sqrt(max(radius_mm ** 2 - z ** 2, 0.0)), self.cylinder_radius_mm, self.axis_offset_mm)

        value, _ = quad(area, -reach, reach, limit=200, points=[0.0])
        return value / 1000.0

    def shell_cc(self, inner_mm: float, outer_mm: float) -> float:
        """Volume (cc) of the shell ``inner < distance from the target's surface <= outer``."""
        r = self.radius_mm
        return 4 / 3 * math.pi * ((r + outer_mm) ** 3 - (r + inner_mm) ** 3) / 1000.0

    def organ_in_shell_cc(self, inner_mm: float, outer_mm: float) -> float:
        r = self.radius_mm
        return self.cylinder_in_ball_cc(r + outer_mm) - self.cylinder_in_ball_cc(r + inner_mm)

    def v_gy_cc(self, gy: float) -> float:
        """Volume of the organ receiving at least ``gy``."""
        return self.cylinder_in_ball_cc((self.d0_gy - gy) / self.gy_per_mm)

    def d_cc_gy(self, cc: float) -> float:
        """The dose whose isodose encloses ``cc`` of the organ."""
        from scipy.optimize import brentq

        near = self.axis_offset_mm - self.cylinder_radius_mm
        radius = brentq(lambda r: self.cylinder_in_ball_cc(r) - cc, near, near + 200.0, xtol=1e-6)
        return self.d0_gy - self.gy_per_mm * radius

    @property
    def dmax_gy(self) -> float:
        """Dose at the organ's point nearest the centre (overlapping organs: the centre's, if the axis reaches it)."""
        return self.d0_gy - self.gy_per_mm * max(self.axis_offset_mm - self.cylinder_radius_mm, 0.0)


def _lens_area(r1: float, r2: float, d: float) -> float:
    """Area of the intersection of two discs of radii ``r1``, ``r2`` whose centres are ``d`` apart."""
    if r1 <= 0 or r2 <= 0 or d >= r1 + r2:
        return 0.0
    if d <= abs(r1 - r2):
        return math.pi * min(r1, r2) ** 2
    a1 = r1 ** 2 * math.acos((d ** 2 + r1 ** 2 - r2 ** 2) / (2 * d * r1))
    a2 = r2 ** 2 * math.acos((d ** 2 + r2 ** 2 - r1 ** 2) / (2 * d * r2))
    k = 0.5 * math.sqrt((-d + r1 + r2) * (d + r1 - r2) * (d - r1 + r2) * (d + r1 + r2))
    return a1 + a2 - k


# --------------------------------------------------------------------------- the cases


def relative(found: float, expected: float) -> float:
    return found / expected - 1.0


def phantom_errors(phantom: Phantom) -> dict:
    """Distances and volumes of ``phantom`` against its analytic answers (no dose)."""
    organs, ring_masks = C.measure_day(phantom.target(), phantom.organ(), phantom.spacing_mm, None, C.CourseSettings())
    organ = organs[0]
    voxel_cc = float(np.prod(phantom.spacing_mm)) / 1000.0
    edges = C.RING_EDGES_MM
    return {
        "spacing_mm": list(phantom.spacing_mm), "gap_mm": phantom.gap_mm,
        "min_distance_mm": organ.min_distance_mm, "min_distance_error_mm": organ.min_distance_mm - phantom.gap_mm,
        "ring_relative_error": [relative(np.count_nonzero(m) * voxel_cc, phantom.shell_cc(a, b))
                                for m, a, b in zip(ring_masks, edges, edges[1:])],
        "organ_in_ring_cc": organ.ring_cc,
        "organ_in_ring_analytic_cc": [phantom.organ_in_shell_cc(a, b) for a, b in zip(edges, edges[1:])],
        "in_target_cc": organ.in_target_cc, "in_target_analytic_cc": phantom.cylinder_in_ball_cc(phantom.radius_mm),
    }


def dose_errors(phantom: Phantom, v_gy=(20.0, 30.0)) -> dict:
    """Dmax, D0.5cc, D2cc and VxGy of the phantom's organ against the analytic DVH (relative errors)."""
    settings = C.CourseSettings(v_gy=tuple(v_gy))
    organ = C.measure_day(phantom.target(), phantom.organ(), phantom.spacing_mm, phantom.dose(), settings)[0][0]
    errors = {"dmax": relative(organ.dmax_gy, phantom.dmax_gy),
              "d0_5cc": relative(organ.dx_cc_gy[0.5], phantom.d_cc_gy(0.5)),
              "d2cc": relative(organ.dx_cc_gy[2.0], phantom.d_cc_gy(2.0))}
    errors.update({f"v{x:g}gy": relative(organ.v_gy_cc[x], phantom.v_gy_cc(x)) for x in v_gy})
    return {"spacing_mm": list(phantom.spacing_mm), "relative_error": errors,
            "found": {"dmax_gy": organ.dmax_gy, "d0_5cc_gy": organ.dx_cc_gy[0.5], "d2cc_gy": organ.dx_cc_gy[2.0],
                      **{f"v{x:g}gy_cc": organ.v_gy_cc[x] for x in v_gy}},
            "analytic": {"dmax_gy": phantom.dmax_gy, "d0_5cc_gy": phantom.d_cc_gy(0.5), "d2cc_gy": phantom.d_cc_gy(2.0),
                         **{f"v{x:g}gy_cc": phantom.v_gy_cc(x) for x in v_gy}}}


#: Day B's known motion, voxels (slice, row, col): the whole anatomy, then the organ alone towards the target.
MOTION_VOX = (2, -3, 4)
ORGAN_MOTION_VOX = (0, 0, -4)


def moved_days(phantom: Phantom, seed: int = 3):
    """Day A and day B of the phantom as scans with a smooth random texture (what the registration sees).

    On day B the whole anatomy (texture, target, organ) lies :data:`MOTION_VOX` further along the
    voxel axes, and the organ moves :data:`ORGAN_MOTION_VOX` more, towards the target (6 mm on
    1.5 mm columns): day B is the phantom with a gap 6 mm smaller. Returns ``(days, target_a, phantom_b)``.
    """
    from scipy.ndimage import gaussian_filter

    margin = 8
    rng = np.random.default_rng(seed)
    big = gaussian_filter(rng.normal(size=[n + 2 * margin for n in phantom.shape]), 2.5).astype(np.float32)
    big = (big - big.min()) / np.ptp(big) * 1000
    motion = np.array(MOTION_VOX)
    crop_a = tuple(slice(margin, margin + n) for n in phantom.shape)
    crop_b = tuple(slice(margin - m, margin - m + n) for m, n in zip(motion, phantom.shape))
    s, r, c = phantom.spacing_mm
    affine = np.diag([-c, -r, s, 1.0])

    def scan(voxels, name):
        return Scan(np.ascontiguousarray(voxels), phantom.spacing_mm, affine, tuple(range(1, phantom.shape[0] + 1)),
                    name, "nifti")

    organ_shift = (motion + np.array(ORGAN_MOTION_VOX)) * np.array(phantom.spacing_mm)
    day_a = ("day1", scan(big[crop_a], "day1"), phantom.organ())
    day_b = ("day2", scan(big[crop_b], "day2"), phantom.organ(tuple(organ_shift)))
    phantom_b = replace(phantom, gap_mm=phantom.gap_mm + ORGAN_MOTION_VOX[2] * phantom.spacing_mm[2])
    return [day_a, day_b], phantom.target(), phantom_b


def motion_errors(phantom: Phantom) -> dict:
    """Day B's numbers, through the real registration, against the phantom whose gap is 6 mm smaller."""
    days, target, phantom_b = moved_days(phantom)
    result = C.course("day1", target, days)
    a, b = (next(o for o in d.organs if o.organ == "stomach") for d in result.days)
    edges = C.RING_EDGES_MM
    motion_mm = np.array(MOTION_VOX) * np.array(phantom.spacing_mm)
    found_mm = np.abs(result.days[1].registration.translation_mm)
    return {
        "registration_translation_error_mm": float(np.linalg.norm(found_mm - np.abs(motion_mm)[[2, 1, 0]])),
        "min_distance_mm": [a.min_distance_mm, b.min_distance_mm],
        "expected_min_distance_mm": [phantom.gap_mm, phantom_b.gap_mm],
        "organ_in_ring_cc": [a.ring_cc, b.ring_cc],
        "expected_organ_in_ring_cc": [[p.organ_in_shell_cc(lo, hi) for lo, hi in zip(edges, edges[1:])]
                                      for p in (phantom, phantom_b)],
        "target_cc": [float(np.count_nonzero(d.target)) * float(np.prod(phantom.spacing_mm)) / 1000 for d in result.days],
    }


def plastimatch_agreement(volume_dir: Path, case_day: str, truth_csv: Path, work: Path, bin_gy: float = 0.5) -> dict:
    """Our cumulative DVH against plastimatch's, on a real scan written as a DICOM series with its real
    labels as an RTSTRUCT and a synthetic RTDOSE (a linear fall-off from a point in the abdomen).

    plastimatch rasterises the RTSTRUCT and reads the RTDOSE (``plastimatch convert``), then bins
    (``plastimatch dvh``; called on the study folder directly, plastimatch 1.9 rasterises on a
    0.52 mm grid of its own, so the two steps are run apart). Its rows are labelled by the bin's
    centre: row ``D`` counts the voxels of at least ``D - bin/2``. Returns the largest difference in
    % of each organ's volume over all bins.
    """
    import pydicom
    import rt_series

    from model.dicom.rtdose import read_rtdose
    from model.dicom.rtstruct import write_rtstruct
    from model.planning import organ_structures
    from model.rle import RleCsv
    from model.scans import load_scan

    slices = load_scan(volume_dir)
    volume = RleCsv(truth_csv, [case_day]).volume(case_day, slices.shape[1:])
    truth = volume.masks[:, [volume.slice_numbers.index(n) for n in slices.slice_numbers]]
    pixel = slices.spacing_mm[1]
    shutil.rmtree(work, ignore_errors=True)
    series = rt_series.write_mr_series(slices.voxels, work / "mr", pixel_spacing=(pixel, pixel),
                                       slice_mm=slices.spacing_mm[0])
    scan = load_scan(work / "mr")
    study = work / "study"
    study.mkdir()
    write_rtstruct(organ_structures(truth), scan.source, study / "rtstruct.dcm")
    s, r, c = (np.indices(scan.shape) - np.array([scan.shape[0] / 2, scan.shape[1] * 0.45, scan.shape[2] * 0.5])[:, None, None, None])
    distance = np.sqrt((s * scan.spacing_mm[0]) ** 2 + (r * pixel) ** 2 + (c * pixel) ** 2)
    like = pydicom.dcmread(series[0], stop_before_pixels=True)
    rt_series.write_rtdose(np.maximum(45.0 - 0.4 * distance, 0.0), study / "rtdose.dcm", like,
                           origin=tuple(scan.source.positions[0]), pixel_spacing=(pixel, pixel),
                           frame_mm=scan.spacing_mm[0], absolute_offsets=True)
    gy, covered = C.dose_on(scan, read_rtdose(study / "rtdose.dcm"))
    tool = shutil.which("plastimatch")
    subprocess.run([tool, "convert", "--input", str(study), "--output-ss-img", str(work / "ss.nrrd"),
                    "--output-ss-list", str(work / "ss.txt"), "--output-dose-img", str(work / "dose.nrrd")],
                   check=True, capture_output=True, timeout=300)
    subprocess.run([tool, "dvh", "--input-ss-img", str(work / "ss.nrrd"), "--input-ss-list", str(work / "ss.txt"),
                    "--input-dose", str(work / "dose.nrrd"), "--output-csv", str(work / "dvh.csv"),
                    "--normalization", "vox", "--bin-width", str(bin_gy)], check=True, capture_output=True, timeout=300)
    with open(work / "dvh.csv", newline="") as f:
        rows = list(csv.reader(f))
    bins = np.array([float(row[0]) for row in rows[1:]])
    theirs = np.array([[float(v) for v in row[1:1 + len(ORGANS)]] for row in rows[1:]])
    result = {"case_day": case_day, "bins": len(bins), "bin_gy": bin_gy, "dose_covers_scan": float(covered.mean()),
              "max_difference_pct": {}, "voxels": {}}
    for o, organ in enumerate(ORGANS):
        doses = np.sort(gy[truth[o]])
        ours = doses.size - np.searchsorted(doses, bins - bin_gy / 2, side="left")  # plastimatch's bin edges
        result["max_difference_pct"][organ] = float(np.abs(ours - theirs[:, o]).max() / theirs[0, o] * 100)
        result["voxels"][organ] = [int(truth[o].sum()), int(theirs[0, o])]
    return result


#: The real-label course: a case with five days of one size, and a 25 mm sphere target centred half-way
#: between the reference day's stomach and small-bowel centroids (RAS mm, the Kaggle convention: each
#: stack's middle voxel at the origin), where a pancreatic target would sit between them.
REAL_CASE = "case74"
TARGET_RADIUS_MM = 25.0


def real_label_course(kaggle_dir: Path, case: str = REAL_CASE):
    """The course of ``case``'s days from its real labels (no images: registrations are identity, so the
    target stays where it is in each stack's frame). Returns the :class:`~model.course.Course` and, per day,
    the volumes :func:`model.measure.organ_volumes_ml` gives (validated against SimpleITK in docs/days_truth.json)."""
    from model import days as D
    from model import registration as R
    from model.measure import organ_volumes_ml
    from model.rle import RleCsv
    from model.scans.kaggle import case_and_day, day_of

    with open(kaggle_dir / "volumes.csv", newline="") as f:
        geometry = {row["case_day"]: row for row in csv.DictReader(f) if row["case_day"].startswith(case + "_")}
    case_days = sorted(geometry, key=lambda cd: case_and_day(cd)[1])
    rows = RleCsv(kaggle_dir / "train.csv.gz", case_days)
    course_days, volumes = [], {}
    for case_day in case_days:
        g = geometry[case_day]
        shape = (int(g["height"]), int(g["width"]))
        volume = rows.volume(case_day, shape)
        pixel, thickness = float(g["pixel_spacing_mm"]), float(g["slice_thickness_mm"])
        spacing = (thickness, pixel, pixel)
        scan = Scan(np.zeros(volume.masks.shape[1:], np.uint8), spacing, np.diag([-pixel, -pixel, thickness, 1.0]),
                    tuple(volume.slice_numbers), case_day, "slices", case_day=case_day)
        label = day_of(case_day)
        course_days.append((label, scan, volume.masks))
        volumes[label] = organ_volumes_ml(volume.masks, spacing).tolist()
    reference_scan = course_days[0][1]
    affine = R.patient_affine(reference_scan)
    d, h, w = reference_scan.shape
    index = np.indices(reference_scan.shape).reshape(3, -1)
    ras = (affine @ np.vstack([index[2], index[1], index[0], np.ones(index.shape[1])]))[:3]
    centroids = D.organ_centroids_mm(course_days[0][2], affine)
    centre = (centroids[ORGANS.index("stomach")] + centroids[ORGANS.index("small_bowel")]) / 2
    target = (np.linalg.norm(ras - centre[:, None], axis=0) <= TARGET_RADIUS_MM).reshape(d, h, w)
    identity = {label: R.registration_from_matrix(np.eye(4), reference_scan) for label, _, _ in course_days}
    return C.course(course_days[0][0], target, course_days, registrations=identity), volumes, centre.tolist()


# --------------------------------------------------------------------------- a DICOM course on disk


#: The DICOM course's days and the (slice, row, col) roll of the anatomy on each.
DICOM_SHIFTS_VOX = {1: (0, 0, 0), 3: (0, 4, -3), 5: (2, -3, 2)}


def write_dicom_course(shared_data: Path, root: Path) -> dict:
    """Three DICOM days of one patient under ``root/case7/case7_dayN/scans`` (a real volume rolled by
    :data:`DICOM_SHIFTS_VOX`), an RTSTRUCT on day 1 with a 20 mm sphere ``PTV`` and a 10 mm ``GTV``, and
    an RTDOSE on day 1's grid falling 0.5 Gy/mm from 45 Gy at the sphere's centre.

    Returns ``series`` (day → files in slice order), ``reference`` (day 1's scan), ``ptv``, ``target``
    (the RTSTRUCT) and ``dose`` (the RTDOSE). Used by tests/model/test_course.py and tests/test_app_course.py.
    """
    import pydicom
    import rt_series

    from model.dicom.rtstruct import write_rtstruct
    from model.planning import Structure
    from model.scans import load_scan
    from scan_fixtures import kaggle_slices, stack

    voxels = stack(kaggle_slices(shared_data, "volume_276x276")).astype(np.uint16)[20:60]
    series = {}
    for day, shift in DICOM_SHIFTS_VOX.items():
        folder = root / "case7" / f"case7_day{day}" / "scans"
        series[day] = rt_series.write_mr_series(np.roll(voxels, shift, axis=(0, 1, 2)), folder,
                                                pixel_spacing=(1.63, 1.63), seed=day)
    reference = load_scan(series[1][0].parent)
    s, r, c = np.indices(reference.shape)
    centre = np.array([20, 150, 130])
    distance = np.sqrt(((s - centre[0]) * 3.0) ** 2 + ((r - centre[1]) * 1.63) ** 2 + ((c - centre[2]) * 1.63) ** 2)
    ptv = distance <= 20.0
    target = write_rtstruct([Structure("ptv", "PTV", ptv, "#ff00ff", "target"),
                             Structure("gtv", "GTV", distance <= 10.0, "#ff0000", "target")],
                            reference.source, root / "plan_rtstruct.dcm")
    like = pydicom.dcmread(series[1][0], stop_before_pixels=True)
    dose = rt_series.write_rtdose(np.maximum(45 - 0.5 * distance, 0.0), root / "rtdose.dcm", like,
                                  origin=tuple(reference.source.positions[0]), pixel_spacing=(1.63, 1.63))
    return {"series": series, "reference": reference, "ptv": ptv, "target": target, "dose": dose}
