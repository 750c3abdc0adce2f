"""Where a run executes: seeding, the device, the distributed context and mixed precision."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import random

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .._validation import check_int


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and PyTorch (all devices).

    Parameters
    ----------
    seed : int
        A non-negative seed; NumPy gets ``seed % 2**32``.
    deterministic : bool, default False
        Also ask PyTorch for deterministic algorithms (a warning, not an error, where
        none exists), which makes CUDA runs repeatable at some cost in speed. CPU runs
        are repeatable without it.
    """
    check_int(seed, "seed", minimum=0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA if available, else MPS, else CPU; any other name is checked.

    Raises
    ------
    TypeError
        When ``device`` is neither a string nor a :class:`torch.device`.
    ValueError
        For an unknown device name, or CUDA/MPS asked for where it is not available.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"device must be a string or torch.device, got {type(device).__name__}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}: {err}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if resolved.type == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ValueError(f"device {device!r} requested but MPS is not available")
    return resolved


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@dataclasses.dataclass
class DistContext:
    """The process's place in a distributed run (``world_size == 1`` when not distributed).

    Attributes
    ----------
    rank, world_size, local_rank : int
        As ``torchrun`` sets them (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).
    initialized_here : bool
        Whether :meth:`from_env` created the process group (it is then destroyed at exit).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that shows progress and writes records."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether the run is distributed (more than one process)."""
        return self.world_size > 1

    @classmethod
    def from_env(cls, device_preference: str = "auto") -> "DistContext":
        """Join the process group that ``torchrun`` describes in the environment, if any
        (NCCL when CUDA is used, gloo otherwise)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        initialized_here = False
        if not dist.is_initialized():
            use_nccl = torch.cuda.is_available() and device_preference in ("auto", "cuda")
            dist.init_process_group(backend="nccl" if use_nccl else "gloo")
            atexit.register(_destroy_process_group)
            initialized_here = True
        return cls(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            initialized_here=initialized_here,
        )

    def device(self, preference: str) -> torch.device:
        """This process's device: :func:`resolve_device` alone; under DDP the local GPU
        (``cuda:<local_rank>``) or the CPU."""
        if not self.enabled:
            return resolve_device(preference)
        if torch.cuda.is_available() and preference in ("auto", "cuda"):
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def all_reduce_mean(self, value: float, device: torch.device) -> float:
        """The mean of ``value`` over the ranks (``value`` itself when not distributed)."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return float(tensor) / self.world_size


def autocast(device: torch.device, enabled: bool):
    """``(context, scaler)``: bf16 autocast on CUDA where supported, else fp16 autocast
    with a :class:`torch.amp.GradScaler`; no autocast and no scaler elsewhere or when
    ``enabled`` is false."""
    if not (enabled and device.type == "cuda"):
        return contextlib.nullcontext(), None
    if torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16), None
    return torch.autocast("cuda", dtype=torch.float16), torch.amp.GradScaler("cuda")


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a :class:`~torch.nn.parallel.DistributedDataParallel` wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
