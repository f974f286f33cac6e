"""In process: the blog's steps against our handler and model, one slice and a whole scan.

Matmul peaks and the FLOPs of a forward pass are measured in the same run, so efficiency is a
ratio of two numbers taken on the same machine under the same load.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from benchmarks import reference
from benchmarks.measure import (ARCHITECTURES, BenchmarkScan, Machine, Row, forward_gflop, matmul_peak, medians,
                                openvino_matmul_peak, package_mib, peak_rss_mib, round_robin, theoretical_fp32_peak)
from model import checkpoint as ckpt
from model.engines import torch as torch_engine
from model.engines import openvino as ovr
from model.image import read_slice
from model.engines.openvino import OpenVinoSegmenter

#: Slices per forward pass in the batched rows (the app's scan batch).
BATCH = 8


@dataclass(frozen=True)
class InProcess:
    """What the served and whole-process rows and the targets need from the in-process run."""

    runtime: str
    nominal_gflop: float  # the exact model's FLOPs per forward
    executed_gflop: float  # the chosen path's (folded head)
    fp32_peak: float  # GFLOP/s: the best fp32 GEMM any installed engine reached
    bf16_peak: float
    model_b1_s: float  # chosen path, batch 1, model only
    model_exact_s: float
    prepost_s: float  # our handler without the forward pass
    ref_prepost_s: float
    scan_rate: float  # slices/s through Segmenter.predict
    ref_rate: float

    @property
    def batch1_efficiency(self) -> float:
        """Executed GFLOP/s of the chosen path at batch 1, as a fraction of the best measured fp32 GEMM rate."""
        return self.executed_gflop / self.model_b1_s / self.fp32_peak


def peaks(machine: Machine, quick: bool) -> tuple[float, float, list[Row]]:
    """The best fp32 GEMM rate any installed engine reaches (torch over 1024² and 2048², OpenVINO at
    2048²), the bf16 matmul peak (at 512² where it is emulated), and the theoretical FMA peak as a sanity line."""
    sizes = (1024,) if quick else (1024, 2048)
    torch_fp32 = max(matmul_peak(torch.float32, n, 3 if n > 1024 else 5) for n in sizes)
    engines = {"torch": torch_fp32}
    try:
        engines["OpenVINO"] = openvino_matmul_peak(sizes[-1], 3 if sizes[-1] > 1024 else 5)
    except ImportError:
        pass
    best_engine, fp32 = max(engines.items(), key=lambda item: item[1])
    bf16_sizes = sizes if machine.native_bf16 else (512,)
    bf16 = max(matmul_peak(torch.bfloat16, n, 3) for n in bf16_sizes)
    theory, assumptions = theoretical_fp32_peak(machine)
    shown = "/".join(f"{n}²" for n in sizes)
    rows = [Row("efficiency", f"GEMM fp32, torch (best of {shown})", torch_fp32, "GFLOP/s",
                note=f"{torch_fp32 / fp32:.0%} of the best measured")]
    if "OpenVINO" in engines:
        rows.append(Row("efficiency", f"GEMM fp32, OpenVINO ({sizes[-1]}², precision hint f32)", engines["OpenVINO"],
                        "GFLOP/s", note=f"{engines['OpenVINO'] / fp32:.0%} of the best measured"))
    rows += [
        Row("efficiency", "best measured fp32 GEMM: every percentage below is of this", fp32, "GFLOP/s",
            note=best_engine),
        Row("efficiency", "theoretical fp32 FMA peak (sanity line, not a target)", theory, "GFLOP/s",
            note=assumptions + (f"; the best measured is {fp32 / theory:.0%} of it" if theory else "")),
        Row("efficiency", f"matmul peak bf16, torch (best of {'/'.join(f'{n}²' for n in bf16_sizes)})", bf16, "GFLOP/s",
            note="" if machine.native_bf16 else "no AVX512-BF16/AMX: emulated"),
    ]
    return fp32, bf16, rows


def measure(checkpoint_dir, arch: str, scan: BenchmarkScan, machine: Machine, repeats: int, quick: bool,
            log=print) -> tuple[list[Row], InProcess]:
    """The in-process rows, and the numbers later rows and the targets are computed from."""
    from ui import server, slice_tab  # the page's model holder and its /segment handler, in process

    size = ARCHITECTURES[arch][1]
    fp32_peak, bf16_peak, rows = peaks(machine, quick)
    ref_model = reference.load_model(checkpoint_dir)
    contract = ckpt.read_contract(checkpoint_dir)
    torch_fp32 = torch_engine.Segmenter(reference.load_model(checkpoint_dir), contract,
                                     runtime=torch_engine.choose_runtime("cpu", precision="fp32"))  # folded head
    exact = torch_engine.Segmenter(reference.load_model(checkpoint_dir), contract,
                                runtime=torch_engine.choose_runtime("cpu", precision="exact"))
    nominal_gflop, executed_gflop = forward_gflop(ref_model, size), forward_gflop(torch_fp32.model, size)
    openvino = importlib.util.find_spec("openvino") is not None
    if openvino:  # a cold-cache conversion, timed into a scratch folder (torch already loaded)
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            ovr.convert(torch_fp32.model, contract, Path(tmp) / "converted")
            rows.append(Row("engines", "OpenVINO conversion of the checkpoint, once (cold cache, torch loaded)",
                            time.perf_counter() - started, "s", note="then cached by weights sha256, shape policy, version"))
        rows += [Row("engines", f"installed size of {name}", package_mib(name), "MiB") for name in ("openvino", "torch")]
    server.MODEL.configure(str(checkpoint_dir))
    ours = server.MODEL.get()  # the machine's default engine, as the app runs it
    log(f"runtime: {ours.runtime.describe()}; GFLOP/forward {nominal_gflop:.1f} nominal, {executed_gflop:.1f} executed")

    raw = read_slice(scan.slice_file)
    x1, x8 = ours.preprocess(raw[None]), ours.preprocess(scan.voxels[:BATCH])
    with torch.inference_mode():
        fast_logits = ours.forward(x1)
        ref_logits = ref_model(pixel_values=reference.preprocess(Image.open(scan.slice_file)))

    def ours_without_model():  # the handler with the forward pass replaced by its precomputed result
        ours.forward = lambda x: fast_logits
        try:
            slice_tab.segment(str(scan.slice_file))
        finally:
            del ours.forward

    # Each engine and precision on its own inputs (torch tensors or numpy arrays), side by side.
    paths = {"torch fp32 (folded head)": torch_fp32}
    if openvino:
        paths["OpenVINO f32"] = ours if ours.runtime.engine == "openvino" else OpenVinoSegmenter.load(checkpoint_dir)
        if machine.native_bf16:
            paths["OpenVINO bf16 (opt-in)"] = OpenVinoSegmenter.load(checkpoint_dir, precision="bf16")
    if machine.native_bf16 or arch == "tiny":  # emulated bf16 B4 would take minutes a call
        paths["torch bf16 autocast (opt-in)"] = torch_engine.Segmenter(
            reference.load_model(checkpoint_dir), contract, runtime=torch_engine.choose_runtime("cpu", precision="bf16"))
    inputs = {name: (seg.preprocess(raw[None]), seg.preprocess(scan.voxels[:BATCH])) for name, seg in paths.items()}

    def canned_model(pixel_values):
        return ref_logits

    variants = {
        "ref": lambda: reference.predict_file(ref_model, scan.slice_file, size),
        "ours": lambda: slice_tab.segment(str(scan.slice_file)),
        "ours pre/post": ours_without_model,
        "ref pre/post": lambda: reference.predict_file(canned_model, scan.slice_file, size),
        "model exact b1": lambda: exact.forward(exact.preprocess(raw[None])),
        "model fast b1": lambda: ours.forward(x1),
        "model fast b8": lambda: ours.forward(x8),
    }
    for name, seg in paths.items():
        variants[f"{name} b1"] = lambda seg=seg, x=inputs[name][0]: seg.forward(x)
        if "opt-in" not in name:
            variants[f"{name} b{BATCH}"] = lambda seg=seg, x=inputs[name][1]: seg.forward(x)
    with torch.inference_mode():
        times = round_robin(variants, repeats)
    for name in list(times):
        if name.endswith(f" b{BATCH}"):
            times[name] = [t / BATCH for t in times[name]]
    m = medians(times)
    eff = executed_gflop / m["model fast b1"] / fp32_peak
    rows += [
        Row("in process", "reference: blog steps, fp32 eager (1 slice)", m["ref"], "s", times["ref"]),
        Row("in process", "ours: /segment handler, slice_tab.segment (1 slice)", m["ours"], "s", times["ours"],
            note=f"{m['ref'] / m['ours']:.2f}× faster than the reference"),
        Row("in process", "reference pre/post: its steps, forward pass precomputed", m["ref pre/post"], "s",
            times["ref pre/post"]),
        Row("in process", "ours pre/post: the handler, forward pass precomputed", m["ours pre/post"], "s",
            times["ours pre/post"], note="decode, intensity, resize, upsample, decide, table, mask PNG, overlay"),
        Row("model only", "exact fp32 eager (torch), batch 1", m["model exact b1"], "s/slice", times["model exact b1"],
            note=f"{nominal_gflop / m['model exact b1']:.1f} GFLOP/s"),
        Row("model only", f"chosen path ({ours.runtime.engine}), batch 1", m["model fast b1"], "s/slice",
            times["model fast b1"], note=f"{m['model exact b1'] / m['model fast b1']:.2f}× exact; "
                                         f"{executed_gflop / m['model fast b1']:.1f} GFLOP/s executed = {eff:.0%} of the "
                                         "best measured fp32 GEMM"),
        Row("model only", f"chosen path ({ours.runtime.engine}), batch {BATCH}", m["model fast b8"], "s/slice",
            times["model fast b8"], note=f"{m['model exact b1'] / m['model fast b8']:.2f}× exact b1; "
                                         f"{executed_gflop / m['model fast b8'] / fp32_peak:.0%} of the best fp32 GEMM"),
    ]
    for name in variants:
        if name.rsplit(" b", 1)[0] in paths:
            peak, kind = (bf16_peak, "bf16 matmul peak") if "bf16" in name else (fp32_peak, "best fp32 GEMM")
            batch = name.rsplit(" b", 1)[1]
            # OpenVINO's model has a static batch of 1: a call with 8 slices runs 8 inferences.
            shown = f"batch {batch}" if batch == "1" or name.startswith("torch") else f"{batch} slices a call, one inference each"
            rows.append(Row("engines", f"{name.rsplit(' b', 1)[0]}, {shown}", m[name], "s/slice", times[name],
                            note=f"{m['model exact b1'] / m[name]:.2f}× exact b1; "
                                 f"{executed_gflop / m[name] / peak:.0%} of the {kind}"))
    if not any("bf16" in name for name in paths):
        rows.append(Row("engines", "bf16 (opt-in), batch 1", None, "s/slice",
                        note=f"not run: bf16 emulated here, matmul {fp32_peak / bf16_peak:.0f}× slower than fp32"))

    # One scan through the core, batched. After each batch, one slice through the reference, so
    # that the two rates see the same load from other processes (a shared 2-vCPU machine drifts).
    ours_s = ref_s = 0.0
    ref_slices = 0
    for start in range(0, len(scan.voxels), ours.batch_size):
        t0 = time.perf_counter()
        ours.predict(scan.voxels[start:start + ours.batch_size])
        t1 = time.perf_counter()
        reference.predict_labels(ref_model, Image.fromarray(scan.voxels[start]).convert("RGB"), size)
        ours_s, ref_s, ref_slices = ours_s + t1 - t0, ref_s + time.perf_counter() - t1, ref_slices + 1
    n = len(scan.voxels)
    scan_rate, ref_rate = n / ours_s, ref_slices / ref_s
    rows += [
        Row("scan", f"ours: {n} slices of 266², {type(ours).__name__}.predict, {ours.batch_size} slices a call", scan_rate,
            "slices/s", note=f"{ours_s:.1f} s total; {scan_rate / ref_rate:.2f}× the reference's slices/s"),
        Row("scan", f"reference: one slice after each of our batches ({ref_slices} slices)", ref_rate, "slices/s"),
        Row("efficiency", "scan, executed (folded head's FLOPs × slices/s)", executed_gflop * scan_rate, "GFLOP/s",
            note=f"{executed_gflop * scan_rate / fp32_peak:.0%} of the best fp32 GEMM"),
        Row("efficiency", "reference, in process", nominal_gflop * ref_rate, "GFLOP/s",
            note=f"{nominal_gflop * ref_rate / fp32_peak:.0%} of the best fp32 GEMM"),
        Row("memory", "benchmark process (both models, the scan)", peak_rss_mib(), "MiB peak RSS"),
    ]
    server.MODEL.configure(None)
    return rows, InProcess(runtime=ours.runtime.describe(), nominal_gflop=nominal_gflop, executed_gflop=executed_gflop,
                           fp32_peak=fp32_peak, bf16_peak=bf16_peak, model_b1_s=m["model fast b1"],
                           model_exact_s=m["model exact b1"], prepost_s=m["ours pre/post"],
                           ref_prepost_s=m["ref pre/post"], scan_rate=scan_rate, ref_rate=ref_rate)
