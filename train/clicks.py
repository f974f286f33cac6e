"""Train the click refiner (``model/engines/click_refiner.py``) on simulated reviewers' clicks, with PyTorch Lightning.

    python -m train.clicks --data-dir DATA --out DIR [--steps 3000] [--seed 0] [--case-days case1_day0 ...]
                           [--synthetic-steps 3000] [--own-click-steps 1500 [--own-click-rounds 2]] [--init DIR]

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

Pretraining (``--synthetic-steps``, :func:`pretrain`): the same examples drawn on synthetic slices made from
label maps alone (:func:`synthetic_slice`, after SynthSeg), so the competition's ground truth of case-days whose
images one does not have still teaches the refiner organ shapes; then training on the real slices starts from
there (measured in ``docs/correct.md``).

Training on its own clicks (``--own-click-steps``, :func:`fit_on_own_clicks`): one round of iterative training,
the trained refiner's own corrections giving the states half the examples start from; ``--own-click-rounds``
runs more, each round on the clicks of the refiner the one before made.
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
        mask, probability, earlier = _spoiled_truth(truth, others_truth, body, rng)
    drawn = _newest_click(mask, truth, probability, rng)
    if drawn is None:
        return None
    return image, drawn[1], mask, earlier + [drawn[0]], truth


def _spoiled_truth(truth: np.ndarray, others: np.ndarray, body: np.ndarray, rng: np.random.Generator) -> tuple:
    """``truth`` spoiled (:func:`spoil`), a probability blurred from the spoiled mask, and earlier clicks it obeys."""
    mask = spoil(truth, others, body, rng)
    probability = ndimage.gaussian_filter(mask.astype(np.float32), 2.0) * rng.uniform(0.5, 1.0)
    return mask, probability, _earlier_clicks(mask, truth, rng)


def _newest_click(mask: np.ndarray, truth: np.ndarray, probability: np.ndarray | None, rng: np.random.Generator) -> tuple | None:
    """The click to learn from and the probability the example shows (none, 15 % of the time), or ``None``
    when the mask has too little to fix."""
    if (mask ^ truth).sum() < 10:
        return None
    first = _click(mask, truth, rng)
    if first is None:
        return None
    return first, None if rng.random() < 0.15 else probability


def examples(groups: Sequence[tuple], n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` simulated examples: inputs ``(n, 5, WINDOW, WINDOW) float16`` and targets ``(n, WINDOW, WINDOW) bool``.

    ``groups``: (slices ``(N, H, W)``, truth ``(O, N, H, W) bool``), optionally followed by a segmentation
    model's masks ``(O, N, H, W) bool`` and probabilities ``(O, N, H, W)`` of those slices (a model that was not
    trained on them), at the scans' own pixel size.
    """
    rng = np.random.default_rng(seed)
    stretched = [np.stack([normalize_intensity(s) for s in group[0]]) for group in groups]

    def draw():
        g = int(rng.integers(len(groups)))
        return _example(groups[g], rng, stretched[g])

    return _encoded(draw, n)


def _encoded(draw, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` examples from ``draw()`` (a ``(slice, probability, mask, clicks, truth)`` or ``None`` to draw again),
    encoded in the click's window: inputs ``(n, 5, WINDOW, WINDOW) float16``, targets ``(n, WINDOW, WINDOW) bool``."""
    x = np.zeros((n, len(click_refiner.CHANNELS), click_refiner.WINDOW, click_refiner.WINDOW), dtype=np.float16)
    y = np.zeros((n, click_refiner.WINDOW, click_refiner.WINDOW), dtype=bool)
    made = 0
    while made < n:
        drawn = draw()
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
        steps = self.hparams.steps
        # A tenth of the steps warms up, at least two from 4 steps on: torch's OneCycleLR divides by zero when the
        # warm-up ends on its first step (10 steps at 0.1 did).
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.hparams.lr, total_steps=steps,
                                                       pct_start=max(0.1, 2 / steps) if steps >= 4 else 0.1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def fit(groups: Sequence[tuple[np.ndarray, np.ndarray]], out: Path, steps: int = 3000, seed: int = 0,
        n_examples: int = 12000, batch_size: int = 16, accelerator: str = "auto", init: Path | None = None) -> Path:
    """Train a click refiner on ``groups`` and save it into ``out``; returns ``out``. ``init``: a saved refiner
    to start from (one pretrained on synthetic slices, :func:`pretrain`) instead of random weights."""
    L.seed_everything(seed, workers=True)
    return _fit_examples(*examples(groups, n_examples, seed), out, steps, seed, batch_size, accelerator, init)


def _fit_examples(x: np.ndarray, y: np.ndarray, out: Path, steps: int, seed: int, batch_size: int, accelerator: str,
                  init: Path | None = None) -> Path:
    L.seed_everything(seed, workers=True)
    data = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True)
    module = ClickRefinerModule(steps=steps)
    if init is not None:
        module.net.load_state_dict(click_refiner.load(init).state_dict())
    trainer = L.Trainer(max_steps=steps, accelerator=accelerator, devices=1, precision="32-true", logger=False,
                        enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=False, deterministic=True)
    trainer.fit(module, loader)
    return click_refiner.save(module.net.cpu().eval(), out)


# --------------------------------------------------------------------------- training on the refiner's own clicks


def own_click_examples(groups: Sequence[tuple], refiner: click_refiner.ClickRefiner, n: int,
                       seed: int = 0, maps: Sequence[np.ndarray] = ()) -> tuple[np.ndarray, np.ndarray]:
    """``n`` examples in the states a trained ``refiner`` leaves behind, shaped as :func:`examples`'.

    One round of iterative training (RITM, Sofiiuk et al. 2022): an example is drawn as :func:`examples` draws
    one, then ``refiner`` takes its click and 0-3 more of the simulated reviewer's, each on the mask the one
    before left; the example is the next click on the mask the refiner made. :func:`examples` shows earlier
    clicks that set their region right; a person's second click lands on what the refiner really left (a
    rim, half a loop, a click it ignored), and these examples teach that. With label ``maps``, half the
    examples start on synthetic slices drawn from them (:func:`_synthetic_example`) instead: far more organ
    shapes than the real slices hold."""
    rng = np.random.default_rng(seed)
    stretched = [np.stack([normalize_intensity(s) for s in group[0]]) for group in groups]

    def draw():
        if len(maps) and rng.random() < 0.5:
            drawn = _synthetic_example(maps[int(rng.integers(len(maps)))], rng)
        else:
            g = int(rng.integers(len(groups)))
            drawn = _example(groups[g], rng, stretched[g])
        if drawn is None:
            return None
        image, probability, mask, clicks, truth = drawn
        for _ in range(int(rng.integers(1, 5))):
            mask = click_refiner.refine(refiner, image, probability, mask, clicks)
            after = _click(mask, truth, rng) if (mask ^ truth).sum() >= 10 else None
            if after is None:
                return None
            clicks = clicks + [after]
        return image, probability, mask, clicks, truth

    return _encoded(draw, n)


def fit_on_own_clicks(groups: Sequence[tuple], init: Path, out: Path, steps: int = 1500, seed: int = 0,
                      n_examples: int = 12000, batch_size: int = 16, accelerator: str = "auto",
                      maps: Sequence[np.ndarray] = ()) -> Path:
    """Train the refiner saved in ``init`` on as many of its own clicks' examples (:func:`own_click_examples`,
    half of them on synthetic slices when label ``maps`` are given) as fresh ones (:func:`examples`), starting
    from its weights, and save it into ``out``; returns ``out``."""
    L.seed_everything(seed, workers=True)
    own = own_click_examples(groups, click_refiner.load(init), n_examples // 2, seed + 2, maps)
    fresh = examples(groups, n_examples - n_examples // 2, seed + 3)
    x, y = (np.concatenate(pair) for pair in zip(own, fresh))
    return _fit_examples(x, y, out, steps, seed, batch_size, accelerator, init)


# --------------------------------------------------------------------------- pretraining on synthetic slices


def label_maps(labels_csv: Path, shapes: dict[str, tuple[int, int]], case_days: Sequence[str], every: int = 2) -> list[np.ndarray]:
    """The label maps ``(O, H, W) bool`` of every ``every``-th slice (by slice number) that holds an organ, of
    ``case_days`` in a ``train.csv`` (``.gz`` too), ``shapes`` ``{case_day: (H, W)}``. No images needed."""
    from model.rle import RleCsv

    truth = RleCsv(labels_csv, case_days)
    maps = []
    for case_day in truth.case_days:
        volume = truth.volume(case_day, shapes[case_day])
        for d, number in enumerate(volume.slice_numbers):
            if number % every == 0 and volume.masks[:, d].any():
                maps.append(volume.masks[:, d].copy())
    return maps


def synthetic_body(maps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(H, W) bool``: a body for a label map, an ellipse about the slice's middle grown to hold every organ."""
    _, h, w = maps.shape
    cy, cx = h / 2 + rng.normal(0, h * 0.03), w / 2 + rng.normal(0, w * 0.03)
    ry, rx = h * rng.uniform(0.3, 0.45), w * rng.uniform(0.38, 0.48)
    rr, cc = np.ogrid[:h, :w]
    body = ((rr - cy) / ry) ** 2 + ((cc - cx) / rx) ** 2 <= 1
    return body | ndimage.binary_dilation(maps.any(axis=0), iterations=int(rng.integers(3, 12)))


def synthetic_slice(maps: np.ndarray, body: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A synthetic stretched slice ``(H, W) float32`` in 0..255 drawn from a label map alone (SynthSeg's idea,
    Billot et al. 2023): the body split into random regions of random intensity (the tissues around the
    organs, some as bright or dark as an organ), each organ piece its own random intensity (bowel loops
    differ) or one for the whole organ, dark walls between regions, then texture, blur, noise, a bias field
    and a random gamma. The network so learns shapes and edges, not one scanner's contrast."""
    n_organs, h, w = maps.shape
    k, sigma = int(rng.integers(6, 16)), rng.uniform(3, 12)
    regions = np.stack([ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma) for _ in range(k)]).argmax(axis=0)
    image = np.where(body, rng.uniform(0, 1, k)[regions], rng.uniform(0, 0.08))
    for o in range(n_organs):
        pieces, n = ndimage.label(maps[o])
        if n:
            image = np.where(maps[o], rng.uniform(0, 1) if rng.random() < 0.4 else rng.uniform(0, 1, n + 1)[pieces], image)
    if rng.random() < 0.6:
        walls = ndimage.morphological_gradient(regions, size=2) > 0
        for o in range(n_organs):
            walls |= ndimage.morphological_gradient(ndimage.label(maps[o])[0], size=2) > 0
        image = np.where(walls & body & (rng.random((h, w)) < 0.8), image * rng.uniform(0.2, 0.8), image)
    image = image + ndimage.gaussian_filter(rng.standard_normal((h, w)), rng.uniform(1, 3)) * rng.uniform(0, 0.08)
    image = ndimage.gaussian_filter(image, rng.uniform(0.3, 1.2)) + rng.standard_normal((h, w)) * rng.uniform(0, 0.05)
    bias = ndimage.zoom(rng.normal(0, 0.25, (4, 4)), (h / 4, w / 4), order=3)[:h, :w]
    image = np.clip(image, 0, None) * np.exp(bias)
    image = np.clip(image / max(np.percentile(image, 99.5), 1e-6), 0, 1) ** rng.uniform(0.6, 1.6)
    return (255 * image).astype(np.float32)


def _synthetic_example(maps: np.ndarray, rng: np.random.Generator) -> tuple | None:
    """One ``(slice, probability, mask, clicks, truth)`` from a label map, as :func:`_example` draws a spoiled
    truth; the slice is drawn only around the click (the window and a margin), the rest left black."""
    o = int(rng.integers(maps.shape[0]))
    truth = maps[o]
    if truth.sum() < 30 and rng.random() < 0.8:
        return None
    body = synthetic_body(maps, rng)
    mask, probability, earlier = _spoiled_truth(truth, np.delete(maps, o, axis=0).any(axis=0), body, rng)
    drawn = _newest_click(mask, truth, probability, rng)
    if drawn is None:
        return None
    first, probability = drawn
    half = click_refiner.WINDOW // 2 + 8
    r0, c0 = max(first[0] - half, 0), max(first[1] - half, 0)
    r1, c1 = min(first[0] + half, truth.shape[0]), min(first[1] + half, truth.shape[1])
    image = np.zeros(truth.shape, dtype=np.float32)
    image[r0:r1, c0:c1] = synthetic_slice(maps[:, r0:r1, c0:c1], body[r0:r1, c0:c1], rng)
    return image, probability, mask, earlier + [first], truth


def synthetic_examples(maps: Sequence[np.ndarray], n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``n`` examples drawn from label maps alone (:func:`synthetic_slice`), shaped as :func:`examples`'."""
    rng = np.random.default_rng(seed)
    return _encoded(lambda: _synthetic_example(maps[int(rng.integers(len(maps)))], rng), n)


def pretrain(maps: Sequence[np.ndarray], out: Path, steps: int = 3000, seed: int = 0, n_examples: int = 24000,
             batch_size: int = 16, accelerator: str = "auto", init: Path | None = None) -> Path:
    """Train a click refiner on synthetic slices drawn from label maps (:func:`synthetic_examples`) and save it
    into ``out``: the start for :func:`fit` (``init=out``) on real slices. Returns ``out``."""
    return _fit_examples(*synthetic_examples(maps, n_examples, seed + 1), out, steps, seed, batch_size, accelerator, init)


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
    parser.add_argument("--init", type=Path, help="start from this saved click refiner instead of random weights")
    parser.add_argument("--own-click-steps", type=int, default=0,
                        help="then train this many more steps on the refiner's own clicks (half the examples; the "
                             "first refiner is kept in OUT/first)")
    parser.add_argument("--own-click-rounds", type=int, default=1,
                        help="rounds of --own-click-steps, each on the clicks of the refiner the round before made, "
                             "with new examples (seed SEED + round - 1); all but the last kept in OUT/roundN")
    parser.add_argument("--synthetic-steps", type=int, default=0,
                        help="first pretrain this many steps on synthetic slices drawn from the case-days' label "
                             "maps (saved in OUT/synthetic), then train on the real slices from there")
    args = parser.parse_args(argv)
    if args.own_click_rounds < 1:
        parser.error(f"--own-click-rounds must be at least 1; got {args.own_click_rounds}")
    groups = kaggle_groups(args.data_dir, args.case_days, args.checkpoint)
    init = args.init
    if args.synthetic_steps:
        maps = [truth[:, d] for _, truth, *_ in groups for d in range(0, truth.shape[1], 2) if truth[:, d].any()]
        init = pretrain(maps, args.out / "synthetic", steps=args.synthetic_steps, seed=args.seed,
                        n_examples=2 * args.examples, init=init)
    first = args.out / "first" if args.own_click_steps else args.out
    out = fit(groups, first, steps=args.steps, seed=args.seed, n_examples=args.examples, init=init)
    for r in range(args.own_click_rounds if args.own_click_steps else 0):
        last = r == args.own_click_rounds - 1
        out = fit_on_own_clicks(groups, out, args.out if last else args.out / f"round{r + 1}",
                                steps=args.own_click_steps, seed=args.seed + r, n_examples=args.examples)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
