"""Route 4 of issue #25, measured: does ``torch.compile`` pay on ``bench_adjoint.py``'s problem?

Run by hand (several minutes, most of it compilation)::

    .venv/bin/python benchmarks/bench_compile.py            # writes benchmarks/compile_latest.md
    .venv/bin/python benchmarks/bench_compile.py --quick    # fewer repeats: results/

The field is ``make_problem()``'s 2-64-64-2 tanh MLP, N = 256 rows, float32, one thread. With
h₁ = tanh(W₁z + b₁), h₂ = tanh(W₂h₁ + b₂), f = W₃h₂ + b₃, the adjoint's augmented dynamics are

    F(z, a; θ) = [f,  −(∂f/∂z)ᵀa,  −(∂f/∂θ)ᵀa],

and by hand (δ₃ = −a, δ₂ = (δ₃W₃) ⊙ (1 − h₂²), δ₁ = (δ₂W₂) ⊙ (1 − h₁²)):
−(∂f/∂z)ᵀa = δ₁W₁, −∂f/∂Wₖ ᵀa = δₖᵀhₖ₋₁ (h₀ = z), −∂f/∂bₖ ᵀa = Σ_rows δₖ.

Measured, the variants taking turns (median CPU time, ``time.process_time``, one thread):

(a) F per evaluation: ``torch.autograd.grad`` on the module (what ``adjoint._vjp`` does),
    the hand-written F eager, issue #25's eager fast path (``neuralode_helpers.fastpath``,
    where the package has it), and the hand-written F as one pure function of
    (z, a, W₁, b₁, W₂, b₂, W₃, b₃) returning one flat tensor, compiled with
    ``fullgraph=True, dynamic=False``: backend "inductor" (C++ kernels), "inductor" with its
    C++ wrapper, and "aot_eager" (the graph capture alone, no code generation).
(b) one whole dopri5 step of the augmented system y = [z, a, a_θ] (six new stages, the 5th
    order combination, the embedded error estimate and its RMS seminorm over [z, a]), h
    passed as a 0-d tensor: eager (autograd VJP, hand VJP, the fast path) against compiled
    (hand VJP);
    whether a new h recompiles (``torch._dynamo.config.error_on_recompile``).
(c) a rational tanh (Eigen's / XLA's float32 approximation: x·p(x²)/q(x²), clamped at
    ±7.9053) fused into the compiled kernel, against ``torch.tanh``: its largest error
    against float64 tanh over the range the field sees, and its effect on (a).
(d) compilation time (wall) and the break-even: how many evaluations (and gradients of
    ``bench_adjoint.py``'s problem, 70 backward evaluations each) repay the compilation.

Timings come from a shared machine: read the ratios.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_adjoint as bench  # noqa: E402
from _machine import cpu_name  # noqa: E402

HERE = Path(__file__).resolve().parent
RTOL, ATOL = bench.RTOL, bench.ATOL
# Evaluations of F per gradient of bench_adjoint.py's problem (its latest.md: 44 forward,
# 70 backward for our default adjoint); the backward's are the ones F serves.
BACKWARD_NFE = 70
TRAINING_GRADIENTS = 300  # a notebook-sized training run


# ---------------------------------------------------------------------------------------------
# The augmented dynamics, three ways
# ---------------------------------------------------------------------------------------------

def vjp_autograd(net, z, a, params):
    """As ``neuralode_helpers.adjoint._vjp``: f, −(∂f/∂z)ᵀa, −(∂f/∂θ)ᵀa by autograd."""
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        f = net(z)
        vjps = torch.autograd.grad(f, (z, *params), -a)
    return f.detach(), vjps[0].reshape(-1), [v.reshape(-1) for v in vjps[1:]]


# Eigen's and XLA's float32 tanh: tanh(x) ≈ x·p(x²)/q(x²) on |x| ≤ 7.9053 (beyond it, tanh
# is ±1 in float32), accurate to a few ulp.
_ALPHA = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
          5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
          4.89352455891786e-03)
_BETA = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
         4.89352518554385e-03)
_CLAMP = 7.90531110763549805


def rational_tanh(x):
    x = x.clamp(-_CLAMP, _CLAMP)
    x2 = x * x
    p = _ALPHA[0]
    for c in _ALPHA[1:]:
        p = p * x2 + c
    q = _BETA[0]
    for c in _BETA[1:]:
        q = q * x2 + c
    return x * p / q


def make_aug(tanh=torch.tanh):
    """F(z, a, W₁, b₁, W₂, b₂, W₃, b₃) -> one flat tensor [f, −(∂f/∂z)ᵀa, −(∂f/∂θ)ᵀa] (θ in
    the module's parameter order), by hand: a pure function, no module, no autograd."""
    def aug(z, a, w1, b1, w2, b2, w3, b3):
        h1 = tanh(torch.addmm(b1, z, w1.t()))
        h2 = tanh(torch.addmm(b2, h1, w2.t()))
        f = torch.addmm(b3, h2, w3.t())
        d3 = -a
        d2 = (d3 @ w3) * (1 - h2 * h2)
        d1 = (d2 @ w2) * (1 - h1 * h1)
        return torch.cat([f.reshape(-1), (d1 @ w1).reshape(-1),
                          (d1.t() @ z).reshape(-1), d1.sum(0),
                          (d2.t() @ h1).reshape(-1), d2.sum(0),
                          (d3.t() @ h2).reshape(-1), d3.sum(0)])
    return aug


def autograd_flat(net, params):
    """The autograd F with the same signature and flat output as ``make_aug``'s."""
    def aug(z, a, *_weights):
        f, gz, gp = vjp_autograd(net, z, a, params)
        return torch.cat([f.reshape(-1), gz, *gp])
    return aug


# ---------------------------------------------------------------------------------------------
# One dopri5 step of the augmented system
# ---------------------------------------------------------------------------------------------

_A = ((1 / 5,),
      (3 / 40, 9 / 40),
      (44 / 45, -56 / 15, 32 / 9),
      (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
      (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
      (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
_B_HAT = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_E = tuple(b - bh for b, bh in zip(_A[-1] + (0.0,), _B_HAT))  # 5th minus 4th order weights


def make_step(aug, n_za, rhs=None):
    """step(y, k1, h, *weights) -> (y_new, k7, error ratio): one dopri5 step (FSAL: k1 given,
    k7 = F(y_new) returned) of dy/dt = F(y) for y = [z, a, a_θ] flat; the error ratio is the
    RMS over the first ``n_za`` entries ([z, a]: the seminorm) of err / (atol + rtol·max(|y|,
    |y_new|)). ``aug`` reads z and a from y (or ``rhs(y)``, a function of the flat state,
    replaces it); a_θ does not feed back."""
    half = n_za // 2

    def F(y, w):
        if rhs is not None:  # a right-hand side of the flat state (the fast path's)
            return rhs(y)
        return aug(y[:half].view(-1, 2), y[half:n_za].view(-1, 2), *w)

    def step(y, k1, h, *w):
        ks = [k1]
        for row in _A:
            dy = sum(c * k for c, k in zip(row, ks) if c != 0.0)
            ks.append(F(y + h * dy, w))
        y_new = y + h * sum(c * k for c, k in zip(_A[-1], ks) if c != 0.0)
        err = h * sum(c * k for c, k in zip(_E, ks) if c != 0.0)
        scale = ATOL + RTOL * torch.maximum(y[:n_za].abs(), y_new[:n_za].abs())
        ratio = (err[:n_za] / scale).square().mean().sqrt()
        return y_new, ks[-1], ratio
    return step


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------

def race(variants, repeats, calls):
    """name -> (median CPU µs per call, IQR / median); the variants take turns, the order
    rotating each round."""
    names = list(variants)
    runs = {k: [] for k in names}
    for i in range(repeats):
        order = names[i % len(names):] + names[:i % len(names)]
        for k in order:
            fn = variants[k]
            start = time.process_time()
            for _ in range(calls):
                fn()
            runs[k].append(1e6 * (time.process_time() - start) / calls)
    out = {}
    for k, r in runs.items():
        q = statistics.quantiles(r, n=4)
        out[k] = (statistics.median(r), (q[2] - q[0]) / statistics.median(r))
    return out


_serial = itertools.count()


def fresh(fn):
    """A copy of fn with its own code object: dynamo keeps its compiled code per code object,
    so each variant compiles (and is timed) on its own, however many share a def."""
    code = fn.__code__.replace(co_name=f"{fn.__code__.co_name}_{next(_serial)}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__,
                              fn.__closure__)


def compiled(fn, args, cache=None, **kw):
    """(compiled fn, wall seconds of the first call, error or None, cache folder).

    Inductor keeps what it compiled on disk (``TORCHINDUCTOR_CACHE_DIR``) and in memory:
    each compilation here starts with its in-memory caches emptied and a cache folder of its
    own, new and empty (``cache=None``: a first run's compilation, cold) or one that an
    earlier compilation of the same function filled (warm: a later run of the same notebook,
    less inductor's start-up, which the process pays once)."""
    cache = cache or tempfile.mkdtemp(prefix="inductor_cache_")
    old = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    try:
        from torch._inductor.utils import clear_caches

        clear_caches()
        c = torch.compile(fresh(fn), fullgraph=True, dynamic=False, **kw)
        start = time.perf_counter()
        c(*args)
        return c, time.perf_counter() - start, None, cache
    except Exception as exc:  # noqa: BLE001  (a missing C++ compiler: reported, not fatal)
        return None, None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}", cache
    finally:
        if old is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = old


def recompiles(c, args_new):
    """Whether calling the compiled c with new values (same shapes) compiles again."""
    import torch._dynamo.config as cfg

    old = cfg.error_on_recompile
    cfg.error_on_recompile = True
    try:
        c(*args_new)
        return False
    except Exception:  # noqa: BLE001  (dynamo's RecompileError)
        return True
    finally:
        cfg.error_on_recompile = old


def maxdiff(x, y):
    return (x - y).abs().max().item()


def reldiff(x, y):
    """Largest difference relative to the largest entry of the reference y."""
    return maxdiff(x, y) / y.abs().max().item()


def fast_path_rhs(field, z, a, params):
    """The eager fast path of issue #25 (``neuralode_helpers.fastpath``, helper A's, into
    preallocated buffers) for ``field``'s weights: (rhs(t, y) -> flat F, None), or (None,
    why) where this version of the package has none (an internal API: guarded)."""
    try:
        from neuralode_helpers import fastpath

        ours = bench.ours_field(field)
        plan = fastpath.plan_for(ours, z, list(ours.parameters()))
        if plan is None:
            return None, "plan_for returned None"
        rhs = plan.backsolve_rhs(z.numel(), True)
        rhs(torch.zeros(()), torch.cat([z.reshape(-1), a.reshape(-1)]))
        return rhs, None
    except Exception as exc:  # noqa: BLE001
        return None, f"{type(exc).__name__}: {exc}"


AUTOGRAD = "autograd.grad on the module (adjoint._vjp's way)"
HAND = "by hand, eager (allocating)"
FAST = "issue #25's fast path, eager (by hand into buffers)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeats, calls = (5, 20) if args.quick else (31, 50)
    total = time.perf_counter()

    field, z0, _, _ = bench.make_problem()
    net = field.net
    params = list(net.parameters())  # autograd's inputs; the hand-written F gets w
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(z0.shape, generator=gen)
    z = z0.clone()
    w = tuple(p.detach() for p in params)
    t0 = torch.zeros(())
    print("first compilation in the process (inductor's own start-up) ...", flush=True)
    _, first_s, first_err, _ = compiled(lambda x: torch.tanh(x).sum(), (torch.ones(3),))
    lines = ["# Route 4 of issue #25: torch.compile on the benchmark's problem", "",
             f"`benchmarks/bench_compile.py`{' --quick' if args.quick else ''}; {cpu_name()}, "
             f"torch {torch.__version__}, one thread; `bench_adjoint.py`'s field "
             f"(2-64-64-2 tanh, N = {z0.shape[0]}, float32, P = {sum(p.numel() for p in w)}). "
             f"CPU time (`time.process_time`), medians of {repeats} rounds of {calls} calls, "
             "the variants taking turns in a rotating order (IQR / median in brackets). The "
             "machine was shared with other work: read the ratios. Compiled with "
             "`torch.compile(fn, fullgraph=True, dynamic=False)`. Compilation: wall time of the "
             "first call, inductor's in-memory caches emptied, cold (an empty "
             "`TORCHINDUCTOR_CACHE_DIR` of its own: a first run) and warm (the folder that the "
             "cold compilation filled: a later run of the same notebook), after a first tiny "
             "compilation in the process that paid inductor's start-up, which every new "
             "process pays once more: "
             f"{'failed: ' + first_err if first_err else f'{first_s:.0f} s'}.", ""]
    if first_err:
        lines += [f"The inductor backend failed on this machine: `{first_err}`.", ""]

    # (c) first: the accuracy of the rational tanh over the range the field sees
    pre1 = torch.addmm(w[1], z, w[0].t())
    pre2 = torch.addmm(w[3], torch.tanh(pre1), w[2].t())
    seen = torch.cat([pre1.reshape(-1), pre2.reshape(-1)])
    lo, hi = seen.min().item(), seen.max().item()
    grid = torch.cat([seen, torch.linspace(-10.0, 10.0, 200_001)])
    exact = torch.tanh(grid.double())
    err_rat = maxdiff(rational_tanh(grid).double(), exact)
    err_torch = maxdiff(torch.tanh(grid).double(), exact)
    ulp = torch.finfo(torch.float32).eps
    print(f"rational tanh: max abs error {err_rat:.1e} (torch.tanh: {err_torch:.1e})", flush=True)

    # (a) per evaluation
    aug, aug_rat = make_aug(), make_aug(rational_tanh)
    ref = autograd_flat(net, params)(z, a)
    fargs = (z, a, *w)
    variants = {AUTOGRAD: lambda: autograd_flat(net, params)(*fargs),
                HAND: lambda: aug(*fargs)}
    compile_s, warm_s, errors, diffs, caches = {}, {}, {}, {}, {}
    diffs[HAND] = reldiff(aug(*fargs), ref)
    rhs, why_not = fast_path_rhs(field, z, a, params)
    y_za = torch.cat([z.reshape(-1), a.reshape(-1)])
    if rhs is not None:
        variants[FAST] = lambda: rhs(t0, y_za)
        diffs[FAST] = reldiff(rhs(t0, y_za), ref)
    compiled_a = [
        ("by hand, compiled (inductor)", aug, {}),
        ("by hand, compiled (inductor, C++ wrapper)", aug, dict(options={"cpp_wrapper": True})),
        ("by hand, compiled (aot_eager: capture only)", aug, dict(backend="aot_eager")),
        ("by hand, rational tanh, compiled (inductor)", aug_rat, {}),
    ]
    for name, fn, kw in compiled_a:
        print(f"compiling {name} ...", flush=True)
        c, sec, err, caches[name] = compiled(fn, fargs, **kw)
        if c is None:
            errors[name] = err
            print(f"  failed: {err}", flush=True)
            continue
        compile_s[name] = sec
        diffs[name] = reldiff(c(*fargs), ref)
        variants[name] = (lambda c=c: c(*fargs))
        print(f"  {sec:.1f} s, relative difference to autograd {diffs[name]:.1e}", flush=True)
    per = race(variants, repeats, calls)
    for name, fn, kw in compiled_a:  # again, now that inductor's on-disk cache holds it
        if name in compile_s:
            warm_s[name] = compiled(fn, fargs, cache=caches[name], **kw)[1]
    base = per[AUTOGRAD][0]
    best_eager = FAST if FAST in per else HAND
    lines += ["## (a) The augmented dynamics F per evaluation", "",
              "F = [f, −(∂f/∂z)ᵀa, −(∂f/∂θ)ᵀa] as one flat tensor. Difference: the largest "
              "entry of |F − F_autograd|, relative to the largest entry of F_autograd.", "",
              "| variant | CPU µs | × autograd | × fast path | difference to autograd | "
              "compilation cold / warm (s) |", "|---|---:|---:|---:|---:|---:|"]
    fb = per[best_eager][0]
    for k, (us, sp) in per.items():
        d = "—" if k not in diffs else f"{diffs[k]:.1e}"
        cs = "—" if k not in compile_s else f"{compile_s[k]:.0f} / {warm_s.get(k, 0):.0f}"
        xf = f"{us / fb:.2f}" if FAST in per else "—"
        lines.append(f"| {k} | {us:.0f} ({sp:.0%}) | {us / base:.2f} | {xf} | {d} | {cs} |")
    if rhs is None:
        lines += ["", f"Issue #25's fast path not measured: {why_not}."]
    for k, e in errors.items():
        lines += ["", f"{k}: compilation failed: `{e}`"]
    lines += [""]

    # tanh alone, (256, 64), and the per-call cost of a compiled function
    h = torch.randn(z0.shape[0], w[0].shape[0], generator=gen) * 2
    small = torch.randn(z0.shape, generator=gen)
    tv = {"torch.tanh, eager": lambda: torch.tanh(h), "torch.exp, eager": lambda: torch.exp(h),
          "rational tanh, eager (11 operations)": lambda: rational_tanh(h),
          "x + 1 on (256, 2), eager (one small operation)": lambda: small + 1}
    for name, fn, x in [("torch.tanh, compiled", lambda x: torch.tanh(x), h),
                        ("rational tanh, compiled (one fused loop)", rational_tanh, h),
                        ("x + 1 on (256, 2), compiled (a compiled call's own cost)",
                         lambda x: x + 1, small)]:
        c = compiled(fn, (x,))[0]
        if c is not None:
            tv[name] = (lambda c=c, x=x: c(x))
    tper = race(tv, repeats, calls * 4)
    lines += ["## (c) tanh of a (256, 64) tensor", "",
              f"Pre-activations the field sees at z0: [{lo:.2f}, {hi:.2f}]. Rational tanh "
              f"(Eigen's / XLA's float32 approximation): largest absolute error against float64 "
              f"tanh {err_rat:.1e} over those values and [-10, 10] in steps of 1e-4 "
              f"(torch.tanh in float32: {err_torch:.1e}; float32's machine epsilon "
              f"{ulp:.1e}).", "",
              "| variant | CPU µs | × torch.tanh eager |", "|---|---:|---:|"]
    tb = tper["torch.tanh, eager"][0]
    for k, (us, sp) in tper.items():
        lines.append(f"| {k} | {us:.1f} ({sp:.0%}) | {us / tb:.2f} |")
    lines += [""]

    # (b) one dopri5 step of the augmented system
    n_za = 2 * z.numel()
    y = torch.cat([z.reshape(-1), a.reshape(-1), torch.zeros(sum(p.numel() for p in w))])
    k1 = aug(z, a, *w)
    hh = torch.tensor(-0.05)
    step_hand = make_step(aug, n_za)
    step_auto = make_step(autograd_flat(net, params), n_za)
    sargs = (y, k1, hh, *w)
    ref_step = step_auto(*sargs)
    sv = {"eager, autograd VJP": lambda: step_auto(*sargs),
          "eager, VJP by hand (allocating)": lambda: step_hand(*sargs)}
    sdiff = {"eager, VJP by hand (allocating)": reldiff(step_hand(*sargs)[0], ref_step[0])}
    if rhs is not None:
        step_fast = make_step(None, n_za, rhs=lambda yy: rhs(t0, yy))
        sv["eager, issue #25's fast path"] = lambda: step_fast(*sargs)
        sdiff["eager, issue #25's fast path"] = reldiff(step_fast(*sargs)[0], ref_step[0])
    step_compile_s, step_warm_s, recompiled = {}, {}, {}
    compiled_b = [("compiled (inductor), VJP by hand", step_hand, {}),
                  ("compiled (inductor), VJP by hand, rational tanh",
                   make_step(aug_rat, n_za), {})]
    for name, fn, kw in compiled_b:
        print(f"compiling the step: {name} ...", flush=True)
        c, sec, err, caches[name] = compiled(fn, sargs, **kw)
        if c is None:
            errors[name] = err
            print(f"  failed: {err}", flush=True)
            continue
        step_compile_s[name] = sec
        sdiff[name] = reldiff(c(*sargs)[0], ref_step[0])
        recompiled[name] = recompiles(c, (y + 1e-3, k1, torch.tensor(-0.0371), *w))
        sv[name] = (lambda c=c: c(*sargs))
        print(f"  {sec:.1f} s; new h recompiles: {recompiled[name]}", flush=True)
    sper = race(sv, max(5, repeats // 2), max(4, calls // 5))
    for name, fn, kw in compiled_b:
        if name in step_compile_s:
            step_warm_s[name] = compiled(fn, sargs, cache=caches[name], **kw)[1]
    sbase = sper["eager, autograd VJP"][0]
    s_best = ("eager, issue #25's fast path" if "eager, issue #25's fast path" in sper
              else "eager, VJP by hand (allocating)")
    lines += ["## (b) One dopri5 step of the augmented system (6 evaluations of F)", "",
              "y = [z, a, a_θ] (5,506 numbers); the stages combined one coefficient at a time, "
              "as the solver does today. Difference: largest |Δy_new| relative to the largest "
              "|y_new| of the eager autograd step.", "",
              "| variant | CPU µs per step | per evaluation | × eager autograd | "
              "× eager fast path | difference | compilation cold / warm (s) | "
              "a new h recompiles |",
              "|---|---:|---:|---:|---:|---:|---:|---|"]
    sfb = sper[s_best][0]
    for k, (us, sp) in sper.items():
        d = "—" if k not in sdiff else f"{sdiff[k]:.1e}"
        cs = ("—" if k not in step_compile_s
              else f"{step_compile_s[k]:.0f} / {step_warm_s.get(k, 0):.0f}")
        rc = "—" if k not in recompiled else ("yes" if recompiled[k] else "no")
        lines.append(f"| {k} | {us:.0f} ({sp:.0%}) | {us / 6:.0f} | {us / sbase:.2f} | "
                     f"{us / sfb:.2f} | {d} | {cs} | {rc} |")
    if "compiled (inductor), VJP by hand" in sv:
        # h as a Python number instead of a 0-d tensor: dynamo specialises on its value
        c = compiled(lambda yy, kk, hf, *ww: step_hand(yy, kk, hf, *ww), (y, k1, -0.05, *w))[0]
        if c is not None:
            again = recompiles(c, (y, k1, -0.0371, *w))
            lines += ["", "With h passed as a Python float instead of a 0-d tensor, a new h "
                      f"recompiles: {'yes' if again else 'no'}."]
    lines += [""]

    # (d) break-even
    lines += ["## (d) Compilation against its saving", "",
              f"A gradient of `bench_adjoint.py`'s problem has {BACKWARD_NFE} backward "
              f"evaluations of F; a notebook-sized training run {TRAINING_GRADIENTS} gradients. "
              "Saving: per evaluation, against the fastest eager variant that needs no "
              f"compiler ({best_eager if FAST in per else HAND}; for the steps: {s_best}). "
              "Break-even: compilation / saving (a variant that saves nothing never breaks "
              "even); cold: a first run; warm: a later run in a new process (inductor's "
              "start-up, measured above, plus the warm compilation). The compilation comes "
              "once per process, field shape and batch size (dynamic=False): every new batch "
              "size (a last, smaller batch; a notebook's other experiment) compiles again.",
              "",
              "| variant | saving per evaluation (µs) | compilation cold (s) | break-even "
              "gradients, cold | net over a training run, cold (s) | start-up + warm "
              "compilation (s) | break-even gradients, warm | net over a training run, warm "
              "(s) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    startup = first_s or 0.0
    for k, sec in compile_s.items():
        _break_even_row(lines, k, sec, startup + warm_s.get(k, 0.0), fb - per[k][0])
    for k, sec in step_compile_s.items():
        _break_even_row(lines, f"step: {k}", sec, startup + step_warm_s.get(k, 0.0),
                        (sfb - sper[k][0]) / 6)
    lines += [""]
    lines += verdicts(per, fb, compile_s, warm_s, sper, sfb, step_compile_s, step_warm_s,
                      startup, err_rat, err_torch, ulp, best_eager, s_best)
    text = "\n".join(lines) + f"\nTotal {time.perf_counter() - total:.0f} s.\n"
    out = HERE / "results" / "compile_quick.md" if args.quick else HERE / "compile_latest.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {out}")


def verdicts(per, fb, compile_s, warm_s, sper, sfb, step_compile_s, step_warm_s, startup,
             err_rat, err_torch, ulp, best_eager, s_best):
    """Kept or dropped, per item, from this run's numbers: a compiled variant is worth adding
    to the package only if a notebook-sized training run repays its compilation in a new
    process with a warm cache (the better case)."""
    def best(times, base, cold, warm, per_eval):
        if not cold:
            return None
        k = min(cold, key=lambda k: times[k][0])
        save = (base - times[k][0]) / per_eval
        sec = startup + warm.get(k, 0.0)
        grads = float("inf") if save <= 0 else sec / (save / 1e6) / BACKWARD_NFE
        return k, times[k][0] / base, cold[k], sec, grads

    out, kept = ["## Verdicts", ""], []
    for label, r, ref in [
            ("(a) compiled augmented VJP", best(per, fb, compile_s, warm_s, 1), best_eager),
            ("(b) compiled dopri5 step", best(sper, sfb, step_compile_s, step_warm_s, 6),
             s_best)]:
        if r is None:
            out.append(f"- {label}: not measured (compilation failed).")
            continue
        k, ratio, cold, warm, grads = r
        keep = grads <= TRAINING_GRADIENTS
        kept.append(keep)
        out.append(f"- {label}: **{'kept' if keep else 'dropped'}**. Best variant *{k}*: "
                   f"{ratio:.2f}x of *{ref}* per evaluation, for {cold:.0f} s of compilation "
                   f"(cold) or {warm:.0f} s (new process, warm cache): it repays that after "
                   f"{grads:,.0f} gradients of `bench_adjoint.py`'s problem"
                   f"{'' if keep else f', more than a {TRAINING_GRADIENTS}-gradient run'}.")
    rat, plain = "by hand, rational tanh, compiled (inductor)", "by hand, compiled (inductor)"
    usable = err_rat <= 2 * ulp
    effect = (f"; inside the compiled F it gives {per[rat][0] / per[plain][0]:.2f}x of the "
              "compiled F with torch.tanh" if rat in per and plain in per else "")
    keep = usable and any(kept)
    out.append(f"- (c) fused rational tanh: **{'kept' if keep else 'dropped'}**. Largest error "
               f"{err_rat:.1e} against "
               f"float64 tanh ({err_rat / ulp:.1f} float32 epsilons; torch.tanh "
               f"{err_torch:.1e}): {'at' if usable else 'above'} round-off level{effect}. "
               "Eager it is many small operations (slower than torch.tanh, see (c)); fused, it "
               "exists only inside a compiled kernel"
               + (", which does not pay here." if not any(kept) else "."))
    out.append(f"- (d) compilation: {startup:.0f} s of inductor start-up per process, plus the "
               "compilation per field shape and batch size (dynamic=False; h must be a 0-d "
               "tensor, a Python float recompiles for every new step size); the break-even "
               "counts above include it.")
    return out + [""]


def _break_even_row(lines, name, cold, warm, save_us):
    cells = [f"{save_us:.0f}"]
    for sec in (cold, warm):
        net = TRAINING_GRADIENTS * BACKWARD_NFE * save_us / 1e6 - sec
        n = "never" if save_us <= 0 else f"{sec / (save_us / 1e6) / BACKWARD_NFE:,.0f}"
        cells += [f"{sec:.0f}", n, f"{net:+.1f}"]
    lines.append(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
