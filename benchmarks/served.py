"""Apps served in subprocesses on 127.0.0.1 and called through ``gradio_client``.

:class:`Server` is the one way this project starts an app to talk to over HTTP: the benchmarks'
served rows and the tests' live server both use it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, NamedTuple

REPO = Path(__file__).resolve().parents[1]
#: Debian's Chromium (``playwright install`` cannot download browsers here) and the flags every headless run
#: uses: the browser tests, the screenshots and ``benchmarks.page_clicks``.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python ARGV...`` with Gradio told to listen on a free port of 127.0.0.1.

    ``env`` is the whole environment of the child (the caller decides what it inherits); output
    goes to ``log`` (a path) or to a temporary file. :attr:`started` is the ``perf_counter`` at
    launch, for cold-start timing.
    """

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path = REPO, log: Path | None = None,
                 name: str = "app"):
        self.name, self.port = name, free_port()
        env = {**env, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(self.port)}
        self._log: IO[bytes] = open(log, "w+b") if log else tempfile.TemporaryFile()  # readable: output()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, *argv], cwd=cwd, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self._client = None
        self._final: str | None = None  # the whole log, kept when the server is stopped

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def output(self, tail: int = 2000) -> str:
        if self._final is not None:  # stopped: its log file is closed (a temporary one is gone)
            return self._final[-tail:]
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-tail:]

    def wait_ready(self, timeout: float = 300) -> Server:
        """Block until the page answers 200; raises ``RuntimeError`` with the log's tail if it exits or times out."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(self.url, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer on {self.url} within {timeout:.0f} s: {self.output()}")

    @property
    def client(self):
        """A ``gradio_client.Client`` of this server, made on first use."""
        if self._client is None:
            from gradio_client import Client

            self._client = Client(self.url, verbose=False)
        return self._client

    def call(self, api_name: str, image: Path):
        from gradio_client import handle_file

        return self.client.predict(handle_file(str(image)), api_name=api_name)

    def stop(self, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._final is None:
            self._final = self.output(tail=10**7)
            self._log.close()


class SlicePoint(NamedTuple):
    """A slice pixel's place on the screen: ``x, y`` in the viewport (what ``page.mouse.click`` takes), ``left, top``
    the image's box there at the same moment."""
    x: int
    y: int
    zoom: int
    left: float
    top: float


def slice_pixel_point(page, image_id: str, row: int, col: int, shape: tuple[int, int],
                      timeout_ms: int = 60_000) -> SlicePoint:
    """Where pixel ``(row, col)`` of a slice of ``shape`` ``(H, W)`` is on the screen, drawn as the ``<img>`` of
    ``#image_id`` (the click images of ui/clicks.py: the slice at a whole-pixel zoom, drawn with
    ``object-fit: contain``): the whole CSS pixel of the viewport nearest the middle of the pixel's zoomed square.

    Waits for the image to be loaded at a whole zoom of ``shape``, and reads its size and box in that same
    step: a slider redraw may swap the image's source at any moment, and an image still loading reads 0 x 0.
    The point is a whole CSS pixel: Chromium gives a click event whole-pixel coordinates (it cuts off the
    fraction), so a point with a fraction could land in the next slice pixel.
    """
    page.locator(f"#{image_id} img").scroll_into_view_if_needed(timeout=timeout_ms)
    drawn = page.wait_for_function(
        "([id, rows, cols]) => { const i = document.querySelector(`#${id} img`);"
        " if (!i || !i.complete || i.naturalWidth === 0 || i.naturalWidth % cols"
        "     || i.naturalWidth / cols !== i.naturalHeight / rows) return null;"
        " const r = i.getBoundingClientRect(); if (r.width === 0) return null;"
        " return {zoom: i.naturalWidth / cols, width: i.naturalWidth, height: i.naturalHeight,"
        "         x: r.x, y: r.y, box_width: r.width, box_height: r.height}; }",
        arg=[image_id, shape[0], shape[1]], timeout=timeout_ms).json_value()
    scale = min(drawn["box_width"] / drawn["width"], drawn["box_height"] / drawn["height"])
    zoom = drawn["zoom"]
    x = drawn["x"] + (drawn["box_width"] - drawn["width"] * scale) / 2 + (col + 0.5) * zoom * scale
    y = drawn["y"] + (drawn["box_height"] - drawn["height"] * scale) / 2 + (row + 0.5) * zoom * scale
    return SlicePoint(round(x), round(y), zoom, drawn["x"], drawn["y"])


def click_slice_pixel(page, image_id: str, row: int, col: int, shape: tuple[int, int], timeout_ms: int = 60_000):
    """A real mouse click, through Playwright's ``page``, on pixel ``(row, col)`` of a slice of ``shape``
    ``(H, W)`` drawn as the ``<img>`` of ``#image_id``, at :func:`slice_pixel_point`. Returns the zoom.

    The click is Playwright's element click at a point of the image (not a click at screen coordinates): it
    waits until the image is still and that point is not covered, and if the page moves under the click (a
    panel above redrawn at another height) so that the press lands on something else, it clicks again. A
    click that lands while a redraw's new image still loads is the page's to keep (ui/click_images.js).
    """
    at = slice_pixel_point(page, image_id, row, col, shape, timeout_ms)
    page.locator(f"#{image_id} img").click(position={"x": at.x - at.left, "y": at.y - at.top}, timeout=timeout_ms)
    return at.zoom
