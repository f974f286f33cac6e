"""Engines side by side, model only: the GEMM peaks, then torch and OpenVINO forwards, alternating.

    python -m benchmarks.engines [--repeats 5]

A few minutes instead of ``benchmarks.run``'s twenty, for comparing engines on a machine: the
best fp32 GEMM any installed engine reaches, the theoretical FMA peak as a sanity line, and one
B4 forward (288², seeded random weights) per path and round. Writes
``benchmarks/results/engines-<kind>.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    from model.engines.machine import prefer_sleeping_threads

    prefer_sleeping_threads()  # before torch loads, as the app's entry points do
    import torch

    from benchmarks.inprocess import BATCH, peaks
    from benchmarks.measure import RESULTS, Machine, Row, benchmark_checkpoint, benchmark_scan, forward_gflop, medians, round_robin
    from benchmarks.report import format_table
    from model.engines.torch import Segmenter, choose_runtime
    from model.engines.openvino import OpenVinoSegmenter

    load = os.getloadavg()[0]
    machine = Machine.this()
    checkpoint = benchmark_checkpoint("b4")
    fp32_peak, bf16_peak, rows = peaks(machine, quick=False)
    exact = Segmenter.load(checkpoint, runtime=choose_runtime("cpu", precision="exact"))
    torch_fp32 = Segmenter.load(checkpoint, runtime=choose_runtime("cpu", precision="fp32"))
    paths = {"torch exact fp32 eager": (exact, 1), "torch fp32, folded head": (torch_fp32, 1),
             f"torch fp32, folded head, batch {BATCH}": (torch_fp32, BATCH),
             "OpenVINO f32, folded head": (OpenVinoSegmenter.load(checkpoint), 1)}
    if machine.native_bf16:
        paths["OpenVINO bf16 (opt-in)"] = (OpenVinoSegmenter.load(checkpoint, precision="bf16"), 1)
    slices = benchmark_scan(BATCH).voxels
    inputs = {name: seg.preprocess(slices[:batch]) for name, (seg, batch) in paths.items()}
    executed, nominal = forward_gflop(torch_fp32.model, 288), forward_gflop(exact.model, 288)
    with torch.inference_mode():
        times = round_robin({name: (lambda seg=seg, x=inputs[name]: seg.forward(x)) for name, (seg, _) in paths.items()},
                            args.repeats)
    for name, (_, batch) in paths.items():
        times[name] = [t / batch for t in times[name]]
    m = medians(times)
    for name, (_, batch) in paths.items():
        gflop = nominal if name.startswith("torch exact") else executed
        peak, kind = (bf16_peak, "the bf16 matmul peak") if "bf16" in name else (fp32_peak, "the best fp32 GEMM")
        rows.append(Row("model only", f"{name}{'' if batch > 1 else ', batch 1'}", m[name], "s/slice", times[name],
                        note=f"{m['torch exact fp32 eager'] / m[name]:.2f}× exact; {gflop / m[name]:.0f} GFLOP/s = "
                             f"{gflop / m[name] / peak:.0%} of {kind}"))
    text = (f"Machine: {machine.describe()}; load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the "
            f"end.\nModel: B4 at 288², {nominal:.1f} GFLOP/forward nominal, {executed:.1f} with the folded head.\n\n"
            f"{format_table(rows)}\n")
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"engines-{machine.kind}.md").write_text(
        f"`python -m benchmarks.engines --repeats {args.repeats}`, {time.strftime('%Y-%m-%d %H:%M')}\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
