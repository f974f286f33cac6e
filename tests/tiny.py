"""Tiny random SegFormer checkpoints built through the real contract code (no mocks)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import SegformerConfig, SegformerForSemanticSegmentation

from model import checkpoint as ckpt
from model import labels


def tiny_config(multi_label: bool, num_channels: int = 3) -> SegformerConfig:
    """A SegFormer with one block per stage and 8–16 wide features: milliseconds per slice."""
    id2label = labels.id2label(multi_label)
    return SegformerConfig(
        num_channels=num_channels,
        depths=[1, 1, 1, 1],
        hidden_sizes=[8, 8, 16, 16],
        num_attention_heads=[1, 1, 1, 1],
        decoder_hidden_size=16,
        id2label=id2label,
        label2id=labels.label2id(id2label),
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
    )


def tiny_model(multi_label: bool, num_channels: int = 3, seed: int = 0) -> SegformerForSemanticSegmentation:
    torch.manual_seed(seed)
    return SegformerForSemanticSegmentation(tiny_config(multi_label, num_channels)).eval()


def make_tiny_checkpoint(dst: Path, multi_label: bool = False, size: int = 64, seed: int = 0,
                         slice_offsets: list[int] | None = None) -> Path:
    """Write a contract checkpoint with random weights to ``dst``."""
    channels = len(slice_offsets) if slice_offsets else 3
    return ckpt.save_contract(tiny_model(multi_label, channels, seed), dst, size=size, slice_offsets=slice_offsets)


def make_original_layout(dst: Path, seed: int = 0) -> Path:
    """A folder shaped like the Space's ``segformer_trained_weights/``: generic labels + pickled state dict."""
    dst.mkdir(parents=True, exist_ok=True)
    model = tiny_model(multi_label=False, seed=seed)
    config = model.config.to_dict()
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(4)}
    config["label2id"] = {f"LABEL_{i}": i for i in range(4)}
    config.pop("problem_type", None)
    config["image_size"] = 224  # the leftover the original config carries
    (dst / "config.json").write_text(json.dumps(config))
    torch.save(model.state_dict(), dst / ckpt.DEFAULT_WEIGHTS)
    return dst
