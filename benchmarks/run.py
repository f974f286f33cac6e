"""One command, one table: the blog's pipeline against ours, in process, as whole processes and served.

    python -m benchmarks.run [--quick] [--no-serve] [--no-whole] [--repeats N] [--scan-slices N]

Offline, on a SegFormer-B4-architecture checkpoint with seeded random weights (timing does not
depend on the weight values), cached in ``benchmarks/.cache/``. Variants are measured
round-robin, so load from other processes hits them alike; every time is a median over the
repeats, with the spread (min–max) beside it. Without ``--quick`` the table is also written to
``benchmarks/results/cpu-<kind>.md``, one file per kind of CPU (``avx2``, ``avx512-bf16``, ``amx``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 repeats, a 16-slice scan, one peak size")
    parser.add_argument("--arch", choices=("b4", "tiny"), default="b4")
    parser.add_argument("--repeats", type=int, help="rounds of each alternation (default 5; --quick 2)")
    parser.add_argument("--scan-slices", type=int, help="slices in the in-process scan (default 144; --quick 16)")
    parser.add_argument("--no-serve", action="store_true", help="skip the served apps and the cold start")
    parser.add_argument("--no-whole", action="store_true", help="skip the whole-process scans")
    args = parser.parse_args(argv)
    start_env = dict(os.environ)  # the served apps and whole processes get the user's environment

    from model.engines.machine import prefer_sleeping_threads

    prefer_sleeping_threads()  # this process, as the app's entry points do; before torch loads
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from benchmarks import apps, inprocess, whole
    from benchmarks.measure import ARCHITECTURES, RESULTS, Machine, benchmark_checkpoint, benchmark_scan
    from benchmarks.report import format_table, header, targets

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    repeats = args.repeats or (2 if args.quick else 5)
    machine = Machine.this()
    checkpoint_dir = benchmark_checkpoint(args.arch)
    scan = benchmark_scan(args.scan_slices or (16 if args.quick else 144))
    log(f"{machine.describe()}\ncheckpoint {checkpoint_dir.name}, scan {scan.voxels.shape} ({scan.source})")

    rows, measured = inprocess.measure(checkpoint_dir, args.arch, scan, machine, repeats, args.quick, log)
    whole_run = served = None
    if not args.no_whole:
        whole_rows, whole_run = whole.measure(checkpoint_dir, scan.folder, 1 if args.quick else 2, measured, start_env, log)
        rows += whole_rows
    if not args.no_serve:
        served_rows, served = apps.measure(checkpoint_dir, benchmark_checkpoint("tiny"), ARCHITECTURES[args.arch][1],
                                           scan.slice_file, repeats, measured, start_env,
                                           reference_passive=not args.quick, log=log)
        rows += served_rows
    text = (f"{header(machine, args.arch, measured)}\n\n{format_table(rows)}\n\n"
            f"Targets:\n{targets(machine, measured, whole_run, served)}\n")
    print(text)
    if not args.quick and args.arch == "b4":
        RESULTS.mkdir(exist_ok=True)
        command = "python -m benchmarks.run" + (f" --repeats {args.repeats}" if args.repeats else "")
        (RESULTS / f"cpu-{machine.kind}.md").write_text(f"`{command}`, {time.strftime('%Y-%m-%d %H:%M')}\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
