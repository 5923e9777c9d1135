"""How fast could any PyTorch solver be on ``bench_adjoint.py``'s problem? (issue #13)

Run by hand (about a minute on a quiet machine, a third of it jax compiling)::

    .venv/bin/python benchmarks/bench_floor.py          # writes benchmarks/floor_latest.md
    .venv/bin/python benchmarks/bench_floor.py --quick  # smoke run: results/floor_quick.md

The goal of issue #13 is that our fastest gradient of each kind takes no longer than the
fastest peer's, which is diffrax (jit-compiled JAX). This script asks whether that is possible
for *any* eager PyTorch code on this machine, by measuring a lower bound: the time of the
kernels that one evaluation of the benchmark's field and of its vector–Jacobian product (VJP)
cannot avoid, with nothing else around them. With h₁ = tanh(W₁z + b₁), h₂ = tanh(W₂h₁ + b₂),
f = W₃h₂ + b₃ (rows of a batch of B = 256, float32, one thread), one evaluation is

    f:    3 matrix products with bias (addmm) and 2 tanh,
    VJP:  δ₂ = (aW₃) ⊙ (1 − h₂²), δ₁ = (δ₂W₂) ⊙ (1 − h₁²), aᵀ∂f/∂z = δ₁W₁,
          ∂/∂Wₖ = δₖᵀhₖ₋₁, ∂/∂bₖ = Σ_batch δₖ   (δ₃ = a, h₀ = z),

written out by hand into preallocated tensors (``out=``): no autograd, no allocation, no
module call, no solver. Any PyTorch implementation of a solve with N forward and M backward
evaluations spends at least N·t(f) + M·t(f + VJP) on these kernels (the backward of backprop
replays one VJP per forward evaluation: M = N); the solver's own arithmetic, its step-size
control and autograd's bookkeeping come on top. The same field is timed in JAX (jitted, one
call per evaluation) and the whole diffrax gradients in the same run, everything taking turns.

All CPU times (``time.process_time``), medians; one thread for torch and XLA.
"""

from __future__ import annotations

import collections
import platform
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _peers  # noqa: E402  (sets XLA_FLAGS before anything imports jax)
import bench_adjoint as bench  # noqa: E402
from _machine import cpu_name  # noqa: E402
from bench_attempts import race  # noqa: E402
from bench_vjp_by_hand import vjp_autograd  # noqa: E402  (what the adjoint does)

from neuralode_helpers import odeint, odeint_adjoint  # noqa: E402

HERE = Path(__file__).resolve().parent
CALLS = 200  # evaluations per timed call of a per-evaluation variant


class Floor:
    """The benchmark's field and its VJP as bare PyTorch kernels writing into fixed buffers."""

    def __init__(self, net, z, a):
        self.w1, self.b1, self.w2, self.b2, self.w3, self.b3 = (
            p.detach() for p in net.parameters())
        self.w1t, self.w2t, self.w3t = (w.t().contiguous() for w in (self.w1, self.w2, self.w3))
        self.z, self.a = z, a
        B, H = z.shape[0], self.w1.shape[0]
        e = torch.empty
        self.h1, self.h2, self.f = e(B, H), e(B, H), e(B, z.shape[1])
        self.s1, self.s2, self.d1, self.d2 = e(B, H), e(B, H), e(B, H), e(B, H)
        self.one, self.gz = torch.ones(B, H), e(B, z.shape[1])
        self.gw1, self.gw2, self.gw3 = (e(w.shape) for w in (self.w1, self.w2, self.w3))
        self.gb1, self.gb2, self.gb3 = (e(b.shape) for b in (self.b1, self.b2, self.b3))

    def field(self):
        torch.addmm(self.b1, self.z, self.w1t, out=self.h1)
        torch.tanh(self.h1, out=self.h1)
        torch.addmm(self.b2, self.h1, self.w2t, out=self.h2)
        torch.tanh(self.h2, out=self.h2)
        torch.addmm(self.b3, self.h2, self.w3t, out=self.f)
        return self.f

    def field_and_vjp(self):
        self.field()
        # δ₂ = (a W₃) ⊙ (1 − h₂²), with 1 − h² as one fused multiply-add: 1 + (−h)·h
        torch.mm(self.a, self.w3, out=self.d2)
        torch.addcmul(self.one, self.h2, self.h2, value=-1.0, out=self.s2)
        self.d2.mul_(self.s2)
        torch.mm(self.d2, self.w2, out=self.d1)
        torch.addcmul(self.one, self.h1, self.h1, value=-1.0, out=self.s1)
        self.d1.mul_(self.s1)
        torch.mm(self.d1, self.w1, out=self.gz)
        torch.mm(self.d1.t(), self.z, out=self.gw1)
        torch.sum(self.d1, 0, out=self.gb1)
        torch.mm(self.d2.t(), self.h1, out=self.gw2)
        torch.sum(self.d2, 0, out=self.gb2)
        torch.mm(self.a.t(), self.h2, out=self.gw3)
        torch.sum(self.a, 0, out=self.gb3)
        return self.f, self.gz

    def check(self, net):
        """Largest difference to autograd (a test that the hand-written VJP is the VJP)."""
        z = self.z.clone().requires_grad_(True)
        with torch.enable_grad():
            f = net(z)
            ref = (f, *torch.autograd.grad(f, [z, *net.parameters()], self.a))
        self.field_and_vjp()
        mine = (self.f, self.gz, self.gw1, self.gb1, self.gw2, self.gb2, self.gw3, self.gb3)
        return max((x - y).abs().max().item() for x, y in zip(ref, mine))


class OpCounter(TorchDispatchMode):
    """Counts the ATen operations that run (forward and backward: the CPU autograd engine
    runs the backward on the calling thread, inside the mode)."""

    def __init__(self):
        super().__init__()
        self.names = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn):
    """(operations dispatched, VJPs of the field taken) by ``fn``: the field has two tanh, so
    two ``tanh_backward`` per VJP."""
    with OpCounter() as counter:
        fn()
    return sum(counter.names.values()), counter.names["tanh_backward"] // 2


def jax_variants(net, z, a):
    """JAX, jitted: the field, and the field with its VJP (one call per evaluation)."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return {}
    p = [jnp.asarray(x.detach().numpy()) for x in net.parameters()]
    zj, aj = jnp.asarray(z.numpy()), jnp.asarray(a.numpy())

    f = jax.jit(_peers.jax_mlp)
    fv = jax.jit(lambda p, z, a: (_peers.jax_mlp(p, z), jax.vjp(_peers.jax_mlp, p, z)[1](a)))

    def calls(fn):
        return lambda: [jax.block_until_ready(fn()) for _ in range(CALLS)]

    return {
        "JAX (jit): f": calls(lambda: f(p, zj)),
        "JAX (jit): f + VJP": calls(lambda: fv(p, zj, aj)),
    }


def fast_path_variant(field, z, a):
    """Issue #25's fast path (``neuralode_helpers.fastpath``: f and the VJPs by hand into
    buffers, for an ODENet) per evaluation, into preallocated outputs, where this version of
    the package has it: an internal API, hence guarded."""
    try:
        from neuralode_helpers import fastpath

        ours = bench.ours_field(field)
        plan = fastpath.plan_for(ours, z, list(ours.parameters()))
        if plan is None:
            return {}
        n_p = sum(p.numel() for p in ours.parameters())
        out_f, out_z, out_p = (torch.empty(n) for n in (z.numel(), z.numel(), n_p))
        t0 = torch.zeros(())

        def once():
            plan.vjp(t0, z, a, out_f, out_z, out_p)

        once()
    except Exception:  # noqa: BLE001  (no fast path, or another signature: not measured)
        return {}
    return {"issue #25's fast path: f + VJP (eager, by hand, buffers)":
            lambda: [once() for _ in range(CALLS)]}


def main(repeats=25, out=None):
    torch.set_num_threads(1)
    field, z0, t, target = bench.make_problem()
    net = field.net
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(z0.shape, generator=gen)
    floor = Floor(net, z0, a)
    diff = floor.check(net)
    h = torch.randn(z0.shape[0], floor.w1.shape[0], generator=gen)

    def calls(fn):
        return lambda: [fn() for _ in range(CALLS)]

    def eager_field():
        with torch.no_grad():
            return net(z0)

    per_eval = {
        "PyTorch kernels only: f": calls(floor.field),
        "PyTorch kernels only: f + VJP": calls(floor.field_and_vjp),
        "PyTorch eager: f (nn.Module, no graph)": calls(eager_field),
        "PyTorch eager: f + VJP (autograd.grad, as our adjoint)":
            calls(lambda: vjp_autograd(net, z0, a)),
        "PyTorch: one small operation (add of two (256, 2) tensors)":
            calls(lambda: torch.add(z0, a, out=floor.gz)),
        "PyTorch: tanh of (256, 64)": calls(lambda: torch.tanh(h, out=floor.s1)),
        "PyTorch: (256, 64) x (64, 64) + bias":
            calls(lambda: torch.addmm(floor.b2, h, floor.w2t, out=floor.s2)),
        **fast_path_variant(field, z0, a),
        **jax_variants(net, z0, a),
    }
    print(f"hand-written VJP against autograd: largest difference {diff:.1e}", flush=True)
    per = {k: (m / CALLS * 1e3, s) for k, (m, s) in race(per_eval, repeats).items()}
    for k, (us, s) in per.items():
        print(f"{k:>58}: {us:7.1f} us  (IQR/median {s:.0%})", flush=True)

    # Whole gradients, ours and diffrax's, in the same run. Ours run on the same weights in the
    # ODENet that issue #25's fast path recognises (NFE from Stats), with the fast path off too
    # where the package has the switch; the VJPs that backprop takes are counted on the
    # autograd path (CountedMLP: the field's tanh_backward, which the fast path does not run).
    ours_f = bench.ours_field(field)

    def solve_of(fn, **kw):
        return lambda f, z, tt, stats=None: fn(f, z, tt, rtol=bench.RTOL, atol=bench.ATOL,
                                               stats=stats, **kw)

    ours = {"ours, adjoint (default)": solve_of(odeint_adjoint),
            "ours, backprop through dopri5": solve_of(odeint)}
    if bench.FAST_ADJOINT:
        ours["ours, adjoint, fast path off"] = solve_of(odeint_adjoint, fast_path=False)
    if bench.FAST_ODEINT:
        ours["ours, backprop, fast path off"] = solve_of(odeint, fast_path=False)
    nfe, ops, whole = {}, {}, {}
    for name, solve in ours.items():
        r = bench.gradient(ours_f, z0, t, target, solve, stats=True)
        nfe[name] = (r[2], r[3])
        ops[name] = count_ops(lambda s=solve: bench.gradient(ours_f, z0, t, target, s,
                                                             stats=True))
        whole[name] = (lambda s=solve: bench.gradient(ours_f, z0, t, target, s, stats=True))
    v_bp = count_ops(lambda: bench.gradient(field, z0, t, target,
                                            ours["ours, backprop through dopri5"]))[1]
    peers, skipped, compile_s = _peers.diffrax_methods(field, z0, t, target, bench.RTOL,
                                                       bench.ATOL)
    for name, (_lib, _kind, run) in peers.items():
        whole[name] = run
        nfe[name] = run()[2:4]
    grads = race(whole, repeats)
    for k, (ms, s) in grads.items():
        print(f"{k:>58}: {ms:7.1f} ms  (IQR/median {s:.0%})", flush=True)

    op_us = per["PyTorch: one small operation (add of two (256, 2) tensors)"][0]
    t_f = per["PyTorch kernels only: f"][0] / 1e3  # ms
    t_fv = per["PyTorch kernels only: f + VJP"][0] / 1e3
    t_f_eager = per["PyTorch eager: f (nn.Module, no graph)"][0] / 1e3
    t_fv_eager = per["PyTorch eager: f + VJP (autograd.grad, as our adjoint)"][0] / 1e3
    (n_adj, m_adj), (n_bp, _) = nfe["ours, adjoint (default)"], nfe[
        "ours, backprop through dopri5"]
    # The fewest backward evaluations a backsolve adjoint can take: one dopri5 step (6 new
    # evaluations) per interval between observation times, plus the first evaluation.
    m_min = 6 * (bench.T_OBS - 1) + 1
    floors = {
        "adjoint": dict(
            nfe=f"{n_adj} / {m_adj}", mine="ours, adjoint (default)",
            peer="diffrax BacksolveAdjoint (jit)",
            kernels=n_adj * t_f + m_adj * t_fv,
            autograd=n_adj * t_f_eager + m_adj * t_fv_eager,
            fewest=n_adj * t_f_eager + m_min * t_fv_eager, m_min=m_min),
        "exact (backprop)": dict(
            nfe=f"{n_bp} / {v_bp} VJPs", mine="ours, backprop through dopri5",
            peer="diffrax RecursiveCheckpointAdjoint (jit, its default)",
            kernels=n_bp * t_f + v_bp * (t_fv - t_f),
            autograd=(n_bp - v_bp) * t_f_eager + v_bp * t_fv_eager),
    }
    write_report(per, grads, floors, nfe, ops, op_us, diff, skipped, compile_s, repeats,
                 out or HERE / "floor_latest.md")


def write_report(per, grads, floors, nfe, ops, op_us, diff, skipped, compile_s, repeats, out):
    v = _peers.versions()
    lines = [
        "# The PyTorch kernel floor on the benchmark's problem (issue #13)",
        "",
        f"Machine: {cpu_name()}, {platform.python_version()}; torch {torch.__version__}, "
        f"jax {v['jax']}, diffrax {v['diffrax']}; one thread (torch and XLA). CPU time, "
        f"medians of {repeats} runs, the variants taking turns (IQR / median in brackets). "
        "Written by `benchmarks/bench_floor.py`; the problem is `bench_adjoint.py`'s. Our "
        "whole gradients run on the same weights in an `ODENet` (the field issue #25's fast "
        "path recognises, "
        + ("with the fast path, the default, and with it off where the row says so)."
           if bench.FAST_ADJOINT else "but this version of the package has no fast path).")
        + " The floors' VJP count for backprop comes from the autograd path.",
        "",
        f"The hand-written VJP matches autograd to {diff:.1e}.",
        "",
        "## Per evaluation",
        "",
        "| what | CPU µs per evaluation |",
        "|---|---:|",
    ]
    for k, (us, s) in per.items():
        lines.append(f"| {k} | {us:.0f} ({s:.0%}) |")
    lines += ["", "## Whole gradient (forward + backward)", "", "| method | CPU ms |",
              "|---|---:|"]
    for k, (ms, s) in grads.items():
        lines.append(f"| {k} | {ms:.1f} ({s:.0%}) |")
    if compile_s:
        lines += ["", "diffrax's jit compilation, excluded: "
                  + ", ".join(f"{k} {s:.0f} s" for k, s in compile_s.items()) + "."]
    for lib, why in skipped:
        lines += ["", f"Skipped: {lib}: {why}."]
    lines += ["", "Per call of the field, adjoints (whole gradient / calls of the field, forward + "
              "backward, each library's calls counted by a wrapper or callback in the field):",
              ""]
    for k, (n, m) in nfe.items():
        if k in grads and m:  # the adjoints: their backward calls the field
            lines.append(f"- {k}: {n} + {m} calls, {1e3 * grads[k][0] / (n + m):.0f} µs "
                         "per call")
    lines += ["", "## The floor against the fastest peer", "",
              "| gradient kind | our NFE fwd / bwd | (a) kernels only | (b) autograd VJPs "
              f"| (c) as (b), {floors['adjoint']['m_min']} bwd | ours now | fastest peer "
              "| (a) / peer | (b) / peer | (c) / peer |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for kind, fl in floors.items():
        peer_ms = grads[fl["peer"]][0] if fl["peer"] in grads else float("nan")
        cells = [fl.get(k) for k in ("kernels", "autograd", "fewest")]
        ms = [f"{c:.1f} ms" if c is not None else "—" for c in cells]
        ratio = [f"{c / peer_ms:.2f}" if c is not None else "—" for c in cells]
        lines.append(f"| {kind} | {fl['nfe']} | {' | '.join(ms)} | {grads[fl['mine']][0]:.1f} ms "
                     f"| {peer_ms:.1f} ms | {' | '.join(ratio)} |")
    lines += ["",
              "(a) the field's kernels alone: forward evaluations × t(f) + backward "
              "evaluations × t(f + VJP) for the adjoint; forward evaluations × t(f) + VJPs × "
              "t(VJP) for backprop (VJPs counted in its backward; the evaluations that choose "
              "the first step have none). (b) the same with the field called as an "
              "`nn.Module` and its VJP from `torch.autograd.grad`, as any solver for any "
              "module must (backprop: the field with a graph and its backward, timed as one "
              "evaluation of f + VJP). (c) (b) with the fewest backward evaluations a "
              "backsolve adjoint can take here. Each leaves out everything a solver adds "
              "(stage sums, error norm, step-size control, dense output, autograd's graph over "
              "the stages), so a real PyTorch solver is slower than its floor.", "",
              "Operations our gradients dispatch (forward + backward, counted with a "
              "`TorchDispatchMode`), each costing about one small operation's "
              f"{op_us:.1f} µs besides its arithmetic:", ""]
    for name, (n, _) in ops.items():
        lines.append(f"- {name}: {n:,} operations, {n * op_us / 1e3:.1f} ms at "
                     f"{op_us:.1f} µs each")
    lines.append("")
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    if "--quick" in sys.argv[1:]:  # a smoke run: 3 repeats, to results/ (git ignores it)
        main(repeats=3, out=HERE / "results" / "floor_quick.md")
    else:
        main()
