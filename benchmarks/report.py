"""The report: one markdown table, the header naming the machine, and the targets against this run."""

from __future__ import annotations

import os

from benchmarks.apps import Served
from benchmarks.inprocess import InProcess
from benchmarks.measure import Machine, Row
from benchmarks.whole import Whole


def format_table(rows: list[Row]) -> str:
    """One markdown table, grouped by section."""
    lines = ["| section | measurement | median | unit | spread (min–max) | note |", "|---|---|---:|---|---|---|"]
    for r in rows:
        value = "skipped" if r.value is None else f"{r.value:.3g}" if abs(r.value) < 1000 else f"{r.value:.0f}"
        n = f" (n={len(r.samples)})" if len(r.samples) > 1 else ""
        lines.append(f"| {r.section} | {r.name} | {value} | {r.unit} | {r.spread()}{n} | {r.note} |")
    return "\n".join(lines)


def targets(machine: Machine, in_process: InProcess, whole: Whole | None, served: Served | None) -> str:
    """Issue #16's targets against this run (whole processes, against the blog's pipeline in the same run)."""
    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    eff = in_process.batch1_efficiency
    out = [f"- batch 1, chosen path: {eff:.0%} of the best measured fp32 GEMM rate, target ≥ 70% → {verdict(eff >= 0.7)}"]
    if whole is not None:
        out.append(f"- whole-process scan ({whole.slices} slices, python -m model.predict): {whole.ratio:.2f}× the "
                   f"reference's time, target ≤ 0.35× → {verdict(whole.ratio <= 0.35)}; writing the outputs "
                   + (f"{whole.writing_share:.0%} of it, target ≤ 10% → {verdict(whole.writing_share <= 0.1)}"
                      if whole.rest_s >= 0 else "not split this run (≤ 10% target unjudged: load changed between phases)"))
    if served is not None:
        out.append(f"- cold start to the first /segment, warm cache: {served.cold_start_s:.1f} s, target ≤ 3.5 s → "
                   f"{verdict(served.cold_start_s <= 3.5)}")
        out.append(f"- /segment served: {served.ratio:.2f}× the reference's latency, target ≤ 0.45× → "
                   f"{verdict(served.ratio <= 0.45)} (serving floor with a tiny model: {served.floor_s / served.ref_s:.2f}×)")
    out.append(f"- scan in process: {in_process.scan_rate / in_process.ref_rate:.2f}× the reference's slices/s")
    return "\n".join(out)


def header(machine: Machine, arch: str, in_process: InProcess) -> str:
    return (f"Machine: {machine.describe()}; load average {os.getloadavg()[0]:.1f} at the end.\n"
            f"Model: {arch} architecture, {in_process.nominal_gflop:.1f} GFLOP/forward nominal, "
            f"{in_process.executed_gflop:.1f} executed on the chosen path.\nChosen path: {in_process.runtime}")
