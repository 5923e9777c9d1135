"""Notebook 05's latent ODE and GRU baseline: both learning rates swept, and the encoder's
time origin ablated.

Run by hand, not part of the test suite::

    .venv/bin/python benchmarks/sweep_05_latent.py           # the full sweep, several minutes
    .venv/bin/python benchmarks/sweep_05_latent.py --quick   # smoke run, seconds

Both models are the ones of notebook 05 (same data, same sizes, 400 full-batch steps with a
density n in {5, 10, 20} drawn at random each step, Adam with a cosine schedule down to a tenth
of the starting rate), trained once per seed and starting learning rate:

1. the learning rate of each model swept over the same grid, chosen on a validation sample
   (100 further spirals, their own observation times): the rate with the lowest mean
   extrapolation RMSE, averaged over the three densities and the seeds; each model is then
   reported on the notebook's 100 test series at its own best rate;
2. the latent ODE's encoder with and without the time from t = 0 to the first observation
   (``origin_gap``), both at the latent ODE's best rate, on the test series at each density.

Output: ``benchmarks/sweep_05_latent.md`` (``--quick`` writes to ``benchmarks/results/``,
ignored by git, instead).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import cpu_name  # noqa: E402

from neuralode_helpers import (  # noqa: E402
    GRUForecaster,
    LatentODE,
    elbo,
    gather_times,
    irregular_indices,
    spiral_family,
)
from neuralode_helpers.reports import publish  # noqa: E402

HERE = Path(__file__).resolve().parent
N_SERIES, N_TRAIN, N_GRID, NOISE = 300, 200, 40, 0.1
W = N_GRID // 2
DENSITIES = (5, 10, 20)


def make_data():
    """The notebook's data (training and test series) and a separate validation sample."""
    t, x_true, x_noisy, _ = spiral_family(N_SERIES, n_grid=N_GRID, t_end=4 * math.pi,
                                          noise=NOISE, seed=1)
    _, v_true, v_noisy, _ = spiral_family(100, n_grid=N_GRID, t_end=4 * math.pi,
                                          noise=NOISE, seed=101)
    data = {"t": t, "train": {}, "test": {}, "val": {}}
    for n in DENSITIES:
        idx = irregular_indices(N_SERIES, W, n, seed=n)
        obs = gather_times(x_noisy, idx)
        data["train"][n] = (obs[:N_TRAIN], idx[:N_TRAIN])
        data["test"][n] = (obs[N_TRAIN:], idx[N_TRAIN:], x_true[N_TRAIN:])
        v_idx = irregular_indices(100, W, n, seed=100 + n)
        data["val"][n] = (gather_times(v_noisy, v_idx), v_idx, v_true)
    return data


def train(kind, lr, seed, steps, data, origin_gap=True):
    t = data["t"]
    torch.manual_seed(seed)
    if kind == "ode":
        m = LatentODE(obs_dim=2, latent_dim=4, hidden=20, rnn_hidden=25, step_size=float(t[1]),
                      adjoint=False, method="midpoint", origin_gap=origin_gap)
    else:
        m = GRUForecaster(obs_dim=2, hidden=32)
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr / 10)
    pick = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        n = DENSITIES[pick.integers(len(DENSITIES))]
        x_o, idx = data["train"][n]
        if kind == "ode":
            loss = -elbo(m, x_o, idx, t, NOISE, gen)
        else:
            loss = ((m(x_o, t[idx]) - x_o[:, 1:]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return m


def rmse(a, b):
    v = ((a - b) ** 2).mean().sqrt().item()
    return v if math.isfinite(v) else float("inf")


def evaluate(kind, m, data, split):
    """Extrapolation RMSE (second turn, noise-free truth) per density, and for the latent ODE
    the interpolation RMSE (first turn) too."""
    t = data["t"]
    out = {}
    for n in DENSITIES:
        x_o, idx, truth = data[split][n]
        if kind == "ode":
            pred = m.predict(x_o, t[idx], t)
            out[n] = (rmse(pred[:, :W], truth[:, :W]), rmse(pred[:, W:], truth[:, W:]))
        else:
            out[n] = (None, rmse(m.forecast(x_o, t[idx], t[W:]), truth[:, W:]))
    return out


def ms(values):
    values = [v for v in values if v is not None]
    if any(not math.isfinite(v) for v in values):
        return "diverged"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 steps, two seeds")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    steps, seeds = (20, (0, 1)) if args.quick else (args.steps, tuple(range(args.seeds)))
    lrs = (5e-3, 1e-2, 2e-2, 3e-2)
    data = make_data()
    start, wall = time.process_time(), time.perf_counter()

    runs = {}   # (kind, lr, origin_gap) -> list over seeds of (val, test)
    for kind in ("ode", "gru"):
        for lr in lrs:
            for seed in seeds:
                m = train(kind, lr, seed, steps, data)
                runs.setdefault((kind, lr, True), []).append(
                    (evaluate(kind, m, data, "val"), evaluate(kind, m, data, "test")))
                print(kind, lr, seed, runs[(kind, lr, True)][-1][1], flush=True)

    def val_score(kind, lr):
        scores = [statistics.mean(v[n][1] for n in DENSITIES) for v, _ in runs[(kind, lr, True)]]
        return statistics.mean(scores) if all(map(math.isfinite, scores)) else float("inf")

    best = {kind: min(lrs, key=lambda lr, k=kind: val_score(k, lr)) for kind in ("ode", "gru")}
    for seed in seeds:
        m = train("ode", best["ode"], seed, steps, data, origin_gap=False)
        runs.setdefault(("ode", best["ode"], False), []).append(
            (evaluate("ode", m, data, "val"), evaluate("ode", m, data, "test")))
        print("ode no origin gap", seed, runs[("ode", best["ode"], False)][-1][1], flush=True)
    cpu = time.process_time() - start

    L = ["# Notebook 05: both learning rates swept, the encoder's time origin ablated", ""]
    L.append(f"Written by `benchmarks/sweep_05_latent.py` in {cpu:.0f} s of CPU time on "
             f"{cpu_name()}; torch {torch.__version__}, Python {platform.python_version()}; "
             f"torch.set_num_threads(1). {steps} training steps per run (as in the notebook), "
             f"seeds {', '.join(map(str, seeds))}; cosine schedule from the rate to a tenth of "
             f"it. RMSE against the noise-free spirals; mean ± sd over the seeds.")
    L.append("")
    L.append("## Learning rate, chosen on the validation sample")
    L.append("")
    L.append("Validation score: extrapolation RMSE averaged over the three densities.")
    L.append("")
    L.append("| model | learning rate | validation score | test extrap. n = 5 | n = 10 | n = 20 |")
    L.append("| --- | --- | --- | --- | --- | --- |")
    for kind, name in (("ode", "latent ODE"), ("gru", "GRU")):
        for lr in lrs:
            r = runs[(kind, lr, True)]
            scores = [statistics.mean(v[n][1] for n in DENSITIES) for v, _ in r]
            star = " (best)" if lr == best[kind] else ""
            L.append(f"| {name} | {lr:g}{star} | {ms(scores)} | "
                     + " | ".join(ms([te[n][1] for _, te in r]) for n in DENSITIES) + " |")
    L.append("")
    L.append("## Each model at its best rate (test series)")
    L.append("")
    L.append("| observations | latent ODE extrap. | GRU extrap. | latent ODE minus GRU, per seed |")
    L.append("| --- | --- | --- | --- |")
    ro, rg = runs[("ode", best["ode"], True)], runs[("gru", best["gru"], True)]
    for n in DENSITIES:
        diff = [o[1][n][1] - g[1][n][1] for o, g in zip(ro, rg)]
        L.append(f"| {n} | {ms([te[n][1] for _, te in ro])} | {ms([te[n][1] for _, te in rg])} "
                 f"| {', '.join(f'{d:+.3f}' for d in diff)} |")
    L.append("")
    L.append(f"## The encoder's time origin (latent ODE at learning rate {best['ode']:g}, test)")
    L.append("")
    L.append("With `origin_gap` the encoder reads the time from t = 0 to the first observation; "
             "without it, only the gaps between observations.")
    L.append("")
    L.append("| observations | interp. with | interp. without | extrap. with | extrap. without "
             "| without minus with (extrap.), per seed |")
    L.append("| --- | --- | --- | --- | --- | --- |")
    rn = runs[("ode", best["ode"], False)]
    for n in DENSITIES:
        diff = [b[1][n][1] - a[1][n][1] for a, b in zip(ro, rn)]
        L.append(f"| {n} | {ms([te[n][0] for _, te in ro])} | {ms([te[n][0] for _, te in rn])} "
                 f"| {ms([te[n][1] for _, te in ro])} | {ms([te[n][1] for _, te in rn])} "
                 f"| {', '.join(f'{d:+.3f}' for d in diff)} |")
    L.append("")
    L.append("Per seed (model, rate, origin gap, seed: test (interp., extrap.) at n = 5, 10, 20):")
    L.append("")
    for (kind, lr, og), r in runs.items():
        for seed, (_, te) in zip(seeds, r):
            cells = "; ".join(
                (f"{te[n][0]:.3f}, " if te[n][0] is not None else "") + f"{te[n][1]:.3f}"
                for n in DENSITIES)
            L.append(f"- {kind}, {lr:g}, {og}, {seed}: {cells}")
    text = "\n".join(L) + "\n"
    out = (HERE / "results" / "sweep_05_latent_quick.md") if args.quick else \
        (HERE / "sweep_05_latent.md")
    out.parent.mkdir(exist_ok=True)
    written = publish(text, out)  # and the package's copy, which notebook 05 reads
    print(text)
    print(f"wrote {', '.join(map(str, written))} ({cpu:.0f} s CPU, "
          f"{time.perf_counter() - wall:.0f} s wall)")


if __name__ == "__main__":
    main()
