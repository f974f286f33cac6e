"""What holds the served app's memory under mixed load: the handlers on 8 threads, with and without glibc tuning.

    python -m benchmarks.heap_threads [--rounds 8]

Each variant runs in a fresh process (``mallopt`` must come before the allocations it governs): the
app's own handlers (``/compare_days``, ``/segment``, ``/segment_scan`` on the soak's inputs, torch
engine, tiny checkpoint, the model in process) run 8 at a time on a pool of 8 threads, as Gradio's
worker threads run them, and the process's RSS is read after each round, with the Python heap as
``tracemalloc`` sees it. Variants: glibc's defaults; ``model.serving.bound_native_heap()`` (a fixed
1 MiB mmap threshold, what ``python app.py`` sets); glibc's arenas capped at 2 (``M_ARENA_MAX``).
Writes ``benchmarks/results/heap-threads.json`` and ``.md``. Linux with glibc only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "glibc defaults": "",
    "bound_native_heap (mmap threshold fixed at 1 MiB)": "from model.serving import bound_native_heap; bound_native_heap()",
    "arenas capped at 2 (M_ARENA_MAX)": "import ctypes; ctypes.CDLL(None).mallopt(-8, 2)",
}

_CHILD = """
import gc, json, shutil, sys, tempfile, tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
{setup}
import psutil
import app
from benchmarks.measure import benchmark_checkpoint
from benchmarks.soak_mixed import MixedInputs
from model.serving import Scratch

app.SCRATCH = Scratch(Path(tempfile.mkdtemp(prefix="heap-threads-")), 3600)
app.configure(str(benchmark_checkpoint("tiny")))
inputs = MixedInputs.from_volume()
tracemalloc.start()

def work(i):
    if i % 4 == 0:
        app.compare_days_files([str(p) for p in inputs.day_a], [str(p) for p in inputs.day_b])
    elif i % 4 == 1:
        app.segment(str(inputs.slices[i % len(inputs.slices)]))
    else:
        list(app.segment_scan_files([str(p) for p in inputs.studies[i % 2]]))

rss, python_heap = [], []
with ThreadPoolExecutor(8) as pool:
    for r in range({rounds}):
        list(pool.map(work, range(8 * r, 8 * r + 8)))
        gc.collect()
        rss.append(round(psutil.Process().memory_info().rss / 2**20, 1))
        python_heap.append(round(tracemalloc.get_traced_memory()[0] / 2**20, 1))
shutil.rmtree(app.SCRATCH.root, ignore_errors=True)
print(json.dumps({{"rss_mib": rss, "python_heap_mib": python_heap}}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args(argv)

    from benchmarks.measure import RESULTS
    from benchmarks.soak_mixed import _cpu_model, _git_commit

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "UWMGI_ENGINE": "torch"}
    began = time.perf_counter()
    children = {name: subprocess.Popen([sys.executable, "-c", _CHILD.format(setup=setup, rounds=args.rounds)], cwd=REPO,
                                       env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                for name, setup in VARIANTS.items()}  # side by side, so load from elsewhere hits them alike
    variants = {}
    for name, child in children.items():
        out, _ = child.communicate(timeout=1800)
        if child.returncode != 0:
            raise SystemExit(f"{name}: exited with {child.returncode}")
        variants[name] = json.loads(out.strip().splitlines()[-1])
    result = {"command": "python -m benchmarks.heap_threads " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "git_commit": _git_commit(),
              "cpu_model": _cpu_model(), "cpus": os.cpu_count(), "engine": "torch, in process (tiny checkpoint)",
              "threads": 8, "rounds": args.rounds, "wall_s": round(time.perf_counter() - began, 1), "variants": variants}
    lines = [f"`{result['command'].strip()}`, {result['date_utc']} UTC, commit {result['git_commit']}; "
             f"{result['cpu_model']}, {result['cpus']} CPUs; the three variants ran side by side", "",
             "| variant | RSS after each round of 8 handler calls (MiB) | Python heap (tracemalloc, MiB), first / last |",
             "|---|---|---|"]
    for name, v in variants.items():
        lines.append(f"| {name} | {', '.join(f'{x:.0f}' for x in v['rss_mib'])} | "
                     f"{v['python_heap_mib'][0]} / {v['python_heap_mib'][-1]} |")
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "heap-threads.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "heap-threads.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
