"""``python -m train export CKPT DST [--push-to-hub REPO]``: a Lightning checkpoint → a contract checkpoint.

Writes ``config.json`` (id2label, problem_type, slice_offsets), ``model.safetensors`` and
``preprocessor_config.json`` through :func:`model.checkpoint.save_contract`, plus a model card
``README.md``. The app serves the result with ``--model DST`` and no other flag.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from model.checkpoint import save_contract
from model.labels import ORGANS

DATASET = "UW-Madison GI Tract Image Segmentation (Kaggle, 2022)"
BLOG = "https://learnopencv.com/medical-image-segmentation/"


class ExportError(ValueError):
    """The file is not a checkpoint ``python -m train fit`` wrote; the message says which."""


def load_network(checkpoint: dict):
    """The ``SegformerForSemanticSegmentation`` in a Lightning checkpoint, rebuilt from the config it carries."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    model = SegformerForSemanticSegmentation(SegformerConfig.from_dict(checkpoint["segformer_config"]))
    state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    model.load_state_dict(state, strict=True)
    return model.eval()


def export(ckpt_path: str | Path, dst: str | Path, push_to_hub: str | None = None) -> Path:
    """Export ``ckpt_path`` into the contract directory ``dst`` (and upload it to ``push_to_hub``)."""
    if not Path(ckpt_path).is_file():
        raise ExportError(f"{ckpt_path}: no such checkpoint file (a .ckpt written by `python -m train fit`).")
    try:  # only tensors and plain containers: the module's hparams are plain values by design
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises pickle, zip and runtime errors for a file that is none
        raise ExportError(f"{ckpt_path} is not a checkpoint torch can read ({type(err).__name__}).") from None
    if not isinstance(checkpoint, dict) or "segformer_config" not in checkpoint:
        raise ExportError(f"{ckpt_path} was not written by `python -m train fit` (no segformer_config).")
    hparams = checkpoint["hyper_parameters"]
    dst = save_contract(load_network(checkpoint), dst, size=hparams["size"], slice_offsets=hparams["slice_offsets"])
    (dst / "README.md").write_text(model_card(hparams, checkpoint.get("datamodule_hyper_parameters", {}),
                                              checkpoint.get("val_metrics", {}), checkpoint))
    if push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()  # the token comes from HF_TOKEN (or a saved login); never prompts
        api.create_repo(push_to_hub, exist_ok=True)
        api.upload_folder(repo_id=push_to_hub, folder_path=str(dst), commit_message="Upload from python -m train export")
    return dst


def model_card(hparams: dict, data_hparams: dict, metrics: dict, checkpoint: dict) -> str:
    """The Hub model card: metadata block (with the validation numbers), recipe, limitations."""
    from huggingface_hub import EvalResult, ModelCardData

    fold = f"fold {data_hparams.get('fold', '?')} of {data_hparams.get('folds', '?')}, split by case"
    results = [EvalResult(task_type="image-segmentation", dataset_type="uw-madison-gi-tract-image-segmentation",
                          dataset_name=f"{DATASET}, validation {fold}", metric_type=key.removeprefix("val/"),
                          metric_name=key.removeprefix("val/"), metric_value=round(value, 4))
               for key, value in sorted(metrics.items())
               if key.removeprefix("val/").split("/")[0] in ("score", "dice", "hausdorff") and math.isfinite(value)]
    init = str(hparams["init"])
    card = ModelCardData(
        library_name="transformers", pipeline_tag="image-segmentation", license="other",
        datasets=["uw-madison-gi-tract-image-segmentation"], tags=["segformer", "medical-imaging", "mri"],
        base_model=init if init.count("/") == 1 and not Path(init).exists() else None,
        model_name="SegFormer UW-Madison GI Tract organ segmentation", eval_results=results or None,
    )
    multi = hparams["multi_label"]
    head = ("one sigmoid per organ (overlapping organs allowed), BCE + Dice loss" if multi else
            "4-class softmax (background + organs; overlapping pixels trained as background), Dice + CE loss")
    numbers = "\n".join(f"| {k.removeprefix('val/')} | {v:.4f} |" for k, v in sorted(metrics.items())
                        if math.isfinite(v)) or "| (no validation run was recorded) | |"
    return f"""---
{card.to_yaml()}
---

# SegFormer for stomach, small bowel and large bowel on abdominal MRI

Segments {", ".join(ORGANS)} on single MRI slices of the {DATASET} dataset. Trained with this
project's `train/` package (PyTorch Lightning), after the LearnOpenCV blog post
"Medical Image Segmentation Using HuggingFace & PyTorch" ({BLOG}).

**Research demo. Not for diagnostic or any clinical use.**

## Training recipe
- Initialised from `{init}`; head: {head}.
- Input: {hparams["size"]}×{hparams["size"]}, per-image min–max intensity stretch to 0..255, ImageNet
  mean/std; {"2.5D channels from the slices at offsets " + str(hparams["slice_offsets"]) if hparams["slice_offsets"] else "one slice replicated to 3 channels"}.
- AdamW lr {hparams["lr"]}, weight decay {hparams["weight_decay"]}, amsgrad {hparams["amsgrad"]};
  {hparams["scheduler"]} schedule; {checkpoint.get("epoch", "?")} epochs done ({checkpoint.get("global_step", "?")} steps).
- Validation: GroupKFold {fold} (no patient on both sides). Score = 0.4·Dice + 0.6·(1 − HD),
  per-slice Dice and per-case-day, per-organ 3D Hausdorff (see `model/metric.py`).

| validation metric | value |
| --- | --- |
{numbers}

## Limitations
- Trained on one institution's scanner and protocol (UW-Madison, abdominal MR-Linac scans);
  other sites, sequences and anatomy outside the abdomen are out of distribution.
- Validation numbers come from one fold of the training set, not from the hidden test set.
- The dataset's licence restricts use; check the competition's rules before any reuse.

## Use
Load with the project's app: `python app.py --model <this repo or folder>`; the contract
(`config.json` id2label/problem_type{"/slice_offsets" if hparams["slice_offsets"] else ""},
`preprocessor_config.json`) tells it everything it needs.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train export", description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", help="a .ckpt written by `python -m train fit`")
    parser.add_argument("dst", help="output directory (the contract checkpoint)")
    parser.add_argument("--push-to-hub", metavar="REPO", help="upload to this Hub model repo (token: HF_TOKEN)")
    args = parser.parse_args(argv)
    try:
        print(export(args.ckpt, args.dst, args.push_to_hub))
    except ExportError as err:
        sys.exit(f"error: {err}")  # one line on stderr, exit status 1


if __name__ == "__main__":
    main()
