"""A simulated reviewer correcting a model's masks with clicks; writes docs/correct.json.

    nice -n 10 python -m benchmarks.reviewer [--data ../shared/data] [--steps 1500] [--volumes case139_day0 ...]
        [--correctors click_refiner_own_clicks interactive ...] [--no-scan] [--scan-corrector NAME] [--propagation] [--out FILE]
    python -m benchmarks.reviewer --merge A.json B.json --out docs/correct.json   # pool runs on other volumes
    python -m benchmarks.reviewer --table docs/correct.json                       # docs/correct.md's tables
    python -m benchmarks.reviewer --ship-refiner model/weights/click_refiner      # the app's click refiner

The protocol of the interactive-segmentation literature (issue #24, section 4), on the three shared
real volumes with real labels, each segmented by a check model trained without it
(``docs/review_validation.py``'s seeded recipe; checkpoints and predictions are cached in
``benchmarks/.cache/reviewer``):

- **Per slice-organ.** Every wrong slice-organ (Dice < 0.8, >= 50 px in truth or prediction) is
  corrected from the model's mask. The next click goes at the pixel farthest inside the largest error
  region (missed pixels: a positive click; extra pixels: a negative one), until Dice >= 0.85 or 10 clicks.
  Reported: the share fixed within 1, 3 and 5 clicks, NoC@85 (11 for never) and the time per click.
- **Per organ, the whole scan.** Until the organ's volume Dice >= 0.85, or 300 clicks: take the slice
  with the most error pixels (among slices not yet visited), click on it as above until it reaches
  0.85 or 10 clicks (none when it is already there), then (with propagation, when it took clicks and holds
  the organ, or the model drew it there: a removal is carried too) propagate from it, told the model's mask
  there and, as the page tells it, the slices already clicked (``kept``: it does not change them, and carries
  on past them). The proposal is accepted only when it raises the organ's volume Dice (the person looks at
  the proposed slices and accepts or undoes them). Reported: the clicks, with propagation and slice by slice.
- **Propagation against a known answer** (no clicks): for every third wrong slice-organ, the slice is set
  to its truth (a perfect correction) and propagated from, told the model's mask there as the page does,
  and without it (the whole mask re-proposed); reported: the mean Dice with the truth of the slices 1 to 4
  away, against the model's and a plain copy of the corrected slice, and how often it draws on a slice past
  the organ's end (:func:`propagation_quality`).
- **The one-region bound** (no corrector): per wrong slice-organ, the error regions that must be set right,
  largest first and wholly, to reach 0.85 (:func:`regions_to_fix`), in each volume's record.

Each corrector is run the same way: ``model.interactive.click`` (training-free), the baseline (scikit-image's
random walker seeded by the clicks, the eroded mask and the other organs), both in :data:`CORRECTORS`, and
``click_refiner``: ``model.interactive.click`` with a learned click refiner (``train/clicks.py``) trained for each
volume without it. Its real-error examples come from nested check models: the fold that holds volume C out
trains on A and B, with A segmented by a check model trained on B alone and B by one trained on A alone
(:func:`training_predictions`), so C's labels reach it by no path; ``click_refiner_pretrained`` starts from a
refiner pretrained on synthetic slices (:func:`synthetic_refiner`), and ``click_refiner_own_clicks`` is that
one trained further on its own clicks (``train.clicks.fit_on_own_clicks``; :data:`REFINERS` lists the variants
measured beside it). The whole-scan part runs one corrector
(``--scan-corrector``; by default ``interactive``, the training-free one).

``--ship-refiner DIR`` writes the click refiner the app uses by default (:func:`ship_refiner`).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "docs"))

import review_validation  # noqa: E402  (docs/review_validation.py: the data and the check models, reused)

from model import interactive, labels  # noqa: E402
from model.image import normalize_intensity  # noqa: E402

CACHE = REPO / "benchmarks" / ".cache" / "reviewer"
OUT = REPO / "docs" / "correct.json"
MAX_RIGHT_DICE, MIN_WRONG_PX = 0.8, 50
TARGET_DICE, MAX_CLICKS, NEVER = 0.85, 10, 11
MAX_SCAN_CLICKS = 300
#: The propagation reach of the runs recorded before the JSON named it (``protocol.propagate_reach_slices``).
UNRECORDED_REACH = 8


def _predicted(data: Path, steps: int, trained_on: list[str], volume: str, labelled: dict) -> tuple[np.ndarray, np.ndarray]:
    """``volume``'s masks ``(O, D, H, W) bool`` and probabilities ``(O, D, H, W) float16`` from a check model
    trained on the pairs and the volumes ``trained_on`` (cached)."""
    others = sorted(c for c in labelled if c not in trained_on)
    checkpoint = CACHE / f"steps{steps}" / "_".join(f"without_{c}" for c in others)
    if not (checkpoint / "config.json").exists():
        start = time.perf_counter()
        groups = [review_validation.labelled_pairs(data)] + [(s.voxels, t) for c, (s, t) in labelled.items() if c in trained_on]
        review_validation.train(groups, checkpoint, steps)
        (checkpoint / "train_minutes.txt").write_text(f"{(time.perf_counter() - start) / 60:.1f}\n")
        print(f"trained on {trained_on} in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    cached = checkpoint / f"prediction_{volume}.npz"
    if not cached.exists():
        masks, probabilities, _ = review_validation.segment(checkpoint, labelled[volume][0].voxels)
        np.savez_compressed(cached, masks=masks, probabilities=probabilities)
    with np.load(cached) as f:
        return f["masks"], f["probabilities"]


def held_out_predictions(data: Path, steps: int, volumes: list[str] | None = None) -> dict:
    """``{case_day: (Scan, truth (O, D, H, W) bool, masks (O, D, H, W) bool, probabilities (O, D, H, W) float16)}``.

    Each volume is segmented by a check model trained without it; checkpoints and predictions are cached.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    labelled = review_validation.labelled_volumes(data, CACHE)
    return {held: (scan, truth, *_predicted(data, steps, [c for c in labelled if c != held], held, labelled))
            for held, (scan, truth) in labelled.items() if volumes is None or held in volumes}


def training_predictions(data: Path, steps: int, held: str) -> list[tuple]:
    """The click refiner's training volumes for the fold that holds ``held`` out: every other labelled volume as
    ``(slices, truth, masks, probabilities)``, segmented by a check model trained on neither it nor ``held``
    (nested: so the refiner learns from real models' errors without ever seeing ``held``'s labels)."""
    labelled = review_validation.labelled_volumes(data, CACHE)
    training = [c for c in labelled if c != held]
    return [(labelled[c][0].voxels, labelled[c][1], *_predicted(data, steps, [t for t in training if t != c], c, labelled))
            for c in training]


# --------------------------------------------------------------------------- correctors


def random_walker_baseline(image, probability, mask, clicks, others=None) -> np.ndarray:
    """The issue's brush-free baseline: scikit-image's random walker on the whole slice, seeded by the clicks
    (discs of 2 px: positive as organ, negative as not), the mask eroded by 3 px (organ), the other organs
    and the slice's border (not organ). ``probability`` is not used."""
    from skimage.segmentation import random_walker

    image, _, mask, others = interactive._check_slice_inputs(image, None, mask, others)
    clicks = interactive._check_clicks(clicks, image.shape)
    if not clicks:
        return mask.copy()
    seeds = np.zeros(image.shape, dtype=np.int32)
    seeds[ndimage.binary_erosion(mask, iterations=3)] = 1
    border = np.ones(image.shape, dtype=bool)
    border[1:-1, 1:-1] = False
    seeds[border] = 2
    if others is not None:
        seeds[others] = 2
    for row, col, positive in clicks:
        seeds[interactive._disc(image.shape, row, col, 2)] = 1 if positive else 2
    if not (seeds == 1).any():
        return np.zeros(image.shape, dtype=bool)
    return random_walker(normalize_intensity(image) / 255.0, seeds, beta=130, mode="cg_j", tol=1e-3) == 1


CORRECTORS = {"interactive": interactive.click, "random_walker_baseline": random_walker_baseline}
#: The learned corrector: ``model.interactive.click`` with a click refiner trained without the volume it corrects.
REFINER = "click_refiner"
REFINER_STEPS, REFINER_EXAMPLES = 3000, 12000
#: The click refiner pretrained on synthetic slices, then fine-tuned on each fold's real ones.
PRETRAINED = "click_refiner_pretrained"
PRETRAIN_STEPS, PRETRAIN_EXAMPLES, PRETRAIN_CASE_DAYS, FINETUNE_STEPS = 3000, 24000, 150, 1500
#: The pretrained refiner after one round of training on its own clicks (``train.clicks.fit_on_own_clicks``).
OWN_CLICKS = "click_refiner_own_clicks"
OWN_CLICK_STEPS = 1500
#: A second round: that one trained :data:`OWN_CLICK_STEPS` more on its own clicks (RITM trains several rounds).
OWN_CLICKS_2 = "click_refiner_own_clicks_2"
#: The control for :data:`OWN_CLICKS`: the pretrained refiner trained as many more steps on fresh examples only (seed
#: 3: the 6,000 fresh examples :data:`OWN_CLICKS` saw, and 6,000 more in place of its own clicks' ones), so the gain
#: of training on its own clicks is told apart from that of training longer.
MORE_STEPS = "click_refiner_more_steps"
#: :data:`OWN_CLICKS` with half its own clicks' examples on synthetic slices, drawn from the pretraining's label maps
#: (:func:`synthetic_maps`): the own-click states on far more organ shapes than the fold's two real volumes hold.
OWN_CLICKS_SYNTHETIC = "click_refiner_own_clicks_synthetic"
REFINERS = (REFINER, PRETRAINED, OWN_CLICKS, OWN_CLICKS_2, MORE_STEPS, OWN_CLICKS_SYNTHETIC)


def refiner_groups(data: Path, steps: int, held: str) -> list[tuple]:
    """The click refiner's training data for the fold holding ``held`` out: the pairs, brought back to about the
    scans' pixel size (their publisher upscaled them to 512 x 512), and the other labelled volumes with the output
    of a check model trained on neither them nor ``held`` (:func:`training_predictions`)."""
    slices, truth = review_validation.labelled_pairs(data)
    return [(slices[:, ::2, ::2], truth[:, :, ::2, ::2])] + training_predictions(data, steps, held)


def refiner_corrector(data: Path, steps: int, held: str, kind: str = REFINER):
    """``model.interactive.click`` with a click refiner of ``kind`` trained without ``held`` (:func:`trained_refiner`)."""
    from functools import partial

    from model.engines import click_refiner

    return partial(interactive.click, refiner=click_refiner.load(trained_refiner(data, steps, held, kind)))


def trained_refiner(data: Path, steps: int, held: str, kind: str = REFINER) -> Path:
    """The folder of a click refiner trained without ``held`` (trained once, cached). ``kind`` (one of
    :data:`REFINERS`): :data:`REFINER` from random weights; :data:`PRETRAINED` started from
    :func:`synthetic_refiner` and fine-tuned for :data:`FINETUNE_STEPS`; :data:`OWN_CLICKS` that one trained
    :data:`OWN_CLICK_STEPS` more on its own clicks; :data:`OWN_CLICKS_2` that one one round more (seed 1, so its
    examples are new ones); :data:`MORE_STEPS` the pretrained one trained as long on fresh examples only;
    :data:`OWN_CLICKS_SYNTHETIC` as :data:`OWN_CLICKS`, half its own clicks on synthetic slices."""
    from model.engines import click_refiner
    from train import clicks

    name = {REFINER: f"refiner{REFINER_STEPS}", PRETRAINED: f"refiner_pretrained{FINETUNE_STEPS}",
            OWN_CLICKS: f"refiner_pretrained{FINETUNE_STEPS}_own_clicks{OWN_CLICK_STEPS}",
            OWN_CLICKS_2: f"refiner_pretrained{FINETUNE_STEPS}_own_clicks{OWN_CLICK_STEPS}x2",
            MORE_STEPS: f"refiner_pretrained{FINETUNE_STEPS}_more{OWN_CLICK_STEPS}",
            OWN_CLICKS_SYNTHETIC: f"refiner_pretrained{FINETUNE_STEPS}_own_clicks{OWN_CLICK_STEPS}_synthetic"}[kind]
    folder = CACHE / f"steps{steps}" / f"{name}_without_{held}"
    if click_refiner.available(folder):
        return folder
    # what it starts from first: its minutes are its own
    init = (None if kind == REFINER else synthetic_refiner(data) if kind == PRETRAINED
            else trained_refiner(data, steps, held, OWN_CLICKS if kind == OWN_CLICKS_2 else PRETRAINED))
    start = time.perf_counter()
    with _all_threads():
        groups = refiner_groups(data, steps, held)
        if kind in (OWN_CLICKS, OWN_CLICKS_2, OWN_CLICKS_SYNTHETIC):
            clicks.fit_on_own_clicks(groups, init, folder, steps=OWN_CLICK_STEPS, n_examples=REFINER_EXAMPLES,
                                     seed=1 if kind == OWN_CLICKS_2 else 0,
                                     maps=synthetic_maps(data)[1] if kind == OWN_CLICKS_SYNTHETIC else ())
        else:
            clicks.fit(groups, folder, n_examples=REFINER_EXAMPLES, init=init, seed=3 if kind == MORE_STEPS else 0,
                       steps={PRETRAINED: FINETUNE_STEPS, MORE_STEPS: OWN_CLICK_STEPS}.get(kind, REFINER_STEPS))
    (folder / "train_minutes.txt").write_text(f"{(time.perf_counter() - start) / 60:.1f}\n")
    return folder


#: The click refiner the app ships (``model/weights/click_refiner``, :func:`ship_refiner`): the
#: :data:`OWN_CLICKS` recipe's fold that holds out case47_day29, the volume never used for tuning, so the
#: refiner the app uses has measured held-out numbers (its row of the per-volume table).
SHIPPED_KIND, SHIPPED_HELD = OWN_CLICKS, "case47_day29"


def ship_refiner(data: Path, steps: int, out: Path, command: str) -> dict:
    """Copy the :data:`SHIPPED_KIND` refiner trained without :data:`SHIPPED_HELD` (:func:`trained_refiner`:
    cached, or trained here) into ``out`` with a ``provenance.json`` (recipe, data, the weights' sha256)."""
    import hashlib
    import shutil

    from model.engines import click_refiner

    folder = trained_refiner(data, steps, SHIPPED_HELD, SHIPPED_KIND)
    out.mkdir(parents=True, exist_ok=True)
    for name in (click_refiner.WEIGHTS, click_refiner.CONFIG):
        shutil.copyfile(folder / name, out / name)
    minutes = folder / "train_minutes.txt"
    provenance = {
        "command": command,
        "recipe": SHIPPED_KIND,
        "held_out": SHIPPED_HELD,
        "trained_on": ["the 21 labelled slices (halved)"] + [c for c in review_validation.labelled_volumes(data, CACHE)
                                                             if c != SHIPPED_HELD],
        "pretrained_on": f"synthetic slices of {PRETRAIN_CASE_DAYS} case-days' label maps (benchmarks.reviewer.synthetic_maps)",
        "check_model_steps": steps,
        "own_click_round_minutes": float(minutes.read_text()) if minutes.exists() else None,
        "sha256": hashlib.sha256((out / click_refiner.WEIGHTS).read_bytes()).hexdigest(),
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
    return provenance


def synthetic_refiner(data: Path) -> Path:
    """A click refiner trained on synthetic slices drawn from label maps alone (``train.clicks.pretrain``): every
    other slice holding an organ of :data:`PRETRAIN_CASE_DAYS` case-days of the competition's ground truth
    (``kaggle/train.csv.gz``), drawn at random from those of patients other than the labelled volumes' (so it
    never saw a held-out patient, and one serves every fold). Trained once, cached."""
    from model.engines import click_refiner
    from train import clicks

    folder = CACHE / f"synthetic{PRETRAIN_STEPS}"
    if not click_refiner.available(folder):
        start = time.perf_counter()
        chosen, maps = synthetic_maps(data)
        with _all_threads():
            clicks.pretrain(maps, folder, steps=PRETRAIN_STEPS, n_examples=PRETRAIN_EXAMPLES)
        (folder / "train_minutes.txt").write_text(f"{(time.perf_counter() - start) / 60:.1f}\n")
        (folder / "case_days.txt").write_text("\n".join(chosen) + "\n")
    return folder


def synthetic_maps(data: Path) -> tuple[list[str], list[np.ndarray]]:
    """The case-days the synthetic pretraining draws from and their label maps (``train.clicks.label_maps``):
    :data:`PRETRAIN_CASE_DAYS` of the competition's ground truth, drawn at random (seed 0) from those of patients
    other than the labelled volumes'."""
    from train import clicks

    with open(data / "kaggle" / "volumes.csv", newline="") as f:
        shapes = {row["case_day"]: (int(row["height"]), int(row["width"])) for row in csv.DictReader(f)}
    held_patients = {c.split("_")[0] for c in review_validation.labelled_volumes(data, CACHE)}
    days = sorted(d for d in shapes if d.split("_")[0] not in held_patients)
    chosen = list(np.random.default_rng(0).choice(days, size=min(PRETRAIN_CASE_DAYS, len(days)), replace=False))
    return chosen, clicks.label_maps(data / "kaggle" / "train.csv.gz", shapes, chosen)


@contextmanager
def _all_threads():
    """Training uses every core; the clicks are timed on one thread (``main``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- the simulated reviewer


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean arrays; 1.0 when both are empty (model/metric.py's rule)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def correct_slice(corrector, image, probability, mask, truth, others, max_clicks=MAX_CLICKS, target=TARGET_DICE):
    """Click until Dice >= target or ``max_clicks``: ``(clicks used or None, final mask, seconds per click,
    clicks)``, each click ``(positive, share of its error region the click left right)``. A slice already at
    the target takes no click (a person does not click on a slice that is right)."""
    clicks, seconds, current, effect = [], [], mask, []
    if dice(mask, truth) >= target:
        return 0, mask, seconds, effect
    for n in range(1, max_clicks + 1):
        row, col, positive = click = interactive.simulated_click(current, truth)
        clicks.append(click)
        regions, _ = ndimage.label((truth & ~current) if positive else (current & ~truth))
        region = regions == regions[row, col]
        start = time.perf_counter()
        current = corrector(image, probability, mask, clicks, others)
        seconds.append(time.perf_counter() - start)
        effect.append((positive, float((current == truth)[region].mean())))
        if dice(current, truth) >= target:
            return n, current, seconds, effect
    return None, current, seconds, effect


def regions_to_fix(mask: np.ndarray, truth: np.ndarray, target: float = TARGET_DICE) -> int:
    """How many of the error regions (connected missed or extra pixels) must be set right, largest first and
    wholly, for ``mask`` to reach Dice ``target`` with ``truth``: the clicks a corrector would need that set
    right the whole region under each click, and nothing else (a bound on what one-region clicks can do)."""
    current = mask.copy()
    regions, _ = ndimage.label(mask ^ truth)
    order = np.argsort(-np.bincount(regions.ravel())[1:], kind="stable") + 1
    fixed = 0
    while dice(current, truth) < target:
        region = regions == order[fixed]
        current[region] = truth[region]
        fixed += 1
    return fixed


def error_kind(mask: np.ndarray, truth: np.ndarray) -> str:
    """``missed`` (the model drew under 10 px of the organ), ``invented`` (the truth has under 10 px) or ``partial``."""
    return "missed" if mask.sum() < 10 else "invented" if truth.sum() < 10 else "partial"


def wrong_slice_organs(masks: np.ndarray, truth: np.ndarray) -> list[tuple[int, int]]:
    """``(organ, slice)`` pairs wrong by issue #24's definition (Dice < 0.8, >= 50 px in truth or prediction)."""
    wrong = []
    for o in range(masks.shape[0]):
        for d in range(masks.shape[1]):
            if max(masks[o, d].sum(), truth[o, d].sum()) >= MIN_WRONG_PX and dice(masks[o, d], truth[o, d]) < MAX_RIGHT_DICE:
                wrong.append((o, d))
    return wrong


def per_slice_organ(volumes: dict, corrector) -> dict:
    """The per-slice-organ table's row for one corrector (a function, or ``{case_day: function}``); it keeps each slice-organ's NoC and kind and each
    click's ms and effect, so runs on different volumes pool (``--merge``)."""
    noc, organs, ms, kinds, effects, per_volume = [], [], [], [], [], {}
    for case_day, (scan, truth, masks, probabilities) in volumes.items():
        first = len(noc)
        fix = corrector[case_day] if isinstance(corrector, dict) else corrector
        for o, d in wrong_slice_organs(masks, truth):
            others = np.delete(masks[:, d], o, axis=0).any(axis=0)
            used, _, took, effect = correct_slice(fix, scan.voxels[d], probabilities[o, d].astype(np.float32),
                                                  masks[o, d], truth[o, d], others)
            noc.append(NEVER if used is None else used)
            organs.append(labels.ORGANS[o])
            kinds.append(error_kind(masks[o, d], truth[o, d]))
            ms.extend(round(1000 * t, 1) for t in took)
            effects.extend([int(positive), round(share, 3)] for positive, share in effect)
        per_volume[case_day] = volume_summary(noc[first:])
    return summarise(noc, organs, ms, kinds, effects) | {"per_volume": per_volume}


def volume_summary(noc: list[int]) -> dict:
    """One volume's line of the per-volume table: how many wrong slice-organs, the shares fixed within 1, 3, 5
    and 10 clicks, and NoC@85."""
    n = np.array(noc)
    return {"wrong_slice_organs": int(n.size), **{f"fixed_within_{k}": round(float((n <= k).mean()), 3) for k in (1, 3, 5, 10)},
            "noc85_mean": round(float(n.mean()), 2)}


def summarise(noc: list[int], organs: list[str], ms: list[float], kinds: list[str] | None = None,
              effects: list | None = None) -> dict:
    n, organ_of = np.array(noc), np.array(organs)
    by_organ = {k: n[organ_of == k] for k in labels.ORGANS}
    row = {
        "wrong_slice_organs": int(n.size),
        "fixed_within_1": round(float((n <= 1).mean()), 3), "fixed_within_3": round(float((n <= 3).mean()), 3),
        "fixed_within_5": round(float((n <= 5).mean()), 3), "fixed_within_10": round(float((n <= 10).mean()), 3),
        "noc85_mean": round(float(n.mean()), 2),
        "noc85_mean_by_organ": {k: round(float(v.mean()), 2) if v.size else None for k, v in by_organ.items()},
        "fixed_within_5_by_organ": {k: round(float((v <= 5).mean()), 3) if v.size else None for k, v in by_organ.items()},
        "clicks": len(ms),
        "ms_per_click_median": round(float(np.median(ms)), 1),
        "ms_per_click_p95": round(float(np.percentile(ms, 95)), 1),
        "ms_per_click_max": round(float(np.max(ms)), 1),
    }
    if kinds:  # by kind of error, and how much of the error region under it one click set right
        kind_of = np.array(kinds)
        row["by_kind"] = {k: {"n": int((kind_of == k).sum()), "fixed_within_5": round(float((n[kind_of == k] <= 5).mean()), 3),
                              "noc85_mean": round(float(n[kind_of == k].mean()), 2)}
                          for k in ("missed", "invented", "partial") if (kind_of == k).any()}
    if effects:
        e = np.array(effects, dtype=float)
        row["click_region_set_right"] = {sign: {"clicks": int((e[:, 0] == v).sum()),
                                                "mean": round(float(e[e[:, 0] == v, 1].mean()), 3),
                                                "median": round(float(np.median(e[e[:, 0] == v, 1])), 3)}
                                         for sign, v in (("positive", 1), ("negative", 0)) if (e[:, 0] == v).any()}
    row |= {"noc85": [int(x) for x in noc], "organs": list(organs), "ms": list(ms)}
    if kinds:
        row |= {"kinds": list(kinds), "effects": [list(x) for x in effects or []]}
    return row


def whole_scan_by_corrector(record: dict) -> dict:
    """``{corrector: {"case_day/organ": row}}``: a record's whole-scan part (records written before there was a
    choice of corrector hold the training-free one's rows directly)."""
    rows = record.get("whole_scan", {})
    if rows and all("/" in key for key in rows):
        return {record.get("whole_scan_corrector", "interactive"): rows}
    return rows


def merge(records: list[dict]) -> dict:
    """One record pooling runs on different volumes (the per-slice-organ rows recomputed from their raw lists).
    A corrector run twice on the same volumes counts once: the later record's row. Runs under different
    protocols (another propagation reach, say) are refused: their numbers do not pool."""
    protocols = {json.dumps({"propagate_reach_slices": UNRECORDED_REACH} | r["protocol"], sort_keys=True) for r in records}
    if len(protocols) > 1:
        raise ValueError(f"these runs used different protocols and do not pool: {sorted(protocols)}")
    merged = {"command": " ; ".join(r["command"] for r in records),
              "machines": sorted({r.get("machine", "not recorded") for r in records}),
              "volumes": {}, "protocol": records[0]["protocol"], "per_slice_organ": {}, "whole_scan": {}}
    rows: dict[str, dict[tuple, dict]] = {}
    for r in records:
        merged["volumes"] |= r["volumes"]
        if r.get("propagation"):  # the latest run of the propagation part, on the volumes it names
            merged["propagation"] = r["propagation"]
        for name, rows_ in whole_scan_by_corrector(r).items():
            merged["whole_scan"].setdefault(name, {}).update(rows_)
        for name, row in r["per_slice_organ"].items():
            rows.setdefault(name, {})[tuple(sorted(r["volumes"]))] = row
    for name, by_volumes in rows.items():
        kept = list(by_volumes.values())
        with_kinds = all("kinds" in x for x in kept)
        merged["per_slice_organ"][name] = summarise(
            sum((x["noc85"] for x in kept), []), sum((x["organs"] for x in kept), []), sum((x["ms"] for x in kept), []),
            sum((x["kinds"] for x in kept), []) if with_kinds else None,
            sum((x["effects"] for x in kept), []) if with_kinds else None)
        merged["per_slice_organ"][name]["volumes"] = sorted({v for key in by_volumes for v in key})
        per_volume = {}
        for key, row in by_volumes.items():  # a run on one volume is that volume's line
            per_volume |= row.get("per_volume") or ({key[0]: volume_summary(row["noc85"])} if len(key) == 1 else {})
        if per_volume:
            merged["per_slice_organ"][name]["per_volume"] = per_volume
    return merged


def whole_organ(scan, truth, masks, probabilities, o: int, corrector, with_propagation: bool) -> dict:
    """One organ of one scan corrected by the reviewer until volume Dice >= 0.85 or 300 clicks."""
    current = masks.copy()
    visited = np.zeros(current.shape[1], dtype=bool)
    clicks = propagations = accepted = 0
    start = time.perf_counter()
    while dice(current[o], truth[o]) < TARGET_DICE and clicks < MAX_SCAN_CLICKS:
        errors = (current[o] ^ truth[o]).sum(axis=(1, 2))
        errors[visited] = 0
        if errors.max() == 0:
            break
        d = int(np.argmax(errors))
        visited[d] = True
        others = np.delete(current[:, d], o, axis=0).any(axis=0)
        budget = min(MAX_CLICKS, MAX_SCAN_CLICKS - clicks)
        used, fixed, _, _ = correct_slice(corrector, scan.voxels[d], probabilities[o, d].astype(np.float32),
                                          current[o, d], truth[o, d], others, max_clicks=budget)
        took = budget if used is None else used
        clicks += took
        current[o, d] = fixed
        # A person carries what their clicks did (not from a slice that needed no click; a removal of what the
        # model drew too), looks at the proposal and keeps it when it is better as a whole (Accept), else
        # undoes it.
        if with_propagation and took and (fixed.any() or masks[o, d].any()):
            proposed = interactive.propagate(scan.voxels, probabilities, current, o, d, before=masks[o, d],
                                             kept=np.flatnonzero(visited))  # the clicked slices stay as clicked
            changed = (proposed[o] != current[o]).any(axis=(1, 2))
            candidate = current[o].copy()
            candidate[changed] = proposed[o, changed]
            propagations += 1
            if dice(candidate, truth[o]) > dice(current[o], truth[o]):
                current[o] = candidate
                accepted += 1
    return {"clicks": int(clicks), "volume_dice": round(dice(current[o], truth[o]), 3),
            "reached": bool(dice(current[o], truth[o]) >= TARGET_DICE), "slices_visited": int(visited.sum()),
            "propagations": propagations, "propagations_accepted": accepted, "seconds": round(time.perf_counter() - start, 1)}


PROPAGATION_REACH = (1, 2, 3, 4)


def propagation_quality(volumes: dict, every: int = 3) -> dict:
    """``model.interactive.propagate`` against a known answer: every ``every``-th wrong slice-organ with at least
    ``MIN_WRONG_PX`` true pixels is set to its truth and propagated from, ``with_before`` (told the model's mask
    there, as the page does: the fix is carried) and ``whole`` (the whole mask re-proposed). Per organ and
    distance ``k``: the mean Dice with the truth on the slices ``k`` away that hold the organ, for both, for
    the model's own masks and for a plain copy of the corrected slice; and, on the slices within reach where
    the organ is absent, the share on which each draws at least ``MIN_WRONG_PX`` pixels. Seconds per call too."""
    dices: dict[tuple, list[float]] = {}
    past: dict[str, list[bool]] = {}
    seconds: list[float] = []
    for scan, truth, masks, probabilities in volumes.values():
        for o in range(truth.shape[0]):
            starts = [d for d in range(truth.shape[1]) if truth[o, d].sum() >= MIN_WRONG_PX
                      and dice(masks[o, d], truth[o, d]) < MAX_RIGHT_DICE][::every]
            for d in starts:
                corrected = masks.copy()
                corrected[o, d] = truth[o, d]
                start = time.perf_counter()
                proposals = {"with_before": interactive.propagate(scan.voxels, probabilities, corrected, o, d, before=masks[o, d])[o]}
                seconds.append(time.perf_counter() - start)
                proposals["whole"] = interactive.propagate(scan.voxels, probabilities, corrected, o, d)[o]
                proposals |= {"model": masks[o], "copy": np.broadcast_to(truth[o, d], truth[o].shape)}
                for k in PROPAGATION_REACH:
                    for n in (d - k, d + k):
                        if not 0 <= n < truth.shape[1]:
                            continue
                        for name, proposal in proposals.items():
                            if truth[o, n].sum() >= MIN_WRONG_PX:
                                dices.setdefault((labels.ORGANS[o], k, name), []).append(dice(proposal[n], truth[o, n]))
                            elif not truth[o, n].any():
                                past.setdefault(name, []).append(bool(proposal[n].sum() >= MIN_WRONG_PX))
    names = ("with_before", "whole", "copy", "model")
    return {"starts": len(seconds), "seconds_median": round(float(np.median(seconds)), 2) if seconds else None,
            "mean_dice": {organ: {str(k): {name: round(float(np.mean(dices[organ, k, name])), 3) for name in names}
                                  | {"slices": len(dices[organ, k, names[0]])}
                                  for k in PROPAGATION_REACH if (organ, k, names[0]) in dices}
                          for organ in labels.ORGANS},
            "past_the_end": {"slices": len(past.get(names[0], [])),
                             **{name: round(float(np.mean(past[name])), 3) for name in names if past.get(name)}}}


def markdown(record: dict) -> str:
    """The tables of docs/correct.md, from the JSON this script writes (``--table`` prints them)."""
    lines = ["| corrector | wrong slice-organs | fixed within 1 / 3 / 5 / 10 clicks | NoC@85 (11 = never) | NoC@85 stomach / small bowel / large bowel | ms per click: median / p95 / max |",
             "|---|---:|---|---:|---|---|"]
    for name, row in record["per_slice_organ"].items():
        by = row["noc85_mean_by_organ"]
        lines.append(f"| {name} | {row['wrong_slice_organs']} | {100 * row['fixed_within_1']:.1f} / {100 * row['fixed_within_3']:.1f} / "
                     f"{100 * row['fixed_within_5']:.1f} / {100 * row['fixed_within_10']:.1f} % | {row['noc85_mean']} | "
                     f"{by['stomach']} / {by['small_bowel']} / {by['large_bowel']} | {row['ms_per_click_median']} / "
                     f"{row['ms_per_click_p95']} / {row['ms_per_click_max']} |")
    bound = sum((v.get("regions_to_fix", []) for v in record["volumes"].values()), [])
    if bound:
        n = np.array(bound)
        lines.append(f"| one region per click (bound: each click sets right the whole error region under it, largest "
                     f"first) | {n.size} | {100 * (n <= 1).mean():.1f} / {100 * (n <= 3).mean():.1f} / "
                     f"{100 * (n <= 5).mean():.1f} / {100 * (n <= 10).mean():.1f} % | {np.minimum(n, NEVER).mean():.2f} | | |")
        per_volume = ", ".join(f"{k} {100 * (np.array(v['regions_to_fix']) <= 5).mean():.1f} %"
                               for k, v in record["volumes"].items() if v.get("regions_to_fix"))
        lines += ["", f"One-region bound, within 5 clicks, per volume: {per_volume}."]
    rows = [(name, v, line) for name, row in record["per_slice_organ"].items() for v, line in row.get("per_volume", {}).items()]
    if rows:
        lines += ["", "| corrector | volume | wrong slice-organs | fixed within 1 / 3 / 5 / 10 clicks | NoC@85 |", "|---|---|---:|---|---:|"]
        lines += [f"| {name} | {v} | {x['wrong_slice_organs']} | {100 * x['fixed_within_1']:.1f} / {100 * x['fixed_within_3']:.1f} / "
                  f"{100 * x['fixed_within_5']:.1f} / {100 * x['fixed_within_10']:.1f} % | {x['noc85_mean']} |" for name, v, x in rows]
    kinds = {name: row for name, row in record["per_slice_organ"].items() if "by_kind" in row}
    if kinds:
        lines += ["", "| corrector | kind of error | slice-organs | fixed within 5 clicks | NoC@85 |", "|---|---|---:|---:|---:|"]
        for name, row in kinds.items():
            for kind, k in row["by_kind"].items():
                lines.append(f"| {name} | {kind} | {k['n']} | {100 * k['fixed_within_5']:.1f} % | {k['noc85_mean']} |")
        lines += ["", "| corrector | click | clicks | share of its error region set right: mean / median |", "|---|---|---:|---|"]
        for name, row in kinds.items():
            for sign, e in row["click_region_set_right"].items():
                lines.append(f"| {name} | {sign} | {e['clicks']} | {e['mean']} / {e['median']} |")
    quality = record.get("propagation")
    if quality:
        lines += ["", f"Propagation from a perfectly corrected slice ({quality['starts']} starts, "
                      f"{quality['seconds_median']} s a call, median): mean Dice with the truth k slices away", "",
                  "| organ | k | slices | propagate (the fix carried) | propagate (whole mask) | copy of the corrected slice | the model |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for organ, by_k in quality["mean_dice"].items():
            lines += [f"| {organ} | {k} | {x['slices']} | {x['with_before']} | {x['whole']} | {x['copy']} | {x['model']} |"
                      for k, x in by_k.items()]
        p = quality["past_the_end"]
        lines += ["", f"Slices within reach past the organ's end ({p['slices']}) drawn on (>= {MIN_WRONG_PX} px): "
                      + ", ".join(f"{name} {100 * p[name]:.1f} %" for name in ("with_before", "whole", "copy", "model") if name in p) + "."]
    for corrector, scan_rows in whole_scan_by_corrector(record).items():
        lines += ["", f"Whole scan, {corrector}:", "",
                  "| volume / organ | model's volume Dice | clicks with propagation (volume Dice reached) | clicks slice by slice (volume Dice reached) | ratio | propagations run / accepted |",
                  "|---|---:|---|---|---:|---|"]
        for key, row in scan_rows.items():
            w, s = row["with_propagation"], row["slice_by_slice"]
            ratio = f"{w['clicks'] / s['clicks']:.2f}" if s["clicks"] else ""
            lines.append(f"| {key} | {row.get('model_volume_dice', 'not recorded')} | {w['clicks']} ({w['volume_dice']}) | "
                         f"{s['clicks']} ({s['volume_dice']}) | {ratio} | {w['propagations']} / {w['propagations_accepted']} |")
        ratios = [r["with_propagation"]["clicks"] / r["slice_by_slice"]["clicks"] for r in scan_rows.values()
                  if r["slice_by_slice"]["clicks"]]
        clicks = [sum(r[m]["clicks"] for r in scan_rows.values()) for m in ("with_propagation", "slice_by_slice")]
        lines += ["", f"All organs together: {clicks[0]} clicks with propagation, {clicks[1]} slice by slice "
                      f"(ratio {clicks[0] / clicks[1]:.2f}); per organ the ratio runs from {min(ratios):.2f} to {max(ratios):.2f}."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--steps", type=int, default=1500, help="training steps of each check model")
    parser.add_argument("--volumes", nargs="*", help="case-days to run (default: all three)")
    parser.add_argument("--no-scan", action="store_true", help="skip the whole-scan part")
    parser.add_argument("--propagation", action="store_true",
                        help="run only the propagation part (against a known answer: the truth as the corrected slice)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--correctors", nargs="*", choices=[*REFINERS, *CORRECTORS], default=[*REFINERS, *CORRECTORS])
    parser.add_argument("--scan-corrector", choices=[*REFINERS, "interactive"], default="interactive",
                        help="the corrector of the whole-scan part")
    parser.add_argument("--reach", type=int, help="propagate this many slices each way at most "
                        "(model.interactive.MAX_PROPAGATE_SLICES, whose value is the default), to measure the choice")
    parser.add_argument("--merge", nargs="*", type=Path, help="pool these JSON files (runs on other volumes) into --out and stop")
    parser.add_argument("--table", nargs="*", type=Path, help="print docs/correct.md's tables from these JSON files and stop")
    parser.add_argument("--ship-refiner", type=Path, metavar="DIR",
                        help="write the app's click refiner (the recipe's fold without case47_day29) into DIR and stop")
    args = parser.parse_args()
    if args.ship_refiner:
        provenance = ship_refiner(args.data, args.steps, args.ship_refiner,
                                  "python -m benchmarks.reviewer " + " ".join(sys.argv[1:]))
        print(json.dumps(provenance, indent=1), f"wrote {args.ship_refiner}", sep="\n")
        return 0
    if args.merge:
        args.out.write_text(json.dumps(merge([json.loads(p.read_text()) for p in args.merge]), indent=1) + "\n")
        print(f"wrote {args.out}")
        return 0
    if args.table is not None:
        for path in args.table or [args.out]:
            print(f"{path.name}:\n{markdown(json.loads(path.read_text()))}\n")
        return 0
    if args.reach is not None:
        if args.reach < 1:
            parser.error(f"--reach must be at least 1; got {args.reach}")
        interactive.MAX_PROPAGATE_SLICES = args.reach
    import torch

    torch.set_num_threads(1)  # a click is timed on one thread: the 2-vCPU Space serves other requests beside it
    from .measure import Machine

    volumes = held_out_predictions(args.data, args.steps, args.volumes)

    def corrector(name: str):
        if name in REFINERS:
            return {held: refiner_corrector(args.data, args.steps, held, name) for held in volumes}
        return CORRECTORS[name]

    record = {
        "command": "nice -n 10 python -m benchmarks.reviewer " + " ".join(sys.argv[1:]),
        # The check models are trained here, and their training is not bit-identical between CPUs: the
        # errors to correct, and so every number below, belong to the machine that ran it.
        "machine": Machine.this().describe(),
        "volumes": {k: {"slices": int(v[0].voxels.shape[0]), "size": list(v[0].voxels.shape[1:]),
                        "model_mean_volume_dice": round(float(np.mean([dice(v[2][o], v[1][o]) for o in range(3)])), 3),
                        "wrong_slice_organs": len(wrong_slice_organs(v[2], v[1])),
                        "regions_to_fix": [regions_to_fix(v[2][o, d], v[1][o, d]) for o, d in wrong_slice_organs(v[2], v[1])]}
                    for k, v in volumes.items()},
        "protocol": {"wrong": f"slice-organ Dice < {MAX_RIGHT_DICE}, >= {MIN_WRONG_PX} px in truth or prediction",
                     "target_dice": TARGET_DICE, "max_clicks_per_slice": MAX_CLICKS, "never_counts": NEVER,
                     "max_clicks_per_organ_scan": MAX_SCAN_CLICKS,
                     "propagate_reach_slices": interactive.MAX_PROPAGATE_SLICES},
        "per_slice_organ": {},
        "whole_scan": {},
    }
    if args.propagation:
        record["propagation"] = propagation_quality(volumes) | {"volumes": sorted(volumes)}
        args.out.write_text(json.dumps(record, indent=1) + "\n")
        print(markdown(record), f"\nwrote {args.out}", sep="\n")
        return 0
    for name in args.correctors:
        record["per_slice_organ"][name] = per_slice_organ(volumes, corrector(name))
        print(name, json.dumps({k: v for k, v in record["per_slice_organ"][name].items() if k not in ("noc85", "organs", "ms")}),
              flush=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    if not args.no_scan:
        scan_corrector = corrector(args.scan_corrector)
        record["whole_scan"][args.scan_corrector] = {}
        for case_day, (scan, truth, masks, probabilities) in volumes.items():
            fix = scan_corrector[case_day] if isinstance(scan_corrector, dict) else scan_corrector
            for o, organ in enumerate(labels.ORGANS):
                row = {"model_volume_dice": round(dice(masks[o], truth[o]), 3)}
                row |= {mode: whole_organ(scan, truth, masks, probabilities, o, fix, mode == "with_propagation")
                        for mode in ("with_propagation", "slice_by_slice")}
                record["whole_scan"][args.scan_corrector][f"{case_day}/{organ}"] = row
                print(case_day, organ, json.dumps(row), flush=True)
                args.out.write_text(json.dumps(record, indent=1) + "\n")  # what is done so far survives a stop
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
