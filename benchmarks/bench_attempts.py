"""The speed attempts of issue #13 that are not rows of ``bench_adjoint.py``, measured.

Run by hand (a few minutes, most of it torch.compile's compilation)::

    .venv/bin/python benchmarks/bench_attempts.py     # writes benchmarks/attempts_latest.md

On the benchmark's vector field (2-64-64-2 tanh MLP, B=256, float32, one thread), CPU time
per call, median over many calls with the variants taking turns:

1. one evaluation f(t, z) without a graph: eager against ``torch.compile(field)``;
2. the adjoint's augmented dynamics (f and the vector-Jacobian products for z and θ):
   ``torch.autograd.grad`` (what ``odeint_adjoint`` does) against ``torch.func.vjp``, and
   against ``torch.autograd.grad`` through the compiled field;
3. one whole gradient (backprop through our dopri5): the eager field against the compiled
   one (compiling the user's field is the user's choice; this says whether it would pay).

Compilation time is reported on its own.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_adjoint as bench  # noqa: E402

from neuralode_helpers import odeint  # noqa: E402

HERE = Path(__file__).resolve().parent


def cpu_ms(fn):
    start = time.process_time()
    fn()
    return 1e3 * (time.process_time() - start)


def race(variants, repeats):
    """name -> median CPU ms (and IQR / median), the variants taking turns."""
    for fn in variants.values():
        fn()
    runs = {k: [] for k in variants}
    for _ in range(repeats):
        for k, fn in variants.items():
            runs[k].append(cpu_ms(fn))
    out = {}
    for k, r in runs.items():
        q = statistics.quantiles(r, n=4)
        out[k] = (statistics.median(r), (q[2] - q[0]) / statistics.median(r))
    return out


def main():
    torch.set_num_threads(1)
    field, z0, t, target = bench.make_problem()
    net = field.net
    params = list(net.parameters())
    lines = ["# Speed attempts (issue #13) outside `bench_adjoint.py`", "",
             f"Machine: {bench.machine()}.", "",
             "CPU time per call, median of the runs with the variants taking turns "
             "(IQR / median in brackets).", ""]

    start = time.perf_counter()
    compiled = torch.compile(net)
    with torch.no_grad():
        compiled(z0)
    compile_fwd = time.perf_counter() - start

    def eager_nograd():
        with torch.no_grad():
            for _ in range(20):
                net(z0)

    def compiled_nograd():
        with torch.no_grad():
            for _ in range(20):
                compiled(z0)

    a = torch.randn_like(z0)

    def vjp_autograd(module=net):
        def run():
            for _ in range(20):
                z = z0.detach().requires_grad_(True)
                with torch.enable_grad():
                    f = module(z)
                    torch.autograd.grad(f, (z, *params), -a)
        return run

    names = [n for n, _ in net.named_parameters()]

    def vjp_func():
        for _ in range(20):
            _, pullback = torch.func.vjp(
                lambda p, z: torch.func.functional_call(net, dict(zip(names, p)), (z,)),
                tuple(params), z0)
            pullback(-a)

    start = time.perf_counter()
    vjp_autograd(compiled)()
    compile_bwd = time.perf_counter() - start
    res = race({"eager": eager_nograd, "torch.compile": compiled_nograd}, 30)
    lines += ["## 1. f(t, z) without a graph (per evaluation)", "",
              "| variant | CPU µs | IQR / median |", "|---|---:|---:|"]
    lines += [f"| {k} | {1e3 * ms / 20:.0f} | {iqr:.0%} |" for k, (ms, iqr) in res.items()]
    res = race({"torch.autograd.grad (ours)": vjp_autograd(), "torch.func.vjp": vjp_func,
                "torch.autograd.grad, compiled field": vjp_autograd(compiled)}, 30)
    lines += ["", "## 2. Augmented dynamics: f and its VJPs for z and θ (per evaluation)", "",
              "| variant | CPU µs | IQR / median |", "|---|---:|---:|"]
    lines += [f"| {k} | {1e3 * ms / 20:.0f} | {iqr:.0%} |" for k, (ms, iqr) in res.items()]

    class Compiled(torch.nn.Module):  # counts its calls like the benchmark's field
        def __init__(self):
            super().__init__()
            self.net, self.nfe = compiled, 0

        def forward(self, tt, z):
            self.nfe += 1
            return self.net(z)

    cfield = Compiled()

    def grad_of(f):
        return lambda: bench.gradient(f, z0, t, target, lambda ff, z, tt: odeint(
            ff, z, tt, rtol=bench.RTOL, atol=bench.ATOL))

    res = race({"eager field": grad_of(field), "compiled field": grad_of(cfield)}, 15)
    lines += ["", "## 3. One gradient, backprop through our dopri5", "",
              "| variant | CPU ms | IQR / median |", "|---|---:|---:|"]
    lines += [f"| {k} | {ms:.1f} | {iqr:.0%} |" for k, (ms, iqr) in res.items()]
    lines += ["", f"torch.compile's compilation (wall time, excluded above): {compile_fwd:.0f} s "
              f"for the graph-free call, {compile_bwd:.0f} s more for the call with a graph.", ""]
    text = "\n".join(lines)
    print(text)
    (HERE / "attempts_latest.md").write_text(text)


if __name__ == "__main__":
    main()
