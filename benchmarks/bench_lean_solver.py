"""Benchmark: the lean Runge–Kutta path (issue #25, routes 2 and 3) against the readable one.

Where no graph is built (the adjoint's forward and backward solves, a solve under
``torch.no_grad()``), the solver takes ``solvers.rk.LeanRK``: the stages combined as one
matrix-vector product each, the error estimate as one, the error norm on the counted parts
only with one ``.item()``, the dense output as one. ``solvers.rk.LEAN = False`` turns it off,
so both run here in one process, taking turns.

Rows (each a variant of the solver, timed against the readable path):

- ``lean``: everything above.
- ``lean, readable norm``: the lean step, but the error ratio by ``ErrorNorm.__call__``.
- ``lean, readable dense``: the lean step, but the dense output by ``rk.dense_output``.
- ``readable, old error estimate``: the readable path as it was before this change, whose
  error estimate added h Σ e_i k_i to a tensor of zeros (the same bits as today's h Σ e_i k_i).
- ``lean + backward first step``: route 3, simulated here without editing adjoint.py: the
  backward solve starts with the step size the forward solve proposed at its end
  (``carry["next_step"]`` as the backward's ``first_step``), instead of an initial-step
  selection (one evaluation) and a small first step.

Columns: CPU time relative to the readable path in the same round (each round runs every
variant once, order rotated; median and quartiles over the rounds) of (1) the whole adjoint
gradient on ``make bench``'s problem (bench_adjoint.py's ``make_problem``: 2-64-64-2 tanh
MLP, N = 256, 10 observation times, float32, dopri5 at rtol 1e-5, atol 1e-6,
``odeint_adjoint`` with its defaults), (2) a no-grad forward solve of
it, (3) a no-grad solve of a linear field dz/dt = z A on the backward solve's state size
(5506), where the solver's own work is most of the time; and the evaluation counts. Then
the ATen operations dispatched (counted, so independent of the machine's load) by a whole
forward solve and gradient, and each item on its own: operations per call and the time
ratio (best of interleaved rounds) on one dopri5 step of the backward state. Last, route 3's
evaluation counts on five problems, with and without the backward first step.

Run: ``.venv/bin/python benchmarks/bench_lean_solver.py [--repeats 30]``; writes
``benchmarks/lean_solver_latest.md``. Timings are ratios: the machine may be shared.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_adjoint import ATOL, RTOL, make_problem  # noqa: E402

import neuralode_helpers as nh  # noqa: E402
import neuralode_helpers.adjoint as adjoint_module  # noqa: E402
from neuralode_helpers.solvers import rk  # noqa: E402
from neuralode_helpers.solvers.controller import ErrorNorm  # noqa: E402
from neuralode_helpers.solvers.tableaus import TABLEAUS  # noqa: E402

OUT = HERE / "lean_solver_latest.md"


# ---- the variants ---------------------------------------------------------------------------
def _old_error_estimate(tab, h, ks):
    acc = rk._combine(tab.e, ks)
    return torch.zeros_like(ks[0]) if acc is None else rk._axpy(torch.zeros_like(acc), h, acc)


def _readable_norm(self, err, y0, y1, shape):
    return ErrorNorm.__call__(self, err.view(shape), y0.view(shape), y1.view(shape))


def _readable_dense(self, y, theta):
    return rk.dense_output(self.tab, y, self._ks, self.h, theta)


def _with_first_step(solve):
    """adjoint.py's ``solve`` with the backward solve started at the forward's proposed
    step (what the proposed change to adjoint.py does)."""
    last = {}

    def patched(f, y0, t, **kw):
        if kw.get("callback") is None and "hooks" in kw:  # the forward solve
            carry = {}
            out = solve(f, y0, t, carry=carry, **kw)
            last["h"] = carry.get("next_step")
            return out
        options = dict(kw.get("options") or {})
        if last.get("h") is not None and "first_step" not in options:
            options["first_step"] = last["h"]
            kw["options"] = options
        return solve(f, y0, t, **kw)

    return patched


@contextlib.contextmanager
def variant(name):
    saved = (rk.LEAN, rk.error_estimate, ErrorNorm.lean, rk.LeanRK.dense,
             adjoint_module.solve)
    adaptive = sys.modules["neuralode_helpers.solvers.adaptive"]
    saved_adaptive = adaptive.error_estimate
    try:
        rk.LEAN = name != "readable" and not name.startswith("readable,")
        if name == "readable, old error estimate":
            adaptive.error_estimate = _old_error_estimate
        if name == "lean, readable norm":
            ErrorNorm.lean = _readable_norm
        if name == "lean, readable dense":
            rk.LeanRK.dense = _readable_dense
        if name == "lean + backward first step":
            adjoint_module.solve = _with_first_step(saved[4])
        yield
    finally:
        rk.LEAN, rk.error_estimate, ErrorNorm.lean, rk.LeanRK.dense, adjoint_module.solve = saved
        adaptive.error_estimate = saved_adaptive


VARIANTS = ["readable", "lean", "lean, readable norm", "lean, readable dense",
            "readable, old error estimate", "lean + backward first step"]


# ---- the workloads --------------------------------------------------------------------------
def workloads():
    field, z0, t, target = make_problem()
    params = tuple(field.parameters())
    g = torch.Generator().manual_seed(2)
    A = torch.randn(2, 2, generator=g) * 0.5
    z_big = torch.randn(2753, 2, generator=g)  # 5506 entries, the backward state's size

    def gradient():
        stats = nh.Stats()
        for p in params:
            p.grad = None
        ys = nh.odeint_adjoint(field, z0, t, rtol=RTOL, atol=ATOL, method="dopri5",
                               stats=stats)
        (ys - target).pow(2).mean().backward()
        return stats, torch.cat([p.grad.reshape(-1) for p in params])

    def forward():
        stats = nh.Stats()
        with torch.no_grad():
            nh.odeint(field, z0, t, rtol=RTOL, atol=ATOL, method="dopri5", stats=stats)
        return stats, None

    def linear():
        stats = nh.Stats()
        with torch.no_grad():
            nh.odeint(lambda tt, z: z @ A, z_big, t, rtol=RTOL, atol=ATOL, method="dopri5",
                      stats=stats)
        return stats, None

    return {"adjoint gradient": gradient, "no-grad forward": forward,
            "solver only (linear field)": linear}


# ---- each item on its own: operations dispatched and time per call ------------------------
class _CountOps(TorchDispatchMode):
    """Counts the ATen operations dispatched (a deterministic measure of per-call overhead)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def _ops(fn):
    with torch.no_grad(), _CountOps() as counter:
        fn()
    return counter.n


def items():
    """(name, readable call, lean call) for each item, on the backward state of make bench's
    adjoint (5506 entries; the seminorm counts the first 1024) and dopri5, with a field that
    returns a fixed tensor (so that only the solver's work is timed)."""
    tab = TABLEAUS["dopri5"]
    g = torch.Generator().manual_seed(3)
    n = 5506
    y, k = torch.randn(n, generator=g), torch.randn(n, generator=g) * 0.1
    t = torch.tensor(0.3)
    field = lambda tt, z: k  # noqa: E731
    norm = ErrorNorm(RTOL, ATOL, [1024, n - 1024], 1)
    lean = rk.LeanRK(tab)
    with torch.no_grad():
        y1, ks = rk.rk_step(field, tab, t, 0.2, y, k)
        lean.step(field, t, 0.2, y, k)
    err = rk.error_estimate(tab, 0.2, ks)
    theta = torch.tensor(0.4)
    rk4, lean_rk4 = TABLEAUS["rk4"], rk.LeanRK(TABLEAUS["rk4"])
    return [
        ("stages (one dopri5 step)", lambda: rk.rk_step(field, tab, t, 0.2, y, k),
         lambda: lean.step(field, t, 0.2, y, k)),
        ("error estimate (before: + zeros)", lambda: _old_error_estimate(tab, 0.2, ks),
         lambda: rk.error_estimate(tab, 0.2, ks)),
        ("error estimate (lean)", lambda: rk.error_estimate(tab, 0.2, ks), lean.error),
        ("error norm (seminorm)", lambda: norm(err, y, y1),
         lambda: norm.lean(err.clone(), y, y1, y.shape)),
        ("dense output", lambda: rk.dense_output(tab, y, ks, 0.2, theta),
         lambda: lean.dense(y, 0.4)),
        ("one rk4 step (fixed step)", lambda: rk.rk_step(field, rk4, t, 0.2, y, k),
         lambda: lean_rk4.step(field, t, 0.2, y, k)),
    ]


def time_items(rounds=15, number=200):
    rows = []
    for name, before, after in items():
        best = {0: math.inf, 1: math.inf}
        with torch.no_grad():
            for r in range(rounds):
                for which in ((0, 1) if r % 2 else (1, 0)):
                    fn = (before, after)[which]
                    start = time.process_time()
                    for _ in range(number):
                        fn()
                    best[which] = min(best[which], (time.process_time() - start) / number)
        rows.append((name, _ops(before), _ops(after), best[1] / best[0]))
    return rows


# ---- route 3: where the backward evaluations go ---------------------------------------------
def _route3_problems():
    field, z0, t, target = make_problem()
    yield "make bench's (float32, rtol 1e-5)", field, z0, t, target, RTOL, ATOL
    f64 = [x.double() for x in make_problem()]
    yield "make bench's in float64, rtol 1e-7", *f64, 1e-7, 1e-9
    torch.manual_seed(0)
    net = nh.ODENet().double()
    g = torch.Generator().manual_seed(0)
    yield ("ODENet(), one window (N = 64, 11 times on [0, 1]), rtol 1e-6", net,
           torch.randn(64, 1, generator=g, dtype=torch.float64),
           torch.linspace(0, 1, 11, dtype=torch.float64),
           torch.randn(11, 64, 1, generator=g, dtype=torch.float64), 1e-6, 1e-8)
    for seed in (1, 2):  # two draws of b and z_0: the first step can cost a rejection
        torch.manual_seed(seed)
        lin = torch.nn.Linear(2, 2).double()
        with torch.no_grad():
            lin.weight.copy_(torch.tensor([[-3.0, 1.0], [-1.0, -3.0]]))
        contracting = torch.nn.Sequential(lin, torch.nn.Tanh())
        yield (f"contracting: tanh(W z + b), eigenvalues of W -3 ± i, rtol 1e-6 (draw {seed})",
               lambda tt, z, m=contracting: m(z), torch.randn(32, 2, dtype=torch.float64),
               torch.linspace(0, 3, 4, dtype=torch.float64),
               torch.zeros(4, 32, 2, dtype=torch.float64), 1e-6, 1e-8)


def route3():
    """Backward evaluations with and without the forward's proposed step as the backward's
    first step, and the gradient's error against backprop through a tight float64 solve."""
    rows = []
    for name, f, z0, t, target, rtol, atol in _route3_problems():
        module = f if isinstance(f, torch.nn.Module) else f.__defaults__[0]
        params = list(module.parameters())
        result = {}
        for v in ("reference", "lean", "lean + backward first step"):
            for p in params:
                p.grad = None
            stats = nh.Stats()
            with variant("lean" if v == "reference" else v):
                if v == "reference":  # in float64 whatever the problem's dtype
                    module.double()
                    ys = nh.odeint(f, z0.double(), t.double(), rtol=1e-10, atol=1e-12)
                    (ys - target.double()).pow(2).mean().backward()
                    grad = torch.cat([p.grad.reshape(-1) for p in params])
                    module.to(z0.dtype)
                else:
                    ys = nh.odeint_adjoint(f, z0, t, rtol=rtol, atol=atol, stats=stats,
                                           adjoint_params=tuple(params))
                    (ys - target).pow(2).mean().backward()
                    grad = torch.cat([p.grad.reshape(-1) for p in params]).double()
            result[v] = stats, grad
        ref = result["reference"][1]
        cells = []
        for v in ("lean", "lean + backward first step"):
            stats, grad = result[v]
            b = stats.backward
            cells.append(f"{b.nfe} ({b.n_steps} steps, {b.n_rejected} rejected), error "
                         f"{((grad - ref).norm() / ref.norm()).item():.2e}")
        rows.append(f"| {name} | {result['lean'][0].forward.nfe} | " + " | ".join(cells) + " |")
    return rows


def _count_gradient_ops(fn):
    with _CountOps() as counter:
        fn()
    return counter.n


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    jobs = workloads()
    times = {(v, j): [] for v in VARIANTS for j in jobs}
    counts, grads = {}, {}
    for v in VARIANTS:  # warm up; counts and the gradient of each variant
        with variant(v):
            for j, fn in jobs.items():
                stats, grad = fn()
                counts[v, j] = (stats.forward.nfe, stats.backward.nfe)
                if grad is not None:
                    grads[v] = grad
    for r in range(args.repeats):
        order = VARIANTS[r % len(VARIANTS):] + VARIANTS[: r % len(VARIANTS)]
        if r % 2:
            order = order[::-1]
        for v in order:
            with variant(v):
                for j, fn in jobs.items():
                    start = time.process_time()
                    fn()
                    times[v, j].append(time.process_time() - start)
    med = {k: statistics.median(x) for k, x in times.items()}

    def paired(v, j):
        """Median and quartiles of the per-round ratios to the readable path's time in the
        same round (a round runs every variant once, so slow spells cancel)."""
        ratios = sorted(a / b for a, b in zip(times[v, j], times["readable", j]))
        q = statistics.quantiles(ratios, n=4)
        return f"{statistics.median(ratios):.3f} ({q[0]:.2f}–{q[2]:.2f})"

    ref = grads["readable"]
    lines = [
        "# The lean Runge–Kutta path against the readable one (issue #25, routes 2 and 3)",
        "",
        f"`benchmarks/bench_lean_solver.py`, {args.repeats} rounds, each running every "
        "variant once (order rotated); CPU time relative to the readable path in the same "
        "round, median (quartiles) over the rounds (below 1: faster); one thread, on a "
        "machine shared with other work (ratios only). Problem: `make bench`'s (2-64-64-2 "
        "tanh MLP, N = 256, 10 times, float32, dopri5, rtol 1e-5, atol 1e-6, "
        "`odeint_adjoint`'s defaults); the linear field dz/dt = z A has the backward state's "
        "size (5506), so that the solver's own work is most of the time.",
        "",
        "| variant | " + " | ".join(jobs) + " | NFE fwd / bwd (gradient) "
        "| gradient vs readable (rel.) |",
        "|---|" + "---|" * (len(jobs) + 2),
    ]
    for v in VARIANTS:
        ratios = " | ".join(paired(v, j) for j in jobs)
        nf, nb = counts[v, "adjoint gradient"]
        diff = ((grads[v] - ref).norm() / ref.norm()).item()
        lines.append(f"| {v} | {ratios} | {nf} / {nb} | {diff:.1e} |")
    ops = {}
    for v in ("readable", "lean", "lean + backward first step"):
        with variant(v):
            ops[v] = _ops(jobs["no-grad forward"]), _count_gradient_ops(jobs["adjoint gradient"])
    lines += ["", "ATen operations dispatched (all of them, the field's included; "
              "deterministic): " + "; ".join(f"{v}: forward {a}, gradient {b}"
                                              for v, (a, b) in ops.items())]
    lines += ["", "Each item on its own (dopri5, the backward state of 5506 entries, seminorm "
              "over the first 1024; a field that returns a fixed tensor): ATen operations "
              "dispatched per call, and the time ratio (best of 15 interleaved rounds of 200 "
              "calls).", "", "| item | operations before | after | time after / before |",
              "|---|---|---|---|"]
    for name, a, b, ratio in time_items():
        lines.append(f"| {name} | {a} | {b} | {ratio:.2f} |")
    lines += ["", " ".join([
        "Route 3: backward evaluations (steps, rejected) and the gradient's relative error",
        "against backprop through a tight float64 solve (rtol 1e-10), without and with the",
        "forward's proposed step as the backward's first step. Without it the backward spends",
        "1 evaluation on f(t_N), 1 on the initial-step selection, and its first interval takes",
        "2 steps (the selected step is small); each jump at an interior t_i changes the state,",
        "so the next step's first stage is evaluated again (8 evaluations on make bench's",
        "problem). 70 = 1 + 1 + 10 × 6 + 8; with the first step 63 = 1 + 9 × 6 + 8, the least",
        "for one step per interval."]), "",
        "| problem | forward NFE | backward NFE, as committed | with the forward's step as "
        "first step |", "|---|---|---|---|"]
    lines += route3()
    lines += ["", "Readable path's medians (ms, under load): " + ", ".join(
        f"{j} {1e3 * med['readable', j]:.1f}" for j in jobs), ""]
    text = "\n".join(lines)
    print(text)
    OUT.write_text(text)


if __name__ == "__main__":
    main()
