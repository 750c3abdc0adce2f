"""Loaders for real data in their usual on-disk layouts.

Two layouts cover the papers' data sets:

- **VOC-style segmentation** (PASCAL VOC 2012, and the many sets that copy its layout)::

      root/JPEGImages/<id>.jpg
      root/SegmentationClass/<id>.png          # palette ("P") PNG: pixel value = class index
      root/ImageSets/Segmentation/<split>.txt  # one id per line

  Class indices are read from the palette PNG as they are (``numpy.asarray`` of a
  ``"P"`` image gives the indices, not the colours). The value 255 marks object borders
  and "difficult" pixels; it is kept as is and exposed as ``ignore_index = 255``, to be
  passed as ``ignore_index`` to the losses and metrics.

- **Saliency folders** (DUTS, ECSSD, HKU-IS, ...): a folder of images and a folder of
  masks, paired by file stem (``img/0001.jpg`` <-> ``gt/0001.png``). Masks are read as
  8-bit grey levels (bilevel, palette and RGB files are converted); pixels
  ``>= threshold`` (default 128) are foreground, which tolerates the anti-aliased edges
  of the published masks.

Both return ``(image, target)`` with ``image`` a float32 (3, H, W) tensor in [0, 1]
(greyscale images are converted to RGB) and ``target`` a long (H, W) tensor. Files are
read lazily, one item at a time; the folder structure is checked at construction.
Missing folders or files raise :class:`FileNotFoundError`; malformed contents raise
:class:`ValueError`.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .._validation import check_int

#: The 21 classes of PASCAL VOC 2012 segmentation, index = label value.
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
#: Label value of border / "difficult" pixels in VOC-style masks.
VOC_IGNORE_INDEX = 255
#: PIL modes accepted for saliency masks; all are read as grey levels 0..255.
SALIENCY_MASK_MODES = ("1", "L", "P", "RGB")
#: File extensions recognised as images (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _as_path(value, name: str) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or path, got {type(value).__name__} ({value!r})")
    return Path(value).expanduser()


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {path}")
    return path


def _missing_error(what: str, missing: Sequence[str], where: Path) -> FileNotFoundError:
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return FileNotFoundError(f"{len(missing)} {what} missing in {where}: {shown}")


def _unreadable(err: BaseException, path: Path, what: str) -> BaseException:
    """The error to raise for a file PIL cannot decode.

    Operating-system errors (missing file, no permission: an ``OSError`` with an
    ``errno``) pass unchanged. PIL's decoding errors — :class:`PIL.UnidentifiedImageError`
    for a file that is no image, an errno-less ``OSError`` such as "image file is
    truncated", ``SyntaxError``/``ValueError`` from a broken header — become a
    :class:`ValueError` that names the file (PIL's messages do not).
    """
    if isinstance(err, OSError) and not isinstance(err, UnidentifiedImageError) and err.errno is not None:
        return err
    reason = "not an image file PIL can read" if isinstance(err, UnidentifiedImageError) else str(err)
    return ValueError(f"cannot read {what} {path}: {reason}")


def _read_rgb(path: Path) -> torch.Tensor:
    """An image file as a float32 (3, H, W) tensor in [0, 1]: ``x = value / 255``."""
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"), dtype=np.float32) / np.float32(255.0)
    except (OSError, SyntaxError, ValueError) as err:
        raise _unreadable(err, path, "image") from err
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _read_mask(path: Path, modes: Tuple[str, ...], what: str, grey: bool) -> np.ndarray:
    """A mask as a (H, W) uint8 array: its raw values (palette indices for a ``"P"`` image),
    or with ``grey=True`` its grey levels (``PIL`` conversion to ``"L"``). A mode outside
    ``modes`` is an error."""
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode in modes:
                return np.array(img.convert("L") if grey else img, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as err:
        raise _unreadable(err, path, what) from err
    raise ValueError(f"{what} {path} must be a {' or '.join(repr(m) for m in modes)} image, got mode {mode!r}")


def _check_id(image_id: str, list_file: Path) -> str:
    """An id of a split file must name a file inside the data folders: no path separator,
    no drive, not ``.`` or ``..``, no NUL (``../x`` would read outside the root)."""
    bad = (
        any(c in image_id for c in "/\\\0")
        or image_id in (".", "..")
        or PureWindowsPath(image_id).drive
        or PurePosixPath(image_id).is_absolute()
    )
    if bad:
        raise ValueError(
            f"id {image_id!r} in {list_file} is not a plain file name (no path separators, "
            "'..' or drive): ids must name files inside JPEGImages/ and SegmentationClass/"
        )
    return image_id


def _check_same_size(image: torch.Tensor, target: np.ndarray, image_path: Path, target_path: Path) -> None:
    if tuple(image.shape[1:]) != target.shape:
        raise ValueError(
            f"image {image_path} is {tuple(image.shape[1:])} (H, W) but its mask {target_path} is {target.shape}"
        )


def _check_transform(transform) -> Optional[Callable]:
    if transform is not None and not callable(transform):
        raise TypeError(f"transform must be None or callable, got {type(transform).__name__}")
    return transform


class VOCSegmentation(Dataset):
    """A VOC-style semantic segmentation folder (see the module docstring).

    Parameters
    ----------
    root : str or path
        The folder holding ``JPEGImages``, ``SegmentationClass`` and ``ImageSets``
        (for PASCAL VOC 2012: ``.../VOCdevkit/VOC2012``).
    split : str, default "train"
        Name of the id list ``ImageSets/Segmentation/<split>.txt`` (``"train"``,
        ``"val"``, ``"trainval"`` or any other list there).
    class_names : sequence of str, default :data:`VOC_CLASSES`
        Class names, index = label value; their number is ``num_classes``.
    transform : callable, optional
        ``transform(image, target) -> (image, target)`` applied to the tensors (joint
        augmentation such as random crops).

    Attributes
    ----------
    ids : list of str
        Image ids in list order.
    ignore_index : int
        255: border / difficult pixels, kept as is in the targets.
    num_classes, class_names, config

    Raises
    ------
    FileNotFoundError
        If a folder, the id list, or an image or mask named in it is missing.
    ValueError
        If the id list is empty or holds an id that is not a plain file name (a path
        separator, ``..``, a drive: ids never reach outside the folders); on access, if
        an image or mask cannot be decoded (not an image, truncated: the error names the
        file), a mask is not a palette/greyscale PNG, has another size than its image, or
        holds a value outside ``[0, num_classes) ∪ {255}``.
    """

    ignore_index = VOC_IGNORE_INDEX

    def __init__(self, root, split: str = "train", class_names: Sequence[str] = VOC_CLASSES, transform=None) -> None:
        root = _as_path(root, "root")
        if not isinstance(split, str):
            raise TypeError(f"split must be a str, got {type(split).__name__} ({split!r})")
        if isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names):
            raise TypeError("class_names must be a sequence of str")
        if not 2 <= len(class_names) <= VOC_IGNORE_INDEX:
            raise ValueError(f"class_names must name between 2 and 255 classes, got {len(class_names)}")
        self.transform = _check_transform(transform)
        _require_dir(root, "dataset root")
        self.image_dir = _require_dir(root / "JPEGImages", "image")
        self.mask_dir = _require_dir(root / "SegmentationClass", "mask")
        lists = _require_dir(root / "ImageSets" / "Segmentation", "id list")
        list_file = lists / f"{split}.txt"
        if not list_file.is_file():
            available = sorted(p.stem for p in lists.glob("*.txt"))
            raise FileNotFoundError(f"no id list for split {split!r}: {list_file} (available: {available})")
        self.ids: List[str] = [
            _check_id(line.strip(), list_file) for line in list_file.read_text().splitlines() if line.strip()
        ]
        if not self.ids:
            raise ValueError(f"id list {list_file} is empty")
        for folder, ext, what in ((self.image_dir, ".jpg", "images"), (self.mask_dir, ".png", "masks")):
            missing = [i for i in self.ids if not (folder / f"{i}{ext}").is_file()]
            if missing:
                raise _missing_error(f"{what} (*{ext}) listed in {list_file.name}", missing, folder)
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        self.config: Dict[str, object] = {"root": str(root), "split": split, "num_classes": self.num_classes}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        image_id = self.ids[index]
        image_path = self.image_dir / f"{image_id}.jpg"
        mask_path = self.mask_dir / f"{image_id}.png"
        image = _read_rgb(image_path)
        target = _read_mask(mask_path, ("P", "L"), "segmentation mask", grey=False)
        _check_same_size(image, target, image_path, mask_path)
        bad = (target >= self.num_classes) & (target != self.ignore_index)
        if bad.any():
            raise ValueError(
                f"mask {mask_path} holds values {np.unique(target[bad]).tolist()[:5]} outside "
                f"[0, {self.num_classes - 1}] and the ignore value {self.ignore_index}"
            )
        target = torch.from_numpy(target.astype(np.int64))
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target


def _stems(folder: Path, extensions: Tuple[str, ...], what: str) -> Dict[str, Path]:
    """``{stem: path}`` of the folder's files with the given extensions; a stem twice is an error."""
    found: Dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in extensions:
            if path.stem in found:
                raise ValueError(f"two {what} share the stem {path.stem!r}: {found[path.stem].name}, {path.name}")
            found[path.stem] = path
    return found


class SaliencyFolder(Dataset):
    """A folder of images and a folder of binary masks paired by file stem.

    Parameters
    ----------
    image_dir, mask_dir : str or path
        The two folders. Files with an extension in :data:`IMAGE_EXTENSIONS` count.
    threshold : int, default 128
        A mask pixel with grey value ``>= threshold`` is foreground (1), else 0.
    transform : callable, optional
        ``transform(image, target) -> (image, target)``.

    Attributes
    ----------
    stems : list of str
        Sorted stems of the pairs.
    num_classes : int
        2 (background, foreground).
    ignore_index : None
    class_names, config

    Raises
    ------
    FileNotFoundError
        If a folder is missing, an image has no mask or a mask has no image.
    ValueError
        If a folder holds no image, two files of one folder share a stem; on access, if an
        image or mask cannot be decoded (not an image, truncated: the error names the
        file), a mask's mode is not one of the PIL modes ``1``, ``L``, ``P``, ``RGB`` or its size differs
        from its image's.
    """

    num_classes = 2
    class_names = ("background", "foreground")
    ignore_index = None

    def __init__(self, image_dir, mask_dir, threshold: int = 128, transform=None) -> None:
        image_dir = _require_dir(_as_path(image_dir, "image_dir"), "image")
        mask_dir = _require_dir(_as_path(mask_dir, "mask_dir"), "mask")
        self.threshold = check_int(threshold, "threshold", minimum=1)
        if self.threshold > 255:
            raise ValueError(f"threshold must be <= 255, got {self.threshold}")
        self.transform = _check_transform(transform)
        images = _stems(image_dir, IMAGE_EXTENSIONS, "images")
        masks = _stems(mask_dir, IMAGE_EXTENSIONS, "masks")
        if not images:
            raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {image_dir}")
        for a, b, where, what in ((images, masks, mask_dir, "masks"), (masks, images, image_dir, "images")):
            missing = sorted(set(a) - set(b))
            if missing:
                raise _missing_error(f"{what} for the stems", missing, where)
        self.stems = sorted(images)
        self._pairs = [(images[s], masks[s]) for s in self.stems]
        self.config: Dict[str, object] = {
            "image_dir": str(image_dir),
            "mask_dir": str(mask_dir),
            "threshold": self.threshold,
        }

    def __len__(self) -> int:
        return len(self._pairs)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        image_path, mask_path = self._pairs[index]
        image = _read_rgb(image_path)
        mask = _read_mask(mask_path, SALIENCY_MASK_MODES, "saliency mask", grey=True)
        _check_same_size(image, mask, image_path, mask_path)
        target = torch.from_numpy((mask >= self.threshold).astype(np.int64))  # 1 where grey >= threshold
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target
