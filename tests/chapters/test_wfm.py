"""The Weighted-F-measure chapter module: its stages (budgets, data, models, arms as registered
losses, the cached ground-truth terms served with the batch), its analyses (false-positive
profile, the metric's term maps, the tracking hook, the ranking of fixed predictions under
sloppy ground truth) and its claims (how each is judged, each verdict reachable)."""

import math
import types

import numpy as np
import pandas as pd
import pytest
import torch

import pixelweight.losses.wfm as wfm_loss_module
from pixelweight.chapters import Setup, get_chapter, wfm
from pixelweight.claims import ClaimsTable
from pixelweight.data import SalientDigits, WithWFMTerms
from pixelweight.losses import BCEWeightedFMeasureLoss, CrossEntropyLoss, WeightedFMeasureLoss
from pixelweight.metrics import ForegroundMetrics, weighted_fmeasure, wfm_gt_terms
from pixelweight.profiles import get_profile
from pixelweight.train import AuxiliaryTargetsTask, TrainConfig, train

LABELS = [a.label for a in wfm.ARMS]


# ----------------------------------------------------------------------------------
# stages and scales
# ----------------------------------------------------------------------------------
def test_chapter_is_registered_with_its_stages():
    assert get_chapter("01_wfm") is wfm
    assert wfm.CHAPTER.folder == "01_wfm" and set(wfm.STAGES) == {"experiments", "ranking"}
    with pytest.raises(ValueError, match="belongs to chapter '01_wfm'"):
        wfm.setup("experiments", "ci", chapter="02_recall")


def test_ci_scale_is_what_the_chapter_ran():
    scale = wfm.STAGES["experiments"].scale("ci")
    assert scale.profile == get_profile("ci", steps=120, train_samples=600, val_samples=100, test_samples=200,
                                        eval_every=0)
    assert len(scale.profile.seeds) >= 3  # paired intervals
    assert (scale.data.dataset, scale.data.size) == ("SalientDigits", 32)
    assert dict(scale.data.options) == {"salient_size": (16, 24), "distractor_size": (8, 12)}
    assert scale.model == wfm.BOOK_MODEL == wfm.ModelSpec(width=16, depth=3)


def test_full_scale_is_the_ci_experiment_trained_to_a_plateau():
    full, ci = wfm.STAGES["experiments"].scale("full"), wfm.STAGES["experiments"].scale("ci")
    assert len(full.profile.seeds) >= 5 and full.profile.steps >= 10 * ci.profile.steps
    assert full.data == ci.data and full.model == ci.model
    assert full.train["plateau_metric"] == "wfm" and full.profile.eval_every > 0
    assert full.profile.steps * full.train["plateau_window"] // full.profile.eval_every >= 3


def test_arms_are_registered_losses_with_distinct_run_names():
    stage = wfm.STAGES["experiments"]
    assert LABELS == ["BCE", "soft F (FLoss)", "structure (published)", "structure (intended)", "hybrid (BASNet)",
                      "Fʷ", "BCE + Fʷ", "BCE, small U-Net", "Fʷ, small U-Net"]
    assert [a.loss for a in stage.arms] == ["ce", "floss", "structure", "structure", "hybrid", "wfm", "bce-wfm",
                                           "ce", "wfm"]
    assert len({a.run for a in stage.arms}) == len(stage.arms) and stage.prefix == "ch1"
    small = [a for a in stage.arms if a.model is not None]
    assert [a.label for a in small] == ["BCE, small U-Net", "Fʷ, small U-Net"]
    assert all(a.model == wfm.SMALL_MODEL for a in small)
    assert wfm.count_parameters(wfm.SMALL_MODEL) < wfm.count_parameters(wfm.BOOK_MODEL) / 3
    assert set(wfm.PEERS) <= set(LABELS)


def test_ranking_stage_trains_nothing_and_declares_both_scales():
    stage = wfm.STAGES["ranking"]
    assert stage.arms == () and set(stage.scales) == {"ci", "full"}
    assert stage.scale("full").profile.test_samples > stage.scale("ci").profile.test_samples


def test_stage_serves_the_terms_with_the_batch_and_evaluates_foreground_metrics():
    stage = wfm.STAGES["experiments"]
    assert isinstance(stage.task, AuxiliaryTargetsTask) and stage.dataset_wrapper is WithWFMTerms
    s = wfm.setup("experiments", "ci")
    assert isinstance(s.metrics(), ForegroundMetrics) and s.num_classes == 1
    built = {a.label: type(s.build_loss(a)) for a in s.arms}
    assert built["Fʷ"] is WeightedFMeasureLoss and built["BCE + Fʷ"] is BCEWeightedFMeasureLoss
    assert built["BCE"] is CrossEntropyLoss
    assert s.model_of(s.arm("Fʷ, small U-Net")) == wfm.SMALL_MODEL and s.model_of(s.arm("Fʷ")) == wfm.BOOK_MODEL
    full = wfm.setup("experiments", "full")
    assert full.full_config(full.arm("Fʷ, small U-Net"))["model"] == wfm.SMALL_MODEL.to_dict()


# ----------------------------------------------------------------------------------
# the ground-truth terms: once per target, never per step
# ----------------------------------------------------------------------------------
def _tiny_salient(n=12):
    return SalientDigits("train", n, size=32, salient_size=(16, 24), distractor_size=(8, 12), seed=5, cache_dir=False)


def test_terms_are_computed_once_per_target_not_per_step(monkeypatch):
    calls = {"build": 0, "loss": 0}
    import pixelweight.metrics as metrics

    real = metrics.wfm_gt_terms

    def counting(gt, dtype=torch.float64):
        calls["build"] += gt.shape[0]
        return real(gt, dtype=dtype)

    def in_loss(gt, dtype=torch.float64):  # the loss computes them itself only without terms=
        calls["loss"] += 1
        return real(gt, dtype=dtype)

    monkeypatch.setattr(metrics, "wfm_gt_terms", counting)
    monkeypatch.setattr(wfm_loss_module, "_gt_terms", in_loss)
    data = WithWFMTerms(_tiny_salient(12))
    assert calls["build"] == 12 and data.computed == 12
    torch.manual_seed(0)
    model = wfm.BOOK_MODEL.build(1)
    steps = 7
    train(model, WeightedFMeasureLoss(), data, TrainConfig(steps=steps, batch_size=4, progress=False, device="cpu"),
          task=AuxiliaryTargetsTask())
    assert calls == {"build": 12, "loss": 0}  # 7 steps x 4 images, not one distance transform more
    # the same loss without the task and wrapper computes them at every call
    train(wfm.BOOK_MODEL.build(1), WeightedFMeasureLoss(), _tiny_salient(12),
          TrainConfig(steps=3, batch_size=4, progress=False, device="cpu"))
    assert calls["loss"] == 3


# ----------------------------------------------------------------------------------
# claims (a), (b), (c), (e) on hand-built runs
# ----------------------------------------------------------------------------------
BASE = {"test_wfm": 0.60, "test_mae": 0.08, "test_max_f": 0.90, "test_s_measure": 0.85}


def fake_runs(shift=None, noise=None, seeds=(0, 1, 2)):
    """``{label: [run per seed]}`` with metrics BASE + shift[label][key] (+ a per-seed wobble)."""
    shift, noise = shift or {}, noise or {}
    runs = {}
    for label in LABELS:
        rs = []
        for k, seed in enumerate(seeds):
            metrics = {}
            for key, base in BASE.items():
                wobble = noise.get(label, {}).get(key, 0.0) * (k - 1)
                metrics[key] = base + shift.get(label, {}).get(key, 0.0) + wobble + 0.001 * k
            rs.append(types.SimpleNamespace(metrics=metrics, seed=seed))
        runs[label] = rs
    return runs


@pytest.fixture(scope="module")
def exp_setup():
    return wfm.setup("experiments", "ci")


def by_label(table):
    return {c.label: c for c in table.claims}


def test_claims_texts_sources_and_scope(exp_setup):
    runs = fake_runs({"Fʷ": {"test_wfm": 0.05}})
    table = wfm.experiments_claims(exp_setup, runs)
    assert isinstance(table, ClaimsTable) and table.chapter == "01_wfm"
    claims = by_label(table)
    assert list(claims) == ["(a)", "(b)", "(c)", "(e)"]
    assert [claims[k].source for k in claims] == ["abstract", "abstract", "abstract", "ours"]
    assert [k for k, c in claims.items() if c.primary] == ["(a)"]
    assert "SalientDigits 32x32" in table.scale and "width-16 U-Net" in table.scope
    assert "`ci` (early training): 120 steps, 3 seeds" in table.budget
    assert "tolerance 0.01" in claims["(b)"].ran and "width-8 U-Net" in claims["(c)"].ran
    assert "BCE + Fʷ vs BCE" in claims["(a)"].detail
    assert claims["(a)"].verdict == "supported"


def test_claim_a_each_verdict_is_reachable(exp_setup):
    cases = {"supported": 0.05, "contradicted": -0.05}
    for verdict, delta in cases.items():
        assert by_label(wfm.experiments_claims(exp_setup, fake_runs({"Fʷ": {"test_wfm": delta}})))["(a)"].verdict == verdict
    wobbly = fake_runs({"Fʷ": {"test_wfm": 0.002}}, noise={"Fʷ": {"test_wfm": 0.05}})
    assert by_label(wfm.experiments_claims(exp_setup, wobbly))["(a)"].verdict == "inconclusive"
    nan = fake_runs()
    for r in nan["Fʷ"]:
        r.metrics["test_wfm"] = float("nan")
    assert by_label(wfm.experiments_claims(exp_setup, nan))["(a)"].verdict == "not testable at this scale"


def test_claim_b_is_non_inferiority_with_mae_lower_is_better(exp_setup):
    # equal metrics: within the tolerance on all three -> supported
    assert by_label(wfm.experiments_claims(exp_setup, fake_runs()))["(b)"].verdict == "supported"
    # MAE higher by 0.05 (worse) -> contradicted; lower by 0.05 (better) -> still supported
    worse = fake_runs({"Fʷ": {"test_mae": 0.05}})
    better = fake_runs({"Fʷ": {"test_mae": -0.05}})
    assert by_label(wfm.experiments_claims(exp_setup, worse))["(b)"].verdict == "contradicted"
    assert by_label(wfm.experiments_claims(exp_setup, better))["(b)"].verdict == "supported"
    # an S-measure just at the tolerance, noisy -> inconclusive
    edge = fake_runs({"Fʷ": {"test_s_measure": -wfm.TOLERANCE}}, noise={"Fʷ": {"test_s_measure": 0.01}})
    claim = by_label(wfm.experiments_claims(exp_setup, edge))["(b)"]
    assert claim.verdict == "inconclusive"
    assert [e.what for e in claim.evidence] == ["−Δ MAE", "Δ max F (β² = 0.3)", "Δ S-measure"]


def test_claim_c_compares_the_small_model_with_fw_to_the_book_model_with_bce(exp_setup):
    runs = fake_runs({"Fʷ, small U-Net": {"test_max_f": -0.1}})
    claim = by_label(wfm.experiments_claims(exp_setup, runs))["(c)"]
    assert claim.verdict == "contradicted" and len(claim.evidence) == 4
    # the small BCE run does not enter the claim
    runs = fake_runs({"BCE, small U-Net": {"test_max_f": -0.3}})
    assert by_label(wfm.experiments_claims(exp_setup, runs))["(c)"].verdict == "supported"


def test_claim_e_needs_fw_above_every_peer(exp_setup):
    above_all = fake_runs({"Fʷ": {"test_wfm": 0.05}})
    assert by_label(wfm.experiments_claims(exp_setup, above_all))["(e)"].verdict == "supported"
    one_peer_better = fake_runs({"Fʷ": {"test_wfm": 0.05}, "hybrid (BASNet)": {"test_wfm": 0.10}})
    claim = by_label(wfm.experiments_claims(exp_setup, one_peer_better))["(e)"]
    assert claim.verdict == "contradicted" and len(claim.evidence) == len(wfm.PEERS)


def test_claims_input_errors(exp_setup):
    runs = fake_runs()
    with pytest.raises(KeyError, match="BCE \\+ Fʷ"):
        wfm.experiments_claims(exp_setup, {k: v for k, v in runs.items() if k != "BCE + Fʷ"})
    with pytest.raises(ValueError, match="share their seeds"):
        wfm.experiments_claims(exp_setup, {**runs, "BCE": fake_runs(seeds=(3, 4, 5))["BCE"]})
    with pytest.raises(ValueError, match="stage 'experiments'"):
        wfm.experiments_claims(wfm.setup("ranking", "ci"), runs)
    with pytest.raises(TypeError, match="map arm labels"):
        wfm.experiments_claims(exp_setup, [1, 2])


def test_show_converged_without_records_says_how_to_make_them(monkeypatch, tmp_path):
    shown = []
    monkeypatch.setattr("pixelweight.book.markdown", shown.append)
    full = wfm.setup("experiments", "full")
    monkeypatch.setattr(Setup, "committed_runs", lambda self, arms=None: {})
    out = wfm.show_converged(full, tmp_path)
    assert out["verdict (a)"] == "—" and out["seeds"] == "0" and not out["result"].available
    assert "make results CHAPTER=01_wfm" in shown[0]


def test_paired_frame_and_metric_frame():
    runs = fake_runs({"Fʷ": {"test_mae": -0.02}})
    frame = wfm.metric_frame(runs)
    assert list(frame.columns) == ["arm", "seed", *wfm.METRICS] and len(frame) == 3 * len(LABELS)
    paired = wfm.paired_frame(runs).set_index("arm")
    assert paired.loc["Fʷ", "−Δ MAE"].startswith("0.020")  # lower MAE reads as a positive gain
    with pytest.raises(KeyError):
        wfm.paired_frame(runs, reference="nope")


# ----------------------------------------------------------------------------------
# analyses
# ----------------------------------------------------------------------------------
def test_fp_mass_profile_puts_mass_where_it_is():
    gt = torch.zeros(1, 32, 32, dtype=torch.bool)
    gt[0, 10:14, 10:14] = True
    probs = torch.zeros(1, 32, 32)
    probs[0, 28:31, 28:31] = 1.0  # a far false positive only
    frame = wfm.fp_mass_profile(probs, gt)
    assert list(frame.columns) == ["low", "high", "distance", "pixels", "fp_per_pixel", "share", "importance"]
    assert math.isclose(frame["share"].sum(), 1.0) and frame["share"].iloc[-1] == 1.0
    assert frame["pixels"].sum() == 32 * 32 - 16
    assert (frame["importance"].dropna().diff().dropna() > 0).all()  # B grows with the distance
    assert wfm.far_fp_share(probs, gt) == 1.0
    near = torch.zeros(1, 32, 32)
    near[0, 9, 10:14] = 1.0
    assert wfm.far_fp_share(near, gt) == 0.0
    with pytest.raises(ValueError, match="no image has foreground"):
        wfm.fp_mass_profile(probs, torch.zeros(1, 32, 32, dtype=torch.bool))
    with pytest.raises(ValueError, match="shape"):
        wfm.fp_mass_profile(probs[:, :4], gt)
    with pytest.raises(ValueError, match="bins"):
        wfm.fp_mass_profile(probs, gt, bins=(1.0, 0.5))


def test_wfm_term_maps_reproduce_the_metric():
    data = _tiny_salient(3)
    gt = torch.from_numpy(data.labels[1]).bool()
    pred = torch.rand(32, 32, generator=torch.Generator().manual_seed(0)).double()
    maps = wfm.wfm_term_maps(pred, gt)
    assert math.isclose(maps["fw"], float(weighted_fmeasure(pred[None], gt[None])), rel_tol=0, abs_tol=1e-12)
    assert set(maps) >= {"E", "E_tilde", "E_A", "E_min", "B", "E_w", "distance"}
    assert np.all(maps["E_min"] <= maps["E"] + 1e-12) and np.all(maps["B"] >= 1) and np.all(maps["B"] < 2)
    bg = ~gt.numpy()
    assert np.array_equal(maps["E_min"][bg], maps["E"][bg])  # the blur only softens false negatives
    with pytest.raises(ValueError, match="no foreground"):
        wfm.wfm_term_maps(pred, torch.zeros(32, 32, dtype=torch.bool))


def test_tracking_hook_reports_the_loss_and_the_metric():
    data = _tiny_salient(4)
    images, masks = torch.from_numpy(data.images), torch.from_numpy(data.labels)
    hook = wfm.tracking_hook(images, masks)
    torch.manual_seed(0)
    model = wfm.BOOK_MODEL.build(1)
    out = hook(1, model, None)
    assert set(out) == {"probe_fw", "probe_fw_binary", "probe_smooth_fw", "probe_soft_f"}
    assert model.training  # evaluated in eval mode, left as it was
    with torch.no_grad():
        logits = model.eval()(images)
    expected = 1 - float(WeightedFMeasureLoss()(logits, masks.long()))
    assert math.isclose(out["probe_fw"], expected, rel_tol=1e-5)
    with pytest.raises(ValueError, match="do not fit"):
        wfm.tracking_hook(images, masks[:2])


def test_predict_returns_probabilities_and_restores_the_mode():
    data = _tiny_salient(5)
    model = wfm.SMALL_MODEL.build(1)
    model.train()
    probs = wfm.predict(model, data, batch_size=2)
    assert probs.shape == (5, 32, 32) and float(probs.min()) >= 0 and float(probs.max()) <= 1
    assert model.training
    assert torch.equal(wfm.predict(model, WithWFMTerms(data)), wfm.predict(model, data))


# ----------------------------------------------------------------------------------
# ranking under sloppy ground truth, claim (d)
# ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ranking_data():
    data = SalientDigits("test", 24, size=32, salient_size=(16, 24), distractor_size=(8, 12), seed=7, cache_dir=False)
    preds = wfm.predictor_maps(data.images, data.labels, seed=0)
    degraded = {k: data.sloppy_masks(k, v, seed=0) for k, v in wfm.DEGRADATIONS.items()}
    return data, preds, degraded


def test_predictor_maps_are_fixed_probability_maps(ranking_data):
    data, preds, _ = ranking_data
    assert preds.shape == (24, len(wfm.PREDICTORS), 32, 32) and preds.min() >= 0 and preds.max() <= 1
    assert np.array_equal(preds, wfm.predictor_maps(data.images, data.labels, seed=0))
    assert not np.array_equal(preds, wfm.predictor_maps(data.images, data.labels, seed=1))
    with pytest.raises(ValueError, match="needs foreground"):
        wfm.predictor_maps(data.images[:1], np.zeros((1, 32, 32), dtype=np.uint8))


def test_ranking_scores_known_values():
    gt = torch.zeros(1, 8, 8, dtype=torch.bool)
    gt[0, 2:6, 2:6] = True
    perfect = gt.double()
    half = gt.double().clone()
    half[0, 2:4, 2:6] = 0  # half the object found, no false positive
    preds = torch.stack([perfect, half], dim=1)
    scores = wfm.ranking_scores(preds, gt)
    assert np.allclose(scores["IoU"], [[1.0, 0.5]]) and np.allclose(scores["F"][0, 0], 1.0)
    p, r, b2 = 1.0, 0.5, wfm.RANKING_F_BETA2
    assert math.isclose(scores["F"][0, 1], (1 + b2) * p * r / (b2 * p + r))
    assert math.isclose(scores["Fʷ"][0, 0], 1.0, abs_tol=1e-9) and scores["Fʷ"][0, 1] < 1
    assert np.allclose(scores["Fʷ at 0.5"], scores["Fʷ"])  # binary maps: thresholding changes nothing


def test_rank_stability_is_one_for_the_clean_ground_truth_itself(ranking_data):
    data, preds, _ = ranking_data
    same = wfm.rank_stability(preds, data.labels, {"none": data.labels})
    assert set(same["measure"]) == set(wfm.RANKING_MEASURES + wfm.RANKING_CONTROLS)
    assert np.allclose(same["tau"].dropna(), 1.0)


def test_ranking_claims_each_verdict_is_reachable():
    s = wfm.setup("ranking", "ci")

    def frame(fw_minus_base, spread=0.0, n=30):
        rows = []
        for i in range(n):
            wobble = spread * (1 if i % 2 else -1)
            for kind in wfm.DEGRADATIONS:
                rows += [{"kind": kind, "image": i, "measure": "Fʷ", "tau": 0.5 + fw_minus_base + wobble},
                         {"kind": kind, "image": i, "measure": "F", "tau": 0.5 + 0.001 * (i % 3)},
                         {"kind": kind, "image": i, "measure": "IoU", "tau": 0.5 - 0.001 * (i % 3)}]
        return pd.DataFrame(rows)

    assert wfm.ranking_claims(s, frame(0.2)).claims[0].verdict == "supported"
    assert wfm.ranking_claims(s, frame(-0.2)).claims[0].verdict == "contradicted"
    assert wfm.ranking_claims(s, frame(0.0, spread=0.3)).claims[0].verdict == "inconclusive"
    undefined = frame(0.2)
    undefined.loc[undefined["measure"] == "F", "tau"] = np.nan
    assert wfm.ranking_claims(s, undefined).claims[0].verdict == "not testable at this scale"
    table = wfm.ranking_claims(s, frame(0.2))
    claim = table.claims[0]
    assert claim.label == "(d)" and claim.source == "paper, unverified" and "Margolin" in claim.text
    assert len(claim.evidence) == 2 * len(wfm.DEGRADATIONS)
    assert "no training; 30 test images" in table.budget and "seeds" not in claim.effect_text()
    with pytest.raises(ValueError, match="stage 'ranking'"):
        wfm.ranking_claims(wfm.setup("experiments", "ci"), frame(0.2))
    with pytest.raises(ValueError, match="rank_stability"):
        wfm.ranking_claims(s, pd.DataFrame({"x": [1]}))


def test_stability_table_has_one_row_per_annotator(ranking_data):
    data, preds, degraded = ranking_data
    st = wfm.rank_stability(preds, data.labels, degraded)
    table = wfm.stability_table(st)
    assert list(table["sloppy annotator"]) == [f"{k} ({v} px)" for k, v in wfm.DEGRADATIONS.items()]
    assert list(table.columns) == ["sloppy annotator", "τ of Fʷ", "τ of F", "τ of IoU", "τ of Fʷ at 0.5", "images"]


# ----------------------------------------------------------------------------------
# a record of the stage can be verified (rebuilt with its task, wrapper and metrics)
# ----------------------------------------------------------------------------------
def test_a_record_of_the_experiments_stage_verifies_exactly(tmp_path):
    from pixelweight.chapters import Scale, Stage, _runner

    real = wfm.STAGES["experiments"]
    tiny = get_profile("ci", seeds=(0, 1), steps=3, batch_size=4, train_samples=8, val_samples=4, test_samples=4)
    data = wfm.DATA.replace(cache_dir=False)
    stage = Stage("experiments", real.description, scales={"ci": Scale(tiny, data, wfm.ModelSpec(width=4, depth=1))},
                  arms=(wfm.Arm("Fʷ", "wfm"), wfm.Arm("Fʷ, small", "wfm", run="wfm-small",
                                                    model=wfm.ModelSpec(width=2, depth=1))),
                  prefix="t1", num_classes=1, task=real.task, dataset_wrapper=real.dataset_wrapper)
    s = Setup("01_wfm", stage, "ci", device="cpu", results_dir=str(tmp_path))
    runs = s.run(progress=False)
    small = runs["Fʷ, small"][1]
    assert small.record.config["model"]["width"] == 2 and small.record.config["task"]["type"] == "AuxiliaryTargetsTask"
    assert set(small.metrics) >= {"test_wfm", "test_mae", "test_max_f", "test_s_measure"}
    outcome = _runner.verify_record(small.record_path)
    assert outcome.passed and outcome.compared >= 8, outcome.report()


def test_live_runs_are_paired_by_their_records_seeds(exp_setup):
    """A live TrainResult has no ``seed`` of its own: its record's seed pairs it."""
    runs = fake_runs({"Fʷ": {"test_wfm": 0.05}})
    live = {label: [types.SimpleNamespace(metrics=r.metrics, record=types.SimpleNamespace(seed=r.seed)) for r in rs]
            for label, rs in runs.items()}
    assert by_label(wfm.experiments_claims(exp_setup, live))["(a)"].verdict == "supported"
    shuffled = dict(live, BCE=live["BCE"][::-1])
    with pytest.raises(ValueError, match="share their seeds"):
        wfm.paired_effect(shuffled, "Fʷ", "BCE", "test_wfm")
    assert list(wfm.metric_frame(live)["seed"][:3]) == [0, 1, 2]


def test_the_cost_tables_read_the_benchmarks_frames(monkeypatch):
    import pandas as pd

    from pixelweight.chapters import wfm

    with pytest.raises(ValueError, match="unknown profile"):
        wfm.cost_frames("nope")
    monkeypatch.setitem(wfm.COST_SCALES, "tiny", wfm.CostScale(((2, 16, 16),), 2, (2, 16, 16), 1, threads=(1,)))
    losses, metric = wfm.cost_frames("tiny")
    table = wfm.loss_cost_table(losses)
    assert list(table.columns) == ["loss (forward + backward)", "× BCE, 2x16x16", "target", "met"]
    fw = table.set_index("loss (forward + backward)").loc["weighted_fmeasure_loss(terms)"]
    ratio = float(losses.set_index("loss").loc["weighted_fmeasure_loss(terms)", "ratio"])
    assert fw["× BCE, 2x16x16"].startswith(f"{ratio:.2f}×") and fw["target"] == "≤ 1.5×"
    assert fw["met"] == ("yes" if ratio <= 1.5 else "no")
    assert "F.binary_cross_entropy_with_logits" not in set(table["loss (forward + backward)"])  # the reference
    rows = wfm.metric_cost_table(metric).set_index("call")
    assert list(rows.columns) == ["threads", "time", "× as fast as PySODMetrics", "target"]
    assert rows.loc["PySODMetrics (reference)", "× as fast as PySODMetrics"] == "1×"
    cached = metric.set_index("call").loc["weighted_fmeasure(terms)"]
    speed = rows.loc["weighted_fmeasure(terms)", "× as fast as PySODMetrics"]
    assert speed.startswith(f"{1 / cached['ratio']:.2f}×")
    assert rows.loc["weighted_fmeasure(terms)", "target"] == "≥ 20×: " + ("met" if cached["ratio"] <= 1 / 20 else "missed")
    summary = wfm.cost_summary(losses, metric)
    assert summary["loss_met"] == fw["met"].replace("yes", "met").replace("no", "missed")
    assert summary["metric_speedup_terms"] == f"{1 / cached['ratio']:.1f}" and summary["cost_threads"] == "1"
    assert float(summary["metric_diff"]) < 1e-6 and summary["terms_share"].endswith("%")
    with pytest.raises(ValueError, match="benchmark_foreground"):
        wfm.loss_cost_table(pd.DataFrame({"loss": ["x"]}))
    with pytest.raises(ValueError, match="benchmark_metric"):
        wfm.metric_cost_table(losses)
