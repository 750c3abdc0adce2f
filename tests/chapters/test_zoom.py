"""The learning-to-zoom chapter (pixelweight.chapters.zoom), its models
(pixelweight.models.ZoomClassifier, ZoomSegmenter) and its loss (classification-ce): the
stages and their records, each claim's verdict on hand-built runs (every verdict reachable),
the identity checks, and tiny training runs that record, list and verify."""

import dataclasses
import math
import types

import pytest
import torch
import torch.nn.functional as F

from pixelweight.chapters import Scale, zoom
from pixelweight.chapters._runner import chapter_jobs, verify_record
from pixelweight.claims import ClaimsTable
from pixelweight.losses import ClassificationCrossEntropy, build_loss, classification_cross_entropy, LossContext
from pixelweight.models import ZoomClassifier, ZoomSegmenter
from pixelweight.profiles import get_profile
from pixelweight.sampling import identity_grid


# ---------------------------------------------------------------------------------------
# the loss
# ---------------------------------------------------------------------------------------
def test_classification_ce_is_torch_cross_entropy_and_registered():
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 3, 1, 0])
    for reduction in ("mean", "sum", "none"):
        assert torch.allclose(classification_cross_entropy(logits, target, reduction),
                              F.cross_entropy(logits, target, reduction=reduction))
    target[0] = 255
    assert torch.allclose(classification_cross_entropy(logits, target, ignore_index=255),
                          F.cross_entropy(logits, target, ignore_index=255))
    loss = build_loss("classification-ce", LossContext(num_classes=4))
    assert isinstance(loss, ClassificationCrossEntropy)
    assert math.isnan(float(loss(torch.full((2, 4), float("nan")), torch.tensor([0, 1]))))


def test_classification_ce_keeps_the_loss_contract_of_ce():
    """The contract suite runs it too (tests/losses/contract.py); here the three defects of its
    first version: an all-ignored batch gave NaN, float16 logits a float32 loss, and the label
    check read a boolean on the host (a GPU sync) instead of the checked path of the pixel losses."""
    logits = torch.randn(4, 3, requires_grad=True)
    out = classification_cross_entropy(logits, torch.full((4,), 255), ignore_index=255)
    assert out.item() == 0 and out.requires_grad
    assert classification_cross_entropy(logits.detach().half(), torch.tensor([0, 1, 2, 1])).dtype == torch.float16
    import inspect

    from pixelweight.losses import classification as module

    assert "bool(" not in inspect.getsource(module.classification_cross_entropy)


@pytest.mark.parametrize("logits, target, match", [
    (torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.long), "shape"),
    (torch.zeros(2, 3), torch.zeros(3, dtype=torch.long), "target must have shape"),
    (torch.zeros(2, 3), torch.zeros(2), "integer"),
    (torch.zeros(2, 3), torch.tensor([0, 3]), r"\[0, 2\]"),
    (torch.zeros(2, 1), torch.tensor([0, 0]), "C >= 2"),
])
def test_classification_ce_rejects_bad_inputs(logits, target, match):
    with pytest.raises(ValueError, match=match):
        classification_cross_entropy(logits, target)


# ---------------------------------------------------------------------------------------
# the models
# ---------------------------------------------------------------------------------------
def test_every_zoom_model_starts_as_uniform_downsampling():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 64, 64)
    uniform = F.interpolate(x, size=16, mode="bilinear", align_corners=True)
    for mode in ("uniform", "saliency", "fixed"):
        model = ZoomClassifier(mode=mode, input_size=16, grid_size=8).eval()
        out = model.sample(x)
        assert (out.output - uniform).abs().max() < 1e-5, mode
        assert (out.grid - identity_grid(16, batch=3)).abs().max() < 1e-6, mode
    assert ZoomClassifier(mode="full", input_size=16).eval().sample(x).output is x


def test_every_mode_draws_the_same_task_network_for_a_seed():
    """The arms of a comparison share the task network's initialisation: the saliency network
    is built after it (before the fix, the saliency network took the first draws of the RNG)."""
    for cls, kw in ((ZoomClassifier, {}), (ZoomSegmenter, {"width": 4, "depth": 2})):
        states = {}
        for mode, extra in (("uniform", {}), ("saliency", {}), ("saliency", {"padding": 0}),
                            ("saliency", {"blur_warmup_steps": 5}), ("fixed", {}), ("full", {})):
            torch.manual_seed(3)
            states[mode, str(extra)] = cls(mode=mode, input_size=16, grid_size=8, **kw, **extra).net.state_dict()
        first = next(iter(states.values()))
        for key, state in states.items():
            assert state.keys() == first.keys(), key
            assert all(torch.equal(state[k], first[k]) for k in first), (cls.__name__, key)


def test_without_padding_the_model_starts_from_a_centre_zoom():
    """The no-padding ablation does not start as uniform downsampling (the docs said it did)."""
    grid = ZoomClassifier(mode="saliency", input_size=32, grid_size=16, padding=0).eval().sample(
        torch.rand(1, 1, 96, 96)).grid.detach()
    deviation = (grid - identity_grid(32, batch=1)).abs()
    assert 0.2 < float(deviation.max()) < 0.3
    assert float(grid[0, 0, 0, 0]) > -0.9 and float(grid[0, -1, -1, 0]) < 0.9  # pulled toward the centre


def test_the_blur_warm_up_clock_is_a_buffer():
    model = ZoomClassifier(mode="saliency", input_size=16, grid_size=8, blur_warmup_steps=3)
    assert "training_steps" in model.state_dict()
    x = torch.rand(2, 1, 48, 48)
    model(x)
    model(x)
    fresh = ZoomClassifier(mode="saliency", input_size=16, grid_size=8, blur_warmup_steps=3)
    fresh.load_state_dict(model.state_dict())
    assert int(fresh.training_steps) == 2
    fresh(x)
    assert fresh.sampler.blur_warmup  # the third step is still in the warm-up
    fresh(x)
    assert not fresh.sampler.blur_warmup and int(fresh.training_steps) == 4


def test_the_blur_warm_up_lasts_its_steps_and_only_in_training():
    model = ZoomClassifier(mode="saliency", input_size=16, grid_size=8, blur_warmup_steps=2)
    x = torch.rand(2, 1, 48, 48)
    flags = []
    for _ in range(4):
        model(x)
        flags.append(model.sampler.blur_warmup)
    assert flags == [True, True, False, False] and model.training_steps == 4
    model.eval()
    model(x)
    assert model.training_steps == 4


def test_zoom_models_learn_their_saliency_and_shapes():
    torch.manual_seed(0)
    model = ZoomClassifier(mode="saliency", input_size=16, grid_size=8, width=4, depth=2)
    loss = F.cross_entropy(model(torch.rand(4, 1, 48, 48)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert model.sampler.saliency_net[-1].weight.grad.abs().sum() > 0  # the saliency is trained
    assert not any(name.startswith("sampler.gaussian") for name, _ in model.named_parameters())
    fixed = ZoomClassifier(mode="fixed", input_size=16, grid_size=8, width=4, depth=2)
    F.cross_entropy(fixed(torch.rand(4, 1, 48, 48)), torch.tensor([0, 1, 2, 3])).backward()
    assert fixed.fixed_logits.grad.abs().sum() > 0
    seg = ZoomSegmenter(mode="saliency", input_size=16, grid_size=8, width=4, depth=2)
    out = seg(torch.rand(2, 1, 40, 40))
    assert out.shape == (2, 11, 40, 40)
    F.cross_entropy(out, torch.zeros(2, 40, 40, dtype=torch.long)).backward()
    assert seg.sampler.saliency_net[-1].weight.grad is not None
    assert ZoomSegmenter(mode="uniform", input_size=16, width=4, depth=2)(torch.rand(1, 1, 40, 40)).shape[-1] == 40


def test_the_segmenter_unzooms_with_or_without_the_inverse_gradient():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 40, 40)
    grads = {}
    for flag in (False, True):
        torch.manual_seed(1)
        seg = ZoomSegmenter(mode="saliency", input_size=16, grid_size=8, width=4, depth=2, unzoom_gradient=flag,
                            unzoom_iterations=20)
        seg.sampler.saliency_net[-1].weight.data.normal_(0, 0.5)  # a real warp
        F.cross_entropy(seg(x), torch.zeros(2, 40, 40, dtype=torch.long)).backward()
        grads[flag] = seg.sampler.saliency_net[-1].weight.grad.clone()
    assert grads[False].abs().sum() > 0 and not torch.allclose(grads[False], grads[True])
    with pytest.raises(ValueError, match="unzoom_iterations"):
        ZoomSegmenter(unzoom_iterations=0)
    with pytest.raises(TypeError, match="unzoom_gradient"):
        ZoomSegmenter(unzoom_gradient=1)


@pytest.mark.parametrize("kwargs, x, error, match", [
    ({"mode": "zoomy"}, torch.rand(1, 1, 64, 64), ValueError, "mode"),
    ({"mode": "saliency", "antialias": True}, torch.rand(1, 1, 64, 64), ValueError, "antialias"),
    ({"input_size": 32}, torch.rand(1, 1, 16, 16), ValueError, "smaller than input_size"),
    ({}, torch.rand(1, 3, 64, 64), ValueError, "shape"),
    ({}, torch.zeros(1, 1, 64, 64, dtype=torch.long), ValueError, "floating"),
    ({"padding": -1}, torch.rand(1, 1, 64, 64), ValueError, "padding"),
])
def test_zoom_models_validate(kwargs, x, error, match):
    with pytest.raises(error, match=match):
        ZoomClassifier(**kwargs)(x)


# ---------------------------------------------------------------------------------------
# the stages
# ---------------------------------------------------------------------------------------
def test_stages_arms_and_run_names():
    assert zoom.CHAPTER.folder == "03_zoom" and set(zoom.STAGES) == {"headline", "sweep", "segmentation"}
    head = zoom.setup("headline", "ci")
    assert head.run_names() == [f"ch3-headline-{r}" for r in ("uniform", "sampler", "highres", "nopad", "noblur",
                                                               "fixed")]
    assert zoom.setup("sweep", "full").run_names(variants=True) == [
        f"ch3-sweep-{v}-{a}" for v in [f"d{d}" for d in zoom.DIGIT_SIZES] + [zoom.FILL_VARIANT]
        for a in ("uniform", "sampler")]
    fill = zoom.setup("sweep", "ci").variant(zoom.FILL_VARIANT).data
    assert fill.options["digit_size"] == fill.size and fill.options["clutter"] == 0  # zooming cannot help
    assert zoom.setup("segmentation", "ci").run_names() == ["ch3-seg-uniform", "ch3-seg-zoom"]
    for stage in zoom.STAGES.values():
        assert len(stage.scale("ci").profile.seeds) >= 3 and len(stage.scale("full").profile.seeds) >= 5
        full = stage.scale("full")
        for arm in stage.arms:  # at least 3 evaluations in every run's plateau window
            own = full.profile_of(arm)
            assert own.steps * full.train["plateau_window"] // own.eval_every >= 3
    assert head.describe() == ("`ci` (early training): 150 steps, 3 seeds, 96x96 canvases (digits 12 px), "
                               "32x32 task input, width-16 SmallCNN")


def test_each_arm_has_its_model_and_the_record_holds_it():
    head = zoom.setup("headline", "ci")
    specs = {a.label: head.arm_model(a) for a in head.arms}
    assert specs["uniform"].options["mode"] == "uniform" and specs["high-res"].options["mode"] == "full"
    assert specs["no padding"].options["padding"] == 0
    assert specs["sampler"].options["blur_warmup_steps"] == int(zoom.BLUR_FRACTION * head.profile.steps) > 0
    assert "blur_warmup_steps" not in specs["no blur warm-up"].options
    full = zoom.setup("headline", "full")
    config = full.full_config(full.arm("sampler"))
    assert config["model"]["blur_warmup_steps"] == int(zoom.BLUR_FRACTION * full.profile.steps)
    # every arm trains the same steps (a high-res budget of its own ended lower: the module's notes)
    assert {full.full_config(a)["profile"]["steps"] for a in full.arms} == {full.profile.steps}
    assert full.budget() == "`full` (converged budget): 2000 steps, 5 seeds"
    assert config["model"]["name"] == "ZoomClassifier" and config["num_classes"] == 10
    assert isinstance(head.variant("") , zoom.ZoomSetup)
    assert isinstance(zoom.setup("sweep", "ci").variant("d8"), zoom.ZoomSetup)
    assert zoom.setup("sweep", "ci").variant("d8").data.options["digit_size"] == 8
    with pytest.raises(TypeError, match="build_arm_model"):
        head.build_model()
    with pytest.raises(ValueError, match="one of"):
        zoom.sweep_variant(10)


def test_the_zoom_setup_trains_an_arm_with_its_own_steps(monkeypatch):
    """ZoomSetup.run_arm hands the harness each arm's own budget (Scale.arm_budgets), and the
    blur warm-up follows the arm's steps (the runner's records must hold them, or
    committed_runs would not find them)."""
    import dataclasses

    seen = {}

    def fake_run_seeds(name, build_model, build_loss, splits, profile, *args, **kwargs):
        seen[name] = profile
        return []

    monkeypatch.setattr("pixelweight.chapters._base.run_seeds", fake_run_seeds)
    monkeypatch.setattr(zoom.ZoomSetup, "splits", property(lambda self: None))
    full = zoom.setup("headline", "full", device="cpu")
    full.scale = dataclasses.replace(full.scale, arm_budgets={"highres": {"steps": 1200, "eval_every": 75},
                                                              "nopad": {"steps": 1000}})
    for label in ("high-res", "sampler", "no padding"):
        full.run_arm(full.arm(label), seeds=[0])
    assert (seen["ch3-headline-highres"].steps, seen["ch3-headline-highres"].eval_every) == (1200, 75)
    assert (seen["ch3-headline-sampler"].steps, seen["ch3-headline-sampler"].eval_every) == (2000, 125)
    assert full.arm_model(full.arm("sampler")).options["blur_warmup_steps"] == int(zoom.BLUR_FRACTION * 2000)
    assert full.arm_model(full.arm("no padding")).options["blur_warmup_steps"] == int(zoom.BLUR_FRACTION * 1000)


def test_the_runner_lists_every_run():
    jobs = chapter_jobs("03_zoom", "full")
    # the sweep's headline-size point is the headline's uniform and sampler runs: not trained twice
    assert len(jobs) == 5 * (6 + 2 * len(zoom.DIGIT_SIZES) + 2)
    assert {j.stage for j in jobs} == {"headline", "sweep", "segmentation"}
    assert not [j for j in jobs if j.variant == f"d{zoom.HEADLINE_DIGIT}"]
    assert len(chapter_jobs("03_zoom", "ci")) == 3 * (6 + 2 * (len(zoom.DIGIT_SIZES) + 1) + 2)  # ci trains it
    sweep, head = zoom.setup("sweep", "full").variant(f"d{zoom.HEADLINE_DIGIT}"), zoom.setup("headline", "full")
    for label in ("uniform", "sampler"):  # the same runs: data, model, budget, loss
        assert sweep.full_config(sweep.arm(label)) == head.full_config(head.arm(label))


# ---------------------------------------------------------------------------------------
# the claims on hand-built runs
# ---------------------------------------------------------------------------------------
def _runs(values, metric="test_accuracy"):
    return [types.SimpleNamespace(seed=s, metrics={metric: v}) for s, v in enumerate(values)]


def _headline(sampler, uniform=(0.50, 0.52, 0.51, 0.49), highres=(0.80, 0.82, 0.81, 0.79), **others):
    runs = {"uniform": _runs(uniform), "sampler": _runs(sampler), "high-res": _runs(highres)}
    for label in ("no padding", "no blur warm-up", zoom.FIXED_ARM):
        runs[label] = _runs(others.get(label, uniform))
    return runs


def _sweep(gains, base=0.5, fill=None):
    """Sweep runs with the sampler's gains per digit size; on the fill variant the gain ``fill``
    (default: the largest digit's)."""
    runs = {}
    variants = [zoom.sweep_variant(d) for d in zoom.DIGIT_SIZES] + [zoom.FILL_VARIANT]
    for v, gain in zip(variants, list(gains) + [gains[-1] if fill is None else fill]):
        runs[v, "uniform"] = _runs([base, base + 0.01, base - 0.01, base])
        runs[v, "sampler"] = _runs([base + g for g in gain])
    return runs


def _verdicts(table):
    return {c.label: c.verdict for c in table.claims}


def test_claims_supported():
    head, sweep = zoom.setup("headline", "ci"), zoom.setup("sweep", "ci")
    runs = _headline(sampler=(0.75, 0.78, 0.77, 0.74))
    effects = zoom.sweep_effects(sweep, _sweep([(0.3, 0.32, 0.29, 0.31), (0.1, 0.12, 0.11, 0.09),
                                                (0.01, 0.0, 0.01, 0.005)]))
    table = zoom.headline_claims(head, runs, effects)
    assert isinstance(table, ClaimsTable)
    v = _verdicts(table)
    assert v["(a)"] == v["(b)"] == v["(c)"] == v["(d)"] == "supported"
    assert v["(e)"] == v["(f)"] == v["(g)"] == "supported"
    assert [c.label for c in table.claims if c.primary] == ["(a)"]
    (c,) = [c for c in table.claims if c.label == "(c)"]
    assert "gap closed on average: 85%" in c.effect_text()
    assert "32x32 input" in table.claims[0].ran and "ci" in table.budget and "96x96" in table.scope


def test_claims_contradicted_and_inconclusive():
    head, sweep = zoom.setup("headline", "ci"), zoom.setup("sweep", "ci")
    worse = _headline(sampler=(0.40, 0.41, 0.42, 0.39), **{"no padding": (0.6, 0.61, 0.6, 0.62)})
    effects = zoom.sweep_effects(sweep, _sweep([(0.0, 0.01, -0.01, 0.0), (0.05,) * 4,
                                                (-0.1, -0.12, -0.11, -0.09)]))
    v = _verdicts(zoom.headline_claims(head, worse, effects))
    assert v["(a)"] == "contradicted" and v["(b)"] == "contradicted" and v["(c)"] == "contradicted"
    assert v["(e)"] == "contradicted"
    assert v["(d)"] == "supported"  # 0 - (-0.1): the gain at 8 px beats the (negative) one at 20 px
    noisy = _headline(sampler=(0.60, 0.40, 0.55, 0.45))
    flat = zoom.sweep_effects(sweep, _sweep([(0.05, -0.05, 0.02, -0.02)] * 3))
    v = _verdicts(zoom.headline_claims(head, noisy, flat))
    assert v["(a)"] == "inconclusive" and v["(d)"] == "inconclusive"
    assert v["(b)"] == "inconclusive"  # non-inferiority with an interval wider than the tolerance


def test_claims_not_testable_and_without_the_sweep():
    head = zoom.setup("headline", "ci")
    runs = _headline(sampler=(float("nan"),) * 4)
    v = _verdicts(zoom.headline_claims(head, runs))
    assert v["(a)"] == "not testable at this scale" and "(b)" not in v and "(d)" not in v
    same = _headline(sampler=(0.6, 0.6, 0.6, 0.6), uniform=(0.6,) * 4, highres=(0.6,) * 4)
    (c,) = [c for c in zoom.headline_claims(head, same).claims if c.label == "(c)"]
    assert "undefined" in c.effect_text()


def test_claims_check_their_inputs():
    head, sweep = zoom.setup("headline", "ci"), zoom.setup("sweep", "ci")
    runs = _headline(sampler=(0.7,) * 4)
    del runs[zoom.FIXED_ARM]
    with pytest.raises(KeyError, match=zoom.FIXED_ARM):
        zoom.headline_claims(head, runs)
    shifted = _headline(sampler=(0.7,) * 4)
    shifted["sampler"] = [types.SimpleNamespace(seed=s + 1, metrics=r.metrics) for s, r in
                          enumerate(shifted["sampler"])]
    with pytest.raises(ValueError, match="share their seeds"):
        zoom.headline_claims(head, shifted)
    with pytest.raises(ValueError, match="stage 'headline'"):
        zoom.headline_claims(sweep, _headline(sampler=(0.7,) * 4))
    with pytest.raises(ValueError, match="sweep_effects"):
        zoom.headline_claims(head, _headline(sampler=(0.7,) * 4), {"gains": {}})
    partial = _sweep([(0.1,) * 4] * 3)
    del partial["d8", "sampler"]
    with pytest.raises(KeyError, match="d8"):
        zoom.sweep_effects(sweep, partial)
    with pytest.raises(ValueError, match="fraction"):
        zoom.gap_closed(_headline(sampler=(0.7,) * 4), fraction=1.5)


def test_claim_c_is_not_testable_when_high_res_is_no_better_than_uniform():
    """Before the fix, with high-res below uniform the "half-way" target fell below uniform and a
    sampler no better than uniform was "supported"."""
    head = zoom.setup("headline", "ci")
    below = _headline(sampler=(0.51, 0.53, 0.52, 0.50), highres=(0.30, 0.32, 0.31, 0.29))
    (c,) = [c for c in zoom.headline_claims(head, below).claims if c.label == "(c)"]
    assert c.verdict == "not testable at this scale"
    unsure = _headline(sampler=(0.51, 0.53, 0.52, 0.50), highres=(0.60, 0.42, 0.56, 0.44))  # h - u not surely > 0
    (c,) = [c for c in zoom.headline_claims(head, unsure).claims if c.label == "(c)"]
    assert c.verdict == "not testable at this scale"


def test_claim_b_is_judged_where_zooming_cannot_help():
    """(b) reads the fill variant, not the largest digit of the sweep (where the sampler can still
    win and so passes non-inferiority trivially)."""
    head, sweep = zoom.setup("headline", "ci"), zoom.setup("sweep", "ci")
    helps_at_20 = [(0.3, 0.32, 0.29, 0.31), (0.1, 0.12, 0.11, 0.09), (0.2, 0.21, 0.19, 0.2)]
    worse_on_fill = zoom.sweep_effects(sweep, _sweep(helps_at_20, fill=(-0.1, -0.12, -0.11, -0.09)))
    assert _verdicts(zoom.headline_claims(head, _headline(sampler=(0.7,) * 4), worse_on_fill))["(b)"] == \
        "contradicted"
    assert _verdicts(zoom.sweep_claims(sweep, _sweep(helps_at_20, fill=(-0.1, -0.12, -0.11, -0.09))))["(b)"] == \
        "contradicted"
    (b,) = [c for c in zoom.sweep_claims(sweep, _sweep(helps_at_20, fill=(0.0,) * 4)).claims if c.label == "(b)"]
    assert b.verdict == "supported" and "fills the 96x96 canvas" in b.ran


def test_missing_or_nan_metrics_give_not_testable_not_an_error():
    head, sweep = zoom.setup("headline", "ci"), zoom.setup("sweep", "ci")
    runs = _sweep([(0.3,) * 4, (0.1,) * 4, (0.0,) * 4])
    runs["d8", "sampler"] = _runs([float("nan"), 0.8, 0.8, 0.8])
    runs["d20", "sampler"] = _runs([None, 0.5, 0.5, 0.5])
    assert math.isnan(zoom.sweep_effects(sweep, runs)["growth"].mean)
    assert _verdicts(zoom.sweep_claims(sweep, runs))["(d)"] == "not testable at this scale"
    seg = zoom.setup("segmentation", "ci")
    seg_runs = {label: [types.SimpleNamespace(seed=s, metrics={"test_miou": 0.5, "test_iou": [0.9] * 11,
                                                               "test_boundary_accuracy": v})
                        for s, v in enumerate(values)]
                for label, values in (("uniform", (0.5, None, 0.4)), ("zoom + unzoom", (0.6, 0.6, float("nan"))))}
    assert math.isnan(zoom.boundary_effect(seg, seg_runs).mean)
    assert _verdicts(zoom.segmentation_claims(seg, seg_runs))["(j)"] == "not testable at this scale"


def test_boundary_accuracy_is_a_metric_of_the_segmentation_runs():
    seg = zoom.setup("segmentation", "ci")
    metrics = seg.metrics()
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, 2:6, 2:6] = 3
    logits = F.one_hot(target, 11).permute(0, 3, 1, 2).float()
    logits[0, :, 2, 2] = 0
    logits[0, 5, 2, 2] = 1  # one wrong boundary pixel
    metrics.update(logits, target)
    out = metrics.compute()
    from pixelweight.metrics import boundary_mask

    total = int(boundary_mask(target, width=zoom.BOUNDARY_WIDTH).sum())
    assert out["boundary_accuracy"] == pytest.approx((total - 1) / total) and "miou" in out
    metrics.reset()
    metrics.update(torch.zeros(1, 11, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    assert metrics.compute()["boundary_accuracy"] is None  # no boundary pixel


def test_identity_checks_follow_the_images_dtype():
    canvases = torch.stack([zoom.setup("headline", "ci").data.build("test", 2)[i][0] for i in range(2)]).double()
    exact, low = zoom.identity_checks(canvases)
    assert exact.passed and low.passed


def test_sweep_claims_record_only_b_and_d():
    sweep = zoom.setup("sweep", "ci")
    table = zoom.sweep_claims(sweep, _sweep([(0.3, 0.32, 0.29, 0.31), (0.1, 0.12, 0.11, 0.09), (0.0,) * 4]))
    assert [c.label for c in table.claims if c.record] == ["(b)", "(d)"]
    assert table.section == "converged-sweep"


def test_segmentation_claims():
    seg = zoom.setup("segmentation", "ci")

    def runs(miou, iou):
        return [types.SimpleNamespace(seed=s, metrics={"test_miou": m, "test_iou": [0.99] + [i] * 10})
                for s, (m, i) in enumerate(zip(miou, iou))]

    better = {"uniform": runs((0.3, 0.31, 0.29), (0.2, 0.21, 0.19)),
              "zoom + unzoom": runs((0.5, 0.52, 0.49), (0.4, 0.42, 0.41))}
    table = zoom.segmentation_claims(seg, better)
    assert _verdicts(table) == {"(h)": "supported", "(i)": "supported"}  # no models: no boundary claim
    assert table.claims[0].primary and "48x48 label resolution" in table.claims[0].ran
    worse = {"uniform": better["zoom + unzoom"], "zoom + unzoom": better["uniform"]}
    assert _verdicts(zoom.segmentation_claims(seg, worse))["(h)"] == "contradicted"
    absent = {k: [types.SimpleNamespace(seed=r.seed, metrics={"test_miou": r.metrics["test_miou"],
                                                              "test_iou": [0.9] + [None] * 10}) for r in v]
              for k, v in better.items()}
    assert _verdicts(zoom.segmentation_claims(seg, absent))["(i)"] == "not testable at this scale"


def test_identity_checks_pass_on_canvases():
    canvases = torch.stack([zoom.setup("headline", "ci").data.build("test", 4)[i][0] for i in range(4)])
    exact, low = zoom.identity_checks(canvases)
    assert exact.passed and exact.max_error < 1e-5
    assert low.passed and 0 < low.max_error < zoom.LOW_CONTRAST_SHIFT
    with pytest.raises(ValueError, match="contrast"):
        zoom.identity_checks(canvases, contrast=2.0)
    with pytest.raises(ValueError, match="side"):
        zoom.identity_checks(torch.rand(1, 1, 8, 8))


# ---------------------------------------------------------------------------------------
# tiny runs: trained, recorded, judged and verified
# ---------------------------------------------------------------------------------------
def _tiny(stage):
    tiny = get_profile("ci", seeds=(0, 1), steps=3, batch_size=4, train_samples=12, val_samples=8, test_samples=8,
                       eval_every=0)
    st = zoom.STAGES[stage]
    scales = {k: dataclasses.replace(v, profile=dataclasses.replace(tiny, name=k)) for k, v in st.scales.items()}
    return dataclasses.replace(st, scales=scales)


def test_tiny_classification_runs_are_deterministic_and_verify(tmp_path):
    setup = zoom.ZoomSetup("03_zoom", _tiny("headline"), "ci", device="cpu", results_dir=str(tmp_path))
    arms = [setup.arm("uniform"), setup.arm("sampler")]
    runs = setup.run(arms, progress=False)
    again = zoom.ZoomSetup("03_zoom", _tiny("headline"), "ci", device="cpu").run(arms, progress=False)
    for label in runs:
        assert [r.metrics["test_accuracy"] for r in runs[label]] == [r.metrics["test_accuracy"] for r in again[label]]
    record = tmp_path / "ch3-headline-sampler--seed1.json"
    assert record.is_file()
    check = verify_record(record)
    assert check.passed and check.compared > 0
    frame = zoom.accuracy_frame(runs)
    assert list(frame.columns) == ["arm", "seed", "value"] and len(frame) == 4
    seen = zoom.sampled_examples(runs["sampler"][0].model, torch.rand(2, 1, 96, 96))
    assert seen.output.shape == (2, 1, 32, 32) and seen.saliency.shape == (2, 1, 16, 16)
    assert zoom.average_saliency(runs["sampler"][0].model, torch.rand(2, 1, 96, 96)).max() == 1.0


def test_tiny_segmentation_runs_judge_the_boundary_claim_and_verify(tmp_path):
    setup = zoom.ZoomSetup("03_zoom", _tiny("segmentation"), "ci", device="cpu", results_dir=str(tmp_path))
    runs = setup.run(progress=False)
    assert all("test_boundary_accuracy" in r.metrics for rs in runs.values() for r in rs)
    # verify retrains with the chapter's own metrics: the boundary accuracy is compared too
    check = verify_record(tmp_path / "ch3-seg-zoom--seed1.json")
    assert check.passed and not check.differences, check.differences
    check_uniform = verify_record(tmp_path / "ch3-seg-uniform--seed0.json")
    assert check_uniform.passed and check_uniform.compared == check.compared
    table = zoom.segmentation_claims(setup, runs)
    assert [c.label for c in table.claims] == ["(h)", "(i)", "(j)"]
    without_models = {label: [types.SimpleNamespace(seed=zoom._seed(r),
                                                    metrics=r.metrics) for r in rs] for label, rs in runs.items()}
    assert [c.label for c in zoom.segmentation_claims(setup, without_models).claims] == ["(h)", "(i)", "(j)"]


def test_benchmark_models_times_the_arms_without_touching_them():
    from pixelweight.benchmark import benchmark_models

    torch.manual_seed(0)
    models = {"uniform": ZoomSegmenter(mode="uniform", input_size=16, grid_size=8, width=4, depth=2),
              "zoom": ZoomSegmenter(mode="saliency", input_size=16, grid_size=8, width=4, depth=2)}
    before = {k: v.clone() for k, v in models["zoom"].state_dict().items()}
    frame = benchmark_models(models, torch.rand(2, 1, 32, 32), torch.randint(0, 11, (2, 32, 32)),
                             F.cross_entropy, repeats=2)
    assert list(frame["model"]) == ["uniform", "zoom"] and frame["train_step_ratio"].iloc[0] == 1.0
    assert (frame[["train_step_s", "forward_s"]] > 0).all().all()
    assert all(torch.equal(v, before[k]) for k, v in models["zoom"].state_dict().items())
    with pytest.raises(ValueError, match="timer"):
        benchmark_models(models, torch.rand(2, 1, 32, 32), torch.zeros(2, 32, 32, dtype=torch.long),
                         F.cross_entropy, timer="gpu")


def test_saliency_concentration_is_peak_over_mean_and_validates():
    flat = torch.full((2, 1, 3, 3), 0.5)
    assert zoom.saliency_concentration(flat).tolist() == [1.0, 1.0]
    one = torch.zeros(1, 5, 5)
    one[0, 4, 0] = 2.0
    assert zoom.saliency_concentration(one).tolist() == [25.0]
    # non-square maps: peak over mean, by hand
    s = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]]])
    assert zoom.saliency_concentration(s).tolist() == [6.0 / 2.0]
    for bad, err, match in ((flat.numpy(), TypeError, "torch.Tensor"), (torch.ones(2, 2, 3, 3), ValueError, "one channel"),
                            (torch.ones(3, 3), ValueError, "with N >= 1"), (torch.ones(0, 3, 3), ValueError, "N >= 1"),
                            (torch.ones(1, 3, 3, dtype=torch.long), ValueError, "floating"),
                            (torch.full((1, 3, 3), float("nan")), ValueError, "finite"),
                            (-torch.ones(1, 3, 3), ValueError, "non-negative"),
                            (torch.zeros(1, 3, 3), ValueError, "positive mean")):
        with pytest.raises(err, match=match):
            zoom.saliency_concentration(bad)


def _seg_run(seed, miou, digits, reached):
    return types.SimpleNamespace(seed=seed, plateau=None if reached is None else {"reached": reached},
                                 metrics={"test_miou": miou, "val_miou": miou + 0.01,
                                          "test_iou": [0.98] + [digits] * 10})


def test_converged_summary_flags_runs_stuck_on_background():
    runs = {"uniform": [_seg_run(1, 0.75, 0.72, False), _seg_run(0, 0.70, 0.67, True)],
            "zoom + unzoom": [_seg_run(0, 0.089, 0.0, True), _seg_run(1, 0.3, 0.23, None)]}
    frame = zoom.converged_summary(runs).set_index("input made by")
    assert frame.loc["uniform", "runs at the plateau"] == "1 of 2"
    assert frame.loc["uniform", "runs predicting background only"] == "0 of 2"
    assert frame.loc["uniform", "final validation mIoU, by seed"] == "0.710, 0.760"  # by seed
    # the stuck run is flat, so at the plateau, and flagged; a run without a plateau is not counted
    assert frame.loc["zoom + unzoom", "runs at the plateau"] == "1 of 1"
    assert frame.loc["zoom + unzoom", "runs predicting background only"] == "1 of 2"
    assert frame.loc["uniform", "test mIoU, mean [95% CI]"].startswith("0.725 [")
    with pytest.raises(ValueError, match="non-empty"):
        zoom.converged_summary({})
    with pytest.raises(ValueError, match="has no run"):
        zoom.converged_summary({"uniform": []})
    bad = _seg_run(0, 0.5, 0.5, True)
    del bad.metrics["test_iou"]
    with pytest.raises(KeyError, match="test_iou"):
        zoom.converged_summary({"uniform": [bad]})


def test_zoom_coverage_is_one_for_uniform_sampling_and_drops_as_the_saliency_peaks():
    torch.manual_seed(0)
    images = torch.rand(2, 1, 32, 32)
    model = ZoomSegmenter(mode="saliency", input_size=16, grid_size=8, width=4, depth=2).eval()
    assert zoom.zoom_coverage(model, images).tolist() == [1.0, 1.0]  # a new model samples uniformly
    fixed = ZoomSegmenter(mode="fixed", input_size=16, grid_size=8, width=4, depth=2).eval()
    coverage = []
    for peak in (0.0, 2.0, 6.0):  # one data-set map with a peak of growing height at one cell
        with torch.no_grad():
            fixed.fixed_logits.zero_()
            fixed.fixed_logits[0, 0, 2, 5] = peak
        c = zoom.zoom_coverage(fixed, images)
        assert c.shape == (2,) and c[0] == c[1]  # the same map for both images
        coverage.append(float(c[0]))
    assert coverage[0] == 1.0 and 1.0 > coverage[1] > coverage[2] > 0.0, coverage
    with pytest.raises(ValueError, match="max_iter"):
        zoom.zoom_coverage(model, images, max_iter=0)
    with pytest.raises(TypeError, match="ZoomClassifier or ZoomSegmenter"):
        zoom.zoom_coverage(torch.nn.Identity(), images)


def test_verify_uses_the_zoom_setups_metrics_for_any_profile_and_variant():
    from pixelweight.chapters._runner import _stage_metrics

    seg = {"chapter": "03_zoom", "stage": "segmentation", "profile": {"name": "full"}, "num_classes": 11}
    assert isinstance(_stage_metrics(seg, "cpu")(), zoom.BoundarySegmentationMetrics)
    # the metrics do not depend on the profile: a profile the stage has no scale for still gets them
    assert isinstance(_stage_metrics({**seg, "profile": {"name": "mine"}}, "cpu")(), zoom.BoundarySegmentationMetrics)
    sweep = {"chapter": "03_zoom", "stage": "sweep", "variant": "d8", "profile": {"name": "full"}, "num_classes": 10}
    assert type(_stage_metrics(sweep, "cpu")()).__name__ == "ClassificationMetrics"
    # not the record's classes, an unknown variant, another chapter's stage: the default metrics
    assert _stage_metrics({**seg, "num_classes": 3}, "cpu") is None
    assert _stage_metrics({**sweep, "variant": "nope"}, "cpu") is None
    assert _stage_metrics({"chapter": "02_recall", "stage": "headline", "num_classes": 11}, "cpu") is None
    assert _stage_metrics({"chapter": "nope", "stage": "x", "num_classes": 11}, "cpu") is None


def test_the_setup_declares_what_it_derives_from_the_budget():
    """A traced rerun at another budget ignores exactly ``BUDGET_DERIVED``: every config key
    that moves with the steps must be declared there, and each declared key must move."""
    import dataclasses

    from pixelweight.chapters._base import Setup

    assert Setup.BUDGET_DERIVED == ()
    moved = set()
    for stage in zoom.STAGES:
        setup = zoom.setup(stage, "full", device="cpu")
        other = dataclasses.replace(setup.scale, profile=dataclasses.replace(setup.scale.profile, steps=8))
        for arm in setup.arms:
            a, b = setup.arm_model(arm).to_dict(), setup.arm_model(arm, other).to_dict()
            moved |= {f"model.{k}" for k in set(a) | set(b) if a.get(k) != b.get(k)}  # as a record holds it
    assert moved == set(zoom.ZoomSetup.BUDGET_DERIVED)
