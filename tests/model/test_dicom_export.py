"""DICOM SEG and RTSTRUCT exports of a real volume, read back by highdicom, dciodvfy and plastimatch.

The series are written with pydicom from a real shared volume in four geometries: axial with
instance numbers in spatial order, oblique with shuffled instance numbers, axial with instance
numbers against the positions, and feet first (stored mirrored and upside down, so the scan's
voxels are the series' turned to the standard axes). Agreement is measured in patient space.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

import rt_series
from model.truth import load_ground_truth
from model.dicom.export import write_dicom_outputs
from model.planning import planning_structures
from model.dicom.rtstruct import mask_contours
from model.scans import ScanError, load_scan
from model.scans.dicom import read_dicom_series
from locations import require_tool
from scan_fixtures import kaggle_slices, stack

GEOMETRIES = {
    "axial": dict(orientation=rt_series.AXIAL, instance_order="ascending"),
    "oblique_shuffled": dict(orientation=rt_series.oblique_orientation(20.0, 15.0), instance_order="shuffled"),
    "axial_descending": dict(orientation=rt_series.AXIAL, instance_order="descending", pixel_spacing=(1.5, 1.5)),
    # Feet first: rows run to the patient's right, slices to the feet. The scan is turned to the standard
    # axes for the model, and the exports must turn the masks back onto the series' own pixels.
    "feet_first": dict(orientation=(-1.0, 0.0, 0.0, 0.0, 1.0, 0.0), instance_order="ascending"),
}
ORGAN_LABELS = ("Stomach", "Small bowel", "Large bowel")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module", params=list(GEOMETRIES))
def exported(request, shared_data, tmp_path_factory):
    """A 30-slice real series in one geometry, its scan, organ masks and the two exports."""
    root = tmp_path_factory.mktemp(request.param)
    voxels = stack(kaggle_slices(shared_data, "volume_266x266")[40:70])
    files = rt_series.write_mr_series(voxels, root / "series", **GEOMETRIES[request.param])
    scan = read_dicom_series(files, "case")
    masks = rt_series.organ_masks_for(scan.voxels)
    assert masks.sum(axis=(1, 2, 3)).min() >= 200
    structures = planning_structures(masks, scan.spacing_mm, bowel_bag_structure=True, margin_mm=5.0)
    seg, rtstruct = write_dicom_outputs(masks, scan, root / "out", structures=structures)
    return dict(name=request.param, root=root, files=files, scan=scan, masks=masks, structures=structures,
                seg=seg, rtstruct=rtstruct)


def _voxel_centres_ras(scan) -> np.ndarray:
    """``(S*H*W, 4)`` RAS positions of every voxel centre, from the scan's own affine."""
    s, r, c = np.meshgrid(*(np.arange(n) for n in scan.shape), indexing="ij")
    return (scan.affine @ np.stack([c.ravel(), r.ravel(), s.ravel(), np.ones(s.size)])).T


def test_source_headers_follow_the_scans_voxel_order(exported):
    import pydicom

    scan, files = exported["scan"], exported["files"]
    # Any file order; an earlier export in the same folder is not a source image.
    shutil.copy(exported["seg"], files[0].parent / "zz_seg.dcm")
    try:
        source = load_scan(files[0].parent).source
    finally:
        (files[0].parent / "zz_seg.dcm").unlink()
    assert len(source.datasets) == len(files)
    # The files come back in spatial order, the order read_dicom_series gives the voxels.
    assert [str(ds.SOPInstanceUID) for ds in source.datasets] == \
        [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ scan.affine
    # Which scan voxel each of the series' own voxels is (the identity unless the series was turned).
    scan_voxel = source.to_source(np.arange(np.prod(scan.shape)).reshape(scan.shape))
    assert (scan_voxel.shape == source.shape) and ((exported["name"] == "feet_first") != (source.stored_axes is None))
    for k in (0, 7, len(source.datasets) - 1):
        for row, col in ((0, 0), (10, 20)):  # pixel (row, col) of the series' slice k, both ways
            s, r, c = np.unravel_index(scan_voxel[k, row, col], scan.shape)
            np.testing.assert_allclose(source.to_patient(k, np.array([float(row)]), np.array([float(col)]))[0],
                                       (lps @ [c, r, s, 1])[:3], atol=1e-3)
        np.testing.assert_allclose(source.positions[k], source.to_patient(k, np.zeros(1), np.zeros(1))[0])
    if exported["name"] not in ("axial", "feet_first"):  # instance numbers do not follow the positions
        numbers = [int(ds.InstanceNumber) for ds in source.datasets]
        assert numbers != sorted(numbers)


def test_dciodvfy_reports_no_errors(exported):
    tool = require_tool("dciodvfy")
    for path in (exported["seg"], exported["rtstruct"]):
        run = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
        report = run.stdout + run.stderr
        assert report.strip(), "dciodvfy said nothing"
        assert "Segmentation" in report or "RTStructureSet" in report  # it recognised the IOD
        errors = [line for line in report.splitlines() if line.startswith("Error")]
        assert errors == [], f"{path.name}: {errors[:5]}"


def test_seg_reads_back_with_highdicom_voxel_for_voxel(exported):
    import highdicom as hd

    seg = hd.seg.segread(exported["seg"])
    source = exported["scan"].source
    uids = [str(ds.SOPInstanceUID) for ds in source.datasets]
    structures = [*[m for m in exported["masks"]], *[s.mask for s in exported["structures"]]]
    assert [str(s.SegmentLabel) for s in seg.SegmentSequence] == [*ORGAN_LABELS, *[s.label for s in exported["structures"]]]
    assert [str(s.SegmentedPropertyTypeCodeSequence[0].CodeValue) for s in seg.SegmentSequence[:4]] == \
        ["69695003", "30315005", "14742008", "113276009"]
    # By source image reference: frame i of every segment is on source image i.
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=list(range(1, 1 + len(structures))),
                                               ignore_spatial_locations=True)
    for i, mask in enumerate(structures):
        np.testing.assert_array_equal(pixels[..., i] > 0, source.to_source(mask))  # the series' own pixel order
    # By patient coordinates: every frame's position is its source slice's.
    positions = {tuple(np.round([float(v) for v in g.PlanePositionSequence[0].ImagePositionPatient], 3))
                 for g in seg.PerFrameFunctionalGroupsSequence}
    assert positions <= {tuple(np.round(p, 3)) for p in source.positions}
    assert str(seg.FrameOfReferenceUID) == source.frame_of_reference_uid
    assert str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID) == str(source.datasets[0].SeriesInstanceUID)


def test_organs_that_do_not_overlap_go_to_highdicom_as_a_label_map_for_the_same_file(exported, tmp_path, monkeypatch):
    """A label map spares highdicom its overlap check (most of a SEG's time on a large scan); the file is the one
    the stacked segments give, element for element (UIDs, dates and times aside), with an organ empty, or all."""
    import highdicom as hd

    from benchmarks.same_outputs import dicom_elements
    from model.dicom import seg
    from model.planning import organ_structures

    masks = exported["masks"].copy()
    masks[1] &= ~masks[0]
    masks[2] &= ~(masks[0] | masks[1])
    source = exported["scan"].source
    overlapping = [s.mask for s in exported["structures"]]  # the bowel bag holds both bowels, a PRV its organ
    assert seg._pixel_array([source.to_source(m) for m in overlapping]).ndim == 4
    assert seg._pixel_array([source.to_source(m) for m in masks]).ndim == 3
    for name, organs in (("all", masks), ("no_stomach", masks * np.array([0, 1, 1], bool)[:, None, None, None]),
                         ("none", np.zeros_like(masks))):
        structures = organ_structures(organs)
        label_map = seg.write_seg(structures, source, tmp_path / f"{name}_label_map.dcm")
        with monkeypatch.context() as m:
            m.setattr(seg, "_pixel_array", seg._stacked)
            stacked = seg.write_seg(structures, source, tmp_path / f"{name}_stacked.dcm")
        assert dicom_elements(label_map) == dicom_elements(stacked), name
        read = hd.seg.segread(label_map)
        pixels = read.get_pixels_by_source_instance(
            source_sop_instance_uids=[str(ds.SOPInstanceUID) for ds in source.datasets], segment_numbers=[1, 2, 3],
            ignore_spatial_locations=True, skip_overlap_checks=True)
        for i, mask in enumerate(organs):
            np.testing.assert_array_equal(pixels[..., i] > 0, source.to_source(mask))
        assert read.SegmentsOverlap == "NO"


@pytest.mark.slow
def test_an_rtstruct_after_an_edit_traces_only_changed_slices_for_the_same_file(exported, tmp_path, monkeypatch):
    """The RTSTRUCT's slices traced for an earlier write are found again by their masks (model.dicom.rtstruct.
    TracedSlices): after an edit on one slice only the slices whose masks it changed (the organ's, the bowel
    bag's, the PRVs' within the margin) are traced again, and the file is the one tracing everything gives,
    element for element (UIDs, dates and times aside), in every geometry (the series' order need not be the
    scan's)."""
    from benchmarks.same_outputs import dicom_elements
    from model.dicom import rtstruct
    from model.planning import organ_structures

    scan, masks = exported["scan"], exported["masks"]
    source = scan.source

    def structures(organs):
        return [*organ_structures(organs),
                *planning_structures(organs, scan.spacing_mm, bowel_bag_structure=True, margin_mm=5.0)]

    first = rtstruct.TracedSlices()
    rtstruct.write_rtstruct(structures(masks), source, tmp_path / "first.dcm", traced=first)
    edited = masks.copy()
    d = int(np.argmax(masks[2].sum(axis=(1, 2))))
    middle = int(np.median(np.nonzero(masks[2, d])[1]))
    edited[2, d, :, :middle] = False  # half the large bowel removed on one slice
    assert (edited != masks).any()
    changed = sum(int(np.count_nonzero((source.to_source(a.mask) != source.to_source(b.mask)).any(axis=(1, 2))
                                       & source.to_source(a.mask).any(axis=(1, 2))))
                  for a, b in zip(structures(edited), structures(masks)))
    traced = []
    trace = rtstruct.mask_contours
    monkeypatch.setattr(rtstruct, "mask_contours", lambda mask: traced.append(mask.copy()) or trace(mask))
    again = rtstruct.TracedSlices(first)
    path = rtstruct.write_rtstruct(structures(edited), source, tmp_path / "again.dcm", traced=again)
    assert 0 < len(traced) <= changed < len(first.used)
    monkeypatch.undo()
    scratch = rtstruct.write_rtstruct(structures(edited), source, tmp_path / "scratch.dcm")
    assert dicom_elements(path) == dicom_elements(scratch)
    assert dicom_elements(path) != dicom_elements(tmp_path / "first.dcm")
    assert set(first.used) - set(again.used), "the slices as they were before the edit are not kept"


def test_plastimatch_rasterises_the_rtstruct_in_patient_space(exported):
    import nibabel as nib

    tool = require_tool("plastimatch")
    out = exported["root"] / "plastimatch"
    run = subprocess.run([tool, "convert", "--input", str(exported["rtstruct"]), "--referenced-ct",
                          str(exported["root"] / "series"), "--output-prefix", str(out), "--prefix-format", "nii.gz"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    scan = exported["scan"]
    ras = _voxel_centres_ras(scan)
    expected = {**dict(zip(ORGAN_LABELS, exported["masks"])), **{s.label: s.mask for s in exported["structures"]}}
    for label, mask in expected.items():
        image = nib.load(out / f"{label}.nii.gz")
        # Map our voxel centres into plastimatch's grid through both affines; they must land on its voxels.
        ijk = (np.linalg.inv(image.affine) @ ras.T)[:3].T
        assert np.abs(ijk - np.rint(ijk)).max() < 0.01, f"{label}: plastimatch's grid is not the series' grid"
        index = np.rint(ijk).astype(int)
        inside = np.all((index >= 0) & (index < image.shape[:3]), axis=1)
        assert inside.all()
        rasterised = (np.asarray(image.dataobj)[tuple(index.T)] > 0).reshape(scan.shape)
        if mask.sum() >= 200:
            assert dice(rasterised, mask) >= 0.95, label


def test_both_files_carry_the_source_identity_and_references(exported):
    import pydicom

    source = pydicom.dcmread(exported["files"][0], stop_before_pixels=True)
    for path in (exported["seg"], exported["rtstruct"]):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert str(ds.PatientName) == rt_series.PATIENT_NAME and ds.PatientID == rt_series.PATIENT_ID
        assert ds.PatientBirthDate == rt_series.PATIENT_BIRTH_DATE
        assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.AccessionNumber == rt_series.ACCESSION_NUMBER
        assert ds.StudyID == rt_series.STUDY_ID and ds.FrameOfReferenceUID == source.FrameOfReferenceUID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    rt = pydicom.dcmread(exported["rtstruct"])
    referenced = rt.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert len(referenced.ContourImageSequence) == len(exported["files"])
    assert [list(map(int, c.ROIDisplayColor)) for c in rt.ROIContourSequence[:3]] == [[0, 127, 255], [0, 154, 23], [255, 0, 0]]
    assert [o.RTROIInterpretedType for o in rt.RTROIObservationsSequence] == ["ORGAN"] * 4 + ["AVOIDANCE"] * 4
    # Every Contour Data value fits DS (16 characters), as written in the file.
    lengths = [len(v) for c in rt.ROIContourSequence for item in c.ContourSequence
               for v in bytes(item.get_item(0x30060050).value).split(b"\\")]
    assert lengths and max(lengths) <= 16


def test_rtstruct_and_seg_as_ground_truth_round_trip(exported):
    scan, masks = exported["scan"], exported["masks"]
    for path in (exported["rtstruct"], exported["seg"]):
        truth, notes = load_ground_truth([path], scan)
        for o in range(3):
            assert dice(truth[o], masks[o]) >= 0.999
        np.testing.assert_array_equal(truth, masks)
        assert any("other" in n for n in notes)  # the planning structures were skipped, and said so


def test_clinical_style_rtstruct_as_ground_truth(exported, tmp_path):
    """TG-263 names, holes as separate inner contours (no keyholes), an unknown ROI, one organ missing."""
    import pydicom
    from skimage.measure import find_contours

    scan, masks = exported["scan"], exported["masks"]
    source = scan.source
    rt = pydicom.dcmread(exported["rtstruct"])
    rt.StructureSetROISequence = rt.StructureSetROISequence[:3]
    rt.ROIContourSequence = rt.ROIContourSequence[1:3]  # no stomach
    for roi, name in zip(rt.StructureSetROISequence, ("Stomach", "Bowel_Small", "Colon")):
        roi.ROIName = name
    large = rt.ROIContourSequence[1]
    template = large.ContourSequence[0]
    contours = []
    large_in_source = source.to_source(masks[2])  # contours are drawn on the series' own images
    for s in np.flatnonzero(large_in_source.any(axis=(1, 2))):
        for ring in find_contours(np.pad(large_in_source[s].astype(float), 1), 0.5):  # outer and inner rings
            item = pydicom.Dataset()
            item.ContourImageSequence = template.ContourImageSequence
            item.ContourGeometricType = "CLOSED_PLANAR"
            points = source.to_patient(int(s), ring[:-1, 0] - 1, ring[:-1, 1] - 1)
            item.NumberOfContourPoints = len(points)
            item.ContourData = [f"{v:.3f}" for v in points.ravel()]
            contours.append(item)
    large.ContourSequence = contours
    rt.save_as(tmp_path / "clinical.dcm")
    truth, notes = load_ground_truth([tmp_path / "clinical.dcm"], scan)
    assert not truth[0].any()
    np.testing.assert_array_equal(truth[1], masks[1])
    np.testing.assert_array_equal(truth[2], masks[2])  # the ring's hole stays a hole
    assert notes == ["No stomach in the ground truth; counted as empty."]


def test_ground_truth_from_another_grid_is_refused(exported, tmp_path):
    scan = exported["scan"]
    # The same images, every slice moved half a slice along the normal: no contour or frame is on a slice.
    files = rt_series.write_mr_series(scan.voxels.astype(np.uint16), tmp_path / "shifted",
                                      **{**GEOMETRIES[exported["name"]], "origin": (-180.0, -160.0, -58.5)})
    shifted = read_dicom_series(files)
    for path in (exported["rtstruct"], exported["seg"]):
        with pytest.raises(ScanError, match="on the scan's slices; is it from another series"):
            load_ground_truth([path], shifted)


def test_a_seg_frame_is_placed_only_when_its_far_edge_is_on_the_grid_too():
    """A frame tilted by a few degrees, or with pixels a little off in size, drifts off the scan's voxels across
    its width: refused as off the grid (the old per-step check placed it on one slice)."""
    from model.dicom.truth import _frame_index

    rows, cols, shape = np.arange(200), np.arange(256), (30, 200, 256)
    origin = np.array([5.0, 0.0, 0.0])  # (slice, row, col)
    down, along = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0])
    index = _frame_index(origin, along, down, rows, cols, shape)
    volume = np.zeros(shape, dtype=bool)
    volume[index] = np.ones((200, 256), dtype=bool)
    assert volume[5].all() and volume.sum() == 200 * 256
    assert _frame_index(origin, along + [0.05, 0, 0], down, rows, cols, shape) is None  # 3° tilt: 12.75 slices away
    assert _frame_index(origin, along * 1.02, down, rows, cols, shape) is None  # 2 % pixel size: 5 px off at the edge
    assert _frame_index(origin, along * (1 + 1e-6), down, rows, cols, shape) is not None  # DS rounding


def test_contours_keep_holes_without_relying_on_a_fill_rule():
    from skimage.draw import polygon

    rng = np.random.default_rng(3)
    for _ in range(20):
        mask = rng.random((24, 24)) < 0.55  # ragged: many pieces, holes, islands in holes
        mask[0, :] = rng.random(24) < 0.5  # and pieces on the image border
        union = np.zeros_like(mask)
        xor = np.zeros_like(mask)
        for contour in mask_contours(mask):
            rr, cc = polygon(contour[:, 0], contour[:, 1], mask.shape)
            union[rr, cc] = True
            xor[rr, cc] ^= True
        np.testing.assert_array_equal(union, mask)  # plastimatch's default: contours OR'd
        np.testing.assert_array_equal(xor, mask)  # systems that XOR inner contours


def test_refusals_name_the_problem_without_tag_values(exported, tmp_path):
    import pydicom

    masks = exported["masks"]
    with pytest.raises(ValueError, match=r"organ_masks must be \(organs, slices, rows, cols\)"):
        write_dicom_outputs(masks[:, 1:], exported["scan"], tmp_path)
    bare = []
    for f in exported["files"][:3]:
        ds = pydicom.dcmread(f)
        del ds.FrameOfReferenceUID
        ds.save_as(tmp_path / f.name)
        bare.append(tmp_path / f.name)
    with pytest.raises(ScanError, match="frame of reference") as err:
        write_dicom_outputs(masks[:, :3], read_dicom_series(bare), tmp_path / "out")
    assert rt_series.PATIENT_ID not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_structure_names_that_mean_an_organ():
    from model.dicom.truth import organ_for_name

    assert [organ_for_name(n) for n in ("Stomach", "STOMACH", "Small bowel", "Bowel_Small", "SmallIntestine",
                                        "Large bowel", "Bowel_Large", "Colon", "large_intestine")] == \
        ["stomach", "stomach", "small_bowel", "small_bowel", "small_bowel",
         "large_bowel", "large_bowel", "large_bowel", "large_bowel"]
    assert [organ_for_name(n) for n in ("Bowel bag", "Stomach PRV 5mm", "Stomach_PRV05", "Bowel", "Liver", "")] == \
        [None] * 6


def test_exports_log_and_print_no_patient_identifiers(exported, tmp_path, caplog, capfd):
    import dataclasses
    import logging
    import warnings

    identifiers = (rt_series.PATIENT_NAME, rt_series.PATIENT_NAME.split("^")[0], rt_series.PATIENT_ID,
                   rt_series.PATIENT_BIRTH_DATE, rt_series.ACCESSION_NUMBER)
    assert rt_series.PATIENT_ID.encode() in exported["seg"].read_bytes()  # the check below is not vacuous
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = write_dicom_outputs(exported["masks"], dataclasses.replace(exported["scan"], name="again"), tmp_path)
        load_ground_truth([paths[0]], exported["scan"])
        load_ground_truth([paths[1]], exported["scan"])
    out, err = capfd.readouterr()
    said = " ".join([caplog.text, out, err, *(str(w.message) for w in caught)])
    assert [i for i in identifiers if i in said] == []
    assert [p.name for p in paths] == ["again_seg.dcm", "again_rtstruct.dcm"]


@pytest.mark.parametrize("exported", ["axial"], indirect=True)  # logging does not depend on the geometry
def test_the_servers_logging_names_no_uid_of_the_upload(exported, tmp_path, caplog, capfd, monkeypatch):
    """highdicom logs at INFO the SOP Instance UID of the upload each SEG copies attributes from; the server's
    logging (``configure_logging``) keeps it, and any other UID of the upload, out of the log."""
    import dataclasses
    import logging

    from model.serving import configure_logging

    source = exported["scan"].source.datasets
    uids = {ds.SOPInstanceUID for ds in source} | {source[0].StudyInstanceUID, source[0].SeriesInstanceUID,
                                                   source[0].FrameOfReferenceUID}
    for name in ("pydicom", "highdicom"):  # as an unconfigured process has them; put back after the test
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)
    caplog.set_level(logging.DEBUG)

    def said(name: str) -> str:
        caplog.clear()
        write_dicom_outputs(exported["masks"], dataclasses.replace(exported["scan"], name=name), tmp_path / name)
        out, err = capfd.readouterr()
        return " ".join([caplog.text, out, err])

    unconfigured = said("unconfigured")
    assert [u for u in uids if u in unconfigured]  # without it the UIDs are logged: the check is not vacuous
    configure_logging()
    served = said("served")
    assert [u for u in uids if u in served] == []


def test_the_uploaded_zip_of_the_series_works_like_its_files(exported, tmp_path):
    from scan_fixtures import zip_files

    archive = zip_files(exported["files"], tmp_path / "series.zip", folder="DICOM")
    scan = load_scan([archive])
    assert scan.source is not None and len(scan.source.datasets) == len(exported["files"])
    seg, rtstruct = write_dicom_outputs(exported["masks"], scan, tmp_path / "out")
    for path in (seg, rtstruct):
        truth, _ = load_ground_truth([path], exported["scan"])
        np.testing.assert_array_equal(truth, exported["masks"])


def test_both_exports_name_the_software_and_its_version(exported):
    import pydicom

    from model import __version__
    from model.dicom.codes import MANUFACTURER, MODEL_NAME

    assert __version__
    for path in (exported["seg"], exported["rtstruct"]):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert (ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions) == (MANUFACTURER, MODEL_NAME, __version__)
    seg = pydicom.dcmread(exported["seg"], stop_before_pixels=True)
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmVersion == __version__
