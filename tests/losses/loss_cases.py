"""Inputs shared by the loss tests (``pythonpath = ["tests"]`` makes this ``losses.loss_cases``).

The table of losses that the contract suite runs on is ``losses/contract.py``."""

import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64]
REDUCTIONS = ["none", "mean", "sum"]


def multiclass_inputs(n=2, c=4, h=5, w=6, dtype=torch.float64, device="cpu", ignore_index=None, seed=0,
                      requires_grad=False):
    """Random logits (N, C, H, W) and targets (N, H, W); a few pixels set to ignore_index."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    target = torch.randint(0, c, (n, h, w), generator=g)
    if ignore_index is not None:
        target[torch.rand(n, h, w, generator=g) < 0.25] = ignore_index
    return logits.requires_grad_(requires_grad), target.to(device)


def binary_inputs(n=2, h=5, w=6, dtype=torch.float64, device="cpu", ignore_index=None, seed=0,
                  requires_grad=False):
    """Random logits (N, 1, H, W) and {0, 1} targets (N, H, W); a few pixels ignored."""
    g = torch.Generator().manual_seed(seed)
    logits = (2 * torch.randn(n, 1, h, w, generator=g, dtype=torch.float64)).to(device=device, dtype=dtype)
    target = torch.randint(0, 2, (n, h, w), generator=g)
    if ignore_index is not None:
        target[torch.rand(n, h, w, generator=g) < 0.25] = ignore_index
    return logits.requires_grad_(requires_grad), target.to(device)


def classification_inputs(n=2, c=4, h=5, w=6, dtype=torch.float64, device="cpu", ignore_index=None, seed=0,
                          requires_grad=False):
    """Random class logits (M, C) and labels (M,) with M = n * h * w samples (as many as the
    pixels of the other layouts); a few samples set to ignore_index."""
    logits, target = multiclass_inputs(n, c, h, w, dtype, device, ignore_index, seed, requires_grad=False)
    logits = logits.permute(0, 2, 3, 1).reshape(-1, c).contiguous()
    return logits.requires_grad_(requires_grad), target.reshape(-1)


def perfect_logits(target, num_channels, scale=40.0, dtype=torch.float64):
    """Logits that put (almost) all probability on the target class."""
    if num_channels == 1:
        return (scale * (2.0 * target.to(dtype) - 1.0)).unsqueeze(1)
    onehot = torch.nn.functional.one_hot(target, num_channels).permute(0, 3, 1, 2).to(dtype)
    return scale * onehot
