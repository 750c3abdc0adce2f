import json
import math

import numpy as np
import pytest
import torch

from pixelweight import __version__
from pixelweight.results import (
    RunRecord,
    config_differences,
    git_commit,
    load_record,
    load_records,
    provenance,
    records_frame,
    save_record,
)


def _record(**kw):
    base = dict(name="ch0-ce", config={"lr": 1e-3, "sizes": (1, 2)}, metrics={"miou": 0.5},
                seed=1, wall_time_s=2.5, device="cpu")
    base.update(kw)
    return RunRecord(**base)


def test_roundtrip_strict_json_with_tensors_numpy_and_nan(tmp_path):
    rec = _record(metrics={"miou": np.float32(0.25), "per_class": torch.tensor([0.5, float("nan")]),
                           "count": np.int64(3), "inf": math.inf})
    path = save_record(rec, tmp_path / "sub")
    assert path.name == "ch0-ce--seed1.json"
    data = json.loads(path.read_text())  # strict JSON: NaN/inf stored as null
    assert data["metrics"] == {"miou": 0.25, "per_class": [0.5, None], "count": 3, "inf": None}
    assert data["config"]["sizes"] == [1, 2]
    back = load_record(path)
    assert back.metrics["per_class"] == [0.5, None] and back.seed == 1
    assert back.provenance["pixelweight"] == __version__


def test_provenance_fields(monkeypatch):
    info = provenance("cpu")
    for key in ("pixelweight", "torch", "python", "platform", "created_utc", "git_commit", "git_dirty", "device"):
        assert key in info
    assert info["device"].startswith("cpu")
    monkeypatch.setenv("PIXELWEIGHT_GIT_COMMIT", "abc123")
    assert git_commit() == {"commit": "abc123", "dirty": None}


def test_git_commit_outside_a_repository(tmp_path, monkeypatch):
    monkeypatch.delenv("PIXELWEIGHT_GIT_COMMIT", raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert git_commit(tmp_path) == {"commit": "unknown", "dirty": None}


def test_load_records_filters_and_frame(tmp_path):
    save_record(_record(seed=0), tmp_path)
    save_record(_record(seed=1, metrics={"miou": 0.7}), tmp_path)
    save_record(_record(name="other", seed=0), tmp_path / "nested")
    assert len(load_records(tmp_path)) == 3
    recs = load_records(tmp_path, name="ch0-ce")
    frame = records_frame(recs)
    assert list(frame["seed"]) == [0, 1] and list(frame["miou"]) == [0.5, 0.7]
    assert load_records(tmp_path / "missing") == []


def test_config_differences():
    assert config_differences({"a": (1, 2), "device": "cuda"}, {"a": [1, 2], "device": "cpu"}) == {}
    diff = config_differences({"a": 1, "b": 2}, {"a": 1, "c": 3})
    assert diff == {"b": (2, "<missing>"), "c": ("<missing>", 3)}


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(name=""), "name"),
        (dict(name="has space"), "name"),
        (dict(name="../escape"), "name"),
        (dict(seed=1.0), "seed"),
        (dict(seed=True), "seed"),
        (dict(wall_time_s=-1), "wall_time_s"),
        (dict(config=[1]), "mappings"),
        (dict(provenance=None), "provenance must be a mapping"),
        (dict(history={"step": 1}), "history"),
        (dict(device=None), "device"),
    ],
)
def test_record_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        _record(**kw)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_record(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_record(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        load_record(bad)
    bad.write_text(json.dumps({"name": "x"}))
    with pytest.raises(ValueError, match="lacks the fields"):
        load_record(bad)
    newer = _record().to_dict()
    newer["schema_version"] = 99
    bad.write_text(json.dumps(newer))
    with pytest.raises(ValueError, match="newer"):
        load_record(bad)
    with pytest.raises(TypeError, match="RunRecord"):
        save_record({"name": "x"}, tmp_path)
    with pytest.raises(TypeError, match="cannot store"):
        save_record(_record(metrics={"f": object()}), tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="not a folder"):
        load_records(tmp_path / "file")


def test_committed_records_found_from_a_notebook_folder(tmp_path, monkeypatch):
    from pixelweight.results import RESULTS_ENV_VAR, committed_records, find_results_root

    monkeypatch.delenv(RESULTS_ENV_VAR, raising=False)
    (tmp_path / "_toc.yml").write_text("root: intro\n")
    save_record(_record(), tmp_path / "results" / "00_testbed")
    nb_dir = tmp_path / "notebooks" / "00_testbed"
    nb_dir.mkdir(parents=True)
    assert find_results_root(nb_dir) == tmp_path / "results"
    assert [r.name for r in committed_records("00_testbed", start=nb_dir)] == ["ch0-ce"]
    assert committed_records("01_other", start=nb_dir) == []
    monkeypatch.setenv(RESULTS_ENV_VAR, str(tmp_path / "results"))
    assert find_results_root("/") == tmp_path / "results"
    with pytest.raises(ValueError, match="folder name"):
        committed_records("../x")


def test_committed_frame(tmp_path, monkeypatch):
    from pixelweight.profiles import get_profile
    from pixelweight.results import RESULTS_ENV_VAR, committed_frame

    monkeypatch.setenv(RESULTS_ENV_VAR, str(tmp_path / "results"))
    full = get_profile("full").to_dict()
    empty = committed_frame("00_testbed", full, ["ch0-ce"])
    assert empty.empty and list(empty.columns) == ["name", "seed", "test_miou", "device", "commit", "config matches"]
    folder = tmp_path / "results" / "00_testbed"
    save_record(_record(seed=0, config={"profile": full}, metrics={"test_miou": 0.5}), folder)
    stale = dict(full, steps=full["steps"] + 1)
    save_record(_record(seed=1, config={"profile": stale}, metrics={"test_miou": 0.25}), folder)
    save_record(_record(name="other", seed=2, config={"profile": full}), folder)
    frame = committed_frame("00_testbed", full, ["ch0-ce"], columns=["seed", "test_miou", "absent"])
    assert frame["name"].tolist() == ["ch0-ce", "ch0-ce"]  # "other" is not asked for
    by_seed = frame.set_index("seed")
    assert by_seed.loc[0, "test_miou"] == 0.5 and by_seed.loc[1, "test_miou"] == 0.25
    assert by_seed["config matches"].to_dict() == {0: True, 1: False}
    assert by_seed["absent"].isna().all()
    with pytest.raises(TypeError, match="not one string"):
        committed_frame("00_testbed", full, "ch0-ce")
    with pytest.raises(TypeError, match="mapping"):
        committed_frame("00_testbed", get_profile("full"), ["ch0-ce"])


def test_record_with_null_provenance_names_the_file(tmp_path):
    data = _record().to_dict()
    data["provenance"] = None  # used to load, then break records_frame with AttributeError
    path = tmp_path / "ch0-ce--seed1.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"{path} is not a valid result record: provenance must be a mapping"):
        load_record(path)


def test_one_corrupt_record_names_the_file_or_is_skipped_on_request(tmp_path):
    save_record(_record(seed=0), tmp_path)
    save_record(_record(seed=2), tmp_path / "nested")
    bad = tmp_path / "nested" / "broken--seed1.json"
    bad.write_text('{"name": "broken", "seed"')  # a run killed while writing by hand, say
    with pytest.raises(ValueError, match=rf"{bad} is not valid JSON"):
        load_records(tmp_path)
    with pytest.warns(UserWarning, match=rf"skipping an invalid result record: {bad} is not valid JSON"):
        records = load_records(tmp_path, skip_invalid=True)
    assert sorted(r.seed for r in records) == [0, 2]
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="binary.json is not valid JSON"):
        load_record(tmp_path / "binary.json")
    with pytest.raises(TypeError, match="skip_invalid"):
        load_records(tmp_path, skip_invalid="yes")


def test_provenance_records_the_numeric_packages():
    from pixelweight.results import NUMERIC_PACKAGES, package_differences, package_versions, provenance

    info = provenance("cpu")
    assert set(info["packages"]) == set(NUMERIC_PACKAGES)
    assert info["packages"]["torch"] and info["packages"]["numpy"]
    assert package_differences(info["packages"]) == {}
    older = {**info["packages"], "numpy": "1.0.0"}
    assert package_differences(older) == {"numpy": ("1.0.0", package_versions(("numpy",))["numpy"])}
    assert package_versions(("no-such-package-xyz",)) == {"no-such-package-xyz": None}
