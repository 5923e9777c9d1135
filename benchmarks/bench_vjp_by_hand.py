"""Would a hand-written vector–Jacobian product close the gap to compiled JAX? (issue #13)

Run by hand (under a minute)::

    .venv/bin/python benchmarks/bench_vjp_by_hand.py

One evaluation of the adjoint's augmented dynamics on the benchmark's field (2-64-64-2 tanh
MLP, B = 256, float32, one thread): f(z) and aᵀ ∂f/∂z, aᵀ ∂f/∂θ, once through autograd (what
``odeint_adjoint`` does for any ``nn.Module``) and once written out for this MLP, where with
h₁ = tanh(W₁z + b₁), h₂ = tanh(W₂h₁ + b₂), f = W₃h₂ + b₃ (rows of a batch):

    δ₂ = (a W₃) ⊙ (1 − h₂²),  δ₁ = (δ₂ W₂) ⊙ (1 − h₁²),
    aᵀ∂f/∂z = δ₁ W₁,  ∂/∂Wₖ = δₖᵀ hₖ₋₁,  ∂/∂bₖ = Σ_batch δₖ  (δ₃ = a, h₀ = z).

Prints both results' largest difference and the median CPU time per evaluation of each,
the two variants taking turns. Not kept in the package: it serves one architecture only.
"""

from __future__ import annotations

import statistics
import time

import torch


def make_field():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64),
                               torch.nn.Tanh(), torch.nn.Linear(64, 2))


def vjp_autograd(net, z, a):
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        f = net(z)
        return (f, *torch.autograd.grad(f, [z, *net.parameters()], a))


def vjp_by_hand(net, z, a):
    w1, b1, w2, b2, w3, b3 = (p.detach() for p in net.parameters())
    h1 = torch.tanh(torch.addmm(b1, z, w1.t()))
    h2 = torch.tanh(torch.addmm(b2, h1, w2.t()))
    f = torch.addmm(b3, h2, w3.t())
    d2 = (a @ w3) * (1 - h2 * h2)
    d1 = (d2 @ w2) * (1 - h1 * h1)
    return f, d1 @ w1, d1.t() @ z, d1.sum(0), d2.t() @ h1, d2.sum(0), a.t() @ h2, a.sum(0)


def main(repeats=9, calls=200):
    torch.set_num_threads(1)
    net = make_field()
    gen = torch.Generator().manual_seed(1)
    z, a = torch.randn(256, 2, generator=gen), torch.randn(256, 2, generator=gen)
    diff = max((x - y).abs().max().item()
               for x, y in zip(vjp_autograd(net, z, a), vjp_by_hand(net, z, a)))
    print(f"largest difference between the two: {diff:.1e}")
    times = {"autograd": [], "by hand": []}
    for _ in range(repeats):
        for name, fn in (("autograd", vjp_autograd), ("by hand", vjp_by_hand)):
            start = time.process_time()
            for _ in range(calls):
                fn(net, z, a)
            times[name].append((time.process_time() - start) / calls * 1e6)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name, m in med.items():
        print(f"{name:>9}: {m:7.0f} µs CPU per evaluation (median of {repeats})")
    print(f"by hand is {med['autograd'] / med['by hand']:.2f}x faster")


if __name__ == "__main__":
    main()
