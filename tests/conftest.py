import matplotlib
import pytest
import torch

matplotlib.use("Agg")

F64 = torch.float64


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _global_torch_state():
    # A worked solution run as a script (runpy) may set torch's default dtype or thread count
    # for itself, as a notebook's Setup cell does; the tests after it must not inherit that.
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    yield
    torch.set_default_dtype(dtype)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture
def linear_problem():
    """A damped rotation dz/dt = A z, a batch of 3 states, 5 observation times (float64)."""
    A = torch.tensor([[-0.3, 2.0], [-1.5, -0.2]], dtype=F64)
    z0 = torch.tensor([[1.0, 0.5], [-0.3, 0.8], [0.2, -1.0]], dtype=F64)
    t = torch.tensor([0.0, 0.3, 0.7, 1.2, 2.0], dtype=F64)
    return A, z0, t
