"""The spectral chapter module: its stages (budgets, data, models, the probe hook), its
analyses (cut-offs, the predicted knee, the oracle of coarse grids, decoder FLOPs, learning
steps) and its claims (how each is judged, each verdict reachable)."""

import math
import types

import numpy as np
import pytest
import torch

from pixelweight.chapters import get_chapter, spectral
from pixelweight.claims import ClaimsTable
from pixelweight.data import DigitScenes, WeakDigitScenes
from pixelweight.losses import SoftCrossEntropyLoss
from pixelweight.models import UpsampledUNet
from pixelweight.profiles import get_profile
from pixelweight.spectral import (band_energy, eval_logits, label_energy, residual_energy, through_stride,
                                  truncated_cross_entropy)
from pixelweight.train import TrainConfig, train


# ----------------------------------------------------------------------------------
# stages and scales
# ----------------------------------------------------------------------------------
def test_chapter_is_registered_with_its_stages():
    assert get_chapter("05_spectral") is spectral
    assert set(spectral.STAGES) == {"stride", "truncation", "blocks"}
    assert spectral.CHAPTER.code_paths == ("src/pixelweight/spectral",)
    with pytest.raises(ValueError, match="belongs to chapter '05_spectral'"):
        spectral.setup("stride", "ci", chapter="02_recall")


@pytest.mark.parametrize("stage", ["stride", "truncation", "blocks"])
def test_full_scale_is_the_ci_experiment_trained_to_a_plateau(stage):
    full, ci = spectral.STAGES[stage].scale("full"), spectral.STAGES[stage].scale("ci")
    assert len(ci.profile.seeds) >= 3 and len(full.profile.seeds) >= 5
    assert full.profile.steps >= 10 * ci.profile.steps
    assert full.data == ci.data and full.model == ci.model
    assert full.train["plateau_metric"] == "miou" and full.profile.eval_every > 0
    assert full.profile.steps * full.train["plateau_window"] // full.profile.eval_every >= 3


def test_stride_arms_train_upsampled_unets_of_every_stride_with_cross_entropy():
    stage = spectral.STAGES["stride"]
    assert [a.label for a in stage.arms] == [f"s = {s}" for s in spectral.STRIDES]
    assert all(a.loss == "ce" for a in stage.arms)
    s = spectral.setup("stride", "ci")
    for arm, stride in zip(stage.arms, spectral.STRIDES):
        model = s.build_model(arm)
        assert isinstance(model, UpsampledUNet) and model.logit_stride == stride
        assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 11, 32, 32)
    assert s.run_names() == [f"ch5-stride-s{x}" for x in spectral.STRIDES]
    assert stage.on_log is not None


def test_truncation_arms_differ_in_the_decoder_factor_only():
    stage = spectral.STAGES["truncation"]
    models = [a.model for a in stage.arms]
    assert [m.options["truncation"] for m in models] == list(spectral.TRUNCATIONS)
    assert len({(m.width, m.depth) for m in models}) == 1


def test_blocks_stage_trains_soft_cross_entropy_on_every_block_variant():
    stage = spectral.STAGES["blocks"]
    assert [a.loss for a in stage.arms] == ["soft-ce"]
    assert set(stage.variants) == {"dense"} | {spectral.blocks_variant(b, a) for b in spectral.BLOCKS
                                               for a in ("majority", "soft")}
    s = spectral.setup("blocks", "ci").variant("b8_soft")
    assert isinstance(s.build_loss(s.arms[0]), SoftCrossEntropyLoss)
    train_set, test_set = s.splits.train, s.splits.test
    assert isinstance(train_set, WeakDigitScenes) and train_set.weak and not test_set.weak
    assert train_set[0][1].shape == (11, 32, 32) and test_set[0][1].shape == (32, 32)
    assert s.run_names() == ["ch5-blocks-b8_soft-ce"]
    with pytest.raises(ValueError, match="block must be one of"):
        spectral.blocks_variant(3, "soft")


def test_dense_variant_sees_the_images_of_the_stride_stage():
    dense = spectral.setup("blocks", "ci").variant("dense").splits.test
    plain = spectral.setup("stride", "ci").splits.test
    assert isinstance(plain, DigitScenes) and (dense.images == plain.images).all()


# ----------------------------------------------------------------------------------
# analyses
# ----------------------------------------------------------------------------------
def test_band_edges_cover_every_non_dc_frequency():
    assert spectral.band_edges(32) == (1, 4, 8, 16, 24)  # K_max = round(16 sqrt 2) = 23
    assert spectral.band_edges(64)[-1] == 47
    with pytest.raises(ValueError, match="size"):
        spectral.band_edges(16)


def stripes(period: int, size: int = 32) -> torch.Tensor:
    x = torch.arange(size)
    return ((x // (period // 2)) % 2).repeat(size, 1)[None]


def test_cutoff_of_a_stripe_pattern_is_its_frequency():
    # stripes of period 8 on 32 pixels: a square wave of 4 cycles per image and its odd harmonics
    profile = spectral.label_profile(stripes(8), num_classes=2)
    assert spectral.cutoff(profile, 0.5) == 4
    assert spectral.cutoff(profile, 0.99) > 4
    with pytest.raises(ValueError, match="undefined"):
        spectral.cutoff(spectral.label_profile(torch.zeros(1, 8, 8, dtype=torch.long), 2))


@pytest.mark.parametrize("k, expected", [(0, 16), (1, 16), (2, 8), (3, 4), (4, 4), (5, 2), (8, 2), (9, 1),
                                         (16, 1), (17, None)])
def test_predicted_knee_is_the_coarsest_grid_whose_nyquist_reaches_the_cutoff(k, expected):
    assert spectral.predicted_knee(32, k, spectral.STRIDES) == expected


def test_label_functions_refuse_float_labels():
    for f in (spectral.label_profile, spectral.oracle_frame):
        with pytest.raises(ValueError, match="integer class indices"):
            f(torch.full((1, 8, 8), 0.7))
    with pytest.raises(ValueError, match="block must be one of"):
        spectral.blocks_variant(2.0, "soft")
    with pytest.raises(TypeError, match="Setup"):
        spectral.train_cutoff("stride")


def test_predicted_knee_validates():
    with pytest.raises(ValueError, match="factors"):
        spectral.predicted_knee(32, 2, [])
    with pytest.raises(ValueError, match="k must"):
        spectral.predicted_knee(32, -1, [1])


def test_oracle_frame_is_perfect_at_factor_one_and_matches_through_stride():
    labels = torch.as_tensor(DigitScenes(split="test", num_samples=8, size=32, cache_dir=False).labels).long()
    frame = spectral.oracle_frame(labels, (1, 4))
    assert frame.oracle_miou.iloc[0] == 1.0 and list(frame.nyquist) == [16.0, 4.0]
    coarse = through_stride(labels, 4, 11)
    present = [c for c in range(11) if (labels == c).any() or (coarse == c).any()]
    ious = [((coarse == c) & (labels == c)).sum().item() / ((coarse == c) | (labels == c)).sum().item()
            for c in present]
    assert frame.oracle_miou.iloc[1] == pytest.approx(np.mean(ious))


def test_decoder_flops_fall_by_t_squared_and_the_encoder_is_untouched():
    flops = {t: spectral.decoder_flops(a.model) for t, a in zip(spectral.TRUNCATIONS, spectral.STAGES["truncation"].arms)}
    assert flops[1]["decoder"] == 4 * flops[2]["decoder"] == 16 * flops[4]["decoder"]
    encoder = {t: f["total"] - f["decoder"] for t, f in flops.items()}
    assert len(set(encoder.values())) == 1
    with pytest.raises(TypeError, match="ModelSpec"):
        spectral.decoder_flops("UNet")


def test_probe_measures_without_changing_the_run():
    probe = spectral.SpectralProbe(num_images=8)
    data = DigitScenes(split="train", num_samples=32, size=32, num_digits=(1, 3), digit_size=(12, 24),
                       cache_dir=False)
    config = TrainConfig(steps=6, batch_size=8, lr=1e-3, seed=0, device="cpu", log_every=3)

    def run(hook):
        torch.manual_seed(0)
        return train(UpsampledUNet(width=4, depth=4, output_stride=2), torch.nn.CrossEntropyLoss(), data, config,
                     on_log=hook)

    with_probe, without = run(probe), run(None)
    assert [e["loss"] for e in with_probe.history] == [e["loss"] for e in without.history]
    for a, b in zip(with_probe.model.state_dict().values(), without.model.state_dict().values()):
        assert torch.equal(a, b)  # batch norm's running statistics included
    entry = with_probe.history[-1]
    images, labels, k, edges = probe.batch()
    assert images.shape == (8, 1, 32, 32) and k == spectral.cutoff(spectral.label_profile(labels), spectral.ALPHA)
    logits = eval_logits(with_probe.model, images)
    expected = band_energy(residual_energy(logits, labels), edges)
    assert entry["residual_energy"] == pytest.approx(expected.tolist(), rel=1e-5)
    ce = float(torch.nn.functional.cross_entropy(logits, labels))
    ce_k = float(truncated_cross_entropy(logits, labels, k))
    assert entry["ce"] == pytest.approx(ce, rel=1e-5) and entry["ce_cutoff"] == k
    assert entry["ce_relative_error"] == pytest.approx(abs(ce_k - ce) / ce, abs=1e-5)
    for kw in (dict(num_images=0), dict(alpha=1.5), dict(data="DigitScenes")):
        with pytest.raises((ValueError, TypeError)):
            spectral.SpectralProbe(**kw)


# ----------------------------------------------------------------------------------
# claims on fake runs
# ----------------------------------------------------------------------------------
def fake_run(seed, miou, *, errors=0.05, learned=(20, 40, 60, 80), steps=100):
    """A run whose residual energy in band i halves at step ``learned[i]`` (None: never)."""
    history = []
    for step in range(10, steps + 1, 10):
        energy = [1.0 if (at is None or step < at) else 0.4 for at in learned]
        history.append({"step": step, "residual_energy": energy, "ce": 0.3, "ce_relative_error": errors,
                        "ce_cutoff": 6})
    return types.SimpleNamespace(seed=seed, metrics={"test_miou": miou}, history=history)


def stride_runs(drops, errors=0.05, learned=(20, 40, 60, 80)):
    """Runs of every stride; stride s loses ``drops[s]`` mIoU (plus a per-seed wobble)."""
    return {f"s = {s}": [fake_run(seed, 0.6 - drops.get(s, 0.0) + 0.002 * seed * (s > 1), errors=errors,
                                  learned=learned) for seed in range(3)] for s in spectral.STRIDES}


@pytest.fixture(scope="module")
def stride_setup():
    return spectral.setup("stride", "ci")


def verdicts(table: ClaimsTable):
    return {c.label: c.verdict for c in table.claims}


def test_stride_claims_texts_sources_and_primary(stride_setup):
    table = spectral.stride_claims(stride_setup, stride_runs({2: 0.1, 4: 0.2, 8: 0.3, 16: 0.4}))
    assert [c.label for c in table.claims] == ["(b)", "(e)"]
    assert [c.source for c in table.claims] == ["abstract", "ours"]
    assert [c.primary for c in table.claims] == [True, False]
    assert table.chapter == "05_spectral" and "`ci`" in table.budget and table.section == "claims-output-stride"
    (a,) = spectral.analysis_claims(stride_setup, stride_runs({})).claims
    assert (a.label, a.source, a.primary) == ("(a)", "abstract", True)


def test_claim_a_compares_the_relative_error_with_its_bound(stride_setup):
    def verdict(errors):
        return verdicts(spectral.analysis_claims(stride_setup, stride_runs({}, errors=errors)))["(a)"]

    assert verdict(0.02) == "supported" and verdict(0.4) == "contradicted"
    assert verdict(math.nan) == "not testable at this scale"
    runs = stride_runs({})
    runs["s = 1"][1].history[-1]["ce_relative_error"] = 0.3  # the last logged value counts
    assert verdicts(spectral.analysis_claims(stride_setup, runs))["(a)"] == "inconclusive"
    assert "K_0.8 = 6" in spectral.analysis_claims(stride_setup, stride_runs({})).claims[0].ran  # the logged K
    with pytest.raises(KeyError, match="s = 1"):
        spectral.analysis_claims(stride_setup, {})
    runs["s = 1"][0].history[-1]["ce_cutoff"] = 7
    with pytest.raises(ValueError, match="different frequencies"):
        spectral.analysis_claims(stride_setup, runs)
    with pytest.raises(ValueError, match="two seeds"):
        spectral.analysis_claims(stride_setup, {"s = 1": runs["s = 1"][:1]})


def test_reference_errors_show_the_measure_grows_with_confidence():
    labels = torch.as_tensor(DigitScenes(split="test", num_samples=8, size=32, cache_dir=False).labels).long()
    frame = spectral.reference_errors(labels, 6)
    assert frame.relative_error.iloc[0] == pytest.approx(0, abs=1e-12)  # constant logits: DC only
    sharp = frame.relative_error.iloc[1:].to_numpy()
    assert (np.diff(sharp) > 0).all()
    with pytest.raises(ValueError, match="integer"):
        spectral.reference_errors(labels.float(), 6)


def test_analysis_checks_hold_on_a_network(stride_setup):
    torch.manual_seed(0)
    model = UpsampledUNet(width=4, depth=4, output_stride=2)
    test = DigitScenes(split="test", num_samples=4, size=32, cache_dir=False)
    checks = spectral.ce_spectrum_checks(model, test)
    assert len(checks) == 2 and all(c.passed for c in checks)
    curve = spectral.ce_spectrum(model, test)
    assert curve.share.iloc[-1] == pytest.approx(1.0) and curve.relative_error.iloc[-1] < 1e-12
    assert list(curve.K) == list(range(len(curve)))
    table = spectral.analysis_claims(stride_setup, stride_runs({}), checks=checks)
    assert table.checks == tuple(checks)


def test_claim_b_follows_the_knee_the_spectrum_predicts(stride_setup):
    k = spectral.train_cutoff(stride_setup)
    knee = spectral.predicted_knee(32, k, spectral.STRIDES)
    assert 1 < knee < 16  # ALPHA puts the labels' cut-off between the grids: both halves are tested
    past = {s: 0.1 for s in spectral.STRIDES if s > knee}
    table = spectral.stride_claims(stride_setup, stride_runs(past))
    assert verdicts(table)["(b)"] == "supported"
    parts = [e.what for e in table.claims[0].evidence]
    assert parts == [f"Δ mIoU, s = {s}" for s in spectral.STRIDES if 1 < s <= 2 * knee]
    flat = verdicts(spectral.stride_claims(stride_setup, stride_runs({})))["(b)"]
    assert flat == "contradicted"  # no loss past the knee
    early = {**past, knee: 0.1}  # a loss before the knee contradicts too
    assert verdicts(spectral.stride_claims(stride_setup, stride_runs(early)))["(b)"] == "contradicted"


@pytest.mark.parametrize("knee", [None, 1, 16])
def test_a_knee_at_the_edge_of_the_range_is_not_testable(knee):
    runs = stride_runs({})
    labels = {s: f"s = {s}" for s in spectral.STRIDES}
    (evidence,) = spectral._knee_evidence(runs, labels, "s = 1", knee, "s")
    assert evidence.verdict() == "not testable at this scale"


def test_claim_e_compares_the_learning_steps_of_the_lowest_and_highest_band(stride_setup):
    drops = {2: 0.1, 4: 0.2, 8: 0.3, 16: 0.4}
    assert verdicts(spectral.stride_claims(stride_setup, stride_runs(drops)))["(e)"] == "supported"

    def wobbly(learned_by_seed):
        runs = stride_runs(drops)
        runs["s = 1"] = [fake_run(seed, 0.6, learned=learned) for seed, learned in enumerate(learned_by_seed)]
        return verdicts(spectral.stride_claims(stride_setup, runs))["(e)"]

    assert wobbly([(80, 60, 40, 20), (90, 60, 40, 30), (70, 60, 40, 15)]) == "contradicted"
    # a band never learned counts as learned one log interval after the run
    assert wobbly([(20, 40, 60, None), (30, 40, 60, None), (15, 40, 60, 90)]) == "supported"


def test_learning_step_frame_and_band_curves():
    runs = [fake_run(0, 0.5, learned=(20, 40, None, 80))]
    frame = spectral.learning_step_frame(runs)
    assert list(frame.step) == [20, 40, 110, 80] and list(frame.band)[0] == "[1, 4)"
    curves = spectral.band_curves(runs)
    assert set(curves.relative_energy) == {1.0, 0.4}
    with pytest.raises(KeyError, match="residual_energy"):
        spectral.band_curves([types.SimpleNamespace(seed=0, history=[{"step": 1}])])


def test_truncation_claim_is_non_inferiority_with_the_flops_stated():
    s = spectral.setup("truncation", "ci")

    def runs(loss):
        return {f"t = {t}": [types.SimpleNamespace(seed=seed, metrics={"test_miou": 0.6 - loss * (t > 1) + 0.001 * seed * t})
                             for seed in range(3)] for t in spectral.TRUNCATIONS}

    table = spectral.truncation_claims(s, runs(0.0))
    (claim,) = table.claims
    assert claim.label == "(c)" and claim.primary and claim.verdict == "supported"
    assert "4.0x fewer decoder multiply-adds" in claim.detail and "16.0x" in claim.detail
    assert spectral.truncation_claims(s, runs(0.1)).claims[0].verdict == "contradicted"


def blocks_runs(loss_majority, loss_soft):
    """Runs keyed (variant, "CE"); block side b loses ``loss_*(b)`` mIoU."""
    out = {("dense", "CE"): [types.SimpleNamespace(seed=i, metrics={"test_miou": 0.6}) for i in range(3)]}
    for b in spectral.BLOCKS:
        for annotation, loss in (("majority", loss_majority), ("soft", loss_soft)):
            out[spectral.blocks_variant(b, annotation), "CE"] = [
                types.SimpleNamespace(seed=i, metrics={"test_miou": 0.6 - loss(b) + 0.002 * i}) for i in range(3)]
    return out


def test_blocks_claims_follow_the_knee_and_compare_soft_with_majority():
    s = spectral.setup("blocks", "ci")
    knee = spectral.predicted_knee(32, spectral.train_cutoff(s), (1,) + spectral.BLOCKS)
    past = lambda b: 0.1 * (b > knee)  # noqa: E731
    table = spectral.blocks_claims(s, blocks_runs(past, lambda b: 0.5 * past(b)))
    assert verdicts(table) == {"(d)": "supported", "(d′)": "supported"}
    assert "oracle mIoU of majority block labels" in table.claims[0].detail
    table = spectral.blocks_claims(s, blocks_runs(lambda b: 0.0, lambda b: 0.0))
    assert verdicts(table)["(d)"] == "contradicted"
    with pytest.raises(KeyError, match="no runs"):
        spectral.blocks_claims(s, {("dense", "CE"): []})


def test_claims_need_their_own_stage(stride_setup):
    with pytest.raises(ValueError, match="judged on stage 'truncation'"):
        spectral.truncation_claims(stride_setup, {})


def test_plot_against_nyquist_draws_live_and_committed_runs():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = stride_runs({2: 0.1, 4: 0.2, 8: 0.3, 16: 0.4})
    labels = torch.as_tensor(DigitScenes(split="test", num_samples=4, size=32, cache_dir=False).labels).long()
    oracle = spectral.oracle_frame(labels)
    fig, ax = plt.subplots()
    spectral.plot_against_nyquist(ax, {"a": ({s: runs[f"s = {s}"] for s in spectral.STRIDES}, "o")}, 32, 6, oracle)
    lines = ax.get_lines()
    assert [round(y, 3) for y in lines[0].get_ydata()] == [0.6, 0.502, 0.402, 0.302, 0.202]  # strides 1..16
    assert ax.get_xscale() == "log" and "N/(2s)" in ax.get_xlabel()
    plt.close(fig)
    blocks = blocks_runs(lambda b: 0.1 * (b > 2), lambda b: 0.0)
    by_side = spectral.runs_by_block(blocks, "majority")
    assert list(by_side) == [1, 2, 4, 8, 16] and by_side[1] is blocks["dense", "CE"]
    with pytest.raises(KeyError, match="no runs"):
        spectral.runs_by_block({}, "soft")
    with pytest.raises(ValueError, match="series"):
        spectral.plot_against_nyquist(None, {}, 32, 6)
