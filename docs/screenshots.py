"""Regenerate the README's screenshots end to end: train, export, evaluate, serve, photograph.

    python docs/screenshots.py [--data ../shared/data] [--work /tmp/uwmgi-docs] [--max-epochs N]

1. The 21 labelled slices of ``DATA/pairs`` become a Kaggle layout (``train.csv`` RLE rows, slices
   under Kaggle names) in ``--work``.
2. ``python -m train fit --config docs/small_segformer.yaml`` trains a small SegFormer from random
   weights on 15 of them (fold 1 of 3, split by patient), on one CPU core.
3. ``python -m train export`` writes the contract checkpoint; ``python -m train evaluate`` scores it
   with ``model/metric.py`` on the 6 held-out slices and on all 21; the numbers and the recipe go
   to ``docs/screenshots.json``, which the README's captions quote.
4. ``python app.py`` serves it; headless Chromium segments a real slice on the Slice tab and a real
   scan (``DATA/scans/volume_266x266`` as a zip) on the Scan tab: ``docs/slice_tab.png``, ``docs/scan_tab.png``,
   and one slice corrected in the Scan tab's editor: ``docs/scan_edit.png``.

The data, the training run and the weights stay in ``--work``; only the PNGs and the JSON belong in
the repository. ``--model DIR`` skips steps 1-3 and photographs an existing checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
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

from model.labels import ORGANS  # noqa: E402
from model.rle import RleVolume, parse_slice_id, write_rle_csv  # noqa: E402
from model.scans.kaggle import scan_folder  # noqa: E402

DOCS = REPO / "docs"
CONFIG = DOCS / "small_segformer.yaml"
SLICE = Path("scans/volume_266x266/slice_0110_266_266_1.50_1.50.png")  # upper abdomen, chosen before training
SCAN = Path("scans/volume_266x266")
#: Fold 1 of 3 by patient: trained on 15 slices, 6 held out (case101's 3 scans and case110).
FOLD, FOLDS = 1, 3
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: The pairs were upscaled to 512² by their publisher; their true spacing is lost. Only names need it.
NOMINAL_SPACING = "1.50_1.50"


def pairs_as_kaggle(pairs: Path, dst: Path) -> Path:
    """``pairs/images/<id>.png`` + ``pairs/masks/<id>.png`` (label ids 1..3) → a Kaggle layout in ``dst``."""
    by_scan: dict[str, list[tuple[int, Path]]] = {}
    for path in sorted((pairs / "images").glob("*.png")):
        case_day, number = parse_slice_id(path.stem)
        by_scan.setdefault(case_day, []).append((number, path))
    volumes = []
    for case_day, items in sorted(by_scan.items()):
        items.sort()
        folder = dst / scan_folder(case_day)
        folder.mkdir(parents=True)
        label_maps = []
        for number, path in items:
            width, height = Image.open(path).size
            shutil.copyfile(path, folder / f"slice_{number:04d}_{width}_{height}_{NOMINAL_SPACING}.png")
            label_maps.append(np.asarray(Image.open(pairs / "masks" / path.name)))
        masks = np.stack([np.stack(label_maps) == o + 1 for o in range(len(ORGANS))])  # (O, D, H, W)
        volumes.append(RleVolume(case_day, tuple(n for n, _ in items), masks))
    write_rle_csv(dst / "train.csv", volumes, column="segmentation")
    return dst


def small_segformer(dst: Path) -> int:
    """Save a random multi-label SegFormer (tests/train/test_learning.py's, 264k parameters) as the init; its size."""
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    from model.labels import id2label, label2id

    torch.manual_seed(0)
    labels = id2label(multi_label=True)
    config = SegformerConfig(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 64, 64], num_attention_heads=[1, 1, 2, 2],
                             decoder_hidden_size=64, id2label=labels, label2id=label2id(labels))
    model = SegformerForSemanticSegmentation(config)
    model.save_pretrained(dst)
    return sum(p.numel() for p in model.parameters())


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a step niced (the machine is shared), echoing the command."""
    print("+", " ".join(args), flush=True)
    return subprocess.run(["nice", "-n", "10", *args], cwd=REPO, check=True, **kwargs)


def train_and_score(data: Path, work: Path, max_epochs: int | None) -> tuple[Path, dict]:
    """Steps 1-3: the layout, the fit, the export and both evaluations. Returns the checkpoint and the record."""
    layout = pairs_as_kaggle(data / "pairs", work / "pairs_kaggle")
    init = work / "init"
    parameters = small_segformer(init)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}  # one core of a shared machine
    fit = [sys.executable, "-m", "train", "fit", "--config", str(CONFIG), "--data.data_dir", str(layout),
           "--data.cache_dir", str(work / "cache"), "--model.init", str(init),
           "--trainer.default_root_dir", str(work / "run")]
    if max_epochs:
        fit += ["--trainer.max_epochs", str(max_epochs)]
    start = time.monotonic()
    run(fit, env=env)
    minutes = (time.monotonic() - start) / 60
    checkpoint = work / "model"
    run([sys.executable, "-m", "train", "export", str(work / "run" / "checkpoints" / "last.ckpt"), str(checkpoint)],
        env=env, stdout=subprocess.DEVNULL)
    scores, slices = {}, {}
    for name, fold_args in (("held_out", ["--fold", str(FOLD), "--folds", str(FOLDS)]), ("all_pairs", [])):
        run([sys.executable, "-m", "train", "evaluate", str(checkpoint), str(layout), *fold_args,
             "--out", str(work / f"evaluation_{name}")], env=env, stdout=subprocess.DEVNULL)
        summary = json.loads((work / f"evaluation_{name}" / "summary.json").read_text())
        with open(work / f"evaluation_{name}" / "per_case_day.csv", newline="") as f:
            slices[name] = sum(int(row["slices"]) for row in csv.DictReader(f))
        scores[name] = {key: round(value, 3) if isinstance(value, float) else value
                        for key, value in summary.items() if key.startswith("dice")}
    import yaml

    recipe = yaml.safe_load(CONFIG.read_text())
    epochs = max_epochs or recipe["trainer"]["max_epochs"]
    record = {
        "model": "SegFormer from random weights: depths [1,1,1,1], hidden sizes [16,32,64,64], multi-label",
        "parameters": parameters,
        "config": str(CONFIG.relative_to(REPO)),
        "trained_on": f"{slices['all_pairs'] - slices['held_out']} slices of shared/data/pairs "
                      f"(fold {FOLD} of {FOLDS} by patient), {recipe['data']['size']}² input",
        "held_out_slices": slices["held_out"],
        "epochs": epochs,
        "cpu_minutes_one_core": round(minutes, 1),
        "dice_held_out": scores["held_out"],
        "dice_all_21_pairs": scores["all_pairs"],
        "metric": "model/metric.py per-slice Dice, pairs empty on both sides skipped (python -m train evaluate)",
    }
    return checkpoint, record


def scan_zip(data: Path, dst: Path) -> Path:
    """The scan folder as the zip a user would upload."""
    archive_path = dst / f"{SCAN.name}.zip"
    with zipfile.ZipFile(archive_path, "w") as archive:
        for path in sorted((data / SCAN).glob("*.png")):
            archive.write(path, f"{SCAN.name}/{path.name}")
    return archive_path


def small_png(src: Path, dst: Path, colours: int = 128) -> None:
    """Save a screenshot as a 128-colour palette PNG, about a third of the full-colour size.

    Octree rather than median cut: median cut merged the legend's light blue into the green.
    """
    Image.open(src).convert("RGB").quantize(colours, method=Image.Quantize.FASTOCTREE).save(dst, optimize=True)


def photograph(checkpoint: Path, data: Path, shots: Path) -> None:
    """Step 4: serve ``checkpoint`` and take the Slice and Scan tabs in headless Chromium (full colour into ``shots``)."""
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
            page = browser.new_page(viewport={"width": 1280, "height": 1440})
            page.goto(url)
            page.locator("input[type=file]").first.set_input_files(data / SLICE)
            page.get_by_role("button", name="Segment", exact=True).click()
            expect(page.get_by_text("Pixel spacing 1.5 × 1.5 mm")).to_be_visible(timeout=120_000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(shots / "slice.png"), full_page=True)

            page.get_by_role("tab", name="Scan").click()
            page.locator("#scan-files input[type=file]").set_input_files(scan_zip(data, shots))
            page.wait_for_timeout(1500)
            page.get_by_role("button", name="Segment scan").click()
            expect(page.locator("#scan-note")).to_contain_text(" ml", timeout=300_000)
            page.wait_for_timeout(2000)
            # Down to the area plot; below it headless Chromium (no GPU) leaves the 3D view blank.
            page.screenshot(path=str(shots / "scan.png"), clip={"x": 0, "y": 0, "width": 1280, "height": 1440})

            # The correction loop: the worst flagged slice (the review table's first row), in the editor, a
            # stroke of large bowel, Apply.
            review = page.locator("#scan-review")
            expect(review.locator('[data-testid="cell-0-0"]')).to_be_visible(timeout=60_000)
            flagged = review.locator('[data-testid="cell-0-0"]').inner_text().strip()
            review.locator('[data-testid="cell-0-1"]').click()
            expect(page.locator("#scan-slider input[type=number]")).to_have_value(flagged, timeout=30_000)
            page.locator("#scan-edit").click()
            page.wait_for_function("""() => { const e = window.editor;
                return e && e.app.canvas === document.querySelector('#scan-editor canvas')
                    && e.layer_manager.get_layers().length === 3
                    && e.layer_manager.get_layers().every(l => l.name === 'Layer 1'); }""", timeout=60_000)
            page.wait_for_timeout(2000)
            editor = page.locator("#scan-editor")
            editor.locator("button[aria-label='Show Layers']").click()
            editor.locator("li").nth(2).click()  # layers top to bottom: stomach, small bowel, large bowel
            editor.locator("button[aria-label='Show Layers']").click()
            editor.locator("button[aria-label='Brush']").click()
            box = editor.locator("canvas").first.bounding_box()
            x, y = box["x"] + box["width"] * 0.42, box["y"] + box["height"] * 0.6
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x + 70, y + 25, steps=25)
            page.mouse.up()
            page.wait_for_timeout(1000)
            page.locator("#scan-apply-edit").click()
            expect(page.locator("#scan-note")).to_contain_text("Corrected by hand", timeout=300_000)
            page.wait_for_timeout(2000)
            page.evaluate("window.scrollTo(0, 0)")  # boxes are viewport-relative; the review click scrolled
            page.wait_for_timeout(2500)  # the overlay fades in again after the scroll
            top = page.locator("#scan-slider").bounding_box()["y"] - 10
            bottom = editor.bounding_box()["y"] + editor.bounding_box()["height"] + 10
            page.screenshot(path=str(shots / "edit.png"), full_page=True,
                            clip={"x": 0, "y": top, "width": 1280, "height": bottom - top})
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    small_png(shots / "slice.png", DOCS / "slice_tab.png")
    small_png(shots / "scan.png", DOCS / "scan_tab.png")
    small_png(shots / "edit.png", DOCS / "scan_edit.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                        help="the shared data folder (pairs/ and scans/); never copied into the repository")
    parser.add_argument("--work", type=Path, help="where the layout, the run and the checkpoint go "
                                                  "(default: a temporary folder, deleted afterwards)")
    parser.add_argument("--max-epochs", type=int, help="override the config's trainer.max_epochs (smoke runs)")
    parser.add_argument("--model", type=Path, help="photograph this contract checkpoint; skip training")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp) / "work"
        work.mkdir(parents=True, exist_ok=True)
        if args.model:
            checkpoint = args.model
        else:
            checkpoint, record = train_and_score(args.data, work, args.max_epochs)
            (DOCS / "screenshots.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
            print(json.dumps(record, indent=1, ensure_ascii=False))
        photograph(checkpoint, args.data, work)
    print(f"wrote {DOCS / 'slice_tab.png'}, {DOCS / 'scan_tab.png'} and {DOCS / 'scan_edit.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
