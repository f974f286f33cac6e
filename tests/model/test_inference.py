import numpy as np
import pytest
import torch
from PIL import Image

from model import labels
from model.image import read_slice
from model.engines.torch import Segmenter, choose_runtime
from model.measure import organ_areas
from model.mask_png import MASK_BITS, decode_mask_png, encode_mask_png

NATIVE_VOLUMES = ["volume_234x234", "volume_266x266", "volume_276x276", "volume_360x310"]


# The default path is forced, whatever the environment says; the recomputations below run the
# same (folded, fp32) model, so masks must match exactly.
@pytest.fixture(scope="module")
def softmax(softmax_ckpt):
    return Segmenter.load(softmax_ckpt, runtime=choose_runtime("cpu", precision="fp32"))


@pytest.fixture(scope="module")
def multilabel(multilabel_ckpt):
    return Segmenter.load(multilabel_ckpt, runtime=choose_runtime("cpu", precision="fp32"))


def _first_slice(shared_data, volume):
    return sorted((shared_data / "scans" / volume).glob("*.png"))[len(list((shared_data / "scans" / volume).glob("*.png"))) // 2]


@pytest.mark.parametrize("volume", NATIVE_VOLUMES)
def test_real_slices_keep_native_size(shared_data, softmax, volume):
    path = _first_slice(shared_data, volume)
    raw = read_slice(path)
    w, h = (int(v) for v in volume.removeprefix("volume_").split("x"))
    assert raw.shape == (h, w)
    masks = softmax.predict(raw[None])
    assert masks.shape == (1, 3, h, w) and masks.dtype == bool


def test_16bit_copy_gives_same_masks(shared_data, softmax, tmp_path):
    path = _first_slice(shared_data, "volume_266x266")
    raw8 = read_slice(path)
    Image.fromarray(raw8.astype(np.uint16) * 257).save(tmp_path / "s16.png")
    raw16 = read_slice(tmp_path / "s16.png")
    assert raw16.dtype == np.uint16 and raw16.max() > 255
    np.testing.assert_array_equal(softmax.predict(raw16[None]), softmax.predict(raw8[None]))


def test_softmax_masks_are_exclusive_and_follow_argmax(softmax):
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 4000, (3, 70, 90)).astype(np.uint16)
    masks = softmax.predict(batch)
    assert masks.sum(axis=1).max() <= 1
    # Independent recomputation: upsample logits to full size, argmax, compare ids.
    with torch.inference_mode():
        logits = softmax.model(pixel_values=softmax.preprocess(batch)).logits
        logits = torch.nn.functional.interpolate(logits, size=(70, 90), mode="bilinear", align_corners=False)
        ids = logits.argmax(1).numpy()
    for i, organ in enumerate(labels.ORGANS):
        np.testing.assert_array_equal(masks[:, i], ids == labels.ORGAN_IDS[organ])


def test_multilabel_masks_threshold_each_organ(multilabel):
    rng = np.random.default_rng(1)
    batch = rng.normal(size=(2, 64, 64)).astype(np.float32)
    masks = multilabel.predict(batch)
    with torch.inference_mode():
        logits = multilabel.model(pixel_values=multilabel.preprocess(batch)).logits
        logits = torch.nn.functional.interpolate(logits, size=(64, 64), mode="bilinear", align_corners=False)
    np.testing.assert_array_equal(masks, torch.sigmoid(logits).numpy() > 0.5)


def test_batches_equal_single_predictions(softmax):
    softmax.batch_size = 2
    batch = np.random.default_rng(2).integers(0, 255, (5, 40, 40)).astype(np.uint8)
    together = softmax.predict(batch)
    one_by_one = np.concatenate([softmax.predict(b[None]) for b in batch])
    np.testing.assert_array_equal(together, one_by_one)


def test_stack_slices_clamps_edges(tmp_path):
    from model.engines.base import stack_slices
    from tiny import make_tiny_checkpoint

    seg = Segmenter.load(make_tiny_checkpoint(tmp_path / "c", multi_label=True, slice_offsets=[-2, 0, 2]))
    assert seg.slice_offsets == (-2, 0, 2)
    scan = np.arange(5)[:, None, None] * np.ones((5, 4, 4))
    assert stack_slices(scan, 0, seg.slice_offsets)[:, 0, 0].tolist() == [0, 0, 2]
    assert stack_slices(scan, 4, seg.slice_offsets)[:, 0, 0].tolist() == [2, 4, 4]
    stacks = np.stack([stack_slices(scan * 100, i, seg.slice_offsets) for i in range(5)])
    assert seg.predict(stacks).shape == (5, 3, 4, 4)


def test_mask_png_bits_keep_overlaps(tmp_path):
    from model.mask_png import save_mask_png

    masks = np.zeros((3, 2, 3), dtype=bool)
    masks[0, 0, 0] = masks[1, 0, 1] = masks[2, 0, 1] = masks[2, 1, 2] = True
    packed = encode_mask_png(masks)
    assert packed.tolist() == [[1, 6, 0], [0, 0, 4]]
    assert MASK_BITS == {"stomach": 1, "small_bowel": 2, "large_bowel": 4}
    np.testing.assert_array_equal(decode_mask_png(packed), masks)
    # The downloaded file itself, as the README says to decode it.
    path = save_mask_png(masks, tmp_path / "slice_masks.png")
    np.testing.assert_array_equal(decode_mask_png(path), masks)
    np.testing.assert_array_equal(decode_mask_png(str(path)), masks)


def test_areas():
    masks = np.zeros((3, 10, 10), dtype=bool)
    masks[1, :4, :5] = True
    areas = organ_areas(masks, (1.5, 2.0))
    assert [a.pixels for a in areas] == [0, 20, 0]
    assert areas[1].area_cm2 == pytest.approx(20 * 3.0 / 100)


# --------------------------------------------------------------------------- volumes


def test_plain_checkpoint_segments_each_slice_of_a_volume(shared_data, softmax):
    from scan_fixtures import kaggle_slices, stack

    voxels = stack(kaggle_slices(shared_data, count=7))
    done = []
    segmentation = softmax.segment_scan(voxels, chunk_slices=3)
    assert segmentation.probabilities is None and not segmentation.organ_masks.any()  # nothing runs until asked
    masks = segmentation.run(done.append).organ_masks
    assert masks.shape == (len(labels.ORGANS), 7, 266, 266) and masks.dtype == bool
    np.testing.assert_array_equal(masks, softmax.predict(voxels).transpose(1, 0, 2, 3))
    assert done == [3, 6, 7]


def test_25d_checkpoint_stacks_neighbours_with_clamped_edges(shared_data, tmp_path):
    from scan_fixtures import kaggle_slices, stack
    from tiny import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "ckpt", multi_label=True, seed=2, slice_offsets=[-2, 0, 2])
    segmenter = Segmenter.load(ckpt, device="cpu")
    voxels = stack(kaggle_slices(shared_data, count=6))
    masks = np.zeros((3, *voxels.shape), dtype=bool)
    assert list(segmenter.segment_volume_steps(voxels, masks, chunk_slices=4)) == [4, 6]
    expected = [[0, 0, 2], [0, 1, 3], [0, 2, 4], [1, 3, 5], [2, 4, 5], [3, 5, 5]]
    stacks = np.stack([voxels[i] for i in expected])
    np.testing.assert_array_equal(masks, segmenter.predict(stacks).transpose(1, 0, 2, 3))
    # The stacks matter: the same model on replicated single slices gives other masks.
    single = segmenter.predict(np.stack([voxels[[i, i, i]] for i in range(6)])).transpose(1, 0, 2, 3)
    assert not np.array_equal(masks, single)
    np.testing.assert_array_equal(segmenter.segment_slices(voxels, 2, 5), masks[:, 2:5])


class _CountingSegmenter(Segmenter):
    """A :class:`Segmenter` whose model is replaced, to watch how much input one call gets."""

    def __init__(self, contract):
        self.contract, self.batch_size, self.largest_input = contract, 8, 0

    def predict(self, slices, progress=None):
        self.largest_input = max(self.largest_input, slices.nbytes)
        return np.zeros((len(slices), 3, *slices.shape[-2:]), dtype=bool)


def test_largest_scan_memory_stays_bounded(tmp_path):
    import tracemalloc

    from model import checkpoint as ckpt
    from tiny import make_tiny_checkpoint

    contract = ckpt.read_contract(make_tiny_checkpoint(tmp_path / "c", multi_label=True, slice_offsets=[-2, 0, 2]))
    voxels = np.zeros((144, 310, 360), dtype=np.uint16)  # the largest Kaggle scan, as 16-bit
    fake = _CountingSegmenter(contract)
    tracemalloc.start()
    try:
        fake.segment_scan(voxels).run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert fake.largest_input == 16 * 3 * 310 * 360 * 2  # one chunk of 2.5D stacks, never the whole scan
    # Masks (O, D, H, W) bool are 48 MB; everything else is per chunk.
    assert peak < 100 * 2**20, peak


# --------------------------------------------------------------------------- probabilities


def test_multilabel_probabilities_threshold_to_the_masks_exactly(shared_data, multilabel):
    from scan_fixtures import kaggle_slices, stack

    voxels = stack(kaggle_slices(shared_data, count=5))
    masks = np.zeros((3, *voxels.shape), dtype=bool)
    probabilities = np.zeros(masks.shape, dtype=np.float32)
    assert list(multilabel.segment_volume_steps(voxels, masks, 2, probabilities=probabilities)) == [2, 4, 5]
    assert 0 < masks.mean() < 1  # the check below is not vacuous
    assert probabilities.min() >= 0 and probabilities.max() <= 1
    np.testing.assert_array_equal(probabilities > multilabel.threshold, masks)
    kept = multilabel.segment_scan(voxels, keep_probabilities=True).run()
    np.testing.assert_array_equal(masks, multilabel.segment_scan(voxels).run().organ_masks)  # asking changes nothing
    np.testing.assert_array_equal(masks, kept.organ_masks)
    assert kept.probabilities.dtype == np.float16 and kept.probabilities.shape == masks.shape
    # float16 (what the app keeps) is the float32 values rounded.
    half = np.zeros(masks.shape, dtype=np.float16)
    list(multilabel.segment_volume_steps(voxels, np.zeros_like(masks), probabilities=half))
    np.testing.assert_allclose(half, probabilities, atol=1e-3)


def test_softmax_probabilities_rank_the_chosen_organ_first(shared_data, softmax):
    from scan_fixtures import kaggle_slices, stack

    voxels = stack(kaggle_slices(shared_data, count=4))
    probabilities = np.zeros((4, 3, *voxels.shape[1:]), dtype=np.float32)
    masks = softmax.predict(voxels, probabilities)
    assert masks.any() and probabilities.min() >= 0 and probabilities.sum(axis=1).max() <= 1 + 1e-5
    # Background's probability is what the organs leave; the argmax over all four is the decision.
    full = np.concatenate([1 - probabilities.sum(axis=1, keepdims=True), probabilities], axis=1)
    top2 = np.sort(full, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-5  # near-ties (flat regions of a random model): rounding may pick either
    assert clear.mean() > 0.5
    winner = full.argmax(axis=1)
    for o in range(3):
        np.testing.assert_array_equal(masks[:, o][clear], (winner == o + 1)[clear])
        # Everywhere, the chosen organ's probability is the pixel's largest, up to rounding.
        assert (full[:, o + 1] >= top2[:, 1] - 1e-5)[masks[:, o]].all()


def test_probabilities_of_the_wrong_shape_are_refused(softmax):
    with pytest.raises(ValueError, match="do not fit"):
        softmax.predict(np.zeros((2, 40, 40), np.uint16), np.zeros((2, 3, 40, 41), np.float32))
