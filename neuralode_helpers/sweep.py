r"""A measured map of when the adjoint loses: six ways to differentiate one solve, swept.

The problem. A batch of :math:`B` states :math:`z \in \mathbb{R}^D` (``z0`` of shape
``(B, D)``) under an autonomous tanh MLP field

.. math:: f(t, z) = W_3 \tanh(W_2 \tanh(W_1 z + b_1) + b_2) + b_3,

of widths :math:`D \to W \to W \to D` (float64, :math:`P = (D+1)W + (W+1)W + (W+1)D`
parameters; the weights are twice PyTorch's default initialisation, so that dopri5 needs a
few dozen steps). It is solved at :math:`N` equally spaced times on ``[0, t_end]`` and the
loss is a fixed random linear functional of every output,
:math:`L = \frac{1}{B}\sum_{i,b} w_{i,b}^\top z_b(t_i)` with ``w`` of shape ``(N, B, D)``.
Around a base point (:data:`BASE`) one factor changes at a time (:data:`FACTORS`): the state
size D, the width W (so P), the batch B, the tolerance rtol (so the number of steps;
atol = rtol/100) and the number of observation times N. The base point belongs to four of
the five factors, so the 16 values of :data:`FACTORS` are 13 distinct points, each measured
once.

Per point and method (:data:`METHODS`), :func:`measure_case` gives

- ``seconds``: the median CPU time of forward + backward (one thread, so the process's CPU
  time is the computation's: a moment in which other programs hold the processor does not
  count, as it would in wall time), and ``wall_seconds``, the median wall time. The methods
  are timed interleaved: each repeat runs every method once, in an order rotated from repeat
  to repeat, so that a slow moment of the machine falls on all of them alike;
- ``cpu_share``: the CPU time over the wall time, over all timed runs of the point. Close
  to 1 on a machine that is otherwise idle; well below 1, other programs ran at the same
  time, and they slow the CPU time too, less, through the caches and cores they share
  (:func:`sweep` measures such a point again, and :func:`report` marks it if it stays so);
- ``nfe_fwd``, ``nfe_bwd``: evaluations of f in the forward pass and during backward
  (re-evaluations included), ``steps``: accepted forward steps;
- ``bytes``: the memory the graph keeps for backward (parameters excluded);
- ``error``: the relative error of dL/dθ against per-step recomputation with dopri5 at
  rtol 1e-10, and ``grads``, the gradient itself.

``benchmarks/sweep_gradients.py`` runs the full sweep and writes its report; a copy of that
report ships with the package (:func:`committed_report`, :func:`committed_rows`), so that
notebook 08 can show it from any folder.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace
from importlib import resources

import torch
from torch import nn

from .adjoint import odeint_adjoint
from .diagnostics import relative_error, saved_tensor_bytes
from .solvers import Stats, odeint

__all__ = [
    "BASE", "BUDGET_BYTES", "BUSY_SHARE", "FACTORS", "METHODS", "QUICK_BASE", "QUICK_FACTORS",
    "Case", "MLPField", "committed_report", "committed_rows", "distinct_points", "figure",
    "make_problem", "measure_case", "n_params", "reference_gradient", "report", "sweep",
]


#: The six methods: name -> (function, keyword arguments).
METHODS = {
    "backprop": (odeint, {}),
    "ckpt-intervals": (odeint, {"checkpoint": "observations"}),
    "ckpt-steps (ACA)": (odeint, {"checkpoint": "steps"}),
    "backsolve adjoint": (odeint_adjoint, {}),
    "interpolated adjoint": (odeint_adjoint, {"adjoint": "interpolated"}),
    "quadrature adjoint": (odeint_adjoint, {"adjoint": "quadrature"}),
}

#: Memory kept for backward above which we say backprop "runs out" (a stated budget: the
#: byte counts scale linearly with batch and state, so the same picture holds at any size).
BUDGET_BYTES = 16 * 2**20

#: A point whose CPU share stays below this after its re-measurements is marked in the report.
BUSY_SHARE = 0.85


@dataclass(frozen=True)
class Case:
    """One point of the sweep: D, W, B, rtol, N and the end time."""

    dim: int = 4
    width: int = 64
    batch: int = 64
    rtol: float = 1e-6
    n_obs: int = 10
    t_end: float = 5.0


GAIN = 2.0
BASE = Case()
FACTORS = {
    "dim": [2, 8, 32, 64],
    "width": [16, 64, 256],
    "batch": [8, 64, 512],
    "rtol": [1e-3, 1e-6, 1e-9],
    "n_obs": [2, 10, 50],
}
QUICK_BASE = Case(dim=2, width=8, batch=4, rtol=1e-5, n_obs=4, t_end=1.0)
QUICK_FACTORS = {"dim": [2, 3], "rtol": [1e-4, 1e-5]}


class MLPField(nn.Module):
    """dz/dt = W3 tanh(W2 tanh(W1 z + b1) + b2) + b3, autonomous; ``calls`` counts its
    evaluations (the same way for every method, re-evaluations in backward included)."""

    def __init__(self, dim, width):
        super().__init__()
        self.calls = 0
        self.net = nn.Sequential(nn.Linear(dim, width), nn.Tanh(), nn.Linear(width, width),
                                 nn.Tanh(), nn.Linear(width, dim))

    def forward(self, t, z):
        self.calls += 1
        return self.net(z)


def make_problem(case: Case, seed: int = 0):
    """The field, z0 (B, D), t (N,) and the loss weights w (N, B, D) of one case (float64)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    field = MLPField(case.dim, case.width).double()
    with torch.no_grad():  # weights twice PyTorch's default: a field with some curvature
        for layer in field.net[::2]:
            layer.weight.mul_(GAIN)
    z0 = torch.randn(case.batch, case.dim, generator=gen, dtype=torch.float64)
    t = torch.linspace(0, case.t_end, case.n_obs, dtype=torch.float64)
    w = torch.randn(case.n_obs, case.batch, case.dim, generator=gen, dtype=torch.float64)
    return field, z0, t, w


def _loss(name, field, z0, t, w, rtol, stats):
    fn, kw = METHODS[name]
    ys = fn(field, z0, t, rtol=rtol, atol=rtol / 100, stats=stats, **kw)
    return (ys * w).sum() / z0.shape[0]


def reference_gradient(field, z0, t, w, rtol=1e-10):
    """dL/dθ of an almost exact solve (per-step recomputation keeps memory small)."""
    params = list(field.parameters())
    loss = _loss("ckpt-steps (ACA)", field, z0, t, w, rtol, Stats())
    return torch.autograd.grad(loss, params)


def _count(name, field, z0, t, w, rtol, reference):
    """NFE, steps, bytes kept and the gradient's error of one method (no timing)."""
    params = list(field.parameters())
    stats = Stats()
    field.calls = 0
    loss, nbytes = saved_tensor_bytes(_loss, name, field, z0, t, w, rtol, stats,
                                      exclude=params)
    nfe_fwd, steps = field.calls, stats.forward.n_steps
    grads = torch.autograd.grad(loss, params)
    return dict(nfe_fwd=nfe_fwd, nfe_bwd=field.calls - nfe_fwd, steps=steps, bytes=nbytes,
                error=relative_error(grads, reference), grads=grads)


def measure_case(case: Case, repeats: int = 3, methods=None):
    """Every method on one case: {method name: measurement dict} (see the module docstring).

    The counts come from one untimed run per method (which also warms up); then ``repeats``
    rounds time every method once each, the order rotated by one method per round."""
    names = list(methods or METHODS)
    field, z0, t, w = make_problem(case)
    params = list(field.parameters())
    reference = reference_gradient(field, z0, t, w)
    res = {name: _count(name, field, z0, t, w, case.rtol, reference) for name in names}
    cpu, wall = {name: [] for name in names}, {name: [] for name in names}
    for k in range(repeats):
        for name in names[k % len(names):] + names[:k % len(names)]:
            start, start_cpu = time.perf_counter(), time.process_time()
            torch.autograd.grad(_loss(name, field, z0, t, w, case.rtol, Stats()), params)
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    total_wall = sum(map(sum, wall.values()))
    share = sum(map(sum, cpu.values())) / total_wall if total_wall > 0 else 1.0
    for name in names:
        res[name].update(seconds=statistics.median(cpu[name]),
                         wall_seconds=statistics.median(wall[name]), cpu_share=share)
    return res


def distinct_points(base: Case, factors: dict):
    """The sweep's distinct points, in order: a list of (label, case). The base point comes
    first, labelled "base"; every other point is labelled by the one factor it changes."""
    points = [("base", base)]
    for factor, values in factors.items():
        for value in values:
            case = replace(base, **{factor: value})
            if case != base:
                points.append((f"{factor} = {value:g}", case))
    return points


def sweep(base: Case, factors: dict, repeats: int, retries: int = 1, retry_seconds=None,
          progress=True):
    """Measure every distinct point once: a list of (label, case, results).

    A point whose CPU share is below :data:`BUSY_SHARE` is measured again, up to ``retries``
    more times (and only while the sweep has run less than ``retry_seconds``, if given), and
    the measurement with the largest share is kept."""
    rows = []
    points = distinct_points(base, factors)
    begin = time.perf_counter()
    for k, (label, case) in enumerate(points):
        start = time.perf_counter()
        best = measure_case(case, repeats)
        for _ in range(retries):
            late = retry_seconds is not None and time.perf_counter() - begin > retry_seconds
            if _share(best) >= BUSY_SHARE or late:
                break
            again = measure_case(case, repeats)
            if _share(again) > _share(best):
                best = again
        rows.append((label, case, best))
        if progress:
            print(f"[{k + 1}/{len(points)}] {label}: {time.perf_counter() - start:.1f} s, "
                  f"CPU share {_share(best):.2f}", flush=True)
    return rows


def _share(res):
    return next(iter(res.values()))["cpu_share"]


def n_params(case: Case):
    """P, the MLP's number of parameters."""
    return ((case.dim + 1) * case.width + (case.width + 1) * case.width
            + (case.width + 1) * case.dim)


def _fmt_bytes(n):
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def report(rows, base, repeats, seconds, machine, command="benchmarks/sweep_gradients.py",
           retries=1):
    """The markdown: the set-up, the fastest method at each point, then every method."""
    names = list(METHODS)
    adjoints = [n for n in names if "adjoint" in n]
    busy = [label for label, _, res in rows if _share(res) < BUSY_SHARE]
    lines = [
        "# Six ways to differentiate a solve: the sweep",
        "",
        f"Written by `{command}` in {seconds:.0f} s on {machine}.",
        "",
        f"Base point: D = {base.dim} state dimensions, a {base.dim}-{base.width}-{base.width}-"
        f"{base.dim} tanh MLP ({n_params(base)} parameters), batch {base.batch}, dopri5 at "
        f"rtol {base.rtol:g} (atol = rtol/100), {base.n_obs} observation times on "
        f"[0, {base.t_end:g}], float64. One factor changes at a time: {len(rows)} distinct "
        f"points, the base point listed once. Time: the median CPU time (one thread) of "
        f"{repeats} runs of forward + backward, the methods interleaved (each round times "
        f"every method once, in an order rotated from round to round). CPU share: the CPU "
        f"time over the wall time during the point's timed runs (1 = nothing else ran). "
        f"Memory: bytes the graph keeps for backward (parameters excluded). Error: relative "
        f"error of dL/dθ against per-step recomputation at rtol 1e-10. Budget: backprop "
        f"marked ✗ where it keeps more than {_fmt_bytes(BUDGET_BYTES)}.",
        "",
        "The timings come from a shared 2-core machine on which other programs ran at the "
        "same time: read the ratios between methods at one point, not the absolute times. "
        f"A point whose CPU share was below {BUSY_SHARE} was measured again"
        + (f" (up to {retries} time{'s' * (retries > 1)}, while time allowed)" if retries
           else " (not in this run)")
        + "; one whose best share stayed below it is marked ⚠ ("
        + (", ".join(busy) if busy else "none")
        + "): there the other programs may have slowed some methods more than others.",
        "",
        "## Fastest method at each point",
        "",
        "| point | fastest | its time | backprop | fastest adjoint | its time | "
        "backprop memory | CPU share |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, _, res in rows:
        best = min(names, key=lambda n: res[n]["seconds"])
        best_adj = min(adjoints, key=lambda n: res[n]["seconds"])
        bp = res["backprop"]
        over = " ✗" if bp["bytes"] > BUDGET_BYTES else ""
        flag = " ⚠" if _share(res) < BUSY_SHARE else ""
        lines.append(f"| {label} | {best} | {1e3 * res[best]['seconds']:.1f} ms | "
                     f"{1e3 * bp['seconds']:.1f} ms | {best_adj} | "
                     f"{1e3 * res[best_adj]['seconds']:.1f} ms | "
                     f"{_fmt_bytes(bp['bytes'])}{over} | {_share(res):.2f}{flag} |")
    lines += ["", "## Every method at every point", "",
              "| point | method | time | NFE fwd | NFE bwd | steps | memory | "
              "error of dL/dθ |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, _, res in rows:
        for name in names:
            r = res[name]
            lines.append(f"| {label} | {name} | {1e3 * r['seconds']:.1f} ms | "
                         f"{r['nfe_fwd']} | {r['nfe_bwd']} | {r['steps']} | "
                         f"{_fmt_bytes(r['bytes'])} | {r['error']:.1e} |")
    return "\n".join(lines) + "\n"


def figure(rows, base, factors, path):
    """Per factor (the base point included in each): each method's time, and its memory
    with the budget marked. Saved to ``path``."""
    import matplotlib.ticker
    from matplotlib.figure import Figure

    names = list(METHODS)
    by_case = {case: res for _, case, res in rows}
    fig = Figure(figsize=(3.4 * len(factors), 6.2))
    axes = fig.subplots(2, len(factors), squeeze=False)
    for j, (factor, values) in enumerate(factors.items()):
        sub = [(v, by_case[replace(base, **{factor: v})]) for v in values]
        xs = [v for v, _ in sub]
        for name in names:
            axes[0, j].plot(xs, [1e3 * res[name]["seconds"] for _, res in sub], "o-",
                            label=name, ms=4)
            axes[1, j].plot(xs, [res[name]["bytes"] / 2**20 for _, res in sub], "o-", ms=4)
        over = [(v, 1e3 * res["backprop"]["seconds"]) for v, res in sub
                if res["backprop"]["bytes"] > BUDGET_BYTES]
        if over:
            axes[0, j].plot(*zip(*over), "x", color="red", ms=12, mew=2,
                            label="backprop over budget")
        axes[1, j].axhline(BUDGET_BYTES / 2**20, color="red", ls="--", lw=1)
        for i in range(2):
            axes[i, j].set_xscale("log")
            axes[i, j].set_yscale("log")
            axes[i, j].set_xticks(xs, [f"{v:g}" for v in xs])
            axes[i, j].xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            axes[i, j].set_xlabel(factor)
        if factor == "rtol":
            for i in range(2):
                axes[i, j].invert_xaxis()
    axes[0, 0].set_ylabel("forward + backward, CPU (ms)")
    axes[1, 0].set_ylabel("kept for backward (MiB)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="upper center", ncol=4, fontsize=8)
    fig.suptitle(f"red dashed line / red x: backprop's budget of {_fmt_bytes(BUDGET_BYTES)}",
                 y=0.005, va="bottom", fontsize=9)
    fig.tight_layout(rect=(0, 0.03, 1, 0.9))
    fig.savefig(path, dpi=110)


def committed_report() -> str:
    """The full sweep's report as committed (``neuralode_helpers/data/sweep_latest.md``)."""
    data = resources.files(__package__).joinpath("data", "sweep_latest.md")
    return data.read_text(encoding="utf-8")


def _kib(text):
    value, unit = text.split()
    return float(value) * (1024 if unit == "MiB" else 1)


def committed_rows():
    """The committed report's table of every method at every point, as a list of dicts
    (point, method, ms, nfe_fwd, nfe_bwd, steps, kib, error)."""
    rows = []
    table = committed_report().split("## Every method at every point", 1)[1]
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 8 or not cells[2].endswith(" ms"):
            continue
        rows.append(dict(point=cells[0], method=cells[1], ms=float(cells[2].split()[0]),
                         nfe_fwd=int(cells[3]), nfe_bwd=int(cells[4]), steps=int(cells[5]),
                         kib=_kib(cells[6]), error=float(cells[7])))
    return rows
