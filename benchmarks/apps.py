"""Served: cold starts, then one slice through each app in turn, over HTTP with ``gradio_client``.

The blog-shaped reference app (``benchmarks.reference_app``) against ``python app.py``, plus our
app serving a tiny model (what ``/segment`` costs when the model costs nothing) and a canned
endpoint (pure serving overhead).
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.inprocess import InProcess
from benchmarks.measure import REPO, Row, medians, peak_rss_mib, round_robin
from benchmarks.served import Server


@dataclass(frozen=True)
class Served:
    ours_s: float
    ref_s: float
    floor_s: float  # our app with a tiny model
    cold_start_s: float  # ours: process start → first /segment answer

    @property
    def ratio(self) -> float:
        return self.ours_s / self.ref_s


def import_seconds(statement: str, env: dict[str, str]) -> float:
    """Seconds for a fresh interpreter to run ``statement`` (an import)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True, cwd=REPO, env=env)
    return time.perf_counter() - start


def measure(checkpoint_dir: Path, tiny_dir: Path, size: int, slice_file: Path, repeats: int,
            in_process: InProcess, env: dict[str, str], reference_passive: bool, log=print) -> tuple[list[Row], Served]:
    """Cold starts one at a time, then requests alternating between the servers.

    ``env`` is the environment the user started with: each app sets its own thread policy.
    """
    env = {**env, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    specs = {
        "ours": (["app.py", "--model", str(checkpoint_dir)], env),
        "reference": (["-m", "benchmarks.reference_app", "--model", str(checkpoint_dir), "--size", str(size)], env),
    }
    if reference_passive:
        specs["reference, passive OpenMP"] = (specs["reference"][0], {**env, "OMP_WAIT_POLICY": "PASSIVE"})
    specs["ours, torch engine"] = (specs["ours"][0], {**env, "UWMGI_ENGINE": "torch"})  # before issue #16
    specs["ours, tiny model"] = (["app.py", "--model", str(tiny_dir)], env)
    endpoint = {"ours": "/segment", "ours, tiny model": "/segment", "ours, torch engine": "/segment"}
    rows, servers, cold = [], {}, {}
    try:
        for name, (argv, server_env) in specs.items():
            server = servers[name] = Server(argv, server_env, name=name).wait_ready()
            server.call(endpoint.get(name, "/predict"), slice_file)
            cold[name] = time.perf_counter() - server.started
            log(f"{name}: first answer {cold[name]:.1f} s after process start")
        calls = {name: (lambda s=s, e=endpoint.get(name, "/predict"): s.call(e, slice_file))
                 for name, s in servers.items()}
        calls["serving overhead"] = lambda: servers["reference"].call("/precomputed", slice_file)
        times = round_robin(calls, repeats, warmup=0)
        m = medians(times)
        served = Served(ours_s=m["ours"], ref_s=m["reference"], floor_s=m["ours, tiny model"], cold_start_s=cold["ours"])
        rows += [
            Row("served", "reference: blog-shaped app /predict (1 slice)", m["reference"], "s", times["reference"]),
            Row("served", "ours: app.py /segment (1 slice)", m["ours"], "s", times["ours"],
                note=f"{served.ratio:.2f}× the reference's latency"),
        ]
        rows.append(Row("served", "ours, UWMGI_ENGINE=torch: app.py /segment (1 slice)", m["ours, torch engine"], "s",
                        times["ours, torch engine"], note=f"{m['ours, torch engine'] / m['reference']:.2f}× the "
                                                           "reference's latency (the engine before OpenVINO)"))
        if reference_passive:
            key = "reference, passive OpenMP"
            rows.append(Row("served", "reference with OMP_WAIT_POLICY=PASSIVE", m[key], "s", times[key],
                            note=f"ours is {m['ours'] / m[key]:.2f}× this"))
        rows += [
            Row("served", "serving overhead: handler returns a canned 266² AnnotatedImage", m["serving overhead"], "s",
                times["serving overhead"]),
            Row("served", "ours with a tiny model: /segment's serving floor", served.floor_s, "s",
                times["ours, tiny model"], note=f"{served.floor_s / served.ref_s:.2f}× the reference's latency"),
        ]
        # Shares of each served call. Serving is the canned call, measured in the same alternation;
        # the rest is split between model and pre/post in the proportion measured in process
        # (the two phases run minutes apart, and the load from other processes drifts).
        for name, model_s, prepost_s in (("ours", in_process.model_b1_s, in_process.prepost_s),
                                         ("reference", in_process.model_exact_s, in_process.ref_prepost_s)):
            compute = max(m[name] - m["serving overhead"], 0.0)
            model_share = compute * model_s / (model_s + prepost_s)
            rows += [
                Row("where the time goes", f"{name}: model", model_share, "s", note=f"{model_share / m[name]:.0%} of its served call"),
                Row("where the time goes", f"{name}: pre/post-processing", compute - model_share, "s",
                    note=f"{(compute - model_share) / m[name]:.0%}"),
                Row("where the time goes", f"{name}: serving (the canned call)", m["serving overhead"], "s",
                    note=f"{m['serving overhead'] / m[name]:.0%}"),
            ]
        rows += [Row("cold start", f"{name}: process start → first answer", t, "s") for name, t in cold.items()
                 if name != "ours, tiny model"]
        # The reference imports both in one process; ours imports the model's side in its model process.
        ui = import_seconds("import gradio, gradio_client", env)
        model = import_seconds("from transformers import SegformerForSemanticSegmentation", env)
        openvino = import_seconds("import openvino", env)
        rows += [Row("cold start", "imports: python -c 'import gradio, gradio_client'", ui, "s", note="the app's process"),
                 Row("cold start", "imports: python -c 'from transformers import SegformerForSemanticSegmentation'",
                     model, "s", note=f"the model's process; in one process, as the reference does: ~{ui + model:.1f} s"),
                 Row("cold start", "imports: python -c 'import openvino'", openvino, "s",
                     note="the model's process with a cached OpenVINO model (no torch)")]
        rows += [Row("memory", f"{name} server", peak_rss_mib(s.proc.pid), "MiB peak RSS") for name, s in servers.items()
                 if name != "ours, tiny model"]
    finally:
        for server in servers.values():
            server.stop(10)
    return rows, served
