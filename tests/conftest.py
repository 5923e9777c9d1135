import matplotlib
import pytest
import torch

matplotlib.use("Agg")

F64 = torch.float64


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def linear_problem():
    """A damped rotation dz/dt = A z, a batch of 3 states, 5 observation times (float64)."""
    A = torch.tensor([[-0.3, 2.0], [-1.5, -0.2]], dtype=F64)
    z0 = torch.tensor([[1.0, 0.5], [-0.3, 0.8], [0.2, -1.0]], dtype=F64)
    t = torch.tensor([0.0, 0.3, 0.7, 1.2, 2.0], dtype=F64)
    return A, z0, t
