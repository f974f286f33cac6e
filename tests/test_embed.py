"""The README's embed snippets in a real browser: a static "blog" page embeds the running app.

Each snippet is read out of README.md's "API and embedding" section and used as written, with
only its URLs replaced: the Space's URL by the local server's, and the CDN's ``gradio.js`` by the
copy the installed Gradio ships (``gradio/templates/frontend/gradio.js``), served by a second
static server, so the page, the web component's bundle and the app come from three origins as
they do on a blog. Inside the embedded app a real slice is segmented, and the measurements the
page shows must equal those the HTTP API returns for the same slice.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import gradio
import pytest

from locations import REPO, SHARED_DATA

pytestmark = [pytest.mark.slow, pytest.mark.browser]

SLICE_266 = SHARED_DATA / "scans" / "volume_266x266" / "slice_0070_266_266_1.50_1.50.png"
#: The placeholders the README's snippets use; each must occur exactly once in its snippet.
SPACE_URL = "https://OWNER-SPACE.hf.space"
CDN_SCRIPT = f"https://gradio.s3-us-west-2.amazonaws.com/{gradio.__version__}/gradio.js"
FRONTEND = Path(gradio.__file__).parent / "templates" / "frontend"


def readme_snippet(tag: str) -> str:
    """The one ```html block of README.md's "API and embedding" section that contains ``<tag``."""
    readme = (REPO / "README.md").read_text()
    section = re.search(r"^## API and embedding\n(.*?)(?=^## )", readme, flags=re.S | re.M)
    assert section, "README.md has no '## API and embedding' section"
    blocks = [b for b in re.findall(r"^```html\n(.*?)^```", section[1], flags=re.S | re.M) if f"<{tag}" in b]
    assert len(blocks) == 1, f"expected one html snippet with <{tag}> in 'API and embedding', found {len(blocks)}"
    return blocks[0]


def localise(snippet: str, replacements: dict[str, str]) -> str:
    """Replace each placeholder URL, which must occur exactly once, and nothing else."""
    for placeholder, local in replacements.items():
        assert snippet.count(placeholder) == 1, f"the README snippet must contain {placeholder} exactly once:\n{snippet}"
        snippet = snippet.replace(placeholder, local)
    return snippet


class _StaticHandler(SimpleHTTPRequestHandler):
    """Files with CORS allowed, as a CDN serves them (a cross-origin module script needs it); quiet."""

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def static_server() -> Iterator:
    """Start static HTTP servers on 127.0.0.1: ``serve(folder)`` → its base URL; all stop afterwards."""
    servers = []

    def serve(folder: Path) -> str:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_StaticHandler, directory=str(folder)))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/"

    yield serve
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def blog_post(folder: Path, snippet: str) -> Path:
    folder.mkdir()
    (folder / "post.html").write_text("<!doctype html>\n<html><head><meta charset='utf-8'><title>A blog post</title>"
                                      f"</head><body><h1>Organs on MRI</h1>\n{snippet}\n</body></html>\n")
    return folder


def pixel_counts_via_api(client) -> list[int]:
    """What ``/segment`` answers for the slice: pixels of stomach, small bowel, large bowel."""
    from gradio_client import handle_file

    table = client.predict(handle_file(str(SLICE_266)), api_name="/segment")[1]
    assert [row[0] for row in table["data"]] == ["Stomach", "Small bowel", "Large bowel"]
    return [int(row[2]) for row in table["data"]]


def segment_in(app) -> list[int]:
    """Upload the slice in an embedded app, press Segment; the pixel counts of its measurements table."""
    from playwright.sync_api import expect

    expect(app.get_by_text("Research demo, not for diagnostic use").first).to_be_visible(timeout=90_000)
    app.locator("input[type=file]").first.set_input_files(SLICE_266)
    expect(app.get_by_text("slice_0070_266_266_1.50_1.50").first).to_be_visible(timeout=30_000)
    app.get_by_role("button", name="Segment", exact=True).click()
    # The note comes with the result: the spacing was read from the Kaggle file name.
    expect(app.get_by_text("Pixel spacing 1.5 × 1.5 mm (file name).")).to_be_visible(timeout=90_000)
    expect(app.locator(".legend").first).to_contain_text("Large bowel")
    counts = []
    for organ in ("Stomach", "Small bowel", "Large bowel"):
        row = app.get_by_role("row").filter(has_text=organ)  # Gradio's Dataframe: ARIA rows of gridcells
        cells = [c.strip() for c in row.get_by_role("gridcell").all_inner_texts()]
        assert cells[0] == organ and cells[1] in ("yes", "no"), cells
        counts.append(int(cells[2]))
    return counts


def test_readme_web_component_segments_a_slice(server, client, shared_data, browser, static_server, tmp_path):
    cdn = static_server(FRONTEND)
    snippet = localise(readme_snippet("gradio-app"), {CDN_SCRIPT: f"{cdn}gradio.js", SPACE_URL: server.url})
    blog = static_server(blog_post(tmp_path / "blog", snippet))

    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    responses = []
    page.on("response", lambda r: responses.append((r.url, r.status)))
    page.goto(f"{blog}post.html")
    counts = segment_in(page.locator("gradio-app"))
    # The app's page head (ui/editor_layers.js) reaches an embedded app too: its editor's layers carry the organs' names.
    page.locator("gradio-app #slice-edit").click()
    page.wait_for_function("() => window.editor && window.editor.layer_manager.get_layers().length === 3"
                           " && window.editor.layer_manager.get_layers().every(l => l.user_created)", timeout=60_000)
    assert page.evaluate("() => window.editor.layer_manager.get_layers().map(l => l.name)") == [
        "Stomach", "Small bowel", "Large bowel"]

    assert counts == pixel_counts_via_api(client)
    assert (f"{cdn}gradio.js", 200) in responses  # the bundle the installed Gradio ships, not the CDN's
    assert not [url for url, _ in responses if "amazonaws.com" in url or "hf.space" in url]
    assert any(url.startswith(f"{server.url}gradio_api/queue/join") and status == 200 for url, status in responses)
    page.close()


def test_readme_iframe_segments_a_slice(server, client, shared_data, browser, static_server, tmp_path):
    snippet = localise(readme_snippet("iframe"), {SPACE_URL: server.url})
    blog = static_server(blog_post(tmp_path / "blog", snippet))

    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    page.goto(f"{blog}post.html")
    assert page.locator("iframe").get_attribute("src") == server.url
    counts = segment_in(page.frame_locator("iframe"))

    assert counts == pixel_counts_via_api(client)
    page.close()
