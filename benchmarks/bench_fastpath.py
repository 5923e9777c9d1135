"""The fast path for ODENet fields (issue #25, route 1): is it faster, and by how much?

Run by hand (a few minutes; the machine may be shared, so everything is timed in turns and
reported as ratios)::

    .venv/bin/python benchmarks/bench_fastpath.py      # writes benchmarks/fastpath_latest.md

The problem is ``bench_adjoint.py``'s (B = 256 states in R², a 2-64-64-2 tanh MLP, 10
observation times, float32, rtol 1e-5, atol 1e-6), with its field as an ``ODENet(2, (64,
64), nn.Tanh, time_dependent=False)`` holding the same weights, so that
:func:`~neuralode_helpers.fastpath.plan_for` recognises it. Measured:

1. one evaluation of the backsolve's augmented right-hand side [f, -(∂f/∂z)ᵀa,
   -(∂f/∂θ)ᵀa]: the readable path (``_vjp`` and a concatenation) against the plan's;
2. the whole adjoint gradient (forward + backward) with ``fast_path`` True and False, for
   the three adjoints, with the NFE of each;
3. the backsolve's dL/dθ summed over the accepted steps (``fastpath.StepQuadrature``,
   backward state [z, a]) against a_θ carried in the state (2n + P), both on the fast path,
   on this problem, on its first 16 states, and on a toy-sized one (``ODENet()``, 2 → 50 →
   75 → 1 GELU, 100 states, 5 times on [0, 1]);
4. backprop through dopri5 with the field as the module (a graph of about eight nodes per
   evaluation) against an attempt kept here, not in the package: the field as one
   ``torch.autograd.Function`` node per evaluation whose backward is the hand-written VJP;
5. the toy problem's training step with the adjoint (``train``: ``ODENet()``, 2-50-75-1
   GELU, 100 windows of length 1 per step, dopri5, as ``bench_adjoint.py``'s
   ``bench_training``), whose field is a ``WindowedField`` around the ODENet: fast path on
   and off (off: ``plan_for`` as the adjoint sees it returns None). Only this section::

    .venv/bin/python benchmarks/bench_fastpath.py --training   # replaces its section

Variants take turns, their order rotated between rounds; CPU time (``time.process_time``),
one thread, medians, and the interquartile range over the median in brackets.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_adjoint as bench  # noqa: E402
from _machine import cpu_name  # noqa: E402

import neuralode_helpers.adjoint as adjoint_module  # noqa: E402
from neuralode_helpers import ODENet, Stats, odeint, odeint_adjoint, train  # noqa: E402
from neuralode_helpers.adjoint import _vjp  # noqa: E402
from neuralode_helpers.fastpath import plan_for  # noqa: E402

HERE = Path(__file__).resolve().parent
CALLS = 50  # evaluations per timed call of a per-evaluation variant


def race(variants, repeats):
    """name -> (median CPU seconds, IQR / median), the variants taking turns in an order
    rotated every round."""
    for fn in variants.values():
        fn()
    names = list(variants)
    runs = {k: [] for k in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            start = time.process_time()
            variants[k]()
            runs[k].append(time.process_time() - start)
    out = {}
    for k, v in runs.items():
        q = statistics.quantiles(v, n=4)
        out[k] = (statistics.median(v), (q[2] - q[0]) / statistics.median(v))
    return out


def odenet_problem():
    field, z0, t, target = bench.make_problem()
    net = ODENet(bench.D, (bench.WIDTH, bench.WIDTH), nn.Tanh, time_dependent=False)
    net.net.load_state_dict(field.net.state_dict())
    return net, z0, t, target


# ---- the attempt that is not in the package: one autograd node per evaluation -------------
class FieldFn(torch.autograd.Function):
    """f(t, z) of a recognised, autonomous ODENet as one autograd node; its backward is the
    hand-written VJP (first derivatives only: enough for this measurement)."""

    @staticmethod
    def forward(ctx, plan, z, *tensors):
        z2 = z.detach().reshape(-1, plan.D)
        x, us, xs = z2, [], []
        for k, act in enumerate(plan.acts):
            u = torch.addmm(plan.biases[k], x, plan.weights_t[k])
            x = torch.empty_like(u) if act.keeps_u else u
            act.forward(u, x)
            us.append(u)
            xs.append(x)
        f = torch.addmm(plan.biases[-1], x, plan.weights_t[-1])
        ctx.plan, ctx.shape = plan, z.shape
        ctx.save_for_backward(z2, *us, *xs)
        return f.view(z.shape)

    @staticmethod
    def backward(ctx, grad_f):
        plan = ctx.plan
        z2, *rest = ctx.saved_tensors
        n = len(plan.acts)
        us, xs = rest[:n], [z2, *rest[n:]]
        d = grad_f.reshape(-1, plan.D)
        grads = [None] * (2 * len(plan.weights))
        for k in range(len(plan.weights) - 1, -1, -1):
            grads[2 * k] = torch.mm(d.t(), xs[k])
            grads[2 * k + 1] = d.sum(0)
            if k:
                d = torch.mm(d, plan.weights[k])
                plan.acts[k - 1].backprop(d, us[k - 1], xs[k])
        gz = torch.mm(d, plan.wz).view(ctx.shape)
        return (None, gz, *grads)


def one_node_field(net, z0):
    plan = plan_for(net, z0)
    assert plan is not None and plan.n_time == 0
    tensors = [p for m in net.net[0::2] for p in (m.weight, m.bias)]

    def f(t, z):
        return FieldFn.apply(plan, z, *tensors)

    return f


# ---- measurements ----------------------------------------------------------------------------
def per_evaluation(net, z0, repeats):
    """One backsolve right-hand side, readable against by hand."""
    params = list(net.parameters())
    n = z0.numel()
    shape = z0.shape
    gen = torch.Generator().manual_seed(3)
    y = torch.cat([z0.reshape(-1), torch.randn(n, generator=gen),
                   torch.zeros(sum(p.numel() for p in params))])
    tt = torch.tensor(0.5)

    def readable(tt, y):
        f, vz, vp = _vjp(net, tt, y[:n].view(shape), y[n:2 * n].view(shape), params)
        return torch.cat([f.reshape(-1), vz, *vp])

    fast = plan_for(net, z0, params).backsolve_rhs(n, True)
    diff = ((fast(tt, y) - readable(tt, y)).abs().max() / readable(tt, y).abs().max()).item()

    def calls(fn):
        def run():
            with torch.no_grad():
                for _ in range(CALLS):
                    fn(tt, y)
        return run

    res = race({"autograd (readable)": calls(readable), "by hand (fast path)": calls(fast)},
               repeats)
    return {k: (m / CALLS, s) for k, (m, s) in res.items()}, diff


def gradient(net, z0, t, target, solve):
    """dL/dθ and dL/dz0 (flat), and the solve's Stats."""
    net.zero_grad(set_to_none=True)
    z = z0.detach().clone().requires_grad_(True)
    stats = Stats()
    ys = solve(net, z, t, stats)
    bench.loss_fn(ys, target).backward()
    return torch.cat([z.grad.reshape(-1)] + [p.grad.reshape(-1) for p in net.parameters()]), stats


def whole_adjoint(net, z0, t, target, repeats):
    rows = {}
    for adjoint in ("backsolve", "interpolated", "quadrature"):
        variants, nfe, grads = {}, {}, {}
        for fast in (True, False):
            def solve(f, z, tt, stats, fast=fast, adjoint=adjoint):
                return odeint_adjoint(f, z, tt, rtol=bench.RTOL, atol=bench.ATOL,
                                      adjoint=adjoint, fast_path=fast, stats=stats)
            g, stats = gradient(net, z0, t, target, solve)
            grads[fast] = g
            nfe[fast] = (stats.forward.nfe, stats.backward.nfe)
            variants[fast] = (lambda s=solve: gradient(net, z0, t, target, s))
        res = race({f"fast_path={k}": v for k, v in variants.items()}, repeats)
        diff = ((grads[True] - grads[False]).norm() / grads[False].norm()).item()
        rows[adjoint] = dict(fast=res["fast_path=True"], off=res["fast_path=False"],
                             nfe=nfe, diff=diff)
    return rows


def step_quadrature(problems, repeats):
    """The backsolve on the fast path: dL/dθ summed over accepted steps, or a_θ in the
    state. Returns name -> (on, off, relative difference, backward NFE, rejected)."""
    rows = {}
    for name, (net, z0, t, target, rtol, atol) in problems.items():
        def solve(f, z, tt, stats, rtol=rtol, atol=atol):
            return odeint_adjoint(f, z, tt, rtol=rtol, atol=atol, stats=stats)

        def run(on, net=net, z0=z0, t=t, target=target, solve=solve):
            def go():
                adjoint_module._STEP_QUADRATURE = on
                try:
                    return gradient(net, z0, t, target, solve)
                finally:
                    adjoint_module._STEP_QUADRATURE = True
            return go

        (g1, s1), (g0, s0) = run(True)(), run(False)()
        res = race({"on": run(True), "off": run(False)}, repeats)
        rows[name] = (res["on"], res["off"], ((g1 - g0).norm() / g0.norm()).item(),
                      (s1.backward.nfe, s0.backward.nfe),
                      (s1.backward.n_rejected, s0.backward.n_rejected))
    return rows


def step_problems():
    net, z0, t, target = odenet_problem()
    torch.manual_seed(0)
    toy = ODENet()
    gen = torch.Generator().manual_seed(4)
    toy_z0 = torch.randn(100, 1, generator=gen)
    toy_t = torch.linspace(0.0, 1.0, 5)
    toy_target = torch.randn(5, 100, 1, generator=gen)
    return {
        f"bench problem, B = {z0.shape[0]}": (net, z0, t, target, bench.RTOL, bench.ATOL),
        "bench problem, first 16 states": (net, z0[:16], t, target[:, :16], bench.RTOL,
                                           bench.ATOL),
        "toy-sized: ODENet() (GELU 50, 75), 100 states": (toy, toy_z0, toy_t, toy_target,
                                                          1e-5, 1e-6),
    }


def backprop(net, z0, t, target, repeats):
    one_node = one_node_field(net, z0)

    def as_module(f, z, tt, stats):
        return odeint(f, z, tt, rtol=bench.RTOL, atol=bench.ATOL, stats=stats)

    def as_one_node(f, z, tt, stats):
        return odeint(one_node, z, tt, rtol=bench.RTOL, atol=bench.ATOL, stats=stats)

    g_mod, s_mod = gradient(net, z0, t, target, as_module)
    g_one, s_one = gradient(net, z0, t, target, as_one_node)
    diff = ((g_one - g_mod).norm() / g_mod.norm()).item()
    res = race({"module (autograd graph)": lambda: gradient(net, z0, t, target, as_module),
                "one autograd node per evaluation": lambda: gradient(net, z0, t, target,
                                                                     as_one_node)}, repeats)
    return res, diff, (s_mod.forward.nfe, s_one.forward.nfe)


def training_step(steps=8, rounds=21):
    """``train`` (adjoint) from the same initial weights, fast path on and off, in turns.
    Returns (name -> (median CPU seconds per step, IQR / median), mean NFE forward /
    backward per variant, largest relative difference between the two runs' losses)."""
    def run(fast):
        torch.manual_seed(0)
        model = ODENet()
        original = adjoint_module.plan_for
        if not fast:
            adjoint_module.plan_for = lambda *args, **kw: None
        try:
            res = train(model, steps=steps, batch_size=100, adjoint=True, seed=0,
                        progress=False)
        finally:
            adjoint_module.plan_for = original
        return res

    out = {fast: run(fast) for fast in (True, False)}
    losses = [torch.tensor(out[k].losses, dtype=torch.float64) for k in (True, False)]
    diff = ((losses[0] - losses[1]).abs() / losses[1].abs()).max().item()
    nfe = {k: (statistics.mean(r.nfe_forward), statistics.mean(r.nfe_backward))
           for k, r in out.items()}
    res = race({"fast_path on": lambda: run(True), "fast_path off": lambda: run(False)},
               rounds)
    return {k: (m / steps, q) for k, (m, q) in res.items()}, nfe, diff, (steps, rounds)


def training_lines(res, nfe, diff, setup):
    on, off = res["fast_path on"], res["fast_path off"]
    steps, rounds = setup
    return [
        "## The toy training step with the adjoint (`train`, a `WindowedField`)", "",
        "`train(ODENet(), batch_size=100, adjoint=True)`: 2-50-75-1 GELU, 100 windows of "
        "length 1 per step solved as one state (B, 1), dopri5, rtol 1e-5, atol 1e-6, float32; "
        "the field is `WindowedField(model, t0, 1.0)`, g(s, z) = Δ f(z, t0 + sΔ), which the "
        f"plan recognises. Runs of {steps} steps from the same weights, {rounds} rounds in "
        "turns; CPU time per step, median (IQR / median).", "",
        "| variant | NFE fwd / bwd per step (mean) | CPU ms / step | ratio to off |",
        "|---|---:|---:|---:|",
        f"| fast path on | {nfe[True][0]:.1f} / {nfe[True][1]:.1f} | {on[0] * 1e3:.1f} "
        f"({on[1]:.0%}) | {on[0] / off[0]:.2f} |",
        f"| fast path off (`plan_for` returns None) | {nfe[False][0]:.1f} / "
        f"{nfe[False][1]:.1f} | {off[0] * 1e3:.1f} ({off[1]:.0%}) | 1 |", "",
        f"Losses of the two runs differ by at most {diff:.1e} (relative, float32 round-off "
        "of the gradients carried through Adam's steps).", ""]


def write_training_section(lines):
    """Replace (or add) the training section of fastpath_latest.md."""
    out = HERE / "fastpath_latest.md"
    text = out.read_text() if out.exists() else ""
    head = text.split(lines[0])[0].rstrip("\n")
    out.write_text((head + "\n\n" if head else "") + "\n".join(lines))
    print(f"wrote {out}")


def main(repeats=31):
    torch.set_num_threads(1)
    net, z0, t, target = odenet_problem()
    per, per_diff = per_evaluation(net, z0, repeats)
    print(per, per_diff, flush=True)
    adj = whole_adjoint(net, z0, t, target, repeats)
    print(adj, flush=True)
    steps = step_quadrature(step_problems(), repeats)
    print(steps, flush=True)
    bp, bp_diff, bp_nfe = backprop(net, z0, t, target, repeats)
    print(bp, bp_diff, flush=True)
    write_report(per, per_diff, adj, steps, bp, bp_diff, bp_nfe, repeats)
    main_training()


def main_training():
    torch.set_num_threads(1)
    res, nfe, diff, setup = training_step()
    print(res, nfe, diff, flush=True)
    write_training_section(training_lines(res, nfe, diff, setup))


def write_report(per, per_diff, adj, steps, bp, bp_diff, bp_nfe, repeats):
    a, h = per["autograd (readable)"], per["by hand (fast path)"]
    lines = [
        "# The fast path for ODENet fields (issue #25, route 1)", "",
        f"Machine: {cpu_name()}, Python {platform.python_version()}, torch "
        f"{torch.__version__}; one thread. CPU time, medians of {repeats} rounds with the "
        "variants taking turns (order rotated each round); IQR / median in brackets. The "
        "machine was shared with other work: read the ratios, not the absolute times. "
        "Written by `benchmarks/bench_fastpath.py`; the problem is `bench_adjoint.py`'s, "
        "its field as `ODENet(2, (64, 64), nn.Tanh, time_dependent=False)` with the same "
        "weights.", "",
        "## One evaluation of the backsolve's right-hand side [f, -(∂f/∂z)ᵀa, -(∂f/∂θ)ᵀa]",
        "",
        "| variant | CPU µs | ratio to autograd |", "|---|---:|---:|",
        f"| autograd (`_vjp`, the readable path) | {a[0] * 1e6:.0f} ({a[1]:.0%}) | 1 |",
        f"| by hand (`fastpath.Plan`) | {h[0] * 1e6:.0f} ({h[1]:.0%}) | "
        f"{h[0] / a[0]:.2f} |", "",
        f"Largest difference between the two, relative to the largest entry: {per_diff:.1e}.",
        "", "## Whole adjoint gradient (forward + backward)", "",
        "| adjoint | NFE fwd / bwd (both) | fast_path=True | fast_path=False | ratio | "
        "gradients differ by (relative) |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in adj.items():
        (n1, m1), (n0, m0) = r["nfe"][True], r["nfe"][False]
        same = "" if (n1, m1) == (n0, m0) else f" (off: {n0} / {m0})"
        lines.append(f"| {name} | {n1} / {m1}{same} | {r['fast'][0] * 1e3:.1f} ms "
                     f"({r['fast'][1]:.0%}) | {r['off'][0] * 1e3:.1f} ms ({r['off'][1]:.0%}) | "
                     f"{r['fast'][0] / r['off'][0]:.2f} | {r['diff']:.1e} |")
    lines += ["", "float32. The interpolated and quadrature gradients are identical; the "
              "backsolve's differ by float32 round-off, because on the fast path it sums dL/dθ "
              "over its accepted steps (next table) in another order than the solver sums "
              "a_θ in the state. tests/test_fastpath.py checks all three against autograd "
              "in float64 (1e-12)."]
    lines += [
        "", "## The backsolve's dL/dθ summed over accepted steps (fast path, seminorm)", "",
        "Both columns on the fast path; 'summed over steps' carries [z, a] and adds "
        "h Σ_j b_j δ_jᵀx_j per accepted step (one matrix product per layer over the stacked "
        "stages), 'in the state' carries [z, a, a_θ].", "",
        "| problem | bwd NFE (rejected) | summed over steps | a_θ in the state | ratio | "
        "gradients differ by (relative, float32) |", "|---|---:|---:|---:|---:|---:|"]
    for name, (on, off, diff, nfe, rej) in steps.items():
        lines.append(f"| {name} | {nfe[0]} ({rej[0]}) | {on[0] * 1e3:.1f} ms ({on[1]:.0%}) | "
                     f"{off[0] * 1e3:.1f} ms ({off[1]:.0%}) | {on[0] / off[0]:.2f} | "
                     f"{diff:.1e} |")
    m, o = bp["module (autograd graph)"], bp["one autograd node per evaluation"]
    lines += [
        "", "## Backprop through dopri5: the field as one autograd node (not kept)", "",
        "| field | CPU ms | ratio |", "|---|---:|---:|",
        f"| the module (autograd records its graph) | {m[0] * 1e3:.1f} ({m[1]:.0%}) | 1 |",
        f"| one `autograd.Function` node per evaluation, backward by hand | "
        f"{o[0] * 1e3:.1f} ({o[1]:.0%}) | {o[0] / m[0]:.2f} |", "",
        f"Same gradient to {bp_diff:.1e} (relative); forward NFE {bp_nfe[0]} and "
        f"{bp_nfe[1]}. The module's backward runs in C++ (autograd's engine); the one-node "
        "version's backward is a Python function, whose call costs about what the saved "
        "nodes save, so `odeint` has no fast path.", ""]
    out = HERE / "fastpath_latest.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main_training() if "--training" in sys.argv[1:] else main()
