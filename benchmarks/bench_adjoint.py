"""Benchmark: our gradients against torchdiffeq's, torchode's and diffrax's, at equal
tolerances, in one run.

Run by hand (``make bench``, which installs the optional peers with ``pip install -e
".[bench]"``), not part of the test suite::

    .venv/bin/python benchmarks/bench_adjoint.py            # full run, several minutes
    .venv/bin/python benchmarks/bench_adjoint.py --quick    # smoke run (mostly jax compiling)
    .venv/bin/python benchmarks/bench_adjoint.py --profile  # add a cProfile of our adjoint

What it measures
----------------
1. Gradient of an MSE loss on a batched MLP vector field (B=256 states in R^2, a 2-64-64-2 tanh
   network, autonomous, 10 observation times on [0, T], float32): median CPU time (and wall
   time) of forward + backward over many repeats with the methods taking turns, forward and
   backward NFE (counted by wrapping the vector field, so the torch libraries are counted the
   same way), and the relative error of the parameter and z0 gradients against a float64
   reference (backprop through our dopri5 at rtol=1e-10, atol=1e-12, cross-checked against
   torchdiffeq at the same tolerance). Peers: torchdiffeq, torchode and diffrax (JAX,
   jit-compiled; compile time excluded and reported on its own), each skipped with the reason
   when it is not installed (see ``_peers.py``). Two kinds of gradient are compared
   separately: the adjoint (the continuous problem's gradient, memory O(1) in the steps) and
   the exact gradient of the discretised solve (backprop, plain or checkpointed).
2. Training throughput on the toy problem (ODENet(), windows of length 1 at random t0 in
   [-1, 9], 100 windows per step): steps/s of our batched ``train`` loop and of the same loop
   through torchdiffeq, next to the naive loop (one window per optimiser step, scipy LSODA
   forward and backward), timed on a few windows and scaled to an epoch of 100.

The tables go to stdout and to ``benchmarks/latest.md`` (``--quick``: to
``benchmarks/results/quick.md``, which git ignores). All timings use one thread
(``torch.set_num_threads(1)``, change with ``--threads``): the tensors are small, and one thread
is both the fastest and the least disturbed by other work on the machine; JAX is held to one
thread by ``XLA_FLAGS`` (set before jax is imported). The ranking uses CPU time
(``time.process_time``): on a shared machine wall time also counts the waits for a core.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import inspect
import io
import math
import os
import platform
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _peers  # noqa: E402  (sets XLA_FLAGS before anything imports jax)
from _machine import cpu_name  # noqa: E402

from neuralode_helpers import (  # noqa: E402
    ODENet,
    Stats,
    WindowedField,
    odeint,
    odeint_adjoint,
    relative_error,
    saved_tensor_bytes,
    toy_solution,
    train,
    window_loss,
)
from neuralode_helpers.solvers import rk as _rk  # noqa: E402

try:
    import torchdiffeq
except ImportError:  # torchdiffeq is a test-only dependency
    torchdiffeq = None

HERE = Path(__file__).resolve().parent

# The gradient problem (stated in the output).
B, D, WIDTH, T_OBS, T_END = 256, 2, 64, 10, 2.0
WEIGHT_GAIN = 2.0  # default init makes a nearly linear, slow field; x2 gives |f| up to ~1.6
RTOL, ATOL = 1e-5, 1e-6
REF_RTOL, REF_ATOL = 1e-10, 1e-12
SEED_EPOCH_SECONDS = 7.05  # the original notebook: 100 windows (100 optimiser steps) in 7.05 s


def takes(fn, name):
    """Whether ``fn`` has a keyword ``name``: the fast path's switch (issue #25) is detected,
    so that this benchmark runs on versions of the package with and without it."""
    return name in inspect.signature(fn).parameters


# The fast path's switch, where this version of the package has one (False turns it off).
FAST_ADJOINT = takes(odeint_adjoint, "fast_path")
FAST_ODEINT = takes(odeint, "fast_path")
FAST_TRAIN = takes(train, "fast_path")
# Issue #25's lean Runge-Kutta path (solves without a graph: the adjoint's) has an internal
# switch, ``neuralode_helpers.solvers.rk.LEAN``, where this version has it.
LEAN = hasattr(_rk, "LEAN")


@contextlib.contextmanager
def readable_solver(on=True):
    """The lean RK path switched off for the block (forward and backward of a gradient)."""
    if not (on and LEAN):
        yield
        return
    old = _rk.LEAN
    _rk.LEAN = False
    try:
        yield
    finally:
        _rk.LEAN = old


def readable(solve):
    """``solve``, marked to run with the lean RK path off (see ``runner``)."""
    solve.readable_solver = True
    return solve


# ---------------------------------------------------------------------------------------------
# Problem
# ---------------------------------------------------------------------------------------------

class CountedMLP(nn.Module):
    """dz/dt = MLP(z), 2-64-64-2 tanh, counting its own evaluations in ``self.nfe``."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(D, WIDTH), nn.Tanh(), nn.Linear(WIDTH, WIDTH),
                                 nn.Tanh(), nn.Linear(WIDTH, D))
        self.nfe = 0

    def forward(self, t, z):
        self.nfe += 1
        return self.net(z)


def ours_field(field):
    """The same network, weights and dtype as ``field`` (a :class:`CountedMLP`) in an
    ``ODENet(D, (WIDTH, WIDTH), nn.Tanh, time_dependent=False)``: the field our fast path
    recognises (a user module such as CountedMLP gets the autograd path). Our rows run on it,
    their NFE from ``Stats``; the peers keep CountedMLP and its counter."""
    net = ODENet(D, (WIDTH, WIDTH), nn.Tanh, time_dependent=False)
    net.load_state_dict(field.state_dict())  # the same keys: net.0.weight, ...
    return net.to(next(field.parameters()).dtype)


def make_problem(dtype=torch.float32):
    torch.manual_seed(0)
    field = CountedMLP()
    with torch.no_grad():
        for m in field.net:
            if isinstance(m, nn.Linear):
                m.weight.mul_(WEIGHT_GAIN)
    gen = torch.Generator().manual_seed(1)
    z0 = torch.randn(B, D, generator=gen)
    target = torch.randn(T_OBS, B, D, generator=gen)
    t = torch.linspace(0.0, T_END, T_OBS)
    return field.to(dtype), z0.to(dtype), t.to(dtype), target.to(dtype)


def loss_fn(ys, target):
    return ((ys - target) ** 2).mean()


def gradient(field, z0, t, target, solve, stats=False):
    """One forward + backward; returns (flat param grad, z0 grad, fwd NFE, bwd NFE, wall
    seconds, CPU seconds). NFE: from the field's counter ``field.nfe``, or with
    ``stats=True`` from the ``Stats`` that ``solve(field, z, t, stats=...)`` fills (the fast
    path evaluates an ODENet without calling it, so no counter in a module sees those)."""
    field.zero_grad(set_to_none=True)
    z = z0.detach().clone().requires_grad_(True)
    st = Stats() if stats else None
    if st is None:
        field.nfe = 0
    start, cpu = time.perf_counter(), time.process_time()
    ys = solve(field, z, t) if st is None else solve(field, z, t, stats=st)
    nfe_fwd = field.nfe if st is None else st.forward.nfe
    loss_fn(ys, target).backward()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    nfe_bwd = field.nfe - nfe_fwd if st is None else st.backward.nfe
    g = torch.cat([p.grad.reshape(-1) for p in field.parameters()])
    return g.detach(), z.grad.detach(), nfe_fwd, nfe_bwd, seconds, cpu


def runner(lib, solve, field, ours, z0, t, target):
    """run() -> one gradient: ours on the ODENet ``ours`` (NFE from Stats), a peer on
    ``field`` (NFE from its counter)."""
    if lib == "ours":
        def run():
            with readable_solver(getattr(solve, "readable_solver", False)):
                return gradient(ours, z0, t, target, solve, stats=True)
        return run
    return lambda: gradient(field, z0, t, target, solve)


DEFAULT_ADJOINT = "ours adjoint (default: backsolve, seminorm, z restored)"
DEFAULT_BACKPROP = "ours backprop through dopri5"
LEAN_OFF = "ours adjoint, lean RK step off"
BASELINE = "ours adjoint, fast path and lean RK step off"


def solvers(rtol, atol):
    """name -> (library, kind, solve(field, z0, t)). Equal tolerances forward and backward.
    kind: "adjoint" (the continuous problem's gradient) or "backprop" (the exact gradient of
    the discretised solve)."""
    def adj(**kw):
        return lambda f, z, t, stats=None: odeint_adjoint(f, z, t, rtol=rtol, atol=atol,
                                                          stats=stats, **kw)

    def bp(**kw):
        return lambda f, z, t, stats=None: odeint(f, z, t, rtol=rtol, atol=atol, stats=stats,
                                                  **kw)

    out = {
        "ours adjoint (default: backsolve, seminorm, z restored)": ("ours", "adjoint", adj()),
        "ours adjoint, full norm": ("ours", "adjoint", adj(seminorm=False)),
        "ours adjoint, interpolated": ("ours", "adjoint", adj(adjoint="interpolated")),
        "ours adjoint, quadrature": ("ours", "adjoint", adj(adjoint="quadrature")),
        "ours adjoint, tsit5": ("ours", "adjoint", adj(method="tsit5")),
        "ours backprop through dopri5": ("ours", "backprop", bp()),
        "ours backprop through tsit5": ("ours", "backprop", bp(method="tsit5")),
        'ours backprop, checkpoint="steps"': ("ours", "backprop", bp(checkpoint="steps")),
    }
    # Issue #25's fast path turned off: the readable autograd path, in the same run.
    if FAST_ADJOINT:
        out["ours adjoint, fast path off"] = ("ours", "adjoint", adj(fast_path=False))
    if FAST_ODEINT:
        out["ours backprop, fast path off"] = ("ours", "backprop", bp(fast_path=False))
    # Issue #25's lean RK step turned off (it serves solves without a graph: the adjoint's;
    # backprop keeps the readable step anyway), alone and with the fast path off: the latter
    # is the package before issue #25 but for route 3 (the backward solve's first step is the
    # forward's last proposed step), which has no switch.
    if LEAN:
        out[LEAN_OFF] = ("ours", "adjoint", readable(adj()))
        if FAST_ADJOINT:
            out[BASELINE] = ("ours", "adjoint", readable(adj(fast_path=False)))
    if torchdiffeq is not None:
        out.update({
            "torchdiffeq adjoint": ("torchdiffeq", "adjoint",
                                    lambda f, z, t: torchdiffeq.odeint_adjoint(
                f, z, t, rtol=rtol, atol=atol, method="dopri5")),
            "torchdiffeq adjoint, seminorm": ("torchdiffeq", "adjoint",
                                              lambda f, z, t: torchdiffeq.odeint_adjoint(
                f, z, t, rtol=rtol, atol=atol, method="dopri5",
                adjoint_options=dict(norm="seminorm"))),
            "torchdiffeq backprop through dopri5": ("torchdiffeq", "backprop",
                                                    lambda f, z, t: torchdiffeq.odeint(
                f, z, t, rtol=rtol, atol=atol, method="dopri5")),
        })
    return out


def bench_gradient(repeats):
    field, z0, t, target = make_problem(torch.float32)
    field64, z064, t64, target64 = make_problem(torch.float64)
    field64.load_state_dict({k: v.double() for k, v in field.state_dict().items()})

    ref_g, ref_z, ref_fwd, *_ = gradient(field64, z064, t64, target64, lambda f, z, tt: odeint(
        f, z, tt, rtol=REF_RTOL, atol=REF_ATOL))
    check = None
    if torchdiffeq is not None:
        g2, gz2, *_ = gradient(field64, z064, t64, target64, lambda f, z, tt: torchdiffeq.odeint(
            f, z, tt, rtol=REF_RTOL, atol=REF_ATOL, method="dopri5"))
        check = (relative_error(g2, ref_g), relative_error(gz2, ref_z))

    # Every method as run() -> (dL/dθ, dL/dz0, fwd NFE, bwd NFE, wall s, CPU s).
    ours = ours_field(field)
    methods, saved_of = {}, {}
    for name, (lib, kind, solve) in solvers(RTOL, ATOL).items():
        methods[name] = (lib, kind, runner(lib, solve, field, ours, z0, t, target))
        # memory the graph keeps between forward and backward (parameters not counted)
        f = ours if lib == "ours" else field
        saved_of[name] = saved_tensor_bytes(solve, f, z0.detach().clone().requires_grad_(
            True), t, exclude=list(f.parameters()))[1]
    nfe_check = count_check(field, ours, z0, t, target)
    skipped = [] if torchdiffeq is not None else [("torchdiffeq", "not installed")]
    more, why = _peers.torchode_methods(field, z0, t, target, loss_fn, RTOL, ATOL)
    methods.update(more)
    skipped += why
    more, why, compile_s = _peers.diffrax_methods(field, z0, t, target, RTOL, ATOL)
    methods.update(more)
    skipped += why
    for lib, reason in skipped:
        print(f"skipping {lib}: {reason}", file=sys.stderr)

    for _, _, run in methods.values():
        run()  # warm-up
    # The methods take turns, so that a busy moment of the machine (or the order) favours none.
    runs_of = {name: [] for name in methods}
    for _ in tqdm(range(repeats), desc="gradient repeats", leave=False):
        for name, (_, _, run) in methods.items():
            runs_of[name].append(run())
    rows = []
    for name, (lib, kind, _) in methods.items():
        runs = runs_of[name]
        g, gz, nf, nb, *_ = runs[-1]
        g = torch.as_tensor(np.array(g)).double()
        gz = torch.as_tensor(np.array(gz)).double()
        cpu = sorted(1e3 * r[5] for r in runs)
        q1, q3 = np.percentile(cpu, [25, 75])
        kib = saved_of.get(name)
        rows.append(dict(name=name, lib=lib, kind=kind, ms=statistics.median(cpu),
                         iqr=(q3 - q1) / statistics.median(cpu),
                         wall=1e3 * statistics.median(r[4] for r in runs),
                         nfe_fwd=nf, nfe_bwd=nb if kind == "adjoint" else None,
                         kib=None if kib is None else kib / 1024,
                         err_theta=relative_error(g, ref_g), err_z0=relative_error(gz, ref_z)))
    return rows, dict(ref_nfe=ref_fwd, check=check, skipped=skipped, compile_s=compile_s,
                      nfe_check=nfe_check, fast=fast_vs_off(runs_of))


def count_check(field, ours, z0, t, target):
    """Our rows count NFE with Stats, the peers with the field's counter: on the autograd path
    (the fast path off, or the package without one) both must count the same. Returns
    [(row, (fwd, bwd) by the counter, (fwd, bwd) by Stats)]."""
    out = []
    for name, off in [("adjoint", dict(fast_path=False) if FAST_ADJOINT else {}),
                      ("backprop", dict(fast_path=False) if FAST_ODEINT else {})]:
        solve = odeint_adjoint if name == "adjoint" else odeint

        def run(f, z, tt, stats=None, solve=solve, off=off):
            return solve(f, z, tt, rtol=RTOL, atol=ATOL, stats=stats, **off)

        by_counter = gradient(field, z0, t, target, run)[2:4]
        by_stats = gradient(ours, z0, t, target, run, stats=True)[2:4]
        out.append((name, tuple(by_counter), tuple(by_stats)))
    return out


def fast_vs_off(runs_of):
    """The fast path against the autograd path, same run: (kind, default row, off row,
    relative difference of dL/dθ, of dL/dz0)."""
    out = []
    for kind, on, off in [("adjoint", DEFAULT_ADJOINT, "ours adjoint, fast path off"),
                          ("backprop", DEFAULT_BACKPROP, "ours backprop, fast path off")]:
        if on in runs_of and off in runs_of:
            a, b = runs_of[on][-1], runs_of[off][-1]
            out.append((kind, on, off, relative_error(a[0].double(), b[0].double()),
                        relative_error(a[1].double(), b[1].double())))
    return out


# ---------------------------------------------------------------------------------------------
# Seed task: training throughput
# ---------------------------------------------------------------------------------------------

def seed_model():
    torch.manual_seed(0)
    return ODENet()


def _no_op_hook(module, args, output):
    return None


def train_ours(steps, adjoint=True, fast_path=None):
    """(steps per CPU second, mean forward NFE, mean backward NFE) of ``train``; fast_path
    None: the package's default (and no keyword, for a package without the switch). False
    without a ``train(fast_path=...)``: a forward hook that does nothing, on the model, which
    the fast path does not reproduce and so leaves to autograd (checked by
    ``train_field_note``)."""
    model = seed_model()
    kw, hook = {}, None
    if fast_path is not None and FAST_TRAIN:
        kw = dict(fast_path=fast_path)
    elif fast_path is False:
        hook = model.register_forward_hook(_no_op_hook)
    cpu = time.process_time()
    res = train(model, steps=steps, batch_size=100, adjoint=adjoint, seed=0, progress=False,
                **kw)
    cpu = time.process_time() - cpu
    if hook is not None:
        hook.remove()
    return steps / cpu, statistics.mean(res.nfe_forward), (
        statistics.mean(res.nfe_backward) if adjoint else None)


def train_torchdiffeq(steps, rtol=1e-5, atol=1e-6):
    """The same loop as ``train`` (same windows, Adam, lr schedule), solved by torchdiffeq.
    Returns (steps per CPU second, None, None)."""
    model = seed_model()
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, (1e-3 / 1e-2) ** (1 / steps))
    s = torch.linspace(0, 1, 2)
    start = time.process_time()
    for _ in range(steps):
        u = torch.rand(2, 100, generator=gen)
        t0 = -1.0 + 10.0 * u[0]  # same draws as neuralode_helpers.training.sample_windows
        z_true = toy_solution(t0[None] + s[:, None]).unsqueeze(-1)
        field = WindowedField(model, t0, 1.0)
        opt.zero_grad()
        z = torchdiffeq.odeint_adjoint(field, z_true[0], s, rtol=rtol, atol=atol,
                                       method="dopri5", adjoint_options=dict(norm="seminorm"))
        nn.functional.mse_loss(z[1:], z_true[1:]).backward()
        opt.step()
        sched.step()
    return steps / (time.process_time() - start), None, None


def seed_way(n_windows):
    """The naive algorithm, one window per optimiser step: scipy LSODA forward, then LSODA
    backwards on [z, a, dL/dtheta] (solve_ivp's default rtol=1e-3, atol=1e-6). Returns
    seconds per window."""
    from scipy.integrate import solve_ivp

    model = seed_model()
    params = list(model.parameters())
    opt = torch.optim.Adam(params)
    gen = torch.Generator().manual_seed(0)

    def f(t, z):  # z: (1,) -> (1,)
        return model.net(torch.cat([z, torch.tensor([t], dtype=z.dtype)]))

    def f_np(t, z):
        with torch.no_grad():
            return f(t, torch.as_tensor(z, dtype=torch.float32)).numpy()

    def aug(t, x):
        x = torch.as_tensor(x, dtype=torch.float32)
        z = x[:1].clone().requires_grad_(True)
        a = x[1:2]
        with torch.enable_grad():
            out = f(t, z)
            gz, *gp = torch.autograd.grad(out, [z, *params])
        return torch.cat([out.detach(), -a * gz, *(-a * g.reshape(-1) for g in gp)]).numpy()

    start = time.process_time()
    for _ in range(n_windows):
        t0 = float(10 * torch.rand(1, generator=gen) - 1)
        t1 = t0 + 1.0
        z0, z1_true = float(toy_solution(t0)), toy_solution(torch.tensor([t1]))
        z1 = torch.tensor(solve_ivp(f_np, (t0, t1), [z0], method="LSODA").y[:, -1],
                          dtype=torch.float32, requires_grad=True)
        loss = nn.functional.mse_loss(z1, z1_true)
        (a1,) = torch.autograd.grad(loss, z1)
        x1 = np.concatenate([z1.detach().numpy(), a1.numpy(),
                             np.zeros(sum(p.numel() for p in params), dtype=np.float32)])
        x0 = solve_ivp(aug, (t1, t0), x1, method="LSODA").y[:, -1]
        flat = torch.as_tensor(x0[2:], dtype=torch.float32)
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad = g.view_as(p).clone()
        opt.step()
    return (time.process_time() - start) / n_windows


def ours_one_window_at_a_time(n_windows):
    """Our code, used the naive way: one window per step, scipy LSODA, the same tolerances."""
    model = seed_model()
    opt = torch.optim.Adam(model.parameters())
    gen = torch.Generator().manual_seed(0)
    start = time.process_time()
    for _ in range(n_windows):
        t0 = 10 * torch.rand(1, generator=gen) - 1
        opt.zero_grad()
        window_loss(model, t0, torch.zeros(1), method="scipy:LSODA", rtol=1e-3,
                    atol=1e-6).backward()
        opt.step()
    return (time.process_time() - start) / n_windows


def train_plans():
    """(the fast path recognises ``train``'s field, it does not once a no-op forward hook is
    on the model), asked of the package's ``fastpath.plan_for`` where it has one (an internal
    API, hence guarded); (None, None) where it cannot be asked."""
    try:
        from neuralode_helpers import fastpath

        model = seed_model()
        t0 = torch.linspace(-1.0, 9.0, 100)
        z, params = torch.zeros(100, 1), list(model.parameters())
        plain = fastpath.plan_for(WindowedField(model, t0, 1.0), z, params) is not None
        model.register_forward_hook(_no_op_hook)
        hooked = fastpath.plan_for(WindowedField(model, t0, 1.0), z, params) is not None
        return plain, hooked
    except Exception:  # noqa: BLE001
        return None, None


TRAIN_FAST, TRAIN_FAST_WITH_HOOK = train_plans()


def train_field_note():
    """What the training rows run: the fast path or autograd, and how it was turned off."""
    if TRAIN_FAST is None:
        return "(Whether the fast path recognises `train`'s field: not known.) "
    if not TRAIN_FAST:
        return ("The fast path does not recognise `train`'s field (a `WindowedField` around "
                "the ODENet, one time per window): these rows run the autograd path. ")
    how = ("`train(..., fast_path=False)`" if FAST_TRAIN else
           "a forward hook that does nothing, registered on the model (the fast path leaves a "
           "module with hooks to autograd; `train` has no `fast_path` switch)")
    return ("The fast path recognises `train`'s field (a `WindowedField` around the ODENet); "
            f"the rows that say \"fast path off\" turn it off with {how}. ")


def bench_training(steps, n_seed, rounds):
    rows = []
    per_window = seed_way(n_seed)
    rows.append(dict(name="naive loop (re-implemented), 1 window/step, LSODA",
                     steps=1 / per_window, windows=1 / per_window, nfe=None))
    per_window = ours_one_window_at_a_time(n_seed)
    rows.append(dict(name="ours, 1 window/step, scipy:LSODA adjoint (same tolerances)",
                     steps=1 / per_window, windows=1 / per_window, nfe=None))
    # The batched loops: `rounds` runs of `steps` steps each, taking turns; median steps/s.
    loops = {"ours `train`, 100 windows/step, dopri5 adjoint":
             lambda: train_ours(steps, adjoint=True),
             "ours `train`, 100 windows/step, dopri5 backprop":
             lambda: train_ours(steps, adjoint=False)}
    if LEAN:
        def lean_off():
            with readable_solver():
                return train_ours(steps, adjoint=True)
        loops["ours `train`, 100 windows/step, dopri5 adjoint, lean RK step off"] = lean_off
    if FAST_TRAIN or (TRAIN_FAST and TRAIN_FAST_WITH_HOOK is False):
        loops["ours `train`, 100 windows/step, dopri5 adjoint, fast path off"] = \
            lambda: train_ours(steps, adjoint=True, fast_path=False)
        if FAST_TRAIN or FAST_ODEINT:  # backprop has a fast path only with odeint's switch
            loops["ours `train`, 100 windows/step, dopri5 backprop, fast path off"] = \
                lambda: train_ours(steps, adjoint=False, fast_path=False)
        if LEAN:
            def both_off():
                with readable_solver():
                    return train_ours(steps, adjoint=True, fast_path=False)
            loops["ours `train`, 100 windows/step, dopri5 adjoint, fast path and lean RK "
                  "step off"] = both_off
    if torchdiffeq is not None:
        loops["torchdiffeq, 100 windows/step, dopri5 adjoint, seminorm"] = \
            lambda: train_torchdiffeq(steps)
    runs = {name: [] for name in loops}
    names = list(loops)
    for i in range(rounds):
        for name in names[i % len(names):] + names[:i % len(names)]:
            runs[name].append(loops[name]())
    for name, rs in runs.items():
        sps = statistics.median(r[0] for r in rs)
        nf, nb = rs[-1][1], rs[-1][2]
        rows.append(dict(name=name, steps=sps, windows=100 * sps,
                         nfe=None if nf is None else (nf, nb)))
    return rows


# ---------------------------------------------------------------------------------------------
# Profile
# ---------------------------------------------------------------------------------------------

def profile_ours(n=10, top=18):
    field, z0, t, target = make_problem(torch.float32)
    field = ours_field(field)  # our rows' field (the fast path's, where there is one)

    def solve(f, z, tt, stats=None):
        return odeint_adjoint(f, z, tt, rtol=RTOL, atol=ATOL, stats=stats)

    gradient(field, z0, t, target, solve, stats=True)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        gradient(field, z0, t, target, solve, stats=True)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("tottime").print_stats(top)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def machine():
    cpu = cpu_name()
    tdq = torchdiffeq.__version__ if torchdiffeq is not None else "not installed"
    peers = ", ".join(f"{k} {v}" for k, v in _peers.versions().items())
    return (f"{cpu}, {os.cpu_count()} logical cores; torch {torch.__version__}, "
            f"torchdiffeq {tdq}, {peers}, Python {platform.python_version()}; "
            f"torch.set_num_threads({torch.get_num_threads()}), "
            f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")


def fmt(x, spec=".2e"):
    return "—" if x is None else format(x, spec)


def fast_path_note(info):
    """Which field our rows ran on, whether the fast path was there, and the checks that our
    NFE counts and gradients are comparable to the peers' and to the autograd path's."""
    text = (f"Our rows run on the same weights in an `ODENet({D}, ({WIDTH}, {WIDTH}), nn.Tanh, "
            "time_dependent=False)` (the peers keep their CountedMLP); their NFE come from "
            "`Stats`. ")
    if FAST_ADJOINT or FAST_ODEINT:
        which = " and ".join(n for n, ok in (("`odeint_adjoint`", FAST_ADJOINT),
                                             ("`odeint`", FAST_ODEINT)) if ok)
        text += (f"Issue #25's fast path ({which}: `fast_path=True`, the default) evaluates "
                 "that field and its VJP by hand; the rows that say \"fast path off\" pass "
                 "`fast_path=False` (the readable autograd path). ")
        missing = [n for n, ok in (("`odeint_adjoint`", FAST_ADJOINT), ("`odeint`", FAST_ODEINT))
                   if not ok]
        if missing:
            text += f"{' and '.join(missing)} has no `fast_path` switch in this version. "
    else:
        text += ("This version of the package has no `fast_path` switch (issue #25): every row "
                 "of ours is the autograd path, and there are no \"fast path off\" rows. ")
    if LEAN:
        text += ("The rows that say \"lean RK step off\" turn issue #25's lean Runge-Kutta "
                 "step (solves without a graph: the adjoint's forward and backward) off for the "
                 "whole gradient with the internal switch `neuralode_helpers.solvers.rk.LEAN = "
                 "False`; with the fast path off too, a row is the package as it was before "
                 "issue #25 except for the backward solve's first step (the forward's last "
                 "proposed step since issue #25, in every row: it has no switch). ")
    checks = "; ".join(
        f"{kind}: {c[0]} + {c[1]} counted by the field, {s[0]} + {s[1]} by Stats"
        + ("" if c == s else " (DIFFERENT)")
        for kind, c, s in info["nfe_check"])
    text += f"NFE counts on the autograd path (forward + backward): {checks}."
    for kind, _on, _off, e_theta, e_z in info["fast"]:
        text += (f" Fast path against fast path off ({kind}): dL/dθ differs by {e_theta:.1e}, "
                 f"dL/dz0 by {e_z:.1e} (relative).")
    return text


def fast_path_effect(grad_rows):
    """Issue #25's fast path and lean RK step in this run: our default rows against the same
    rows with either or both off (nothing where the package has no switch)."""
    ms = {r["name"]: r for r in grad_rows}
    out = []
    for kind, on, off, what in [
            ("adjoint", DEFAULT_ADJOINT, "ours adjoint, fast path off", "the fast path off"),
            ("adjoint", DEFAULT_ADJOINT, LEAN_OFF, "the lean RK step off"),
            ("adjoint", DEFAULT_ADJOINT, BASELINE, "both off"),
            ("backprop", DEFAULT_BACKPROP, "ours backprop, fast path off", "the fast path off")]:
        if on in ms and off in ms:
            a, b = ms[on], ms[off]
            def nfe(r):
                return f"{r['nfe_fwd']}" + ("" if r["nfe_bwd"] is None else
                                            f" + {r['nfe_bwd']}")

            out.append(f"- {kind}: *{on}* {a['ms']:.1f} ms ({nfe(a)} NFE) against "
                       f"{b['ms']:.1f} ms ({nfe(b)} NFE) with {what}: "
                       f"{a['ms'] / b['ms']:.2f}x.")
    if not out:
        return []
    return ["### Issue #25's fast path and lean RK step in this run", ""] + out + [""]


def report(grad_rows, info, train_rows, repeats, steps, n_seed, quick, rounds=1):
    lines = [f"# Adjoint benchmark{' (--quick smoke run)' if quick else ''}", "",
             f"Machine: {machine()}.", ""]
    lines += [
        "## Gradient of one loss: forward + backward", "",
        f"Problem: B={B} states in R^{D}, dz/dt = MLP(z), {D}-{WIDTH}-{WIDTH}-{D} tanh "
        f"(PyTorch default init, weights x{WEIGHT_GAIN:g}), {T_OBS} observation times on "
        f"[0, {T_END:g}], loss = MSE to a random target at all times, float32, dopri5 (unless "
        f"the row says tsit5), rtol={RTOL:g}, atol={ATOL:g} forward and backward, the whole "
        "batch one ODE under one RMS error norm, integral step-size controller, for every "
        f"library. Time: median CPU time of {repeats} runs after one warm-up, the methods "
        "taking turns (IQR/median: the spread of those runs; wall: median wall time, which on "
        "a shared machine also counts the waits for a core). NFE: calls of the vector field, "
        "counted by wrapping it (diffrax: by a host callback in the field, in a separately "
        "compiled copy; its backsolve's backward calls the field once per evaluation of the "
        "augmented dynamics). Saved: memory of the tensors the autograd graph keeps "
        "for backward after the forward pass (parameters excluded; `saved_tensor_bytes`; "
        "torch libraries with our solve signature only). "
        "Errors: relative 2-norm error against a float64 reference (backprop "
        f"through our dopri5, rtol={REF_RTOL:g}, atol={REF_ATOL:g}, "
        f"{info['ref_nfe']} forward NFE).", "",
    ]
    lines += [fast_path_note(info), ""]
    if info["check"] is not None:
        lines += [f"Reference cross-check: torchdiffeq float64 at the same tight tolerance "
                  f"differs by {info['check'][0]:.1e} (dL/dθ) and {info['check'][1]:.1e} "
                  "(dL/dz0).", ""]
    for lib, reason in info["skipped"]:
        lines += [f"Skipped: {lib}, {reason}.", ""]
    if info["compile_s"]:
        lines += ["diffrax's jit compilation, excluded from its times: " + ", ".join(
            f"{name.split(' (')[0]} {sec:.1f} s" for name, sec in info["compile_s"].items())
            + ".", ""]
    for kind, title in (("adjoint", "Adjoint (gradient of the continuous problem)"),
                        ("backprop", "Exact gradient of the discretised solve (backprop)")):
        rows = sorted((r for r in grad_rows if r["kind"] == kind), key=lambda r: r["ms"])
        if not rows:
            continue
        peers = [r for r in rows if r["lib"] != "ours"]
        best = min(r["ms"] for r in peers) if peers else None
        lines += [f"### {title}", "",
                  "| method | CPU time (ms) | IQR / median | wall (ms) | time / fastest peer | "
                  "forward NFE | backward NFE | saved (KiB) | rel. error dL/dθ | "
                  "rel. error dL/dz0 |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            ratio = "—" if best is None else f"{r['ms'] / best:.2f}"
            kib = "—" if r["kib"] is None else f"{r['kib']:,.0f}"
            lines.append(f"| {r['name']} | {r['ms']:.1f} | {r['iqr']:.0%} | {r['wall']:.0f} | "
                         f"{ratio} | {r['nfe_fwd']} | {fmt(r['nfe_bwd'], 'd')} | {kib} | "
                         f"{r['err_theta']:.1e} | {r['err_z0']:.1e} |")
        ours = [r for r in rows if r["lib"] == "ours"]
        if peers and ours:
            fastest, peer = ours[0], peers[0]
            met = fastest["ms"] <= peer["ms"]
            lines += ["", f"Goal (our fastest at or below the fastest peer): ours *"
                      f"{fastest['name']}* {fastest['ms']:.1f} ms against *{peer['name']}* "
                      f"{peer['ms']:.1f} ms: {fastest['ms'] / peer['ms']:.2f}x, "
                      f"{'met' if met else 'NOT met'}."]
        lines += [""]
    lines += fast_path_effect(grad_rows)
    lines += [
        "## Training throughput on the toy problem", "",
        "ODENet() (2-50-75-1 GELU, time-dependent), windows of length 1 starting at t0 ~ "
        "U[-1, 9], loss = squared error at the window's end (notebook 03's loss with n_obs=2). "
        "Batched rows: "
        f"100 windows per Adam step, dopri5 rtol=1e-5, atol=1e-6: {steps} steps (including "
        f"the optimiser step) timed in CPU time, median of {rounds} such runs, the loops "
        "taking turns; mean NFE over the last run. "
        + train_field_note()
        + "One-window rows: one window per Adam step, scipy "
        f"LSODA at solve_ivp's defaults (rtol=1e-3, atol=1e-6) like the naive loop, {n_seed} "
        "windows timed (CPU time) and scaled. The original notebook's own figure, on its "
        "author's machine: 100 "
        f"windows in {SEED_EPOCH_SECONDS} s ({100 / SEED_EPOCH_SECONDS:.1f} windows/s).", "",
        "| method | steps/s | windows/s | s per 100 windows | mean NFE fwd / bwd per step |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in train_rows:
        nfe = "—" if r["nfe"] is None else f"{r['nfe'][0]:.0f} / {fmt(r['nfe'][1], '.0f')}"
        lines.append(f"| {r['name']} | {r['steps']:.1f} | {r['windows']:.0f} | "
                     f"{100 / r['windows']:.3f} | {nfe} |")
    return "\n".join(lines) + "\n"


def attempts(grad_rows):
    """Issue #13's speed attempts: what each did (from this run's rows where it is one) and
    whether it was kept."""
    ms = {r["name"]: r for r in grad_rows}

    def vs(a, b):
        if a not in ms or b not in ms:
            return "not measured in this run"
        ra, rb = ms[a], ms[b]
        return (f"{ra['ms']:.1f} ms ({ra['nfe_fwd']}"
                f"{'' if ra['nfe_bwd'] is None else ' + ' + str(ra['nfe_bwd'])} NFE) against "
                f"{rb['ms']:.1f} ms ({rb['nfe_fwd']}"
                f"{'' if rb['nfe_bwd'] is None else ' + ' + str(rb['nfe_bwd'])} NFE), "
                f"{ra['ms'] / rb['ms']:.2f}x")

    steps = 'ours backprop, checkpoint="steps"'
    base_adj, base_bp = "ours adjoint (default: backsolve, seminorm, z restored)", \
        "ours backprop through dopri5"
    return [
        "## Speed attempts (issue #13)", "",
        "Where our time goes (torch.profiler, cProfile): the vector field's own kernels "
        "(tanh, matrix products) and PyTorch's per-operation and autograd overhead around them; "
        "the solver's own arithmetic is a small part. The same kernels run for every torch "
        "library; diffrax's XLA compiles the whole solve, with a faster tanh and no per-op "
        "overhead.", "",
        "- **tsit5 instead of dopri5** (fewer evaluations through a better tableau?): adjoint "
        f"{vs('ours adjoint, tsit5', base_adj)}; backprop "
        f"{vs('ours backprop through tsit5', base_bp)}. On this problem tsit5 takes more "
        "steps at these tolerances: not kept as the default (still `method=\"tsit5\"`).",
        "- **interpolated / quadrature adjoints** (no reconstruction of z; a-only backward "
        f"solve): interpolated {vs('ours adjoint, interpolated', base_adj)}; quadrature "
        f"{vs('ours adjoint, quadrature', base_adj)}. Within the noise of the default or "
        "slower, with more memory: the default stays.",
        "- **per-step checkpointing** for the exact gradient: "
        f"{vs(steps, base_bp)}: it trades time for memory, as it should; not a speed-up.",
        "- **fewer allocations and operations per step** (issue #13: tried, then reverted, "
        "because its round-off moved notebook 03's chaotic training; issue #25: kept, as the "
        "solver's lean path where no graph is built, with backprop through the solver left "
        "bit for bit as it was): the stages of a step as rows of one buffer, each stage's "
        "argument, the error estimate and the dense output one matrix-vector product each, "
        "the error ratio on the counted part only with one `.item()`: "
        "`benchmarks/bench_lean_solver.py`, [lean_solver_latest.md](lean_solver_latest.md), "
        "and the rows 'lean RK step off' above.",
        "- **`torch.compile`** of the vector field (and so of every stage that calls it) and "
        "**`torch.func.vjp`** for the augmented dynamics: measured by "
        "`benchmarks/bench_attempts.py` ([attempts_latest.md](attempts_latest.md)); both "
        "slower than eager `torch.autograd.grad` on this CPU, and compilation takes minutes: "
        "not kept. Issue #25 measured it again where it could pay, on the augmented VJP written "
        "by hand as one pure function and on a whole dopri5 step of the augmented system "
        "(`fullgraph=True`, with and without a fused rational tanh), against the eager fast "
        "path: `benchmarks/bench_compile.py`, [compile_latest.md](compile_latest.md), with "
        "its break-even over a training run; dropped.",
        "- **the autograd engine called directly** in the augmented dynamics (skipping "
        "`torch.autograd.grad`'s Python-side checks): one VJP of the field took 450-550 us "
        "against 660-690 us of CPU in a micro-benchmark, some 6% of the adjoint's time at 70 "
        "backward evaluations, but through a private API "
        "(`Variable._execution_engine.run_backward`) whose signature changes between torch "
        "releases: not kept.",
        "- **a hand-written VJP of this MLP** (`benchmarks/bench_vjp_by_hand.py`): 1.3x "
        "faster per evaluation of the augmented dynamics; not kept in issue #13 (one "
        "architecture only), kept in issue #25 as the fast path for every `ODENet` "
        "(`neuralode_helpers/fastpath.py`; `benchmarks/bench_fastpath.py`, "
        "[fastpath_latest.md](fastpath_latest.md), and the rows 'fast path off' above).",
        f"- **why a gap stays**: {per_call(ms, base_adj, 'diffrax BacksolveAdjoint (jit)')} "
        "The field's own PyTorch kernels, written out by hand into preallocated tensors with "
        "no solver and no autograd around them, set the floor: `benchmarks/bench_floor.py`, "
        "[floor_latest.md](floor_latest.md).", "",
    ]


def per_call(ms, ours, peer):
    """Time per call of the field (forward + backward calls) of our adjoint and the peer's."""
    if ours not in ms or peer not in ms or ms[peer]["nfe_bwd"] is None:
        return "(diffrax not measured in this run.)"
    a, b = ms[ours], ms[peer]
    na, nb = a["nfe_fwd"] + a["nfe_bwd"], b["nfe_fwd"] + b["nfe_bwd"]
    return (f"diffrax's backsolve calls the field {nb} times ({b['nfe_fwd']} + "
            f"{b['nfe_bwd']}) to our {na} ({a['nfe_fwd']} + {a['nfe_bwd']}), yet takes "
            f"{1e3 * b['ms'] / nb:.0f} µs per call against our {1e3 * a['ms'] / na:.0f}: "
            "the gap is the cost of one evaluation, not the number of evaluations.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (seconds)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads for the whole run (default 1)")
    parser.add_argument("--profile", action="store_true",
                        help="append a cProfile of our adjoint's forward + backward")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the Markdown report (default benchmarks/latest.md; "
                        "benchmarks/results/quick.md with --quick)")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = HERE / "results" / "quick.md" if args.quick else HERE / "latest.md"
    args.out.parent.mkdir(parents=True, exist_ok=True)

    torch.set_num_threads(args.threads)
    repeats, steps, n_seed, rounds = (2, 3, 2, 1) if args.quick else (25, 60, 20, 3)
    start = time.perf_counter()
    grad_rows, info = bench_gradient(repeats)
    train_rows = bench_training(steps, n_seed, rounds)
    text = report(grad_rows, info, train_rows, repeats, steps, n_seed, args.quick, rounds)
    text += "\n" + "\n".join(attempts(grad_rows))
    if args.profile:
        n = 2 if args.quick else 10
        text += (f"\n## Profile: our adjoint, seminorm ({n} gradients, by own time)\n\n```\n"
                 + profile_ours(n=n) + "```\n")
    text += f"\nTotal benchmark time: {time.perf_counter() - start:.0f} s.\n"
    print(text)
    args.out.write_text(text)
    print(f"written to {args.out}")
    return 0 if all(math.isfinite(r["err_theta"]) for r in grad_rows) else 1


if __name__ == "__main__":
    sys.exit(main())
