"""GPU benchmark, one prepared command (< 5 minutes on a datacentre GPU):

    python -m benchmarks.gpu                      # on a CUDA machine
    python -m benchmarks.gpu --device cpu --quick # smoke check anywhere (tiny architecture)

Measures SegFormer-B4 inference slices/s at batch 1, 16 and 64 on the chosen GPU path (bf16
weights, channels_last, folded decode head; see model/inference.py), a 144-slice scan through
``Segmenter.predict``, and training-step throughput (images/s) for two recipes, with plain
torch (the training package is not needed):

- ``blog``: 4-class softmax, 288², cross-entropy + Dice, as the blog trained;
- ``project``: multi-label sigmoid, 3 channels 2.5D, 384², BCE + Dice.

Training runs in bf16 autocast on the GPU (fp32 on the CPU). Random weights: throughput
does not depend on their values. Results, with the device name, go to
``benchmarks/results/gpu-<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.run import ARCHITECTURES, RESULTS
from model import checkpoint as ckpt
from model import labels
from model.inference import Segmenter, choose_runtime


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, warmup: int, iters: int) -> float:
    """Median seconds per call after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def segformer(arch: str, multi_label: bool, num_channels: int = 3):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    id2label = labels.id2label(multi_label)
    config = SegformerConfig(**ARCHITECTURES[arch][0], num_channels=num_channels, id2label=id2label,
                             label2id={v: k for k, v in id2label.items()},
                             problem_type="multi_label_classification" if multi_label else "single_label_classification")
    torch.manual_seed(0)
    return SegformerForSemanticSegmentation(config)


# --------------------------------------------------------------------------- losses (soft Dice defined on empty classes)


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """``1 - mean Dice`` over channels of ``(N, C, H, W)`` probabilities and 0/1 targets.

    Pooled over the batch per channel; ``eps`` makes a channel empty in both count as Dice 1.
    """
    dims = (0, 2, 3)
    inter = (probs * target).sum(dims)
    total = probs.sum(dims) + target.sum(dims)
    return 1 - ((2 * inter + eps) / (total + eps)).mean()


def blog_loss(logits: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    """Softmax recipe: CE over 4 classes + Dice over the 3 organs. ``target_ids``: ``(N, H, W)`` int64."""
    logits = F.interpolate(logits.float(), size=target_ids.shape[-2:], mode="bilinear", align_corners=False)
    one_hot = F.one_hot(target_ids, logits.shape[1]).permute(0, 3, 1, 2).float()
    return F.cross_entropy(logits, target_ids) + soft_dice_loss(logits.softmax(1)[:, 1:], one_hot[:, 1:])


def project_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Multi-label recipe: BCE + Dice per organ. ``target``: ``(N, 3, H, W)`` 0/1 float."""
    logits = F.interpolate(logits.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
    return F.binary_cross_entropy_with_logits(logits, target) + soft_dice_loss(logits.sigmoid(), target)


def train_throughput(recipe: str, arch: str, device: torch.device, batch: int, size: int, warmup: int,
                     iters: int) -> float:
    """Images/s of full training steps (forward, loss, backward, AdamW) on random data."""
    multi_label = recipe == "project"
    model = segformer(arch, multi_label).to(device).train()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-5)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen).to(device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    if multi_label:
        target = (torch.rand(batch, 3, size, size, generator=gen) > 0.9).float().to(device)
        loss_fn = project_loss
    else:
        target = torch.randint(0, 4, (batch, size, size), generator=gen).to(device)
        loss_fn = blog_loss

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(pixel_values=x).logits
        loss = loss_fn(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = timed(step, device, warmup, iters)
    del model, optimizer
    return batch / seconds


def _cell(value) -> str:
    return value if isinstance(value, str) else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny architecture, small batches: a smoke check")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device; use --device cpu --quick for a smoke check", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    arch = "tiny" if args.quick else "b4"
    batches = (1, 2, 4) if args.quick else (1, 16, 64)
    warmup, iters = (1, 2) if args.quick else (5, 20)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({args.device})"
    started = time.perf_counter()
    rows = []

    # Inference on the chosen path of this device (bf16 + channels_last + folded head on a GPU).
    with tempfile.TemporaryDirectory() as tmp:
        ckpt.save_contract(segformer(arch, multi_label=False).eval(), tmp, size=288)
        seg = Segmenter.load(tmp, runtime=choose_runtime(args.device))
    rows.append({"measurement": "runtime", "value": seg.runtime.describe(), "unit": ""})
    with torch.inference_mode():
        for batch in batches:
            x = torch.randn(batch, 3, 288, 288, device=device)
            seconds = timed(lambda: seg.forward(x), device, warmup, max(3, iters // max(1, batch // 8)))
            rows.append({"measurement": f"{arch} inference {str(seg.runtime.autocast or 'torch.float32').removeprefix('torch.')}, "
                                        f"batch {batch}, 288²", "value": batch / seconds, "unit": "slices/s"})
        scan = np.random.default_rng(0).integers(0, 255, (16 if args.quick else 144, 266, 266), dtype=np.uint8)
        for batch in batches[1:]:
            seg.batch_size = batch
            seconds = timed(lambda: seg.predict(scan), device, 1, 2 if args.quick else 5)
            rows.append({"measurement": f"scan of {len(scan)} slices 266², Segmenter.predict, batch {batch}",
                         "value": len(scan) / seconds, "unit": "slices/s (end to end)"})
    del seg
    if device.type == "cuda":
        torch.cuda.empty_cache()

    train_batch = 2 if args.quick else 16
    for recipe, size in (("blog", 288), ("project", 384)):
        rate = train_throughput(recipe, arch, device, train_batch, size, warmup=1 if args.quick else 3,
                                iters=2 if args.quick else 10)
        rows.append({"measurement": f"training step, {recipe} recipe ({size}², batch {train_batch})",
                     "value": rate, "unit": "images/s"})
        if device.type == "cuda":
            torch.cuda.empty_cache()

    elapsed = time.perf_counter() - started
    result = {"device": name, "torch": torch.__version__, "arch": arch, "quick": args.quick,
              "seconds": round(elapsed, 1), "date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}
    table = "\n".join([f"Device: {name}; torch {torch.__version__}; {arch}; {elapsed:.0f} s", "",
                       "| measurement | value | unit |", "|---|---:|---|"]
                      + [f"| {r['measurement']} | {_cell(r['value'])} | {r['unit']} |" for r in rows])
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + ("-quick" if args.quick else "")
    (args.out / f"gpu-{slug}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"gpu-{slug}.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
