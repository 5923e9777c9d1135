"""The adjoint's seminorm against full norms, at equal gradient error (notebooks 04 and 09).

Run by hand, not part of the test suite::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/seminorm_equal_error.py           # minutes
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/seminorm_equal_error.py --quick   # seconds

The backward solve of the adjoint carries [z, a, a_θ]; its step-size controller measures the
scaled local error of that state with a norm. Four norms are compared (each is a function of
the scaled errors of z, a and a_θ, passed as ``adjoint_options={"norm": ...}`` or chosen by
``seminorm=``):

- **full, torchdiffeq**: torchdiffeq's default for its adjoint (``handle_adjoint_norm_`` in
  ``torchdiffeq/_impl/adjoint.py``): the largest of the RMS norms of z, of a and of *every
  parameter tensor's* adjoint separately (``_mixed_norm`` in ``misc.py``; its time channel is
  zero here, since t needs no gradient);
- **full, ours** (``seminorm=False``): the larger of one RMS over [z, a] and one RMS over all
  of a_θ together. It differs from torchdiffeq's: a small parameter tensor (a bias) whose
  adjoint has a large error is averaged away in one RMS over all parameters, and it never
  exceeds torchdiffeq's;
- **seminorm, torchdiffeq** (``adjoint_options={"norm": "seminorm"}`` there): the larger of
  the RMS norms of z and of a;
- **seminorm, ours** (``seminorm=True``, the package's default): one RMS over [z, a].

Kidger, Chen & Lyons ("Hey, that's not an ODE", ICML 2021) report that the seminorm saves
backward evaluations for the same accuracy, on CNFs among others. A saving at equal
*tolerance* is not a saving: a norm that ignores a_θ lets a_θ's error grow. So for each
problem, seed and norm we sweep the backward tolerance (the forward solve tight, so that the
gradient's error is the backward solve's), measure the backward NFE and the relative error of
the gradient against a tight reference, and interpolate the NFE needed to reach common error
levels (log-log, along the cheapest-so-far front of the sweep).

Problems (float64, dopri5, three seeds each):

- ``linear``: dz/dt = A z + b, D = 6, a batch of 16 states on [0, 2], loss at the end; the
  exact gradient from the matrix exponential of the augmented matrix [[A, b], [0, 0]];
- ``toy``: notebook 09's model (ODENet, hidden (32, 32)) after its 40 baseline training steps,
  the gradient of the window loss on 25 windows of length 1 (notebook 09, section 3);
- ``CNF``: notebook 09's flow (CNFField, hidden 32) after its 40 baseline steps on two moons,
  the gradient of the NLL of 256 points: the kind of model on which Kidger et al. report
  their saving;
- ``toy, 11 times``: notebook 04's model (ODENet, default width) after notebook 04's 150
  training steps, the gradient of the MSE at 11 observation times on 100 windows of length 5
  (notebook 04, section 5, which runs one seed of this live);
- ``MLP, 11 times``: a 2-64-64-2 tanh field (as notebook 04, section 3) fitted for 30 Adam
  steps to the spiral dz/dt = A z^3 of notebook 04, loss at 11 observation times on [0, 5]
  (the backward solve stops at each).

The references: backprop through dopri5 at rtol = atol = 1e-11 (checked against the adjoint
at the same tolerance), or the exact gradient for ``linear``.

Output: ``benchmarks/seminorm_equal_error.md`` (``--quick`` writes to ``benchmarks/results/``).
``--reuse`` keeps the per-seed sweeps of the problems already in that file (read back from its
per-seed tables, errors to two digits) and runs only the others.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuralode_helpers import (  # noqa: E402
    CNFField,
    ODENet,
    Stats,
    WindowedField,
    cnf_nll,
    odeint,
    odeint_adjoint,
    relative_error,
    toy_solution,
    train,
    train_cnf,
    two_moons,
)
from neuralode_helpers.reports import publish  # noqa: E402

F64 = torch.float64
SEEDS = (0, 1, 2)
FORWARD = dict(rtol=1e-10, atol=1e-12)
REF_TOL = 1e-11
LEVELS = (1e-3, 1e-4, 1e-5, 1e-6)
NORMS = ("full, torchdiffeq", "full, ours", "seminorm, torchdiffeq", "seminorm, ours")


def _rms(x):
    return x.square().mean().sqrt() if x.numel() else x.new_zeros(())


def norm_options(name, params):
    """``odeint_adjoint`` keyword arguments that select the backward norm ``name``."""
    sizes = [p.numel() for p in params]
    if name == "full, ours":
        return dict(seminorm=False)
    if name == "seminorm, ours":
        return dict(seminorm=True)
    if name == "full, torchdiffeq":
        def norm(scaled):
            z, a, a_theta = scaled
            return torch.stack([_rms(z), _rms(a)] + [_rms(c) for c in a_theta.split(sizes)]).max()
    else:
        def norm(scaled):
            z, a, _ = scaled
            return torch.stack([_rms(z), _rms(a)]).max()
    return dict(adjoint_options=dict(norm=norm))


# ---- problems: each returns (loss_fn(solver_kwargs, stats) -> loss, params, reference) ----
def linear_problem(seed):
    g = torch.Generator().manual_seed(seed)
    D = 6
    M = torch.randn(D, D, generator=g, dtype=F64) / math.sqrt(D)
    A = nn.Parameter(M - M.T - 0.3 * torch.eye(D, dtype=F64) + 0.2 * torch.randn(
        D, D, generator=g, dtype=F64))
    b = nn.Parameter(0.5 * torch.randn(D, generator=g, dtype=F64))
    z0 = torch.randn(16, D, generator=g, dtype=F64)
    target = torch.randn(16, D, generator=g, dtype=F64)
    t = torch.tensor([0.0, 2.0], dtype=F64)

    class Affine(nn.Module):
        def __init__(self):
            super().__init__()
            self.A, self.b = A, b

        def forward(self, t, z):
            return z @ self.A.T + self.b

    field = Affine()
    params = [A, b]

    def loss_fn(kwargs, stats):
        z = odeint_adjoint(field, z0, t, stats=stats, **kwargs)[-1]
        return ((z - target) ** 2).mean()

    aug = torch.cat([torch.cat([A, b[:, None]], 1), torch.zeros(1, D + 1, dtype=F64)], 0)
    expm = torch.linalg.matrix_exp(2.0 * aug)
    z_end = torch.cat([z0, torch.ones(16, 1, dtype=F64)], 1) @ expm.T
    exact = torch.autograd.grad(((z_end[:, :D] - target) ** 2).mean(), params)
    return loss_fn, params, [g.detach() for g in exact]


def _reference(loss_fn, params):
    ref = torch.autograd.grad(loss_fn(None, None), params)
    return [g.detach() for g in ref]


def toy_problem(seed, steps=40):
    torch.manual_seed(seed)
    model = ODENet(hidden=(32, 32))
    train(model, seed=seed, steps=steps, batch_size=32, lr=0.1, lr_final=1e-3,
          schedule="cosine", warmup=5, c_range=(-1.0, 1.0), rtol=1e-4, atol=1e-5,
          progress=False)
    model = model.double()
    params = list(model.parameters())
    t0 = torch.linspace(-1.0, 9.0, 100, dtype=F64)[::4]
    z0, target = toy_solution(t0)[:, None], toy_solution(t0 + 1.0)[:, None]
    field, t = WindowedField(model, t0, 1.0), torch.tensor([0.0, 1.0], dtype=F64)

    def loss_fn(kwargs, stats):
        if kwargs is None:  # the reference: backprop through a tight solve
            z = odeint(field, z0, t, rtol=REF_TOL, atol=REF_TOL)[-1]
        else:
            z = odeint_adjoint(field, z0, t, stats=stats, **kwargs)[-1]
        return ((z - target) ** 2).mean()

    return loss_fn, params, _reference(loss_fn, params)


def cnf_problem(seed, steps=40):
    torch.manual_seed(seed)
    field = CNFField(2, hidden=32)
    train_cnf(field, two_moons(2000, seed=0), seed=seed, steps=steps, batch_size=64, lr=0.1,
              lr_final=1e-3, schedule="cosine", warmup=10, method="dopri5", rtol=1e-5,
              atol=1e-5, progress=False)
    field = field.double()
    params = list(field.parameters())
    x = two_moons(256, seed=10 + seed, dtype=F64)

    def loss_fn(kwargs, stats):
        if kwargs is None:
            return cnf_nll(field, x, adjoint=False, rtol=REF_TOL, atol=REF_TOL)[0]
        s0 = torch.cat([x, x.new_zeros(len(x), 1)], dim=-1)
        s = odeint_adjoint(field, s0, torch.tensor([1.0, 0.0], dtype=F64), stats=stats,
                           **kwargs)[-1]
        logp0 = -0.5 * (s[:, :2] ** 2).sum(-1) - math.log(2 * math.pi)
        return -(logp0 - s[:, 2]).mean()

    return loss_fn, params, _reference(loss_fn, params)


def toy04_problem(seed, steps=150):
    torch.manual_seed(seed)
    model = ODENet()
    train(model, steps=steps, rtol=1e-6, atol=1e-7, seed=seed, progress=False)
    model = model.double()
    params = list(model.parameters())
    gen = torch.Generator().manual_seed(1)
    t0 = -1 + 10 * torch.rand(100, generator=gen, dtype=F64)
    s_obs = torch.linspace(0, 1, 11, dtype=F64)
    z_obs = toy_solution(t0[None, :] + 5.0 * s_obs[:, None]).unsqueeze(-1)
    field = WindowedField(model, t0, 5.0)

    def loss_fn(kwargs, stats):
        if kwargs is None:
            z = odeint(field, z_obs[0], s_obs, rtol=REF_TOL, atol=REF_TOL)
        else:
            z = odeint_adjoint(field, z_obs[0], s_obs, stats=stats, **kwargs)
        return nn.functional.mse_loss(z[1:], z_obs[1:])

    return loss_fn, params, _reference(loss_fn, params)


class MLPField(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                                 nn.Linear(64, 2))

    def forward(self, t, z):
        return self.net(z)


def mlp_problem(seed, steps=30):
    A_true = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=F64)
    g = torch.Generator().manual_seed(seed)
    z0 = torch.tensor([[1.0, 0.0]], dtype=F64) + 0.1 * torch.randn(8, 2, generator=g, dtype=F64)
    t = torch.linspace(0, 5, 11, dtype=F64)
    with torch.no_grad():
        data = odeint(lambda t, z: z ** 3 @ A_true.T, z0, t, rtol=1e-10, atol=1e-12)
    torch.manual_seed(seed)
    field = MLPField().double()
    params = list(field.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        ((odeint(field, z0, t, rtol=1e-5, atol=1e-6) - data) ** 2).mean().backward()
        opt.step()

    def loss_fn(kwargs, stats):
        if kwargs is None:
            z = odeint(field, z0, t, rtol=REF_TOL, atol=REF_TOL)
        else:
            z = odeint_adjoint(field, z0, t, stats=stats, **kwargs)
        return ((z - data) ** 2).mean()

    return loss_fn, params, _reference(loss_fn, params)


PROBLEMS = {"linear": linear_problem, "toy": toy_problem, "CNF": cnf_problem,
            "toy, 11 times": toy04_problem, "MLP, 11 times": mlp_problem}


def reuse(path, tols):
    """problem -> per seed: norm -> rows, from the per-seed tables of an earlier output."""
    found, current = {}, None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("**") and ", seed " in line:
            problem = line.strip("*").rsplit(", seed ", 1)[0]
            current = {name: [] for name in NORMS}
            found.setdefault(problem, []).append(current)
        elif (current is not None and line.startswith("| ") and not line.startswith("| adj")
              and not line.startswith("| ---")):
            cells = [c.strip() for c in line.strip("|").split("|")]
            tol = float(cells[0])
            for name, cell in zip(NORMS, cells[1:]):
                nfe, err = cell.split(", ")
                current[name].append((tol, int(nfe), float(err)))
    for per_seed in found.values():
        for by_norm in per_seed:
            assert all([r[0] for r in rows] == [float(f"{t:.1e}") for t in tols]
                       for rows in by_norm.values())
    return found


def sweep(loss_fn, params, ref, tols):
    """norm -> list of (tol, backward NFE, relative gradient error)."""
    out = {}
    for name in NORMS:
        rows = []
        for tol in tols:
            stats = Stats()
            kwargs = dict(FORWARD, adjoint_rtol=tol, adjoint_atol=tol / 10,
                          **norm_options(name, params))
            grads = torch.autograd.grad(loss_fn(kwargs, stats), params)
            rows.append((tol, stats.backward.nfe, relative_error(grads, ref)))
        out[name] = rows
    return out


def nfe_at(rows, level):
    """Backward NFE needed for a gradient error of ``level``: log-log interpolation along the
    front of the sweep (points sorted by NFE, each kept if its error is the lowest so far);
    NaN if the sweep does not bracket the level."""
    front, best = [], math.inf
    for _, nfe, err in sorted(rows, key=lambda r: (r[1], r[2])):
        if err < best:
            front.append((nfe, err))
            best = err
    for (n0, e0), (n1, e1) in zip(front, front[1:]):
        if e1 <= level <= e0:
            if e0 == e1:
                return float(n0)
            w = (math.log(e0) - math.log(level)) / (math.log(e0) - math.log(e1))
            return float(math.exp(math.log(n0) + w * (math.log(n1) - math.log(n0))))
    if front and front[0][1] <= level:
        return float(front[0][0])  # already reached by the cheapest solve
    return math.nan


def fmt(values):
    values = np.asarray(values, dtype=float)
    if np.isnan(values).any():
        return "–"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}" if len(values) > 1 else \
        f"{values[0]:.1f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, few tolerances")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the problems already in the output file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = SEEDS[:1] if args.quick else SEEDS
    tols = ([1e-3, 1e-5, 1e-7] if args.quick
            else [float(10 ** -(3 + k / 2)) for k in range(11)])  # 1e-3 ... 1e-8
    start = time.time()
    results = {}  # problem -> seed -> norm -> rows
    earlier = reuse(ROOT / "benchmarks" / "seminorm_equal_error.md", tols) if args.reuse else {}
    for problem, make in PROBLEMS.items():
        if problem in earlier:
            results[problem] = earlier[problem]
            continue
        results[problem] = []
        for seed in seeds:
            loss_fn, params, ref = make(seed)
            if problem != "linear":  # the reference against the adjoint at the same tolerance
                check = torch.autograd.grad(
                    loss_fn(dict(rtol=REF_TOL, atol=REF_TOL), Stats()), params)
                agreement = relative_error(check, ref)
                assert agreement < 1e-7, (problem, seed, agreement)
            results[problem].append(sweep(loss_fn, params, ref, tols))
            print(f"{problem}, seed {seed}: {time.time() - start:.0f} s", flush=True)
    elapsed = time.time() - start

    lines = [
        "# The seminorm at equal gradient error",
        "",
        f"`benchmarks/seminorm_equal_error.py`{' --quick' if args.quick else ''}: "
        f"{len(seeds)} seed(s) per problem; backward tolerance adjoint_rtol from 1e-3 to "
        f"1e-8 ({len(tols)} values, adjoint_atol = adjoint_rtol / 10), forward solve at "
        f"rtol 1e-10, atol 1e-12; dopri5, float64. Python {platform.python_version()}, "
        f"torch {torch.__version__}, {elapsed:.0f} s"
        + (" (the problems run in the last call, with --reuse)." if args.reuse else "."),
        "",
        "Backward NFE needed to reach a relative gradient error (mean ± sd over seeds, "
        "interpolated along each sweep; – where a seed's sweep does not reach that error). "
        "The two savings compare each seminorm with the full norm of the same family: "
        "torchdiffeq's seminorm against torchdiffeq's full norm (the comparison Kidger et "
        "al. make), and our seminorm against our full norm.",
        "",
        "| problem | gradient error | full, torchdiffeq | full, ours | seminorm, torchdiffeq "
        "| seminorm, ours | saved, torchdiffeq's pair | saved, our pair | saved, our seminorm "
        "vs torchdiffeq's full |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    summary = {}
    for problem, per_seed in results.items():
        for level in LEVELS:
            nfe = {name: [nfe_at(s[name], level) for s in per_seed] for name in NORMS}
            if all(np.isnan(v).all() for v in nfe.values()):
                continue

            def saved(semi, full, nfe=nfe):
                s, f = np.array(nfe[semi]), np.array(nfe[full])
                if np.isnan(s).any() or np.isnan(f).any():
                    return "–"
                r = 1 - s / f
                return f"{100 * r.mean():+.0f}% ({', '.join(f'{100 * x:+.0f}' for x in r)})"

            pair_td = saved("seminorm, torchdiffeq", "full, torchdiffeq")
            pair_ours = saved("seminorm, ours", "full, ours")
            cross = saved("seminorm, ours", "full, torchdiffeq")
            summary[(problem, level)] = nfe
            lines.append(f"| {problem} | {level:.0e} | "
                         + " | ".join(fmt(nfe[name]) for name in NORMS)
                         + f" | {pair_td} | {pair_ours} | {cross} |")
    lines += [
        "",
        "Savings are 1 − NFE(seminorm) / NFE(full) per seed (mean, then each seed); positive "
        "means the seminorm needs fewer backward evaluations for the same gradient error.",
        "",
        "## Per seed: (backward NFE, gradient error) at each adjoint_rtol",
        "",
    ]
    for problem, per_seed in results.items():
        for seed, by_norm in zip(seeds, per_seed):
            lines.append(f"**{problem}, seed {seed}**")
            lines.append("")
            lines.append("| adjoint_rtol | " + " | ".join(NORMS) + " |")
            lines.append("| --- |" + " ---: |" * len(NORMS))
            for k, tol in enumerate(tols):
                lines.append(f"| {tol:.1e} | " + " | ".join(
                    f"{by_norm[name][k][1]}, {by_norm[name][k][2]:.1e}" for name in NORMS)
                    + " |")
            lines.append("")
    out = (ROOT / "benchmarks" / "results" / "seminorm_equal_error_quick.md" if args.quick
           else ROOT / "benchmarks" / "seminorm_equal_error.md")
    out.parent.mkdir(exist_ok=True)
    publish("\n".join(lines) + "\n", out)  # and the package's copy, which 04 and 09 read
    print("\n".join(lines[:12 + len(summary)]))
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
