"""The README's Compare days screenshot and table, and its Course screenshot, end to end.

    python docs/days_screenshot.py [--data ../shared/data] [--work /tmp/uwmgi-days] [--model DIR] [--course]

Day A is the real 360×310 scan of ``DATA/scans`` (case47_day29) with its real labels from
``DATA/kaggle/train.csv.gz``, uploaded as the Scan tab's downloads would be: the slices in a zip,
the labels as ``_masks.zip``. The shared data hold no second day's images, so day B is day A moved
by a known rigid motion (8.06 mm, 3° about an oblique axis) and resampled with SimpleITK onto a
266×266 field of view, as a follow-up day on another grid would be; its masks are A's labels moved
the same way. The tab must find that motion. ``app.py`` serves (a tiny random checkpoint unless
``--model``: no model runs, both days carry their masks), headless Chromium uploads both days on
the Compare days tab and photographs it (``docs/compare_days_tab.png``); the numbers the tab shows go
to ``docs/compare_days.json``, which the README quotes. The scans stay in ``--work``.

``--course`` photographs the Course tab instead (``docs/course_tab.png``, ``docs/course_tab.json``): the same
day A and day B, a further day C (day A moved by another known motion, onto the same 266×266 grid, with its
masks), and a target: a label NIfTI on A's grid holding a 25 mm sphere centred half-way between A's stomach
and small-bowel centroids (as tests/course_cases.py places the real-label course's target). No dose: the
Kaggle slices carry no DICOM frame for an RTDOSE.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.spatial.transform import Rotation

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from docs.screenshots import CHROMIUM, CHROMIUM_ARGS, served, small_png  # noqa: E402
from model import days, registration  # noqa: E402
from model.exports import save_mask_png_zip  # noqa: E402
from model.rle import RleCsv  # noqa: E402
from model.scans import Scan, load_scan  # noqa: E402
from ui.course_tab import ALL_LABELS  # noqa: E402
from ui.days_tab import days_view  # noqa: E402
from ui.tables import DAYS_HEADERS  # noqa: E402

CASE_DAY = "case47_day29"
SHIFT_MM = np.array([4.0, -5.0, 4.9])  # RAS (LR, AP, SI), as tests/model/test_days.py
ROTATION_DEG, AXIS = 3.0, np.array([0.3, 0.2, 1.0])
MOVED = "moved_8mm_3deg"
#: The Course screenshot's day C: another known motion of day A (RAS mm, degrees, axis).
SHIFT_C_MM, ROTATION_C_DEG, AXIS_C = np.array([-3.0, 6.0, -3.0]), 2.0, np.array([1.0, 0.2, 0.3])
MOVED_C = "moved_7mm_2deg"
TARGET_RADIUS_MM = 25.0


def known_motion(scan: Scan, shift_mm=SHIFT_MM, rotation_deg=ROTATION_DEG, axis=AXIS) -> np.ndarray:
    d, h, w = scan.shape
    centre = (registration.patient_affine(scan) @ [(w - 1) / 2, (h - 1) / 2, (d - 1) / 2, 1.0])[:3]
    rotation = Rotation.from_rotvec(np.radians(rotation_deg) * axis / np.linalg.norm(axis)).as_matrix()
    motion = np.eye(4)
    motion[:3, :3], motion[:3, 3] = rotation, centre + shift_mm - rotation @ centre
    return motion


def make_days(data: Path, work: Path, moved_name: str = MOVED, motion: tuple = (SHIFT_MM, ROTATION_DEG, AXIS)
              ) -> tuple[list[Path], list[Path]]:
    """Day A's and day B's uploads (slices zip + masks zip each) in ``work``; B is A moved by ``motion``
    (shift RAS mm, degrees, axis) and named ``moved_name``."""
    import SimpleITK as sitk

    scan = load_scan(data / "scans" / "volume_360x310")
    scan.name = scan.case_day = CASE_DAY
    masks = RleCsv(data / "kaggle" / "train.csv.gz", [CASE_DAY]).masks_on(CASE_DAY, scan.slice_numbers, scan.shape[1:]).masks
    zip_a = work / f"{CASE_DAY}.zip"
    with zipfile.ZipFile(zip_a, "w") as archive:
        for path in sorted((data / "scans" / "volume_360x310").glob("slice_*.png")):
            archive.write(path, f"{CASE_DAY}/scans/{path.name}")
    day_a = [zip_a, save_mask_png_zip(masks, scan, work / f"{CASE_DAY}_masks.zip")]

    # Day B on a 266×266 grid of the same spacing, centred like A (the Kaggle convention of model.days).
    shape = (scan.shape[0], 266, 266)
    grid_scan = Scan(np.zeros(shape, np.uint8), scan.spacing_mm, scan.affine, scan.slice_numbers, moved_name, "slices")
    grid = registration._itk_image(grid_scan.voxels, registration.patient_affine(grid_scan))
    back = registration._itk_transform(np.linalg.inv(known_motion(scan, *motion)))  # B's point x shows A's anatomy at motion⁻¹(x)

    def moved(array, interpolator):
        image = registration._itk_image(array, registration.patient_affine(scan))
        return sitk.GetArrayFromImage(sitk.Resample(image, grid, back, interpolator, 0.0))

    voxels = np.clip(np.rint(moved(scan.voxels.astype(np.float32), sitk.sitkLinear)), 0, 255).astype(np.uint8)
    zip_b = work / f"{moved_name}.zip"
    with zipfile.ZipFile(zip_b, "w") as archive:
        for d, number in enumerate(scan.slice_numbers):
            path = work / f"slice_{number:04d}_266_266_1.50_1.50.png"
            Image.fromarray(voxels[d]).save(path)
            archive.write(path, f"{moved_name}/{path.name}")
            path.unlink()
    masks_b = np.stack([moved(m.astype(np.uint8), sitk.sitkNearestNeighbor).astype(bool) for m in masks])
    scan_b = Scan(voxels, scan.spacing_mm, scan.affine, scan.slice_numbers, moved_name, "slices", kaggle_named=True)
    return day_a, [zip_b, save_mask_png_zip(masks_b, scan_b, work / f"{moved_name}_masks.zip")]


@contextlib.contextmanager
def course_page(checkpoint: Path, day_a: list[Path], day_b: list[Path]):
    """The served app in Chromium, on its Course tab, with day A and day B uploaded; closed afterwards."""
    from playwright.sync_api import sync_playwright

    with served(checkpoint) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1200})
            page.goto(url)
            page.get_by_role("tab", name="Course").click()
            page.locator("#days-a input[type=file]").set_input_files([str(p) for p in day_a])
            page.locator("#days-b input[type=file]").set_input_files([str(p) for p in day_b])
            yield page
        finally:
            browser.close()


def photograph(checkpoint: Path, day_a: list[Path], day_b: list[Path], shots: Path) -> None:
    from playwright.sync_api import expect

    with course_page(checkpoint, day_a, day_b) as page:
        page.wait_for_timeout(2000)
        page.get_by_role("button", name="Compare days (B against A)").click()
        expect(page.locator("#days-note")).to_contain_text("Rigid registration", timeout=300_000)
        page.wait_for_timeout(2000)
        page.screenshot(path=str(shots / "days.png"), full_page=True)
    small_png(shots / "days.png", REPO / "docs" / "compare_days_tab.png")


def make_target(data: Path, work: Path) -> Path:
    """A label NIfTI on day A's grid: a sphere of :data:`TARGET_RADIUS_MM` centred half-way between A's
    stomach and small-bowel centroids (RAS mm), as the Scan tab's label NIfTI (label 1)."""
    from model.days import organ_centroids_mm
    from model.exports import save_label_nifti
    from model.labels import ORGANS

    scan = load_scan(data / "scans" / "volume_360x310")
    masks = RleCsv(data / "kaggle" / "train.csv.gz", [CASE_DAY]).masks_on(CASE_DAY, scan.slice_numbers, scan.shape[1:]).masks
    affine = registration.patient_affine(scan)
    centroids = organ_centroids_mm(masks, affine)
    centre = (centroids[ORGANS.index("stomach")] + centroids[ORGANS.index("small_bowel")]) / 2
    index = np.indices(scan.shape).reshape(3, -1)
    ras = (affine @ np.vstack([index[2], index[1], index[0], np.ones(index.shape[1])]))[:3]
    sphere = (np.linalg.norm(ras - centre[:, None], axis=0) <= TARGET_RADIUS_MM).reshape(scan.shape)
    empty = np.zeros_like(sphere)
    return save_label_nifti(np.stack([sphere, empty, empty]), scan, work / "target_labels.nii.gz")


def photograph_course(checkpoint: Path, day_a: list[Path], day_b: list[Path], day_c: list[Path], target: Path,
                      shots: Path) -> None:
    from playwright.sync_api import expect

    with course_page(checkpoint, day_a, day_b) as page:
        page.locator("#course-more-days input[type=file]").set_input_files([str(p) for p in day_c])
        page.locator("#course-target input[type=file]").set_input_files(str(target))
        expect(page.locator("#course-roi input")).to_have_value(ALL_LABELS, timeout=60_000)
        page.wait_for_timeout(2000)
        page.get_by_role("button", name="Run the course against the target").click()
        expect(page.locator("#course-table")).to_contain_text("Small bowel", timeout=300_000)
        expect(page.locator("#course-plots img")).to_have_count(3, timeout=60_000)
        page.wait_for_timeout(2000)
        page.screenshot(path=str(shots / "course.png"), full_page=True)
    small_png(shots / "course.png", REPO / "docs" / "course_tab.png")


def course_record(day_a, day_b, day_c, target: Path, work: Path) -> dict:
    """The numbers the Course tab shows for these uploads (its handler, called directly: every day brings its masks)."""
    from model.serving import Scratch
    from ui import course_tab, server

    server.SCRATCH = Scratch(work / "course-out", server.CACHE_SECONDS)
    note, _, _, _, table, _ = course_tab.course_files([str(p) for p in day_a], [str(p) for p in day_b],
                                                      [str(p) for p in day_c], str(target), ALL_LABELS, None, "")
    return {"day_a": f"{CASE_DAY} (real scan and labels)",
            "day_b": f"day A moved by {np.linalg.norm(SHIFT_MM):.2f} mm and {ROTATION_DEG:g}° onto a 266x266 grid",
            "day_c": f"day A moved by {np.linalg.norm(SHIFT_C_MM):.2f} mm and {ROTATION_C_DEG:g}° onto a 266x266 grid",
            "known_translation_c_mm": SHIFT_C_MM.tolist(), "known_rotation_c_deg": ROTATION_C_DEG,
            "target": f"a {TARGET_RADIUS_MM:g} mm sphere, label NIfTI on A's grid, half-way between A's stomach and "
                      "small-bowel centroids",
            "note": note, "headers": list(table.columns), "rows": table.values.tolist()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=Path("/tmp/uwmgi-days"))
    parser.add_argument("--model", type=Path, help="a contract checkpoint to serve (default: a tiny random one)")
    parser.add_argument("--course", action="store_true", help="photograph the Course tab (docs/course_tab.png) instead")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    day_a, day_b = make_days(args.data, args.work)
    if args.course:
        _, day_c = make_days(args.data, args.work, MOVED_C, (SHIFT_C_MM, ROTATION_C_DEG, AXIS_C))
        target = make_target(args.data, args.work)
        record = course_record(day_a, day_b, day_c, target, args.work)
        (REPO / "docs" / "course_tab.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        print(record["note"])
    else:
        note, rows, _, _ = days_view(days.compare_day_files([str(p) for p in day_a], [str(p) for p in day_b], None, args.work / "out"))
        record = {"day_a": f"{CASE_DAY} (real scan and labels)",
                  "day_b": f"day A moved by {np.linalg.norm(SHIFT_MM):.2f} mm and {ROTATION_DEG:g}° onto a 266x266 grid",
                  "known_translation_mm": SHIFT_MM.tolist(), "known_rotation_deg": ROTATION_DEG,
                  "note": note, "headers": DAYS_HEADERS, "rows": rows}
        (REPO / "docs" / "compare_days.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        print(note)
    checkpoint = args.model
    if checkpoint is None:
        sys.path.insert(0, str(REPO / "tests"))
        from tiny import make_tiny_checkpoint

        checkpoint = make_tiny_checkpoint(args.work / "tiny_ckpt")
    if args.course:
        photograph_course(checkpoint, day_a, day_b, day_c, target, args.work)
    else:
        photograph(checkpoint, day_a, day_b, args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
