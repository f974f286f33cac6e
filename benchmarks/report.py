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
    """The performance issue's targets against this run, for this kind of CPU."""
    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    bar = 0.5 if machine.native_bf16 else 0.7
    eff = in_process.batch1_efficiency
    out = [f"- batch 1, chosen path (fp32): {eff:.0%} of the fp32 matmul peak, target ≥ {bar:.0%} on this kind "
           f"of CPU → {verdict(eff >= bar)}"]
    if whole is not None:
        limit = 0.25 if machine.native_bf16 else 0.6
        out.append(f"- whole-process scan ({whole.slices} slices): {whole.ratio:.2f}× the reference's time, target "
                   f"≤ {limit}× → {verdict(whole.ratio <= limit)}")
    if served is not None:
        out.append(f"- cold start ≤ 10 s: {served.cold_start_s:.1f} s → {verdict(served.cold_start_s <= 10)}")
        out.append(f"- /segment served: {served.ratio:.2f}× the reference's latency "
                   f"(serving floor with a tiny model: {served.floor_s / served.ref_s:.2f}×)")
    out.append(f"- scan in process: {in_process.scan_rate / in_process.ref_rate:.2f}× the reference's slices/s")
    return "\n".join(out)


def header(machine: Machine, arch: str, in_process: InProcess) -> str:
    return (f"Machine: {machine.describe()}; load average {os.getloadavg()[0]:.1f} at the end.\n"
            f"Model: {arch} architecture, {in_process.nominal_gflop:.1f} GFLOP/forward nominal, "
            f"{in_process.executed_gflop:.1f} executed on the chosen path.\nChosen path: {in_process.runtime}")
