"""LightningCLI for ``fit``, ``validate`` and ``test``, configured by YAML in ``train/configs/``.

``python -m train predict`` is the cohort predictor of :mod:`train.predict`, not LightningCLI's.
"""

from __future__ import annotations

import os

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from .datamodule import UWMGIDataModule
from .module import SegFormerModule


def _checkpoint_dir(root: str | None) -> str:
    return os.path.join(root or ".", "checkpoints")


class UWMGICLI(LightningCLI):
    """Links what the data and the model must agree on, and keeps checkpoints where ``last`` finds them.

    Checkpoints go to ``<trainer.default_root_dir>/checkpoints`` (not into a logger's versioned
    folder), so ``--ckpt_path last`` on a rerun of the same command finds the previous run's.
    Without an explicit ``--trainer.logger`` the run logs to TensorBoard and CSV under the same
    root; W&B stays opt-in (see train/README.md).
    """

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/score",
            "checkpoint.mode": "max",
            "checkpoint.save_last": True,
            "checkpoint.filename": "epoch{epoch:03d}-score{val/score:.4f}",
            "checkpoint.auto_insert_metric_name": False,
        })
        parser.link_arguments("trainer.default_root_dir", "checkpoint.dirpath", compute_fn=_checkpoint_dir)
        for key in ("multi_label", "size", "slice_offsets"):
            parser.link_arguments(f"data.{key}", f"model.{key}")

    def instantiate_trainer(self, **kwargs):
        config = self._get(self.config_init, "trainer", default={})
        if config.get("logger") in (None, True) and "logger" not in kwargs:
            root = config.get("default_root_dir") or "."
            kwargs["logger"] = [TensorBoardLogger(root, name="tensorboard"), CSVLogger(root, name="csv")]
        return super().instantiate_trainer(**kwargs)


def main(args: list[str] | None = None, run: bool = True) -> UWMGICLI:
    return UWMGICLI(SegFormerModule, UWMGIDataModule, args=args, run=run,
                    save_config_kwargs={"overwrite": True})
