"""The exercises of notebooks 00-07: every worked solution passes its check, and every check
rejects typical wrong answers with a specific hint."""

import math
import runpy
from pathlib import Path

import pytest
import torch
from torch import nn

from neuralode_helpers import exercises as ex
from neuralode_helpers import toy_solution

SOLUTIONS = sorted((Path(__file__).resolve().parents[1] / "notebooks" / "solutions").glob("*.py"))


def test_every_check_has_a_solution():
    checks = {name for name in dir(ex) if name.startswith("check_")}
    used = {name for path in SOLUTIONS for name in checks if f"{name}(" in path.read_text()}
    assert used == checks


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_solution_passes_its_check(path, capsys):
    # Each solution ends with its own check call, which raises AssertionError if it is wrong.
    runpy.run_path(str(path), run_name="__main__")
    assert "Well done" in capsys.readouterr().out


def rejects(check, answer, hint):
    with pytest.raises(AssertionError, match=hint):
        check(answer)


# --- notebook 00 ---


def test_same_family_field_hints():
    check = ex.check_same_family_field
    rejects(check, lambda t, z: -torch.sin(t) * torch.exp(1 - torch.cos(t)) + 0 * z, "sign")
    rejects(check, lambda t, z: torch.exp(1 - torch.cos(t)) + 0 * z, "curve .* itself")
    rejects(check, lambda t, z: torch.sin(t) * z, "depends on z")
    rejects(check, lambda t, z: z * torch.exp(-torch.cos(t)), "seed text's equation")
    rejects(check, lambda t, z: torch.sin(t)[:1], "Wrong shape")


def test_midpoint_step_hints():
    check = ex.check_midpoint_step
    rejects(check, lambda f, t, z, h: z + h * f(t, z), "Euler step .* first order")
    rejects(check, lambda f, t, z, h: f(t + h / 2, z + h / 2 * f(t, z)), "slope")
    rejects(check, lambda f, t, z, h: z + h * f(t, z + h / 2 * f(t, z)), "at t \\+ h/2")
    rejects(check, lambda f, t, z, h: z + h * f(t + h / 2, z + h * f(t, z)), "half a step")
    rejects(check, lambda f, t, z, h: (z + h * f(t, z))[0], "Wrong shape")


# --- notebook 01 ---


def test_dL_dt0_hints():
    check = ex.check_dL_dt0
    rejects(check, lambda lam, z0, t0, t1: lam * z0 * math.exp(lam * (t1 - t0)),
            "sign of dL/dt0 is flipped.*shortens")
    rejects(check, lambda lam, z0, t0, t1: -z0 * math.exp(lam * (t1 - t0)), "factor lam")
    rejects(check, lambda lam, z0, t0, t1: math.exp(lam * (t1 - t0)), "the adjoint")
    rejects(check, lambda lam, z0, t0, t1: -lam * z0 * math.exp(lam * (t0 - t1)), "exponent")


def test_vjp_tanh_hints():
    check = ex.check_vjp_tanh

    def s(W, z):
        return 1 - torch.tanh(W @ z) ** 2

    rejects(check, lambda W, z, a: (W.T @ a, torch.outer(a, z)), "derivative is missing")
    rejects(check, lambda W, z, a: (W @ (s(W, z) * a), torch.outer(s(W, z) * a, z)),
            "df/dz is transposed")
    rejects(check, lambda W, z, a: (W.T @ (s(W, z) * a), torch.outer(z, s(W, z) * a)),
            "df/dW is transposed")
    rejects(check, lambda W, z, a: (-W.T @ (s(W, z) * a), -torch.outer(s(W, z) * a, z)),
            "sign is flipped")
    rejects(check, lambda W, z, a: (W.T @ (s(W, z) * a), torch.outer(s(W, z) * a, z)[0]),
            "Wrong shape")


# --- notebook 02 ---


def test_windowed_field_hints():
    check = ex.check_windowed_field
    rejects(check, lambda f, t0, d: (lambda s, z: f(t0 + s * d, z)), "factor delta")
    rejects(check, lambda f, t0, d: (lambda s, z: d * f(t0 + s, z)), "t0 \\+ s delta")
    rejects(check, lambda f, t0, d: (lambda s, z: d * f(t0, z)), "frozen at t0")
    rejects(check, lambda f, t0, d: d * t0, "Return a function")


def _aug_with_backward(func, t, z, a):
    # The seed's way, without zeroing .grad: correct on the first call only.
    z = z.detach().requires_grad_(True)
    f = func(t, z)
    (f * -a).sum().backward()
    return f.detach(), z.grad, [p.grad.clone() for p in func.parameters()]


def _aug_signs_flipped(func, t, z, a):
    z = z.detach().requires_grad_(True)
    f = func(t, z)
    grads = torch.autograd.grad(f, (z, *func.parameters()), grad_outputs=a)
    return f.detach(), grads[0], list(grads[1:])


def _aug_unweighted(func, t, z, a):
    z = z.detach().requires_grad_(True)
    f = func(t, z)
    grads = torch.autograd.grad(f.sum(), (z, *func.parameters()))
    return f.detach(), -a * grads[0], [-g for g in grads[1:]]


def test_aug_hints():
    check = ex.check_aug
    rejects(check, _aug_with_backward, "accumulates")
    rejects(check, _aug_signs_flipped, "sign is flipped")
    rejects(check, _aug_unweighted, "f.sum\\(\\)")
    rejects(check, lambda func, t, z, a: (func(t, z), -a, []), "one gradient per parameter")


# --- notebook 03 ---


class _RawTimeField(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(2, 1)

    def forward(self, t, z):
        t = torch.as_tensor(t, dtype=z.dtype).expand(z.shape[:-1])
        return self.net(torch.cat([z, t[..., None]], -1))


class _NoZField(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(2, 1)

    def forward(self, t, z):
        t = torch.as_tensor(t, dtype=z.dtype).expand(z.shape[:-1])
        return self.net(torch.stack([torch.sin(t), torch.cos(t)], -1))


class _NoBroadcastField(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(3, 1)

    def forward(self, t, z):
        return self.net(torch.cat([z, torch.sin(t)[..., None], torch.cos(t)[..., None]], -1))


def test_sincos_field_hints():
    check = ex.check_sincos_field
    rejects(check, _RawTimeField, "sees t itself")
    rejects(check, _NoZField, "ignores z")
    rejects(check, _NoBroadcastField, "failed for a 0-d t")


def test_window_targets_hints():
    check = ex.check_window_targets

    def targets(t0, c, n_obs, window, s=None):
        s = torch.linspace(0, 1, n_obs, dtype=t0.dtype) if s is None else s
        return toy_solution(t0[None, :] + window * s[:, None], c[None, :]).unsqueeze(-1)

    rejects(check, lambda t0, c, n, w: targets(t0, c, n, w, torch.arange(n) / n),
            "counts both ends")
    rejects(check, lambda t0, c, n, w: targets(t0, c, n, 1.0), "ignore `window`")
    rejects(check, lambda t0, c, n, w: targets(t0, 0 * c, n, w), "offset c")
    rejects(check, lambda t0, c, n, w: targets(t0, c, n, w).transpose(0, 1), "time goes first")


# --- notebook 04 ---


def test_checkpoint_times_hints():
    check = ex.check_checkpoint_times
    rejects(check, lambda t0, t1, lam: torch.linspace(t0, t1, 3), "must shrink as lam grows")
    rejects(check, lambda t0, t1, lam: torch.linspace(t0, t1, 1000), "more than needed")
    rejects(check, lambda t0, t1, lam: torch.arange(t0, t1, 1 / lam), "end at t1")


def test_speed_penalty_hints():
    check = ex.check_speed_penalty
    rejects(check, lambda func, t, z: func(t, z).square().sum(), "summed over the batch")
    rejects(check, lambda func, t, z: func(t, z).square().mean(), "D components")
    rejects(check, lambda func, t, z: func(t, z).norm(dim=-1).mean(), "its square")
    rejects(check, lambda func, t, z: z.square().sum(-1).mean(), "penalised \\|z\\|")
    rejects(check, lambda func, t, z: func(t, z).square().sum(-1).mean().item(), "Python float")
    rejects(check, lambda func, t, z: func(t, z).detach().square().sum(-1).mean(), "detached")


# --- notebook 05 ---


def test_cubic_field_hints():
    check = ex.check_cubic_field
    rejects(check, lambda A, z: (z**3) @ A, "transposed")
    rejects(check, lambda A, z: (z @ A.T) ** 3, "cubed after multiplying")
    rejects(check, lambda A, z: z @ A.T, "cube is missing")
    rejects(check, lambda A, z: A @ z**3, "one state per row")
    rejects(check, lambda A, z: ((z**3) @ A.T)[0], "Wrong shape")


def test_kl_to_prior_hints():
    check = ex.check_kl_to_prior
    rejects(check, lambda mu, lv: -0.5 * (mu**2 + lv.exp() - lv - 1).sum(-1), "sign is flipped")
    rejects(check, lambda mu, lv: 0.5 * (mu**2 + lv.exp() - lv - 1).mean(-1), "averaged over")
    rejects(check, lambda mu, lv: (mu**2 + lv.exp() - lv - 1).sum(-1), "factor 1/2")
    rejects(check, lambda mu, lv: 0.5 * (mu**2 + (2 * lv).exp() - 2 * lv - 1).sum(-1),
            "log-variance")
    rejects(check, lambda mu, lv: 0.5 * (mu**2 + lv.exp() - lv).sum(-1), "-1 per dimension")
    rejects(check, lambda mu, lv: 0.5 * ((mu**2 + 1) * (-lv).exp() + lv - 1).sum(-1),
            "other direction")
    rejects(check, lambda mu, lv: 0.5 * (mu**2 + lv.exp() - lv - 1), "sum the KL over")
    rejects(check, lambda mu, lv: 0.5 * (mu**2 + lv.exp() - lv - 1).sum(-1).mean(),
            "whole batch")


# --- notebook 06 ---


def _jacobian_rows(f, z):
    z = z.detach().requires_grad_(True)
    out = f(z)
    return [torch.autograd.grad(out[:, i].sum(), z, retain_graph=True)[0]
            for i in range(z.shape[1])]


def test_divergence_hints():
    check = ex.check_divergence
    rejects(check, lambda f, z: -sum(g[:, i] for i, g in enumerate(_jacobian_rows(f, z))),
            "sign is flipped")
    rejects(check, lambda f, z: sum(g.sum(1) for g in _jacobian_rows(f, z)), "all the entries")
    rejects(check, lambda f, z: _jacobian_rows(f, z)[0][:, 0], "Only one diagonal")
    rejects(check, lambda f, z: torch.stack([g[:, i] for i, g in
                                             enumerate(_jacobian_rows(f, z))], 1),
            "Wrong shape \\(B, D\\)")
    rejects(check, lambda f, z: torch.autograd.grad(f(z).sum(), z)[0].sum(1), "differentiable")


def _vjp(f, z, eps):
    z = z.detach().requires_grad_(True)
    return torch.autograd.grad((f(z) * eps).sum(), z)[0]


def test_hutchinson_hints():
    check = ex.check_hutchinson

    def probe(z, g):
        return torch.randn(z.shape, generator=g, dtype=z.dtype)

    def exact(f, z, g):
        return torch.stack([r[:, i] for i, r in enumerate(_jacobian_rows(f, z))], 1).sum(1)

    def uniform(f, z, g):
        eps = torch.rand(z.shape, generator=g, dtype=z.dtype)
        return (_vjp(f, z, eps) * eps).sum(-1)

    def one_eps(f, z, g):
        return _vjp(f, z, probe(z, g)).sum(-1)

    def flipped(f, z, g):
        eps = probe(z, g)
        return -(_vjp(f, z, eps) * eps).sum(-1)

    def unseeded(f, z, g):
        eps = torch.randn(z.shape, dtype=z.dtype)
        return (_vjp(f, z, eps) * eps).sum(-1)

    rejects(check, exact, "exact trace")
    rejects(check, uniform, "Biased.*torch.rand")
    rejects(check, one_eps, "about 0")
    rejects(check, flipped, "sign is flipped")
    rejects(check, unseeded, "same generator seed")


def test_hutchinson_accepts_rademacher_probes():
    def rademacher(f, z, g):
        eps = torch.randint(0, 2, z.shape, generator=g).to(z.dtype) * 2 - 1
        return (_vjp(f, z, eps) * eps).sum(-1)

    assert ex.check_hutchinson(rademacher)


# --- notebook 07 ---


def test_resnet_euler_hints():
    check = ex.check_resnet_euler

    def no_scale(blocks, h):
        for f in blocks:
            h = h + f(h)
        return h

    def reversed_order(blocks, h):
        for f in blocks[::-1]:
            h = h + f(h) / len(blocks)
        return h

    def no_skip(blocks, h):
        for f in blocks:
            h = f(h) / len(blocks)
        return h

    rejects(check, no_scale, "factor 1/L")
    rejects(check, lambda blocks, h: h + sum(f(h) for f in blocks) / len(blocks), "sees h_0")
    rejects(check, reversed_order, "reverse order")
    rejects(check, no_skip, "skip connection")


def _flow(field, z0):
    from neuralode_helpers import odeint

    return odeint(field, z0, torch.tensor([0.0, 1.0], dtype=z0.dtype))


def test_augmented_flow_hints():
    check = ex.check_augmented_flow

    def pad(x, p, value=0.0, front=False):
        extra = torch.full((*x.shape[:-1], p), value, dtype=x.dtype)
        return torch.cat([extra, x] if front else [x, extra], -1)

    d = 2  # the check's main case
    rejects(check, lambda field, x, p: _flow(field, pad(x, p))[..., :x.shape[-1]], "whole path")
    rejects(check, lambda field, x, p: _flow(field, pad(x, p))[-1], "Wrong shape \\(B, d\\+p\\)")
    rejects(check, lambda field, x, p: _flow(field, pad(x, p, 1.0))[-1][:, :d], "zeros, not ones")
    rejects(check, lambda field, x, p: _flow(field, pad(x, p))[-1][:, -d:], "last d")
    rejects(check, lambda field, x, p: _flow(field, pad(x, p, front=True))[-1][:, :d],
            "zeros went in front")
    rejects(check, lambda field, x, p: x, "returned x")
