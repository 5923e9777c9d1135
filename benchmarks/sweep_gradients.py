"""A measured map of when the adjoint loses: six ways to differentiate one solve, swept.

Run by hand, not part of the test suite::

    .venv/bin/python benchmarks/sweep_gradients.py           # full sweep, several minutes
    .venv/bin/python benchmarks/sweep_gradients.py --quick   # smoke run, a few seconds

The problem, the six methods, what is measured and how (the methods timed interleaved, the
CPU share that marks a point a busy machine disturbed) are in the docstring of
``neuralode_helpers/sweep.py``, which holds the code; this file is its command line.

Outputs: ``benchmarks/sweep_latest.md`` (tables and the machine), its copy
``neuralode_helpers/data/sweep_latest.md`` (package data, read by notebook 08 from any
folder) and ``benchmarks/sweep_latest.png`` (per factor: time of each method, and memory with
the stated budget marked). ``--quick`` writes to ``benchmarks/results/`` (ignored by git)
instead.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import cpu_name  # noqa: E402

from neuralode_helpers.sweep import (  # noqa: E402
    BASE,
    FACTORS,
    QUICK_BASE,
    QUICK_FACTORS,
    figure,
    report,
    sweep,
)

HERE = Path(__file__).resolve().parent
PACKAGE_DATA = HERE.parent / "neuralode_helpers" / "data"


def machine():
    return (f"{cpu_name()}, {os.cpu_count()} logical cores; torch {torch.__version__}, Python "
            f"{platform.python_version()}; torch.set_num_threads({torch.get_num_threads()})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sweep, a few seconds")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--retries", type=int, default=1,
                        help="re-measurements of a point a busy machine disturbed")
    parser.add_argument("--retry-seconds", type=float, default=None,
                        help="no re-measurement once the sweep has run this long")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    base, factors = (QUICK_BASE, QUICK_FACTORS) if args.quick else (BASE, FACTORS)
    repeats = args.repeats or (1 if args.quick else 3)
    outs = [HERE / "results"] if args.quick else [HERE, PACKAGE_DATA]
    stem = "sweep_quick" if args.quick else "sweep_latest"
    start = time.perf_counter()
    rows = sweep(base, factors, repeats, retries=args.retries,
                 retry_seconds=args.retry_seconds)
    seconds = time.perf_counter() - start
    command = "benchmarks/sweep_gradients.py" + (" --quick" if args.quick else "")
    text = report(rows, base, repeats, seconds, machine(), command=command,
                  retries=args.retries)
    for out in outs:
        out.mkdir(exist_ok=True)
        (out / f"{stem}.md").write_text(text, encoding="utf-8")
    figure(rows, base, factors, outs[0] / f"{stem}.png")
    print(text)
    print(f"wrote {outs[0] / stem}.md and .png" + (f", {outs[1] / stem}.md" if len(outs) > 1
                                                    else "") + f" in {seconds:.0f} s")


if __name__ == "__main__":
    main()
