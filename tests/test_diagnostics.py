"""Tests for neuralode_helpers.diagnostics: memory, gradient cost, and where the adjoint fails."""

import math

import pytest
import torch
from torch import nn

from neuralode_helpers import (
    LinearODE,
    Stats,
    cuda_peak_bytes,
    measure_gradient,
    odeint,
    odeint_adjoint,
    reconstruction_error,
    relative_error,
    saved_tensor_bytes,
)


class Decay(nn.Module):
    """dz/dt = -k z: z(t) = z0 exp(-k t), a strongly contracting flow for large k."""

    def __init__(self, k):
        super().__init__()
        self.k = nn.Parameter(torch.tensor(float(k), dtype=torch.float64))

    def forward(self, t, z):
        return -self.k * z


def small_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))


class Field(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = small_mlp()

    def forward(self, t, z):
        return self.net(z)


# ---------------------------------------------------------------------------------------------
# saved_tensor_bytes
# ---------------------------------------------------------------------------------------------

def test_saved_bytes_counts_what_backward_needs():
    x = torch.randn(100, requires_grad=True)  # 400 bytes of float32
    out, nbytes = saved_tensor_bytes(torch.exp, x)  # exp saves its output
    assert nbytes == 400
    assert torch.equal(out, x.exp())
    _, nbytes = saved_tensor_bytes(lambda: x * x)  # x saved twice, one storage
    assert nbytes == 400
    _, nbytes = saved_tensor_bytes(lambda: (x * x).exp())  # x and exp's output
    assert nbytes == 800
    _, nbytes = saved_tensor_bytes(lambda: x * x, exclude=[x])
    assert nbytes == 0


def test_saved_bytes_ignores_graphs_dropped_inside_fn():
    x = torch.randn(100, requires_grad=True)

    def fn():
        _ = (x * x).sum()  # built and dropped
        return x + 1  # add saves nothing

    _, nbytes = saved_tensor_bytes(fn)
    assert nbytes == 0


def test_saved_bytes_of_adjoint_are_outputs_times_and_parameters():
    f = LinearODE(torch.tensor([[-0.1, 2.0], [-2.0, -0.1]]))
    z0 = torch.randn(8, 2, requires_grad=True)
    t = torch.linspace(0, 1, 5)
    ys, nbytes = saved_tensor_bytes(odeint_adjoint, f, z0, t, method="rk4",
                                    options={"step_size": 0.01})
    assert nbytes == ys.numel() * 4 + t.numel() * 4 + f.A.numel() * 4


def _memory(n_steps, how):
    f = Field()
    z0 = torch.randn(32, 2, requires_grad=True)
    t = torch.linspace(0, 1, 3)
    kw = dict(method="rk4", options={"step_size": 1.0 / n_steps})
    if how == "backprop":
        run = lambda: odeint(f, z0, t, **kw)  # noqa: E731
    else:
        run = lambda: odeint_adjoint(f, z0, t, restore_z=how == "restore_z", **kw)  # noqa: E731
    _, nbytes = saved_tensor_bytes(run, exclude=list(f.parameters()))
    return nbytes


def test_backprop_memory_grows_with_steps_and_adjoint_memory_does_not():
    small, large = _memory(10, "backprop"), _memory(100, "backprop")
    assert 8 < large / small < 12  # linear in the number of steps
    for how in ("adjoint", "restore_z"):
        assert _memory(10, how) == _memory(100, how) == 3 * 32 * 2 * 4 + 3 * 4  # ys and t
    assert _memory(10, "adjoint") < small / 10


# ---------------------------------------------------------------------------------------------
# The adjoint on contracting dynamics, and the restore_z fix
# ---------------------------------------------------------------------------------------------

def decay_gradients(k, t, restore_z):
    """dL/dk and dL/dz0 for L = sum of z(t_i) over all observation times, z0 = (1, 1, 1),
    by the unguarded backsolve (no recovery: the failure is what is measured)."""
    f = Decay(k)
    z0 = torch.ones(3, dtype=torch.float64, requires_grad=True)
    ys = odeint_adjoint(f, z0, t, rtol=1e-6, atol=1e-8, restore_z=restore_z,
                        on_divergence="ignore")
    ys.sum().backward()
    # Exact: z(t_i) = z0 exp(-k t_i), so dL/dk = -sum_i t_i exp(-k t_i) z0 summed over z0's
    # three entries and dL/dz0 = sum_i exp(-k t_i) for each entry.
    e = torch.exp(-k * t)
    return (relative_error(f.k.grad, 3 * (-(t * e)).sum()),
            relative_error(z0.grad, e.sum() * torch.ones(3, dtype=torch.float64)))


def test_restore_z_fixes_the_adjoint_on_contracting_dynamics():
    t = torch.linspace(0, 2, 11, dtype=torch.float64)  # k (t_end - t_0) = 20
    err_k, err_z0 = decay_gradients(10.0, t, restore_z=False)
    err_k_cp, err_z0_cp = decay_gradients(10.0, t, restore_z=True)
    assert err_k_cp < 1e-4 and err_z0_cp < 1e-4
    assert err_k > 1e-2  # the plain adjoint's reconstruction of z(t) has failed
    assert err_k > 1000 * err_k_cp


def test_adjoint_is_fine_on_mild_dynamics():
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    err_k, err_z0 = decay_gradients(1.0, t, restore_z=False)
    assert err_k < 1e-5 and err_z0 < 1e-5


def test_reconstruction_error_grows_with_contraction():
    t = torch.linspace(0, 2, 11, dtype=torch.float64)
    z0 = torch.ones(3, dtype=torch.float64)
    errs = [reconstruction_error(Decay(k), z0, t, rtol=1e-6, atol=1e-8) for k in (1, 5, 10)]
    assert errs[0] < 1e-5
    assert errs[0] < errs[1] < errs[2]
    assert errs[2] > 1e-2
    assert reconstruction_error(Decay(10), z0, t, rtol=1e-6, atol=1e-8, restore_z=True) < 1e-4


# ---------------------------------------------------------------------------------------------
# measure_gradient, relative_error, cuda_peak_bytes
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("adjoint", [True, False])
def test_measure_gradient_matches_autograd_and_counts_nfe(adjoint):
    f = Field()
    z0 = torch.randn(4, 2)
    t = torch.linspace(0, 1, 3)
    solver = odeint_adjoint if adjoint else odeint
    params = list(f.parameters())

    def loss_fn(stats):
        return solver(f, z0, t, rtol=1e-7, atol=1e-9, stats=stats).pow(2).sum()

    cost = measure_gradient(loss_fn, params, repeats=2)
    stats = Stats()
    ref = torch.autograd.grad(loss_fn(stats), params)
    assert relative_error(cost.grads, ref) < 1e-12
    assert cost.nfe_forward == stats.forward.nfe > 0
    assert cost.nfe_backward == stats.backward.nfe
    assert (cost.nfe_backward > 0) == adjoint
    assert cost.seconds > 0 and math.isfinite(cost.loss)


def test_relative_error():
    ref = torch.tensor([3.0, 4.0])
    assert relative_error(ref, ref) == 0.0
    assert relative_error(torch.tensor([3.0, 4.5]), ref) == pytest.approx(0.1)
    assert relative_error([torch.ones(2), torch.zeros(1)],
                          [torch.ones(2), torch.ones(1)]) == pytest.approx(1 / math.sqrt(3))
    with pytest.raises(ValueError):
        relative_error(torch.ones(2), torch.ones(3))


def test_cuda_peak_bytes():
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            cuda_peak_bytes(lambda: None)
        return
    x = torch.randn(1024, 1024, device="cuda", requires_grad=True)  # 4 MiB
    _, nbytes = cuda_peak_bytes(lambda: x.exp().sum().backward())
    assert 4 * 2**20 <= nbytes < 64 * 2**20
