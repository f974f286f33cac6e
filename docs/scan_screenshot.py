"""Take ``docs/scan_tab.png``: the Scan tab on a synthetic phantom (real scans may not be committed).

    python docs/scan_screenshot.py --model CHECKPOINT_DIR [--out docs/scan_tab.png]

Writes a phantom scan (an elliptical body with three organ-like blobs, 16-bit Kaggle-named
slices in a ``case1_day1`` zip) and its blobs as ground truth, starts ``app.py`` on a free
local port, segments the phantom in headless Chromium and saves a full-page screenshot.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model.overlay import encode_mask_png  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def phantom(depth=40, height=200, width=240, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """``(D, H, W) uint16`` intensities and ``(3, D, H, W) bool`` blobs: stomach, small bowel, large bowel."""
    rng = np.random.default_rng(seed)
    d, y, x = np.meshgrid(np.linspace(-1, 1, depth), np.linspace(-1, 1, height), np.linspace(-1, 1, width),
                          indexing="ij")
    body = (x / 0.9) ** 2 + (y / 0.7) ** 2 < 1
    blobs = np.stack([
        ((x - 0.35) / 0.25) ** 2 + ((y + 0.2) / 0.2) ** 2 + ((d - 0.4) / 0.4) ** 2 < 1,
        ((x + 0.1) / 0.3) ** 2 + ((y - 0.15) / 0.25) ** 2 + ((d + 0.1) / 0.6) ** 2 < 1,
        (np.abs(np.hypot(x / 0.6, (y - 0.05) / 0.5) - 1) < 0.12) & (np.abs(d) < 0.8),
    ])
    voxels = 8000 * body + 6000 * blobs[0] + 3000 * blobs[1] + 12000 * blobs[2]
    voxels = voxels + rng.normal(0, 800, voxels.shape) * body
    return np.clip(voxels, 0, 65535).astype(np.uint16), blobs & body


def write_zips(tmp: Path) -> tuple[Path, Path]:
    voxels, truth = phantom()
    depth, height, width = voxels.shape
    scan_zip, truth_zip = tmp / "case1_day1.zip", tmp / "case1_day1_truth.zip"
    with zipfile.ZipFile(scan_zip, "w") as scans, zipfile.ZipFile(truth_zip, "w") as masks:
        for k in range(depth):
            name = f"slice_{k + 1:04d}_{width}_{height}_1.50_1.50"
            for archive, image in ((scans, voxels[k]), (masks, encode_mask_png(truth[:, k]))):
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, format="PNG")
                archive.writestr(f"case1_day1/scans/{name}.png", buffer.getvalue())
    return scan_zip, truth_zip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="contract checkpoint dir (a tiny one is fine)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "scan_tab.png")
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    with tempfile.TemporaryDirectory() as tmp, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        scan_zip, truth_zip = write_zips(Path(tmp))
        env = {**os.environ, "MODEL": args.model, "GRADIO_SERVER_NAME": "127.0.0.1",
               "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
        server = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env)
        try:
            url = f"http://127.0.0.1:{port}/"
            for _ in range(240):
                try:
                    urllib.request.urlopen(url, timeout=2)
                    break
                except OSError:
                    time.sleep(0.5)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1600})
                page.goto(url)
                page.get_by_role("tab", name="Scan").click()
                page.locator("#scan-files input[type=file]").set_input_files(scan_zip)
                page.locator("#scan-truth input[type=file]").set_input_files(truth_zip)
                page.wait_for_timeout(1500)
                page.get_by_role("button", name="Segment scan").click()
                expect(page.locator("#scan-note")).to_contain_text(" ml", timeout=180_000)
                page.wait_for_timeout(5000)  # let the 3D view load
                page.screenshot(path=str(args.out), full_page=True)
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
