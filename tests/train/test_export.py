"""``python -m train export`` on a file that is not a training checkpoint: an error, not an exit, in the library."""

from __future__ import annotations

import pytest
import torch

from train.__main__ import main
from train.export import ExportError, export


def test_foreign_checkpoint_raises_export_error_and_the_cli_exits_1(tmp_path, capsys):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"size": 64}}, foreign)  # no segformer_config

    with pytest.raises(ExportError, match=r"foreign\.ckpt was not written by `python -m train fit`"):
        export(foreign, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(foreign), str(tmp_path / "out")])
    assert exit_info.value.code == f"error: {foreign} was not written by `python -m train fit` (no segformer_config)."
    assert capsys.readouterr().out == ""


def test_a_missing_or_unreadable_checkpoint_is_one_line_not_a_traceback(tmp_path):
    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_text("these are notes, not weights")
    for path, says in ((tmp_path / "nothing.ckpt", "no such checkpoint file"),
                       (not_a_checkpoint, "is not a checkpoint torch can read")):
        with pytest.raises(SystemExit) as exit_info:
            main(["export", str(path), str(tmp_path / "out")])
        assert str(exit_info.value.code).startswith(f"error: {path}") and says in str(exit_info.value.code)
        assert "\n" not in str(exit_info.value.code) and not (tmp_path / "out").exists()
