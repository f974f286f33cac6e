"""The README's Compare days screenshot and table, end to end.

    python docs/days_screenshot.py [--data ../shared/data] [--work /tmp/uwmgi-days] [--model DIR]

Day A is the real 360×310 scan of ``DATA/scans`` (case47_day29) with its real labels from
``DATA/kaggle/train.csv.gz``, uploaded as the Scan tab's downloads would be: the slices in a zip,
the labels as ``_masks.zip``. The shared data hold no second day's images, so day B is day A moved
by a known rigid motion (8.06 mm, 3° about an oblique axis) and resampled with SimpleITK onto a
266×266 field of view, as a follow-up day on another grid would be; its masks are A's labels moved
the same way. The tab must find that motion. ``app.py`` serves (a tiny random checkpoint unless
``--model``: no model runs, both days carry their masks), headless Chromium uploads both days on
the Compare days tab and photographs it (``docs/compare_days_tab.png``); the numbers the tab shows go
to ``docs/compare_days.json``, which the README quotes. The scans stay in ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.spatial.transform import Rotation

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from docs.screenshots import CHROMIUM, CHROMIUM_ARGS, small_png  # noqa: E402
from model import days, registration  # noqa: E402
from model.exports import save_mask_png_zip  # noqa: E402
from model.rle import RleCsv  # noqa: E402
from model.scans import Scan, load_scan  # noqa: E402
from ui.days_tab import days_view  # noqa: E402
from ui.tables import DAYS_HEADERS  # noqa: E402

CASE_DAY = "case47_day29"
SHIFT_MM = np.array([4.0, -5.0, 4.9])  # RAS (LR, AP, SI), as tests/model/test_days.py
ROTATION_DEG, AXIS = 3.0, np.array([0.3, 0.2, 1.0])
MOVED = "moved_8mm_3deg"


def known_motion(scan: Scan) -> np.ndarray:
    d, h, w = scan.shape
    centre = (registration.patient_affine(scan) @ [(w - 1) / 2, (h - 1) / 2, (d - 1) / 2, 1.0])[:3]
    rotation = Rotation.from_rotvec(np.radians(ROTATION_DEG) * AXIS / np.linalg.norm(AXIS)).as_matrix()
    motion = np.eye(4)
    motion[:3, :3], motion[:3, 3] = rotation, centre + SHIFT_MM - rotation @ centre
    return motion


def make_days(data: Path, work: Path) -> tuple[list[Path], list[Path]]:
    """Day A's and day B's uploads (slices zip + masks zip each) in ``work``."""
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
    grid_scan = Scan(np.zeros(shape, np.uint8), scan.spacing_mm, scan.affine, scan.slice_numbers, MOVED, "slices")
    grid = registration._itk_image(grid_scan.voxels, registration.patient_affine(grid_scan))
    back = registration._itk_transform(np.linalg.inv(known_motion(scan)))  # B's point x shows A's anatomy at motion⁻¹(x)

    def moved(array, interpolator):
        image = registration._itk_image(array, registration.patient_affine(scan))
        return sitk.GetArrayFromImage(sitk.Resample(image, grid, back, interpolator, 0.0))

    voxels = np.clip(np.rint(moved(scan.voxels.astype(np.float32), sitk.sitkLinear)), 0, 255).astype(np.uint8)
    zip_b = work / f"{MOVED}.zip"
    with zipfile.ZipFile(zip_b, "w") as archive:
        for d, number in enumerate(scan.slice_numbers):
            path = work / f"slice_{number:04d}_266_266_1.50_1.50.png"
            Image.fromarray(voxels[d]).save(path)
            archive.write(path, f"{MOVED}/{path.name}")
            path.unlink()
    masks_b = np.stack([moved(m.astype(np.uint8), sitk.sitkNearestNeighbor).astype(bool) for m in masks])
    scan_b = Scan(voxels, scan.spacing_mm, scan.affine, scan.slice_numbers, MOVED, "slices", kaggle_named=True)
    return day_a, [zip_b, save_mask_png_zip(masks_b, scan_b, work / f"{MOVED}_masks.zip")]


def photograph(checkpoint: Path, day_a: list[Path], day_b: list[Path], shots: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    env.pop("EXAMPLES_DIR", None)
    server = subprocess.Popen(["nice", "-n", "10", sys.executable, "app.py", "--model", str(checkpoint)], cwd=REPO,
                              env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(360):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(f"app.py exited with {server.returncode}")
                time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1200})
            page.goto(url)
            page.get_by_role("tab", name="Compare days").click()
            page.locator("#days-a input[type=file]").set_input_files([str(p) for p in day_a])
            page.locator("#days-b input[type=file]").set_input_files([str(p) for p in day_b])
            page.wait_for_timeout(2000)
            page.get_by_role("button", name="Compare days (B against A)").click()
            expect(page.locator("#days-note")).to_contain_text("Rigid registration", timeout=300_000)
            page.wait_for_timeout(2000)
            page.screenshot(path=str(shots / "days.png"), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    small_png(shots / "days.png", REPO / "docs" / "compare_days_tab.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=Path("/tmp/uwmgi-days"))
    parser.add_argument("--model", type=Path, help="a contract checkpoint to serve (default: a tiny random one)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    day_a, day_b = make_days(args.data, args.work)
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
    photograph(checkpoint, day_a, day_b, args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
