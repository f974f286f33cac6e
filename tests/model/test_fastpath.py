"""The fast path: how it is chosen, that the folded head is the same function, and fidelity on real slices."""

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode
from transformers import SegformerConfig, SegformerForSemanticSegmentation

from model import checkpoint as ckpt
from model import labels
from model.image import read_slice
from model.inference import FORCE_FP32_ENV, FoldedDecodeHead, Segmenter, choose_runtime
from tiny import tiny_model

AVX2_ONLY = frozenset({"avx", "avx2", "fma"})


def test_bf16_only_where_the_cpu_has_it(monkeypatch):
    monkeypatch.delenv(FORCE_FP32_ENV, raising=False)
    plain = choose_runtime("cpu", flags=AVX2_ONLY)
    assert (plain.dtype, plain.autocast, plain.fold_head, plain.exact) == (torch.float32, None, True, False)
    for flag in ("avx512_bf16", "amx_bf16"):
        fast = choose_runtime("cpu", flags=AVX2_ONLY | {flag})
        assert fast.autocast == torch.bfloat16 and fast.dtype == torch.float32 and flag in fast.describe()
    monkeypatch.setenv(FORCE_FP32_ENV, "1")
    forced = choose_runtime("cpu", flags=AVX2_ONLY | {"amx_bf16"})
    assert forced.exact and forced.autocast is None and FORCE_FP32_ENV in forced.describe()


def test_describe_names_the_chosen_path(softmax_ckpt, monkeypatch):
    monkeypatch.delenv(FORCE_FP32_ENV, raising=False)
    text = Segmenter.load(softmax_ckpt, runtime=choose_runtime("cpu", flags=AVX2_ONLY)).describe()
    assert "float32" in text and "folded decode head" in text and "threads" in text


@pytest.mark.parametrize("multi_label", [False, True])
def test_folded_head_is_the_same_function(multi_label):
    model = tiny_model(multi_label=multi_label, seed=3)
    with torch.no_grad():  # non-trivial batch-norm statistics, so the fold of BN is exercised
        bn = model.decode_head.batch_norm
        bn.running_mean.normal_(0, 0.5), bn.running_var.uniform_(0.3, 3), bn.weight.normal_(1, 0.3), bn.bias.normal_(0, 0.3)
    x = torch.randn(2, 3, 64, 96)
    with torch.inference_mode(), FlopCounterMode(display=False) as original_flops:
        expected = model(pixel_values=x).logits
    assert FoldedDecodeHead.supports(model)
    model.decode_head = FoldedDecodeHead(model.decode_head)
    with torch.inference_mode(), FlopCounterMode(display=False) as folded_flops:
        folded = model(pixel_values=x).logits
    assert folded.shape == expected.shape
    torch.testing.assert_close(folded, expected, rtol=1e-4, atol=1e-5)
    assert folded_flops.get_total_flops() < original_flops.get_total_flops()


# --------------------------------------------------------------------------- fidelity on real slices

TRAIN_SIZE = 96


def _pairs(shared_data):
    images = sorted((shared_data / "pairs" / "images").glob("*.png"))
    slices = np.stack([read_slice(p) for p in images])
    # Label maps, not intensities: read as they are (read_slice would refuse an all-background map).
    label_maps = np.stack([np.asarray(Image.open(shared_data / "pairs" / "masks" / p.name)) for p in images]).astype(np.int64)
    return slices, label_maps


def _train_small_segformer(slices, label_maps, dst, seconds=45.0, max_steps=400):
    """A small softmax SegFormer trained on the real pairs with plain torch, saved as a contract checkpoint.

    Inputs go through the serving preprocessing, so the fidelity check sees what the app sees.
    """
    torch.manual_seed(0)
    id2label = labels.id2label(False)
    config = SegformerConfig(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 64, 128], num_attention_heads=[1, 1, 2, 4],
                             decoder_hidden_size=64, id2label=id2label, label2id=labels.label2id(id2label))
    model = SegformerForSemanticSegmentation(config)
    contract = ckpt.Contract(multi_label=False, organ_channels=(1, 2, 3), input_size=(TRAIN_SIZE, TRAIN_SIZE),
                             image_mean=ckpt.IMAGENET_MEAN, image_std=ckpt.IMAGENET_STD)
    with torch.no_grad():
        x = Segmenter(tiny_model(False), contract, runtime=choose_runtime("cpu", exact=True)).preprocess(slices)
    y = F.interpolate(torch.from_numpy(label_maps)[:, None].float(), size=(TRAIN_SIZE, TRAIN_SIZE), mode="nearest")[:, 0].long()
    weight = torch.tensor([0.2, 1.0, 1.0, 1.0])  # background dominates the pixels
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=1e-4)
    model.train()
    start, step = time.monotonic(), 0
    while step < max_steps and time.monotonic() - start < seconds:
        idx = torch.randint(0, len(x), (8,))
        logits = F.interpolate(model(pixel_values=x[idx]).logits, size=(TRAIN_SIZE, TRAIN_SIZE), mode="bilinear")
        loss = F.cross_entropy(logits, y[idx], weight=weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
    return ckpt.save_contract(model.eval(), dst, size=TRAIN_SIZE)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean arrays, pooled over all slices; two empty masks agree perfectly (1.0)."""
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


@pytest.mark.slow
def test_fast_paths_agree_with_fp32_on_real_slices(shared_data, tmp_path, monkeypatch):
    monkeypatch.delenv(FORCE_FP32_ENV, raising=False)
    slices, label_maps = _pairs(shared_data)
    trained = _train_small_segformer(slices, label_maps, tmp_path / "trained")

    exact = Segmenter.load(trained, runtime=choose_runtime("cpu", exact=True)).predict(slices)
    # The model learned something, so agreement is not the trivial all-background kind.
    for i, organ in enumerate(labels.ORGANS):
        truth = label_maps == labels.ORGAN_IDS[organ]
        assert exact[:, i].sum() > 1000, f"the trained model never predicts {organ}"
        assert _dice(exact[:, i], truth) > 0.3, f"the trained model did not learn {organ}"

    # This machine's choice, and the bf16 autocast path chosen on AVX512-BF16/AMX CPUs (forced here).
    candidates = {"chosen here": choose_runtime("cpu"), "bf16 autocast": choose_runtime("cpu", flags=frozenset({"amx_bf16"}))}
    for name, runtime in candidates.items():
        assert not runtime.exact
        fast = Segmenter.load(trained, runtime=runtime).predict(slices)
        labels_fast = np.where(fast.any(1), fast.argmax(1) + 1, 0)
        labels_exact = np.where(exact.any(1), exact.argmax(1) + 1, 0)
        agreement = float((labels_fast == labels_exact).mean())
        assert agreement >= 0.995, f"{name}: pixel agreement {agreement:.4f} < 0.995"
        for i, organ in enumerate(labels.ORGANS):
            dice = _dice(fast[:, i], exact[:, i])
            assert dice >= 0.98, f"{name}: {organ} Dice vs fp32 {dice:.4f} < 0.98"
