import dataclasses

import pytest

from pixelweight.profiles import PROFILES, Profile, get_profile


def test_ci_and_full_exist_and_full_is_larger():
    ci, full = get_profile("ci"), get_profile("full")
    assert len(ci.seeds) >= 3 and len(full.seeds) >= 5
    assert full.steps > ci.steps and full.train_samples > ci.train_samples


def test_overrides_do_not_mutate_the_registry():
    p = get_profile("ci", steps=7, seeds=[5, 6])
    assert p.steps == 7 and p.seeds == (5, 6)
    assert PROFILES["ci"].steps != 7
    assert p.to_dict()["seeds"] == [5, 6]


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(seeds=()), "seeds"),
        (dict(seeds=(1, 1)), "distinct"),
        (dict(seeds=(-1,)), "seeds"),
        (dict(steps=0), "steps"),
        (dict(batch_size=2.0), "batch_size"),
        (dict(eval_every=-1), "eval_every"),
        (dict(lr=0), "lr"),
    ],
)
def test_profile_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        get_profile("ci", **kw)


def test_a_profile_is_the_shared_budget_only():
    # the image size and the model belong to a chapter's stage (pixelweight.chapters.Scale)
    fields = {f.name for f in dataclasses.fields(Profile)}
    assert fields == {"name", "seeds", "steps", "batch_size", "train_samples", "val_samples",
                      "test_samples", "eval_every", "lr"}
    with pytest.raises(ValueError, match="unknown profile fields"):
        get_profile("ci", width=8)


def test_unknown_profile_and_field():
    with pytest.raises(ValueError, match="unknown profile 'gpu'"):
        get_profile("gpu")
    with pytest.raises(ValueError, match="unknown profile fields"):
        get_profile("ci", epochs=3)
    with pytest.raises(ValueError, match="name"):
        Profile(name="", seeds=(0,), steps=1, batch_size=1, train_samples=1, val_samples=1, test_samples=1)


def test_budget_states_the_steps_seeds_and_what_they_mean():
    ci = get_profile("ci", steps=340)
    assert ci.budget() == "`ci` (early training): 340 steps, 3 seeds"
    one = get_profile("full", seeds=(0,))
    assert one.budget() == "`full` (converged budget): 4000 steps, 1 seed"
    custom = dataclasses.replace(ci, name="mine")
    assert custom.budget() == "`mine`: 340 steps, 3 seeds"


def test_benchmark_scales():
    from pixelweight.profiles import BENCHMARK_SCALES, BenchmarkScale, benchmark_scale

    assert set(BENCHMARK_SCALES) == {"ci", "full"}
    ci = benchmark_scale("ci")
    assert ci.shape == (4, 19, 256, 512) and ci.threads == (1, 2) and ci.ignore_rows == 8
    assert benchmark_scale("full").shape[0] * benchmark_scale("full").shape[2] > ci.shape[0] * ci.shape[2]
    with pytest.raises(ValueError, match="unknown profile"):
        benchmark_scale("huge")
    with pytest.raises(ValueError, match="C >= 2"):
        BenchmarkScale(shape=(1, 1, 4, 4), repeats=1)
    with pytest.raises(ValueError, match="threads"):
        BenchmarkScale(shape=(1, 2, 4, 4), repeats=1, threads=())
    with pytest.raises(ValueError, match="ignore_rows"):
        BenchmarkScale(shape=(1, 2, 4, 4), repeats=1, ignore_rows=4)
