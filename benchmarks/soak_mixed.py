"""Mixed soak: several clients call /segment, /segment_scan and /compare_days on one local server.

    python -m benchmarks.soak_mixed [--clients 8] [--calls 1000] [--engine torch|openvino] [--identical-only]
                                    [--name soak-mixed] [--note "which code the server ran"]

``python app.py`` serves a tiny model on 127.0.0.1, in its own temporary folder. The clients run in
rounds. In each round every client calls ``/segment`` twice on the same slice (identical outputs across
clients), ``/segment`` once on a slice of its own, ``/segment_scan`` on one of two 16-slice studies, and
every third round ``/compare_days`` on the same two 16-slice "days". After each call the client
downloads every output file, as ``gradio_client`` does with ``download_files=True``, and a file that
comes back short or empty is a failure: that is how issue #26 showed ("peer closed connection without
sending complete message body"). After each round the server's RSS (its process and children) is
recorded. ``--identical-only`` keeps only the identical ``/segment`` calls (the quickest reproduction).

Writes ``benchmarks/results/<name>.json`` and ``.md``. Exit status 1 when a call failed.
Needs the real slices of ``../shared/data``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VOLUME = REPO.parent / "shared" / "data" / "scans" / "volume_266x266"
STUDY_SLICES = 16
DAYS_EVERY = 3
QUEUE_FULL = "Queue is full"


@dataclass(frozen=True)
class MixedInputs:
    """What the clients upload: one slice all of them send, slices of their own, two studies, two days."""

    shared_slice: Path
    slices: list[Path]
    studies: list[list[Path]]
    day_a: list[Path]
    day_b: list[Path]

    @classmethod
    def from_volume(cls, volume: Path = VOLUME) -> MixedInputs:
        files = sorted(volume.glob("*.png"))
        if len(files) < 64:
            raise FileNotFoundError(f"the mixed soak needs the real slices of {volume} (../shared/data)")
        middle = len(files) // 2
        window = lambda start: files[start:start + STUDY_SLICES]  # noqa: E731
        return cls(files[middle], files[middle - 24:middle + 24], [window(middle - 16), window(middle)],
                   window(middle - 8), window(middle - 4))


@dataclass(frozen=True)
class Schedule:
    """One client's calls in a round: ``identical`` /segment calls on the shared slice; with ``own``, one
    /segment on a slice of its own and one /segment_scan; /compare_days every ``days_every`` rounds
    (round 1 included; 0: never) by the first ``days_clients`` clients (None: all)."""

    identical: int = 2
    own: bool = True
    days_every: int = DAYS_EVERY
    days_clients: int | None = None


#: The soak's default (one identical call a round instead of two did not show the race before the fix:
#: benchmarks/results/soak-mixed-before1.json), and ``--identical-only``: the quickest reproduction.
MIXED, IDENTICAL_ONLY = Schedule(), Schedule(identical=3, own=False, days_every=0)


@dataclass(frozen=True)
class Call:
    """One call's outcome: ``answered``, ``refused`` (queue full) or ``failed`` with its message."""

    endpoint: str
    outcome: str
    seconds: float
    files: int = 0
    message: str = ""


def _file_data(value, where: str = "output"):
    """``(where, url)`` of every file in a ``gradio_client`` result (``download_files=False``)."""
    if isinstance(value, dict):
        if isinstance(value.get("url"), str) and "path" in value:
            yield where, value["url"]
        for key, item in value.items():
            yield from _file_data(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _file_data(item, f"{where}[{i}]")


def download_outputs(http, result) -> int:
    """Download every output file of ``result``; raises ``RuntimeError`` naming the file that came back
    short (httpx checks the body against Content-Length) or empty (truncated before it was opened)."""
    count = 0
    for where, url in _file_data(result):
        name = url.rsplit("/", 1)[-1]
        try:
            response = http.get(url)
            response.raise_for_status()
        except Exception as err:  # noqa: BLE001 - re-raised with the file's place in the outputs
            raise RuntimeError(f"downloading {where} ({name}): {type(err).__name__}: {err}") from None
        if not response.content:
            raise RuntimeError(f"downloading {where} ({name}): an empty file")
        count += 1
    return count


class MixedClient:
    """One visitor: a ``gradio_client.Client`` and an HTTP client for its downloads."""

    def __init__(self, url: str):
        import httpx
        from gradio_client import Client

        self.client = Client(url, verbose=False, download_files=False)
        self.http = httpx.Client(timeout=60)

    def call(self, endpoint: str, *args) -> Call:
        from gradio_client import handle_file

        uploads = [[handle_file(str(p)) for p in a] if isinstance(a, list) else handle_file(str(a)) for a in args]
        began = time.perf_counter()
        try:
            result = self.client.predict(*uploads, api_name=endpoint)
            files = download_outputs(self.http, result)
        except Exception as err:  # noqa: BLE001 - every outcome is sorted and reported
            message = f"{type(err).__name__}: {err}"
            outcome = "refused" if QUEUE_FULL in message else "failed"
            return Call(endpoint, outcome, time.perf_counter() - began, message=message)
        return Call(endpoint, "answered", time.perf_counter() - began, files)

    def round(self, inputs: MixedInputs, client_index: int, round_index: int, schedule: Schedule) -> list[Call]:
        """One round of this client's calls, as ``schedule`` says."""
        calls = [self.call("/segment", inputs.shared_slice) for _ in range(schedule.identical)]
        if schedule.own:
            calls.append(self.call("/segment", inputs.slices[(client_index * 7 + round_index) % len(inputs.slices)]))
            calls.append(self.call("/segment_scan", inputs.studies[(client_index + round_index) % len(inputs.studies)]))
        if (schedule.days_every and round_index % schedule.days_every == 0
                and (schedule.days_clients is None or client_index < schedule.days_clients)):
            calls.append(self.call("/compare_days", inputs.day_a, inputs.day_b))
        return calls

    def close(self) -> None:
        self.http.close()
        self.client.close()


def server_rss_parts(pid: int) -> tuple[int, int]:
    """RSS in bytes of the process ``pid``, and of all its children together (the model process)."""
    import psutil

    proc = psutil.Process(pid)
    children = 0
    for child in proc.children(recursive=True):
        try:
            children += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return proc.memory_info().rss, children


def server_rss(pid: int) -> int:
    """RSS in bytes of the process ``pid`` and all its children (the model process among them)."""
    return sum(server_rss_parts(pid))


def run_rounds(url: str, inputs: MixedInputs, clients: int, rounds: int | None = None, calls: int | None = None,
               schedule: Schedule = MIXED, after_round=None) -> list[list[Call]]:
    """``clients`` threads run rounds until ``rounds`` are done or ``calls`` calls are made; returns each
    round's calls. All clients start a round together; ``after_round(index)`` runs between rounds."""
    per_round: list[list[Call]] = []
    lock = threading.Lock()
    stop = threading.Event()
    current: list[Call] = []

    def end_of_round():
        per_round.append(list(current))
        current.clear()
        if after_round:
            after_round(len(per_round) - 1)
        made = sum(len(r) for r in per_round)
        if (rounds is not None and len(per_round) >= rounds) or (calls is not None and made >= calls):
            stop.set()

    barrier = threading.Barrier(clients, action=end_of_round)
    errors: list[BaseException] = []

    def visitor(index: int):
        client = MixedClient(url)
        try:
            round_index = 0
            while not stop.is_set():
                done = client.round(inputs, index, round_index, schedule)
                with lock:
                    current.extend(done)
                barrier.wait(timeout=900)
                round_index += 1
        except BaseException as err:  # a broken barrier or a client that could not connect
            errors.append(err)
            barrier.abort()
        finally:
            client.close()

    threads = [threading.Thread(target=visitor, args=(i,), name=f"client-{i}", daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"a client stopped: {errors[0]!r}")
    return per_round


def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _percentiles(values: list[float]) -> dict[str, float]:
    import numpy as np

    if not values:
        return {}
    p50, p95, worst = np.percentile(values, [50, 95, 100])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "max": round(float(worst), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--calls", type=int, default=1000, help="run rounds until at least this many calls are made")
    parser.add_argument("--engine", choices=("torch", "openvino"), help="UWMGI_ENGINE of the server (default: its own choice)")
    parser.add_argument("--identical-only", action="store_true", help="only /segment on the one shared slice")
    parser.add_argument("--name", default="soak-mixed", help="results file name, without extension")
    parser.add_argument("--note", default="", help="a line saying which code the server ran, kept in the results")
    args = parser.parse_args(argv)

    from benchmarks.measure import RESULTS, benchmark_checkpoint
    from benchmarks.served import Server

    inputs = MixedInputs.from_volume()
    commit = _git_commit()  # the code the server starts with
    sandbox = Path(tempfile.mkdtemp(prefix="soak-mixed-"))
    (sandbox / "gradio").mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "TMPDIR": str(sandbox), "GRADIO_TEMP_DIR": str(sandbox / "gradio")}
    if args.engine:
        env["UWMGI_ENGINE"] = args.engine
    checkpoint = benchmark_checkpoint("tiny")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped soak stops its server too (finally below)
    server = Server(["app.py", "--model", str(checkpoint)], env, name="soak-mixed").wait_ready()
    rss: list[tuple[int, int]] = []
    round_ends: list[float] = []
    load = os.getloadavg()[0]
    began = time.perf_counter()

    def after_round(index: int):
        rss.append(server_rss_parts(server.proc.pid))
        round_ends.append(time.perf_counter() - began)
        print(f"round {index + 1}: {round_ends[-1]:.0f} s, server RSS {sum(rss[-1]) / 2**20:.0f} MiB "
              f"(app {rss[-1][0] / 2**20:.0f}, children {rss[-1][1] / 2**20:.0f})", flush=True)

    try:
        per_round = run_rounds(server.url, inputs, args.clients, calls=args.calls,
                               schedule=IDENTICAL_ONLY if args.identical_only else MIXED, after_round=after_round)
    finally:
        wall = time.perf_counter() - began
        log = server.output(200_000)
        server.stop()
        shutil.rmtree(sandbox, ignore_errors=True)
    engine = next((line.split("model: ", 1)[1] for line in log.splitlines() if "uwmgi.app: model: " in line), "unknown")
    calls = [c for r in per_round for c in r]
    by_endpoint = {}
    for endpoint in sorted({c.endpoint for c in calls}):
        mine = [c for c in calls if c.endpoint == endpoint]
        by_endpoint[endpoint] = {**collections.Counter(c.outcome for c in mine),
                                 "files_downloaded": sum(c.files for c in mine),
                                 "latency_s": _percentiles([c.seconds for c in mine if c.outcome == "answered"])}
    failures = [{"round": i + 1, "endpoint": c.endpoint, "message": c.message}
                for i, r in enumerate(per_round) for c in r if c.outcome == "failed"]
    rss_mib = [round(sum(parts) / 2**20, 1) for parts in rss]
    warm = min(5, len(rss_mib))  # round 5 (1-based) is the baseline after warm-up
    result = {
        "command": "python -m benchmarks.soak_mixed " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "git_commit": commit,
        "note": args.note,
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "load_average_at_start": round(load, 2),
        "engine": engine,
        "checkpoint": "tiny random SegFormer (benchmarks.measure.benchmark_checkpoint('tiny'))",
        "clients": args.clients,
        "identical_only": args.identical_only,
        "rounds": len(per_round),
        "calls": len(calls),
        "answered": sum(c.outcome == "answered" for c in calls),
        "refused_queue_full": sum(c.outcome == "refused" for c in calls),
        "failed": len(failures),
        "files_downloaded": sum(c.files for c in calls),
        "wall_s": round(wall, 1),
        "by_endpoint": by_endpoint,
        "failures": failures,
        "rss_mib_per_round": rss_mib,
        "rss_mib_per_round_app_process": [round(app / 2**20, 1) for app, _ in rss],
        "rss_mib_per_round_children": [round(children / 2**20, 1) for _, children in rss],
        "round_end_s": [round(t, 1) for t in round_ends],
        "rss_growth_mib_round5_to_end": round(rss_mib[-1] - rss_mib[warm - 1], 1) if rss_mib else None,
        "rss_max_mib_after_round5": max(rss_mib[warm - 1:]) if rss_mib else None,
        "rss_max_growth_mib_after_round5": round(max(rss_mib[warm - 1:]) - rss_mib[warm - 1], 1) if rss_mib else None,
    }
    lines = [f"`{result['command'].strip()}`, {result['date_utc']} UTC, commit {result['git_commit']}; "
             f"{result['cpu_model']}, {result['cpus']} CPUs, load average {result['load_average_at_start']} at the start",
             *([args.note] if args.note else []), f"Engine: {engine}", "",
             f"{result['calls']} calls by {args.clients} clients in {result['rounds']} rounds, {result['wall_s']:.0f} s: "
             f"{result['answered']} answered, {result['refused_queue_full']} refused (queue full), "
             f"{result['failed']} failed; {result['files_downloaded']} output files downloaded.", "",
             "| endpoint | answered | refused | failed | files | latency p50 / p95 / max (s) |", "|---|---|---|---|---|---|"]
    for endpoint, row in by_endpoint.items():
        lat = row["latency_s"]
        lines.append(f"| {endpoint} | {row.get('answered', 0)} | {row.get('refused', 0)} | {row.get('failed', 0)} | "
                     f"{row['files_downloaded']} | {lat.get('p50', '-')} / {lat.get('p95', '-')} / {lat.get('max', '-')} |")
    if rss_mib:
        lines += ["", f"Server RSS (process and children), MiB, after each round: {', '.join(f'{v:.0f}' for v in rss_mib)}.",
                  f"From round {warm} to the end: {result['rss_growth_mib_round5_to_end']:+.0f} MiB "
                  f"(the most after round {warm}: {result['rss_max_mib_after_round5']:.0f} MiB, "
                  f"{result['rss_max_growth_mib_after_round5']:+.0f} MiB)."]
    for message, n in collections.Counter(f"{f['endpoint']}: {f['message']}" for f in failures).most_common():
        lines.append(f"- failed ×{n}: {message}")
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / f"{args.name}.md").write_text(text + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
