"""The recall-loss chapter module: its stages (budgets, data, model, arms as registered losses),
its analyses (training-split class weights, the weight trajectory hook and its table, the
frequency exponent) and its claims (how each is judged)."""

import math

import numpy as np
import pytest
import torch

from helpers.toy import threshold_task
from pixelweight.chapters import Arm, Setup, Splits, get_chapter, recall
from pixelweight.chapters.recall import (
    frequency_exponent,
    log_loss_weights,
    train_class_weights,
    weight_history_frame,
)
from pixelweight.claims import ClaimsTable
from pixelweight.losses import CrossEntropyLoss, FocalLoss, RecallLoss, class_weights
from pixelweight.models import UNet
from pixelweight.profiles import get_profile
from pixelweight.stats import Interval
from pixelweight.train import TrainConfig, train


def up(low=0.02, high=0.08):
    """An interval wholly above 0 (or where the caller puts it)."""
    return Interval((low + high) / 2, low, high, 3, 0.95)


def down(low=-0.08, high=-0.02):
    return Interval((low + high) / 2, low, high, 3, 0.95)


def straddling_up():
    """Mean above 0, interval reaching below it."""
    return Interval(0.02, -0.01, 0.05, 3, 0.95)


@pytest.fixture(scope="module")
def splits():
    """Tiny splits of the experiments stage's ci data."""
    spec = recall.STAGES["experiments"].scale("ci").data
    return spec.splits(get_profile("ci", train_samples=12, val_samples=6, test_samples=6))


# ----------------------------------------------------------------------------------
# stages
# ----------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", ["experiments", "sweep"])
def test_ci_scale_is_what_the_chapter_ran(stage):
    scale = recall.STAGES[stage].scale("ci")
    assert scale.profile == get_profile("ci", steps=160, train_samples=1000, val_samples=100,
                                        test_samples=300, eval_every=0)
    assert (scale.profile.batch_size, scale.profile.lr, len(scale.profile.seeds)) == (16, 2e-3, 3)
    assert (scale.data.dataset, scale.data.size) == ("DigitScenes", 32)
    assert dict(scale.data.options) == {"imbalance": 1.0, "num_digits": (1, 3), "digit_size": (10, 20)}
    assert (scale.model.name, scale.model.width, scale.model.depth) == ("UNet", 16, 3)


@pytest.mark.parametrize("stage", ["experiments", "sweep"])
def test_full_scale_is_the_ci_experiment_trained_to_a_plateau(stage):
    full, ci = recall.STAGES[stage].scale("full"), recall.STAGES[stage].scale("ci")
    assert len(full.profile.seeds) >= 5 and full.profile.steps >= 10 * ci.profile.steps
    assert full.data == ci.data and full.model == ci.model  # the same experiment, trained longer
    assert full.train["plateau_metric"] == "miou" and full.profile.eval_every > 0
    # at least 3 validations in the last quarter, so that the plateau can be measured
    assert full.profile.steps * full.train["plateau_window"] // full.profile.eval_every >= 3


def test_experiments_logs_400_times_per_run_and_the_sweep_at_the_default():
    # ci: every step (the weight trajectory starts at step 1), full: 4000 // 400
    assert dict(recall.STAGES["experiments"].scale("ci").train) == {"log_every": 1}
    full = recall.STAGES["experiments"].scale("full")
    assert full.train["log_every"] == full.profile.steps // 400
    assert dict(recall.STAGES["sweep"].scale("ci").train) == {}


def test_run_trains_each_arm_with_its_record_config_and_overrides(monkeypatch):
    """What ``setup.run`` hands the harness, per arm (the training itself is stubbed)."""
    from pixelweight.chapters import _base

    calls = []
    monkeypatch.setattr(_base, "run_seeds", lambda name, *args, **kwargs: calls.append((name, kwargs)) or [name])
    s = recall.setup("experiments", "ci", device="cpu", results_dir="somewhere")
    s._splits = "splits"  # not built: the stub does not read them
    runs = s.run(on_log=log_loss_weights)
    assert runs == {a.label: [s.run_name(a)] for a in s.arms}
    name, kwargs = calls[5]
    assert name == "ch2-recall-ma"
    assert kwargs["train_overrides"] == {"log_every": 1} and kwargs["on_log"] is log_loss_weights
    assert (kwargs["device"], kwargs["results_dir"]) == ("cpu", "somewhere")
    assert kwargs["record_config"]["loss"] == {"label": "recall (moving average)", "name": "recall",
                                               "options": {"momentum": 0.5}}
    assert [c[1]["record_config"]["loss"]["name"] for c in calls] == [
        "ce", "inverse-ce", "median-ce", "focal", "recall", "recall"]


def test_experiments_arms_are_the_six_losses_with_their_run_names():
    s = recall.setup("experiments", "ci")
    got = [(a.label, a.loss, dict(a.options), s.run_name(a)) for a in s.arms]
    assert got == [
        ("CE", "ce", {}, "ch2-ce"),
        ("inverse-frequency CE", "inverse-ce", {}, "ch2-inverse"),
        ("median-frequency CE", "median-ce", {}, "ch2-median"),
        ("focal (γ = 1)", "focal", {"gamma": 1.0}, "ch2-focal"),
        ("recall (batch)", "recall", {}, "ch2-recall"),
        ("recall (moving average)", "recall", {"momentum": 0.5}, "ch2-recall-ma"),
    ]


def test_arms_build_the_losses_the_notebook_built(splits):
    """Each arm builds the loss 02_experiments built by hand before the chapter module."""
    s = recall.setup("experiments", "ci")
    s._splits = splits  # the tiny splits, not the 1000-image training set
    built = {a.label: s.build_loss(a) for a in s.arms}
    assert type(built["CE"]) is CrossEntropyLoss and built["CE"].weight is None
    torch.testing.assert_close(built["inverse-frequency CE"].weight, train_class_weights(splits, "inverse"))
    torch.testing.assert_close(built["median-frequency CE"].weight, train_class_weights(splits, "median"))
    assert isinstance(built["focal (γ = 1)"], FocalLoss) and built["focal (γ = 1)"].gamma == 1.0
    batch, ma = built["recall (batch)"], built["recall (moving average)"]
    assert isinstance(batch, RecallLoss) and (batch.num_classes, batch.momentum) == (11, None)
    assert isinstance(ma, RecallLoss) and (ma.num_classes, ma.momentum) == (11, 0.5)


def test_record_config_names_the_arms_loss_and_options():
    s = recall.setup("experiments", "ci", results_dir="unused")
    arm = s.arm("recall (moving average)")
    config = s.record_config(loss=arm.to_dict())
    assert config["chapter"] == "02_recall" and config["stage"] == "experiments"
    assert config["loss"] == {"label": "recall (moving average)", "name": "recall", "options": {"momentum": 0.5}}
    assert config["data_spec"] == {"dataset": "DigitScenes", "size": 32,
                                   "options": {"imbalance": 1.0, "num_digits": [1, 3], "digit_size": [10, 20]}}
    assert config["model"]["width"] == 16 and config["train_overrides"] == {"log_every": 1}


def test_sweep_arms_run_names_and_data():
    s = recall.setup("sweep", "ci")
    assert [(a.label, a.loss, dict(a.options)) for a in s.arms] == [("CE", "ce", {}), ("recall", "recall", {})]
    assert recall.EXPONENTS == (0.0, 1.0, 2.0)
    # the record names 03_imbalance_sweep wrote before the chapter module
    names = [recall.sweep_run_name(e, a) for e in recall.EXPONENTS for a in s.arms]
    assert names == ["ch2-sweep-s0-ce", "ch2-sweep-s0-recall", "ch2-sweep-s1-ce", "ch2-sweep-s1-recall",
                     "ch2-sweep-s2-ce", "ch2-sweep-s2-recall"]
    with pytest.raises(ValueError, match="one of"):
        recall.sweep_run_name(0.5, s.arms[1])  # not a variant of the stage
    assert s.run_names(variants=True) == names
    assert [s.variant(recall.sweep_variant(e)).run_name(a) for e in recall.EXPONENTS for a in s.arms] == names
    at_2 = s.variant("s2")
    assert dict(at_2.data.options) == {"imbalance": 2.0, "num_digits": (1, 3), "digit_size": (10, 20)}
    assert at_2.record_config()["data_spec"]["options"]["imbalance"] == 2.0
    assert s.data.options["imbalance"] == 1.0  # the stage is unchanged


@pytest.mark.parametrize("s, arm, error", [
    (-1.0, Arm("CE", "ce"), ValueError), (float("nan"), Arm("CE", "ce"), ValueError),
    (True, Arm("CE", "ce"), ValueError), ("1", Arm("CE", "ce"), ValueError), (1.0, "ce", TypeError),
])
def test_sweep_run_name_errors(s, arm, error):
    with pytest.raises(error):
        recall.sweep_run_name(s, arm)


def test_chapter_is_registered_and_guards_its_name():
    assert get_chapter("02_recall") is recall
    assert recall.CHAPTER.folder == "02_recall" and sorted(recall.STAGES) == ["experiments", "sweep"]
    assert isinstance(recall.setup("sweep", "full", chapter="02_recall"), Setup)
    with pytest.raises(ValueError, match="belongs to chapter '02_recall', but the build says '04_lmp'"):
        recall.setup("experiments", "ci", chapter="04_lmp")
    with pytest.raises(ValueError, match="has no stage 'headline'"):
        recall.setup("headline", "ci")
    with pytest.raises(ValueError, match="has no profile 'gpu'"):
        recall.setup("experiments", "gpu")


# ----------------------------------------------------------------------------------
# analyses (moved from pixelweight.experiments)
# ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["inverse", "median"])
def test_train_class_weights_use_the_training_split_only(splits, method):
    # pitfall of the paper's public baseline: weights estimated on validation data
    w = train_class_weights(splits, method)
    train_counts = torch.as_tensor(splits.train.pixel_counts).sum(0)
    torch.testing.assert_close(w, class_weights(counts=train_counts, method=method))
    val_counts = torch.as_tensor(splits.val.pixel_counts).sum(0)
    assert not torch.allclose(w, class_weights(counts=val_counts, method=method))
    assert w.shape == (11,)


def test_train_class_weights_errors(splits):
    with pytest.raises(TypeError, match="splits must be a Splits, got dict"):
        train_class_weights({"train": splits.train})
    bare = Splits(train=threshold_task(n=4), val=None, test=None, config={})
    with pytest.raises(ValueError, match="has no pixel_counts"):
        train_class_weights(bare)
    with pytest.raises(ValueError, match="method must be one of"):
        train_class_weights(splits, "sqrt")


def test_log_loss_weights_hook_records_the_trajectory():
    loss = RecallLoss(2, momentum=0.5)
    assert log_loss_weights(10, None, loss) == {"class_weights": [1.0, 1.0]}
    assert log_loss_weights(10, None, CrossEntropyLoss()) == {}
    config = TrainConfig(steps=10, batch_size=8, lr=1e-2, log_every=5, progress=False, device="cpu")
    result = train(UNet(1, 2, width=4, depth=1), loss, threshold_task(n=16, size=8), config,
                   on_log=log_loss_weights)
    logged = [h["class_weights"] for h in result.history]
    assert len(logged) == 2 and all(len(w) == 2 for w in logged)
    assert logged[-1] == pytest.approx(loss.weights.tolist())
    frame = weight_history_frame({"recall": [result]}, ["dark", "bright"])
    assert list(frame.columns) == ["run", "seed_index", "step", "class", "weight"]
    assert len(frame) == 4 and sorted(frame["step"].unique()) == [5, 10]
    # a run without logged weights contributes nothing; a wrong length is an error
    plain = train(UNet(1, 2, width=4, depth=1), CrossEntropyLoss(), threshold_task(n=16, size=8),
                  TrainConfig(steps=5, batch_size=8, log_every=5, progress=False, device="cpu"))
    assert len(weight_history_frame({"recall": [result], "ce": [plain]}, ["dark", "bright"])) == 4
    with pytest.raises(ValueError, match="logged 2 weights for 3 classes"):
        weight_history_frame({"recall": [result]}, ["a", "b", "c"])


def test_frequency_exponent_known_values():
    f = np.array([0.5, 0.3, 0.15, 0.05])
    assert frequency_exponent(np.ones(4), f) == pytest.approx(0.0)  # plain CE
    assert frequency_exponent(1 / f, f) == pytest.approx(1.0)  # inverse frequency
    assert frequency_exponent(3.0 * f ** -0.5, f) == pytest.approx(0.5)  # scale does not matter
    # zero / non-finite entries are left out (a fully recalled class has w = 0)
    assert frequency_exponent([0.0, 1 / 0.3, float("nan"), 1 / 0.05], f) == pytest.approx(1.0)
    assert math.isnan(frequency_exponent([1.0, 0.0, 0.0, 0.0], f))
    assert math.isnan(frequency_exponent([1.0, 2.0], [0.5, 0.5]))  # equal frequencies: no slope
    with pytest.raises(ValueError, match="equal length"):
        frequency_exponent([1.0, 2.0], [0.5, 0.3, 0.2])


# ----------------------------------------------------------------------------------
# claims
# ----------------------------------------------------------------------------------
def effects(**changes):
    base = dict(acc_gain=up(), acc_gain_ma=up(), miou_change=up(), inverse_acc_gain=up(),
                inverse_prec_change=down(), prec_vs_inverse=up(), miou_vs_inverse=up(),
                beta_change=up(0.5, 0.7), beta_first=Interval(0.0, -0.02, 0.02, 3, 0.95),
                beta_last=Interval(0.8, 0.7, 0.9, 3, 0.95), first_step=1, relative_gain=32.4)
    base.update(changes)
    return base


def by_label(table):
    return {c.label: c for c in table.claims}


def test_experiments_claims_texts_tags_and_verdicts():
    s = recall.setup("experiments", "ci")
    table = recall.experiments_claims(s, **effects())
    assert isinstance(table, ClaimsTable) and table.chapter == "02_recall"
    assert table.budget == "`ci` (early training): 160 steps, 3 seeds"
    assert table.scope == "`ci` (early training): 160 steps, 3 seeds, 32x32 scenes, width-16 U-Net"
    claims = by_label(table)
    assert list(claims) == ["(a)", "(b)", "(c)", "(c′)", "(d)"]
    assert [(c.text, c.source) for c in table.claims] == [
        ("recall loss raises mean accuracy over CE", "abstract"),
        ("recall loss keeps a competitive mIoU (within 0.02 of CE)", "abstract"),
        ("inverse-frequency CE gains recall but loses precision", "abstract"),
        ("recall loss keeps more precision and mIoU than inverse-frequency CE", "ours"),
        ("recall-loss weights move from CE toward inverse frequency", "abstract"),
    ]
    # an interval wholly on the claimed side: supported, for every claim
    assert {c.verdict for c in table.claims} == {"supported"}
    assert claims["(a)"].effect_text() == "+0.050 [0.020, 0.080] (+32% relative; moving average Δ = 0.050 [0.020, 0.080])"
    assert claims["(d)"].ran == ("frequency exponent β of the recall (batch) weights (CE: 0, inverse frequency: 1): "
                                 "within ±0.25 of 0 at step 1; over the last tenth of training higher by more than "
                                 "0.1 and not past 1 + 0.1")
    assert claims["(d)"].effect_text() == (
        "β at the start (not below −0.25) = 0.00 [-0.02, 0.02] (supported); −β at the start (β not above 0.25) = "
        "0.00 [-0.02, 0.02] (supported); Δβ, end − start (above 0.1) = +0.60 [0.50, 0.70] (supported); 1 − β at "
        "the end (β not above 1 + 0.1) = +0.20 [0.10, 0.30] (supported) (β 0.00 [-0.02, 0.02] at step 1, "
        "0.80 [0.70, 0.90] at the end)")
    assert claims["(c)"].effect_text() == ("Δ mean acc. = +0.050 [0.020, 0.080] (supported); "
                                           "Δ mean prec. = -0.050 [-0.080, -0.020] (supported)")
    assert all(c.record for c in table.claims)


def test_experiments_claims_judging_rules():
    s = recall.setup("experiments", "ci")
    # (a): a straddling interval is inconclusive; a fall is contradicted
    assert by_label(recall.experiments_claims(s, **effects(acc_gain=straddling_up())))["(a)"].verdict == "inconclusive"
    assert by_label(recall.experiments_claims(s, **effects(acc_gain=down())))["(a)"].verdict == "contradicted"
    # (b) is non-inferiority within MIOU_TOLERANCE: a small loss of mIoU is still competitive ...
    small_loss = Interval(-0.005, -0.015, -0.001, 3, 0.95)
    assert by_label(recall.experiments_claims(s, **effects(miou_change=small_loss)))["(b)"].verdict == "supported"
    # ... one past the tolerance is not
    big_loss = Interval(-0.05, -0.06, -0.04, 3, 0.95)
    assert by_label(recall.experiments_claims(s, **effects(miou_change=big_loss)))["(b)"].verdict == "contradicted"
    # (c) is composite: precision must fall; precision rising makes the whole claim fail
    claims = by_label(recall.experiments_claims(s, **effects(inverse_prec_change=up())))
    assert claims["(c)"].verdict == "contradicted"
    assert "Δ mean prec. = +0.050 [0.020, 0.080] (contradicted)" in claims["(c)"].effect_text()
    # one part inconclusive: inconclusive (stats.combine_verdicts)
    assert by_label(recall.experiments_claims(s, **effects(inverse_acc_gain=straddling_up())))["(c)"].verdict \
        == "inconclusive"
    # (c′): both parts must be up
    assert by_label(recall.experiments_claims(s, **effects(miou_vs_inverse=down())))["(c′)"].verdict == "contradicted"
    assert by_label(recall.experiments_claims(s, **effects(prec_vs_inverse=straddling_up())))["(c′)"].verdict \
        == "inconclusive"
    # (d): β must rise, by more than a trivial amount ...
    assert by_label(recall.experiments_claims(s, **effects(beta_change=down())))["(d)"].verdict == "contradicted"
    trivial = Interval(0.03, 0.02, 0.04, 3, 0.95)
    assert by_label(recall.experiments_claims(s, **effects(beta_change=trivial)))["(d)"].verdict == "contradicted"
    # ... from near CE: a start far from β = 0 (either side) contradicts "from CE", one that may be is inconclusive
    far = Interval(0.5, 0.4, 0.6, 3, 0.95)
    assert by_label(recall.experiments_claims(s, **effects(beta_first=far)))["(d)"].verdict == "contradicted"
    below = Interval(-0.5, -0.6, -0.4, 3, 0.95)
    assert by_label(recall.experiments_claims(s, **effects(beta_first=below)))["(d)"].verdict == "contradicted"
    unsure = Interval(0.2, 0.1, 0.3, 3, 0.95)
    assert by_label(recall.experiments_claims(s, **effects(beta_first=unsure)))["(d)"].verdict == "inconclusive"
    # ... and "toward" inverse frequency, not past it
    past = Interval(1.4, 1.3, 1.5, 3, 0.95)
    assert by_label(recall.experiments_claims(s, **effects(beta_last=past)))["(d)"].verdict == "contradicted"
    near = Interval(1.04, 0.99, 1.09, 3, 0.95)  # within the overshoot tolerance
    assert by_label(recall.experiments_claims(s, **effects(beta_last=near)))["(d)"].verdict == "supported"


def test_experiments_claims_at_full_say_longer_training():
    table = recall.experiments_claims(recall.setup("experiments", "full"), **effects())
    assert table.scope == "`full` (converged budget): 3000 steps, 5 seeds, 32x32 scenes, width-16 U-Net"


@pytest.mark.parametrize("change, error, match", [
    (dict(acc_gain=0.05), TypeError, "acc_gain must be an Interval"),
    (dict(beta_last=[0.5, 0.6]), TypeError, "beta_last must be an Interval"),
    (dict(first_step=0), ValueError, "first_step must be a positive int"),
    (dict(first_step=1.0), ValueError, "first_step must be a positive int"),
    (dict(relative_gain="32%"), TypeError, "relative_gain must be a number"),
])
def test_experiments_claims_input_errors(change, error, match):
    with pytest.raises(error, match=match):
        recall.experiments_claims(recall.setup("experiments", "ci"), **effects(**change))


def test_claims_need_their_stages_setup():
    with pytest.raises(ValueError, match="judged on stage 'experiments'.*got stage 'sweep'"):
        recall.experiments_claims(recall.setup("sweep", "ci"), **effects())
    with pytest.raises(ValueError, match="judged on stage 'sweep'.*got stage 'experiments'"):
        recall.sweep_claims(recall.setup("experiments", "ci"), gains={0.0: up(), 2.0: up()}, growth=up())
    with pytest.raises(TypeError, match="setup must be a Setup, got str"):
        recall.sweep_claims("sweep", gains={0.0: up(), 2.0: up()}, growth=up())


def test_sweep_claims_rows_and_verdicts():
    s = recall.setup("sweep", "ci")
    gains = {0.0: down(), 1.0: straddling_up(), 2.0: up()}
    table = recall.sweep_claims(s, gains=gains, growth=up())
    texts = [c.text for c in table.claims]
    assert texts == ["recall loss raises mean accuracy over CE, at s = 0",
                     "recall loss raises mean accuracy over CE, at s = 1",
                     "recall loss raises mean accuracy over CE, at s = 2",
                     "the recall-loss gain in mean accuracy grows with the class imbalance"]
    assert [c.verdict for c in table.claims] == ["contradicted", "inconclusive", "supported", "supported"]
    assert [c.label for c in table.claims] == ["(a)", "(a)", "(a)", ""]
    assert [c.source for c in table.claims] == ["abstract"] * 3 + ["derived"]
    assert table.claims[-1].ran == "gain at s = 2 minus gain at s = 0, paired by seed"
    assert table.claims[1].ran == "recall (batch) vs CE, mean accuracy (test), Zipf exponent s = 1"
    # the per-s rows restate claim (a): shown, not recorded
    assert table.verdicts() == {"the recall-loss gain in mean accuracy grows with the class imbalance": "supported"}
    assert recall.sweep_claims(s, gains=gains, growth=down()).claims[-1].verdict == "contradicted"


@pytest.mark.parametrize("gains, growth, error, match", [
    ({0.0: up()}, up(), ValueError, "at least two"),
    ([up(), up()], up(), ValueError, "at least two"),
    ({2.0: up(), 0.0: up()}, up(), ValueError, "must increase"),
    ({0.0: up(), -1.0: up()}, up(), ValueError, "Zipf exponents"),
    ({0.0: up(), 2.0: 0.1}, up(), TypeError, r"gains\[2\] must be an Interval"),
    ({0.0: up(), 2.0: up()}, 0.1, TypeError, "growth must be an Interval"),
])
def test_sweep_claims_input_errors(gains, growth, error, match):
    with pytest.raises(error, match=match):
        recall.sweep_claims(recall.setup("sweep", "ci"), gains=gains, growth=growth)


def test_the_headline_claims_are_primary():
    table = recall.experiments_claims(recall.setup("experiments", "ci"), **effects())
    assert [c.label for c in table.claims if c.primary] == ["(a)", "(b)"]


@pytest.fixture(scope="module")
def full_freq():
    return recall.setup("experiments", "full").splits.train.class_pixel_frequencies()


def _fake_run(seed, metrics, steps=(200, 400), weights=None, beta_end=0.8):
    """A CommittedRun-like run: final test ``metrics``, a val history (mean accuracy growing
    to its final value) and, with ``weights`` (the class frequencies), recall-loss weights
    w_c ∝ f_c^-β logged every 10 steps, β rising linearly from 0 to ``beta_end`` (plus a
    per-seed wobble)."""
    import types

    record = types.SimpleNamespace(provenance={"git_commit": "abc1234567"}, name="x")
    history = []
    for step in range(10, steps[-1] + 1, 10):
        entry = {"step": step}
        if step in steps:
            entry["val_mean_accuracy"] = metrics["test_mean_accuracy"] * step / steps[-1]
        if weights is not None:
            beta = beta_end * (step - 10) / (steps[-1] - 10) + 0.01 * seed
            entry["class_weights"] = list(np.asarray(weights, dtype=float) ** -beta)
        history.append(entry)
    return types.SimpleNamespace(seed=seed, metrics=dict(metrics), history=history, plateau={"reached": True},
                                 stale=[], record=record, wall_time_s=100.0, device="cpu (x86_64, 1 threads)")


def _fake_runs(gains, steps=(200, 400), freq=None, beta_end=0.8, inverse=(0.08, -0.05)):
    """Runs of the six arms of the experiments stage: recall (batch) gains ``gains[seed]`` in
    mean accuracy over CE and loses a tenth of it in mIoU; inverse-frequency CE gains
    ``inverse[0]`` in mean accuracy and ``inverse[1]`` in mean precision (plus a per-seed
    wobble) and has CE's mIoU minus 0.03; the others equal CE."""
    def metrics(acc, miou, prec):
        return {"test_mean_accuracy": acc, "test_miou": miou, "test_mean_precision": prec}

    ce = metrics(0.5, 0.4, 0.6)
    seeds = range(len(gains))
    return {
        "CE": [_fake_run(s, ce, steps) for s in seeds],
        "inverse-frequency CE": [_fake_run(s, metrics(0.5 + inverse[0] + 0.001 * s, 0.37, 0.6 + inverse[1] + 0.001 * s),
                                           steps) for s in seeds],
        "median-frequency CE": [_fake_run(s, ce, steps) for s in seeds],
        "focal (γ = 1)": [_fake_run(s, ce, steps) for s in seeds],
        "recall (batch)": [_fake_run(s, metrics(0.5 + g, 0.4 - g / 10, 0.58), steps, freq, beta_end)
                           for s, g in zip(seeds, gains)],
        "recall (moving average)": [_fake_run(s, metrics(0.5 + g, 0.4, 0.58), steps, freq, beta_end)
                                    for s, g in zip(seeds, gains)],
    }


def test_experiments_effects_are_measured_from_the_runs(full_freq):
    full = recall.setup("experiments", "full")
    runs = _fake_runs([0.10, 0.12, 0.11, 0.09, 0.13], freq=full_freq)
    eff = recall.experiments_effects(full, runs)
    assert eff["acc_gain"].mean == pytest.approx(0.11) and eff["acc_gain"].n == 5
    assert eff["miou_change"].mean == pytest.approx(-0.011)
    assert eff["inverse_acc_gain"].mean == pytest.approx(0.082) and eff["inverse_prec_change"].mean == pytest.approx(-0.048)
    assert eff["prec_vs_inverse"].mean == pytest.approx(0.58 - 0.552) and eff["miou_vs_inverse"].mean == pytest.approx(0.389 - 0.37)
    assert eff["relative_gain"] == pytest.approx(22.0) and eff["first_step"] == 10
    table = recall.experiments_claims_from_runs(full, runs)
    assert {c.label: c.verdict for c in table.claims} == {
        "(a)": "supported", "(b)": "supported", "(c)": "supported", "(c′)": "supported", "(d)": "supported"}
    # inverse-frequency CE that keeps its precision: (c) is contradicted
    kept = recall.experiments_claims_from_runs(full, _fake_runs([0.1] * 3, freq=full_freq, inverse=(0.08, 0.02)))
    assert by_label(kept)["(c)"].verdict == "contradicted"
    with pytest.raises(KeyError, match="every arm; missing"):
        recall.experiments_effects(full, {k: v for k, v in runs.items() if k != "focal (γ = 1)"})
    with pytest.raises(ValueError, match="judged on stage 'experiments'"):
        recall.experiments_effects(recall.setup("sweep", "full"), runs)


def test_converged_claims_replace_the_early_ones_and_say_their_status(full_freq):
    full = recall.setup("experiments", "full")
    runs = _fake_runs([0.10, 0.12, 0.11, 0.09, 0.13], freq=full_freq)
    table = recall.converged_claims(full, runs)
    early = by_label(recall.experiments_claims(recall.setup("experiments", "ci"), **effects()))
    # same texts: they replace the early verdicts on the landing page and the scorecard
    assert [c.text for c in table.claims] == [c.text for c in early.values()]
    assert [c.primary for c in table.claims] == [True, True, False, False, False]
    assert table.section == "converged-claims"
    assert [c.verdict for c in table.claims] == ["supported"] * 5
    assert "at step 10" in table.claims[-1].ran
    assert "30 of 30 runs reached the plateau" in table.scope and "records current" in table.scope
    assert "converged budget" in table.budget
    with pytest.raises(ValueError, match="full setup"):
        recall.converged_claims(recall.setup("experiments", "ci"), runs)


def test_learning_curve_pairs_the_seeds_at_each_evaluation():
    curve = recall.learning_curve(_fake_runs([0.1, 0.2, 0.3]))
    assert list(curve["step"]) == [200, 400] and list(curve["n"]) == [3, 3]
    assert curve["mean"].iloc[-1] == pytest.approx(0.2) and curve["mean"].iloc[0] == pytest.approx(0.1)
    assert recall.learning_curve({}).empty


def test_beta_trajectory_reads_the_logged_weights(full_freq):
    full = recall.setup("experiments", "full")
    beta = recall.beta_trajectory(full, _fake_runs([0.1, 0.1, 0.1], freq=full_freq, beta_end=0.9))
    assert beta.first_step == 10 and beta.first.mean == pytest.approx(0.01, abs=1e-9)
    assert 0.8 < beta.last.mean < 0.92 and beta.change.n == 3
    assert set(beta.frame.columns) == {"run", "seed_index", "step", "beta"}
    # weights that overshoot inverse frequency contradict (d)
    over = recall.converged_claims(full, _fake_runs([0.1, 0.1, 0.1], freq=full_freq, beta_end=1.6))
    assert by_label(over)["(d)"].verdict == "contradicted"
    with pytest.raises(ValueError, match="logged no class weights"):
        recall.beta_trajectory(full, _fake_runs([0.1, 0.1]))
    with pytest.raises(ValueError, match="no runs of 'recall"):
        recall.beta_trajectory(full, {"CE": []})


def test_show_converged_without_records_says_so(monkeypatch, tmp_path):
    shown = []
    monkeypatch.setattr("pixelweight.book.markdown", shown.append)
    monkeypatch.setenv("PIXELWEIGHT_RESULTS", str(tmp_path))
    out = recall.show_converged(recall.setup("experiments", "full"))
    assert out["verdicts"]["(a)"] == "—" and out["beta"] is None and out["curve"].empty
    assert "make results CHAPTER=02_recall" in shown[0] and "recall (moving average)" in shown[0]


def _fake_sweep(gains_by_s, seeds=(0, 1, 2)):
    """Runs of the sweep stage keyed by (variant, arm label): recall gains
    ``gains_by_s[s] + 0.01 * seed`` in mean accuracy over CE at each exponent."""
    ce = {"test_mean_accuracy": 0.5, "test_miou": 0.4, "test_mean_precision": 0.6}
    runs = {}
    for s, gain in gains_by_s.items():
        v = recall.sweep_variant(s)
        runs[v, "CE"] = [_fake_run(seed, ce) for seed in seeds]
        runs[v, "recall"] = [_fake_run(seed, {**ce, "test_mean_accuracy": 0.5 + gain + 0.01 * seed}) for seed in seeds]
    return runs


def test_sweep_effects_and_claims_from_runs():
    s = recall.setup("sweep", "full")
    eff = recall.sweep_effects(s, _fake_sweep({0.0: 0.01, 1.0: 0.03, 2.0: 0.06}))
    assert list(eff["gains"]) == list(recall.EXPONENTS)
    assert eff["gains"][0.0].mean == pytest.approx(0.02) and eff["gains"][2.0].mean == pytest.approx(0.07)
    assert eff["growth"].mean == pytest.approx(0.05) and eff["growth"].n == 3
    table = recall.sweep_claims_from_runs(s, _fake_sweep({0.0: 0.01, 1.0: 0.03, 2.0: 0.06}))
    assert table.verdicts() == {"the recall-loss gain in mean accuracy grows with the class imbalance": "supported"}
    shrinking = recall.sweep_claims_from_runs(s, _fake_sweep({0.0: 0.06, 1.0: 0.03, 2.0: 0.01}))
    assert shrinking.claims[-1].verdict == "contradicted"
    runs = _fake_sweep({0.0: 0.01, 1.0: 0.03, 2.0: 0.06})
    with pytest.raises(KeyError, match=r"missing \[\('s2', 'CE'\)\]"):
        recall.sweep_effects(s, {k: v for k, v in runs.items() if k != ("s2", "CE")})
    runs["s1", "CE"] = runs["s1", "CE"][::-1]
    with pytest.raises(ValueError, match="share their seeds"):
        recall.sweep_effects(s, runs)
    with pytest.raises(ValueError, match="judged on stage 'sweep'"):
        recall.sweep_effects(recall.setup("experiments", "full"), runs)


def test_show_sweep_converged_without_records_says_which_are_missing(monkeypatch, tmp_path):
    shown = []
    monkeypatch.setattr("pixelweight.book.markdown", shown.append)
    monkeypatch.setenv("PIXELWEIGHT_RESULTS", str(tmp_path))
    out = recall.show_sweep_converged(recall.setup("sweep", "full"))
    assert not out.available and "CE (s0)" in out.missing and "recall (s2)" in out.missing
    assert "make results CHAPTER=02_recall" in shown[0]


def test_undefined_metrics_make_the_claims_not_testable(full_freq):
    """A metric a record stores as null (undefined at this scale) is never turned into a number."""
    full = recall.setup("experiments", "full")
    runs = _fake_runs([0.10, 0.12, 0.11], freq=full_freq)
    runs["CE"][1].metrics["test_mean_accuracy"] = None
    table = by_label(recall.experiments_claims_from_runs(full, runs))
    assert table["(a)"].verdict == "not testable at this scale" and "relative change undefined" in table["(a)"].detail
    sweep = _fake_sweep({0.0: 0.01, 1.0: 0.03, 2.0: 0.06})
    sweep["s2", "recall"][0].metrics["test_mean_accuracy"] = float("nan")
    eff = recall.sweep_effects(recall.setup("sweep", "full"), sweep)
    assert math.isnan(eff["growth"].mean) and math.isnan(eff["gains"][2.0].mean)
    assert recall.sweep_claims(recall.setup("sweep", "full"), **eff).claims[-1].verdict == "not testable at this scale"


def test_sweep_effects_pair_live_runs_by_their_records_seeds():
    import types

    runs = _fake_sweep({0.0: 0.01, 1.0: 0.03, 2.0: 0.06})
    live = {k: [types.SimpleNamespace(metrics=r.metrics, record=types.SimpleNamespace(seed=r.seed)) for r in rs]
            for k, rs in runs.items()}
    s = recall.setup("sweep", "full")
    assert recall.sweep_effects(s, live)["growth"].mean == pytest.approx(0.05)
    live["s1", "CE"] = live["s1", "CE"][::-1]
    with pytest.raises(ValueError, match="share their seeds"):
        recall.sweep_effects(s, live)
    anonymous = {k: [types.SimpleNamespace(metrics=r.metrics) for r in rs] for k, rs in runs.items()}
    with pytest.raises(ValueError, match="share their seeds"):
        recall.sweep_effects(s, anonymous)
