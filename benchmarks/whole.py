"""Whole processes: a scan as users run it, start-up and writing included.

``python -m model.predict FOLDER --out DIR`` against the blog's pipeline over the same files as
one process (``python -m benchmarks.reference``), alternating. A third process only starts up
(imports and loads the checkpoint), so the table can say where the gap between the whole-process
time and the in-process scan rate goes.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.inprocess import InProcess
from benchmarks.measure import REPO, Row, medians, round_robin

STARTUP_ONLY = ("from model.engines.machine import prefer_sleeping_threads; prefer_sleeping_threads(); "
                "from model.engines.choose import load_segmenter; import sys; load_segmenter(sys.argv[1])")


@dataclass(frozen=True)
class Whole:
    ours_s: float
    ref_s: float
    slices: int
    rest_s: float = 0.0  # ours, neither start-up nor the model: reading, stacking and writing the outputs

    @property
    def ratio(self) -> float:
        return self.ours_s / self.ref_s

    @property
    def writing_share(self) -> float:
        return self.rest_s / self.ours_s


def measure(checkpoint_dir: Path, folder: Path, repeats: int, in_process: InProcess, env: dict[str, str],
            log=print) -> tuple[list[Row], Whole]:
    slices = len(list(folder.glob("*.png")))
    env = {**env, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with tempfile.TemporaryDirectory() as tmp:
        def process(*argv: str):
            def run():
                # A fresh output folder every call: model.predict skips scans an earlier run finished.
                out = tempfile.mkdtemp(dir=tmp)
                subprocess.run([sys.executable, *(out if a == "OUT" else a for a in argv)], check=True, cwd=REPO,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if "OUT" in argv and not any(Path(out).iterdir()):
                    raise RuntimeError(f"{' '.join(argv[:2])} wrote nothing: the row would time no work")
            return run

        times = round_robin({
            "ours": process("-m", "model.predict", str(folder), "--out", "OUT", "--model", str(checkpoint_dir)),
            "reference": process("-m", "benchmarks.reference", str(folder), "--out", "OUT", "--model", str(checkpoint_dir)),
            "start-up": process("-c", STARTUP_ONLY, str(checkpoint_dir)),
        }, repeats, warmup=0)
    m = medians(times)
    model_s = slices / in_process.scan_rate
    rest = m["ours"] - m["start-up"] - model_s
    whole = Whole(m["ours"], m["reference"], slices, rest)
    log(f"whole process: ours {m['ours']:.1f} s, reference {m['reference']:.1f} s")
    return [
        Row("whole process", f"reference: the blog's pipeline over {slices} files, one process", m["reference"], "s",
            times["reference"]),
        Row("whole process", "ours: python -m model.predict over the same folder", m["ours"], "s", times["ours"],
            note=f"{whole.ratio:.2f}× the reference's time"),
        Row("whole process", "ours, of which start-up: imports and loading the checkpoint", m["start-up"], "s",
            times["start-up"], note=f"{m['start-up'] / m['ours']:.0%}"),
        Row("whole process", "ours, of which the model (the in-process scan rate)", model_s, "s",
            note=f"{model_s / m['ours']:.0%}"),
        Row("whole process", "ours, of which reading, stacking and writing the outputs (the rest)", rest, "s",
            note=f"{rest / m['ours']:.0%}: NIfTI, mask zip, 3D surfaces" if rest >= 0 else
            "negative: the in-process scan ran under heavier load than these processes; no split this run"),
    ], whole
