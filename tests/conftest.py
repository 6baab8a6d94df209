"""Shared fixtures."""
import pytest


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices: OpenMP threads only add contention (badly so on a busy 2-core machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
