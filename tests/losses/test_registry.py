"""The loss registry: what pixelweight-train offers, and how a chapter adds a loss."""

import functools
import math

import pytest
import torch
from torch import nn

from pixelweight.losses import (
    BCEWeightedFMeasureLoss,
    CrossEntropyLoss,
    FocalLoss,
    HybridLoss,
    LossContext,
    LossMaxPooling,
    LossOption,
    RecallLoss,
    SoftDiceLoss,
    SoftFMeasureLoss,
    StructureLoss,
    WeightedFMeasureLoss,
    build_loss,
    class_weights,
    focal_loss,
    hybrid_loss,
    loss_max_pooling,
    loss_names,
    loss_spec,
    parse_loss_options,
    recall_counts,
    recall_weights,
    register_loss,
    soft_fmeasure_loss,
    structure_loss,
    weighted_fmeasure_loss,
    bce_weighted_fmeasure_loss,
)
from pixelweight.losses import registry

COUNTS = torch.tensor([50.0, 30.0, 20.0])
CTX = LossContext(num_classes=3, ignore_index=255, class_counts=lambda: COUNTS)


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 5, 6, generator=g)
    target = torch.randint(0, 3, (2, 5, 6), generator=g)
    target[0, 0] = 255
    return logits, target


def test_every_library_loss_is_registered_with_its_options():
    assert loss_names()[:7] == ("ce", "inverse-ce", "median-ce", "focal", "dice", "recall", "lmp")
    options = {name: [o.name for o in loss_spec(name).options] for name in loss_names()[:7]}
    assert options == {
        "ce": [], "inverse-ce": [], "median-ce": [], "focal": ["gamma"], "dice": ["smooth", "per_image"],
        "recall": ["momentum", "gamma", "init", "detach_focal", "sync_counts"], "lmp": ["p", "ratio", "per_image", "base", "gamma"],
    }
    assert all(loss_spec(n).help for n in loss_names())


def test_defaults_build_the_library_losses_with_their_defaults():
    logits, target = _batch()
    expected = {
        "ce": CrossEntropyLoss(ignore_index=255),
        "inverse-ce": CrossEntropyLoss(class_weights(counts=COUNTS, method="inverse"), ignore_index=255),
        "median-ce": CrossEntropyLoss(class_weights(counts=COUNTS, method="median"), ignore_index=255),
        "focal": FocalLoss(ignore_index=255),
        "dice": SoftDiceLoss(ignore_index=255),
        "recall": RecallLoss(3, ignore_index=255),
        "lmp": LossMaxPooling(ignore_index=255),
    }
    for name, reference in expected.items():
        built = build_loss(name, CTX)
        assert type(built) is type(reference), name
        torch.testing.assert_close(built(logits, target), reference(logits, target), rtol=0, atol=0, msg=name)


def test_options_reach_the_loss():
    logits, target = _batch(1)
    lmp = build_loss("lmp", CTX, p=1.3, ratio=0.5, per_image=True, base="focal", gamma=1.0)
    ref = loss_max_pooling(logits, target, 1.3, 0.5, True, 255, pixel_loss=functools.partial(focal_loss, gamma=1.0))
    torch.testing.assert_close(lmp(logits, target), ref, rtol=0, atol=0)
    rec = build_loss("recall", CTX, momentum=0.5, gamma=1)
    assert (rec.momentum, rec.gamma, rec.num_classes) == (0.5, 1.0, 3)
    # the defaults are the official behaviour; every other one is an option
    assert (rec.init, rec.detach_focal, rec.sync_counts) == ("first_batch", True, True)
    rec = build_loss("recall", CTX, **parse_loss_options(
        "recall", ["momentum=0.5", "init=ones", "detach_focal=false", "sync_counts=false"]))
    assert (rec.init, rec.detach_focal, rec.sync_counts) == ("ones", False, False)
    rec(logits, target)  # init=ones: the first batch is an update of w = 1
    w = torch.where(recall_counts(logits, target, 255)[1] > 0,
                    0.5 * recall_weights(logits, target, 255, absent=1.0) + 0.5, torch.ones(3))
    torch.testing.assert_close(rec.weights, w)
    assert build_loss("dice", CTX, smooth=0, per_image=False).smooth == 0.0
    assert build_loss("recall", LossContext(1)).num_classes == 2  # binary logits: two classes


def test_parse_loss_options_from_text():
    assert parse_loss_options("lmp", ["p=inf", "base=focal", "per_image=yes", "ratio=0.25"]) == {
        "p": math.inf, "base": "focal", "per_image": True, "ratio": 0.25}
    assert parse_loss_options("recall", ["momentum=none"]) == {"momentum": None}
    assert parse_loss_options("ce", []) == {}


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: build_loss("nope", CTX), ValueError, "unknown loss 'nope'; registered: ce, inverse-ce"),
        (lambda: build_loss("focal", CTX, alpha=0.5), ValueError, "loss 'focal' has no option 'alpha'"),
        (lambda: build_loss("focal", CTX, gamma="2"), TypeError, "option 'gamma' must be a float, got str"),
        (lambda: build_loss("focal", CTX, gamma=math.inf), ValueError, "gamma must be finite"),
        (lambda: build_loss("dice", CTX, per_image=1), TypeError, "option 'per_image' must be a bool"),
        (lambda: build_loss("lmp", CTX, base="dice"), ValueError, r"must be one of \('ce', 'focal'\)"),
        (lambda: build_loss("recall", CTX, init="zero"), ValueError, r"must be one of \('first_batch', 'ones'\)"),
        (lambda: parse_loss_options("recall", ["sync_counts=maybe"]), ValueError, "must be true or false"),
        (lambda: build_loss("lmp", CTX, gamma=1.0), ValueError, "applies to base=focal only"),
        (lambda: build_loss("inverse-ce", LossContext(3)), ValueError, "needs the training split's class counts"),
        (lambda: build_loss("ce", {"num_classes": 3}), TypeError, "LossContext"),
        (lambda: parse_loss_options("focal", ["gamma"]), ValueError, "NAME=VALUE"),
        (lambda: parse_loss_options("focal", ["gamma=x"]), ValueError, "option 'gamma' must be a float, got 'x'"),
        (lambda: parse_loss_options("focal", ["gamma=1", "gamma=2"]), ValueError, "given twice"),
        (lambda: parse_loss_options("focal", ["gamma=none"]), ValueError, "must be a float"),
        (lambda: LossContext(0), ValueError, "num_classes"),
        (lambda: LossContext(3, ignore_index=2**70), ValueError, "int64"),
        (lambda: register_loss("ce", lambda ctx: nn.Identity()), ValueError, "already registered"),
        (lambda: register_loss("Bad Name", lambda ctx: nn.Identity()), ValueError, "lower-case"),
        (lambda: LossOption("x", float, None, "h"), ValueError, "optional=True"),
        (lambda: LossOption("x", list, [], "h"), ValueError, "type must be one of"),
    ],
)
def test_registry_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_a_chapter_registers_a_loss_once(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # leave the real table alone

    class Scaled(nn.Module):
        def __init__(self, factor, ignore_index):
            super().__init__()
            self.factor, self.inner = factor, CrossEntropyLoss(ignore_index=ignore_index)

        def forward(self, logits, target):
            return self.factor * self.inner(logits, target)

    register_loss("scaled-ce", lambda ctx, factor: Scaled(factor, ctx.ignore_index),
                  options=[LossOption("factor", float, 2.0, "scale")], help="CE times a factor")
    assert "scaled-ce" in loss_names()
    logits, target = _batch()
    loss = build_loss("scaled-ce", CTX, **parse_loss_options("scaled-ce", ["factor=3"]))
    torch.testing.assert_close(loss(logits, target), 3 * CrossEntropyLoss(ignore_index=255)(logits, target))
    register_loss("scaled-ce", lambda ctx, factor: nn.Identity(), options=[LossOption("factor", float, 1.0, "")],
                  replace=True)
    with pytest.raises(TypeError, match="not an nn.Module"):
        register_loss("bad", lambda ctx: 3)
        build_loss("bad", CTX)


BINARY_CTX = LossContext(num_classes=1, ignore_index=255)
FOREGROUND_LOSSES = {  # name: (options, the functional they must give)
    "wfm": ({"beta2": 0.3, "smoothing": 0.05},
            lambda x, t: weighted_fmeasure_loss(x, t, beta2=0.3, smoothing=0.05, ignore_index=255)),
    "floss": ({"beta2": 1.0}, lambda x, t: soft_fmeasure_loss(x, t, beta2=1.0, ignore_index=255)),
    "structure": ({"form": "intended"}, lambda x, t: structure_loss(x, t, form="intended", ignore_index=255)),
    "hybrid": ({}, lambda x, t: hybrid_loss(x, t, ignore_index=255)),
    "bce-wfm": ({"bce_weight": 0.5, "smoothing": 0.05},
                lambda x, t: bce_weighted_fmeasure_loss(x, t, bce_weight=0.5, smoothing=0.05, ignore_index=255)),
}


def test_the_foreground_losses_are_registered_for_binary_logits():
    assert loss_names()[7:12] == ("wfm", "floss", "structure", "hybrid", "bce-wfm")
    assert {n: [(o.name, o.default) for o in loss_spec(n).options] for n in FOREGROUND_LOSSES} == {
        "wfm": [("beta2", 1.0), ("smoothing", 0.0)], "floss": [("beta2", 0.3)],
        "structure": [("form", "published")], "hybrid": [],
        "bce-wfm": [("bce_weight", 1.0), ("beta2", 1.0), ("smoothing", 0.0)]}
    assert loss_spec("structure").option("form").choices == ("published", "intended")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 9, 10, generator=g)
    target = torch.randint(0, 2, (2, 9, 10), generator=g)
    target[:, :2] = 255
    defaults = {"wfm": WeightedFMeasureLoss(ignore_index=255), "floss": SoftFMeasureLoss(ignore_index=255),
                "structure": StructureLoss(ignore_index=255), "hybrid": HybridLoss(ignore_index=255),
                "bce-wfm": BCEWeightedFMeasureLoss(ignore_index=255)}
    for name, (options, functional) in FOREGROUND_LOSSES.items():
        built = build_loss(name, BINARY_CTX)
        assert type(built) is type(defaults[name]) and built.ignore_index == 255
        torch.testing.assert_close(built(logits, target), defaults[name](logits, target), rtol=0, atol=0)
        text = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items()]
        built = build_loss(name, BINARY_CTX, **parse_loss_options(name, text))
        torch.testing.assert_close(built(logits, target), functional(logits, target), rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("name", sorted(FOREGROUND_LOSSES))
def test_the_foreground_losses_refuse_multiclass_logits(name):
    with pytest.raises(ValueError, match=rf"loss '{name}' takes binary logits .*num_classes=3"):
        build_loss(name, CTX)


def test_foreground_loss_options_are_checked():
    with pytest.raises(ValueError, match=r"must be one of \('published', 'intended'\)"):
        build_loss("structure", BINARY_CTX, form="weighted")
    with pytest.raises(ValueError, match="smoothing"):
        build_loss("wfm", BINARY_CTX, smoothing=-1.0)
    with pytest.raises(ValueError, match="beta2"):
        build_loss("floss", BINARY_CTX, beta2=math.inf)
