"""What ITK's morphological contour interpolation costs to install and import; writes docs/itk_cost.json.

    python docs/itk_cost.py [--work /tmp/itk-cost]

Issue #24 asks to measure before choosing ``itk-morphologicalcontourinterpolation`` for "fill between
slices". In a throwaway virtual environment (never the project's), with the interpreter running this
script: ``pip download`` the package with its dependencies (the wheels' sizes), install them from
there (the installed size of ``itk*``), then in a fresh process time ``import itk`` and a first
``itk.morphological_contour_interpolator`` call on a 5 x 64 x 64 label volume (ITK loads its wrapped
modules lazily, on first use), and the process's peak memory. Then the same first call's job done by
``model.interactive.fill_between`` here, for comparison.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "itk_cost.json"
PACKAGE = "itk-morphologicalcontourinterpolation"
PROBE = """
import json, resource, time
t0 = time.perf_counter()
import itk, numpy as np
t1 = time.perf_counter()
a = np.zeros((5, 64, 64), np.uint8); a[0, 20:40, 20:40] = 1; a[4, 25:45, 25:45] = 1
out = itk.array_from_image(itk.morphological_contour_interpolator(itk.image_from_array(a)))
t2 = time.perf_counter()
print(json.dumps({"import_s": round(t1 - t0, 2), "first_call_s": round(t2 - t1, 2),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                  "filled_slices": int((out[1:4].sum(axis=(1, 2)) > 0).sum())}))
"""


def size_mb(paths) -> float:
    return round(sum(p.stat().st_size for p in paths if p.is_file()) / 1e6, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/itk-cost"))
    args = parser.parse_args()
    wheels, venv = args.work / "wheels", args.work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    start = time.perf_counter()
    subprocess.run([*pip, "download", PACKAGE, "-d", str(wheels)], check=True)
    download_s = time.perf_counter() - start
    subprocess.run([*pip, "install", "--no-index", "--find-links", str(wheels), PACKAGE], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    itk_wheels = [p for p in wheels.glob("*.whl") if p.name.startswith("itk")]
    runs = [json.loads(subprocess.run([str(venv / "bin" / "python"), "-c", PROBE], check=True, capture_output=True,
                                      text=True).stdout) for _ in range(2)]

    import numpy as np

    sys.path.insert(0, str(REPO))
    from model.interactive import fill_between

    masks = np.zeros((1, 5, 64, 64), dtype=bool)
    masks[0, 0, 20:40, 20:40] = masks[0, 4, 25:45, 25:45] = True
    start = time.perf_counter()
    fill_between(masks, 0, 0, 4)
    ours_s = time.perf_counter() - start
    record = {
        "command": "python docs/itk_cost.py",
        "package": PACKAGE,
        "wheels": sorted(p.name for p in wheels.glob("*.whl")),
        "download_mb_itk_wheels": size_mb(itk_wheels),
        "download_seconds": round(download_s, 1),
        "installed_mb_itk": size_mb(p for d in site.glob("itk*") for p in d.rglob("*")),
        "fresh_process_runs": runs,
        "ours_fill_between_first_call_s": round(ours_s, 4),
    }
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
