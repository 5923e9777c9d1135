"""RNODE's weight, swept and chosen on a validation split (notebook 09's λ question).

Run by hand, not part of the test suite::

    .venv/bin/python benchmarks/sweep_rnode.py                 # both problems, a few minutes each
    .venv/bin/python benchmarks/sweep_rnode.py --problem cnf   # one problem
    .venv/bin/python benchmarks/sweep_rnode.py --quick         # smoke run, seconds

Notebook 09 trains each treatment for 40 steps and gives RNODE one weight per problem. Here
both problems are trained for longer (``--steps``, 200 by default, five times the notebook's
budget), with RNODE's two terms weighted by one λ from a grid that includes 0 (the baseline),
over three seeds:

- the 2-D CNF of notebook 09, section 5 (two moons, dopri5 at rtol = atol = 1e-5, gradients
  by the adjoint, exact terms), λ in {0, 0.01, 0.1, 1}; the fit is the NLL of held-out points;
- the toy problem of notebook 03 (windows of length 1, dopri5 at rtol 1e-4, Hutchinson
  probes), λ in {0, 0.001, 0.01, 0.1}; the fit is the window MSE of held-out windows.

Three disjoint samples: training data, a validation sample that chooses λ, and a test sample
that reports the chosen model's fit. The cost is the NFE per training step, forward plus
backward, over the last 20 steps, and the trained model's forward NFE at the training
tolerance. λ is chosen at equal fit: the largest λ whose mean validation fit is within the
baseline's spread (one sd over seeds) of the baseline's mean. For every λ the report gives the
NFE it saved against the baseline and the fit it lost, and their ratio where fit was lost.

Output: ``benchmarks/sweep_rnode_latest.md``, or ``benchmarks/sweep_rnode_<problem>.md`` for
one problem (``--quick`` writes to ``benchmarks/results/``, ignored by git, instead).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import cpu_name  # noqa: E402

from neuralode_helpers import (  # noqa: E402
    RNODE,
    CNFField,
    ODENet,
    Stats,
    cnf_nll,
    regularised_window_loss,
    train,
    train_cnf,
    two_moons,
)
from neuralode_helpers.reports import publish  # noqa: E402

HERE = Path(__file__).resolve().parent
SEEDS = (0, 1, 2)
LAST = 20  # steps over which the training cost is averaged

PROBLEMS = {
    "cnf": dict(lambdas=(0.0, 0.01, 0.1, 1.0), probe="exact", fit="held-out NLL"),
    "toy": dict(lambdas=(0.0, 0.001, 0.01, 0.1), probe="rademacher", fit="held-out window MSE"),
}


def toy_windows(n, seed):
    # Windows over the training range with offsets c drawn from their own generator.
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=g) * 10 - 1, torch.rand(n, generator=g) * 2 - 1


def run_one(problem, lam, seed, steps):
    """Train one model; return its costs and fits."""
    torch.manual_seed(seed)
    reg = None if lam == 0 else RNODE(lam, lam, probe=PROBLEMS[problem]["probe"])
    start = time.process_time()
    if problem == "cnf":
        x_train, x_val, x_test = (two_moons(2000, seed=0), two_moons(1000, seed=2),
                                  two_moons(1000, seed=1))
        field = CNFField(2, hidden=32)
        result = train_cnf(field, x_train, steps=steps, batch_size=64, lr=0.1, lr_final=1e-3,
                           schedule="cosine", warmup=10, method="dopri5", rtol=1e-5,
                           atol=1e-5, regulariser=reg, seed=seed, progress=False)

        def fit(x, stats=None):
            with torch.no_grad():
                return cnf_nll(field, x, adjoint=False, rtol=1e-5, atol=1e-5,
                               stats=stats)[0].item()
        test_data = x_test
    else:
        model = ODENet(hidden=(32, 32))
        result = train(model, steps=steps, batch_size=32, lr=0.1, lr_final=1e-3,
                       schedule="cosine", warmup=5, c_range=(-1.0, 1.0), rtol=1e-4,
                       atol=1e-5, regulariser=reg, seed=seed, progress=False)
        x_val, test_data = toy_windows(200, 101), toy_windows(200, 202)

        def fit(windows, stats=None):
            with torch.no_grad():
                return regularised_window_loss(model, *windows, adjoint=False, rtol=1e-4,
                                               atol=1e-5, stats=stats)[0].item()
    cpu = time.process_time() - start
    stats = Stats()
    val = fit(x_val, stats)
    cost = (statistics.fmean(result.nfe_forward[-LAST:])
            + statistics.fmean(result.nfe_backward[-LAST:]))
    return dict(problem=problem, lam=lam, seed=seed, cost=cost, eval_nfe=stats.forward.nfe,
                val=val, test=fit(test_data), cpu=cpu)


def mean_sd(values, fmt="{:.2f}"):
    values = list(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{fmt.format(statistics.fmean(values))} ± {fmt.format(sd)}"


def report(rows, problems, steps, seeds, seconds, quick):
    lines = ["# RNODE's weight, chosen on a validation split", "",
             f"Written by `benchmarks/sweep_rnode.py{' --quick' if quick else ''}` in "
             f"{seconds:.0f} s on {cpu_name()}; torch {torch.__version__}, Python "
             f"{platform.python_version()}; torch.set_num_threads(1). {steps} training steps "
             f"per run (notebook 09: 40), seeds {', '.join(map(str, seeds))}.", "",
             "Cost: NFE per training step, forward + backward, mean of the last "
             f"{LAST} steps; eval NFE: the trained model's forward NFE on the validation "
             "sample at the training tolerance. λ* is the largest λ whose mean validation "
             "fit is within one baseline sd of the baseline's mean (equal fit). 'NFE saved "
             "per unit of fit lost' divides the cost saved by the validation fit lost, where "
             "fit was lost.", ""]
    for problem in problems:
        spec = PROBLEMS[problem]
        group = {lam: [r for r in rows if r["problem"] == problem and r["lam"] == lam]
                 for lam in spec["lambdas"]}
        group = {lam: g for lam, g in group.items() if g}
        if 0.0 not in group:
            continue
        base = group[0.0]
        base_val = [r["val"] for r in base]
        bar = statistics.fmean(base_val) + (statistics.stdev(base_val) if len(base) > 1 else 0)
        equal = [lam for lam, g in group.items() if statistics.fmean(r["val"] for r in g) <= bar]
        chosen = max(equal)
        lines += [f"## {problem.upper() if problem == 'cnf' else 'Toy problem'} "
                  f"({spec['fit']}, probes: {spec['probe']})", "",
                  "| λ | NFE per step (fwd + bwd) | eval NFE | validation fit | test fit | "
                  "NFE saved | fit lost | NFE saved per unit of fit lost | CPU s per run |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        b_cost = statistics.fmean(r["cost"] for r in base)
        b_val = statistics.fmean(base_val)
        for lam, g in group.items():
            cost = statistics.fmean(r["cost"] for r in g)
            val = statistics.fmean(r["val"] for r in g)
            saved, lost = b_cost - cost, val - b_val
            ratio = f"{saved / lost:.0f}" if lam and lost > 0 else "–"
            mark = " (λ*)" if lam == chosen else ""
            lines.append(
                f"| {lam:g}{mark} | {mean_sd((r['cost'] for r in g), '{:.1f}')} | "
                f"{mean_sd((r['eval_nfe'] for r in g), '{:.1f}')} | "
                f"{mean_sd((r['val'] for r in g), '{:.3f}')} | "
                f"{mean_sd((r['test'] for r in g), '{:.3f}')} | "
                f"{saved:+.1f} | {lost:+.3f} | {ratio} | "
                f"{statistics.fmean(r['cpu'] for r in g):.1f} |")
        lines += ["", "Per seed (λ, seed: cost, eval NFE, validation fit, test fit):", ""]
        lines += [f"- λ = {r['lam']:g}, seed {r['seed']}: {r['cost']:.1f}, {r['eval_nfe']}, "
                  f"{r['val']:.3f}, {r['test']:.3f}" for g in group.values() for r in g]
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problem", choices=sorted(PROBLEMS), action="append")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    problems = args.problem or ["cnf", "toy"]
    steps = 5 if args.quick else args.steps
    name = "latest" if len(problems) > 1 else problems[0]
    out = args.out or (HERE / "results" / f"sweep_rnode_{name}_quick.md" if args.quick
                       else HERE / f"sweep_rnode_{name}.md")
    seeds = SEEDS[:1] if args.quick else SEEDS
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = []
    for problem in problems:
        for lam in PROBLEMS[problem]["lambdas"]:
            for seed in seeds:
                rows.append(run_one(problem, lam, seed, steps))
                r = rows[-1]
                print(f"{problem} λ={lam:g} seed {seed}: cost {r['cost']:.1f}, eval NFE "
                      f"{r['eval_nfe']}, val {r['val']:.3f}, test {r['test']:.3f}, "
                      f"{r['cpu']:.1f} s CPU", flush=True)
                # and the package's copy, which notebook 09 reads
                written = publish(report(rows, problems, steps, seeds,
                                         time.perf_counter() - start, args.quick), out)
    print(f"wrote {', '.join(map(str, written))}")


if __name__ == "__main__":
    main()
