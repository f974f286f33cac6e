"""The blog's serving pipeline, written from its description, for comparison.

PIL open → RGB → resize to 288² bilinear → to-tensor → ImageNet normalise → fp32 eager
SegFormer → bilinear upsample → argmax. torchvision is not a dependency here, so to-tensor and
normalise are numpy/torch (``ToTensor`` = HWC uint8 → CHW float in 0..1). Deliberately does not
import :mod:`model`: the reference must not pick up the project's thread or graph settings.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
#: The blog app's class order is wrong (see model/labels.py); only the mask count matters here.
CLASS_NAMES = ("Stomach", "Small bowel", "Large bowel")


def load_model(checkpoint_dir):
    from transformers import SegformerForSemanticSegmentation

    return SegformerForSemanticSegmentation.from_pretrained(checkpoint_dir, local_files_only=True).eval()


def preprocess(image: Image.Image, size: int = 288) -> torch.Tensor:
    """PIL image → normalised ``(1, 3, size, size)`` float32."""
    resized = image.convert("RGB").resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return ((x - IMAGENET_MEAN) / IMAGENET_STD)[None]


def predict_labels(model, image: Image.Image, size: int = 288) -> np.ndarray:
    """Class-id map ``(H, W)`` int64 at the image's own size."""
    x = preprocess(image, size)
    with torch.no_grad():
        logits = model(pixel_values=x).logits
    logits = F.interpolate(logits, size=(image.height, image.width), mode="bilinear", align_corners=False)
    return logits.argmax(dim=1)[0].numpy()


def predict_file(model, path, size: int = 288) -> np.ndarray:
    """The whole pipeline from a file path, as the in-process reference."""
    with Image.open(path) as im:
        return predict_labels(model, im.convert("RGB"), size)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.reference FOLDER --model DIR --out DIR``: the blog's pipeline over a
    folder of slices, one label PNG per slice, as a whole process (the whole-process row)."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--size", type=int, default=288)
    args = parser.parse_args(argv)
    model = load_model(args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in sorted(args.folder.glob("*.png")):
        Image.fromarray(predict_file(model, path, args.size).astype(np.uint8)).save(args.out / path.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
