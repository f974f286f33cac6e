"""Two treatment days compared (model.days): identity, a known rigid motion, different grids, real
multi-day labels against SimpleITK's own measurements, and the inputs that must be refused or warned."""

from __future__ import annotations

import csv
import logging
import subprocess
import sys
import warnings

import numpy as np
import pytest
from locations import REPO
from scipy.spatial.distance import cdist
from scipy.spatial.transform import Rotation

from model import days, registration
from model.labels import ORGANS
from model.measure import organ_volumes_ml
from model.rle import RleCsv
from model.scans import Scan, ScanError, load_scan

#: The shared 360×310 volume and its real labels (shared/data/README.md identifies it).
CASE_DAY = "case47_day29"
#: The known motion: 8 mm, and 3° about an oblique axis, as the issue asks.
SHIFT_MM = np.array([4.0, -5.0, 4.9])  # RAS (LR, AP, SI); length 8.06 mm
ROTATION_DEG = 3.0
AXIS = np.array([0.3, 0.2, 1.0]) / np.linalg.norm([0.3, 0.2, 1.0])


@pytest.fixture(scope="module")
def day_a(shared_data):
    """The real 360×310 volume and its real masks ``(O, D, H, W)`` on the slices the folder holds."""
    scan = load_scan(shared_data / "scans" / "volume_360x310")
    scan.case_day = CASE_DAY
    volume = RleCsv(shared_data / "kaggle" / "train.csv.gz", [CASE_DAY]).volume(CASE_DAY, scan.shape[1:])
    masks = volume.masks[:, [volume.slice_numbers.index(n) for n in scan.slice_numbers]]
    assert masks.any(axis=(1, 2, 3)).all()
    return scan, masks


def known_motion(scan: Scan) -> np.ndarray:
    """The RAS ``(4, 4)`` A→B motion: rotate about the scan's centre, then shift by :data:`SHIFT_MM`."""
    d, h, w = scan.shape
    centre = (registration.patient_affine(scan) @ [(w - 1) / 2, (h - 1) / 2, (d - 1) / 2, 1.0])[:3]
    rotation = Rotation.from_rotvec(np.radians(ROTATION_DEG) * AXIS).as_matrix()
    motion = np.eye(4)
    motion[:3, :3] = rotation
    motion[:3, 3] = centre + SHIFT_MM - rotation @ centre
    return motion


def moved_day(scan: Scan, masks: np.ndarray, motion: np.ndarray, shape: tuple[int, int, int]):
    """Day A's anatomy moved by ``motion`` and resampled with SimpleITK onto a ``shape`` grid of the same spacing."""
    import SimpleITK as sitk

    s, r, c = scan.spacing_mm
    empty = Scan(np.zeros(shape, np.float32), scan.spacing_mm, np.diag([-c, -r, s, 1.0]),
                 tuple(range(1, shape[0] + 1)), "case47_day40", "slices", case_day="case47_day40")
    grid = registration._itk_image(np.zeros(shape, np.uint8), registration.patient_affine(empty))
    # Resample reads the input at transform(x): B's grid point x shows A's anatomy at motion⁻¹(x).
    back = registration._itk_transform(np.linalg.inv(motion))
    affine_a = registration.patient_affine(scan)

    def resample(volume, interpolator, dtype):
        image = registration._itk_image(volume.astype(dtype), affine_a)
        return sitk.GetArrayFromImage(sitk.Resample(image, grid, back, interpolator, 0.0))

    voxels = resample(scan.voxels, sitk.sitkLinear, np.float32)
    masks_b = np.stack([resample(m, sitk.sitkNearestNeighbor, np.uint8).astype(bool) for m in masks])
    return Scan(voxels, empty.spacing_mm, empty.affine, empty.slice_numbers, empty.name, "slices",
                case_day=empty.case_day), masks_b


def rotation_error_deg(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.degrees(Rotation.from_matrix(found[:3, :3] @ truth[:3, :3].T).magnitude()))


def test_identity_is_zero_motion_and_no_change(day_a):
    scan, masks = day_a
    result = days.compare_days(scan, masks, scan, masks)
    reg = result.registration
    assert reg.translation_length_mm < 0.1 and reg.rotation_angle_deg < 0.1
    assert reg.quality > 0.999 and reg.overlap > 0.99
    assert result.notes == ["Day A and day B are the same scan (the same voxels at the same place): every change "
                            "below is zero by construction; upload another day as B."]
    for organ in result.organs:
        assert organ.status == "present"
        assert organ.volume_change_pct == 0.0
        assert organ.raw_shift_length_mm == 0.0
        assert organ.registered_shift_length_mm < 0.1
        assert organ.dice_registered == pytest.approx(1.0)
        assert organ.hd95_registered_mm == 0.0 and organ.max_surface_distance_registered_mm == 0.0
    np.testing.assert_array_equal(result.masks_b_on_a, masks)


@pytest.mark.parametrize("grid", ["same 360×310 grid", "266×266 grid"])
def test_known_motion_is_recovered(day_a, grid):
    scan, masks = day_a
    motion = known_motion(scan)
    shape = scan.shape if grid.startswith("same") else (scan.shape[0], 266, 266)
    scan_b, masks_b = moved_day(scan, masks, motion, shape)
    result = days.compare_days(scan, masks, scan_b, masks_b)
    reg = result.registration
    assert np.linalg.norm(np.array(reg.translation_mm) - SHIFT_MM) < 1.0
    assert rotation_error_deg(reg.a_to_b, motion) < 0.5
    assert abs(reg.rotation_angle_deg - ROTATION_DEG) < 0.5
    assert reg.quality > 0.9
    centroids_a = days.organ_centroids_mm(masks, registration.patient_affine(scan))
    for o, organ in enumerate(result.organs):
        # Raw: each organ's centroid moved as the known motion moves A's centroid.
        expected = (motion @ np.append(centroids_a[o], 1.0))[:3] - centroids_a[o]
        assert np.linalg.norm(np.array(organ.centroid_shift_raw_mm) - expected) < 1.0, organ.organ
        assert organ.registered_shift_length_mm < 1.0, organ.organ
        assert abs(organ.volume_change_pct) < 3.0, organ.organ
        assert organ.dice_registered > 0.9, organ.organ
        assert organ.hd95_registered_mm < 4.0, organ.organ


def test_real_days_on_different_grids_match_simpleitk(shared_data):
    """case122: day 0 is 360×310, day 18 266×266. Volumes and centroids against LabelShapeStatistics."""
    import SimpleITK as sitk

    rows = RleCsv(shared_data / "kaggle" / "train.csv.gz", ["case122_day0", "case122_day18"])
    shapes = {"case122_day0": (310, 360), "case122_day18": (266, 266)}
    found = {}
    for case_day, (h, w) in shapes.items():
        masks = rows.volume(case_day, (h, w)).masks
        scan = Scan(np.zeros(masks.shape[1:], np.uint8), (3.0, 1.5, 1.5), np.diag([-1.5, -1.5, 3.0, 1.0]),
                    tuple(range(masks.shape[1])), case_day, "slices", case_day=case_day)
        volumes = organ_volumes_ml(masks, scan.spacing_mm)
        centroids = days.organ_centroids_mm(masks, registration.patient_affine(scan))
        d = masks.shape[1]
        for o in range(len(ORGANS)):
            # Independently: an LPS image centred on the stack's middle voxel (x = +col, y = +row in LPS).
            image = sitk.GetImageFromArray(masks[o].astype(np.uint8))
            image.SetSpacing((1.5, 1.5, 3.0))
            image.SetOrigin((-1.5 * (w - 1) / 2, -1.5 * (h - 1) / 2, -3.0 * (d - 1) / 2))
            stats = sitk.LabelShapeStatisticsImageFilter()
            stats.Execute(image)
            assert volumes[o] == pytest.approx(stats.GetPhysicalSize(1) / 1000.0, rel=1e-9)
            x, y, z = stats.GetCentroid(1)
            np.testing.assert_allclose(centroids[o], (-x, -y, z), atol=1e-6)
        found[case_day] = volumes, centroids
    (v0, c0), (v18, c18) = found.values()
    assert (v0 > 10).all() and (v18 > 10).all()
    assert np.isfinite(c18 - c0).all()


def _identity(scan: Scan) -> registration.Registration:
    return registration.registration_from_matrix(np.eye(4), scan)


def test_missing_organ_is_reported_absent_without_division_by_zero(day_a, tmp_path):
    scan, masks = day_a
    masks_a, masks_b = masks.copy(), masks.copy()
    masks_a[ORGANS.index("large_bowel")] = False
    masks_b[ORGANS.index("stomach")] = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's divide-by-zero and invalid-value warnings included
        result = days.compare_days(scan, masks_a, scan, masks_b, registration=_identity(scan))
    by_organ = {o.organ: o for o in result.organs}
    stomach, bowel, large = by_organ["stomach"], by_organ["small_bowel"], by_organ["large_bowel"]
    assert stomach.status == "absent on day B" and stomach.volume_b_ml == 0.0
    assert stomach.volume_change_pct == -100.0
    assert large.status == "absent on day A" and large.volume_change_pct is None
    for organ in (stomach, large):
        assert organ.dice_registered is None and organ.hd95_registered_mm is None
        assert organ.centroid_shift_raw_mm is None and organ.raw_shift_length_mm is None
    assert bowel.dice_registered == 1.0
    path = days.write_changes_csv(result.rows("case47", "day29", "day29"), tmp_path / "changes.csv")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == days.CHANGE_COLUMNS
        rows = {row["organ"]: row for row in reader}
    assert rows["large_bowel"]["volume_change_pct"] == "" and rows["large_bowel"]["dice_registered"] == ""
    assert float(rows["stomach"]["volume_change_pct"]) == -100.0
    assert float(rows["small_bowel"]["dice_registered"]) == 1.0


def test_changes_csv_names_a_case_and_its_days_as_the_cohort_command_does():
    """The Compare days tab and ``model.predict --compare-days`` write the same case, day_a and day_b."""
    def scan(name: str, case_day: str | None = None) -> Scan:
        return Scan(np.zeros((2, 8, 8), np.uint8), (3.0, 1.5, 1.5), np.eye(4), (1, 2), name, "slices", case_day=case_day)

    assert days.row_names(scan("case47_day29", "case47_day29"), scan("case47_day31", "case47_day31")) == \
        ("case47", "day29", "day31")
    # Two patients, or scans without a case-day name: the scans' own names.
    assert days.row_names(scan("case47_day29", "case47_day29"), scan("case2_day1", "case2_day1")) == \
        ("case47_day29", "case47_day29", "case2_day1")
    assert days.row_names(scan("before"), scan("after")) == ("before", "before", "after")


def test_no_organ_found_is_said_plainly(day_a):
    scan, masks = day_a
    result = days.compare_days(scan, masks, scan, np.zeros_like(masks), registration=_identity(scan))
    assert any("No organ was found on day B" in note for note in result.notes)
    assert {o.status for o in result.organs} == {"absent on day B"}


def test_a_2d_slice_is_refused(day_a):
    scan, masks = day_a
    flat = Scan(scan.voxels[:1], scan.spacing_mm, scan.affine, scan.slice_numbers[:1], "one_slice", "slices")
    with pytest.raises(ScanError, match="Day B .* is a single 2D slice; comparing days needs two 3D scans"):
        days.compare_days(scan, masks, flat, masks[:, :1])
    with pytest.raises(ScanError, match="Day A .* 2D slice"):
        registration.register(flat, scan)


def test_different_patients_warn_without_naming_them(day_a, caplog):
    caplog.set_level(logging.DEBUG)
    scan, masks = day_a
    other = Scan(scan.voxels, scan.spacing_mm, scan.affine, scan.slice_numbers, "case30_day0", "slices",
                 case_day="case30_day0")
    with pytest.warns(UserWarning, match="different cases") as caught:
        result = days.compare_days(scan, masks, other, masks, registration=_identity(scan))
    assert not any("case30" in str(w.message) or "case47" in str(w.message) for w in caught)
    assert any("different cases" in note for note in result.notes)  # the user sees it; the log does not name them
    assert result.organs[0].dice_registered == 1.0
    assert not [r for r in caplog.records if "case30" in r.getMessage() or "case47" in r.getMessage()]


def test_scans_that_cannot_overlap_are_refused(day_a):
    scan, masks = day_a
    far = np.eye(4)
    far[2, 3] = 2000.0  # B's anatomy two metres above A's
    with pytest.raises(ScanError, match="do not overlap enough"):
        days.compare_days(scan, masks, scan, masks, registration=registration.registration_from_matrix(far, scan))


def test_surface_distances_against_brute_force():
    rng = np.random.default_rng(19)
    spacing = (3.0, 1.5, 1.2)
    a = np.zeros((12, 20, 20), bool)
    b = np.zeros_like(a)
    a[3:9, 4:14, 5:15] = True
    b[4:10, 6:17, 5:13] = True
    a &= rng.random(a.shape) > 0.1  # ragged surfaces, holes included
    hd95, largest = days.surface_distances_mm(a, b, spacing)
    points = [np.argwhere(days._surface(m)) * spacing for m in (a, b)]
    distances = cdist(*points)
    directed = distances.min(axis=1), distances.min(axis=0)
    assert hd95 == pytest.approx(max(np.percentile(d, 95) for d in directed))
    assert largest == pytest.approx(max(d.max() for d in directed))
    assert largest > hd95 > 0


def test_kaggle_coordinates_put_the_image_centre_at_the_origin():
    scan = Scan(np.zeros((5, 4, 6), np.uint8), (3.0, 1.5, 1.2), np.diag([-1.2, -1.5, 3.0, 1.0]),
                tuple(range(5)), "s", "slices")
    affine = registration.patient_affine(scan)
    np.testing.assert_allclose(affine @ [2.5, 1.5, 2, 1], [0, 0, 0, 1])
    np.testing.assert_allclose(affine @ [3.5, 1.5, 2, 1], [-1.2, 0, 0, 1])  # one column towards the left
    nifti = Scan(scan.voxels, scan.spacing_mm, np.diag([-1.2, -1.5, 3.0, 1.0]) + np.eye(4, k=3) * 7,
                 scan.slice_numbers, "n", "nifti")
    np.testing.assert_array_equal(registration.patient_affine(nifti), nifti.affine)  # a real origin is kept


def test_slice_files_their_label_nifti_and_compare_days_share_one_origin(day_a, tmp_path):
    """Slice files carry no origin. The label NIfTI download put the first voxel there and Compare days and the
    course the image centre, so a target or dose placed in the download's coordinates missed by half the field
    of view; now both put the middle voxel of the stack at the origin."""
    import nibabel as nib

    from model.exports import save_label_nifti

    scan, masks = day_a
    d, h, w = scan.shape
    np.testing.assert_allclose(scan.affine @ [(w - 1) / 2, (h - 1) / 2, (d - 1) / 2, 1], [0, 0, 0, 1], atol=1e-9)
    np.testing.assert_allclose(registration.patient_affine(scan), scan.affine)
    written = nib.load(save_label_nifti(masks, scan, tmp_path / "labels.nii.gz"))
    np.testing.assert_allclose(written.affine, registration.patient_affine(scan), atol=1e-5)


def test_a_day_of_slice_files_against_one_with_scanner_coordinates_says_the_origins_differ(day_a):
    scan, masks = day_a
    first_voxel_origin = np.diag([-1.5, -1.5, 3.0, 1.0])  # the same anatomy, as a NIfTI written elsewhere
    nifti = Scan(scan.voxels, scan.spacing_mm, first_voxel_origin, scan.slice_numbers, "case47_day29", "nifti")
    result = days.compare_days(scan, masks, nifti, masks)
    assert [n for n in result.notes if "no patient coordinates" in n] == [
        "Day A is slice files, which carry no patient coordinates (its image centre is taken as the origin), and day "
        "B has its scanner's: the motion and the raw shifts reported between them include the distance between the "
        "two origins, not only the organs' motion. Compare days of one format."]
    assert registration.origins_note(nifti, scan, "A", "C").startswith("Day C is slice files")  # the course's days
    assert registration.origins_note(nifti, nifti) is None and registration.origins_note(scan, scan) is None


def test_simpleitk_is_imported_only_when_comparing():
    code = "import sys, model.days; assert 'SimpleITK' not in sys.modules, 'imported at module load'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_published_truth_distribution_is_reproduced(shared_data, tmp_path):
    """docs/days_truth.json (quoted by docs/compare.md) comes from the real labels: rerun case 122."""
    import json

    out = tmp_path / "truth.json"
    subprocess.run([sys.executable, str(REPO / "docs" / "days_truth.py"), "--data", str(shared_data),
                    "--out", str(out), "--cases", "122"], cwd=REPO, check=True, capture_output=True)
    fresh = json.loads(out.read_text())
    published = json.loads((REPO / "docs" / "days_truth.json").read_text())
    assert fresh["check"]["largest_centroid_difference_mm"] < 1e-6
    assert fresh["rows"] == [row for row in published["rows"] if row["case"] == "case122"]
    assert len(fresh["rows"]) == 4 * len(ORGANS) and fresh["pairs_on_different_grids"] == 4
