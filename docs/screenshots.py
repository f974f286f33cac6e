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
   one slice corrected in the Scan tab's editor: ``docs/scan_edit.png``, and on a flagged slice the flagged
   organ's largest piece removed with one click, then the removal propagated: ``docs/scan_clicks.png``.

The data, the training run and the weights stay in ``--work``; only the PNGs and the JSON belong in
the repository. ``--model DIR`` skips steps 1-3 and photographs an existing checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import resource
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

from benchmarks.served import CHROMIUM, CHROMIUM_ARGS, click_slice_pixel  # noqa: E402
from model.labels import DISPLAY_NAMES, ORGANS  # noqa: E402
from model.rle import RleVolume, parse_slice_id, write_rle_csv  # noqa: E402
from model.scans.kaggle import scan_folder  # noqa: E402

DOCS = REPO / "docs"
CONFIG = DOCS / "small_segformer.yaml"
SLICE = Path("scans/volume_266x266/slice_0110_266_266_1.50_1.50.png")  # upper abdomen, chosen before training
SCAN = Path("scans/volume_266x266")
#: Fold 1 of 3 by patient: trained on 15 slices, 6 held out (case101's 3 scans and case110).
FOLD, FOLDS = 1, 3
#: The size of the piece the click step removes and propagates (pixels): a visible one, not a whole organ.
MIN_PIECE_PX, MAX_PIECE_PX = 200, 1500
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
    # CPU time, not wall time: on a shared machine the wall clock counts the other jobs too.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run(fit, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    minutes = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / 60
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


@contextlib.contextmanager
def served(checkpoint: Path):
    """``app.py`` serving ``checkpoint`` on a free local port; yields its URL."""
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
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def photograph(checkpoint: Path, data: Path, shots: Path) -> None:
    """Step 4: serve ``checkpoint`` and take the Slice and Scan tabs in headless Chromium (full colour into ``shots``)."""
    from playwright.sync_api import expect, sync_playwright

    with served(checkpoint) as url:
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
                    && e.layer_manager.get_layers().every(l => l.user_created); }""", timeout=60_000)
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

            # Click correction: the first flagged slice (else the slice nearest the scan's middle) where an organ's
            # largest piece (read from the label NIfTI the app wrote) is visible and goes on into a neighbouring
            # slice; that piece removed with one click at its middle, applied, then the removal carried to the
            # neighbours (Propagate). The volume has no labels: this shows the loop, not a right answer.
            with page.expect_download() as download:
                page.locator('#scan-downloads a[download$="_labels.nii.gz"]').click()
            download.value.save_as(shots / "labels.nii.gz")
            import nibabel as nib
            from scipy import ndimage

            ids = np.asarray(nib.load(shots / "labels.nii.gz").dataobj).transpose(2, 1, 0)

            def piece(position: int, label: int):
                """The largest piece of ``label`` on slice ``position`` when it is visible and goes on into a
                neighbouring slice, else ``None``."""
                pieces, n = ndimage.label(ids[position - 1] == label)
                if not n:
                    return None
                largest = pieces == 1 + int(np.argmax(np.bincount(pieces.ravel())[1:]))
                near = [ids[d] == label for d in (position - 2, position) if 0 <= d < len(ids)]
                ok = MIN_PIECE_PX <= largest.sum() <= MAX_PIECE_PX and max((largest & m).sum() for m in near) >= 0.5 * largest.sum()
                return largest if ok else None

            names = [DISPLAY_NAMES[o] for o in ORGANS]
            flagged_rows = [(int(review.locator(f'[data-testid="cell-{i}-0"]').inner_text()),
                             review.locator(f'[data-testid="cell-{i}-1"]').inner_text().strip())
                            for i in range(review.locator('[data-testid$="-0"][data-testid^="cell-"]').count())]
            middle = len(ids) // 2  # else the slices nearest the middle of the scan
            others = [(d + 1, name) for d in sorted(range(len(ids)), key=lambda d: abs(d - middle)) for name in names]
            position, organ, largest = next((p, o, piece(p, 1 + names.index(o))) for p, o in flagged_rows + others
                                            if o in names and piece(p, 1 + names.index(o)) is not None)
            slider = page.locator("#scan-slider input[type=number]")
            slider.fill(str(position))
            slider.press("Enter")
            expect(slider).to_have_value(str(position), timeout=30_000)
            inside = ndimage.distance_transform_edt(largest)
            row, col = np.unravel_index(int(np.argmax(inside)), inside.shape)
            page.locator("#scan-click-organ").get_by_label(organ, exact=True).check()
            page.locator("#scan-click-mode").get_by_label("Remove", exact=True).check()
            click_slice_pixel(page, "scan-click-image", int(row), int(col), ids.shape[1:])
            note = page.locator("#scan-click-note")
            expect(note).to_contain_text("1 click on slice", timeout=60_000)
            page.locator("#scan-click-apply").click()
            expect(note).to_contain_text("Applied: 1 click(s)", timeout=300_000)
            page.locator("#scan-propagate").click()
            expect(note).to_contain_text(f"{organ} propagated from slice", timeout=300_000)
            page.wait_for_timeout(2500)
            page.evaluate("window.scrollTo(0, 0)")
            page.wait_for_timeout(2500)
            top = page.locator("#scan-slider").bounding_box()["y"] - 10
            bottom = note.bounding_box()["y"] + note.bounding_box()["height"] + 10
            page.screenshot(path=str(shots / "clicks.png"), full_page=True,
                            clip={"x": 0, "y": top, "width": 1280, "height": bottom - top})
            browser.close()
    small_png(shots / "slice.png", DOCS / "slice_tab.png")
    small_png(shots / "scan.png", DOCS / "scan_tab.png")
    small_png(shots / "edit.png", DOCS / "scan_edit.png")
    small_png(shots / "clicks.png", DOCS / "scan_clicks.png")


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
    print(f"wrote {DOCS / 'slice_tab.png'}, {DOCS / 'scan_tab.png'}, {DOCS / 'scan_edit.png'} and {DOCS / 'scan_clicks.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
