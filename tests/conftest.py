"""Shared fixtures: offline environment, tiny checkpoints and the real data in ../shared/data."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# As the app's entry points do; here it must precede the test modules' own `import torch`.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Each test forces the path it tests; a precision chosen in the shell must not change the others.
for _name in ("UWMGI_PRECISION", "UWMGI_FP32"):
    os.environ.pop(_name, None)
# The engine: the app-level tests (the served app, load, browser, faults, the CLIs) run on the
# engine a user gets on this machine (model.engines.choose: OpenVINO at f32 on AVX-512 CPUs, torch
# elsewhere), so a shell's choice must not change it; the tests of one engine force theirs
# (tests/model/test_openvino.py, test_fastpath.py, and those that load model.engines.torch.Segmenter).
os.environ.pop("UWMGI_ENGINE", None)
# This session's own Hugging Face cache, read by huggingface_hub when it is imported (after this)
# and inherited by the served app: OpenVINO conversions land here, never in the user's cache, and
# are made once per session (the `default_engine` fixture). Tests that need an empty cache patch theirs.
SESSION_HF_CACHE = Path(tempfile.mkdtemp(prefix="uwmgi-tests-hub-"))
os.environ["HF_HUB_CACHE"] = str(SESSION_HF_CACHE)
atexit.register(shutil.rmtree, SESSION_HF_CACHE, ignore_errors=True)

from benchmarks.served import CHROMIUM, CHROMIUM_ARGS, Server  # noqa: E402
from locations import REPO, SHARED_DATA  # noqa: E402


def require_shared_data() -> Path:
    """``../shared/data``; skips when absent, but fails under CI, where it must be present."""
    if not (SHARED_DATA / "README.md").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the shared test data is missing at {SHARED_DATA}")
        pytest.skip(f"real data not available at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_shared_data()


@pytest.fixture(scope="session")
def softmax_ckpt(tmp_path_factory) -> Path:
    from tiny import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("softmax_ckpt"), multi_label=False)


@pytest.fixture(scope="session")
def multilabel_ckpt(tmp_path_factory) -> Path:
    from tiny import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("multilabel_ckpt"), multi_label=True, seed=1)


@pytest.fixture(scope="session")
def rle_volumes(shared_data: Path):
    """The 9 real ground-truth volumes of ``rle/train.csv``, decoded once per session."""
    from locations import decode_rle_file, read_volume_shapes

    rle = shared_data / "rle"
    return decode_rle_file(rle / "train.csv", read_volume_shapes(rle / "volumes.csv"))


@pytest.fixture()
def kaggle_scan(shared_data, tmp_path):
    """Six real 360×310 slices (W×H: not square) in a case-day folder, with deterministic organ masks."""
    import rt_series
    from model.scans import load_scan
    from scan_fixtures import kaggle_slices

    folder = tmp_path / "case9_day4" / "scans"
    folder.mkdir(parents=True)
    files = [shutil.copy(f, folder) for f in kaggle_slices(shared_data, "volume_360x310")[60:66]]
    scan = load_scan(files)
    assert scan.shape == (6, 310, 360) and scan.case_day == "case9_day4"
    return scan, rt_series.organ_masks_for(scan.voxels)


@pytest.fixture(scope="session")
def default_engine(softmax_ckpt) -> str:
    """The engine this machine serves on (``"torch"`` or ``"openvino"``), with the tiny softmax
    checkpoint converted for it once per session (OpenVINO) into :data:`SESSION_HF_CACHE`, so the
    served app and the in-process app start from the cache as a user's second start does."""
    from model.engines.choose import choose_engine, load_segmenter

    engine, _ = choose_engine()
    if engine == "openvino":
        load_segmenter(str(softmax_ckpt))
        assert any(SESSION_HF_CACHE.glob("openvino--*/model.xml")), "the conversion did not land in the session cache"
    return engine


@pytest.fixture(scope="module")
def tiny_model(softmax_ckpt, default_engine, tmp_path_factory):
    """The page's model holder on the tiny checkpoint (on this machine's engine), and its scratch dir in
    a test folder, for calling the tabs' handlers (:mod:`ui`) directly; yields :mod:`ui.server`."""
    from model.serving import Scratch
    from ui import server

    saved = server.SCRATCH
    server.SCRATCH = Scratch(tmp_path_factory.mktemp("scratch"), server.CACHE_SECONDS)
    server.MODEL.configure(str(softmax_ckpt))
    yield server
    server.MODEL.configure(None)
    server.SCRATCH = saved


# --------------------------------------------------------------------------- one live server per session


@dataclass
class LiveServer:
    """``python app.py`` running in a sandbox: every file it writes lands under ``root``."""

    url: str
    proc: subprocess.Popen
    log: Path  # stdout and stderr
    tmp: Path  # its TMPDIR
    gradio_tmp: Path  # its GRADIO_TEMP_DIR, inside ``tmp``
    cwd: Path

    @property
    def scratch(self) -> Path:
        """The app's own output folder (``ui.server.SCRATCH.root`` in the server process)."""
        return self.tmp / "uwmgi-outputs"

    def stray_files(self) -> set[Path]:
        """Files the server wrote outside Gradio's temp dir and the app's scratch dir."""
        allowed = (self.gradio_tmp, self.scratch)
        found = {p for root in (self.tmp, self.cwd) for p in root.rglob("*") if p.is_file()}
        return {p for p in found if not any(p.is_relative_to(a) for a in allowed)}


@pytest.fixture(scope="session")
def server(softmax_ckpt, default_engine, tmp_path_factory) -> LiveServer:
    """``python app.py --model DIR`` on 127.0.0.1, configured only through Gradio's variables, on the
    machine's default engine (:func:`default_engine`).

    One per session: each start costs tens of seconds on 2 vCPUs. TMPDIR, GRADIO_TEMP_DIR and the
    working directory point into a fresh folder, so tests can see every file the server writes.
    """
    root = tmp_path_factory.mktemp("server")
    tmp, cwd = root / "tmp", root / "cwd"
    gradio_tmp = tmp / "gradio"
    for folder in (tmp, cwd, gradio_tmp):
        folder.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "TMPDIR": str(tmp), "GRADIO_TEMP_DIR": str(gradio_tmp)}
    env.pop("MODEL", None)
    if SHARED_DATA.is_dir():
        env["EXAMPLES_DIR"] = str(SHARED_DATA / "scans" / "volume_266x266")
    log = root / "server.log"
    app = Server([str(REPO / "app.py"), "--model", str(softmax_ckpt)], env, cwd=cwd, log=log, name="app.py")
    try:
        app.wait_ready(timeout=180)
    except RuntimeError as err:
        pytest.fail(str(err))
    yield LiveServer(app.url, app.proc, log, tmp, gradio_tmp, cwd)
    app.stop()


@pytest.fixture(scope="module")
def client(server):
    """A ``gradio_client`` of the live server that leaves output files where the server wrote them."""
    from gradio_client import Client

    return Client(server.url, verbose=False, download_files=False)


# --------------------------------------------------------------------------- headless Chromium


@pytest.fixture()
def browser():
    """Debian's Chromium driven by Playwright (``playwright install`` cannot download browsers here).

    Skips when Chromium is absent, but fails under CI, whose ``.ci/run`` installs it.
    """
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"Debian chromium is not installed at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
