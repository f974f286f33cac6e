"""Soak: many concurrent clients calling /segment on a local server until N calls are done.

    python -m benchmarks.soak [--clients 16] [--calls 1000] [--engine torch|openvino]

``python app.py`` serves a tiny model on 127.0.0.1 (the model costs nothing, so the queue,
uploads and connections are what is soaked). Every outcome is sorted: answered, refused as
queue-full (documented: README "queue"), or failed; any failure's message is printed in full
(once under a burst one call ended with "peer closed connection without sending complete
message body"). Writes ``benchmarks/results/soak.md``. Exit status 1 when a call failed.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import threading
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--engine", choices=("torch", "openvino"), help="UWMGI_ENGINE of the server (default: its own choice)")
    args = parser.parse_args(argv)

    import numpy as np
    from gradio_client import Client, handle_file

    from benchmarks.measure import RESULTS, benchmark_checkpoint, benchmark_scan
    from benchmarks.served import Server

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    if args.engine:
        env["UWMGI_ENGINE"] = args.engine
    server = Server(["app.py", "--model", str(benchmark_checkpoint("tiny"))], env, name="soak").wait_ready()
    upload = handle_file(str(benchmark_scan(1).slice_file))
    remaining = [args.calls]
    outcomes: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()

    def client_loop():
        client = Client(server.url, verbose=False, download_files=False)
        while True:
            with lock:
                if remaining[0] == 0:
                    break
                remaining[0] -= 1
            began = time.perf_counter()
            try:
                overlay, *_ = client.predict(upload, api_name="/segment")
                ok = len(overlay["annotations"]) == 3
                kind, detail = ("answered", time.perf_counter() - began) if ok else ("failed", "wrong annotations")
            except Exception as err:  # noqa: BLE001 - every outcome is sorted and reported
                message = f"{type(err).__name__}: {err}"
                kind, detail = ("refused (queue full)", None) if "Queue is full" in message else ("failed", message)
            with lock:
                outcomes[kind] += 1
                if kind == "answered":
                    latencies.append(detail)
                elif kind == "failed":
                    failures.append(detail)
        client.close()

    load = os.getloadavg()[0]
    began = time.perf_counter()
    threads = [threading.Thread(target=client_loop) for _ in range(args.clients)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        wall = time.perf_counter() - began
        log_tail = server.output(4000)
        server.stop()
    p50, p95, worst = np.percentile(latencies, [50, 95, 100]) if latencies else (float("nan"),) * 3
    command = f"python -m benchmarks.soak --clients {args.clients} --calls {args.calls}" + (
        f" --engine {args.engine}" if args.engine else "")
    started = f"`{command}`, {time.strftime('%Y-%m-%d %H:%M')}, load average {load:.1f} at the start, {os.cpu_count()} CPUs"
    lines = [started, "",
             (f"{args.calls} calls of /segment by {args.clients} concurrent clients in {wall:.0f} s: "
              + ", ".join(f"{n} {kind}" for kind, n in sorted(outcomes.items()))
              + f"; latency of answered calls p50 {p50:.2f} s, p95 {p95:.2f} s, max {worst:.2f} s.")]
    for message, n in collections.Counter(failures).most_common():
        lines.append(f"- failed ×{n}: {message}")
    if failures:
        lines += ["", "Server log tail:", "```", log_tail, "```"]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.md").write_text(text + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
