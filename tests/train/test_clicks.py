"""train/clicks.py: the click refiner's simulated examples, and its training command on a Kaggle layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.engines import click_refiner
from model.engines.click_refiner import WINDOW
from train import clicks

SHAPE = (90, 110)


def disc_scan(depth: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Slices ``(D, H, W) uint16`` with three bright discs, and their truth ``(3, D, H, W) bool``."""
    rng = np.random.default_rng(seed)
    rr, cc = np.ogrid[:SHAPE[0], :SHAPE[1]]
    truth = np.zeros((3, depth, *SHAPE), bool)
    for o, (row, col, radius) in enumerate(((30, 30, 14), (60, 70, 10), (30, 85, 8))):
        truth[o] = ((rr - row) ** 2 + (cc - col) ** 2 <= radius ** 2)[None]
    slices = (300 + rng.normal(0, 20, (depth, *SHAPE)) + 900 * truth.any(axis=0)).astype(np.uint16)
    return slices, truth


@pytest.mark.parametrize("with_model_output", [False, True])
def test_each_example_is_a_wrong_mask_a_click_on_its_error_and_the_truth_as_target(with_model_output):
    slices, truth = disc_scan()
    group = (slices, truth)
    if with_model_output:  # a "model" that missed the first organ and drew the second too large
        masks = truth.copy()
        masks[0] = False
        masks[1] = np.roll(truth[1], 6, axis=-1) | truth[1]
        group += (masks, masks.astype(np.float16))
    x, y = clicks.examples([group], 40, seed=1)
    assert x.shape == (40, len(click_refiner.CHANNELS), WINDOW, WINDOW) and y.shape == (40, WINDOW, WINDOW)
    c = WINDOW // 2
    mask, positive, negative = x[:, 2] > 0.5, x[:, 3] > 0.5, x[:, 4] > 0.5
    assert ((mask != y).sum(axis=(1, 2)) >= 1).all()  # every example has something to fix
    newest_positive = positive[:, c, c] & ~negative[:, c, c]
    newest_negative = negative[:, c, c] & ~positive[:, c, c]
    assert (newest_positive | newest_negative).all()
    # the newest click is on an error pixel, positive where the mask misses the organ, negative where it has extra
    assert (y[newest_positive, c, c] & ~mask[newest_positive, c, c]).all()
    assert (~y[newest_negative, c, c] & mask[newest_negative, c, c]).all()
    assert np.array_equal(x, clicks.examples([group], 40, seed=1)[0])  # seeded


def test_spoil_makes_a_different_mask_and_invents_an_organ_where_there_is_none():
    slices, truth = disc_scan(1)
    rng = np.random.default_rng(0)
    body = slices[0] > 0
    others = truth[1:, 0].any(axis=0)
    changed = [(clicks.spoil(truth[0, 0], others, body, rng) != truth[0, 0]).any() for _ in range(30)]
    assert np.mean(changed) > 0.8
    invented = clicks.spoil(np.zeros(SHAPE, bool), others, body, rng)
    assert invented.any()


@pytest.mark.slow
def test_the_training_command_writes_a_refiner_the_app_loads(synthetic_kaggle, tmp_path):
    out = tmp_path / "refiner"
    assert clicks.main(["--data-dir", str(synthetic_kaggle.root), "--out", str(out), "--steps", "3",
                        "--examples", "48", "--case-days", "case7_day0", "case12_day0"]) == 0
    net = click_refiner.load(out)
    assert net.widths == (16, 32, 64, 128)
    with pytest.raises(SystemExit, match="no scans of"):
        clicks.main(["--data-dir", str(synthetic_kaggle.root), "--out", str(out), "--case-days", "case999_day0"])


def test_synthetic_slices_come_from_label_maps_alone_and_their_examples_target_the_truth():
    _, truth = disc_scan(1)
    maps = [truth[:, 0]]
    rng = np.random.default_rng(3)
    body = clicks.synthetic_body(truth[:, 0], rng)
    assert body.shape == SHAPE and body[truth[:, 0].any(axis=0)].all()  # every organ lies in the body
    image = clicks.synthetic_slice(truth[:, 0], body, rng)
    assert image.shape == SHAPE and image.dtype == np.float32 and 0 <= image.min() and image.max() <= 255
    assert image[~body].mean() < image[body].mean()  # air is dark
    x, y = clicks.synthetic_examples(maps, 24, seed=2)
    assert x.shape == (24, len(click_refiner.CHANNELS), WINDOW, WINDOW) and y.shape == (24, WINDOW, WINDOW)
    c = WINDOW // 2
    mask, positive = x[:, 2] > 0.5, x[:, 3, c, c] > 0.5
    assert ((mask != y).sum(axis=(1, 2)) >= 1).all()  # every example has something to fix
    assert (y[positive, c, c] & ~mask[positive, c, c]).all() and (~y[~positive, c, c] & mask[~positive, c, c]).all()
    assert np.array_equal(x, clicks.synthetic_examples(maps, 24, seed=2)[0])  # seeded
    assert not np.array_equal(x, clicks.synthetic_examples(maps, 24, seed=5)[0])


def test_label_maps_read_every_other_slice_holding_an_organ(shared_data):
    import csv

    kaggle = shared_data / "kaggle"
    with open(kaggle / "volumes.csv", newline="") as f:
        shapes = {row["case_day"]: (int(row["height"]), int(row["width"])) for row in csv.DictReader(f)}
    maps = clicks.label_maps(kaggle / "train.csv.gz", shapes, ["case2_day1"])
    assert maps and all(m.shape == (3, *shapes["case2_day1"]) and m.dtype == bool and m.any() for m in maps)
    from model.rle import RleCsv

    volume = RleCsv(kaggle / "train.csv.gz", ["case2_day1"]).volume("case2_day1", shapes["case2_day1"])
    holding = [n for d, n in enumerate(volume.slice_numbers) if volume.masks[:, d].any()]
    assert len(maps) == len([n for n in holding if n % 2 == 0])
    assert len(clicks.label_maps(kaggle / "train.csv.gz", shapes, ["case2_day1"], every=1)) == len(holding)


@pytest.mark.slow
def test_pretraining_on_synthetic_slices_starts_the_real_training(synthetic_kaggle, tmp_path):
    out = tmp_path / "refiner"
    assert clicks.main(["--data-dir", str(synthetic_kaggle.root), "--out", str(out), "--steps", "2", "--examples", "32",
                        "--synthetic-steps", "2", "--case-days", "case7_day0"]) == 0
    assert click_refiner.load(out / "synthetic").widths == click_refiner.load(out).widths
    # Training from a saved refiner starts from its weights: every weight 0.01, one step (at one cycle's first
    # learning rate, 1.2e-4) moves each by about that much at most.
    start = click_refiner.ClickRefiner()
    start.load_state_dict({k: torch.full_like(v, 0.01) for k, v in start.state_dict().items()})
    click_refiner.save(start, tmp_path / "start")
    slices, truth = disc_scan()
    tuned = click_refiner.load(clicks.fit([(slices, truth)], tmp_path / "tuned", steps=1, n_examples=16,
                                          init=tmp_path / "start", accelerator="cpu"))
    weights = np.concatenate([v.numpy().ravel() for k, v in tuned.state_dict().items() if v.dtype.is_floating_point])
    assert np.abs(weights - 0.01).max() < 1e-3


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 9, 10, 11, 20, 3000])
def test_the_one_cycle_schedule_runs_for_any_number_of_steps(steps):
    """torch's OneCycleLR divided by zero at 10 steps (its warm-up, a tenth, ended on its first step)."""
    module = clicks.ClickRefinerModule(widths=(4,), steps=steps)
    optimizer, schedule = module.configure_optimizers().values()
    schedule = schedule["scheduler"]
    for _ in range(steps - 1):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] > 0


def test_refiner_training_is_pinned_to_fp32_whatever_the_cpu(tmp_path, monkeypatch):
    """Lightning's precision default could change under us (and bf16 is native on some CPUs): fit asks for
    "32-true" itself, and the one training step it runs is in fp32."""
    import lightning as L

    asked, seen = [], []
    real_trainer = L.Trainer

    def trainer(*args, **kwargs):
        asked.append(kwargs.get("precision"))
        made = real_trainer(*args, **kwargs)
        seen.append(made.precision)
        return made

    monkeypatch.setattr(clicks.L, "Trainer", trainer)
    slices, truth = disc_scan()
    clicks.fit([(slices, truth)], tmp_path / "fp32", steps=1, n_examples=16, accelerator="cpu")
    assert asked == ["32-true"] and seen == ["32-true"]
    assert all(v.dtype == torch.float32 for v in click_refiner.load(tmp_path / "fp32").state_dict().values()
               if v.dtype.is_floating_point)


def test_own_click_examples_start_from_the_masks_the_refiner_itself_made(monkeypatch):
    """Each example's mask is the refiner's answer to the clicks before it (spied on), and its newest click is the
    simulated reviewer's on that mask: on an error pixel, of the error's sign."""
    slices, truth = disc_scan()
    masks = truth.copy()
    masks[0] = False  # a "model" that missed the first organ and drew the second too large
    masks[1] = np.roll(truth[1], 6, axis=-1) | truth[1]
    group = (slices, truth, masks, masks.astype(np.float16))
    calls = []
    real_refine = click_refiner.refine

    def spy(net, stretched, probability, mask, clicks_so_far):
        calls.append((list(clicks_so_far), real_refine(net, stretched, probability, mask, clicks_so_far)))
        return calls[-1][1]

    monkeypatch.setattr(clicks.click_refiner, "refine", spy)
    drawn = []
    monkeypatch.setattr(clicks, "_encoded", lambda draw, n: drawn.extend(d for d in (draw() for _ in range(40)) if d))
    torch.manual_seed(0)
    clicks.own_click_examples([group], click_refiner.ClickRefiner(), 8, seed=4)
    assert len(drawn) >= 5 and len(calls) >= len(drawn)
    for image, _, mask, clicks_made, truth_slice in drawn:
        made_by = [out for before, out in calls if before == clicks_made[:-1]]
        assert made_by and any(np.array_equal(mask, out) for out in made_by)  # the refiner's mask, not the drawn one
        row, col, positive = clicks_made[-1]
        assert truth_slice[row, col] == positive and mask[row, col] != positive
    monkeypatch.undo()
    x, y = clicks.own_click_examples([group], click_refiner.ClickRefiner(), 8, seed=4)
    assert x.shape == (8, len(click_refiner.CHANNELS), WINDOW, WINDOW) and y.shape == (8, WINDOW, WINDOW)


def test_own_click_examples_start_on_synthetic_slices_half_the_time_given_label_maps(monkeypatch):
    """With label maps, about half the own-click examples are drawn on synthetic slices of those maps (their truth
    is a map's organ, a square the real slices never hold); without, none is."""
    slices, truth = disc_scan()
    square = np.zeros((3, *SHAPE), bool)
    square[0, 20:60, 20:60] = True  # an organ no real slice has
    monkeypatch.setattr(clicks, "_synthetic_example", lambda maps, rng: (clicks.synthetic_slice(maps, np.ones(SHAPE, bool), rng),
                                                                          None, np.zeros(SHAPE, bool), [(40, 40, True)], maps[0]))
    for maps, share in (([square], (0.3, 0.7)), ((), (0.0, 0.0))):
        drawn = []
        monkeypatch.setattr(clicks, "_encoded", lambda draw, n: drawn.extend(d for d in (draw() for _ in range(60)) if d))
        torch.manual_seed(0)
        clicks.own_click_examples([(slices, truth)], click_refiner.ClickRefiner(), 8, seed=4, maps=maps)
        synthetic = [np.array_equal(t, square[0]) for *_, t in drawn]
        assert len(drawn) >= 20 and share[0] <= np.mean(synthetic) <= share[1]


@pytest.mark.slow
def test_the_training_command_trains_on_its_own_clicks_from_the_first_refiner(synthetic_kaggle, tmp_path, monkeypatch):
    out = tmp_path / "refiner"
    started_from = []
    real = clicks.fit_on_own_clicks
    monkeypatch.setattr(clicks, "fit_on_own_clicks",
                        lambda groups, init, *a, seed, **k: started_from.append((init, seed)) or real(groups, init, *a, seed=seed, **k))
    assert clicks.main(["--data-dir", str(synthetic_kaggle.root), "--out", str(out), "--steps", "2", "--examples", "16",
                        "--own-click-steps", "1", "--own-click-rounds", "2", "--case-days", "case7_day0"]) == 0
    assert started_from == [(out / "first", 0), (out / "round1", 1)]  # round 2 on round 1's clicks, new examples
    first, final = click_refiner.load(out / "first"), click_refiner.load(out)
    moved = [not torch.equal(a, b) for a, b in zip(first.state_dict().values(), final.state_dict().values())]
    assert any(moved)  # one more step on its own clicks changed the weights it started from
