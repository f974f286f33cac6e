"""``python -m train predict`` on 2 CPU processes (DDP, gloo) writes the single-process command's files."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from locations import REPO, free_port
from tiny import make_tiny_checkpoint


def _run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    # One thread per process: the two runs then do the same float arithmetic in the same order.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    env.pop("MODEL", None)
    run = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, timeout=timeout)
    return subprocess.CompletedProcess(run.args, run.returncode, run.stdout.decode(), run.stderr.decode())


@pytest.mark.slow
def test_ddp_predict_shards_by_scan_and_matches_the_single_process_submission(synthetic_kaggle, tmp_path):
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", multi_label=True, size=32, slice_offsets=[-2, 0, 2])
    single, sharded = tmp_path / "single", tmp_path / "ddp"
    one = _run(["model.predict", str(synthetic_kaggle.root), "--out", str(single), "--model", str(checkpoint)])
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run(["train", "predict", str(checkpoint), str(synthetic_kaggle.root), "--out", str(sharded),
                "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"])
    assert two.returncode == 0, two.stderr[-3000:]

    # Sharded by scan, round robin in the cohort's order: each process wrote three whole scans.
    names = sorted(synthetic_kaggle.truth, key=lambda cd: [int(n) for n in re.findall(r"\d+", cd)])
    done = re.findall(r"\[rank (\d)\] (case\d+_day\d+): 8 slices 48×40", two.stdout)
    assert sorted(done) == sorted((str(i % 2), name) for i, name in enumerate(names)), two.stdout

    submission = (sharded / "submission.csv").read_bytes()
    assert submission == (single / "submission.csv").read_bytes()
    assert submission.count(b"\n") == 1 + len(names) * 8 * 3  # every slice id × 3 classes
    assert (sharded / "volumes.csv").read_bytes() == (single / "volumes.csv").read_bytes()
    for name in names:
        assert (sharded / f"{name}_labels.nii.gz").is_file() and (sharded / f"{name}_summary.json").is_file()

    # Fewer scans than processes: the process given none still joins, and the run completes.
    scans = synthetic_kaggle.root / "train" / "case7" / "case7_day0" / "scans"
    alone = _run(["train", "predict", str(checkpoint), str(scans), "--out", str(tmp_path / "one"),
                  "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"])
    assert alone.returncode == 0, alone.stderr[-3000:]
    rows = (tmp_path / "one" / "submission.csv").read_bytes()
    assert rows == (single / "case7_day0_submission.csv").read_bytes()
