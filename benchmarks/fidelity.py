"""Fidelity: does a runtime give the exact fp32 model's masks on real slices?

    python -m benchmarks.fidelity [--device cpu|cuda] [--data ../shared/data]
    python -m benchmarks.fidelity --train    # regenerate the trained model (about 2 min on 2 CPUs)

The bar every *default* path must hold (``model.engines.torch.choose_runtime``), against the exact
model, with a model that really segments: per-organ Dice >= 0.98 on every slice where the organ
covers more than 50 px, and >= 99.99 % identical pixels. ``tests/model/test_fastpath.py`` asserts
it for the defaults; this command prints it for every precision and writes
``benchmarks/results/fidelity-cpu-<kind>.md`` (one file per kind of CPU: avx2, avx512-bf16, amx).

The model is a small softmax SegFormer trained with plain torch on the 21 real labelled slices of
``../shared/data/pairs`` through the serving preprocessing. It is committed
(``benchmarks/fidelity_checkpoint/``, 1.8 MB) so that every machine judges the same weights:
trained inside the test, different CPUs gave different weights and so different margins.
Never commit the data itself.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "benchmarks" / "fidelity_checkpoint"
SHARED_DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
#: The bar of every default path against the exact model, slice by slice.
MIN_ORGAN_PIXELS, MIN_DICE, MIN_AGREEMENT = 50, 0.98, 0.9999
TRAIN_SIZE = 96


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean arrays; two empty masks agree perfectly (1.0)."""
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def fidelity(fast: np.ndarray, exact: np.ndarray) -> tuple[float, float, int]:
    """(pixel agreement, worst per-slice organ Dice, slice-organs judged) of ``(N, O, H, W) bool`` masks.

    The Dice is taken on every slice where the organ covers more than ``MIN_ORGAN_PIXELS`` in
    either mask; a pixel agrees when its set of organs is identical in both.
    """
    agreement = float((fast == exact).all(axis=1).mean())
    worst, judged = 1.0, 0
    for i in range(len(exact)):
        for o in range(exact.shape[1]):
            if max(exact[i, o].sum(), fast[i, o].sum()) > MIN_ORGAN_PIXELS:
                worst, judged = min(worst, dice(fast[i, o], exact[i, o])), judged + 1
    return agreement, worst, judged


def real_pairs(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 21 real slices ``(21, 512, 512) uint8`` and their label maps ``(21, 512, 512) int64`` (ids of model.labels)."""
    from PIL import Image

    from model.image import read_slice

    images = sorted((shared_data / "pairs" / "images").glob("*.png"))
    slices = np.stack([read_slice(p) for p in images])
    # Label maps, not intensities: read as they are (read_slice would refuse an all-background map).
    label_maps = np.stack([np.asarray(Image.open(shared_data / "pairs" / "masks" / p.name)) for p in images])
    return slices, label_maps.astype(np.int64)


def real_slices(shared_data: Path) -> dict[str, np.ndarray]:
    """The labelled pairs (512²) and every slice of the four real volumes, one array per size."""
    from model.image import read_slice

    groups = {"pairs": real_pairs(shared_data)[0]}
    scans = shared_data / "scans"
    for volume in sorted(p for p in scans.iterdir() if p.is_dir()) if scans.is_dir() else ():
        groups[volume.name] = np.stack([read_slice(p) for p in sorted(volume.glob("*.png"))])
    return groups


def measure(runtime, shared_data: Path = SHARED_DATA, fast=None) -> dict[str, tuple[float, float, int]]:
    """:func:`fidelity` of ``runtime`` (or of the segmenter ``fast``, on the CPU) against the exact
    path on its device, per group of :func:`real_slices`."""
    from model.engines.torch import Runtime, Segmenter

    exact = Segmenter.load(CHECKPOINT, runtime=Runtime(runtime.device, "exact"))
    fast = fast or Segmenter.load(CHECKPOINT, runtime=runtime)
    return {name: fidelity(fast.predict(slices), exact.predict(slices))
            for name, slices in real_slices(shared_data).items()}


def train(slices: np.ndarray, label_maps: np.ndarray, dst: Path, steps: int = 1200) -> Path:
    """Train the small SegFormer for ``steps`` seeded AdamW steps; save it as a contract checkpoint."""
    import torch
    import torch.nn.functional as F
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    from model import checkpoint as ckpt
    from model import labels
    from model.engines.torch import Segmenter, choose_runtime

    torch.manual_seed(0)
    id2label = labels.id2label(False)
    config = SegformerConfig(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 64, 128], num_attention_heads=[1, 1, 2, 4],
                             decoder_hidden_size=64, id2label=id2label, label2id=labels.label2id(id2label))
    model = SegformerForSemanticSegmentation(config)
    contract = ckpt.Contract(multi_label=False, organ_channels=(1, 2, 3), input_size=(TRAIN_SIZE, TRAIN_SIZE),
                             image_mean=ckpt.IMAGENET_MEAN, image_std=ckpt.IMAGENET_STD)
    with torch.no_grad():  # the serving preprocessing, so the model sees what the app feeds it
        x = Segmenter(SegformerForSemanticSegmentation(config), contract,
                      runtime=choose_runtime("cpu", precision="exact")).preprocess(slices)
    y = F.interpolate(torch.from_numpy(label_maps)[:, None].float(), size=(TRAIN_SIZE, TRAIN_SIZE),
                      mode="nearest")[:, 0].long()
    weight = torch.tensor([0.2, 1.0, 1.0, 1.0])  # background dominates the pixels
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=1e-4)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (8,))
        logits = F.interpolate(model(pixel_values=x[idx]).logits, size=(TRAIN_SIZE, TRAIN_SIZE), mode="bilinear")
        loss = F.cross_entropy(logits, y[idx], weight=weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return ckpt.save_contract(model.eval(), dst, size=TRAIN_SIZE)


def table(device: str, shared_data: Path = SHARED_DATA, precisions=("fp32", "bf16", "fp16")) -> str:
    """A markdown table of :func:`measure` for each precision on ``device``, the defaults marked."""
    import torch

    from model import labels
    from model.engines.torch import Runtime, Segmenter, choose_runtime

    slices, label_maps = real_pairs(shared_data)
    exact = Segmenter.load(CHECKPOINT, runtime=Runtime(torch.device(device), "exact")).predict(slices)
    learned = ", ".join(f"{labels.DISPLAY_NAMES[o]} {dice(exact[:, i], label_maps == labels.ORGAN_IDS[o]):.2f}"
                        for i, o in enumerate(labels.ORGANS))
    default = choose_runtime(device).precision
    if torch.device(device).type == "cuda":
        machine = torch.cuda.get_device_name(torch.device(device))
    else:
        from benchmarks.measure import Machine

        machine = Machine.this().describe()
    lines = [f"Fidelity against the exact fp32 model on {device} ({time.strftime('%Y-%m-%d')}): {machine}.",
             f"The model's Dice against the 21 real labels: {learned}.", "",
             "| engine | precision | data | identical pixels | worst slice-organ Dice | slice-organs judged | bar |",
             "|---|---|---|---:|---:|---:|---|"]
    paths = [("torch", precision, None) for precision in precisions]
    if torch.device(device).type == "cpu":  # OpenVINO runs on the CPU only
        from model.engines.choose import load_segmenter

        paths += [("openvino", precision, load_segmenter(CHECKPOINT, engine="openvino", precision=precision))
                  for precision in ("fp32", "bf16")]
    for engine, precision, fast in paths:
        runtime = Runtime(torch.device(device), precision if engine == "torch" else "fp32")
        for name, (agreement, worst, judged) in measure(runtime, shared_data, fast).items():
            held = agreement >= MIN_AGREEMENT and worst >= MIN_DICE
            if torch.device(device).type == "cuda":
                mark = " (default)" if precision == default else ""
            else:
                mark = {("torch", default): " (default without AVX-512)",
                        ("openvino", "fp32"): " (default with AVX-512)"}.get((engine, precision), "")
            lines.append(f"| {engine} | {precision}{mark} | {name} | {agreement:.4%} | {worst:.4f} | {judged} | "
                         f"{'held' if held else 'MISSED'} |")
    return "\n".join(lines)


def results_name(device: str) -> str:
    """``fidelity-cpu-<kind>`` (avx2, avx512-bf16, amx): reduced precisions give different masks on each
    kind of CPU, so each kind keeps its own file; ``fidelity-<device>`` elsewhere."""
    if device.split(":")[0] != "cpu":
        return f"fidelity-{device}"
    from benchmarks.measure import Machine

    return f"fidelity-cpu-{Machine.this().kind}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="the shared data folder (pairs/, scans/)")
    parser.add_argument("--train", action="store_true", help="regenerate benchmarks/fidelity_checkpoint/ first")
    args = parser.parse_args(argv)
    if args.train:
        print(train(*real_pairs(args.data), CHECKPOINT))
    text = table(args.device, args.data)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{results_name(args.device)}.md").write_text(f"`python -m benchmarks.fidelity --device {args.device}`\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
