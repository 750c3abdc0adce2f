"""The loss max-pooling chapter module (pixelweight.chapters.lmp): its stages (budgets, data,
models, arms and run names as the notebooks ran them), where the LMP weight goes, the limit
checks on real losses, the cost benchmark, the grid's comparisons and the claims tables; and
tiny training runs (LMP with ratio 1 trains exactly like CE, as the grid's ratio = 1 column
assumes; LMP learns a trivial task)."""

import math
import types

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from helpers.toy import threshold_task
from pixelweight.chapters import Arm, DataSpec, ModelSpec, group_metric_frame, lmp
from pixelweight.claims import ClaimsTable
from pixelweight.losses import CrossEntropyLoss, FocalLoss, LossMaxPooling, lmp_weights
from pixelweight.metrics import SegmentationMetrics, boundary_mask
from pixelweight.models import UNet
from pixelweight.profiles import get_profile
from pixelweight.stats import Interval
from pixelweight.train import TrainConfig, TrainResult, seed_everything, train

SCENES = DataSpec("DigitScenes", size=64, options={"imbalance": 1.0})


# ---------------------------------------------------------------------------------------
# the stages: exactly what the notebooks ran before the chapter module
# ---------------------------------------------------------------------------------------
SMALL = DataSpec("DigitScenes", size=32, options={"imbalance": 1.0, "num_digits": (1, 3), "digit_size": (12, 24)})


@pytest.mark.parametrize("stage, name, profile, data, model", [
    ("maps", "ci", get_profile("ci", seeds=(0,), steps=200, lr=4e-3, eval_every=0), SCENES, ModelSpec(width=16)),
    ("headline", "ci", get_profile("ci", steps=140, lr=4e-3, eval_every=0), SCENES, ModelSpec(width=16)),
    ("grid", "ci", get_profile("ci", steps=120, lr=6e-3, eval_every=0), SMALL, ModelSpec(width=8)),
])
def test_stage_scales(stage, name, profile, data, model):
    scale = lmp.STAGES[stage].scale(name)
    assert scale.profile == profile and scale.data == data and scale.model == model
    assert scale.model.depth == 3 and not scale.train
    assert scale.data.build("val", 2).config["imbalance"] == 1.0  # valid DigitScenes arguments


@pytest.mark.parametrize("stage", ["maps", "headline", "grid"])
def test_full_scales_are_the_ci_experiments_trained_to_a_plateau(stage):
    full, ci = lmp.STAGES[stage].scale("full"), lmp.STAGES[stage].scale("ci")
    assert full.data == ci.data and full.model == ci.model and full.profile.lr == ci.profile.lr
    assert full.profile.steps >= 10 * ci.profile.steps
    assert len(full.profile.seeds) == (1 if stage == "maps" else 5)
    assert full.train["plateau_metric"] == "miou"
    assert full.profile.steps * full.train["plateau_window"] // full.profile.eval_every >= 3


def test_stages_seeds_and_descriptions():
    for stage in ("headline", "grid"):
        assert len(lmp.STAGES[stage].scale("ci").profile.seeds) >= 3
        assert len(lmp.STAGES[stage].scale("full").profile.seeds) >= 5
    assert lmp.setup("headline", "ci").describe() == \
        "`ci` (early training): 140 steps, 3 seeds, 64x64 scenes, width-16 U-Net"
    assert lmp.setup("grid", "ci").describe() == \
        "`ci` (early training): 120 steps, 3 seeds, 32x32 scenes, width-8 U-Net"
    assert lmp.CHAPTER.folder == "04_lmp" and set(lmp.STAGES) == {"maps", "headline", "grid"}


def test_run_names_are_those_of_the_committed_records():
    assert lmp.setup("maps", "ci").run_names() == ["ch4-maps-ce"]
    assert lmp.setup("headline", "full").run_names() == ["ch4-headline-ce", "ch4-headline-lmp"]
    grid = lmp.setup("grid", "ci")
    expected = ["ch4-grid-ce"] + [f"ch4-grid-lmp-p{p}-r{r}" for r in ("0.1", "0.3")
                                  for p in ("1", "1.1", "1.3", "1.7", "100")] + ["ch4-grid-focal"]
    assert grid.run_names() == expected
    assert [a.label for a in grid.arms] == (["CE"] + [lmp.grid_label(p, r) for r in (0.1, 0.3)
                                                      for p in lmp.GRID_PS] + ["focal"])
    assert lmp.grid_label(1.7, 0.3) == "p=1.7, ρ=0.3" and lmp.grid_cell(100.0, 1.0) == "CE"
    assert lmp.grid_candidates() == [lmp.grid_label(p, r) for r in (0.1, 0.3) for p in (1.0, 1.1, 1.3, 1.7)]


def test_setup_validates_the_chapter_and_stage():
    with pytest.raises(ValueError, match="belongs to chapter '04_lmp'"):
        lmp.setup("headline", "ci", chapter="02_recall")
    with pytest.raises(ValueError, match="has no stage 'nope'"):
        lmp.setup("nope", "ci")
    with pytest.raises(ValueError, match="has no profile 'gpu'"):
        lmp.setup("grid", "gpu")
    assert lmp.setup("grid", "ci", chapter="04_lmp").chapter == "04_lmp"


def _old_losses():
    """The losses the notebooks built by hand before the chapter module, by arm label."""
    old = {"CE": CrossEntropyLoss(), "LMP": LossMaxPooling(1.7, 0.3), "focal": FocalLoss(2.0)}
    for ratio in (0.1, 0.3):
        for p in (1.0, 1.1, 1.3, 1.7, 100.0):
            old[lmp.grid_label(p, ratio)] = LossMaxPooling(p, ratio)
    return old


@pytest.mark.parametrize("stage", ["maps", "headline", "grid"])
def test_arms_build_the_losses_the_notebooks_built(stage):
    setup = lmp.setup(stage, "ci")
    old = _old_losses()
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 11, 9, 7, generator=g) * 3
    target = torch.randint(0, 11, (3, 9, 7), generator=g)
    for arm in setup.arms:
        new = setup.build_loss(arm)
        assert type(new) is type(old[arm.label])
        x1, x2 = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        a, b = new(x1, target), old[arm.label](x2, target)
        a.backward(), b.backward()
        assert torch.equal(a, b) and torch.equal(x1.grad, x2.grad), arm.label
    assert setup._splits is None  # building the losses reads no data


def test_headline_lmp_arm_records_its_options():
    arm = lmp.setup("headline", "ci").arm("LMP")
    assert arm.to_dict() == {"label": "LMP", "name": "lmp", "options": {"p": 1.7, "ratio": 0.3, "per_image": False}}


# ---------------------------------------------------------------------------------------
# where the weight goes; the limits; the path between top-k and CE
# ---------------------------------------------------------------------------------------
def test_weight_share_frame():
    target = torch.tensor([[[0, 0, 0, 1]]])
    weights = torch.tensor([[[1.0, 1.0, 1.0, 3.0]]])
    boundary = torch.tensor([[[False, False, True, True]]])
    frame = lmp.weight_share_frame(weights, target, ["bg", "fg"], boundary)
    rows = frame.set_index("group")
    assert rows.loc["bg", "pixel_share"] == 0.75 and rows.loc["bg", "weight_share"] == 0.5
    assert rows.loc["fg", "enrichment"] == pytest.approx(0.5 / 0.25)
    assert rows.loc["boundary pixels", "weight_share"] == pytest.approx(4 / 6)
    assert rows.loc["interior pixels", "pixel_share"] == 0.5
    uniform = lmp.weight_share_frame(torch.ones(1, 1, 4), target, ["bg", "fg"])
    assert list(uniform["enrichment"]) == [1.0, 1.0]
    valid = torch.tensor([[[True, True, True, False]]])
    masked = lmp.weight_share_frame(weights, target, ["bg", "fg"], valid=valid).set_index("group")
    assert masked.loc["bg", "weight_share"] == 1.0 and math.isnan(masked.loc["fg", "enrichment"])


def test_weight_share_frame_errors():
    t = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="must have the same shape"):
        lmp.weight_share_frame(torch.ones(1, 2, 3), t, ["a", "b"])
    with pytest.raises(ValueError, match="boundary must be a bool tensor"):
        lmp.weight_share_frame(torch.ones(1, 2, 2), t, ["a", "b"], boundary=torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="weights must be non-negative"):
        lmp.weight_share_frame(-torch.ones(1, 2, 2), t, ["a", "b"])
    with pytest.raises(ValueError, match="at least one valid pixel with a positive weight"):
        lmp.weight_share_frame(torch.zeros(1, 2, 2), t, ["a", "b"])
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 1\]"):
        lmp.weight_share_frame(torch.ones(1, 2, 2), t + 2, ["a", "b"])


def test_lmp_weights_on_a_prediction_favour_errors():
    # a model that is wrong on one class: the LMP weight concentrates on that class's pixels
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, 2:4, 2:6] = 1
    logits = torch.zeros(2, 2, 8, 8)
    logits[:, 0] = 3.0  # predicts background everywhere
    ce = F.cross_entropy(logits, target, reduction="none")
    frame = lmp.weight_share_frame(lmp_weights(ce, 1.7, 0.1), target, ["bg", "fg"], boundary_mask(target))
    rows = frame.set_index("group")
    assert rows.loc["fg", "enrichment"] > 3 and rows.loc["boundary pixels", "enrichment"] > 1


def test_top_m_mean():
    x = torch.tensor([[4.0, 1.0, 3.0, 2.0], [1.0, 1.0, 1.0, 5.0]])
    torch.testing.assert_close(lmp.top_m_mean(x, 2), torch.tensor([3.5, 3.0], dtype=torch.float64))
    torch.testing.assert_close(lmp.top_m_mean(x, [2.5, 0.2]),
                               torch.tensor([(7 + 1.0) / 2.5, 5.0], dtype=torch.float64))
    valid = torch.tensor([[False, True, True, True], [False, False, False, False]])
    torch.testing.assert_close(lmp.top_m_mean(x, 10, valid), torch.tensor([2.0, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="one m per image"):
        lmp.top_m_mean(x, [1.0])
    with pytest.raises(ValueError, match=r"shape \(N, ...\)"):
        lmp.top_m_mean(torch.ones(3), 1.0)


def _limits(seed=0):
    g = torch.Generator().manual_seed(seed)
    losses = torch.rand(3, 8, 8, generator=g) ** 4 * 3
    valid = torch.rand(3, 8, 8, generator=g) > 0.2
    return losses, valid


def test_lmp_limit_frame_on_losses():
    losses, valid = _limits()
    frame = lmp.lmp_limit_frame(losses, valid)
    assert set(frame["image"]) == {0, 1, 2} and frame["limit"].nunique() == 5
    worst = frame.groupby("limit")["relative_difference"].apply(lambda s: s.abs().max())
    exact = [k for k in worst.index if k.startswith(("ratio = 1", "p = 1 ", "m = 1"))]
    assert len(exact) == 3 and all(worst[k] < 1e-10 for k in exact)
    assert all(worst[k] < 1e-3 for k in worst.index)
    with pytest.raises(ValueError, match="every image needs at least one valid pixel"):
        lmp.lmp_limit_frame(losses, torch.zeros_like(valid))


def test_limit_checks_and_table():
    losses, valid = _limits()
    limits = lmp.lmp_limit_frame(losses, valid)
    checks = lmp.limit_checks(limits)
    assert [c.text for c in checks] == [f"LMP limit: {name}" for name in dict.fromkeys(limits["limit"])]
    assert all(c.passed and c.tolerance == lmp.LIMIT_TOLERANCE for c in checks)
    worst = limits.groupby("limit", sort=False)["relative_difference"].apply(lambda v: v.abs().max())
    assert [c.max_error for c in checks] == list(worst)  # the largest error, not a mean over images
    table = lmp.limit_table(limits)
    assert list(table.columns) == ["limit", "images", "largest relative difference", "within 0.001"]
    assert list(table["images"]) == [3] * 5 and set(table["within 0.001"]) == {"passes"}
    broken = limits.copy()
    broken.loc[broken.index[0], "relative_difference"] = 0.5  # one image of one limit
    assert lmp.limit_table(broken).iloc[0, -1] == "fails" and not lmp.limit_checks(broken)[0].passed
    with pytest.raises(ValueError, match="limits must be a DataFrame of lmp_limit_frame"):
        lmp.limit_checks(pd.DataFrame({"x": [1]}))
    with pytest.raises(ValueError, match="limits holds no row"):
        lmp.limit_checks(limits.iloc[:0])


def test_lmp_path_frame():
    losses = torch.rand(2, 30, generator=torch.Generator().manual_seed(1)) ** 3
    frame = lmp.lmp_path_frame(losses, [1.0001, 1.7, 1e5], ratio=0.2)
    assert len(frame) == 6
    near_one, far = frame[frame.p == 1.0001], frame[frame.p == 1e5]
    assert ((near_one.lmp - near_one.top_m_mean).abs() / near_one.top_m_mean).max() < 1e-3
    assert ((far.lmp - far["mean"]).abs() / far["mean"]).max() < 1e-4
    mid = frame[frame.p == 1.7]
    assert (mid["mean"] < mid.lmp).all() and (mid.lmp < mid.top_m_mean).all()


def test_lmp_benchmark_small():
    frame = lmp.lmp_benchmark((2, 3, 8, 16), repeats=2, warmup=0)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["pass", "what", "median_ms", "ratio", "ratio_q25", "ratio_q75", "shape",
                                   "device", "threads", "steady_memory"]
    assert list(frame["pass"]) == ["forward+backward"] * 4 + ["forward"] * 2
    assert frame.loc[0, "ratio"] == 1.0 and frame.loc[4, "ratio"] == 1.0
    assert frame.loc[1, "what"] == "loss_max_pooling(p=1.7, ratio=0.3)"
    assert frame.loc[5, "what"] == "lmp_weights(p=1.7, ratio=0.3) on those 2x8x16 losses"
    assert (frame["median_ms"] > 0).all() and set(frame["shape"]) == {"2x3x8x16"}
    assert (frame["ratio_q25"] <= frame["ratio"]).all() and (frame["ratio"] <= frame["ratio_q75"]).all()
    with pytest.raises(ValueError, match=r"shape must be \(N, C, H, W\)"):
        lmp.lmp_benchmark((2, 3, 8))
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        lmp.lmp_benchmark((2, 3, 8, 8), repeats=0)


def _fake_result(seed, iou, recall, miou=None):
    metrics = {"test_miou": sum(iou) / len(iou) if miou is None else miou, "test_mean_accuracy": 0.5,
               "test_pixel_accuracy": 0.9, "test_iou": iou, "test_recall": recall}
    return TrainResult(model=None, history=[], metrics=metrics, wall_time_s=0.0, device="cpu")


def test_group_metric_frame():
    results = {"a": [_fake_result(0, [0.9, 0.2, float("nan")], [1.0, 0.4, 0.0])]}
    frame = group_metric_frame(results, {"rare": [1, 2], "all": [0, 1, 2]})
    row = frame.iloc[0]
    assert row["rare_iou"] == pytest.approx(0.2) and row["rare_recall"] == pytest.approx(0.2)
    assert row["all_iou"] == pytest.approx(0.55) and row["run"] == "a" and row["seed_index"] == 0
    with pytest.raises(ValueError, match="group 'x' must list class indices"):
        group_metric_frame(results, {"x": [5]})
    with pytest.raises(ValueError, match="split must be"):
        group_metric_frame(results, {}, split="train")


# ---------------------------------------------------------------------------------------
# the claims: judged as intended
# ---------------------------------------------------------------------------------------
def _iv(mean, half=0.01, n=3):
    return Interval(mean, mean - half, mean + half, n, 0.95)


def _headline(diffs=None, rare_iou=None, limits=None):
    setup = lmp.setup("headline", "ci")
    diffs = diffs or {"miou": _iv(0.05), "rare_iou": _iv(0.02), "mean_accuracy": _iv(0.001, 0.02)}
    rare_iou = rare_iou or {"CE": 0.1, "LMP": 0.2}
    limits = lmp.lmp_limit_frame(*_limits()) if limits is None else limits
    return lmp.headline_claims(setup, diffs, rare_iou=rare_iou, limits=limits, boundary=_iv(0.03))


def test_headline_claims():
    table = _headline()
    assert isinstance(table, ClaimsTable) and table.chapter == "04_lmp" and table.section == "claims"
    assert table.scope == "`ci` (early training): 140 steps, 3 seeds, 64x64 scenes, width-16 U-Net"
    assert [(c.text, c.source) for c in table.claims] == [
        ("LMP improves mIoU over CE", "abstract"),
        ("LMP improves rare-class IoU over CE", "abstract"),
        ("LMP raises mean class recall over CE", "ours"),
        ("LMP handles intra-class imbalance (hard pixels within a class)", "abstract"),
    ]
    miou, rare, acc, intra = table.claims
    assert miou.primary and not rare.primary and not acc.primary  # the paper's headline
    assert miou.ran == ("CE vs LMP (p = 1.7, ρ = 0.3), 3 paired seeds, mIoU (test; the abstract names no metric: "
                        "mIoU is our reading)")
    # the abstract's intra-class claim, judged on the accuracy on object boundaries (our reading)
    assert intra.verdict == "supported" and intra.record and not intra.primary and "boundaries" in intra.ran
    assert table.scale == "DigitScenes 64x64, width-16 U-Net"
    assert (miou.verdict, rare.verdict, acc.verdict) == ("supported", "supported", "inconclusive")
    assert rare.ran == "same runs; IoU of the 5 rarest digits" and rare.effect_text().endswith("(CE 0.100)")
    # the limits are identities: checks beside the claims, not claims
    assert len(table.checks) == 5 and all(k.passed for k in table.checks)
    assert all(k.ran == "the CE of a trained model, 3 images" for k in table.checks)
    assert all(c.record for c in table.claims)
    # committed runs keep no model: their table has no checks and no intra-class row
    no_models = lmp.headline_claims(lmp.setup("headline", "ci"), _headline_diffs(), {"CE": 0.1})
    assert no_models.checks == () and len(no_models.claims) == 3
    with pytest.raises(TypeError, match="boundary must be an Interval"):
        lmp.headline_claims(lmp.setup("headline", "ci"), _headline_diffs(), {"CE": 0.1}, boundary=0.1)


def _headline_diffs():
    return {"miou": _iv(0.05), "rare_iou": _iv(0.02), "mean_accuracy": _iv(0.001, 0.02)}


def _fake_runs(setup, shifts, seeds=(0, 1, 2)):
    """Runs with per-class test/val metrics: IoU and recall 0.6 + the arm's shift (+ a
    per-seed wobble), rare digits 0.3 lower."""
    rare, _ = lmp.rare_and_frequent(setup)
    out = {}
    for label, shift in shifts.items():
        runs = []
        for seed in seeds:
            per = np.full(setup.num_classes, 0.6 + shift + 0.01 * seed)
            per[list(rare)] -= 0.3
            metrics = {}
            for split in ("test", "val"):
                metrics.update({f"{split}_{m}": list(per) for m in ("iou", "recall", "precision")})
                metrics.update({f"{split}_miou": float(per.mean()), f"{split}_mean_accuracy": float(per.mean()),
                                f"{split}_pixel_accuracy": 0.9})
            runs.append(types.SimpleNamespace(metrics=metrics, seed=seed, record=types.SimpleNamespace(seed=seed),
                                              history=[], plateau={"reached": True}, stale=[], wall_time_s=60.0,
                                              device="cpu"))
        out[label] = runs
    return out


def test_headline_effects_and_claims_from_runs():
    setup = lmp.setup("headline", "ci")
    runs = _fake_runs(setup, {"CE": 0.0, "LMP": 0.05})
    effects = lmp.headline_effects(setup, runs)
    assert effects.diffs["miou"].mean == pytest.approx(0.05) and effects.diffs["rare_iou"].mean == pytest.approx(0.05)
    assert effects.rare_iou["CE"] == pytest.approx(0.31) and set(effects.rare).isdisjoint(effects.frequent)
    table = lmp.headline_claims_from_runs(setup, runs)
    assert [c.verdict for c in table.claims] == ["supported"] * 3 and table.checks == ()  # no models: 3 rows
    with pytest.raises(ValueError, match=r"runs of \['LMP'\]"):
        lmp.headline_effects(setup, {"CE": runs["CE"]})
    with pytest.raises(ValueError, match="share their seeds"):
        lmp.headline_effects(setup, {"CE": runs["CE"], "LMP": _fake_runs(setup, {"LMP": 0.05}, seeds=(3, 4, 5))["LMP"]})
    with pytest.raises(ValueError, match="stage 'headline'"):
        lmp.headline_effects(lmp.setup("grid", "ci"), runs)


def test_boundary_accuracy_counts_the_pixels_next_to_a_label_change():
    class Predict(torch.nn.Module):  # predicts class 1 everywhere: right inside, half right on the rim
        def forward(self, x):
            out = torch.zeros(x.shape[0], 2, *x.shape[2:])
            out[:, 1] = 1.0
            return out

    labels = torch.zeros(4, 4, dtype=torch.long)
    labels[1:3, 1:3] = 1
    data = [(torch.zeros(1, 4, 4), labels)] * 3
    mask = __import__("pixelweight.metrics", fromlist=["boundary_mask"]).boundary_mask(labels[None])[0]
    expected = float((labels[mask] == 1).float().mean())
    assert lmp.boundary_accuracy(Predict(), data, batch_size=2) == pytest.approx(expected)
    model = Predict().train()
    lmp.boundary_accuracy(model, data)
    assert model.training  # its mode is restored
    with pytest.raises(ValueError, match="no boundary pixels"):
        lmp.boundary_accuracy(Predict(), [(torch.zeros(1, 4, 4), torch.zeros(4, 4, dtype=torch.long))])
    with pytest.raises(ValueError, match="empty"):
        lmp.boundary_accuracy(Predict(), [])
    with pytest.raises(TypeError, match="nn.Module"):
        lmp.boundary_accuracy(lambda x: x, data)


def test_boundary_effect_needs_the_models():
    setup = lmp.setup("headline", "ci")
    assert lmp.boundary_effect(setup, _fake_runs(setup, {"CE": 0.0, "LMP": 0.05})) is None


def test_grid_claims_from_runs():
    setup = lmp.setup("grid", "ci")
    shifts = {arm.label: 0.0 for arm in setup.arms}
    shifts[lmp.grid_label(1.7, 0.3)] = 0.05
    table = lmp.grid_claims_from_runs(setup, _fake_runs(setup, shifts))
    assert table.claims[0].verdict == "supported"  # the public default over CE
    unpaired = _fake_runs(setup, shifts)
    unpaired["focal"] = _fake_runs(setup, {"focal": 0.0}, seeds=(0, 1, 5))["focal"]
    with pytest.raises(ValueError, match="same seeds"):
        lmp.grid_frames(setup, unpaired)
    del shifts["focal"]
    with pytest.raises(ValueError, match="missing \\['focal'\\]"):
        lmp.grid_frames(setup, _fake_runs(setup, shifts))


def test_the_converged_section_judges_the_committed_runs(monkeypatch):
    full = lmp.setup("headline", "full")
    runs = _fake_runs(full, {"CE": 0.0, "LMP": 0.05}, seeds=(0, 1, 2, 3, 4))
    for r in runs["CE"] + runs["LMP"]:
        r.record = types.SimpleNamespace(seed=r.seed, provenance={"git_commit": "abcdef1234567"})
    monkeypatch.setattr(type(full), "committed_runs", lambda self, arms=None: runs)
    result = full.converged(lmp.headline_claims_from_runs)
    assert result.available and result.table.section == "converged-claims"
    assert "10 of 10 runs reached the plateau" in result.table.scope and "abcdef1234" in result.table.scope
    assert result.text()["verdict LMP improves mIoU over CE"] == "supported" and result.text()["seeds"] == "5"
    assert result.table.budget == "`full` (converged budget): 3000 steps, 5 seeds; 10 of 10 runs at the plateau"
    assert not result.table.stale
    runs["LMP"][0].stale = ["src/pixelweight/losses/lmp.py"]
    stale = full.converged(lmp.headline_claims_from_runs)
    assert stale.table.budget.endswith("; STALE records") and "STALE" in stale.table.scope
    assert stale.text()["stale"] == "stale" and stale.table.stale
    # the budget counts the seeds the comparison paired, not the profile's
    runs["LMP"][0].stale = []
    three = {k: v[:3] for k, v in runs.items()}
    three["CE"][2].plateau = {"reached": False}
    monkeypatch.setattr(type(full), "committed_runs", lambda self, arms=None: three)
    table = full.converged(lmp.headline_claims_from_runs).table
    assert table.budget == "`full` (converged budget): 3000 steps, 3 seeds; 5 of 6 runs at the plateau"
    assert table.scope.startswith("`full` (converged budget): 3000 steps, 3 seeds, 64x64 scenes")
    # one paired seed has no interval: no converged table
    monkeypatch.setattr(type(full), "committed_runs", lambda self, arms=None: {k: v[:1] for k, v in runs.items()})
    one = full.converged(lmp.headline_claims_from_runs)
    assert not one.available and "fewer than two paired seeds" in one.missing[0]
    with pytest.raises(TypeError, match="Arm objects"):
        full.converged(lmp.headline_claims_from_runs, arms=["CE"])


def test_history_curve_pairs_the_seeds_at_each_evaluation():
    from pixelweight.chapters import history_curve

    def run(seed, values):
        return types.SimpleNamespace(seed=seed, history=[{"step": s, "val_miou": v} for s, v in values])

    runs = {"A": [run(0, [(10, 0.5), (20, 0.7)]), run(1, [(10, 0.6), (20, 0.8)]), run(2, [(10, 0.7)])],
            "B": [run(0, [(10, 0.4), (20, 0.5)]), run(1, [(10, 0.4), (20, 0.6)]), run(2, [(10, 0.5)])]}
    value = lambda entry: entry.get("val_miou")  # noqa: E731
    curve = history_curve(runs, value, "A", "B")
    assert list(curve["step"]) == [10, 20] and list(curve["n"]) == [3, 2]
    assert curve["mean"].tolist() == pytest.approx([(0.1 + 0.2 + 0.2) / 3, (0.2 + 0.2) / 2])
    alone = history_curve(runs, value, "A")  # no b: the mean over seeds
    assert alone["mean"].tolist() == pytest.approx([0.6, 0.75])
    assert history_curve(runs, value, "A", "C").empty
    swapped = {"A": runs["A"], "B": runs["B"][::-1]}
    with pytest.raises(ValueError, match="share their seeds"):
        history_curve(swapped, value, "A", "B")
    runs["A"][0].history[0]["val_miou"] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        history_curve(runs, value, "A", "B")
    with pytest.raises(TypeError, match="function"):
        history_curve(runs, "val_miou", "A")


def test_headline_rare_claim_needs_a_run_that_learns_the_rare_classes():
    below = {"CE": 0.0, "LMP": lmp.RARE_MIN / 2}
    rare = _headline(rare_iou=below).claims[1]
    assert rare.verdict == "not testable at this scale" and rare.effect == _iv(0.02)
    assert lmp.rare_classes_learned({"CE": 0.0, "LMP": lmp.RARE_MIN}) is True
    assert lmp.rare_classes_learned(below) is False
    with pytest.raises(ValueError, match="at least one run"):
        lmp.rare_classes_learned({})


def test_headline_limit_checks_show_a_failing_limit():
    limits = lmp.lmp_limit_frame(*_limits())
    one_off = limits.copy()
    one_off.loc[one_off["limit"] == one_off["limit"].iloc[0], "relative_difference"] = 0.5
    table = _headline(limits=one_off)
    assert [k.passed for k in table.checks] == [False, True, True, True, True]
    assert "✗ fails" in table.markdown()


def test_headline_claims_validation():
    with pytest.raises(ValueError, match=r"diffs lacks \['rare_iou'\]"):
        _headline(diffs={"miou": _iv(0.1), "mean_accuracy": _iv(0.1)})
    with pytest.raises(ValueError, match="CE run's mean rare-class IoU"):
        _headline(rare_iou={"LMP": 0.3})
    with pytest.raises(ValueError, match="limits must be a DataFrame"):
        _headline(limits=pd.DataFrame({"a": [1.0]}))


def _grid_frames(shift=None, val_shift=None, rare=0.1):
    """Per-seed frames of every grid arm: mIoU 0.5 + a per-seed wobble + the arm's shift."""
    setup = lmp.setup("grid", "ci")
    shift, val_shift = shift or {}, val_shift or {}
    wobble = [0.0, 0.01, -0.01]
    rows, val_rows = [], []
    for arm in setup.arms:
        for seed, w in enumerate(wobble):
            base = {"run": arm.label, "seed": seed, "rare_iou": rare + shift.get(("rare", arm.label), 0.0) + w / 10}
            rows.append({**base, "miou": 0.5 + w + shift.get(arm.label, 0.0) + 0.001 * seed * (arm.label != "CE")})
            val_rows.append({**base, "miou": 0.5 + w + val_shift.get(arm.label, 0.0)})
    return setup, pd.DataFrame(rows), pd.DataFrame(val_rows)


def test_grid_effects_choose_the_best_cell_on_validation():
    best_val, best_test = lmp.grid_label(1.3, 0.1), lmp.grid_label(1.1, 0.3)
    setup, test, val = _grid_frames(shift={best_test: 0.2, best_val: 0.05}, val_shift={best_val: 0.1})
    effects = lmp.grid_effects(test, val)
    assert effects.best == best_val and len(effects.candidates) == 8
    assert effects.best_vs_ce.mean == pytest.approx(0.051)
    assert set(effects.topk) == {0.1, 0.3} and effects.topk[0.3].mean == pytest.approx(0.0)
    assert effects.rare_iou == {lmp.grid_label(1.7, 0.3): pytest.approx(0.1), "CE": pytest.approx(0.1)}
    with pytest.raises(ValueError, match="no run labelled 'focal'"):
        lmp.grid_effects(test[test.run != "focal"], val)


def test_grid_claims():
    default = lmp.grid_label(1.7, 0.3)
    setup, test, val = _grid_frames(shift={default: 0.05, "focal": -0.05,
                                           lmp.grid_label(100.0, 0.3): 0.001})
    table = lmp.grid_claims(setup, lmp.grid_effects(test, val))
    assert table.section == "claims-at-this-scale"
    assert [(c.text, c.source, c.record) for c in table.claims] == [
        ("LMP (public default) improves mIoU over CE, grid scale", "abstract", True),
        ("the best (p, ratio) chosen on validation improves mIoU over CE, grid scale", "ours", True),
        ("LMP improves rare-class IoU over CE, grid scale", "abstract", True),
        ("LMP (p = 1.7) beats top-k mining at the same ratio", "ours", True),
        ("LMP with p -> infinity trains like CE", "derived", True),
        ("LMP beats focal loss", "ours", False),
    ]
    verdicts = {c.text: c.verdict for c in table.claims}
    assert verdicts["LMP (public default) improves mIoU over CE, grid scale"] == "supported"
    assert verdicts["LMP beats focal loss"] == "supported"
    assert verdicts["LMP with p -> infinity trains like CE"] == "supported"
    assert "LMP beats focal loss" not in table.verdicts()
    claims = {c.text: c for c in table.claims}
    assert claims["LMP (public default) improves mIoU over CE, grid scale"].ran == \
        "public default p=1.7, ρ=0.3 vs CE, mIoU (test)"
    assert claims["the best (p, ratio) chosen on validation improves mIoU over CE, grid scale"].ran.startswith(
        "best of the 8 cells with p ≤ 1.7 on validation: ")
    assert claims["LMP with p -> infinity trains like CE"].ran == "p = 100, ρ = 0.3 vs CE, mIoU within ±0.02"
    assert claims["LMP with p -> infinity trains like CE"].effect_text().startswith("+0.00")
    with pytest.raises(TypeError, match="effects must be GridEffects"):
        lmp.grid_claims(setup, {"default": 1})


@pytest.mark.parametrize("shift, expected", [
    (0.0, "supported"),
    (0.03, "contradicted"),    # better than CE past the margin: not "like CE"
    (-0.03, "contradicted"),   # worse than CE past the margin
    (0.017, "inconclusive"),  # the interval reaches past the margin on one side
])
def test_grid_infinity_claim_is_two_sided(shift, expected):
    setup, test, val = _grid_frames(shift={lmp.grid_label(100.0, 0.3): shift})
    effects = lmp.grid_effects(test, val)
    claim = lmp.grid_claims(setup, effects).claims[4]
    assert claim.verdict == expected and claim.effect == effects.infinity
    # the rule the notebook used before: the weaker of the two one-sided verdicts
    from pixelweight.stats import equivalence_verdict

    order = ["contradicted", "inconclusive", "supported"]
    rev = Interval(-effects.infinity.mean, -effects.infinity.high, -effects.infinity.low, 3, 0.95)
    assert claim.verdict == min(equivalence_verdict(effects.infinity, 0.02), equivalence_verdict(rev, 0.02),
                                key=order.index)


def test_grid_rare_claim_not_testable_without_rare_classes():
    setup, test, val = _grid_frames(rare=0.0)
    claim = lmp.grid_claims(setup, lmp.grid_effects(test, val)).claims[2]
    assert claim.verdict == "not testable at this scale"


def test_reversed_interval_equals_the_paired_difference_the_other_way():
    from pixelweight.stats import paired_difference_ci

    a, b = np.array([0.5, 0.52, 0.49]), np.array([0.48, 0.5, 0.5])
    rev = lmp._reversed(paired_difference_ci(a, b))
    assert rev == paired_difference_ci(b, a)


# ---------------------------------------------------------------------------------------
# tiny training runs through the chapter's arms
# ---------------------------------------------------------------------------------------
FAST = dict(steps=12, batch_size=8, lr=1e-2, schedule="constant", log_every=4, progress=False, device="cpu")


def _train(arm, seed=0, steps=12, evaluate=False):
    seed_everything(seed)
    model = UNet(in_channels=1, num_classes=2, width=4, depth=1)
    loss = arm.build_loss(2)
    return train(model, loss, threshold_task(), TrainConfig(seed=seed, **{**FAST, "steps": steps}),
                 metrics_factory=lambda: SegmentationMetrics(2),
                 val_set=threshold_task(32, seed=1) if evaluate else None)


def test_lmp_with_ratio_one_trains_exactly_like_cross_entropy():
    # why the grid's ratio = 1 column reuses the CE runs
    ce = _train(Arm("CE", "ce"), steps=8)
    for p in (1.0, 1.7, 100.0):
        lmp_run = _train(Arm("LMP", "lmp", {"p": p, "ratio": 1.0}), steps=8)
        for a, b in zip(ce.model.state_dict().values(), lmp_run.model.state_dict().values()):
            assert torch.equal(a, b)
        assert [h["loss"] for h in ce.history] == [h["loss"] for h in lmp_run.history]


@pytest.mark.slow
def test_lmp_learns_a_trivial_task():
    result = _train(Arm("LMP", "lmp", {"p": 1.7, "ratio": 0.3}), steps=40, evaluate=True)
    assert result.metrics["val_miou"] > 0.8
    assert result.history[-1]["loss"] < result.history[0]["loss"]



