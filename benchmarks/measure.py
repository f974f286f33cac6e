"""Measuring: the machine, rows of the table, timing loops, peaks, FLOPs, memory, and the inputs.

Every other benchmark module builds on these; nothing here starts a server or writes a report.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from model import checkpoint as ckpt
from model import labels
from model.image import read_slice
from model.engines.torch import CPU_BF16_FLAGS, cpu_flags

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "benchmarks" / ".cache"
RESULTS = REPO / "benchmarks" / "results"
SHARED_DATA = REPO.parent / "shared" / "data"

#: SegFormer-B4 (mit-b4 encoder, as nvidia/segformer-b4-finetuned-ade-512-512) with the blog's 4-class head.
B4 = dict(depths=[3, 8, 27, 3], hidden_sizes=[64, 128, 320, 512], num_attention_heads=[1, 2, 5, 8],
          decoder_hidden_size=768)
#: The tests' tiny architecture: the same machinery in milliseconds.
TINY = dict(depths=[1, 1, 1, 1], hidden_sizes=[8, 8, 16, 16], num_attention_heads=[1, 1, 1, 1],
            decoder_hidden_size=16)
ARCHITECTURES = {"b4": (B4, 288), "tiny": (TINY, 64)}
#: The CPU flags that decide which kernels run, shown with every table.
NOTABLE_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@dataclass(frozen=True)
class Machine:
    """The CPU a table was measured on: tables of different kinds are never compared."""

    model: str
    flags: tuple[str, ...]
    cpus: int
    threads: int

    @classmethod
    def this(cls) -> Machine:
        name = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        present = cpu_flags()
        return cls(name, tuple(f for f in NOTABLE_FLAGS if f in present), os.cpu_count() or 1, torch.get_num_threads())

    @property
    def native_bf16(self) -> bool:
        return bool(CPU_BF16_FLAGS & set(self.flags))

    @property
    def kind(self) -> str:
        """``amx``, ``avx512-bf16`` or ``avx2``: the part of a results file name that says which CPU."""
        if "amx_bf16" in self.flags:
            return "amx"
        return "avx512-bf16" if "avx512_bf16" in self.flags else "avx2"

    def describe(self) -> str:
        return (f"{self.model}, {self.cpus} CPUs ({self.threads} torch threads), flags {' '.join(self.flags) or 'none'}; "
                f"torch {torch.__version__}, OpenMP wait policy {os.environ.get('OMP_WAIT_POLICY', 'unset').lower()}")


@dataclass
class Row:
    """One line of the table: a measured (or derived) quantity."""

    section: str
    name: str
    value: float | None  # None: skipped, with the reason in ``note``
    unit: str
    samples: list[float] = field(default_factory=list)
    note: str = ""

    def spread(self) -> str:
        if len(self.samples) < 2:
            return ""
        return f"{min(self.samples):.3g}–{max(self.samples):.3g}"


def round_robin(variants: dict, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each ``name: fn`` variant, alternating between variants each round.

    Load from other processes then hits every variant alike, so ratios within one call hold even
    on a noisy shared machine.
    """
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(samples) for name, samples in times.items()}


def matmul_peak(dtype: torch.dtype, n: int, repeats: int) -> float:
    """Best GFLOP/s of an ``n×n @ n×n`` matmul: a peak, so the best rather than the median."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def openvino_matmul_peak(n: int, repeats: int) -> float:
    """Best GFLOP/s of an ``n×n @ n×n`` fp32 MatMul compiled by OpenVINO on the CPU, precision pinned to f32."""
    import openvino as ov
    import openvino.opset13 as ops

    a = ops.parameter([n, n], ov.Type.f32)
    b = ops.constant(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    compiled = ov.Core().compile_model(ov.Model([ops.matmul(a, b, False, False)], [a]), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})
    request, x = compiled.create_infer_request(), np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    request.infer({0: x})
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        request.infer({0: x})
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def theoretical_fp32_peak(machine: Machine) -> tuple[float | None, str]:
    """(GFLOP/s, the assumptions) of cores × clock × fp32 FLOP per cycle: a sanity line, not a target.

    FLOP per cycle per core: 2 FMA pipes × vector lanes × 2. AVX-512 on AMD (Zen 4) runs on
    256-bit pipes (8 lanes, 32 FLOP/cycle); on Intel two 512-bit units (64; one-unit SKUs have 32);
    AVX2+FMA 32. The clock is what /proc/cpuinfo reports (a VM often shows the base clock; boost is higher).
    """
    vendor, mhz = "", 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                vendor = line.split(":", 1)[1].strip()
            elif line.startswith("cpu MHz") and not mhz:
                mhz = float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    flags = set(machine.flags)
    if "avx512f" in flags:
        per_cycle, why = (32, "AVX-512 on 256-bit pipes (Zen 4)") if vendor == "AuthenticAMD" else (64, "2× 512-bit FMA")
    elif {"avx2", "fma"} <= flags:
        per_cycle, why = 32, "2× 256-bit FMA"
    else:
        return None, "no FMA vector unit known"
    if not mhz:
        return None, "no clock in /proc/cpuinfo"
    peak = machine.cpus * mhz / 1000 * per_cycle
    return peak, (f"{machine.cpus} cores × {mhz / 1000:.2f} GHz (reported) × {per_cycle} FLOP/cycle ({why}); "
                  f"at a 3.5 GHz boost: {machine.cpus * 3.5 * per_cycle:.0f}")


def package_mib(name: str) -> float:
    """Installed size of a distribution's files (its wheel, unpacked), in MiB."""
    from importlib import metadata

    files = metadata.distribution(name).files or []
    return sum(f.size or 0 for f in files) / 2**20


def forward_gflop(model, size: int) -> float:
    """GFLOP of one forward pass at ``size²``, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(pixel_values=torch.randn(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def peak_rss_mib(pid: int | None = None) -> float:
    """Peak resident memory (VmHWM) of a process and its children (the app's model process), or of this one, in MiB.

    For a server with a model process this is the sum of the two peaks: an upper bound on their joint peak.
    """
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import psutil

    total = 0.0
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
                break
        else:
            raise RuntimeError(f"no VmHWM for pid {proc.pid}")
    return total


def benchmark_checkpoint(arch: str = "b4", seed: int = 0, cache: Path | None = None) -> Path:
    """A contract checkpoint of the architecture with seeded random weights, built once and cached.

    Timing does not depend on the weight values.
    """
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    cache = cache or CACHE
    config_kwargs, size = ARCHITECTURES[arch]
    dst = cache / f"{arch}-seed{seed}"
    if all((dst / name).is_file() for name in ckpt.CONTRACT_FILES):
        return dst
    torch.manual_seed(seed)
    id2label = labels.id2label(False)
    config = SegformerConfig(**config_kwargs, id2label=id2label, label2id=labels.label2id(id2label))
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache))
    ckpt.save_contract(SegformerForSemanticSegmentation(config).eval(), tmp, size=size)
    tmp.rename(dst)
    return dst


@dataclass(frozen=True)
class BenchmarkScan:
    """The scan every row uses: voxels ``(S, 266, 266)``, one slice file, and the folder of all its files."""

    voxels: np.ndarray
    slice_file: Path
    folder: Path
    source: str


def benchmark_scan(slices: int, cache: Path | None = None) -> BenchmarkScan:
    """The real 266² volume from ``../shared/data`` when present (repeated to ``slices``), else a
    seeded synthetic one written as Kaggle-named PNGs; timing does not depend on the content."""
    volume = SHARED_DATA / "scans" / "volume_266x266"
    files = sorted(volume.glob("*.png"))
    if files:
        real = np.stack([read_slice(f) for f in files])
        return BenchmarkScan(real[np.arange(slices) % len(real)], files[len(files) // 2], volume,
                             f"{volume.name} (real, {len(files)} slices)")
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:266, :266]
    body = ((yy - 133) ** 2 / 110**2 + (xx - 133) ** 2 / 125**2 < 1).astype(np.float32)
    voxels = (body[None] * rng.integers(60, 200, (slices, 266, 266))).astype(np.uint8)
    folder = (cache or CACHE) / f"synthetic_266_{slices}"
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(voxels, 1):
        Image.fromarray(image).save(folder / f"slice_{i:04d}_266_266_1.50_1.50.png")
    return BenchmarkScan(voxels, folder / f"slice_{slices // 2 + 1:04d}_266_266_1.50_1.50.png", folder,
                         f"synthetic ({slices} slices)")
