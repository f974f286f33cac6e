"""A click as a person sees it: real mouse clicks on the Scan tab, timed until the new mask is drawn.

    python -m benchmarks.page_clicks [--data ../shared/data] [--clicks 30] [--rounds 3] [--applies 8]
                                     [--out benchmarks/results/page_clicks.json]

``docs/correct.md`` times :func:`model.interactive.click` alone (server side, the issue's 150 ms). A person
waits for more: the browser sends the click through Gradio's queue, the page's handler replays the clicks
and draws the click image, Gradio encodes it and the browser fetches and draws it. Here ``python app.py``
serves on this machine (a tiny random model: the segmentation is not timed, and the clicks cost about the
same whatever drew the masks), headless Debian Chromium segments six real slices of the largest shared
volume (360 x 310: the click image is 1080 x 930 px) and clicks on the third: ``--clicks`` clicks at
seeded places inside the body, the organ and Add/Remove alternating, each timed in the page from the
click event until the click image shows the new mask (its ``<img>`` has a new source, loaded). With the
app's default click refiner and with ``--click-refiner none`` (the training-free corrector), one server
after the other, ``--rounds`` times in turn, each round a fresh server: one server's clicks agree with each
other, but the median moved by tens of milliseconds between servers in scratch runs, so the record pools
the rounds and keeps each round's median. The clicks of one slice stay pending (not applied), as a
person's do until Apply.

Then, with the app's default refiner (in each round, on the same server), what a person waits for once
their clicks are right: the whole volume (115 slices) segmented, and ``--applies`` times, on slices spread
over its middle half, one Add click for the large bowel and **Apply clicks**, each timed from the press
until the page's note says it was applied (the handler rewrites every download of the scan,
``benchmarks.edits`` times that part alone, and the page redraws the scan's view, tables, plot and
surfaces). The tiny random model draws ragged organs, so the surfaces cost more here than on a trained
model's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.measure import REPO, Machine, benchmark_checkpoint
from benchmarks.served import CHROMIUM, CHROMIUM_ARGS, Server, click_slice_pixel

VOLUME, FIRST, COUNT, CLICKED = "volume_360x310", 60, 6, 3  # slice 3 of the six (1-based), upper abdomen
ORGANS = ("Stomach", "Small bowel", "Large bowel")
OUT = REPO / "benchmarks" / "results" / "page_clicks.json"


def places(image: np.ndarray, n: int, seed: int = 0) -> list[tuple[int, int]]:
    """``n`` seeded pixels inside the body (well within the brighter half of ``image``), at least 8 px apart."""
    from scipy import ndimage

    body = ndimage.binary_erosion(image > np.percentile(image, 50), iterations=10)
    rows, cols = np.nonzero(body)
    rng = np.random.default_rng(seed)
    chosen: list[tuple[int, int]] = []
    for i in rng.permutation(rows.size):
        r, c = int(rows[i]), int(cols[i])
        if all(abs(r - a) + abs(c - b) >= 8 for a, b in chosen):
            chosen.append((r, c))
        if len(chosen) == n:
            return chosen
    raise ValueError(f"found only {len(chosen)} places to click")


def segmented_page(browser, server: Server, upload: Path, slices: int):
    """A new page of ``server`` whose Scan tab has segmented ``upload`` (``slices`` slices) through the page."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    page.goto(server.url)
    page.get_by_role("tab", name="Scan").click()
    page.locator("#scan-files input[type=file]").set_input_files(upload)
    expect(page.locator("#scan-files")).to_contain_text(upload.stem, timeout=30_000)
    page.get_by_role("button", name="Segment scan").click()
    expect(page.locator("#scan-note")).to_contain_text(f"{slices} slices", timeout=600_000)
    return page


def click_times(browser, server: Server, upload: Path, image: np.ndarray, n: int) -> list[float]:
    """Seconds from each of ``n`` mouse clicks on slice :data:`CLICKED` until its new click image is drawn."""
    from playwright.sync_api import expect

    page = segmented_page(browser, server, upload, COUNT)
    slider = page.locator("#scan-slider input[type=number]")
    slider.fill(str(CLICKED))
    slider.press("Enter")
    # Both moments are taken in the page: the click event on the click image (Playwright's element click sends it
    # once the image is still and uncovered, so its own waits are not timed), and the new image loaded.
    page.evaluate("() => document.addEventListener('click', e => { if (e.target.closest('#scan-click-image'))"
                  " window.clicked_at = performance.now(); }, true)")
    drawn = ("(before) => { const i = document.querySelector('#scan-click-image img');"
             " return i && i.src !== before && i.complete && i.naturalWidth > 0"
             " && performance.now() - window.clicked_at; }")
    page.wait_for_function("() => { const i = document.querySelector('#scan-click-image img');"
                           " return i && i.complete && i.naturalWidth > 0; }", timeout=60_000)
    page.wait_for_timeout(1000)  # the slider's own redraw of the click image is done
    times = []
    for k, (row, col) in enumerate(places(image, n)):
        page.locator("#scan-click-organ").get_by_label(ORGANS[k % 3], exact=True).check()
        page.locator("#scan-click-mode").get_by_label("Add" if k % 2 == 0 else "Remove", exact=True).check()
        before = page.locator("#scan-click-image img").get_attribute("src")
        click_slice_pixel(page, "scan-click-image", row, col, image.shape)
        times.append(page.wait_for_function(drawn, arg=before, timeout=60_000, polling=5).json_value() / 1000)
    expect(page.locator("#scan-click-note")).to_contain_text(f"{n} clicks on slice {CLICKED}, not applied yet")
    page.close()
    return times


def apply_times(browser, server: Server, upload: Path, images: list[np.ndarray], n: int) -> list[float]:
    """Seconds from each of ``n`` presses of Apply clicks, each after one pending Add click for the large bowel on
    another slice of the whole scan ``upload`` (``images``: its slices), where the model drew none, until the
    page says it was applied: the handler rewrites every download of the scan
    (:meth:`model.edits.ScanEdits.write`) and the page redraws the scan's view, tables, plot and 3D surfaces."""
    import gzip

    import nibabel as nib
    from playwright.sync_api import expect

    page = segmented_page(browser, server, upload, len(images))
    # Where the model drew the large bowel (label 3 wins every overlap in the label NIfTI): clicks go elsewhere.
    href = page.locator('#scan-downloads a[download$="_labels.nii.gz"]').get_attribute("href")
    labels_nii = nib.Nifti1Image.from_bytes(gzip.decompress(page.request.get(href).body()))
    large_bowel = np.asarray(labels_nii.dataobj).transpose(2, 1, 0) == 3
    page.wait_for_timeout(3000)  # the click image drawn after the segmentation
    slider = page.locator("#scan-slider input[type=number]")
    note = page.locator("#scan-click-note")
    page.locator("#scan-click-organ").get_by_label("Large bowel", exact=True).check()
    page.locator("#scan-click-mode").get_by_label("Add", exact=True).check()
    applied = "(text) => document.querySelector('#scan-click-note').textContent.includes(text)"
    times = []
    for k, d in enumerate(np.linspace(len(images) // 4, 3 * len(images) // 4, n).round().astype(int)):
        slider.fill(str(d))
        slider.press("Enter")
        page.wait_for_timeout(1500)  # the slider's redraw of the click image is done
        row, col = next((r, c) for r, c in places(images[d - 1], 50, seed=k) if not large_bowel[d - 1, r, c])
        click_slice_pixel(page, "scan-click-image", row, col, images[d - 1].shape)
        expect(note).to_contain_text(f"1 click on slice {d}, not applied yet", timeout=60_000)
        page.wait_for_timeout(1000)
        start = time.perf_counter()
        page.locator("#scan-click-apply").click()
        page.wait_for_function(applied, arg=f"Applied: 1 click(s) on slice {d} ", timeout=60_000, polling=5)
        times.append(time.perf_counter() - start)
    page.close()
    return times


def summary(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"clicks": int(ms.size), "ms_median": round(float(np.median(ms)), 1),
            "ms_p95": round(float(np.percentile(ms, 95)), 1), "ms_max": round(float(ms.max()), 1),
            "ms": [round(float(x), 1) for x in ms]}


def _median_ms(seconds: list[float]) -> float:
    return round(float(np.median(seconds)) * 1000, 1)


def pooled(rounds: list[list[float]]) -> dict:
    """:func:`summary` of every round's seconds together, and each round's median (``round_ms_median``)."""
    return {**summary([t for one in rounds for t in one]), "round_ms_median": [_median_ms(one) for one in rounds]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--clicks", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--applies", type=int, default=8)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    every = sorted((args.data / "scans" / VOLUME).glob("slice_*.png"))
    files = every[FIRST:FIRST + COUNT]
    if len(files) != COUNT:
        parser.error(f"{args.data / 'scans' / VOLUME} holds no {COUNT} slices from {FIRST}")
    image = np.asarray(Image.open(files[CLICKED - 1]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    record = {"command": "python -m benchmarks.page_clicks " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": Machine.this().describe(), "volume": VOLUME, "slices": [f.name for f in files],
              "clicked_slice": CLICKED, "slice_size": list(image.shape), "correctors": {}}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        upload, whole = Path(tmp) / "case9_day4.zip", Path(tmp) / "case9_day5.zip"
        for zipped, folder, members in ((upload, "case9_day4", files), (whole, "case9_day5", every)):
            with zipfile.ZipFile(zipped, "w") as archive:
                for f in members:
                    archive.write(f, f"{folder}/scans/{f.name}")
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        correctors = (("click_refiner (the app's default)", []),
                      ("training-free (--click-refiner none)", ["--click-refiner", "none"]))
        rounds: dict[str, list[list[float]]] = {name: [] for name, _ in correctors}
        applies: list[list[float]] = []
        images = [np.asarray(Image.open(f)) for f in every]
        for k in range(args.rounds):
            for name, extra in correctors:
                server = Server(["app.py", "--model", str(benchmark_checkpoint("tiny")), *extra], env, name=name)
                try:
                    server.wait_ready()
                    rounds[name].append(click_times(browser, server, upload, image, args.clicks))
                    print(name, f"round {k + 1}", _median_ms(rounds[name][-1]), "ms", flush=True)
                    if not extra and args.applies:
                        applies.append(apply_times(browser, server, whole, images, args.applies))
                        print("apply", f"round {k + 1}", _median_ms(applies[-1]), "ms", flush=True)
                finally:
                    server.stop()
        for name, times in rounds.items():
            record["correctors"][name] = pooled(times)
            print(name, {k: v for k, v in record["correctors"][name].items() if k != "ms"}, flush=True)
        if applies:
            applied = pooled(applies)
            applied["applies"] = applied.pop("clicks")
            record["apply"] = {"slices": len(every), "clicks_per_apply": 1, **applied}
            print("apply", {k: v for k, v in record["apply"].items() if k != "ms"}, flush=True)
        browser.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
