"""Mixed concurrent load against the live server: every output file arrives whole (issue #26).

Several clients send the same slice to ``/segment`` at once, so their outputs are identical and
Gradio names them by the same hash; with Gradio 6.31's ``save_pil_to_cache`` unpatched, a second
request's rewrite truncated the file a first response was streaming (docs/gradio_cache_race.md).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from benchmarks.soak_mixed import MixedInputs, Schedule, run_rounds, server_rss
from locations import REPO

#: 8 clients x 2 rounds: each calls /segment twice on the shared slice and once on its own, and
#: /segment_scan once per round; two of them also call /compare_days. 66 calls, 8 x 2 x 2 of them
#: identical /segment calls.
CLIENTS, ROUNDS = 8, 2
SCHEDULE = Schedule(days_every=ROUNDS, days_clients=2)


@pytest.mark.slow
def test_mixed_burst_delivers_every_output_file_whole(server, shared_data):
    inputs = MixedInputs.from_volume(shared_data / "scans" / "volume_266x266")
    rss = []
    per_round = run_rounds(server.url, inputs, CLIENTS, rounds=ROUNDS, schedule=SCHEDULE,
                           after_round=lambda _: rss.append(server_rss(server.proc.pid)))
    calls = [c for r in per_round for c in r]
    print(f"\nmixed burst: {len(calls)} calls, {sum(c.files for c in calls)} files downloaded, "
          f"server RSS after each round {[f'{b / 2**20:.0f} MiB' for b in rss]}")
    failed = [f"{c.endpoint}: {c.message}" for c in calls if c.outcome != "answered"]
    assert failed == [], failed[:5]
    assert len(calls) == CLIENTS * ROUNDS * 4 + 2
    assert {c.endpoint for c in calls} == {"/segment", "/segment_scan", "/compare_days"}
    # Every answered call downloaded files: /segment's overlay base, 3 masks and the mask PNG at least.
    assert min(c.files for c in calls if c.endpoint == "/segment") >= 5


def test_published_image_is_gradios_path_and_bytes_and_leaves_no_staging_file(tmp_path):
    """The app's ``save_pil_to_cache`` names and encodes as Gradio's own does: only the writing changed."""
    from gradio import processing_utils

    from ui import server

    image = Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64))
    ours = server.save_pil_to_cache(image, str(tmp_path / "ours"), format="png")
    gradios = processing_utils.save_pil_to_cache(image, str(tmp_path / "gradio"), format="png")
    assert os.path.relpath(ours, tmp_path / "ours") == os.path.relpath(gradios, tmp_path / "gradio")
    assert open(ours, "rb").read() == open(gradios, "rb").read()
    assert sorted(p.name for p in (tmp_path / "ours").rglob("*") if p.is_file()) == ["image.png"]


def test_publish_file_leaves_a_streaming_reader_the_whole_old_file(tmp_path):
    from model.serving import publish_file

    target = tmp_path / "image.png"
    publish_file(b"first version", target)
    with open(target, "rb") as reader:  # a response that has sent its headers and is streaming
        publish_file(b"second", target)
        assert reader.read() == b"first version"
    assert target.read_bytes() == b"second"
    assert oct(target.stat().st_mode & 0o777) == "0o600"  # the server's user only, as Gradio's uploads
    assert [p.name for p in tmp_path.iterdir()] == ["image.png"]


def test_bound_native_heap_sets_glibcs_mmap_threshold():
    """In a fresh interpreter (the setting is per process): glibc accepts it; elsewhere it is skipped."""
    probe = "from model.serving import bound_native_heap; print(bound_native_heap())"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == str(platform.libc_ver()[0] == "glibc"), done.stderr[-2000:]
