import numpy as np
from PIL import Image

from model.samples import find_samples, read_manifest


def test_examples_dir_lists_images_only(tmp_path, monkeypatch):
    for name in ("b.png", "a.png"):
        Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a slice")
    monkeypatch.setenv("EXAMPLES_DIR", str(tmp_path))
    files, note = find_samples()
    assert [f.name for f in files] == ["a.png", "b.png"]
    assert "2 slices" in note and str(tmp_path.parent) not in note  # no server paths in the UI


def test_offline_without_cache_says_where_samples_come_from(tmp_path, monkeypatch):
    monkeypatch.delenv("EXAMPLES_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    files, note = find_samples(fetch=True)
    manifest = read_manifest()
    assert files == []
    assert manifest["repo_id"] in note and "EXAMPLES_DIR" in note
    assert manifest["files"] == "samples/*.png"
