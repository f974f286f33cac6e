"""The LightningModule: a SegFormer, its loss, the competition metric and the optimizer."""

from __future__ import annotations

import math
from typing import Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss
from torch import nn

from model.engines import torch as torch_engine
from model.labels import ORGANS, id2label, label2id
from model.metric import competition_score, score_case


class BCEDiceLoss(nn.Module):
    """BCE + soft Dice for multi-label heads: logits and targets ``(B, O, H, W)``, targets in {0, 1}.

    Composed from MONAI's ``DiceLoss`` and torch's BCE because MONAI's ``DiceCELoss`` uses a
    softmax cross-entropy whenever there is more than one channel, even with ``sigmoid=True``.
    Dice is pooled over the batch (``batch=True``), so an organ absent from one slice does not
    make that slice's Dice undefined.
    """

    def __init__(self):
        super().__init__()
        self.dice = DiceLoss(sigmoid=True, batch=True)
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice(logits, target) + self.bce(logits, target)


class BlogLoss(nn.Module):
    """The blog's loss: (1 − soft Dice over all classes, background included) + cross-entropy.

    ``logits`` ``(B, K, H, W)``, ``target`` ``(B, H, W)`` int64 class ids. MONAI's ``DiceCELoss``
    with ``batch=True`` pools the Dice over the batch, as the notebook's loss did.
    """

    def __init__(self):
        super().__init__()
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, include_background=True, batch=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, target[:, None])


def decide(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Logits ``(N, K, H, W)`` → organ masks ``(N, O, H, W)`` bool, exactly as the app decides for
    checkpoints whose labels follow :mod:`model.labels` (sigmoid channel = organ, softmax id = organ + 1)."""
    channel_of = {name: i for i, name in id2label(multi_label).items()}
    return torch_engine.decide(logits, tuple(channel_of[organ] for organ in ORGANS), multi_label)


class SegFormerModule(L.LightningModule):
    """Fine-tunes ``SegformerForSemanticSegmentation.from_pretrained(init)`` on organ masks.

    Args:
        init: Hub id or local directory of the SegFormer to start from; its head is replaced.
        multi_label: sigmoid per organ + BCE/Dice (the project's recipe), else 4-class softmax +
            the blog's Dice/CE (linked from the data module by the CLI).
        size: input size (linked from the data module; written into the exported checkpoint).
        slice_offsets: 2.5D offsets (linked from the data module); sets the input channels.
        lr, weight_decay, amsgrad: AdamW over this module's own parameters.
        scheduler: ``multistep`` (×``gamma`` at ``milestone_fraction`` of the epochs, the blog's)
            or ``cosine`` (per step, linear warmup over ``warmup_fraction`` of the steps).
    """

    def __init__(self, init: str = "nvidia/segformer-b4-finetuned-ade-512-512", multi_label: bool = True,
                 size: int = 288, slice_offsets: list[int] | None = None, lr: float = 3e-4,
                 weight_decay: float = 1e-4, amsgrad: bool = False,
                 scheduler: Literal["multistep", "cosine"] = "cosine", warmup_fraction: float = 0.05,
                 milestone_fraction: float = 0.5, gamma: float = 0.1):
        super().__init__()
        from transformers import SegformerForSemanticSegmentation

        self.save_hyperparameters()
        labels = id2label(multi_label)
        self.net = SegformerForSemanticSegmentation.from_pretrained(
            init, num_labels=len(labels), id2label=labels, label2id=label2id(labels),
            problem_type="multi_label_classification" if multi_label else "single_label_classification",
            num_channels=len(slice_offsets) if slice_offsets else 3,
            ignore_mismatched_sizes=True,  # the new head (and a 2.5D stem of another width) start fresh
        ).train()  # from_pretrained returns eval mode, and Lightning keeps each submodule's mode
        self.loss_fn = BCEDiceLoss() if multi_label else BlogLoss()
        self._val_masks: dict[tuple[str, int], tuple] = {}  # (case_day, slice) → packed (pred, truth)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` → logits ``(B, K, h, w)``, upsampled from SegFormer's 1/4 resolution."""
        logits = self.net(pixel_values=pixel_values).logits
        return F.interpolate(logits, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)

    def model_step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["pixel_values"]).float()
        return self.loss_fn(logits, batch["labels"]), logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _ = self.model_step(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["case_day"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, logits = self.model_step(batch)
        self.log("val/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(batch["organ_masks"]))
        # The metric is defined at native size: upsample each slice's logits to it, then decide.
        for i, truth in enumerate(batch["organ_masks"]):
            full = F.interpolate(logits[i:i + 1], size=truth.shape[-2:], mode="bilinear", align_corners=False)
            pred = decide(full, self.hparams.multi_label)[0].cpu().numpy()
            key = (batch["case_day"][i], int(batch["slice_index"][i]))
            self._val_masks[key] = (np.packbits(pred), np.packbits(truth.cpu().numpy()), pred.shape)

    def on_validation_epoch_end(self) -> None:
        masks = self._val_masks
        self._val_masks = {}
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, masks)
            masks = {k: v for part in gathered for k, v in part.items()}  # samplers pad with repeats
        result = competition_score(score_case(*volume) for volume in _volumes(masks)).as_dict()
        metrics = {f"val/{k}": math.nan if v is None else float(v) for k, v in result.items()
                   if not k.endswith("_pairs")}
        self.log_dict(metrics, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Like nanoGPT: the checkpoint carries the config that rebuilds the network without the Hub.
        checkpoint["segformer_config"] = self.net.config.to_dict()
        metrics = self.trainer.callback_metrics if self._trainer is not None else {}
        checkpoint["val_metrics"] = {k: float(v) for k, v in metrics.items() if k.startswith("val/")}

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, amsgrad=hp.amsgrad)
        if hp.scheduler == "multistep":
            milestone = max(1, int(self.trainer.max_epochs * hp.milestone_fraction))
            scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[milestone], gamma=hp.gamma)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
        from transformers import get_cosine_schedule_with_warmup

        total = int(self.trainer.estimated_stepping_batches)
        scheduler = get_cosine_schedule_with_warmup(optimizer, int(total * hp.warmup_fraction), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _volumes(masks: dict[tuple[str, int], tuple]):
    """Yield ``(pred, truth)`` ``(O, D, H, W) bool`` per case-day from the validated slices, in slice order.

    Only the slices that were validated make up a volume (all of them in a normal epoch).
    """
    for case_day in sorted({cd for cd, _ in masks}):
        keys = sorted(k for k in masks if k[0] == case_day)
        shape = masks[keys[0]][2]
        size = int(np.prod(shape))
        pred, truth = (np.stack([np.unpackbits(masks[k][j], count=size).reshape(shape).astype(bool)
                                 for k in keys], axis=1) for j in (0, 1))
        yield pred, truth
