"""benchmarks/reviewer.py's simulated reviewer on a tiny synthetic scan (seconds; no check models trained)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import reviewer
from model import interactive


def disc(shape, row, col, radius):
    rr, cc = np.ogrid[:shape[0], :shape[1]]
    return (rr - row) ** 2 + (cc - col) ** 2 <= radius ** 2


def test_the_simulated_click_is_the_middle_of_the_largest_error():
    truth = np.zeros((40, 40), dtype=bool)
    truth[5:15, 5:15] = True  # missed: 100 px
    mask = np.zeros_like(truth)
    mask[20:39, 20:39] = True  # extra: 361 px, the largest
    assert interactive.simulated_click(mask, truth) == (29, 29, False)
    assert interactive.simulated_click(np.zeros_like(truth), truth)[2] is True
    assert interactive.simulated_click(truth, truth) is None


def test_the_reviewer_runs_on_a_tiny_scan():
    """Two organs on five slices, the model's masks missing one and inventing the other: both tables fill."""
    shape, depth = (64, 64), 5
    rng = np.random.default_rng(0)
    truth = np.zeros((3, depth, *shape), dtype=bool)
    voxels = 200 + rng.normal(0, 5, (depth, *shape))
    for d in range(depth):
        truth[0, d] = disc(shape, 20 + d, 20, 9)
        voxels[d][truth[0, d]] += 600
    masks = np.zeros_like(truth)
    masks[1, 1] = disc(shape, 48, 48, 8)  # an invented organ
    volumes = {"tiny": (SimpleNamespace(voxels=voxels.astype(np.uint16)), truth, masks,
                        np.zeros(truth.shape, dtype=np.float16))}
    assert len(reviewer.wrong_slice_organs(masks, truth)) == depth + 1
    for corrector in reviewer.CORRECTORS.values():
        row = reviewer.per_slice_organ(volumes, corrector)
        assert row["wrong_slice_organs"] == depth + 1
        assert 0 <= row["fixed_within_1"] <= row["fixed_within_5"] <= 1 and 1 <= row["noc85_mean"] <= 11
    ours = reviewer.per_slice_organ(volumes, reviewer.CORRECTORS["interactive"])
    assert ours["fixed_within_1"] == 1.0  # a bright disc on a flat background: one click each
    assert ours["by_kind"] == {"missed": {"n": depth, "fixed_within_5": 1.0, "noc85_mean": 1.0},
                               "invented": {"n": 1, "fixed_within_5": 1.0, "noc85_mean": 1.0}}
    assert ours["click_region_set_right"]["positive"]["clicks"] == depth and ours["click_region_set_right"]["negative"]["clicks"] == 1
    assert ours["click_region_set_right"]["negative"]["mean"] == 1.0  # the whole invented disc goes
    assert ours["per_volume"] == {"tiny": {"wrong_slice_organs": depth + 1, "fixed_within_1": 1.0, "fixed_within_3": 1.0,
                                           "fixed_within_5": 1.0, "fixed_within_10": 1.0, "noc85_mean": 1.0}}
    # Pooling: one volume run twice counts once (the later row), another volume adds its rows.
    record = {"command": "a", "protocol": {}, "volumes": {"tiny": {}}, "per_slice_organ": {"interactive": ours},
              "whole_scan": {}}
    again = {**record, "command": "b"}
    other = {**record, "command": "c", "volumes": {"other": {}}, "machine": "cpu X"}
    assert reviewer.merge([record, again])["per_slice_organ"]["interactive"]["wrong_slice_organs"] == depth + 1
    assert reviewer.merge([record, other])["machines"] == ["cpu X", "not recorded"]  # the numbers' machines
    eight = {**record, "protocol": {"propagate_reach_slices": reviewer.UNRECORDED_REACH}}
    assert reviewer.merge([record, eight])["per_slice_organ"]  # a run from before the reach was recorded ran at 8
    with pytest.raises(ValueError, match="different protocols"):
        reviewer.merge([record, {**record, "protocol": {"propagate_reach_slices": 4}}])
    pooled = reviewer.merge([record, again, other])["per_slice_organ"]["interactive"]
    assert pooled["wrong_slice_organs"] == 2 * (depth + 1) and set(pooled["per_volume"]) == {"tiny"}
    assert "| interactive | tiny | 6 | 100.0 / 100.0 / 100.0 / 100.0 % | 1.0 |" in reviewer.markdown(reviewer.merge([record]))
    scan, truth, masks, probabilities = volumes["tiny"]
    with_propagation = reviewer.whole_organ(scan, truth, masks, probabilities, 0, reviewer.CORRECTORS["interactive"], True)
    alone = reviewer.whole_organ(scan, truth, masks, probabilities, 0, reviewer.CORRECTORS["interactive"], False)
    assert with_propagation["reached"] and alone["reached"]
    assert with_propagation["clicks"] < alone["clicks"]
    # A corrector per volume (the learned one is trained without the volume it corrects) gives the same row.
    assert reviewer.per_slice_organ(volumes, {"tiny": reviewer.CORRECTORS["interactive"]})["noc85"] == ours["noc85"]
    # Whole-scan rows: by corrector; a record from before the choice holds the training-free one's rows directly.
    row = {"model_volume_dice": 0.1, "with_propagation": with_propagation, "slice_by_slice": alone}
    flat = {**record, "whole_scan": {"tiny/stomach": row}}
    nested = {**record, "whole_scan": {"click_refiner": {"tiny/stomach": row}}}
    merged = reviewer.merge([flat, nested])["whole_scan"]
    assert merged == {"interactive": {"tiny/stomach": row}, "click_refiner": {"tiny/stomach": row}}
    table = reviewer.markdown(reviewer.merge([flat, nested]))
    assert "Whole scan, interactive:" in table and "Whole scan, click_refiner:" in table


def test_the_whole_scan_tells_propagation_the_slices_clicked(monkeypatch):
    """Each propagation is told the slices clicked so far (the page's slices corrected by hand) as ``kept``; the
    slices taken from an accepted proposal are not."""
    shape, depth = (64, 64), 7
    truth = np.zeros((3, depth, *shape), dtype=bool)
    voxels = np.full((depth, *shape), 200.0)
    for d in range(depth):
        truth[0, d] = disc(shape, 30, 30, 6 + d)  # the largest error is on the last slice, then downwards
        voxels[d][truth[0, d]] += 600
    calls = []

    def neighbours_only(voxels, probabilities, organ_masks, organ, slice_index, before=None, kept=()):
        calls.append((slice_index, sorted(int(k) for k in kept)))
        result = organ_masks.copy()
        for n in (slice_index - 1, slice_index + 1):
            if 0 <= n < depth and n not in kept:
                result[organ, n] = truth[organ, n]
        return result

    monkeypatch.setattr(reviewer.interactive, "propagate", neighbours_only)
    masks = np.zeros_like(truth)
    row = reviewer.whole_organ(SimpleNamespace(voxels=voxels.astype(np.uint16)), truth, masks,
                               np.zeros(truth.shape, dtype=np.float16), 0, reviewer.CORRECTORS["interactive"], True)
    assert calls[:2] == [(6, [6]), (4, [4, 6])]  # slice 5, accepted from slice 6, is not kept
    assert row["propagations_accepted"] == row["propagations"] == len(calls)


def test_propagation_quality_against_a_known_answer():
    """A disc drifting 2 px a slice that the model missed on every slice: propagation from the true slice beats
    the model everywhere, and nothing is drawn past the organ's end."""
    shape, depth = (64, 64), 9
    rng = np.random.default_rng(3)
    truth = np.zeros((3, depth, *shape), dtype=bool)
    voxels = 200 + rng.normal(0, 5, (depth, *shape))
    for d in range(1, 8):
        truth[0, d] = disc(shape, 30, 18 + 2 * d, 9)
        voxels[d][truth[0, d]] += 600
    masks = np.zeros_like(truth)
    volumes = {"tiny": (SimpleNamespace(voxels=voxels.astype(np.uint16)), truth, masks,
                        np.zeros(truth.shape, dtype=np.float16))}
    quality = reviewer.propagation_quality(volumes, every=3)
    assert quality["starts"] == 3  # slices 1, 4 and 7 of the seven wrong ones
    stomach = quality["mean_dice"]["stomach"]
    assert set(stomach) == {"1", "2", "3", "4"} and stomach["1"]["model"] == 0.0
    for by_k in stomach.values():
        assert by_k["with_before"] > 0.85 and by_k["whole"] > 0.85 and by_k["with_before"] >= by_k["copy"]
    assert quality["past_the_end"]["slices"] == 4 and quality["past_the_end"]["with_before"] == 0.0
    assert quality["mean_dice"]["small_bowel"] == {}
    record = {"command": "a", "protocol": {}, "volumes": {"tiny": {}}, "per_slice_organ": {}, "whole_scan": {},
              "propagation": quality}
    assert reviewer.merge([record, {**record, "propagation": None}])["propagation"] == quality
    assert "| stomach | 1 | " in reviewer.markdown(record)


def test_a_slice_already_right_takes_no_click():
    truth = disc((40, 40), 20, 20, 8)
    mask = disc((40, 40), 20, 21, 8)  # Dice 0.93 with the truth
    image = np.where(truth, 800, 200).astype(np.uint16)
    used, fixed, seconds, effect = reviewer.correct_slice(reviewer.CORRECTORS["interactive"], image, None, mask, truth, None)
    assert (used, seconds, effect) == (0, [], []) and (fixed == mask).all()
    used, _, _, effect = reviewer.correct_slice(reviewer.CORRECTORS["interactive"], image, None, np.zeros_like(mask),
                                                truth, None)
    assert used == 1 and effect[0][0] is True


def test_regions_to_fix_counts_whole_regions_largest_first():
    shape = (60, 60)
    big, small, other = disc(shape, 15, 15, 8), disc(shape, 45, 45, 3), disc(shape, 45, 15, 8)
    empty = np.zeros(shape, dtype=bool)
    assert reviewer.regions_to_fix(big | small, big | small) == 0
    assert reviewer.regions_to_fix(empty, big | small) == 1  # the big disc alone: Dice 2·197 / (197 + 226) = 0.93
    assert reviewer.regions_to_fix(empty, big | other) == 2  # one of two equal discs: Dice 0.67
    assert reviewer.regions_to_fix(big | other, big) == 1  # one extra disc to remove


def test_each_kind_of_refiner_is_trained_once_from_what_it_builds_on(tmp_path, monkeypatch):
    """The refiner trained on its own clicks starts from that fold's pretrained refiner, which starts from the
    synthetic one; its second round from it, on new examples; the control from the pretrained one, as long on fresh examples;
    the one with half its own clicks on synthetic slices from the pretrained one, given the label maps; the plain refiner
    from random weights; a cached folder is not trained again."""
    from model.engines import click_refiner
    from train import clicks

    monkeypatch.setattr(reviewer, "CACHE", tmp_path)
    monkeypatch.setattr(reviewer, "refiner_groups", lambda data, steps, held: ["groups"])
    monkeypatch.setattr(reviewer, "synthetic_refiner", lambda data: tmp_path / "synthetic")
    monkeypatch.setattr(reviewer, "synthetic_maps", lambda data: (["caseB_day0"], ["maps"]))
    trained = []

    def fake_fit(groups, out, init=None, seed=0, steps=None, **_):
        trained.append(("fit", out.name, init and init.name, seed, steps))
        return click_refiner.save(click_refiner.ClickRefiner((4, 8)), out)

    def fake_own(groups, init, out, seed=0, maps=(), **_):
        trained.append(("own", out.name, init.name, seed) + ((maps,) if maps else ()))
        return click_refiner.save(click_refiner.ClickRefiner((4, 8)), out)

    monkeypatch.setattr(clicks, "fit", fake_fit)
    monkeypatch.setattr(clicks, "fit_on_own_clicks", fake_own)
    own = reviewer.trained_refiner(tmp_path, 7, "caseA_day0", reviewer.OWN_CLICKS)
    pretrained = f"refiner_pretrained{reviewer.FINETUNE_STEPS}_without_caseA_day0"
    assert own == tmp_path / "steps7" / f"refiner_pretrained{reviewer.FINETUNE_STEPS}_own_clicks{reviewer.OWN_CLICK_STEPS}_without_caseA_day0"
    assert trained == [("fit", pretrained, "synthetic", 0, reviewer.FINETUNE_STEPS), ("own", own.name, pretrained, 0)]
    assert reviewer.trained_refiner(tmp_path, 7, "caseA_day0", reviewer.OWN_CLICKS) == own and len(trained) == 2
    second = reviewer.trained_refiner(tmp_path, 7, "caseA_day0", reviewer.OWN_CLICKS_2)
    assert trained[2] == ("own", second.name, own.name, 1) and second != own and len(trained) == 3
    more = reviewer.trained_refiner(tmp_path, 7, "caseA_day0", reviewer.MORE_STEPS)  # the control: as long, no own clicks
    assert trained[3] == ("fit", more.name, pretrained, 3, reviewer.OWN_CLICK_STEPS)
    reviewer.trained_refiner(tmp_path, 7, "caseA_day0", reviewer.REFINER)
    assert trained[4] == ("fit", f"refiner{reviewer.REFINER_STEPS}_without_caseA_day0", None, 0, reviewer.REFINER_STEPS)
    mixed = reviewer.trained_refiner(tmp_path, 7, "caseA_day0", reviewer.OWN_CLICKS_SYNTHETIC)  # own clicks, half synthetic
    assert trained[5] == ("own", mixed.name, pretrained, 0, ["maps"]) and mixed.name not in {own.name, second.name}
