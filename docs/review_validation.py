"""Validate the review flags (model/review.py) against real labels; write docs/review_validation.json.

    python docs/review_validation.py [--data ../shared/data] [--work /tmp/uwmgi-review] [--steps 1500]

1. The three shared real volumes with real labels (``scans/`` + ``kaggle/train.csv.gz``:
   case139_day0, case146_day25, case47_day29; 296 slices) and the 21 labelled ``pairs/``.
2. Four small multi-label SegFormers (456k parameters, 128² input) trained from random weights,
   seeded, with plain torch on one CPU core (2-4 minutes each on a shared one): one per volume
   left out (trained on the other two volumes and the pairs), and one on all three volumes and the pairs.
3. Each model segments each volume through :class:`model.engines.torch.Segmenter` (fp32, with the
   probabilities), and once more with the scan shifted by 6 pixels (test-time augmentation, to
   measure it). Two regimes:
   ``held_out``: a volume the model never saw; these models miss most organs there (wrong on most slices).
   ``mostly_right``: a volume the model was trained on; mostly right, with the errors of a small model.
4. Truth per slice-organ: *wrong* when its Dice (model/metric.py) is below 0.7 and the organ covers at
   least 50 px in the prediction or the truth (so a missed or invented organ of >= 50 px is wrong;
   pairs empty on both sides are right). Measured: the score's AUROC over every slice-organ, each
   sign's, the default flags' share of slices, their recall of wrong slice-organs (a wrong slice-organ
   counts as found when its slice is flagged), their precision (flagged slices with a wrong organ;
   flagged rows whose named organ is wrong), the same without the budget, the old rule
   (mean |2p-1| in a 2-px boundary band < 0.5, also as a ranking score), the shifted pass, and the flags on the unlabelled
   ``scans/volume_266x266``.

Everything is seeded; the models and predictions stay in ``--work`` (reused when present). Only
the JSON belongs in the repository, and docs/review.md quotes it. Never commit the data.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model import labels, review  # noqa: E402
from model.metric import dice_per_slice  # noqa: E402

OUT = REPO / "docs" / "review_validation.json"
#: The shared volumes with real labels, by case-day (shared/data/README.md).
VOLUMES = {"case139_day0": "volume_234x234", "case146_day25": "volume_276x276", "case47_day29": "volume_360x310"}
UNLABELLED = "volume_266x266"
SIZE = 128
SHIFT_PX = (6, 6)
#: "Wrong" as issue #18 defines it.
MAX_RIGHT_DICE, MIN_WRONG_PX = 0.7, 50


# --------------------------------------------------------------------------- data


def labelled_volumes(data: Path, work: Path) -> dict:
    """``{case_day: (Scan, truth (O, D, H, W) bool)}``, the truth cut to the scan's own slices."""
    from model.rle import RleCsv
    from model.scans import load_scan

    subset = work / "truth.csv"  # RleCsv reads plain CSV: keep the three case-days' rows
    if not subset.exists():
        with gzip.open(data / "kaggle" / "train.csv.gz", "rt", newline="") as f, open(subset, "w", newline="") as out:
            rows, writer = csv.reader(f), csv.writer(out)
            writer.writerow(next(rows))
            writer.writerows(row for row in rows if row[0].rsplit("_slice_", 1)[0] in VOLUMES)
    rle = RleCsv(subset)
    volumes = {}
    for case_day, folder in VOLUMES.items():
        scan = load_scan(data / "scans" / folder)
        truth = rle.volume(case_day, scan.shape[1:])
        keep = [truth.slice_numbers.index(n) for n in scan.slice_numbers]
        volumes[case_day] = (scan, truth.masks[:, keep])
    return volumes


def labelled_pairs(data: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 21 pairs: slices ``(21, 512, 512) uint8`` and masks ``(O, 21, 512, 512) bool``."""
    from PIL import Image

    from model.image import read_slice

    images = sorted((data / "pairs" / "images").glob("*.png"))
    label_maps = np.stack([np.asarray(Image.open(data / "pairs" / "masks" / p.name)) for p in images])
    return np.stack([read_slice(p) for p in images]), np.stack([label_maps == labels.ORGAN_IDS[o] for o in labels.ORGANS])


# --------------------------------------------------------------------------- models


def train(groups: list[tuple[np.ndarray, np.ndarray]], dst: Path, steps: int, seed: int = 0) -> Path:
    """A small multi-label SegFormer on ``groups`` of (slices ``(N, H, W)``, masks ``(O, N, H, W)``); a contract checkpoint."""
    import torch
    import torch.nn.functional as F
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    from model import checkpoint as ckpt
    from model.engines.torch import Segmenter, choose_runtime

    torch.manual_seed(seed)
    id2label = labels.id2label(True)
    config = SegformerConfig(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 64, 128], num_attention_heads=[1, 1, 2, 4],
                             decoder_hidden_size=64, id2label=id2label, label2id=labels.label2id(id2label),
                             problem_type="multi_label_classification")
    model = SegformerForSemanticSegmentation(config)
    contract = ckpt.Contract(multi_label=True, organ_channels=(0, 1, 2), input_size=(SIZE, SIZE),
                             image_mean=ckpt.IMAGENET_MEAN, image_std=ckpt.IMAGENET_STD)
    serving = Segmenter(SegformerForSemanticSegmentation(config), contract, runtime=choose_runtime("cpu", precision="exact"))
    with torch.no_grad():  # the serving preprocessing, so the model sees what the app feeds it
        x = torch.cat([serving.preprocess(slices) for slices, _ in groups])
        y = torch.cat([F.interpolate(torch.from_numpy(masks.transpose(1, 0, 2, 3).astype(np.float32)),
                                     size=(SIZE, SIZE), mode="nearest") for _, masks in groups])
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=4e-3, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (8,), generator=generator)
        logits = F.interpolate(model(pixel_values=x[idx]).logits, size=(SIZE, SIZE), mode="bilinear")
        prob = torch.sigmoid(logits)
        overlap = (prob * y[idx]).sum((0, 2, 3))
        total = prob.sum((0, 2, 3)) + y[idx].sum((0, 2, 3))
        loss = (F.binary_cross_entropy_with_logits(logits, y[idx], pos_weight=torch.tensor(2.0))
                + (1 - (2 * overlap + 1) / (total + 1)).mean())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return ckpt.save_contract(model.eval(), dst, size=SIZE)


def segment(checkpoint: Path, voxels: np.ndarray, shift: tuple[int, int] | None = None):
    """Masks ``(O, D, H, W) bool``, probabilities ``(O, D, H, W) float16`` and seconds, of the scan (shifted, and back)."""
    from model.engines.torch import Segmenter, choose_runtime

    segmenter = Segmenter.load(checkpoint, runtime=choose_runtime("cpu", precision="fp32"))
    if shift is not None:
        voxels = np.roll(voxels, shift, axis=(1, 2))
    segmentation = segmenter.segment_scan(voxels, keep_probabilities=True)
    start = time.perf_counter()
    segmentation.run()
    seconds = time.perf_counter() - start
    organ_masks, probabilities = segmentation.organ_masks, segmentation.probabilities
    if shift is not None:
        back = (-shift[0], -shift[1])
        organ_masks, probabilities = np.roll(organ_masks, back, axis=(2, 3)), np.roll(probabilities, back, axis=(2, 3))
    return organ_masks, probabilities, seconds


# --------------------------------------------------------------------------- measures


def wrong_slice_organs(organ_masks: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(O, D) bool`` wrong (issue #18's definition) and ``(O, D)`` Dice (NaN where both are empty)."""
    dice = dice_per_slice(organ_masks, truth)
    judged = np.maximum(organ_masks.sum((2, 3)), truth.sum((2, 3))) >= MIN_WRONG_PX
    return judged & (np.nan_to_num(dice, nan=1.0) < MAX_RIGHT_DICE), dice


def band_margins(organ_masks: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """The replaced rule's value, ``(O, D) float64``: mean ``|2p - 1|`` in the 2-px boundary band; 1 where nothing is drawn.

    The old rule flagged a drawn slice-organ when this was below 0.5.
    """
    from scipy.ndimage import binary_dilation, binary_erosion

    margins = np.ones(organ_masks.shape[:2])
    for o, d in zip(*np.nonzero(organ_masks.any(axis=(2, 3)))):
        mask = organ_masks[o, d]
        band = binary_dilation(mask, np.ones((3, 3)), iterations=2) & ~binary_erosion(mask, np.ones((3, 3)), iterations=2)
        margins[o, d] = np.abs(2.0 * probabilities[o, d][band].astype(np.float64) - 1.0).mean()
    return margins


def auroc(wrong: np.ndarray, score: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    wrong, score = np.ravel(wrong), np.ravel(score)
    return round(float(roc_auc_score(wrong, score)), 3) if 0 < wrong.sum() < wrong.size else None


def ratio(a, b) -> float | None:
    return round(float(a) / float(b), 3) if b else None


def evaluate(items: list[dict]) -> dict:
    """Pooled numbers of one regime; ``items`` hold masks, probabilities, truth, shifted masks of each (model, volume)."""
    wrong = [i["wrong"] for i in items]
    scores = [i["scores"] for i in items]
    flat = np.concatenate([w.ravel() for w in wrong])
    flagged_slices = found = n_flags = named_wrong = slices_with_wrong = 0
    for item in items:
        rows = item["flags"]
        on = np.zeros(item["wrong"].shape[1], dtype=bool)
        on[[f.slice_index for f in rows]] = True
        flagged_slices += on.sum()
        found += item["wrong"][:, on].sum()
        slices_with_wrong += item["wrong"][:, on].any(axis=0).sum()
        named_wrong += sum(item["wrong"][labels.ORGANS.index(f.organ), f.slice_index] for f in rows)
        n_flags += len(rows)
    depth = sum(w.shape[1] for w in wrong)
    over = np.concatenate([(s.score >= review.MIN_SCORE).ravel() for s in scores])
    margins = np.concatenate([i["margins"].ravel() for i in items])
    old = margins < 0.5
    tta = np.concatenate([i["tta"].ravel() for i in items])
    score = np.concatenate([s.score.ravel() for s in scores])
    return {
        "scans": len(items), "slices": depth, "slice_organs": int(flat.size),
        "wrong_slice_organs": int(flat.sum()), "wrong_share": ratio(flat.sum(), flat.size),
        "slices_with_a_wrong_organ": ratio(sum(w.any(axis=0).sum() for w in wrong), depth),
        "mean_slice_organ_dice": round(float(np.nanmean(np.concatenate([i["dice"].ravel() for i in items]))), 3),
        "auroc": auroc(flat, score),
        "auroc_by_sign": {name: auroc(flat, np.concatenate([getattr(s, key).ravel() for s in scores]))
                          for name, key in zip(review.SIGNS, ("uncertain", "missed", "jump"))},
        "default_flags": {
            "share_of_slices_flagged": ratio(flagged_slices, depth),
            "recall_of_wrong_slice_organs": ratio(found, flat.sum()),
            "recall_of_slices_with_a_wrong_organ": ratio(slices_with_wrong, sum(w.any(axis=0).sum() for w in wrong)),
            "precision_flagged_slices_with_a_wrong_organ": ratio(slices_with_wrong, flagged_slices),
            "precision_named_organ_wrong": ratio(named_wrong, n_flags),
            "share_of_slice_organs_in_rows": ratio(n_flags, flat.size),
        },
        "score_at_least_min_score_no_budget": {
            "share_of_slice_organs": ratio(over.sum(), over.size),
            "recall": ratio((over & flat).sum(), flat.sum()), "precision": ratio((over & flat).sum(), over.sum()),
        },
        "old_low_confidence_rule": {
            "share_of_drawn_slice_organs_flagged": ratio(old.sum(), sum(i["drawn"].sum() for i in items)),
            "share_of_slices_flagged": ratio(sum((i["margins"] < 0.5).any(axis=0).sum() for i in items), depth),
            "recall": ratio((old & flat).sum(), flat.sum()), "precision": ratio((old & flat).sum(), old.sum()),
            "auroc_of_1_minus_margin_as_a_score": auroc(flat, 1.0 - margins),
        },
        "shifted_pass": {
            "auroc_alone": auroc(flat, tta), "auroc_max_with_score": auroc(flat, np.maximum(score, tta)),
            "seconds_first_pass": round(sum(i["seconds"] for i in items), 2),
            "seconds_second_pass": round(sum(i["seconds_shifted"] for i in items), 2),
        },
        "per_scan": [{"model": i["model"], "volume": i["volume"], "wrong_share": ratio(i["wrong"].sum(), i["wrong"].size),
                      "auroc": auroc(i["wrong"], i["scores"].score), "flagged_slices": len(i["flags"]),
                      "slices": int(i["wrong"].shape[1])} for i in items],
    }


def sensitivity(items_by_regime: dict) -> list[dict]:
    """AUROC of the score for other floors and profile weights: how much the chosen constants matter."""
    rows = []
    for floor in (0.05, 0.1, 0.2):
        for weight in (0.4, 0.6, 1.0):
            row = {"probability_floor": floor, "profile_weight": weight}
            for regime, items in items_by_regime.items():
                flat = np.concatenate([i["wrong"].ravel() for i in items])
                score = np.concatenate([review.organ_scores(i["masks"], i["probabilities"], probability_floor=floor,
                                                            profile_weight=weight).score.ravel() for i in items])
                row[f"auroc_{regime}"] = auroc(flat, score)
            rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=Path("/tmp/uwmgi-review"),
                        help="models and predictions, reused when present")
    parser.add_argument("--steps", type=int, default=1500, help="training steps per model")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    volumes = labelled_volumes(args.data, args.work)
    pairs = labelled_pairs(args.data)
    training = {f"without_{held}": [pairs] + [(s.voxels, t) for c, (s, t) in volumes.items() if c != held]
                for held in volumes}
    training["all"] = [pairs] + [(s.voxels, t) for s, t in volumes.values()]
    train_minutes = {}
    regimes: dict[str, list[dict]] = {"held_out": [], "mostly_right": []}
    for model_name, groups in training.items():
        checkpoint = args.work / f"steps{args.steps}" / model_name
        if not (checkpoint / "config.json").exists():
            start = time.perf_counter()
            train(groups, checkpoint, args.steps)
            (checkpoint / "train_minutes.txt").write_text(f"{(time.perf_counter() - start) / 60:.1f}\n")
        train_minutes[model_name] = float((checkpoint / "train_minutes.txt").read_text())
        print(f"{model_name}: trained in {train_minutes[model_name]} min", flush=True)
        for case_day, (scan, truth) in volumes.items():
            organ_masks, probabilities, seconds = segment(checkpoint, scan.voxels)
            shifted, _, seconds_shifted = segment(checkpoint, scan.voxels, SHIFT_PX)
            wrong, dice = wrong_slice_organs(organ_masks, truth)
            start = time.perf_counter()
            flags = review.review_flags(organ_masks, scan.spacing_mm, probabilities, scan.slice_numbers)
            flag_seconds = time.perf_counter() - start
            regime = "held_out" if model_name == f"without_{case_day}" else "mostly_right"
            regimes[regime].append({
                "model": model_name, "volume": case_day, "masks": organ_masks, "probabilities": probabilities,
                "wrong": wrong, "dice": dice, "scores": review.organ_scores(organ_masks, probabilities), "flags": flags,
                "margins": band_margins(organ_masks, probabilities), "drawn": organ_masks.any(axis=(2, 3)),
                "tta": np.where(np.isnan(d := dice_per_slice(organ_masks, shifted)), 0.0, 1.0 - d),
                "seconds": seconds, "seconds_shifted": seconds_shifted, "flag_seconds": flag_seconds})
            print(f"{model_name} on {case_day} ({regime}): {wrong.mean():.2f} wrong, {len(flags)} flags", flush=True)

    from model.scans import load_scan

    unlabelled = load_scan(args.data / "scans" / UNLABELLED)
    masks, probabilities, _ = segment(args.work / f"steps{args.steps}" / "all", unlabelled.voxels)
    flags = review.review_flags(masks, unlabelled.spacing_mm, probabilities, unlabelled.slice_numbers)
    record = {
        "command": "python docs/review_validation.py",
        "definition_of_wrong": f"slice-organ Dice < {MAX_RIGHT_DICE} with the organ >= {MIN_WRONG_PX} px in prediction "
                               "or truth (model/metric.py dice_per_slice); empty on both sides is right",
        "models": f"small multi-label SegFormers (hidden sizes 16-32-64-128, {SIZE}² input), {args.steps} seeded AdamW "
                  "steps on one CPU core; one per labelled volume left out (trained on the other two and the 21 pairs), "
                  "one on all three and the pairs",
        "train_minutes": train_minutes,
        "defaults": {"budget": review.BUDGET, "min_score": review.MIN_SCORE, "probability_floor": review.PROBABILITY_FLOOR,
                     "min_organ_px": review.MIN_ORGAN_PX, "profile_weight": review.PROFILE_WEIGHT,
                     "profile_slices": review.PROFILE_SLICES},
        "regimes": {name: evaluate(items) for name, items in regimes.items()},
        "sensitivity": sensitivity(regimes),
        "review_seconds_largest_volume": round(max(i["flag_seconds"] for items in regimes.values() for i in items), 3),
        "unlabelled_volume_266x266": {"model": "all", "slices": len(unlabelled), "flagged_slices": len(flags),
                                      "old_low_confidence_slice_organs": int((band_margins(masks, probabilities) < 0.5).sum())},
    }
    OUT.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(record["regimes"], indent=1))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
