"""Measurements and export files of a segmented scan: NIfTI (affine round trip), CSV, PNG zip, glb."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from model import labels
from model.mask_png import decode_mask_png
from locations import decode_rle_file
from model.dicom.export import NOT_DICOM_NOTE
from model.review import CSV_HEADER
from model.scans import Scan, load_scan
from model.scans.nifti import read_nifti
from model.measure import busiest_slice, measure, slice_areas_cm2
from model.exports import (label_volume, save_label_nifti, save_mask_png_zip, save_organ_meshes, save_submission_csv,
                           write_outputs)
from scan_fixtures import kaggle_slices, stack, write_dicom_series, zip_files


def _scan(shape=(6, 20, 30), spacing=(3.0, 1.5, 2.0), numbers=None, case_day=None, kaggle=True) -> Scan:
    affine = np.diag([-spacing[2], -spacing[1], spacing[0], 1.0])
    numbers = numbers or tuple(range(11, 11 + shape[0]))
    return Scan(np.arange(np.prod(shape), dtype=np.uint16).reshape(shape), spacing, affine, numbers,
                case_day or "scan", "slices", case_day=case_day, kaggle_named=kaggle)


def _masks(shape=(6, 20, 30)) -> np.ndarray:
    masks = np.zeros((3, *shape), dtype=bool)
    masks[0, 1:3, 2:6, 3:7] = True  # stomach: 2 slices × 4 × 4 = 32 voxels
    masks[1, 2:5, 10:12, 10:20] = True  # small bowel: 3 × 2 × 10 = 60 voxels
    masks[2, 2:5, 11:15, 15:25] = True  # large bowel overlaps small bowel on 3 × 1 × 5 voxels
    return masks


def test_measurements_by_hand():
    scan, masks = _scan(), _masks()
    stomach, small, large = measure(masks, scan)
    voxel_ml = 3.0 * 1.5 * 2.0 / 1000
    assert (stomach.voxels, small.voxels, large.voxels) == (32, 60, 120)
    assert stomach.volume_ml == pytest.approx(32 * voxel_ml)
    assert (stomach.first_slice, stomach.last_slice) == (12, 13)  # slice numbers, not indices
    assert stomach.largest_area_cm2 == pytest.approx(16 * 1.5 * 2.0 / 100)
    assert (large.first_slice, large.last_slice, large.largest_slice) == (13, 15, 13)
    areas = slice_areas_cm2(masks, scan.spacing_mm)
    assert areas.shape == (3, 6) and areas[1, 3] == pytest.approx(20 * 0.03)
    assert busiest_slice(masks) == 2  # stomach + both bowels
    empty = measure(np.zeros_like(masks), scan)[0]
    assert empty.volume_ml == 0 and empty.first_slice is None


def test_label_nifti_round_trip_with_nibabel(shared_data, tmp_path):
    import nibabel as nib

    files = kaggle_slices(shared_data, "volume_360x310", count=5)
    scan = load_scan(files, slice_thickness_mm=2.0)
    masks = np.zeros((3, *scan.shape), dtype=bool)
    masks[0, 1, 100:150, 30:80] = True
    masks[2, 1:4, 200:220, 250:300] = True
    masks[1, 3, 205:210, 260:262] = True  # overlaps large bowel, which wins in a label map
    path = save_label_nifti(masks, scan, tmp_path / "labels.nii.gz")
    img = nib.load(path)
    np.testing.assert_allclose(img.affine, scan.affine)
    np.testing.assert_allclose(img.header.get_zooms(), (1.5, 1.5, 2.0))
    data = np.asanyarray(img.dataobj)
    assert data.shape == (360, 310, 5)  # (col, row, slice)
    np.testing.assert_array_equal(data.transpose(2, 1, 0), label_volume(masks))
    assert data[40, 120, 1] == 1 and data[260, 205, 3] == 3 and data[100, 50, 0] == 0
    # And back through the app's own reader: the same (D, H, W) voxels and affine.
    again = read_nifti(path)
    np.testing.assert_array_equal(again.voxels, label_volume(masks))
    np.testing.assert_allclose(again.affine, scan.affine)


def test_label_nifti_keeps_an_oblique_dicom_affine(shared_data, tmp_path):
    import nibabel as nib

    voxels = stack(kaggle_slices(shared_data, count=20))  # 20 coronal-ish slices: axial slices 20 px tall
    oblique = (np.cos(0.2), np.sin(0.2), 0, 0, 0, -1)  # a coronal-ish oblique series
    scan = load_scan(write_dicom_series(voxels, tmp_path / "series", orientation=oblique))
    assert any("reoriented to axial slices" in n for n in scan.notes)  # coronal-ish: turned to axial for the model
    # Pixel (row 50, col 70) of the series' slice 2, wherever the turn put it in the scan.
    s, r, c = np.unravel_index(scan.source.to_source(np.arange(np.prod(scan.shape)).reshape(scan.shape))[2, 50, 70],
                               scan.shape)
    masks = np.zeros((3, *scan.shape), dtype=bool)
    masks[1, s, r, c] = True
    img = nib.load(save_label_nifti(masks, scan, tmp_path / "labels.nii.gz"))
    np.testing.assert_allclose(img.affine, scan.affine)
    ras = img.affine @ [c, r, s, 1]  # the labelled voxel's position, from the DICOM geometry by hand
    lps = np.array([-100.0, -120.0, 50.0]) + 70 * 0.8 * np.array(oblique[:3]) + 50 * 0.9 * np.array(oblique[3:]) \
        + 2 * 3.0 * np.cross(oblique[:3], oblique[3:])
    np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-4)  # 0.1 µm: the turned affine's rounding
    assert np.asanyarray(img.dataobj)[c, r, s] == 2


def test_submission_csv_round_trips_through_rle(tmp_path):
    masks = _masks()
    scan = _scan(numbers=(1, 2, 3, 5, 6, 7), case_day="case9_day4")
    path = save_submission_csv(masks, scan, tmp_path / "sub.csv")
    assert path.read_text().splitlines()[:2] == ["id,class,predicted", "case9_day4_slice_0001,stomach,"]
    volume = decode_rle_file(path, {"case9_day4": (20, 30)})["case9_day4"]
    assert volume.slice_numbers == (1, 2, 3, 5, 6, 7)
    np.testing.assert_array_equal(volume.masks, masks)  # overlaps survive: one row per organ
    assert save_submission_csv(masks, _scan(), tmp_path / "none.csv") is None  # no case/day: no ids
    assert save_submission_csv(masks, _scan(case_day="case1_day1", kaggle=False), tmp_path / "n.csv") is None


def test_mask_png_zip_keeps_overlaps(tmp_path):
    from PIL import Image

    masks, scan = _masks(), _scan()
    path = save_mask_png_zip(masks, scan, tmp_path / "masks.zip")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert names[0] == "scan/slice_0011_masks.png" and len(names) == 6
        decoded = np.stack([decode_mask_png(np.asarray(Image.open(archive.open(n)))) for n in names], axis=1)
    np.testing.assert_array_equal(decoded, masks)


def test_glb_surfaces_have_organ_colours_and_millimetre_size(tmp_path):
    import trimesh

    masks = np.zeros((3, 10, 40, 40), dtype=bool)
    masks[0, 2:8, 5:25, 10:20] = True  # 6 slices × 20 rows × 10 cols
    masks[2, 1:3, 30:35, 30:35] = True
    scan = _scan(shape=(10, 40, 40), spacing=(3.0, 1.5, 2.0))
    scene = trimesh.load(save_organ_meshes(masks, scan, tmp_path / "organs.glb"))
    assert set(scene.geometry) == {"stomach", "large_bowel"}
    stomach = scene.geometry["stomach"]
    np.testing.assert_allclose(stomach.visual.material.baseColorFactor[:3], labels.rgb("stomach"))
    assert stomach.volume > 0  # outward normals
    # glTF axes: x = columns (10 × 2 mm), y = up = slices (6 × 3 mm), z = rows (20 × 1.5 mm); the
    # level-0.5 surface lies half a voxel outside the outer voxel centres, so whole voxels count.
    np.testing.assert_allclose(stomach.extents, [20.0, 18.0, 30.0], atol=1e-6)
    assert save_organ_meshes(np.zeros_like(masks), scan, tmp_path / "none.glb") is None


def test_glb_of_a_ragged_organ_on_one_slice(tmp_path):
    """A coarse marching-cubes grid steps over a one-slice organ; the surface is then meshed on every voxel."""
    import trimesh

    masks = np.zeros((3, 1, 40, 40), dtype=bool)
    masks[1, 0] = np.random.default_rng(0).random((40, 40)) > 0.5  # noise, as an untrained model gives
    scene = trimesh.load(save_organ_meshes(masks, _scan(shape=(1, 40, 40)), tmp_path / "organs.glb", max_faces=100))
    assert set(scene.geometry) == {"small_bowel"} and len(scene.geometry["small_bowel"].faces) > 100


def test_write_outputs_from_a_real_zip(shared_data, tmp_path):
    files = kaggle_slices(shared_data, "volume_234x234", count=6)
    scan = load_scan([zip_files(files, tmp_path / "case2_day1.zip")])
    masks = np.zeros((3, *scan.shape), dtype=bool)
    masks[1, 2:4, 100:140, 90:120] = True
    outputs = write_outputs(masks, scan, tmp_path / "out")
    assert [p.name for p in outputs.files()] == ["case2_day1_labels.nii.gz", "case2_day1_submission.csv",
                                                 "case2_day1_masks.zip", "case2_day1_organs.glb",
                                                 "case2_day1_review.csv"]
    # Small bowel on two slices of six, empty around them: an area jump (no probabilities, so the only
    # sign); one flag at most for six slices, the earlier of the tie.
    assert [(f.slice_index, f.organ, f.score) for f in outputs.flags] == [(2, "small_bowel", 0.6)]
    assert outputs.review.read_text().splitlines()[0] == ",".join(CSV_HEADER)
    assert len(outputs.review.read_text().splitlines()) == 2
    assert outputs.structures == () and outputs.dicom == ()
    assert outputs.notes == (NOT_DICOM_NOTE,)  # a zip of PNGs carries no DICOM references


def test_organ_masks_of_one_shape_only(tmp_path):
    """``(O, D, H, W)`` everywhere: masks that do not fit the scan in every dimension are refused."""
    from model.review import review_flags

    scan = Scan(np.arange(4 * 8 * 6, dtype=np.uint16).reshape(4, 8, 6), (3.0, 1.5, 1.5), np.eye(4), (1, 2, 3, 4),
                "four", "slices")
    slices_first = np.zeros((4, 3, 8, 6), dtype=bool)
    for wrong in (slices_first, np.zeros((3, 4, 6, 8), dtype=bool), np.zeros((3, 5, 8, 6), dtype=bool)):
        with pytest.raises(ValueError, match=r"\(organs, slices, rows, cols\) = \(3, 4, 8, 6\)"):
            write_outputs(wrong, scan, tmp_path)
    with pytest.raises(ValueError, match="organ_masks must be"):
        review_flags(slices_first, scan.spacing_mm, slice_numbers=scan.slice_numbers)
    assert write_outputs(np.zeros((3, 4, 8, 6), dtype=bool), scan, tmp_path).nifti.exists()
