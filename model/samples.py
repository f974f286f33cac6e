"""Sample slices for the app's examples: a local folder, or the blog Space's ``samples/`` fetched once.

Real scans may not be committed to this repository, so ``examples/manifest.json`` names where
they come from and the first online start downloads them into the HuggingFace cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .image import IMAGE_SUFFIXES

MANIFEST = Path(__file__).resolve().parents[1] / "examples" / "manifest.json"
EXAMPLES_DIR_ENV = "EXAMPLES_DIR"


def read_manifest(path: Path = MANIFEST) -> dict:
    return json.loads(path.read_text())


def list_images(folder: str | Path, limit: int | None = None) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return files[:limit] if limit else files


def find_samples(fetch: bool = False, limit: int | None = None) -> tuple[list[Path], str]:
    """Sample slices and a one-line note on where they come from.

    ``EXAMPLES_DIR`` wins. Otherwise the Space's samples from the HF cache; with ``fetch`` they
    are downloaded when missing (a no-op offline, where the note says so).
    """
    override = os.environ.get(EXAMPLES_DIR_ENV)
    if override:
        files = list_images(override, limit)
        return files, f"Examples: {len(files)} slices from the folder {Path(override).name!r} (EXAMPLES_DIR)."
    manifest = read_manifest()
    source = f"the Space {manifest['repo_id']} ({manifest['files']})"
    from huggingface_hub import snapshot_download

    try:
        # Only PNGs (decoded by our guarded reader), at the manifest's revision when it names one.
        folder = snapshot_download(repo_id=manifest["repo_id"], repo_type=manifest["repo_type"],
                                   revision=manifest.get("revision"), allow_patterns=[manifest["files"]],
                                   local_files_only=not fetch)
    except Exception:  # noqa: BLE001 - offline or not yet cached: the app still runs
        return [], f"No sample slices available offline; they are fetched from {source} on the first online start, or set EXAMPLES_DIR."
    files = list_images(Path(folder) / Path(manifest["files"]).parent, limit)
    return files, f"Examples: {len(files)} slices from {source}."
