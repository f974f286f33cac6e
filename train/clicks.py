"""Train the click refiner (``model/engines/click_refiner.py``) on simulated reviewers' clicks, with PyTorch Lightning.

    python -m train.clicks --data-dir DATA --out DIR [--steps 3000] [--seed 0] [--case-days case1_day0 ...]

``DATA`` is the Kaggle layout (``train.csv`` and ``train/caseN/caseN_dayD/scans/*.png``); ``DIR`` gets
``click_refiner.safetensors`` and ``click_refiner.json``: put them beside a checkpoint's ``config.json`` and the
app's clicks use them (``model.interactive.click(..., refiner=...)``).

A training example is one organ on one labelled slice with a wrong mask: three times in five, where a
segmentation model's output is given (``--checkpoint``), that model's mask and probability after 0-3 earlier
simulated clicks that set their region right; otherwise its true mask spoiled the ways a model gets an organ
wrong (:func:`spoil`: missed, eroded or grown, a piece cut off or added from a neighbouring organ or a blob
of the body, shifted, invented where the organ is absent), with earlier clicks it already obeys. The click
goes where the literature's simulated reviewer puts it (:func:`model.interactive.simulated_click`: the pixel
farthest inside the largest error) or, one time in four, well inside an error region drawn at random. The
target is the true mask in the click's window. Loss: BCE + soft Dice.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from model import interactive
from model.engines import click_refiner
from model.image import normalize_intensity


def _blob(shape: tuple[int, int], row: int, col: int, rng: np.random.Generator, low: float = 4, high: float = 25) -> np.ndarray:
    """A random ellipse at ``(row, col)``."""
    a, b = rng.uniform(low, high, 2)
    t = rng.uniform(0, np.pi)
    rr, cc = np.ogrid[:shape[0], :shape[1]]
    y, x = rr - row, cc - col
    u, v = x * np.cos(t) + y * np.sin(t), -x * np.sin(t) + y * np.cos(t)
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def _pick(where: np.ndarray, rng: np.random.Generator) -> tuple[int, int] | None:
    rows, cols = np.nonzero(where)
    if rows.size == 0:
        return None
    i = int(rng.integers(rows.size))
    return int(rows[i]), int(cols[i])


def spoil(truth: np.ndarray, others: np.ndarray, body: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A wrong mask of one organ, made from its ``truth`` ``(H, W) bool``; ``others`` the other organs' truth,
    ``body`` the pixels inside the body (where an invented organ goes)."""
    if not truth.any():  # invented: a blob of the body, or a piece of a neighbouring organ
        if others.any() and rng.random() < 0.4:
            pieces, n = ndimage.label(others)
            return pieces == int(rng.integers(1, n + 1))
        at = _pick(body, rng) or (truth.shape[0] // 2, truth.shape[1] // 2)
        return _blob(truth.shape, *at, rng) & body
    mask = truth.copy()
    for _ in range(int(rng.integers(1, 3))):
        kind = rng.choice(["missed", "erode", "grow", "cut", "add", "shift", "drop"], p=[0.15, 0.12, 0.12, 0.22, 0.22, 0.09, 0.08])
        if kind == "missed":
            mask = np.zeros_like(truth) if rng.random() < 0.7 else mask & _blob(truth.shape, *_pick(mask, rng) or (0, 0), rng, 2, 6)
        elif kind == "erode" and mask.any():
            mask = ndimage.binary_erosion(mask, iterations=int(rng.integers(2, 7)))
        elif kind == "grow":
            mask = ndimage.binary_dilation(mask, iterations=int(rng.integers(2, 7))) & body
        elif kind == "cut" and mask.any():
            mask = mask & ~_blob(truth.shape, *_pick(mask, rng), rng, 5, 30)
        elif kind == "add":
            near = ndimage.binary_dilation(truth, iterations=25) & body & ~truth
            if others.any() and rng.random() < 0.4:
                pieces, n = ndimage.label(others)
                mask = mask | (pieces == int(rng.integers(1, n + 1)))
            elif near.any():
                mask = mask | (_blob(truth.shape, *_pick(near, rng), rng, 4, 20) & body)
        elif kind == "shift":
            mask = ndimage.shift(mask, rng.integers(-8, 9, 2), order=0)
        elif kind == "drop":
            pieces, n = ndimage.label(mask)
            if n > 1:
                mask = mask & (pieces != int(rng.integers(1, n + 1)))
    return mask


def _earlier_clicks(mask: np.ndarray, truth: np.ndarray, rng: np.random.Generator) -> list[tuple[int, int, bool]]:
    """Up to three clicks a person made before, which ``mask`` already obeys (on the organ where it is right,
    off it near the organ)."""
    clicks = []
    near = ndimage.binary_dilation(truth, iterations=15) & ~truth & ~mask
    for _ in range(int(rng.integers(0, 4))):
        positive = bool(rng.random() < 0.5)
        at = _pick(ndimage.binary_erosion(truth & mask, iterations=2) if positive else near, rng)
        if at:
            clicks.append((*at, positive))
    return clicks


def _click(mask: np.ndarray, truth: np.ndarray, rng: np.random.Generator) -> tuple[int, int, bool] | None:
    """The simulated reviewer's click, or (one time in four) a click well inside an error region drawn at random."""
    if rng.random() < 0.75:
        return interactive.simulated_click(mask, truth)
    error = mask ^ truth
    regions, n = ndimage.label(error)
    if n == 0:
        return None
    region = regions == int(rng.integers(1, n + 1))
    inner = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    at = _pick(inner >= max(1.0, 0.5 * inner.max()), rng)
    return (*at, bool(truth[at])) if at else None


def _partly_fixed(mask: np.ndarray, truth: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """``mask`` after up to three earlier clicks, each of which set right most of the error region under it
    (the simulated reviewer's), and those clicks: the state a person is in at their second, third, ... click."""
    clicks = []
    for _ in range(int(rng.choice([0, 0, 1, 2, 3]))):
        at = interactive.simulated_click(mask, truth)
        if at is None:
            break
        regions, _ = ndimage.label(mask ^ truth)
        region = regions == regions[at[0], at[1]]
        if rng.random() < 0.5:  # only the part of it near the click
            region &= _blob(mask.shape, at[0], at[1], rng, 8, 30)
        mask = np.where(region, truth, mask)
        clicks.append(at)
    return mask, clicks


def _example(group: tuple, rng: np.random.Generator, stretched: np.ndarray) -> tuple | None:
    """One ``(slice, probability, mask, clicks, truth)``, or ``None`` when this draw gave no error to click on.

    With a segmentation model's output in ``group`` (``masks``, ``probabilities``), three draws in five start
    from its real errors; the others spoil the truth (:func:`spoil`)."""
    truth_all = group[1]
    o, d = int(rng.integers(truth_all.shape[0])), int(rng.integers(truth_all.shape[1]))
    truth = truth_all[o, d]
    image = stretched[d]
    if len(group) > 2 and rng.random() < 0.6:
        masks, probabilities = group[2], group[3]
        mask, probability = masks[o, d], probabilities[o, d].astype(np.float32)
        mask, earlier = _partly_fixed(mask, truth, rng)
    else:
        if truth.sum() < 30 and rng.random() < 0.8:  # mostly slices holding the organ
            return None
        others_truth = np.delete(truth_all[:, d], o, axis=0).any(axis=0)
        body = ndimage.binary_opening(image > 20, iterations=2)
        mask = spoil(truth, others_truth, body, rng)
        probability = ndimage.gaussian_filter(mask.astype(np.float32), 2.0) * rng.uniform(0.5, 1.0)
        earlier = _earlier_clicks(mask, truth, rng)
    if (mask ^ truth).sum() < 10:
        return None
    first = _click(mask, truth, rng)
    if first is None:
        return None
    if rng.random() < 0.15:
        probability = None
    return image, probability, mask, earlier + [first], truth


def examples(groups: Sequence[tuple], n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` simulated examples: inputs ``(n, 5, WINDOW, WINDOW) float16`` and targets ``(n, WINDOW, WINDOW) bool``.

    ``groups``: (slices ``(N, H, W)``, truth ``(O, N, H, W) bool``), optionally followed by a segmentation
    model's masks ``(O, N, H, W) bool`` and probabilities ``(O, N, H, W)`` of those slices (a model that was not
    trained on them), at the scans' own pixel size.
    """
    rng = np.random.default_rng(seed)
    stretched = [np.stack([normalize_intensity(s) for s in group[0]]) for group in groups]
    x = np.zeros((n, len(click_refiner.CHANNELS), click_refiner.WINDOW, click_refiner.WINDOW), dtype=np.float16)
    y = np.zeros((n, click_refiner.WINDOW, click_refiner.WINDOW), dtype=bool)
    made = 0
    while made < n:
        g = int(rng.integers(len(groups)))
        drawn = _example(groups[g], rng, stretched[g])
        if drawn is None:
            continue
        image, probability, mask, clicks, truth = drawn
        x[made], origin = click_refiner.encode(image, probability, mask, clicks)
        y[made] = click_refiner.cut(truth, *origin)
        made += 1
    return x, y


class ClickRefinerModule(L.LightningModule):
    """The click refiner's training: BCE + soft Dice against the true mask in the window, AdamW, one cycle."""

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128), lr: float = 3e-3, steps: int = 3000):
        super().__init__()
        self.save_hyperparameters()
        self.net = click_refiner.ClickRefiner(widths)

    def training_step(self, batch, _):
        x, y = batch
        if torch.rand(()) < 0.5:  # the window's content flipped left-right and up-down: local shapes, any side
            x, y = x.flip(-1), y.flip(-1)
        if torch.rand(()) < 0.5:
            x, y = x.flip(-2), y.flip(-2)
        x, y = x.float(), y.float()
        logits = self.net(x)
        p = torch.sigmoid(logits)
        dice = 1 - (2 * (p * y).sum((1, 2)) + 1) / (p.sum((1, 2)) + y.sum((1, 2)) + 1)
        loss = F.binary_cross_entropy_with_logits(logits, y) + dice.mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.hparams.lr, total_steps=self.hparams.steps,
                                                       pct_start=0.1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def fit(groups: Sequence[tuple[np.ndarray, np.ndarray]], out: Path, steps: int = 3000, seed: int = 0,
        n_examples: int = 12000, batch_size: int = 16, accelerator: str = "auto") -> Path:
    """Train a click refiner on ``groups`` and save it into ``out``; returns ``out``."""
    L.seed_everything(seed, workers=True)
    x, y = examples(groups, n_examples, seed)
    data = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True)
    module = ClickRefinerModule(steps=steps)
    trainer = L.Trainer(max_steps=steps, accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=False, deterministic=True)
    trainer.fit(module, loader)
    return click_refiner.save(module.net.cpu().eval(), out)


def kaggle_groups(data_dir: Path, case_days: Sequence[str] | None = None, checkpoint: Path | None = None) -> list[tuple]:
    """Training groups from the Kaggle layout: ``(slices, truth)`` per case-day, and with ``checkpoint`` (a
    segmentation checkpoint that was not trained on these case-days) its masks and probabilities of each."""
    from model.rle import RleCsv

    from .data import index_scans, organ_masks, read_scan, read_scan_masks

    truth_csv = RleCsv(Path(data_dir) / "train.csv")
    segmenter = None
    if checkpoint is not None:
        from model.engines.torch import Segmenter, choose_runtime

        segmenter = Segmenter.load(checkpoint, runtime=choose_runtime("cpu", precision="fp32"))
    groups = []
    for case_day, files in index_scans(data_dir).items():
        if case_days and case_day not in case_days:
            continue
        voxels = read_scan(files)
        group = (voxels, organ_masks(read_scan_masks(truth_csv, files)))
        if segmenter is not None:
            segmentation = segmenter.segment_scan(voxels, keep_probabilities=True)
            segmentation.run()
            group += (segmentation.organ_masks, segmentation.probabilities)
        groups.append(group)
    if not groups:
        raise SystemExit(f"no scans of {list(case_days or [])} under {data_dir}/train")
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.clicks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="the Kaggle layout: train.csv and train/caseN/...")
    parser.add_argument("--out", type=Path, required=True, help="folder for click_refiner.safetensors and .json")
    parser.add_argument("--case-days", nargs="*", help="train on these case-days only (all are held in memory)")
    parser.add_argument("--checkpoint", type=Path,
                        help="a segmentation checkpoint not trained on these case-days: its errors become examples")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--examples", type=int, default=12000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    groups = kaggle_groups(args.data_dir, args.case_days, args.checkpoint)
    print(fit(groups, args.out, steps=args.steps, seed=args.seed, n_examples=args.examples))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
