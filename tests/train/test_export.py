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
