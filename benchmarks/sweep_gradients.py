"""A measured map of when the adjoint loses: six ways to differentiate one solve, swept.

Run by hand, not part of the test suite::

    .venv/bin/python benchmarks/sweep_gradients.py           # full sweep, a few minutes
    .venv/bin/python benchmarks/sweep_gradients.py --quick   # smoke run, a few seconds

The problem: a batch of B states in R^D under an autonomous tanh MLP field
D -> W -> W -> D (float64), observed at T equally spaced times on [0, 5]; the loss is a fixed
random linear functional of all outputs. The MLP's weights are twice PyTorch's default
initialisation, so that the solver needs a few dozen steps. Around one base point we change
one factor at a time: the state dimension D, the MLP width W (the number of parameters), the
batch size B, the solver tolerance rtol (the number of dopri5 steps; atol = rtol / 100) and
the number of observation times T.

For each of the six methods (backprop through the solver; checkpointed backprop per interval
of t; per-step recomputation, ACA; the backsolve adjoint with z restored at the observation
times; the interpolated adjoint; the quadrature adjoint) we measure

- the median wall time of forward + backward over a few repeats, with one thread;
- NFE in the forward pass and during backward (re-evaluations included), and accepted steps;
- the memory the graph keeps for backward (``saved_tensor_bytes``, parameters excluded);
- the relative error of dL/dθ against a reference: per-step recomputation with dopri5 at
  rtol 1e-10 (the gradient of an almost exact solve, so it approximates the continuous
  gradient for every method alike).

Outputs: ``benchmarks/sweep_latest.md`` (tables and the machine) and
``benchmarks/sweep_latest.png`` (per factor: time of each method, and memory with the stated
budget marked). ``--quick`` writes to ``benchmarks/results/`` (ignored by git) instead.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import cpu_name  # noqa: E402

from neuralode_helpers import (  # noqa: E402
    Stats,
    odeint,
    odeint_adjoint,
    relative_error,
    saved_tensor_bytes,
)

HERE = Path(__file__).resolve().parent

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


@dataclass(frozen=True)
class Case:
    """One point of the sweep."""

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
QUICK_FACTORS = {"dim": [2, 3], "rtol": [1e-4, 1e-6]}


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
    """The field, z0, t and the loss weights of one case (float64, seeded)."""
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


def measure_method(name, field, z0, t, w, rtol, repeats, reference):
    """One method on one problem: a dict of time (s), NFE, steps, bytes and error."""
    params = list(field.parameters())
    stats = Stats()
    field.calls = 0
    loss, nbytes = saved_tensor_bytes(_loss, name, field, z0, t, w, rtol, stats,
                                      exclude=params)
    nfe_fwd, steps = field.calls, stats.forward.n_steps
    grads = torch.autograd.grad(loss, params)
    nfe_bwd = field.calls - nfe_fwd
    del loss
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        g = torch.autograd.grad(_loss(name, field, z0, t, w, rtol, Stats()), params)
        times.append(time.perf_counter() - start)
        del g
    return dict(seconds=statistics.median(times), nfe_fwd=nfe_fwd, nfe_bwd=nfe_bwd,
                steps=steps,
                bytes=nbytes, error=relative_error(grads, reference), grads=grads)


def measure_case(case: Case, repeats: int = 3, methods=None):
    """Every method on one case: {method name: measurement dict}."""
    field, z0, t, w = make_problem(case)
    reference = reference_gradient(field, z0, t, w)
    return {name: measure_method(name, field, z0, t, w, case.rtol, repeats, reference)
            for name in (methods or METHODS)}


def sweep(base: Case, factors: dict, repeats: int, progress=True):
    """One factor at a time around ``base``: a list of (factor, value, results)."""
    rows, done = [], {}
    cases = [(factor, value, replace(base, **{factor: value}))
             for factor, values in factors.items() for value in values]
    for k, (factor, value, case) in enumerate(cases):
        if case not in done:
            start = time.perf_counter()
            done[case] = measure_case(case, repeats)
            if progress:
                print(f"[{k + 1}/{len(cases)}] {factor}={value}: "
                      f"{time.perf_counter() - start:.1f} s", flush=True)
        rows.append((factor, value, done[case]))
    return rows


def n_params(case: Case):
    return (case.dim + 1) * case.width + (case.width + 1) * case.width + (case.width + 1) * case.dim


def machine():
    cpu = cpu_name()
    return (f"{cpu}, {os.cpu_count()} logical cores; torch {torch.__version__}, Python "
            f"{platform.python_version()}; torch.set_num_threads({torch.get_num_threads()})")


def _fmt_bytes(n):
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def report(rows, base, repeats, seconds, quick):
    """The markdown: setup, the fastest-method map, then the full table."""
    names = list(METHODS)
    adjoints = [n for n in names if "adjoint" in n]
    lines = [
        "# Six ways to differentiate a solve: the sweep",
        "",
        f"Written by `benchmarks/sweep_gradients.py{' --quick' if quick else ''}` in "
        f"{seconds:.0f} s on {machine()}.",
        "",
        f"Base point: D = {base.dim} state dimensions, a {base.dim}-{base.width}-{base.width}-"
        f"{base.dim} tanh MLP ({n_params(base)} parameters), batch {base.batch}, dopri5 at "
        f"rtol {base.rtol:g} (atol = rtol/100), {base.n_obs} observation times on "
        f"[0, {base.t_end:g}], float64. One factor changes at a time. Time: median of "
        f"{repeats} runs of forward + backward. Memory: bytes the graph keeps for backward "
        f"(parameters excluded). Error: relative error of dL/dθ against per-step "
        f"recomputation at rtol 1e-10. Budget: backprop marked ✗ where it keeps more than "
        f"{_fmt_bytes(BUDGET_BYTES)}.",
        "",
        "## Fastest method at each point",
        "",
        "| factor | value | fastest | its time | backprop | fastest adjoint | its time | "
        "backprop memory |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for factor, value, res in rows:
        best = min(names, key=lambda n: res[n]["seconds"])
        best_adj = min(adjoints, key=lambda n: res[n]["seconds"])
        bp = res["backprop"]
        over = " ✗" if bp["bytes"] > BUDGET_BYTES else ""
        lines.append(f"| {factor} | {value:g} | {best} | {1e3 * res[best]['seconds']:.1f} ms | "
                     f"{1e3 * bp['seconds']:.1f} ms | {best_adj} | "
                     f"{1e3 * res[best_adj]['seconds']:.1f} ms | "
                     f"{_fmt_bytes(bp['bytes'])}{over} |")
    lines += ["", "## Every method at every point", "",
              "| factor | value | method | time | NFE fwd | NFE bwd | steps | memory | "
              "error of dL/dθ |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for factor, value, res in rows:
        for name in names:
            r = res[name]
            lines.append(f"| {factor} | {value:g} | {name} | {1e3 * r['seconds']:.1f} ms | "
                         f"{r['nfe_fwd']} | {r['nfe_bwd']} | {r['steps']} | "
                         f"{_fmt_bytes(r['bytes'])} | {r['error']:.1e} |")
    return "\n".join(lines) + "\n"


def figure(rows, factors, path):
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(METHODS)
    fig, axes = plt.subplots(2, len(factors), figsize=(3.4 * len(factors), 6.2), squeeze=False)
    for j, factor in enumerate(factors):
        sub = [(v, res) for f, v, res in rows if f == factor]
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
    axes[0, 0].set_ylabel("forward + backward (ms)")
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
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sweep, a few seconds")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    base, factors = (QUICK_BASE, QUICK_FACTORS) if args.quick else (BASE, FACTORS)
    repeats = args.repeats or (1 if args.quick else 3)
    out = HERE / "results" if args.quick else HERE
    out.mkdir(exist_ok=True)
    stem = "sweep_quick" if args.quick else "sweep_latest"
    start = time.perf_counter()
    rows = sweep(base, factors, repeats)
    seconds = time.perf_counter() - start
    text = report(rows, base, repeats, seconds, args.quick)
    (out / f"{stem}.md").write_text(text, encoding="utf-8")
    figure(rows, factors, out / f"{stem}.png")
    print(text)
    print(f"wrote {out / stem}.md and .png in {seconds:.0f} s")


if __name__ == "__main__":
    main()
