"""The real entry point (`python -m train ...`) on tiny SegFormers: smoke runs, export, resume."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from kaggle_layout import REPO


from model.engines.torch import Segmenter
from model.engines.base import stack_slices
from train import data
from train.__main__ import main

pytestmark = pytest.mark.slow


def fit_args(config, fixture, init, tmp_path, *extra):
    return ["fit", "--config", str(REPO / "train" / "configs" / f"{config}.yaml"),
            "--data.data_dir", str(fixture.root), "--data.cache_dir", str(tmp_path / "cache"),
            "--data.folds", "3", "--data.size", "32", "--data.batch_size", "2", "--data.num_workers", "0",
            "--model.init", str(init), "--trainer.accelerator", "cpu", "--trainer.precision", "32",
            "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", *extra]


@pytest.mark.parametrize("config", ["blog", "uwmgi"])
def test_fast_dev_run_then_export_serves_through_the_app_core(config, synthetic_kaggle, tiny_init, tmp_path):
    from train.cli import main as cli_main

    cli = cli_main(fit_args(config, synthetic_kaggle, tiny_init, tmp_path, "--trainer.fast_dev_run", "true"))
    metrics = cli.trainer.callback_metrics
    assert {"train/loss", "val/loss", "val/score", "val/dice", "val/dice/stomach"} <= set(metrics)
    ckpt = tmp_path / "smoke.ckpt"
    cli.trainer.save_checkpoint(ckpt)  # fast_dev_run writes none itself

    main(["export", str(ckpt), str(tmp_path / "export")])
    config_json = json.loads((tmp_path / "export" / "config.json").read_text())
    card = (tmp_path / "export" / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: transformers" in card
    assert "pipeline_tag: image-segmentation" in card and "datasets:" in card and "- type: score" in card
    assert "not for diagnostic" in card.lower()

    segmenter = Segmenter.load(tmp_path / "export")  # no extra flags
    scan = data.read_scan(data.index_scans(synthetic_kaggle.root)["case20_day5"])
    if config == "uwmgi":
        assert config_json["problem_type"] == "multi_label_classification"
        assert config_json["slice_offsets"] == [-2, 0, 2] and segmenter.contract.slice_offsets == (-2, 0, 2)
        slices = np.stack([stack_slices(scan, d, segmenter.slice_offsets) for d in range(len(scan))])
    else:
        assert config_json["id2label"]["0"] == "background" and "slice_offsets" not in config_json
        slices = scan
    masks = segmenter.predict(slices)
    assert masks.shape == (len(scan), 3, *scan.shape[1:]) and masks.dtype == bool


def test_interrupted_run_resumes_with_ckpt_path_last(synthetic_kaggle, tiny_init, tmp_path):
    """A run stopped mid-way (max_steps) continues from last.ckpt and does not redo epoch 0."""
    common = ("--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
              "--trainer.log_every_n_steps", "1")
    main(fit_args("uwmgi", synthetic_kaggle, tiny_init, tmp_path, *common, "--trainer.max_steps", "3"))
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()

    from train.cli import main as cli_main

    cli = cli_main(fit_args("uwmgi", synthetic_kaggle, tiny_init, tmp_path, *common, "--ckpt_path", "last"))
    assert cli.trainer.global_step == 4 and cli.trainer.current_epoch == 2
    with open(tmp_path / "run" / "csv" / "version_1" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss_step")]
    assert rows and {r["epoch"] for r in rows} == {"1"}, "the resumed run must not retrain epoch 0"
    assert any(p.name.startswith("epoch") for p in (tmp_path / "run" / "checkpoints").iterdir())


def test_the_top_level_help_lists_every_command(capsys):
    """LightningCLI's own help lists fit/validate/test/predict only; ``export``, ``evaluate`` and ``score`` are ours."""
    main(["--help"])
    out = capsys.readouterr().out
    assert [c for c in ("fit", "validate", "test", "export", "evaluate", "score", "predict") if f"\n  {c}" not in out
            and f"  {c}," not in out and f", {c}" not in out] == []
    with pytest.raises(SystemExit) as no_command:
        main([])
    assert no_command.value.code == 2 and "usage: python -m train COMMAND" in capsys.readouterr().err
