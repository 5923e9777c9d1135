"""Time the notebook-03 training recipe on every device torch can see (CPU, and CUDA if any).

    python benchmarks/train_devices.py [--steps 500]

Prints, per device: seconds of training, ms per step, the fit MSE over [0, 10] at c = 0
(c = 0, 100 points of [0, 10]) and the mean forward/backward NFE per step. The problem is
tiny (100 windows of a scalar ODE), so a GPU is not expected to win: each solver step is a
handful of small kernels plus one host synchronisation for the step-size decision.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import neuralode_helpers as nh  # noqa: E402

RECIPE = dict(lr=0.1, lr_final=1e-4, schedule="cosine", warmup=50, c_range=(-1.0, 1.0),
              rtol=1e-3, atol=1e-4, seed=0, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(1)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}; "
          + (f"GPU: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "no GPU"))
    print("| device | training (s) | ms/step | fit MSE | NFE fwd / bwd |")
    print("|---|--:|--:|--:|--:|")
    for device in devices:
        torch.manual_seed(0)
        model = nh.ODENet().to(device)
        result = nh.train(model, steps=args.steps, **RECIPE)
        fit = nh.fit_mse(model)
        nf = sum(result.nfe_forward) / len(result.nfe_forward)
        nb = sum(result.nfe_backward) / len(result.nfe_backward)
        print(f"| {device} | {result.seconds:.1f} | {1e3 * result.seconds / args.steps:.1f} | "
              f"{fit:.3f} | {nf:.0f} / {nb:.0f} |")


if __name__ == "__main__":
    main()
