"""Data sets of the book: synthetic testbeds built from bundled digits, and real-data loaders.

Synthetic (no download: made from :func:`sklearn.datasets.load_digits` and, optionally,
the textures bundled with scikit-image):

- :class:`DigitScenes`: multi-class segmentation with a Zipf-controlled class imbalance
  (recall loss, loss max-pooling, spectral analysis).
- :class:`SalientDigits`: binary foreground maps and sloppy versions of their ground
  truth, :func:`degrade_mask` (Weighted F-measure).
- :class:`ClutteredDigits`: classifying a small digit on a large cluttered canvas
  (saliency sampler).

All three split the 1797 source digits once and for all (:func:`digit_split`), are
bit-identical for a given ``seed`` and cache each generated split as ``.npz`` under
``cache_dir`` (default ``$PIXELWEIGHT_CACHE`` or ``~/.cache/pixelweight``;
``cache_dir=False`` turns caching off).

:class:`WithWFMTerms` serves a data set's masks with their Weighted-F-measure terms,
computed once per image; :class:`BlockAnnotated` serves block-wise weak labels (majority or
soft), and :class:`WeakDigitScenes` is :class:`DigitScenes` with a block-wise annotated
training split (spectral analysis).

Real data: :class:`VOCSegmentation` (VOC folder layout, 255 = ignore) and
:class:`SaliencyFolder` (images and masks paired by file stem).
"""

from __future__ import annotations

from ._cache import CACHE_ENV_VAR, GENERATOR_VERSION, default_cache_dir
from ._digits import BACKGROUNDS, PLACEMENT_COLUMNS, SPLITS, STROKE_THRESHOLD, digit_split
from .cluttered import ClutteredDigits
from .real import IMAGE_EXTENSIONS, VOC_CLASSES, VOC_IGNORE_INDEX, SaliencyFolder, VOCSegmentation
from .salient import DEGRADATIONS, SalientDigits, degrade_mask
from .scenes import DigitScenes
from .transforms import PadCrop
from .terms import WithWFMTerms
from .weak import ANNOTATIONS, BlockAnnotated, WeakDigitScenes

__all__ = [
    "ANNOTATIONS",
    "BlockAnnotated",
    "WeakDigitScenes",
    "BACKGROUNDS",
    "CACHE_ENV_VAR",
    "ClutteredDigits",
    "DEGRADATIONS",
    "DigitScenes",
    "GENERATOR_VERSION",
    "IMAGE_EXTENSIONS",
    "PadCrop",
    "PLACEMENT_COLUMNS",
    "SPLITS",
    "STROKE_THRESHOLD",
    "SaliencyFolder",
    "SalientDigits",
    "VOCSegmentation",
    "VOC_CLASSES",
    "WithWFMTerms",
    "VOC_IGNORE_INDEX",
    "default_cache_dir",
    "degrade_mask",
    "digit_split",
]
