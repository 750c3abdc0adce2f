"""Fixtures of the data tests: an isolated cache folder and writers of small real-data folders."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import pytest
from PIL import Image

from pixelweight.data import CACHE_ENV_VAR


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test's default cache folder is a fresh temporary one, never ~/.cache."""
    folder = tmp_path / "default-cache"
    monkeypatch.setenv(CACHE_ENV_VAR, str(folder))
    return folder


def voc_palette() -> list:
    """The PASCAL VOC colour map (bit-interleaved), 256 RGB entries flattened."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def smooth_rgb(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth uint8 RGB image (gradients survive JPEG nearly unchanged)."""
    yy, xx = np.mgrid[0:h, 0:w]
    phase = np.random.default_rng(seed).uniform(0, 1, size=3)
    channels = [127 + 100 * np.sin(2 * np.pi * (yy / h + xx / w + p)) for p in phase]
    return np.stack(channels, axis=-1).astype(np.uint8)


def write_palette_png(path: Path, labels: np.ndarray) -> None:
    img = Image.fromarray(labels.astype(np.uint8))  # mode "L" ...
    img.putpalette(voc_palette())  # ... becomes "P" with the same indices
    img.save(path)


def make_voc(
    root: Path, splits: Dict[str, Sequence[str]], size=(20, 24), num_classes: int = 21
) -> Dict[str, np.ndarray]:
    """Write a VOC-style folder; returns ``{id: label array}`` (with a 255 border)."""
    h, w = size
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    labels = {}
    ids = sorted({i for members in splits.values() for i in members})
    for k, image_id in enumerate(ids):
        Image.fromarray(smooth_rgb(h, w, k)).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        lab = np.random.default_rng(k).integers(0, num_classes, size=(h, w)).astype(np.uint8)
        lab[0, :] = lab[-1, :] = 255  # VOC's border / ignore value
        write_palette_png(root / "SegmentationClass" / f"{image_id}.png", lab)
        labels[image_id] = lab
    for split, members in splits.items():
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in members))
    return labels


def make_saliency(root: Path, stems: Sequence[str], size=(16, 18)) -> Dict[str, np.ndarray]:
    """Write ``root/images/<stem>.jpg`` and ``root/masks/<stem>.png`` (grey 0/255 with a
    few anti-aliased grey levels); returns ``{stem: grey mask}``."""
    h, w = size
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    masks = {}
    for k, stem in enumerate(stems):
        Image.fromarray(smooth_rgb(h, w, 100 + k)).save(root / "images" / f"{stem}.jpg", quality=95)
        grey = np.zeros((h, w), np.uint8)
        grey[3 : h - 3, 4 : w - 4] = 255
        grey[3, 4 : w - 4] = 127  # just below the default threshold
        grey[h - 4, 4 : w - 4] = 128  # exactly at it
        Image.fromarray(grey).save(root / "masks" / f"{stem}.png")
        masks[stem] = grey
    return masks


@pytest.fixture
def voc_writer():
    """The VOC folder writer :func:`make_voc` (fixtures avoid importing conftest by name)."""
    return make_voc


@pytest.fixture
def saliency_writer():
    """The saliency folder writer :func:`make_saliency`."""
    return make_saliency


@pytest.fixture
def palette_png_writer():
    return write_palette_png
