"""Reading whole scans: Kaggle slice files and zips, NIfTI, DICOM; zip safety; naming by case and day."""

from __future__ import annotations

import random
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from model.scans import ScanError, load_scan
from model.scans.archive import extract_zip
from scan_fixtures import (PATIENT_ID, PATIENT_NAME, kaggle_slices, stack, write_dicom_series, write_nifti,
                           zip_files)

# --------------------------------------------------------------------------- Kaggle slices


def test_kaggle_folder_is_ordered_with_spacing_from_names(shared_data):
    files = kaggle_slices(shared_data, "volume_360x310")
    scan = load_scan(files[0].parent)
    assert scan.shape == (len(files), 310, 360)  # names give W=360 first, H=310
    assert scan.spacing_mm == (3.0, 1.5, 1.5)
    assert list(scan.slice_numbers) == sorted(scan.slice_numbers)
    assert scan.kaggle_named and scan.kind == "slices" and scan.case_day is None
    np.testing.assert_array_equal(scan.voxels, stack(files))
    assert any("3 mm" in n for n in scan.notes)


def test_shuffled_files_and_entered_thickness(shared_data):
    files = kaggle_slices(shared_data, count=12)
    shuffled = random.Random(3).sample(files, len(files))
    scan = load_scan(shuffled, slice_thickness_mm=2.5)
    np.testing.assert_array_equal(scan.voxels, stack(files))
    assert scan.spacing_mm == (2.5, 1.5, 1.5)
    np.testing.assert_allclose(np.diag(scan.affine), [-1.5, -1.5, 2.5, 1.0])
    assert not any("assumed" in n for n in scan.notes)


def test_gaps_in_slice_numbers_are_reported(shared_data):
    files = kaggle_slices(shared_data, count=10)
    scan = load_scan(files[:4] + files[6:])
    assert len(scan) == 8 and any("2 slice numbers are missing" in n for n in scan.notes)


def test_16_bit_slices_keep_their_depth(shared_data, tmp_path):
    from PIL import Image

    files = kaggle_slices(shared_data, count=3)
    for f in files:
        Image.fromarray(np.asarray(Image.open(f)).astype(np.uint16) * 257).save(tmp_path / f.name)
    scan = load_scan(sorted(tmp_path.iterdir()))
    assert scan.voxels.dtype == np.uint16
    np.testing.assert_array_equal(scan.voxels, stack(files).astype(np.uint16) * 257)


def test_zip_of_a_kaggle_case_folder_names_the_case(shared_data, tmp_path):
    files = kaggle_slices(shared_data, count=8)
    archive = zip_files(files, tmp_path / "upload.zip", folder="case7/case7_day3/scans")
    scan = load_scan([archive])
    assert scan.case_day == "case7_day3" and scan.name == "case7_day3"
    np.testing.assert_array_equal(scan.voxels, stack(files))


def test_scans_are_named_after_the_case_day_folder_they_sit_in(shared_data, tmp_path):
    import shutil

    folder = tmp_path / "train" / "case4" / "case4_day7" / "scans"
    folder.mkdir(parents=True)
    for f in kaggle_slices(shared_data, count=3):
        shutil.copy(f, folder)
    scan = load_scan(folder)  # the Kaggle layout's own scans/ folder, not "scans"
    assert (scan.name, scan.case_day, scan.kaggle_named) == ("case4_day7", "case4_day7", True)
    assert load_scan(sorted(folder.iterdir())).name == "case4_day7"  # loose files of that folder
    write_nifti(stack(kaggle_slices(shared_data, count=3)), (3.0, 1.5, 1.5), folder.parent / "t2.nii.gz")
    nifti = load_scan(folder.parent / "t2.nii.gz")
    assert (nifti.name, nifti.case_day, nifti.kaggle_named) == ("case4_day7", "case4_day7", False)


def _zip(tmp_path: Path, members: dict[str, bytes]) -> Path:
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize(("members", "message"), [
    ({"../evil.png": b"x"}, "unsafe path"),
    ({"/etc/evil.png": b"x"}, "unsafe path"),
    ({"scans/inner.zip": b"PK"}, "another archive"),
])
def test_unsafe_zips_are_refused(tmp_path, members, message):
    with pytest.raises(ScanError, match=message):
        load_scan([_zip(tmp_path, members)])
    assert not (tmp_path.parent / "evil.png").exists()


def test_zip_links_and_limits_are_refused(tmp_path):
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo("slice.png")
        info.external_attr = (0o120777 << 16)  # a symlink
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(ScanError, match="link"):
        load_scan([path])
    many = _zip(tmp_path, {f"s{i}.png": b"x" for i in range(5)})
    with pytest.raises(ScanError, match="over the 4-file limit"):
        extract_zip(many, tmp_path / "out1", max_members=4)
    # A bomb: 8 MB of zeros compress to a few KB; the limit counts bytes as they are extracted.
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("slice_0001_16_16_1.50_1.50.png", bytes(8 << 20))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ScanError, match="unpacks to over 1 MB"):
        extract_zip(bomb, tmp_path / "out2", max_bytes=1 << 20)
    (tmp_path / "not.zip").write_bytes(b"not a zip")
    with pytest.raises(ScanError, match="not a readable zip"):
        load_scan([tmp_path / "not.zip"])


def test_inconsistent_uploads_are_refused(shared_data, tmp_path):
    a = kaggle_slices(shared_data, "volume_266x266", count=2)
    b = kaggle_slices(shared_data, "volume_276x276")[-1:]
    with pytest.raises(ScanError, match="different pixel spacings|one size"):
        load_scan(a + b)
    with pytest.raises(ScanError, match="appears twice"):
        load_scan([a[0], a[0]])
    (tmp_path / "notes.nii").write_bytes(b"junk")
    with pytest.raises(ScanError, match="mixes"):
        load_scan([a[0], tmp_path / "notes.nii"])
    (tmp_path / "x.exe").write_bytes(b"MZ")
    with pytest.raises(ScanError, match="not a slice image"):
        load_scan([tmp_path / "x.exe"])
    with pytest.raises(ScanError, match="No files"):
        load_scan([])


# --------------------------------------------------------------------------- NIfTI


@pytest.mark.parametrize("axcodes", [("L", "P", "S"), ("R", "A", "S"), ("P", "I", "R")])
def test_nifti_gives_axial_slices_in_any_stored_orientation(shared_data, tmp_path, axcodes):
    voxels = stack(kaggle_slices(shared_data, "volume_276x276", count=10))
    path = tmp_path / "scan.nii.gz"
    lps_affine = write_nifti(voxels, (3.0, 1.2, 1.4), path, axcodes)
    scan = load_scan([path])
    assert scan.kind == "nifti" and scan.spacing_mm == pytest.approx((3.0, 1.2, 1.4))
    np.testing.assert_array_equal(scan.voxels, voxels)
    np.testing.assert_allclose(scan.affine, lps_affine, atol=1e-5)


@pytest.mark.parametrize("qform", [False, True])
def test_nifti_with_an_empty_sform_is_read(shared_data, tmp_path, qform):
    """Some writers set the sform's code but leave its rows zero, so nibabel's affine is all zeros:
    the qform gives the orientation when there is one, else the voxels are read as stored (ITK's LPS)."""
    import nibabel as nib

    voxels = stack(kaggle_slices(shared_data, "volume_276x276", count=4))
    path = tmp_path / "scan.nii"
    lps_affine = write_nifti(voxels, (3.0, 1.2, 1.4), path, ("R", "A", "S") if qform else ("L", "P", "S"))
    img = nib.load(path)
    header = img.header.copy()
    header.set_sform(np.zeros((4, 4)), code="scanner")
    header["qform_code"] = 1 if qform else 0
    empty = tmp_path / "empty_sform.nii"
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), None, header), empty)
    assert not nib.load(empty).affine[:3, :3].any()

    scan = load_scan([empty])
    np.testing.assert_array_equal(scan.voxels, voxels)
    assert scan.spacing_mm == pytest.approx((3.0, 1.2, 1.4))
    if qform:  # stored RAS, the qform says so: reoriented as the full file is
        np.testing.assert_allclose(scan.affine, lps_affine, atol=1e-5)
        assert any("its qform gives the orientation" in note for note in scan.notes)
    else:
        np.testing.assert_allclose(scan.affine, np.diag([-1.4, -1.2, 3.0, 1.0]), atol=1e-6)
        assert any("orientation matrix is empty" in note for note in scan.notes)


@pytest.mark.parametrize("entered", [1e308, 1e-300, float("inf"), float("nan")])
def test_an_entered_slice_thickness_out_of_range_is_refused_for_every_input(shared_data, tmp_path, entered):
    """1e-300 mm crashed the NIfTI writer and 1e308 mm gave "inf ml": refused in one line, whatever the input."""
    files = kaggle_slices(shared_data, "volume_234x234", count=3)
    path = tmp_path / "scan.nii.gz"
    write_nifti(stack(files), (3.0, 1.5, 1.5), path)
    for upload in (files, [path]):
        with pytest.raises(ScanError, match=r"^Slice thickness .* mm is outside 0\.01–100 mm"):
            load_scan(upload, slice_thickness_mm=entered)
    assert load_scan(files, slice_thickness_mm=0).spacing_mm[0] == 3.0  # 0: the default


def test_bad_niftis_are_refused(tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((20, 20, 4, 2), np.int16), np.eye(4)), tmp_path / "4d.nii")
    with pytest.raises(ScanError, match="holds 2 volumes"):
        load_scan([tmp_path / "4d.nii"])
    (tmp_path / "trunc.nii.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(ScanError, match="NIfTI"):
        load_scan([tmp_path / "trunc.nii.gz"])


# --------------------------------------------------------------------------- DICOM


def test_dicom_series_ordered_by_position_with_rescale(shared_data, tmp_path):
    voxels = stack(kaggle_slices(shared_data, count=9)).astype(np.float32) * 2 - 100
    files = write_dicom_series(voxels, tmp_path / "series", slope=2.0, intercept=-100.0)
    scan = load_scan(random.Random(1).sample(files, len(files)))
    assert scan.kind == "dicom"
    np.testing.assert_array_equal(scan.voxels, voxels)  # positions win over the reversed InstanceNumbers
    assert scan.spacing_mm == pytest.approx((3.0, 0.9, 0.8))  # PixelSpacing is (row, column)
    # Voxel (col 0, row 0, slice k) sits at ImagePositionPatient of slice k, LPS → RAS.
    for k in (0, 8):
        np.testing.assert_allclose(scan.affine @ [0, 0, k, 1], [100.0, 120.0, 50.0 + 3 * k, 1])
    np.testing.assert_allclose(scan.affine @ [10, 0, 0, 1], [100 - 8.0, 120.0, 50.0, 1])  # +col → patient left
    text = " ".join([scan.name, scan.describe(), *scan.notes])
    assert PATIENT_NAME not in text and PATIENT_ID not in text


def test_dicom_zip_without_extensions_and_oblique_orientation(shared_data, tmp_path):
    voxels = stack(kaggle_slices(shared_data, count=6))
    oblique = (1, 0, 0, 0, np.cos(0.3), -np.sin(0.3))
    files = write_dicom_series(voxels, tmp_path / "series", suffix="", orientation=oblique)
    archive = zip_files(files, tmp_path / "dicom.zip", folder="DICOM")
    scan = load_scan([archive])
    np.testing.assert_array_equal(scan.voxels, voxels)
    assert scan.spacing_mm == pytest.approx((3.0, 0.9, 0.8))
    assert np.linalg.norm(scan.affine[:3, 2]) == pytest.approx(3.0)


def _same_patient_three_ways(shared_data, root: Path) -> dict[str, list[Path]]:
    """One real volume written as three series of the same patient: axial head first (the standard axes),
    feet first (rows to the patient's right, slices to the feet: stored mirrored and upside down) and
    sagittal (slices from left to right, rows to the feet)."""
    import rt_series

    v = stack(kaggle_slices(shared_data, "volume_276x276", count=8))  # (D, H, W)
    d, _, w = v.shape
    origin, row_mm, col_mm, slice_mm = np.array([-180.0, -160.0, -60.0]), 1.5, 1.25, 3.0
    far = origin + [(w - 1) * col_mm, 0.0, (d - 1) * slice_mm]  # the voxel at the last column of the last slice
    return {
        "axial": rt_series.write_mr_series(v, root / "axial", orientation=rt_series.AXIAL, origin=tuple(origin),
                                           pixel_spacing=(row_mm, col_mm), slice_mm=slice_mm),
        "feet_first": rt_series.write_mr_series(v[::-1, :, ::-1], root / "feet_first", orientation=(-1, 0, 0, 0, 1, 0),
                                                origin=tuple(far), pixel_spacing=(row_mm, col_mm), slice_mm=slice_mm),
        "sagittal": rt_series.write_mr_series(v[::-1, :, ::-1].transpose(2, 0, 1), root / "sagittal",
                                              orientation=(0, 1, 0, 0, 0, -1), origin=tuple(far),
                                              pixel_spacing=(slice_mm, row_mm), slice_mm=col_mm),
    }


def test_dicom_series_of_one_patient_in_any_orientation_give_the_same_scan(shared_data, tmp_path):
    """The model was trained on axial slices in the standard orientation: a feet-first or sagittal series
    is turned to it (no resampling), so every way of storing the patient gives the model the same input."""
    series = _same_patient_three_ways(shared_data, tmp_path)
    reference = load_scan(series["axial"])
    assert reference.source.stored_axes is None and not reference.notes
    for name in ("feet_first", "sagittal"):
        scan = load_scan(series[name])
        np.testing.assert_array_equal(scan.voxels, reference.voxels)
        np.testing.assert_allclose(scan.affine, reference.affine, atol=1e-4)
        assert scan.spacing_mm == pytest.approx(reference.spacing_mm)
        assert any("reoriented to axial slices in the standard orientation" in n for n in scan.notes), scan.notes
        # The series' own order comes back for the exports: its first file's pixels.
        first = scan.source.to_source(scan.voxels)[0]
        import pydicom

        stored = pydicom.dcmread(series[name][0]).pixel_array
        np.testing.assert_array_equal(first, stored)


def test_a_few_sagittal_slices_are_refused_as_too_thin_once_turned(shared_data, tmp_path):
    import rt_series

    v = stack(kaggle_slices(shared_data, "volume_276x276", count=8))
    files = rt_series.write_mr_series(v[::-1, :, ::-1].transpose(2, 0, 1)[130:133], tmp_path / "sagittal",
                                      orientation=(0, 1, 0, 0, 0, -1), pixel_spacing=(3.0, 1.5), slice_mm=1.25)
    with pytest.raises(ScanError, match=r"^Turned to axial slices, the series gives slices of 3×276 px, under 16 px"):
        load_scan(files)


def test_dicom_truth_of_a_sagittal_series_lands_on_its_axial_scan(shared_data, tmp_path):
    """A SEG and an RTSTRUCT made on a sagittal series (frames and contours across the scan's slices)
    are read onto the scan turned to axial slices, voxel for voxel."""
    import rt_series
    from model.dicom.export import write_dicom_outputs
    from model.truth import load_ground_truth

    scan = load_scan(_same_patient_three_ways(shared_data, tmp_path)["sagittal"])
    masks = rt_series.organ_masks_for(scan.voxels)
    seg, rtstruct = write_dicom_outputs(masks, scan, tmp_path / "out")
    for path in (seg, rtstruct):
        truth, _ = load_ground_truth([path], scan)
        np.testing.assert_array_equal(truth, masks)


def test_dicom_monochrome1_is_inverted_and_mixed_grey_scales_are_refused(shared_data, tmp_path):
    import pydicom

    voxels = stack(kaggle_slices(shared_data, count=4)).astype(np.uint16) * 10
    reference = load_scan(write_dicom_series(voxels, tmp_path / "mono2"))
    files = write_dicom_series(4000 - voxels, tmp_path / "mono1")  # low values shown bright
    for f in files:
        ds = pydicom.dcmread(f)
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.save_as(f)
    scan = load_scan(files)
    # Signal is bright again: the same voxels up to one offset, so the model's stretch sees the same image.
    assert np.unique(scan.voxels.astype(np.int64) - reference.voxels.astype(np.int64)).size == 1
    assert any("MONOCHROME1" in n and "inverted" in n for n in scan.notes)
    ds = pydicom.dcmread(files[1])
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.save_as(files[1])
    with pytest.raises(ScanError, match=r"^The DICOM slices mix photometric interpretations \(MONOCHROME1, MONOCHROME2\)"):
        load_scan(files)


def test_dicom_frames_of_reference_orientation_rounding_and_gaps(shared_data, tmp_path):
    import pydicom

    from model.dicom.export import write_dicom_outputs

    import rt_series

    files = rt_series.write_mr_series(stack(kaggle_slices(shared_data, count=6)), tmp_path / "series")
    # Orientation rounding that differs from slice to slice (1e-7): read, and the SEG (highdicom needs one shared
    # orientation) and RTSTRUCT are written.
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = [f"{float(v) + (1e-7 if k % 2 else 0.0):.8f}" for v in ds.ImageOrientationPatient]
        ds.save_as(f)
    scan = load_scan(files)
    masks = np.zeros((3, *scan.shape), dtype=bool)
    masks[0, 1:4, 20:60, 30:70] = True
    seg, rtstruct = write_dicom_outputs(masks, scan, tmp_path / "out")
    assert pydicom.dcmread(seg).Modality == "SEG" and pydicom.dcmread(rtstruct).Modality == "RTSTRUCT"
    # A missing slice: the note says how far the label NIfTI's even slices sit from the true ones.
    gapped = load_scan(files[:2] + files[3:])
    assert any(re.search(r"Uneven slice spacing .* places slices up to 1\.5 mm from their true positions", n)
               for n in gapped.notes), gapped.notes
    # A second image at one position (another echo in the same series): refused, saying why.
    echo = pydicom.dcmread(files[0])
    echo.SOPInstanceUID, echo.EchoTime = pydicom.uid.generate_uid(), 80.0
    echo.save_as(tmp_path / "echo2.dcm")
    with pytest.raises(ScanError, match=r"^Two DICOM slices share one position \(several echoes"):
        load_scan([*files, tmp_path / "echo2.dcm"])
    # Two frames of reference in one series: refused, as two series are.
    ds = pydicom.dcmread(files[2])
    ds.FrameOfReferenceUID = pydicom.uid.generate_uid()
    ds.save_as(files[2])
    with pytest.raises(ScanError, match=r"^The DICOM slices have different frames of reference"):
        load_scan(files)


def test_dicom_falls_back_to_instance_number(shared_data, tmp_path):
    voxels = stack(kaggle_slices(shared_data, count=5))
    files = write_dicom_series(voxels, tmp_path / "series", positions=False)
    scan = load_scan(files)
    np.testing.assert_array_equal(scan.voxels, voxels[::-1])  # InstanceNumbers run backwards
    assert any("InstanceNumber" in n for n in scan.notes)
    assert scan.spacing_mm[0] == 3.0 and not any("assumed" in n for n in scan.notes)  # SliceThickness given


def test_dicom_without_positions_or_thickness_says_it_assumed_3_mm(shared_data, tmp_path):
    voxels = stack(kaggle_slices(shared_data, count=4))
    scan = load_scan(write_dicom_series(voxels, tmp_path / "series", positions=False, slice_mm=None))
    assert scan.spacing_mm[0] == 3.0
    assert any("3 mm slices assumed" in n for n in scan.notes)
    assert scan.source is None  # no geometry to reference: the exports will say so


def test_one_precedence_for_a_files_kind(tmp_path):
    """The content decides wherever it can, whatever the name says; the name only for slice images."""
    import zipfile

    from model.scans.kinds import kind_by_name, kind_of

    renamed = tmp_path / "scan.nii"
    with zipfile.ZipFile(renamed, "w") as z:
        z.writestr("a.txt", "x")
    assert kind_by_name(renamed) == "nifti" and kind_of(renamed) == "zip"
    png = tmp_path / "slice.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    assert kind_of(png) == "slices"


def test_mixed_dicom_series_are_refused(shared_data, tmp_path):
    voxels = stack(kaggle_slices(shared_data, count=4))
    a = write_dicom_series(voxels[:2], tmp_path / "a")
    b = write_dicom_series(voxels[2:], tmp_path / "b", origin=(0.0, 0.0, 0.0))
    with pytest.raises(ScanError, match="2 different DICOM series") as err:
        load_scan(a + b)
    assert PATIENT_NAME not in str(err.value)
