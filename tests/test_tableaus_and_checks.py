"""The closure check (tensors func depends on that the adjoint would not differentiate), the
Butcher tableaus (consistency, order, gradients) and per-step checkpointing's memory."""

import warnings

import pytest
import torch
from torch import nn

import neuralode_helpers as nh

F64 = torch.float64
T01 = torch.tensor([0.0, 1.0], dtype=F64)


def _backprop_grads(f, inputs, make):
    """Gradients of sum z(T) by backprop through odeint (tight dopri5), w.r.t. ``inputs``
    as rebuilt by ``make`` from fresh leaves."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    f_, z0, t = make(*leaves)
    nh.odeint(f_, z0, t, rtol=1e-11, atol=1e-13)[-1].sum().backward()
    return [x.grad for x in leaves]


# ---- closure check: tensors sharing storage with z0 or t -------------------------------------

def _case_view_of_param(P):
    """(a) z0 is a view of a parameter vector whose other entry is a rate in f."""
    return (lambda t, z: -P[1] * z), P[:1], T01


def _case_field_uses_z0(z0):
    """(b) f reads the initial state: dz/dt = -z sum(z0)."""
    return (lambda t, z: -z * z0.sum()), z0, T01


def _case_field_uses_t(t):
    """(c) f reads the final time: dz/dt = -z T."""
    return (lambda tt, z: -z * t[-1]), torch.ones(2, dtype=F64), t


CASES = {
    "view_of_param": (_case_view_of_param, torch.tensor([1.0, 0.5], dtype=F64)),
    "field_uses_z0": (_case_field_uses_z0, torch.tensor([1.0, -0.3], dtype=F64)),
    "field_uses_t": (_case_field_uses_t, T01),
}


@pytest.mark.parametrize("case", list(CASES))
def test_closure_sharing_storage_with_inputs_is_refused(case):
    make, x = CASES[case]
    f, z0, t = make(x.clone().requires_grad_())
    with pytest.raises(ValueError, match="not in params"):
        nh.odeint_adjoint(f, z0, t, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", list(CASES))
def test_closure_sharing_storage_with_inputs_in_params_gets_its_gradient(case):
    make, x = CASES[case]
    leaf = x.clone().requires_grad_()
    f, z0, t = make(leaf)
    nh.odeint_adjoint(f, z0, t, params=[leaf], rtol=1e-10, atol=1e-12)[-1].sum().backward()
    (expected,) = _backprop_grads(None, [x], make)
    torch.testing.assert_close(leaf.grad, expected, rtol=1e-6, atol=1e-9)


def test_view_of_param_gradient_is_exact():
    # z(1) = P0 exp(-P1): dL/dP = (exp(-P1), -P0 exp(-P1)).
    P = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    f, z0, t = _case_view_of_param(P)
    nh.odeint_adjoint(f, z0, t, params=[P], rtol=1e-10, atol=1e-12)[-1].sum().backward()
    e = torch.exp(torch.tensor(-0.5, dtype=F64))
    torch.testing.assert_close(P.grad, torch.stack([e, -e]), rtol=1e-7, atol=1e-10)


def test_field_marking_its_input_as_requiring_grad_passes():
    """A divergence field makes its own input a leaf (z.requires_grad_() on what it is given,
    or z.detach().requires_grad_()): that is func's own business, not a lost closure."""
    lin = nn.Linear(2, 2).double()

    def in_place(t, z):
        z.requires_grad_(True)
        return lin(z)

    def detached(t, z):
        return lin(z.detach().requires_grad_(True))

    for f in (in_place, detached):
        z0 = torch.tensor([[1.0, 0.5]], dtype=F64)
        nh.odeint_adjoint(f, z0, T01, params=list(lin.parameters()))[-1].sum().backward()


# ---- closure check: per-call leaves ----------------------------------------------------------

class PerCallTime(nn.Module):
    """A CNF library's idiom: t is made a fresh leaf on every call, so that the field can
    differentiate with respect to it. Not a closure: nothing holds it between calls."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2).double()

    def forward(self, t, y):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch.tensor(tensor) copies
            t = torch.tensor(t).type_as(y)
        t.requires_grad_(True)
        return self.lin(y) * (1 + 0.1 * t)


def test_per_call_leaf_is_not_a_closure():
    torch.manual_seed(0)
    f = PerCallTime()
    z0 = torch.tensor([[1.0, -0.5]], dtype=F64)
    nh.odeint_adjoint(f, z0, T01, rtol=1e-10, atol=1e-12)[-1].sum().backward()
    got = [p.grad.clone() for p in f.parameters()]
    f.zero_grad()
    nh.odeint(f, z0, T01, rtol=1e-11, atol=1e-13)[-1].sum().backward()
    for g, e in zip(got, (p.grad for p in f.parameters())):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-9)


def test_real_closure_next_to_per_call_leaf_still_raises():
    f = PerCallTime()
    scale = torch.tensor(0.7, dtype=F64, requires_grad=True)
    z0 = torch.tensor([[1.0, -0.5]], dtype=F64)
    with pytest.raises(ValueError, match=r"1 tensor\(s\)"):
        nh.odeint_adjoint(lambda t, z: scale * f(t, z), z0, T01,
                          params=list(f.parameters()))
