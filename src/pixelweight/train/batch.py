r"""Batches of any structure: move them to a device, pick a part of them.

A batch (or a model's output) may be a tensor, a tuple or list (named tuples included), a
mapping, a dataclass, any object with a ``.to(device)`` method, or a nesting of these.
:func:`move_to_device` moves every tensor in it; :func:`select` picks one part by an
index, a key, an attribute name or a function.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any, Callable, Union

import torch

#: How a part of a batch or of a model's output is named: ``None`` (the whole object), an
#: ``int`` (a position in a tuple or list), a ``str`` (a key of a mapping, else an
#: attribute, e.g. a dataclass field) or a callable ``obj -> part``.
Selector = Union[None, int, str, Callable[[Any], Any]]


def _map(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor], other: Callable[[Any], Any]) -> Any:
    """Apply ``fn`` to every tensor of ``obj``, rebuilding its containers; ``other`` handles
    the leaves that are neither tensors nor containers."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a named tuple
        return type(obj)(*(_map(v, fn, other) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_map(v, fn, other) for v in obj)
    if isinstance(obj, Mapping):
        items = {k: _map(v, fn, other) for k, v in obj.items()}
        try:
            return type(obj)(items)
        except TypeError:  # a mapping type that cannot be built from a dict
            return items
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        new = copy.copy(obj)
        for field in dataclasses.fields(obj):
            object.__setattr__(new, field.name, _map(getattr(obj, field.name), fn, other))
        return new
    return other(obj)


def move_to_device(batch: Any, device: Union[str, torch.device], non_blocking: bool = False) -> Any:
    """``batch`` with every tensor moved to ``device``, whatever its structure.

    Tensors are moved with ``.to(device, non_blocking=non_blocking)`` (a tensor already there
    is returned as is); tuples, lists, named tuples, mappings and dataclasses are rebuilt
    around their moved contents (a dataclass is shallow-copied, so ``frozen`` ones work); any
    other object with a callable ``.to`` gets ``obj.to(device)``; everything else (numbers,
    strings, ``None``) is left unchanged.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.train import move_to_device
    >>> batch = (torch.zeros(2, 1, 4, 4), {"mask": torch.ones(2, 4, 4), "id": ["a", "b"]})
    >>> moved = move_to_device(batch, "cpu")
    >>> type(moved[1]).__name__, moved[1]["id"]
    ('dict', ['a', 'b'])
    """
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a string or torch.device, got {type(device).__name__}")
    device = torch.device(device)

    def other(obj):
        to = getattr(obj, "to", None)
        return to(device) if callable(to) and not isinstance(obj, (str, bytes, type)) else obj

    return _map(batch, lambda t: t.to(device, non_blocking=non_blocking), other)


def float32(outputs: Any) -> Any:
    """``outputs`` with every floating-point tensor in float32 (``.float()``; a float32
    tensor is returned as is), other tensors and leaves unchanged."""
    return _map(outputs, lambda t: t.float() if t.is_floating_point() else t, lambda obj: obj)


def select(obj: Any, selector: Selector, what: str = "value") -> Any:
    """The part of ``obj`` that ``selector`` names.

    ``selector`` is ``None`` (``obj`` itself), an ``int`` (an item of a tuple or list), a
    ``str`` (a key of a mapping, else an attribute such as a dataclass field) or a
    callable ``obj -> part``. The harness's :class:`~pixelweight.train.Task` names the model
    input, the targets and the model output this way.

    Examples
    --------
    >>> from pixelweight.train import select
    >>> select({"mask": 1, "weights": 2}, "weights"), select((10, 20), -1), select(5, None)
    (2, 20, 5)

    Raises
    ------
    ValueError
        When the index, key or attribute does not exist, naming what exists.
    TypeError
        When ``selector`` is of another type, or an index is given for an object that
        is not a tuple or list.
    """
    if selector is None:
        return obj
    if isinstance(selector, bool):
        raise TypeError(f"the selector of the {what} must be None, an int, a str or a callable, got a bool")
    if isinstance(selector, int):
        if not isinstance(obj, (tuple, list)):
            raise TypeError(f"cannot take item {selector} of the {what}: it is a {type(obj).__name__}, "
                            "not a tuple or list")
        if not -len(obj) <= selector < len(obj):
            raise ValueError(f"the {what} has {len(obj)} items, there is no item {selector}")
        return obj[selector]
    if isinstance(selector, str):
        if isinstance(obj, Mapping):
            if selector not in obj:
                raise ValueError(f"the {what} has no key {selector!r}; it has {sorted(map(str, obj))}")
            return obj[selector]
        if not hasattr(obj, selector):
            fields = ([f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj)
                      else getattr(obj, "_fields", None))
            known = f"; it has the fields {list(fields)}" if fields else ""
            raise ValueError(f"the {what} ({type(obj).__name__}) has no key or attribute {selector!r}{known}")
        return getattr(obj, selector)
    if callable(selector):
        return selector(obj)
    raise TypeError(f"the selector of the {what} must be None, an int, a str or a callable, "
                    f"got {type(selector).__name__}")


def check_selector(selector: Any, name: str) -> Selector:
    """Return ``selector`` if it is a :data:`Selector`, else raise :class:`TypeError`."""
    if selector is None or callable(selector) or (
        isinstance(selector, (int, str)) and not isinstance(selector, bool)
    ):
        return selector
    raise TypeError(f"{name} must be None, an int, a str or a callable, got {type(selector).__name__}")
