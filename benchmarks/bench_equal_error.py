"""Work–precision: each library's gradient time against its gradient error, over tolerances.

``bench_adjoint.py`` compares the libraries at equal tolerances, where our gradients come out
several times more accurate than the peers': that favours the peers in time. This script
compares them at equal *error*: it runs ``bench_adjoint.py``'s problem (the batched tanh MLP,
float32, 10 observation times) at rtol = 1e-3 ... 1e-7 (atol = rtol / 10, forward and
backward) for each library's adjoint and exact (backprop) gradient, measures the median CPU
time of a forward + backward and the relative error of dL/dθ against the float64 reference,
and interpolates each method's time (log-log, between its two bracketing tolerances) at common
error levels. A method whose errors do not bracket a level gets no entry there: no
extrapolation.

Run by hand (``.venv/bin/python benchmarks/bench_equal_error.py``, after ``make bench`` has
installed the peers); writes ``benchmarks/equal_error_latest.md`` and ``.png``
(``--quick``: ``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _peers  # noqa: E402  (sets XLA_FLAGS before anything imports jax)
import bench_adjoint as ba  # noqa: E402
from _machine import cpu_name  # noqa: E402

from neuralode_helpers import odeint, relative_error  # noqa: E402

TOLS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
LEVELS = (1e-3, 1e-4, 1e-5, 1e-6)
# Ours with issue #25's fast path (the default, where the package has it) and without it (the
# "fast path off" rows exist only where the package has the switch), and with both the fast
# path and the lean RK step off (the package before issue #25 but for the backward's first
# step), where it has both switches.
OURS = (ba.DEFAULT_ADJOINT, ba.DEFAULT_BACKPROP, "ours adjoint, fast path off",
        "ours backprop, fast path off", ba.BASELINE)
TORCHDIFFEQ = ("torchdiffeq adjoint, seminorm", "torchdiffeq backprop through dopri5")
PEERS = ("torchode JointBacksolveAdjoint", "torchode AutoDiffAdjoint (backprop)",
         "diffrax BacksolveAdjoint, adjoint_rms_seminorm (jit)",
         "diffrax RecursiveCheckpointAdjoint (jit, its default)")


def methods_at(rtol, problem, ours):
    """name -> (kind, run) at this tolerance, for the rows this comparison keeps. Ours run on
    ``ours`` (``ba.ours_field``: the same weights in the ODENet the fast path recognises)."""
    field, z0, t, target = problem
    atol = rtol / 10
    out = {}
    for name, (lib, kind, solve) in ba.solvers(rtol, atol).items():
        if name in OURS + TORCHDIFFEQ:
            out[name] = (kind, ba.runner(lib, solve, field, ours, z0, t, target))
    more, _ = _peers.torchode_methods(field, z0, t, target, ba.loss_fn, rtol, atol)
    more2, _, _ = _peers.diffrax_methods(field, z0, t, target, rtol, atol)
    for name, (_, kind, run) in {**more, **more2}.items():
        if name in PEERS:
            out[name] = (kind, run)
    return out


def measure(repeats, tols):
    problem = ba.make_problem(torch.float32)
    field64, z064, t64, target64 = ba.make_problem(torch.float64)
    field64.load_state_dict({k: v.double() for k, v in problem[0].state_dict().items()})
    ref_g, *_ = ba.gradient(field64, z064, t64, target64, lambda f, z, tt: odeint(
        f, z, tt, rtol=ba.REF_RTOL, atol=ba.REF_ATOL))
    ours = ba.ours_field(problem[0])
    points = {}  # name -> list of (rtol, error, median ms, kind)
    for rtol in tols:
        methods = methods_at(rtol, problem, ours)
        for _, run in methods.values():
            run()  # warm-up (and jit compilation, excluded)
        runs = {name: [] for name in methods}
        for _ in range(repeats):  # the methods take turns
            for name, (_, run) in methods.items():
                runs[name].append(run())
        for name, (kind, _) in methods.items():
            g = torch.as_tensor(np.array(runs[name][-1][0])).double()
            ms = statistics.median(1e3 * r[5] for r in runs[name])
            err = relative_error(g, ref_g)
            points.setdefault(name, []).append((rtol, err, ms, kind))
            print(f"rtol {rtol:g}: {name}: error {err:.2e}, {ms:.1f} ms", flush=True)
    return points


def at_level(pts, level):
    """Time at error ``level``, log-log interpolated between the two tolerances whose errors
    bracket it; None when none do."""
    best = None
    for (_, e1, m1, _), (_, e2, m2, _) in zip(pts, pts[1:]):
        lo, hi = min(e1, e2), max(e1, e2)
        if lo <= level <= hi and e1 != e2:
            w = (math.log(level) - math.log(e1)) / (math.log(e2) - math.log(e1))
            ms = math.exp(math.log(m1) + w * (math.log(m2) - math.log(m1)))
            best = ms if best is None else min(best, ms)
    return best


FAST_NOTE = ("the default rows with the fast path, the \"fast path off\" rows without it"
             if ba.FAST_ADJOINT else "this version of the package has no fast path")


def report(points, repeats, seconds):
    lines = [
        "# Equal-error comparison (work–precision)", "",
        f"`benchmarks/bench_equal_error.py`; {cpu_name()}, torch {torch.__version__}, "
        f"{', '.join(f'{k} {v}' for k, v in _peers.versions().items())}; one thread. "
        f"`bench_adjoint.py`'s problem (B = {ba.B}, D = {ba.D}, 2-64-64-2 tanh MLP, "
        f"{ba.T_OBS} observation times, float32, dopri5; ours on the same weights in an "
        f"`ODENet` (the field issue #25's fast path recognises): "
        f"{FAST_NOTE}) at rtol = "
        f"{', '.join(f'{r:g}' for r in sorted({p[0] for v in points.values() for p in v}))}"
        " with atol = rtol / 10, forward and backward. Time: median CPU time of "
        f"{repeats} forward + backward runs, the methods taking turns (diffrax's jit "
        "compilation excluded). Error: relative 2-norm error of dL/dθ against the float64 "
        "reference. Timings come from a shared 2-core machine: read the ratios, not the "
        f"absolute times. Total {seconds:.0f} s.", "",
        "## Time at equal gradient error (ms, interpolated; — where the method's errors do "
        "not reach that level)", "",
        "| kind | method | " + " | ".join(f"error {lv:.0e}" for lv in LEVELS) + " |",
        "|---|---|" + "---:|" * len(LEVELS)]
    for kind in ("adjoint", "backprop"):
        for name, pts in points.items():
            if pts[0][3] != kind:
                continue
            cells = [at_level(pts, lv) for lv in LEVELS]
            lines.append(f"| {kind} | {name} | " + " | ".join(
                "—" if c is None else f"{c:.1f}" for c in cells) + " |")
    lines += ["", "## Every measurement", "", "| method | rtol | error dL/dθ | CPU ms |",
              "|---|---:|---:|---:|"]
    for name, pts in points.items():
        for rtol, err, ms, _ in pts:
            lines.append(f"| {name} | {rtol:g} | {err:.2e} | {ms:.1f} |")
    return "\n".join(lines) + "\n"


def figure(points, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    for ax, kind in zip(axes, ("adjoint", "backprop")):
        for name, pts in points.items():
            if pts[0][3] == kind:
                ax.loglog([p[1] for p in pts], [p[2] for p in pts], "o-", label=name)
        ax.set_xlabel("relative error of dL/dθ")
        ax.set_ylabel("CPU time of forward + backward (ms)")
        ax.set_title(f"{kind}: lower left is better")
        ax.invert_xaxis()
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="two tolerances, two repeats")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    repeats = 2 if args.quick else args.repeats
    points = measure(repeats, TOLS[1:3] if args.quick else TOLS)
    out = (HERE / "results" / "equal_error_quick.md") if args.quick else \
        (HERE / "equal_error_latest.md")
    out.parent.mkdir(exist_ok=True)
    text = report(points, repeats, time.perf_counter() - start)
    out.write_text(text, encoding="utf-8")
    figure(points, out.with_suffix(".png"))
    print(text)
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
