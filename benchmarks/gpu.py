"""GPU benchmark, one prepared command (< 5 minutes on a datacentre GPU):

    python -m benchmarks.gpu [--data ../shared/data]  # on a CUDA machine
    python -m benchmarks.gpu --device cpu --quick      # smoke check anywhere (tiny architecture)

Measures, on the device's default path (``model.engines.torch.choose_runtime``):

- fidelity of bf16 and fp16 against the exact fp32 model on the same device, on the real slices
  of ``--data`` with the committed trained model (``benchmarks/fidelity.py``), so the default's
  claim is checked on the GPU itself; skipped with a note where the data is absent;
- SegFormer-B4 inference slices/s at batch 1, 16 and 64, and a 144-slice scan through
  ``Segmenter.predict``;
- the trainer's real training step (``train.module.SegFormerModule.model_step``: its own loss,
  backward, AdamW) in images/s, for the blog's recipe (softmax, 288²) and the project's
  (multi-label, 384²), in bf16 autocast on a GPU as ``--trainer.precision bf16-mixed`` runs it.

Random weights for the timings: throughput does not depend on their values. Results, with the
device name, go to ``benchmarks/results/gpu-<device>.json`` and ``.md``.
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

from benchmarks import fidelity
from benchmarks.measure import ARCHITECTURES, RESULTS
from model import checkpoint as ckpt
from model import labels
from model.engines.torch import Runtime, Segmenter, choose_runtime


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
                             label2id=labels.label2id(id2label),
                             problem_type="multi_label_classification" if multi_label else "single_label_classification")
    torch.manual_seed(0)
    return SegformerForSemanticSegmentation(config)


def train_throughput(recipe: str, arch: str, device: torch.device, batch: int, size: int, warmup: int,
                     iters: int) -> float:
    """Images/s of the trainer's own step (``model_step``: forward, its loss; then backward, AdamW) on random data."""
    from train.module import SegFormerModule

    multi_label = recipe == "project"
    with tempfile.TemporaryDirectory() as init:  # the module starts from a local SegFormer, as offline fits do
        ckpt.save_contract(segformer(arch, multi_label).eval(), init, size=size)
        module = SegFormerModule(init=init, multi_label=multi_label, size=size).to(device).train()
    if device.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(module.parameters(), lr=module.hparams.lr, weight_decay=module.hparams.weight_decay)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen).to(device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    if multi_label:
        target = (torch.rand(batch, 3, size, size, generator=gen) > 0.9).float().to(device)
    else:
        target = torch.randint(0, 4, (batch, size, size), generator=gen).to(device)
    step_batch = {"pixel_values": x, "labels": target}

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss, _ = module.model_step(step_batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = timed(step, device, warmup, iters)
    return batch / seconds


def fidelity_rows(device: torch.device, data: Path) -> list[dict]:
    """bf16 and fp16 against exact fp32 on ``device``, worst over the real groups; the default marked."""
    if not (data / "pairs").is_dir():
        return [{"measurement": "fidelity", "value": f"skipped: no real data at {data}", "unit": ""}]
    default = choose_runtime(str(device)).precision
    rows = []
    for precision in ("fp32", "bf16", "fp16"):
        results = fidelity.measure(Runtime(device, precision), data)
        agreement = min(r[0] for r in results.values())
        worst = min(r[1] for r in results.values())
        held = agreement >= fidelity.MIN_AGREEMENT and worst >= fidelity.MIN_DICE
        name = f"fidelity {precision}{' (default)' if precision == default else ''} vs exact fp32"
        rows += [{"measurement": f"{name}: identical pixels, worst group", "value": 100 * agreement, "unit": "%"},
                 {"measurement": f"{name}: worst slice-organ Dice", "value": worst,
                  "unit": "held" if held else "MISSED the bar"}]
    return rows


def _cell(value) -> str:
    return value if isinstance(value, str) else f"{value:.4g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny architecture, small batches: a smoke check")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--data", type=Path, default=fidelity.SHARED_DATA, help="real data for the fidelity check")
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
    rows = fidelity_rows(device, args.data) if not args.quick else []

    # Inference on the chosen path of this device (fp16 autocast + channels_last + folded head on a GPU).
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
    seg = None  # the inference model leaves the GPU before the training rows
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
