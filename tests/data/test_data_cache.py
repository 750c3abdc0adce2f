"""The on-disk cache of generated splits."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from pixelweight.data import CACHE_ENV_VAR, GENERATOR_VERSION, DigitScenes, SalientDigits, _cache, default_cache_dir

KW = dict(num_samples=6, size=32, digit_size=(10, 16), seed=2)


def _no_generation(self, rng):
    raise AssertionError("the generator ran although the split is cached")


def test_cache_file_is_named_by_the_config_hash(tmp_path):
    ds = DigitScenes(split="val", cache_dir=tmp_path, **KW)
    meta = _cache.cache_meta("DigitScenes", ds.config)
    digest = hashlib.sha256(meta.encode()).hexdigest()[:20]
    assert ds.cache_path == tmp_path / f"digitscenes-val-{digest}.npz"
    assert sorted(p.name for p in tmp_path.iterdir()) == [ds.cache_path.name]  # no temporary file left
    assert f'"version":{GENERATOR_VERSION}' in meta


def test_cache_hit_is_used_and_identical(tmp_path, monkeypatch):
    first = DigitScenes(cache_dir=tmp_path, **KW)
    mtime = first.cache_path.stat().st_mtime_ns
    monkeypatch.setattr(DigitScenes, "_generate", _no_generation)
    second = DigitScenes(cache_dir=tmp_path, **KW)
    assert second.cache_path == first.cache_path
    assert second.cache_path.stat().st_mtime_ns == mtime
    for name in ("images", "labels", "placements", "pixel_counts"):
        a, b = getattr(first, name), getattr(second, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    # and a cached split equals a freshly generated one
    monkeypatch.undo()
    fresh = DigitScenes(cache_dir=False, **KW)
    assert np.array_equal(fresh.images, second.images) and np.array_equal(fresh.labels, second.labels)


def test_other_config_other_file(tmp_path):
    a = DigitScenes(cache_dir=tmp_path, **KW)
    b = DigitScenes(cache_dir=tmp_path, **{**KW, "seed": 3})
    c = SalientDigits(cache_dir=tmp_path, num_samples=3, size=48, seed=2)
    assert len({a.cache_path, b.cache_path, c.cache_path}) == 3
    assert c.cache_path.name.startswith("salientdigits-train-")
    assert len(list(tmp_path.glob("*.npz"))) == 3


def test_cache_disabled_writes_nothing(tmp_path, _isolated_cache):
    ds = DigitScenes(cache_dir=False, **KW)
    assert ds.cache_path is None
    assert not _isolated_cache.exists()


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch, _isolated_cache):
    ds = DigitScenes(**KW)  # cache_dir=None
    assert ds.cache_path.parent == _isolated_cache and ds.cache_path.is_file()
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv(CACHE_ENV_VAR)
    assert default_cache_dir() == Path.home() / ".cache" / "pixelweight"


def test_string_cache_dir_is_created(tmp_path):
    folder = tmp_path / "a" / "b"
    ds = DigitScenes(cache_dir=str(folder), **KW)
    assert ds.cache_path.parent == folder and ds.cache_path.is_file()


def test_corrupt_cache_file_is_regenerated(tmp_path):
    good = DigitScenes(cache_dir=tmp_path, **KW)
    good.cache_path.write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="ignoring unreadable cache file"):
        again = DigitScenes(cache_dir=tmp_path, **KW)
    assert np.array_equal(again.images, good.images)
    # the file was rewritten and is now a valid hit
    with np.load(again.cache_path) as data:
        assert "images" in data.files


def test_cache_file_of_another_config_is_not_trusted(tmp_path):
    good = DigitScenes(cache_dir=tmp_path, **KW)
    other = DigitScenes(cache_dir=False, **{**KW, "seed": 9})
    # plant the other split's arrays under this config's name, with the other config's meta
    arrays = {
        "images": np.rint(other.images[:, 0] * 255).astype(np.uint8),
        "labels": other.labels,
        "placements": other.placements,
    }
    _cache._save(good.cache_path, arrays, _cache.cache_meta("DigitScenes", other.config))
    with pytest.warns(UserWarning, match="holds another configuration; regenerating"):
        again = DigitScenes(cache_dir=tmp_path, **KW)
    assert np.array_equal(again.images, good.images)


def test_unwritable_cache_only_warns(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="could not write cache file"):
        ds = DigitScenes(cache_dir=blocker / "cache", **KW)
    assert len(ds) == KW["num_samples"]


def test_failed_replace_leaves_no_temporary_file(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise PermissionError("simulated")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.warns(UserWarning, match=r"could not write cache file .* \(simulated\)"):
        DigitScenes(cache_dir=tmp_path, **KW)
    assert list(tmp_path.iterdir()) == []


def test_write_goes_through_a_temporary_file_and_os_replace(tmp_path, monkeypatch):
    calls = []
    real_replace = os.replace

    def spy(src, dst):
        calls.append((Path(src), Path(dst)))
        assert Path(src).is_file() and not Path(dst).exists()
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    ds = DigitScenes(cache_dir=tmp_path, **KW)
    assert len(calls) == 1
    src, dst = calls[0]
    assert dst == ds.cache_path and src.parent == tmp_path and src.suffix == ".tmp"


def test_concurrent_builders_agree_and_leave_one_file(tmp_path):
    """Several ranks building the same split at once: one valid file, identical arrays."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=4) as pool:
        built = list(pool.map(lambda _: DigitScenes(cache_dir=tmp_path, **KW), range(4)))
    assert [p.name for p in tmp_path.iterdir()] == [built[0].cache_path.name]
    for ds in built[1:]:
        assert np.array_equal(ds.images, built[0].images) and np.array_equal(ds.labels, built[0].labels)


def test_another_process_generates_the_same_bits(tmp_path):
    """Determinism does not hang on the process (hash seeds, import order): a fresh
    interpreter with another PYTHONHASHSEED writes a cache file this one reads as a hit."""
    import subprocess
    import sys

    code = (
        "from pixelweight.data import DigitScenes;"
        f"DigitScenes(cache_dir={str(tmp_path)!r}, num_samples=6, size=32, digit_size=(10, 16), seed=2)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    (path,) = tmp_path.iterdir()
    fresh = DigitScenes(cache_dir=False, **KW)
    with np.load(path) as data:
        np.testing.assert_array_equal(data["images"], np.rint(fresh.images[:, 0] * 255).astype(np.uint8))
        np.testing.assert_array_equal(data["labels"], fresh.labels)
        np.testing.assert_array_equal(data["placements"], fresh.placements)


# --- every bad cache file is detected and regenerated (issue 10, defect 6) ----------------


def _planted(tmp_path, mutate):
    """Write the good split's arrays, changed by ``mutate``, under its own name and meta."""
    good = DigitScenes(cache_dir=tmp_path, **KW)
    arrays = {
        "images": np.rint(good.images[:, 0] * 255).astype(np.uint8),
        "labels": good.labels.copy(),
        "placements": good.placements.copy(),
    }
    mutate(arrays)
    _cache._save(good.cache_path, arrays, _cache.cache_meta("DigitScenes", good.config))
    return good


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda a: a.update(images=a["images"][:4]), r"array 'images' has shape \(4, 32, 32\), expected \(6, 32, 32\)"),
        (lambda a: a.update(labels=a["labels"][:5], images=a["images"][:5]), r"has shape \(5, 32, 32\)"),
        (lambda a: a.update(images=a["images"].astype(np.float32)), "array 'images' has dtype float32, expected uint8"),
        (lambda a: a.update(labels=a["labels"].astype(np.int64)), "array 'labels' has dtype int64, expected uint8"),
        (lambda a: a.update(placements=a["placements"][:, :3]), r"array 'placements' has shape \(\d+, 3\)"),
        (lambda a: a.update(images=a["images"][:, :16]), r"has shape \(6, 16, 32\)"),
        (lambda a: a.pop("labels"), r"missing \['labels'\]"),
        (lambda a: a.update(extra=np.zeros(3)), r"unexpected \['extra'\]"),
    ],
)
def test_cache_file_with_right_meta_but_wrong_arrays_is_regenerated(tmp_path, mutate, reason):
    good = _planted(tmp_path, mutate)
    with pytest.warns(UserWarning, match=reason + ".*regenerating"):
        again = DigitScenes(cache_dir=tmp_path, **KW)
    assert len(again) == KW["num_samples"]
    assert np.array_equal(again.images, good.images) and np.array_equal(again.labels, good.labels)
    assert again.labels.dtype == np.uint8 and not hasattr(again, "extra")
    third = DigitScenes(cache_dir=tmp_path, **KW)  # the rewritten file is a silent, valid hit
    assert np.array_equal(third.labels, good.labels)


def test_npy_file_at_the_cache_path_is_regenerated(tmp_path):
    good = DigitScenes(cache_dir=tmp_path, **KW)
    with open(good.cache_path, "wb") as f:  # np.save to an open file keeps the .npz name
        np.save(f, np.zeros((2, 3)))
    with pytest.warns(UserWarning, match=r"single float64 array of shape \(2, 3\).*not an .npz archive"):
        again = DigitScenes(cache_dir=tmp_path, **KW)
    assert np.array_equal(again.images, good.images)
    with np.load(again.cache_path) as data:
        assert "images" in data.files


def test_pickle_at_the_cache_path_is_not_unpickled(tmp_path):
    import pickle

    good = DigitScenes(cache_dir=tmp_path, **KW)
    good.cache_path.write_bytes(pickle.dumps({"images": 1}))
    with pytest.warns(UserWarning, match="ignoring unreadable cache file"):
        again = DigitScenes(cache_dir=tmp_path, **KW)
    assert np.array_equal(again.images, good.images)


@pytest.mark.parametrize("cls, kw", [(DigitScenes, KW), (SalientDigits, dict(num_samples=3, size=48, seed=2)),
                                     ("ClutteredDigits", dict(num_samples=3, size=48, seed=2))])
def test_array_spec_describes_what_the_generator_returns(cls, kw):
    if isinstance(cls, str):
        import pixelweight.data

        cls = getattr(pixelweight.data, cls)
    ds = cls(cache_dir=False, **kw)
    assert _cache.check_arrays(ds._generate(ds._rng()), ds._array_spec()) is None


def test_unreachable_cache_folder_warns_and_generates_in_memory(tmp_path, monkeypatch):
    """A cache path whose parent cannot be traversed (stat raises PermissionError; root
    traverses everything, so the error is simulated) is no crash: warn, generate, no file."""
    real_is_file = Path.is_file

    def refuse(self):
        if self.parent == tmp_path / "locked":
            raise PermissionError(13, "Permission denied", str(self))
        return real_is_file(self)

    monkeypatch.setattr(Path, "is_file", refuse)
    with pytest.warns(UserWarning, match=r"cannot use the cache folder .*locked .*Permission denied.*without cache"):
        ds = DigitScenes(cache_dir=tmp_path / "locked", **KW)
    monkeypatch.undo()
    assert np.array_equal(ds.labels, DigitScenes(cache_dir=False, **KW).labels)
    assert not (tmp_path / "locked").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root traverses any folder")
def test_untraversable_parent_folder_warns_and_generates(tmp_path):
    locked = tmp_path / "locked"
    (locked / "cache").mkdir(parents=True)
    locked.chmod(0)
    try:
        with pytest.warns(UserWarning, match="cache"):
            ds = DigitScenes(cache_dir=locked / "cache", **KW)
    finally:
        locked.chmod(0o755)
    assert len(ds) == KW["num_samples"]
