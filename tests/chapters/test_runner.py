"""Running a chapter outside the book, verifying records, staleness (chapters._runner,
``python -m pixelweight.results``)."""

import json
import types

import pytest

from pixelweight.chapters import Arm, Chapter, DataSpec, ModelSpec, Scale, Setup, Stage, _runner
from pixelweight.profiles import get_profile
from pixelweight.results import load_record, main

TINY = get_profile("ci", seeds=(0, 1), steps=4, batch_size=4, train_samples=8, val_samples=4,
                   test_samples=4, eval_every=2)
DATA = DataSpec("DigitScenes", size=32, options={"imbalance": 1.0, "num_digits": (1, 2),
                                                 "digit_size": (10, 16), "cache_dir": False})


def fake_chapter():
    stage = Stage("tiny", "a tiny stage", prefix="t",
                  scales={"ci": Scale(TINY, DATA, ModelSpec(width=4, depth=1)),
                          "full": Scale(get_profile("full"), DATA, ModelSpec(width=4, depth=1))},
                  arms=(Arm("CE", "ce"), Arm("recall (moving average)", "recall", {"momentum": 0.5}, run="rma")),
                  variants={"s0": {"imbalance": 0.0}})
    chapter = Chapter("09_tiny", "A tiny chapter", {"tiny": stage})
    return types.SimpleNamespace(STAGES=chapter.stages, CHAPTER=chapter, setup=chapter.setup)


def test_the_recall_chapter_lists_every_run_of_the_book():
    jobs = _runner.chapter_jobs("02_recall", "ci")
    assert len(jobs) == 6 * 3 + 3 * 2 * 3
    names = {j.name for j in jobs}
    assert {"ch2-recall-ma", "ch2-sweep-s0-ce", "ch2-sweep-s2-recall"} <= names
    assert all(j.seed in (0, 1, 2) for j in jobs)
    with pytest.raises(ValueError, match="no stage"):
        _runner.chapter_jobs("02_recall", "ci", stages=["nope"])


def test_run_list_on_the_command_line(capsys):
    assert main(["run", "04_lmp", "--profile", "ci", "--stage", "headline", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"headline/ch4-headline-{arm} seed {s}" for arm in ("ce", "lmp") for s in (0, 1, 2)]


def test_run_chapter_writes_resumable_records_and_refuses_a_dirty_tree(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("pixelweight.chapters.get_chapter", lambda folder: fake_chapter())
    monkeypatch.setattr("pixelweight.results.git_commit", lambda *a: {"commit": "abc", "dirty": True})
    with pytest.raises(RuntimeError, match="uncommitted"):
        _runner.run_chapter("09_tiny", "ci", out=tmp_path)
    paths = _runner.run_chapter("09_tiny", "ci", out=tmp_path, device="cpu", allow_dirty=True)
    assert len(paths) == 2 * 2  # one variant, two arms, two seeds
    record = load_record(tmp_path / "tiny" / "t-s0-rma--seed1.json")
    assert record.config["variant"] == "s0" and record.config["data_spec"]["options"]["imbalance"] == 0.0
    assert _runner.run_chapter("09_tiny", "ci", out=tmp_path, device="cpu", allow_dirty=True) == []  # resumes


@pytest.fixture(scope="module")
def tiny_record(tmp_path_factory):
    folder = tmp_path_factory.mktemp("records")
    chapter = fake_chapter().CHAPTER
    setup = Setup("09_tiny", chapter.stage("tiny"), "ci", device="cpu", results_dir=str(folder))
    setup.run_arm(setup.arm("recall (moving average)"), seeds=[1])
    return folder / "t-rma--seed1.json"


def test_verify_retrains_a_record_exactly(tiny_record, tmp_path):
    outcome = _runner.verify_record(tiny_record)
    assert outcome.passed and outcome.differences == {} and outcome.compared >= 8, outcome.report()
    assert outcome.packages == {}
    data = json.loads(tiny_record.read_text())
    data["metrics"]["test_miou"] += 0.01
    tampered = tmp_path / "t-rma--seed1.json"
    tampered.write_text(json.dumps(data))
    outcome = _runner.verify_record(tampered)
    assert not outcome.passed and set(outcome.differences) == {"test_miou"}
    assert "DIFFERS" in outcome.report() and "test_miou" in outcome.report()
    assert _runner.verify_record(tampered, tolerance=0.02).passed
    assert main(["verify", str(tiny_record)]) == 0 and main(["verify", str(tampered)]) == 1


def test_verify_refuses_a_record_it_cannot_rebuild(tmp_path, tiny_record):
    data = json.loads(tiny_record.read_text())
    del data["config"]["data_spec"]
    path = tmp_path / "old--seed1.json"
    path.write_text(json.dumps({**data, "name": "old"}))
    with pytest.raises(ValueError, match="cannot be rebuilt"):
        _runner.verify_record(path)


def test_staleness_follows_the_code_the_numbers_depend_on(tiny_record):
    record = load_record(tiny_record)
    assert _runner.stale_paths(record) == ([] if not record.provenance.get("git_dirty")
                                           else ["(uncommitted changes when the record was made)"])
    unknown = load_record(tiny_record)
    unknown.provenance["git_commit"] = "unknown"
    assert _runner.stale_paths(unknown) is None
    unknown.provenance["git_commit"] = "0" * 40  # not in this clone
    assert _runner.stale_paths(unknown) is None


def test_a_docstring_or_comment_changes_no_number():
    before = 'def f(x):\n    """Double x."""\n    return 2 * x  # twice\n'
    reworded = 'def f(x):\n    """Twice x, reworded."""\n    # a new comment\n    return 2 * x\n'
    assert not _runner.code_changed(before, reworded)
    assert _runner.code_changed(before, before.replace("2 * x", "3 * x"))
    # a function that was only a docstring still differs from one with code
    assert _runner.code_changed('def f():\n    """Doc."""\n', 'def f():\n    return 1\n')
    assert not _runner.code_changed('class A:\n    """Doc."""\n', 'class A:\n    """Other."""\n')
    # not Python, or Python that does not parse: compared as text
    assert _runner.code_changed("a: 1\n", "a: 1 \n", "config.yaml")
    assert _runner.code_changed("def (:\n", "def  (:\n")
    assert not _runner.code_changed("x = 1\n", "x = 1\n", "config.yaml")


def test_adding_a_loss_beside_the_old_ones_changes_no_number():
    before = ('from .ce import CrossEntropyLoss\n__all__ = ["CrossEntropyLoss"]\n'
              'def f(x):\n    return x\nregister_loss("ce", f)\n')
    added = ('from .ce import CrossEntropyLoss\nfrom .wfm import WeightedFMeasureLoss\n'
             '__all__ = ["CrossEntropyLoss", "WeightedFMeasureLoss"]\n'
             'def f(x):\n    return x\ndef g(x):\n    return -x\nregister_loss("ce", f)\nregister_loss("wfm", g)\n')
    assert not _runner.code_changed(before, added)
    # but redefining a name, changing or removing a statement, or any other new statement counts
    assert _runner.code_changed(before, before + "def f(x):\n    return 2 * x\n")
    assert _runner.code_changed(before, before.replace("return x", "return x + 0"))
    assert _runner.code_changed(before, before.replace('register_loss("ce", f)\n', ""))
    assert _runner.code_changed(before, before + "x = f(1)\n")  # a call at import
    assert not _runner.code_changed(before, before + "x = 1\n")  # a new constant
    assert not _runner.code_changed(before, before + "x = {torch.float64: np.float64}\n")  # of dotted names
    assert _runner.code_changed(before, before + "x = f(1).real\n")  # an attribute of a call's result
    assert _runner.code_changed(before, before + "f = 1\n")  # rebinds a name
    assert _runner.code_changed(before, before + "print(1)\n")
    assert _runner.code_changed(before, before + "import math as f\n")
    # what could change an old name's meaning counts too
    assert _runner.code_changed(before, before + "from ._fast import *\n")
    assert _runner.code_changed(before, before + "def len(x):\n    return 0\n")  # shadows a builtin
    assert _runner.code_changed(before, before + "@register\ndef h(x):\n    return x\n")
    assert _runner.code_changed(before, before + 'register_loss("ce", f, replace=True)\n')


def test_imports_constants_and_cached_functions_can_be_added():
    before = ("import functools\nimport math\nfrom functools import lru_cache\nfrom .x import a, b\nEPS = 1e-6\n\n\n"
              "def f(x):\n    return x\n")
    imports = (before.replace("from .x import a, b\n", "from .x import a, b, c\n"),
               before.replace("from .x import a, b\n", "from .x import a, b\nfrom .x import c\n"),
               before.replace("import math\n", "import math, os\n"))
    for after in imports + tuple(before + added for added in (
            "BLOCK = 16\n", "BITS: int = 1 << 17\n", "SIDES = (1, -2.5, 'a')\n",
            "@lru_cache(maxsize=None)\ndef g(x):\n    return x\n", "@functools.cache\ndef g(x):\n    return x\n")):
        assert not _runner.code_changed(before, after), after
    for changed in ("EPS = 1e-7\n", "BLOCK = make()\n", "BLOCK = EPS\n", "math = 1\n",
                    "@lru_cache(maxsize=size())\ndef g(x):\n    return x\n",
                    "@register\ndef g(x):\n    return x\n", "from .y import b\n"):
        assert _runner.code_changed(before, before + changed), changed
    assert _runner.code_changed(before, before.replace("from .x import a, b\n", "from .x import a\n"))


def test_a_new_file_is_inert_only_if_it_defines_things():
    assert _runner._inert('"""Doc."""\nimport torch\nfrom dataclasses import dataclass\nEPS = 1e-6\n__all__ = ["g"]\n'
                          '@dataclass\nclass G:\n    x: int = 0\ndef g():\n    return 1\n', "x.py")
    assert not _runner._inert("import torch\ntorch.backends.cudnn.benchmark = True\n", "x.py")
    assert not _runner._inert("from .ce import *\n", "x.py")
    assert not _runner._inert("print(1)\n", "x.py")
    assert not _runner._inert("binary", "x.bin")


def test_staleness_ignores_a_docstring_change_in_git(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@example.org")
    git("config", "user.name", "t")
    code = tmp_path / "src/pixelweight/losses/x.py"
    code.parent.mkdir(parents=True)
    code.write_text('def f():\n    """Doc."""\n    return 1\n')
    git("add", "-A")
    git("commit", "-qm", "one")
    first = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    record = types.SimpleNamespace(provenance={"git_commit": first, "git_dirty": False})
    code.write_text('def f():\n    """Reworded doc."""\n    return 1  # same number\n')
    git("commit", "-qam", "docs")
    assert _runner.stale_paths(record, tmp_path) == []
    (code.parent / "new.py").write_text("def g():\n    return 3\n")  # a new loss file: nothing old uses it
    git("add", "-A")
    git("commit", "-qm", "a new loss")
    assert _runner.stale_paths(record, tmp_path) == []
    # a file moved (and edited) is a removal and an addition, not just a new file: stale
    git("mv", "src/pixelweight/losses/x.py", "src/pixelweight/losses/y.py")
    (code.parent / "y.py").write_text('def f():\n    """Reworded doc."""\n    return 1 + 0\n')
    git("commit", "-qam", "move")
    assert _runner.stale_paths(record, tmp_path) == ["src/pixelweight/losses/x.py"]
    git("reset", "-q", "--hard", "HEAD~1")
    code.write_text('def f():\n    """Reworded doc."""\n    return 2\n')
    git("commit", "-qam", "code")
    assert _runner.stale_paths(record, tmp_path) == ["src/pixelweight/losses/x.py"]


def test_a_chapters_own_code_paths_stale_its_records_only(monkeypatch, tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    zoomy = Chapter("09_tiny", "A tiny chapter", fake_chapter().STAGES, code_paths=("src/pixelweight/sampling",))
    monkeypatch.setattr("pixelweight.chapters.CHAPTERS", {"09_tiny": "tiny", "08_other": "other"})
    monkeypatch.setattr("pixelweight.chapters.get_chapter", lambda folder: types.SimpleNamespace(
        CHAPTER=zoomy if folder == "09_tiny" else Chapter("08_other", "Other", fake_chapter().STAGES)))
    git("init", "-q")
    git("config", "user.email", "t@example.org")
    git("config", "user.name", "t")
    code = tmp_path / "src/pixelweight/sampling/grid.py"
    code.parent.mkdir(parents=True)
    code.write_text("def f():\n    return 1\n")
    git("add", "-A")
    git("commit", "-qm", "one")
    first = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    code.write_text("def f():\n    return 2\n")
    git("commit", "-qam", "a change of the sampler")

    def record(chapter):
        return types.SimpleNamespace(provenance={"git_commit": first, "git_dirty": False}, config={"chapter": chapter})

    assert _runner.record_code_paths(record("09_tiny"))[-1] == "src/pixelweight/sampling"
    assert _runner.stale_paths(record("09_tiny"), tmp_path) == ["src/pixelweight/sampling/grid.py"]
    assert _runner.stale_paths(record("08_other"), tmp_path) == []
    assert _runner.stale_paths(record(None), tmp_path) == []
    with pytest.raises(ValueError, match="code_paths must be folders"):
        Chapter("09_tiny", "A tiny chapter", fake_chapter().STAGES, code_paths="src/pixelweight/sampling")


def test_committed_runs_pair_the_seeds_and_match_the_stage(monkeypatch, tmp_path):
    """The converged records a chapter reads: only those of its full scale as it is today, only
    seeds every arm has, in seed order; and the section's fallback without records."""
    from pixelweight.chapters import committed_status

    chapter = fake_chapter().CHAPTER
    folder = tmp_path / "09_tiny"
    full = Setup("09_tiny", chapter.stage("tiny"), "full", device="cpu", results_dir=str(folder))
    tiny_full = Setup("09_tiny", chapter.stage("tiny"), "ci", device="cpu", results_dir=str(folder))
    # records of the ci scale do not count as converged records
    tiny_full.run_arm(tiny_full.arm("CE"), seeds=[0])
    monkeypatch.setenv("PIXELWEIGHT_RESULTS", str(tmp_path))
    assert full.committed_runs() == {}
    # write "full" records cheaply: the ci runs relabelled with the full scale's config
    for path in folder.glob("*.json"):
        data = json.loads(path.read_text())
        data["config"]["profile"] = full.profile.to_dict()
        for seed in (1, 0):
            for name, label in (("t-ce", "CE"), ("t-rma", "recall (moving average)")):
                if (name, seed) == ("t-rma", 1):
                    continue  # seed 1 lacks its recall run: left out of the pairs
                out = {**data, "name": name, "seed": seed,
                       "config": {**data["config"], "loss": full.arm(label).to_dict()}}
                (folder / f"{name}--seed{seed}.json").write_text(json.dumps(out))
    runs = full.committed_runs()
    assert list(runs) == ["CE", "recall (moving average)"]
    assert [r.seed for r in runs["CE"]] == [0] and [r.seed for r in runs["recall (moving average)"]] == [0]
    status = committed_status(runs)
    assert status["runs"] == 2 and status["devices"] and status["hours"] >= 0
    # a record of another loss option (momentum 0.9 instead of 0.5) is not a record of this arm
    moved = json.loads((folder / "t-rma--seed0.json").read_text())
    moved["config"]["loss"]["options"]["momentum"] = 0.9
    (folder / "t-rma--seed0.json").write_text(json.dumps(moved))
    assert list(full.committed_runs()) == ["CE"]


def test_converged_over_data_variants_pairs_every_variant_by_seed(monkeypatch, tmp_path):
    """A sweep's converged section: runs keyed by (variant, arm), only the seeds every variant
    and arm has; a variant without records is named as missing."""
    stage = Stage("tiny", "a tiny stage", prefix="t",
                  scales={"ci": Scale(TINY, DATA, ModelSpec(width=4, depth=1)),
                          "full": Scale(get_profile("full"), DATA, ModelSpec(width=4, depth=1))},
                  arms=(Arm("CE", "ce"),), variants={"s0": {"imbalance": 0.0}, "s1": {"imbalance": 1.0}})
    folder = tmp_path / "09_tiny"
    full = Setup("09_tiny", stage, "full", device="cpu", results_dir=str(folder))
    ci = Setup("09_tiny", stage, "ci", device="cpu", results_dir=str(folder))
    ci.variant("s0").run_arm(ci.arm("CE"), seeds=[0])
    monkeypatch.setenv("PIXELWEIGHT_RESULTS", str(tmp_path))
    monkeypatch.setattr("pixelweight.book.markdown", lambda text: None)
    (source,) = folder.glob("*.json")
    data = json.loads(source.read_text())
    source.unlink()

    def write(variant, seed):  # a "full" record of CE on this variant (the ci run relabelled)
        config = {**data["config"], "profile": full.profile.to_dict(), "variant": variant,
                  "data_spec": full.variant(variant).data.to_dict()}
        (folder / f"t-{variant}-ce--seed{seed}.json").write_text(
            json.dumps({**data, "name": f"t-{variant}-ce", "seed": seed, "config": config}))

    for seed in (0, 1, 2):
        write("s0", seed)
    seen = {}

    def claims(setup, runs):
        from pixelweight.claims import Claim, Evidence
        from pixelweight.stats import paired_difference_ci

        seen.update(runs)
        effect = paired_difference_ci([r.metrics["test_miou"] for r in runs["s1", "CE"]],
                                      [r.metrics["test_miou"] for r in runs["s0", "CE"]])
        return setup.claims_table([Claim("a claim", source="ours", ran="s1 vs s0",
                                         evidence=Evidence("Δ mIoU", effect, direction=+1))])

    out = full.converged(claims, variants=["s0", "s1"])
    assert not out.available and out.missing == ("CE (s1)",)
    for seed in (2, 0):  # s1 lacks seed 1: seeds 0 and 2 are paired across the variants
        write("s1", seed)
    out = full.show_converged(claims, variants=["s0", "s1"])
    assert out.available and sorted(seen) == [("s0", "CE"), ("s1", "CE")]
    assert [r.seed for r in seen["s0", "CE"]] == [0, 2] and [r.seed for r in seen["s1", "CE"]] == [0, 2]
    assert out.text()["seeds"] == "2"
    (folder / "t-s1-ce--seed2.json").unlink()  # one paired seed is not enough for an interval
    out = full.converged(claims, variants=["s0", "s1"])
    assert not out.available and "fewer than two paired seeds" in out.missing[0]
    with pytest.raises(ValueError, match="non-empty sequence"):
        full.converged(claims, variants="s0")
    with pytest.raises(ValueError, match="no variant 's9'"):
        full.converged(claims, variants=["s9"])


def test_an_arm_with_its_own_steps_is_read_compared_and_named_with_them(monkeypatch, tmp_path):
    """The converged records of an arm with its own steps (Scale.arm_budgets) count only at
    those steps; the committed table compares each record with its own arm's profile, the
    runner resumes it, and the converged table's budget names it."""
    own = {"rma": {"steps": 1200, "eval_every": 75}}
    stage = Stage("tiny", "a tiny stage", prefix="t",
                  scales={"ci": Scale(TINY, DATA, ModelSpec(width=4, depth=1)),
                          "full": Scale(get_profile("full"), DATA, ModelSpec(width=4, depth=1), arm_budgets=own)},
                  arms=(Arm("CE", "ce"), Arm("recall (moving average)", "recall", {"momentum": 0.5}, run="rma")))
    folder = tmp_path / "09_tiny"
    full = Setup("09_tiny", stage, "full", device="cpu", results_dir=str(folder))
    ci = Setup("09_tiny", stage, "ci", device="cpu", results_dir=str(folder))
    ci.run_arm(ci.arm("CE"), seeds=[0])
    monkeypatch.setenv("PIXELWEIGHT_RESULTS", str(tmp_path))
    monkeypatch.setattr("pixelweight.book.markdown", lambda text: None)
    (source,) = folder.glob("*.json")
    data = json.loads(source.read_text())
    source.unlink()
    rma = full.arm("recall (moving average)")

    def write(name, label, seed, profile):  # a "full" record (the ci run relabelled)
        config = {**data["config"], "profile": profile, "loss": full.arm(label).to_dict()}
        (folder / f"{name}--seed{seed}.json").write_text(
            json.dumps({**data, "name": name, "seed": seed, "config": config}))

    for seed in (0, 1):
        write("t-ce", "CE", seed, full.profile.to_dict())
        write("t-rma", "recall (moving average)", seed, full.profile.to_dict())  # the shared steps: not this arm's
    assert list(full.committed_runs()) == ["CE"]
    frame = full.committed(columns=["seed"])
    assert dict(zip(frame["name"], frame["config matches"])) == {"t-ce": True, "t-rma": False}
    for seed in (0, 1):
        write("t-rma", "recall (moving average)", seed, full.scale.profile_of(rma).to_dict())
    assert list(full.committed_runs()) == ["CE", "recall (moving average)"]
    assert full.committed(columns=["seed"])["config matches"].all()
    job = _runner.RunJob("09_tiny", "tiny", "", rma.label, 0, "t-rma")
    monkeypatch.setattr("pixelweight.chapters.get_chapter", lambda folder: types.SimpleNamespace(
        setup=lambda stage_name, profile: Setup("09_tiny", stage, profile)))
    assert _runner._current(folder / "t-rma--seed0.json", job, "full")

    def claims(setup, runs):
        from pixelweight.claims import Claim, Evidence
        from pixelweight.stats import paired_difference_ci

        effect = paired_difference_ci([r.metrics["test_miou"] for r in runs["recall (moving average)"]],
                                      [r.metrics["test_miou"] for r in runs["CE"]])
        return setup.claims_table([Claim("a claim", source="ours", ran="rma vs CE",
                                         evidence=Evidence("Δ mIoU", effect, direction=+1))])

    out = full.converged(claims)
    steps = get_profile("full").steps
    assert out.table.budget.startswith(f"`full` (converged budget): {steps} steps (recall (moving average): 1200 "
                                       "steps), 2 seeds")
    def ce_only(setup, runs):
        from pixelweight.claims import Claim, Evidence
        from pixelweight.stats import mean_ci

        return setup.claims_table([Claim("a claim", source="ours", ran="CE", evidence=Evidence(
            "mIoU", mean_ci([r.metrics["test_miou"] for r in runs["CE"]]), direction=+1))])

    only_ce = full.converged(ce_only, arms=[full.arm("CE")])
    assert only_ce.table.budget.startswith(f"`full` (converged budget): {steps} steps, 2 seeds")
    from pixelweight.chapters import converged_table

    with pytest.raises(TypeError, match="arm_budgets must be a string"):
        converged_table(out.table, out.runs, arm_budgets={"rma": 1200})


def test_a_shared_variant_is_not_trained_twice_and_reads_the_other_stages_records(monkeypatch, tmp_path):
    """A sweep point that is another stage's experiment (Scale.shared_variants) is skipped by
    the runner and read from that stage's records, keyed by the sweep's arm labels; if the two
    stop being the same runs, reading fails instead of mixing them."""
    scale = Scale(TINY, DATA, ModelSpec(width=4, depth=1))
    head = Stage("head", "the headline", prefix="h", scales={"ci": scale, "full": scale.__class__(
        get_profile("full"), DATA, ModelSpec(width=4, depth=1))}, arms=(Arm("CE", "ce"),))
    sweep = Stage("sweep", "a sweep", prefix="s", arms=(Arm("CE", "ce"),),
                  variants={"i0": {"imbalance": 0.0}, "i1": {"imbalance": 1.0}},
                  scales={"ci": scale, "full": Scale(get_profile("full"), DATA, ModelSpec(width=4, depth=1),
                                                     shared_variants={"i1": head})})
    chapter = Chapter("09_tiny", "A tiny chapter", {"head": head, "sweep": sweep})
    monkeypatch.setattr("pixelweight.chapters.get_chapter", lambda folder: types.SimpleNamespace(
        STAGES=chapter.stages, CHAPTER=chapter, setup=chapter.setup))
    full_jobs = _runner.chapter_jobs("09_tiny", "full")
    assert [(j.stage, j.variant, j.name) for j in full_jobs if j.seed == 0] == [
        ("head", "", "h-ce"), ("sweep", "i0", "s-i0-ce")]
    assert len(_runner.chapter_jobs("09_tiny", "ci")) == 3 * len(TINY.seeds)  # ci trains every variant
    folder = tmp_path / "09_tiny"
    ci = Setup("09_tiny", head, "ci", device="cpu", results_dir=str(folder))
    ci.run_arm(ci.arm("CE"), seeds=[0])
    monkeypatch.setenv("PIXELWEIGHT_RESULTS", str(tmp_path))
    (source,) = folder.glob("*.json")
    data = json.loads(source.read_text())
    full_head = Setup("09_tiny", head, "full")
    for seed in (0, 1):
        config = {**data["config"], "profile": full_head.profile.to_dict()}
        (folder / f"h-ce--seed{seed}.json").write_text(json.dumps({**data, "name": "h-ce", "seed": seed,
                                                                      "config": config}))
    shared = Setup("09_tiny", sweep, "full").variant("i1")
    runs = shared.committed_runs()
    assert list(runs) == ["CE"] and [r.seed for r in runs["CE"]] == [0, 1]
    assert runs["CE"][0].metrics == full_head.committed_runs()["CE"][0].metrics
    assert Setup("09_tiny", sweep, "full").variant("i0").committed_runs() == {}
    # the headline's data no longer those of the shared point: not the same runs
    other = Stage("sweep", "a sweep", prefix="s", arms=(Arm("CE", "ce"),), variants={"i1": {"imbalance": 0.5}},
                  scales={"full": Scale(get_profile("full"), DATA, ModelSpec(width=4, depth=1),
                                        shared_variants={"i1": head})})
    with pytest.raises(ValueError, match="not the same run"):
        Setup("09_tiny", other, "full").variant("i1").committed_runs()
    drifted = Chapter("09_tiny", "A tiny chapter", {"head": head, "sweep": other})
    monkeypatch.setattr("pixelweight.chapters.get_chapter", lambda folder: types.SimpleNamespace(
        STAGES=drifted.stages, CHAPTER=drifted, setup=drifted.setup))
    with pytest.raises(ValueError, match="not the same run"):  # the runner refuses to skip it
        _runner.chapter_jobs("09_tiny", "full")
    copy = Stage("head", "the headline", prefix="h", scales=head.scales, arms=head.arms)
    with pytest.raises(ValueError, match="not this chapter's own"):
        Chapter("09_tiny", "A tiny chapter", {"head": copy, "sweep": sweep})


def test_shared_variants_are_checked():
    full = get_profile("full")
    head = Stage("head", "d", scales={"full": Scale(full, DATA)}, arms=(Arm("CE", "ce"),))
    cases = [({"i9": head}, ValueError, "does not have"),
             ({"i1": "head"}, TypeError, "must be a Stage"),
             ({"i1": Stage("head", "d", scales={"ci": Scale(TINY, DATA)}, arms=(Arm("CE", "ce"),))}, ValueError,
              "with a 'full' scale"),
             ({"i1": Stage("head", "d", scales={"full": Scale(full, DATA)}, arms=(Arm("CE", "focal"),))},
              ValueError, "no arm with run name"),
             ({"i1": Stage("head", "d", scales={"full": Scale(full, DATA)}, arms=(Arm("CE", "ce"),),
                           variants={"v": {"imbalance": 0.5}})}, ValueError, "no data variants")]
    for shared, error, match in cases:
        with pytest.raises(error, match=match):
            Stage("sweep", "d", arms=(Arm("CE", "ce"),), variants={"i1": {"imbalance": 1.0}},
                  scales={"full": Scale(full, DATA, shared_variants=shared)})


def test_parallel_runs_start_longest_first_as_earlier_records_time_them(tmp_path):
    def job(stage, name, seed):
        return _runner.RunJob("09_tiny", stage, "", name, seed, name)

    (tmp_path / "a").mkdir()
    for name, seconds in (("short", [10.0, 12.0]), ("long", [300.0]), ("broken", ["x"])):
        for seed, value in enumerate(seconds):
            (tmp_path / "a" / f"{name}--seed{seed}.json").write_text(json.dumps({"wall_time_s": value}))
    (tmp_path / "a" / "torn--seed0.json").write_text("{")
    (tmp_path / "a" / "list--seed0.json").write_text("[]")
    (tmp_path / "a" / "flag--seed0.json").write_text(json.dumps({"wall_time_s": True}))
    todo = [job("a", "short", 0), job("a", "short", 1), job("a", "long", 3), job("a", "new", 0),
            job("a", "torn", 0), job("a", "broken", 0), job("a", "list", 0), job("a", "flag", 0)]
    order = [(j.name, j.seed) for j in _runner._longest_first(todo, tmp_path)]
    # untimed runs first (in their order), then by time; equal times keep their order
    assert order == [("new", 0), ("torn", 0), ("broken", 0), ("list", 0), ("flag", 0), ("long", 3), ("short", 0),
                     ("short", 1)]


def test_the_command_line_checks_its_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["run", "02_recall", "--profile", "ci", "--arm", "Dice", "--list"])
    assert "no arm ['Dice']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "07_nope", "--list"])
    with pytest.raises(SystemExit):
        main(["verify", "no/such/record.json"])
    with pytest.raises(SystemExit):
        main(["verify", "--tolerance", "-1", "x.json"])


def test_code_changed_can_leave_function_bodies_out():
    before = ('import torch\nEPS = 1e-6\n\n\ndef f(x, k=2):\n    return k * x\n\n\n'
              'class L:\n    scale = 1.0\n\n    def forward(self, x):\n        return self.scale * x\n\n\n'
              'if True:\n    def g():\n        return 1\n')
    bodies = before.replace("return k * x", "return x * k + 0").replace("return self.scale * x", "return x") \
        .replace("return 1\n", "return 2\n")
    assert _runner.code_changed(before, bodies)
    assert not _runner.code_changed(before, bodies, function_bodies=False)
    assert not _runner.code_changed(before, before + "\n\ndef h():\n    return 3\n", function_bodies=False)
    # a parameter's name is bound only when the function runs; its default is evaluated at import
    renamed = bodies.replace("def f(x, k=2)", "def f(x, y, k=2)").replace("return k * x", "return k * y")
    assert not _runner.code_changed(before, renamed, function_bodies=False)
    assert _runner.code_changed(before, before.replace("def f(x, k=2)", "def f(x: make(), k=2)"),
                                function_bodies=False)  # an annotation that calls, run at import
    for outside in (before.replace("EPS = 1e-6", "EPS = 1e-7"),  # a constant
                    before.replace("k=2", "k=3"),  # a default: evaluated at import
                    before.replace("def f(x, k=2)", "def f(x, k=2, j=1)"),  # a signature
                    before.replace("scale = 1.0", "scale = 2.0"),  # a class attribute
                    before.replace("def f(", "@torch.no_grad()\ndef f("),  # a decorator
                    before + "torch.manual_seed(0)\n",  # a call at import
                    before.replace("if True:", "if False:")):
        assert _runner.code_changed(before, outside, function_bodies=False), outside


def _git_repo(tmp_path):
    import subprocess

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("config", "user.email", "t@example.org")
    git("config", "user.name", "t")
    return git


def test_staleness_is_per_file_for_a_record_that_lists_the_code_its_run_executed(tmp_path):
    git = _git_repo(tmp_path)
    losses = tmp_path / "src/pixelweight/losses"
    losses.mkdir(parents=True)
    (losses / "ce.py").write_text("def ce(x):\n    return x\n")
    (losses / "wfm.py").write_text("EPS = 1e-6\n\n\ndef wfm(x):\n    return x + EPS\n")
    git("add", "-A")
    git("commit", "-qm", "one")
    first = git("rev-parse", "HEAD")
    provenance = {"git_commit": first, "git_dirty": False}
    traced = types.SimpleNamespace(provenance={**provenance, "code_trace": {"commit": first},
                                               "code_files": ["src/pixelweight/losses/ce.py",
                                                              "src/pixelweight/train/loop.py"]},
                                   config={"train": {"num_workers": 0}})
    untraced = types.SimpleNamespace(provenance=dict(provenance), config={})
    workers = types.SimpleNamespace(provenance=dict(traced.provenance), config={"train": {"num_workers": 2}})
    # a faster wfm: only the body of a function the CE run never executed
    (losses / "wfm.py").write_text("EPS = 1e-6\n\n\ndef wfm(x):\n    return EPS + x\n")
    git("commit", "-qam", "faster wfm")
    assert _runner.stale_paths(traced, tmp_path) == []
    assert _runner.stale_paths(untraced, tmp_path) == ["src/pixelweight/losses/wfm.py"]  # no trace: whole folder
    assert _runner.stale_paths(workers, tmp_path) == ["src/pixelweight/losses/wfm.py"]  # workers: not traceable
    # a module constant is seen at import by anyone who imports it: counts
    (losses / "wfm.py").write_text("EPS = 1e-7\n\n\ndef wfm(x):\n    return EPS + x\n")
    git("commit", "-qam", "constant")
    assert _runner.stale_paths(traced, tmp_path) == ["src/pixelweight/losses/wfm.py"]
    git("reset", "-q", "--hard", "HEAD~1")
    # an executed file counts whole, even a body change
    (losses / "ce.py").write_text("def ce(x):\n    return x * 1\n")
    git("commit", "-qam", "ce")
    assert _runner.stale_paths(traced, tmp_path) == ["src/pixelweight/losses/ce.py"]
    git("reset", "-q", "--hard", "HEAD~1")
    # a removed file, and a new file that does something at import, count
    git("rm", "-q", "src/pixelweight/losses/wfm.py")
    git("commit", "-qm", "removed")
    assert _runner.stale_paths(traced, tmp_path) == ["src/pixelweight/losses/wfm.py"]
    git("reset", "-q", "--hard", "HEAD~1")
    (losses / "patch.py").write_text("import torch\ntorch.set_default_dtype(torch.float64)\n")
    git("add", "-A")
    git("commit", "-qm", "a patch")
    assert _runner.stale_paths(traced, tmp_path) == ["src/pixelweight/losses/patch.py"]
    assert _runner.traced_code_files(untraced) is None and _runner.traced_code_files(workers) is None
    assert _runner.traced_code_files(traced) == frozenset({"src/pixelweight/losses/ce.py",
                                                           "src/pixelweight/train/loop.py"})


def test_a_trace_sees_the_files_a_run_executes_and_not_the_others(tmp_path):
    import dataclasses
    import subprocess

    from pixelweight.chapters import get_chapter
    from pixelweight.chapters._trace import traced_files

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_runner.Path(__file__).resolve().parents[2],
                          capture_output=True, text=True).stdout.strip()
    tasks = {}
    for key, label in (("lmp", "p=1.7, ρ=0.3"), ("ce", "CE")):
        # a record of the stage's full configuration at this commit (but for a 2-step budget)
        setup = get_chapter("04_lmp").setup("grid", "full", device="cpu", results_dir=str(tmp_path / key))
        setup.scale = dataclasses.replace(setup.scale, profile=dataclasses.replace(setup.scale.profile, steps=2,
                                                                                   eval_every=1))
        (run,) = setup.run_arm(setup.arm(label), seeds=[0], progress=False)
        config = load_record(run.record_path).config
        tasks[key] = {"chapter": "04_lmp", "stage": "grid", "variant": "", "arm": label, "seed": 0, "config": config}
    tasks["other"] = {**tasks["ce"], "config": {**tasks["ce"]["config"], "loss": {"name": "focal"}}}
    found = traced_files(tasks, head)
    files = {k: found[k]["files"] for k in ("lmp", "ce")}
    for arm in ("lmp", "ce"):
        assert found[arm]["config_checked"]
        # the loop, its evaluation and plateau, the model, the data (generated: an empty cache),
        # the metrics, the registry, the shared checks
        assert {"src/pixelweight/train/loop.py", "src/pixelweight/train/plateau.py",
                "src/pixelweight/train/evaluation.py", "src/pixelweight/models/unet.py",
                "src/pixelweight/data/scenes.py", "src/pixelweight/data/_digits.py",
                "src/pixelweight/metrics/segmentation.py", "src/pixelweight/losses/registry.py",
                "src/pixelweight/_validation.py"} <= set(files[arm]), files[arm]
        # losses the run never calls, and metrics of another task
        assert not {"src/pixelweight/losses/wfm.py", "src/pixelweight/losses/recall.py",
                    "src/pixelweight/metrics/foreground.py"} & set(files[arm])
    assert "src/pixelweight/losses/lmp.py" in files["lmp"] and "src/pixelweight/losses/lmp.py" not in files["ce"]
    # a record whose config is not its stage's at its commit is not traced
    assert found["other"].startswith("error:") and "differs" in found["other"]


def test_a_trace_accepts_what_a_stage_derives_from_the_budget(tmp_path):
    """The zoom chapter's blur warm-up is a fraction of the steps: a record of 8 steps (warm-up 2)
    traced at TRACE_STEPS (warm-up 1) still matches its stage, and the sampler's file is seen."""
    import dataclasses
    import subprocess

    from pixelweight.chapters import get_chapter
    from pixelweight.chapters._trace import traced_files

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_runner.Path(__file__).resolve().parents[2],
                          capture_output=True, text=True).stdout.strip()
    setup = get_chapter("03_zoom").setup("headline", "full", device="cpu", results_dir=str(tmp_path))
    setup.scale = dataclasses.replace(setup.scale, profile=dataclasses.replace(setup.scale.profile, steps=8,
                                                                               eval_every=4))
    (run,) = setup.run_arm(setup.arm("sampler"), seeds=[0], progress=False)
    config = load_record(run.record_path).config
    assert config["model"]["blur_warmup_steps"] == 2
    task = {"chapter": "03_zoom", "stage": "headline", "variant": "", "arm": "sampler", "seed": 0, "config": config}
    found = traced_files({"sampler": task}, head)["sampler"]
    assert found.get("config_checked"), found
    assert "src/pixelweight/sampling/sampler.py" in found["files"]


def test_a_trace_shortens_a_warm_up_longer_than_its_run(tmp_path):
    """The zoom chapter's converged segmentation runs warm the learning rate up over
    SEGMENTATION_WARMUP steps, more than the traced run's TRACE_STEPS: the trace shortens the
    warm-up to fit and still checks the rest of the configuration."""
    import dataclasses
    import subprocess

    from pixelweight.chapters import get_chapter
    from pixelweight.chapters._trace import TRACE_STEPS, traced_files

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_runner.Path(__file__).resolve().parents[2],
                          capture_output=True, text=True).stdout.strip()
    module = get_chapter("03_zoom")
    setup = module.setup("segmentation", "full", device="cpu", results_dir=str(tmp_path))
    warmup = setup.scale.train["warmup_steps"]
    assert warmup == module.SEGMENTATION_WARMUP >= TRACE_STEPS
    steps = warmup + 1
    setup.scale = dataclasses.replace(setup.scale, profile=dataclasses.replace(setup.scale.profile, steps=steps,
                                                                               eval_every=steps))
    (run,) = setup.run_arm(setup.arm("uniform"), seeds=[0], progress=False)
    task = {"chapter": "03_zoom", "stage": "segmentation", "variant": "", "arm": "uniform", "seed": 0,
            "config": load_record(run.record_path).config}
    tasks = {"stage": task}
    # a warm-up that differs from the stage's is still caught: longer, or as long as the
    # shortened one of the traced run
    for name, other in (("longer", warmup + 1), ("shortened", TRACE_STEPS - 1)):
        tasks[name] = json.loads(json.dumps(task))
        for key in ("train", "train_overrides"):
            tasks[name]["config"][key]["warmup_steps"] = other
    found = traced_files(tasks, head)
    assert found["stage"].get("config_checked"), found["stage"]
    assert "src/pixelweight/models/zoom.py" in found["stage"]["files"]
    for name in ("longer", "shortened"):
        assert "differs" in found[name] and "warmup_steps" in found[name], found[name]


def test_trace_records_traces_each_records_commit_once_per_arm(monkeypatch, tmp_path):
    from pixelweight.chapters import _trace
    from pixelweight.results import save_record

    record = load_record(sorted((_runner.Path(__file__).resolve().parents[2] / "results/04_lmp/headline")
                                .glob("ch4-headline-lmp--seed*.json"))[0])
    for key in ("code_files", "code_trace"):
        record.provenance.pop(key, None)
    record.device = "cpu (x86_64, 1 thread)"
    import subprocess  # a commit every clone has, shallow or not

    record.provenance["git_commit"] = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=_runner.Path(__file__).resolve().parents[2], capture_output=True,
        text=True).stdout.strip()
    paths = []
    for seed in (3, 1):
        record.seed = seed
        paths.append(save_record(record, tmp_path, filename=f"copy-{seed}.json"))  # not its canonical name
    asked = []

    def fake(tasks, commit, **kw):
        asked.append((commit, tasks))
        return {key: {"files": ["src/pixelweight/losses/lmp.py", "src/pixelweight/train/loop.py"],
                      "config_checked": True} for key in tasks}

    monkeypatch.setattr(_trace, "traced_files", fake)
    outcome = _trace.trace_records(paths, log=lambda *a, **k: None)
    assert set(outcome.values()) == {"traced"}
    ((commit, tasks),) = asked  # one trace for both seeds, at the record's own commit, at the lower seed
    assert commit == record.provenance["git_commit"]
    ((task),) = tasks.values()
    assert (task["arm"], task["seed"], task["config"]) == ("LMP", 1, record.config)
    traced = load_record(paths[0])
    assert traced.provenance["code_files"] == ["src/pixelweight/losses/lmp.py", "src/pixelweight/train/loop.py"]
    assert traced.provenance["code_trace"]["commit"] == commit and traced.metrics == record.metrics
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy-1.json", "copy-3.json"]  # written where they lie
    assert set(_trace.trace_records(paths).values()) == {"already traced"}
    # what cannot be traced on one CPU process, at a known clean commit
    for change, why in ((lambda r: r.config["train"].update(num_workers=2), "workers"),
                        (lambda r: setattr(r, "device", "cuda:0 (NVIDIA H200)"), "GPU"),
                        (lambda r: setattr(r, "device", "mps"), "GPU"),
                        (lambda r: r.provenance.update(git_dirty=True), "uncommitted"),
                        (lambda r: r.provenance.update(git_commit="0" * 40), "not in this clone")):
        odd = load_record(paths[0])
        change(odd)
        (bad,) = _trace.trace_records([save_record(odd, tmp_path, filename="odd.json")], force=True).values()
        assert why in bad
    (tmp_path / "junk.json").write_text("[]")
    assert _trace.trace_records([tmp_path / "junk.json"])[str(tmp_path / "junk.json")].startswith("not a record")
    # another budget is another configuration: its own trace
    other = load_record(paths[1])
    other.config["train"]["steps"] = 7
    other_path = save_record(other, tmp_path, filename="budget.json")
    asked.clear()
    assert set(_trace.trace_records(paths + [other_path], force=True).values()) == {"traced"}
    assert len(asked) == 1 and len(asked[0][1]) == 2
    # a retrace that fails takes the old list away
    monkeypatch.setattr(_trace, "traced_files", lambda tasks, commit, **kw: {k: "error: broken" for k in tasks})
    assert _trace.trace_records([paths[0]], force=True) == {str(paths[0]): "error: broken"}
    assert "code_files" not in load_record(paths[0]).provenance


def test_an_empty_loopless_or_foreign_trace_says_nothing():
    record = types.SimpleNamespace(provenance={"code_files": [], "git_commit": "a", "code_trace": {"commit": "a"}},
                                   config={})
    assert _runner.traced_code_files(record) is None
    record.provenance["code_files"] = ["src/pixelweight/losses/ce.py"]
    assert _runner.traced_code_files(record) is None
    record.provenance["code_files"].append("src/pixelweight/train/loop.py")
    assert _runner.traced_code_files(record) is not None
    record.provenance["code_trace"]["commit"] = "b"  # traced at another commit than the record's
    assert _runner.traced_code_files(record) is None


def test_additions_cannot_run_code_at_import():
    before = "from .registry import register_loss\nfrom .x import a\n\n\ndef f(x):\n    return x\n"
    for changed in ('register_loss("ce", f, (), "", True)\n',  # replace passed by position
                    'register_loss(*args)\n',
                    "class M(type(a)):\n    pass\n",  # a base that calls
                    "class M(metaclass=Meta):\n    pass\n",
                    "class M:\n    x = make()\n",  # a class body that calls
                    "def g(x=make()):\n    return x\n",  # a default that calls
                    "from __future__ import annotations\n"):
        assert _runner.code_changed(before, before + changed), changed
    assert not _runner.code_changed(before, before + 'register_loss("new", f, (), "help")\n')
    assert not _runner.code_changed(before, before + "class M:\n    x = 1\n\n    def f(self, y=2):\n        return y\n")
    # a name bound inside a block is bound: a new constant cannot rebind it
    block = "try:\n    import scipy\nexcept ImportError:\n    scipy = None\nif True:\n    LIMIT = 3\n"
    assert _runner.code_changed(block, block + "LIMIT = 4\n")
    # lru_cache must be functools': a decorator of the same name from elsewhere is not pure
    cached = "@lru_cache(maxsize=None)\ndef g(x):\n    return x\n"
    assert not _runner.code_changed(before, "from functools import lru_cache\n" + before + cached)
    assert _runner.code_changed(before, "from .mine import lru_cache\n" + before + cached)


def _library_source(path):
    file = _runner.Path(__file__).resolve().parents[2] / path
    return file.read_text() if file.is_file() else None


def test_a_pure_library_function_is_told_from_one_that_changes_the_world():
    sources = {"src/pixelweight/x.py": (
        "import math\nimport torch\n_R = {}\n\n\n"
        "def kernel(n, s):\n    if n < 1:\n        raise ValueError(f'bad {n}')\n"
        "    full = [math.exp(-t * t / s) for t in range(n)]\n    full.append(1.0)\n    return tuple(full)\n\n\n"
        "def twice(n):\n    return kernel(n, 1.0) * 2\n\n\n"
        "def seeds(n):\n    torch.manual_seed(n)\n    return n\n\n\n"
        "def remember(n):\n    _R[n] = n\n    return n\n\n\n"
        "def counter(n):\n    global _R\n    _R = n\n    return n\n\n\n"
        "def sneaky(n):\n    return max(_R, key=_R.pop)\n")}
    for func, pure in (("kernel", True), ("twice", True), ("seeds", False), ("remember", False),
                       ("counter", False), ("sneaky", False), ("absent", False)):
        assert _runner._pure_function("src/pixelweight/x.py", func, sources.get) is pure, func
    assert _runner._pure_function("src/pixelweight/losses/_separable.py", "gaussian_half_kernel", _library_source)


def test_a_new_file_may_call_the_library_but_not_change_the_world():
    assert _runner._inert("from __future__ import annotations\nfrom typing import Tuple\n"
                          "from ._separable import gaussian_half_kernel\nKernel = Tuple[float, ...]\n"
                          "_HALF = gaussian_half_kernel(7, 5.0)\n_EPS = float(2.0 ** -52)\n"
                          "import dataclasses\n@dataclasses.dataclass(frozen=True)\nclass S:\n    a: int = 1\n",
                          "src/pixelweight/losses/x.py", _library_source)
    existed = _library_source
    good = ("from .registry import register_loss\nfrom ._separable import gaussian_half_kernel\n"
            "_HALF = gaussian_half_kernel(7, 5.0)\nSPEC = register_loss('fast', f)\n")
    assert _runner._inert(good, "src/pixelweight/losses/x.py", existed)
    for bad in ("import torch\n_ = torch.set_default_dtype(torch.float64)\n",
                "import torch\nSEED = torch.manual_seed(0)\n",
                "from .registry import register\n@register\ndef f():\n    return 1\n",
                "from .registry import register_loss\nSPEC = register_loss('wfm', fast, replace=True)\n",
                "import torch\ndef _init():\n    torch.set_default_dtype(torch.float64)\n\n\n_READY = _init()\n",
                "from ._patch import install\n_DONE = install()\n",  # another new file's code
                "_R = {}\n_K = max(_R, key=_R.pop)\n",  # a callable handed over to be called
                "Y: launch() = 2\n"):
        assert not _runner._inert(bad, "src/pixelweight/losses/x.py", existed), bad
    assert not _runner._inert(good, "src/pixelweight/losses/x.py")  # nothing known to exist
