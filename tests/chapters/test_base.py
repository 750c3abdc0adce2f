"""The chapters' shared specs and drivers (pixelweight.chapters._base)."""

import json

import pytest
import torch

from pixelweight.chapters import (
    CHAPTERS,
    DATA_SEEDS,
    Arm,
    Chapter,
    DataSpec,
    ModelSpec,
    Scale,
    Setup,
    Stage,
    get_chapter,
)
from pixelweight.data import DigitScenes
from pixelweight.losses import CrossEntropyLoss, RecallLoss
from pixelweight.profiles import get_profile

TINY = get_profile("ci", seeds=(0, 1), steps=3, batch_size=4, train_samples=8, val_samples=4,
                   test_samples=4, eval_every=0)
DATA = DataSpec("DigitScenes", size=32, options={"imbalance": 1.0, "num_digits": (1, 2),
                                                 "digit_size": (10, 16), "cache_dir": False})


def tiny_stage(**kw):
    scales = {"ci": Scale(TINY, DATA, ModelSpec(width=4, depth=1), train={"log_every": 1}),
              "full": Scale(get_profile("full"), DataSpec(), ModelSpec(width=32))}
    arms = (Arm("CE", "ce"), Arm("recall (moving average)", "recall", {"momentum": 0.5}, run="recall-ma"))
    return Stage("tiny", "a tiny stage for the tests", scales=scales, arms=arms, prefix="t", **kw)


def test_data_spec_builds_the_splits_with_the_fixed_data_seeds():
    splits = DATA.splits(TINY)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8, 4, 4)
    assert splits.train.config["seed"] == DATA_SEEDS["train"] and splits.test.config["seed"] == DATA_SEEDS["test"]
    same = DigitScenes(split="train", num_samples=8, size=32, imbalance=1.0, num_digits=(1, 2),
                       digit_size=(10, 16), seed=1000, cache_dir=False)
    assert torch.equal(splits.train[3][1], same[3][1])
    assert DATA.replace(imbalance=2.0).options["imbalance"] == 2.0 and DATA.options["imbalance"] == 1.0
    json.dumps(DATA.to_dict())  # a record can store it


@pytest.mark.parametrize("kw, error, match", [
    (dict(dataset="Nope"), ValueError, "class of pixelweight.data"),
    (dict(size=0), ValueError, "size"),
    (dict(options={"seed": 3}), ValueError, "set by the spec"),
    (dict(options=[1]), TypeError, "mapping"),
])
def test_data_spec_validation(kw, error, match):
    with pytest.raises(error, match=match):
        DataSpec(**kw)


def test_data_spec_split_and_profile_validation():
    with pytest.raises(ValueError, match="split"):
        DATA.build("holdout", 2)
    with pytest.raises(TypeError, match="Profile"):
        DATA.splits("ci")


def test_model_spec_builds_seeded_models():
    spec = ModelSpec(width=4, depth=1)
    torch.manual_seed(0)
    a = spec.build(11)
    torch.manual_seed(0)
    b = spec.build(11)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert a(torch.zeros(1, 1, 16, 16)).shape == (1, 11, 16, 16)
    assert spec.describe() == "width-4 U-Net"
    for kw in (dict(name="ResNet"), dict(width=0), dict(depth=-1)):
        with pytest.raises(ValueError):
            ModelSpec(**kw)


def test_arm_checks_the_loss_and_its_options():
    arm = Arm("recall (moving average)", "recall", {"momentum": 0.5})
    assert arm.run == "recall"
    loss = arm.build_loss(11)
    assert isinstance(loss, RecallLoss) and loss.momentum == 0.5
    assert arm.to_dict() == {"label": "recall (moving average)", "name": "recall", "options": {"momentum": 0.5}}
    with pytest.raises(ValueError):
        Arm("x", "no-such-loss")
    with pytest.raises(ValueError):
        Arm("x", "recall", {"no_such_option": 1})
    with pytest.raises(ValueError, match="label"):
        Arm(" ", "ce")


def test_scale_and_stage_validation():
    with pytest.raises(ValueError, match="belong to the profile"):
        Scale(TINY, train={"steps": 4})
    with pytest.raises(ValueError, match="unknown TrainConfig"):
        Scale(TINY, train={"epochs": 4})
    with pytest.raises(ValueError, match="holds profile"):
        Stage("s", "d", scales={"full": Scale(TINY)})
    with pytest.raises(ValueError, match="twice"):
        Stage("s", "d", scales={"ci": Scale(TINY)}, arms=(Arm("CE", "ce"), Arm("CE", "focal")))
    with pytest.raises(ValueError, match="identifier"):
        Stage("a stage", "d", scales={"ci": Scale(TINY)})
    with pytest.raises(ValueError, match="no profile 'huge'"):
        tiny_stage().scale("huge")


@pytest.mark.parametrize("budgets, error, match", [
    ({"ce": {"lr": 1e-3}}, ValueError, "may set"),
    ({"ce": {}}, ValueError, "may set"),
    ({"ce": {"steps": 0}}, ValueError, "steps must be a positive int"),
    ({"ce": {"eval_every": -1}}, ValueError, "eval_every"),
    ({"ce": 5}, TypeError, "must be a mapping"),
    ([("ce", {"steps": 2})], TypeError, "must be a mapping"),
])
def test_an_arms_own_budget_is_checked(budgets, error, match):
    with pytest.raises(error, match=match):
        Scale(TINY, DATA, arm_budgets=budgets)


def test_an_arms_own_budget_keeps_the_warm_up_and_evaluation_consistent():
    with pytest.raises(ValueError, match="eval_every"):
        Scale(TINY, DATA, train={"eval_every": 2}, arm_budgets={"ce": {"steps": 2}})
    with pytest.raises(ValueError, match="not shorter than arm 'ce'"):
        Scale(TINY, DATA, train={"warmup_steps": 2}, arm_budgets={"ce": {"steps": 2}})
    assert Scale(TINY, DATA, train={"warmup_steps": 1}, arm_budgets={"ce": {"steps": 2}}).arm_budgets["ce"]["steps"] == 2


def test_an_arm_budget_names_an_arm_of_the_stage():
    with pytest.raises(ValueError, match="not the run names of its arms"):
        Stage("s", "d", scales={"ci": Scale(TINY, DATA, arm_budgets={"CE": {"steps": 2}})}, arms=(Arm("CE", "ce"),))
    with pytest.raises(TypeError, match="must be an Arm"):
        Scale(TINY, DATA).profile_of("ce")


def test_an_arm_with_its_own_steps_trains_records_and_is_named_with_them(tmp_path):
    """One arm trains 2 steps where the others train the profile's 3: its record says so, the
    budget text names it, its full config (what a converged record must hold) has its steps,
    and the other arms are untouched."""
    own = {"recall-ma": {"steps": 2, "eval_every": 1}}
    stage = Stage("tiny", "d", prefix="t", arms=tiny_stage().arms,
                  scales={"ci": Scale(TINY, DATA, ModelSpec(width=4, depth=1), arm_budgets=own),
                          "full": Scale(get_profile("full"), DATA, ModelSpec(width=4, depth=1),
                                        arm_budgets={"recall-ma": {"steps": 500}})})
    setup = Setup("09_tiny", stage, "ci", device="cpu", results_dir=str(tmp_path))
    ce, rma = setup.arm("CE"), setup.arm("recall (moving average)")
    assert setup.scale.profile_of(ce) is setup.profile and setup.scale.profile_of(None) is setup.profile
    assert setup.scale.profile_of(rma).steps == 2 and setup.scale.profile_of(rma).seeds == setup.profile.seeds
    assert setup.arm_budget_text() == "recall (moving average): 2 steps"
    assert setup.arm_budget_text([ce]) == ""  # a comparison without that arm does not name it
    assert setup.budget() == "`ci` (early training): 3 steps (recall (moving average): 2 steps), 2 seeds"
    assert Setup("09_tiny", tiny_stage(), "ci").budget() == "`ci` (early training): 3 steps, 2 seeds"
    runs = setup.run()
    steps = {label: max(h["step"] for h in rs[0].history) for label, rs in runs.items()}
    assert steps == {"CE": 3, "recall (moving average)": 2}
    record = json.loads((tmp_path / "t-recall-ma--seed0.json").read_text())
    assert record["config"]["profile"]["steps"] == 2 and record["config"]["profile"]["eval_every"] == 1
    assert json.loads((tmp_path / "t-ce--seed0.json").read_text())["config"]["profile"]["steps"] == 3
    full = Setup("09_tiny", stage, "full")
    assert full.full_config(rma)["profile"]["steps"] == 500
    assert full.full_config(ce)["profile"]["steps"] == get_profile("full").steps
    assert stage.scale("full").to_dict()["arm_budgets"] == {"recall-ma": {"steps": 500}}
    assert "arm_budgets" not in tiny_stage().scale("full").to_dict()


def test_chapter_setup_checks_the_name_the_build_passes():
    chapter = Chapter("09_tiny", "A tiny chapter", {"tiny": tiny_stage()})
    assert chapter.setup("tiny", "ci", chapter="09_tiny").chapter == "09_tiny"
    with pytest.raises(ValueError, match="belongs to chapter '09_tiny'"):
        chapter.setup("tiny", "ci", chapter="02_recall")
    with pytest.raises(ValueError, match="no stage"):
        chapter.setup("other", "ci")
    with pytest.raises(ValueError, match="folder"):
        Chapter("tiny", "A tiny chapter", {})


def test_setup_runs_every_arm_and_writes_self_describing_records(tmp_path):
    setup = Setup("09_tiny", tiny_stage(), "ci", device="cpu", results_dir=str(tmp_path))
    assert setup.describe() == "`ci` (early training): 3 steps, 2 seeds, 32x32 scenes, width-4 U-Net"
    runs = setup.run()
    assert list(runs) == ["CE", "recall (moving average)"] and all(len(r) == 2 for r in runs.values())
    record = json.loads((tmp_path / "t-recall-ma--seed1.json").read_text())
    config = record["config"]
    assert config["chapter"] == "09_tiny" and config["stage"] == "tiny"
    assert config["loss"] == {"label": "recall (moving average)", "name": "recall", "options": {"momentum": 0.5}}
    assert config["model"]["width"] == 4 and config["data_spec"]["size"] == 32
    assert config["train"]["log_every"] == 1 and config["profile"]["steps"] == 3
    # the same seed gives the same run (paired comparisons)
    again = Setup("09_tiny", tiny_stage(), "ci", device="cpu").run_arm(setup.arm("CE"))
    assert again[0].metrics["test_miou"] == runs["CE"][0].metrics["test_miou"]


def test_setup_run_equals_hand_built_run():
    """What the chapters did before the specs: seed, build the model, build the loss, train."""
    from pixelweight.chapters import run_seeds

    setup = Setup("09_tiny", tiny_stage(), "ci", device="cpu")
    by_hand = run_seeds("ce", lambda: ModelSpec(width=4, depth=1).build(11), CrossEntropyLoss, setup.splits,
                        TINY, setup.metrics, device="cpu", train_overrides={"log_every": 1})
    by_spec = setup.run_arm(setup.arm("CE"))
    for a, b in zip(by_hand, by_spec):
        metrics = [{k: v for k, v in r.metrics.items() if not k.endswith("time_s")} for r in (a, b)]
        assert json.dumps(metrics[0]) == json.dumps(metrics[1])  # NaN-aware equality
        assert json.dumps(a.history) == json.dumps(b.history)


def test_with_data_and_class_counts():
    setup = Setup("09_tiny", tiny_stage(), "ci", device="cpu")
    flat = setup.with_data(imbalance=0.0)
    assert flat.data.options["imbalance"] == 0.0 and setup.data.options["imbalance"] == 1.0
    counts = setup.class_counts()
    assert counts.shape == (11,) and int(counts.sum()) == 8 * 32 * 32
    assert setup.class_names[0] == "background" and setup.num_classes == 11
    with pytest.raises(KeyError, match="no arm"):
        setup.arm("Dice")
    with pytest.raises(ValueError, match="no arm to run"):
        Setup("09_tiny", Stage("empty", "d", scales={"ci": Scale(TINY, DATA)}), "ci").run()


def test_show_committed_renders_its_own_fallback(monkeypatch, tmp_path):
    shown = []
    monkeypatch.setattr("pixelweight.book.markdown", shown.append)
    monkeypatch.setenv("PIXELWEIGHT_RESULTS", str(tmp_path))
    setup = Setup("09_tiny", tiny_stage(), "ci")
    setup.show_committed()
    assert shown and "No `full`-profile record is committed" in shown[0] and "`ci`" in shown[0]


def test_every_chapter_module_declares_its_folder():
    for folder in CHAPTERS:
        try:
            module = get_chapter(folder)
        except ModuleNotFoundError:  # a chapter module not written yet
            continue
        assert module.CHAPTER.folder == folder and callable(module.setup)
        for stage in module.STAGES.values():
            assert {"ci", "full"} <= set(stage.scales), f"{folder}/{stage.name} needs ci and full scales"
    with pytest.raises(ValueError, match="no chapter module"):
        get_chapter("07_nope")


def test_variants_and_the_stage_hook():
    logged = []

    def hook(step, model, loss_fn):
        logged.append(step)
        return {"hooked": step}

    stage = Stage("v", "variants", scales={"ci": Scale(TINY, DATA, ModelSpec(width=4, depth=1))},
                  arms=(Arm("CE", "ce"),), prefix="t-v", variants={"s0": {"imbalance": 0.0}, "s2": {"imbalance": 2.0}},
                  on_log=hook)
    setup = Setup("09_tiny", stage, "ci", device="cpu")
    s2 = setup.variant("s2")
    assert s2.data.options["imbalance"] == 2.0 and s2.run_name(s2.arm("CE")) == "t-v-s2-ce"
    assert setup.run_names(variants=True) == ["t-v-s0-ce", "t-v-s2-ce"] and setup.run_names() == ["t-v-ce"]
    assert setup.variant("") is setup
    (result, _) = s2.run_arm(s2.arm("CE"))
    assert logged and result.history[0]["hooked"] == result.history[0]["step"]
    assert s2.record_config()["variant"] == "s2"
    with pytest.raises(ValueError, match="no variant 's9'"):
        setup.variant("s9")
    with pytest.raises(ValueError, match="variant name"):
        Stage("v", "d", scales={"ci": Scale(TINY)}, variants={"a b": {}})
    with pytest.raises(ValueError, match="seeds \\[7\\]"):
        s2.run_arm(s2.arm("CE"), seeds=[7])


def test_binary_stage_specs_task_wrapper_and_arm_models():
    from pixelweight.metrics import ForegroundMetrics, SegmentationMetrics
    from pixelweight.train import AuxiliaryTargetsTask

    with pytest.raises(TypeError, match="task must be a pixelweight.train.Task"):
        tiny_stage(task="segmentation")
    with pytest.raises(TypeError, match="dataset_wrapper must be callable"):
        tiny_stage(dataset_wrapper=3)
    with pytest.raises(ValueError, match="num_classes"):
        tiny_stage(num_classes=0)
    with pytest.raises(TypeError, match="model must be a ModelSpec"):
        Arm("CE", "ce", model="UNet")
    wrapped = []
    stage = tiny_stage(task=AuxiliaryTargetsTask(), dataset_wrapper=lambda d: wrapped.append(d) or d)
    s = Setup("02_recall", stage, "ci")
    assert isinstance(s.metrics(), SegmentationMetrics) and len(s.splits.train) == 8 and len(wrapped) == 3
    binary = Setup("02_recall", tiny_stage(num_classes=1), "ci")
    assert isinstance(binary.metrics(), ForegroundMetrics)
    small = Arm("CE small", "ce", run="ce-small", model=ModelSpec(width=2, depth=1))
    assert s.model_of(small).width == 2 and s.model_of(s.arms[0]) == s.model
    assert small.to_dict()["model"]["width"] == 2 and "model" not in s.arms[0].to_dict()  # old records unchanged
