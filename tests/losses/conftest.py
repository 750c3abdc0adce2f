"""Fixtures of the loss tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Run each loss test on one thread. The tensors here are tiny (a few hundred pixels, 1M at
    most): they gain nothing from threads, and on a busy 2-core machine every parallel region
    waits for a core (a 60-pixel loss call measured 36 ms on 2 threads, 0.2 ms on 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
