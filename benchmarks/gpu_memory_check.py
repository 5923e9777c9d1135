"""Check on a CUDA machine that ``saved_tensor_bytes`` (what the CPU notebooks use to measure
memory) tracks the memory CUDA really holds, for backprop through rk4 and for the adjoint.

    python benchmarks/gpu_memory_check.py      # needs a CUDA device

For each number of rk4 steps it prints, in MiB: the saved-tensor bytes of the forward graph,
the CUDA memory still allocated after the forward pass (graph + outputs + loss), and the CUDA
peak over forward + backward.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuralode_helpers import cuda_peak_bytes, odeint, odeint_adjoint, saved_tensor_bytes  # noqa: E402

MiB = 2**20


class Field(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                                 nn.Linear(64, 2))

    def forward(self, t, z):
        return self.net(z)


def main():
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    dev = torch.device("cuda")
    print(torch.cuda.get_device_name(dev), "torch", torch.__version__)
    torch.manual_seed(0)
    f = Field().to(dev)
    params = list(f.parameters())
    z0 = torch.randn(256, 2, device=dev, requires_grad=True)
    t = torch.linspace(0, 1, 10, device=dev)
    target = torch.randn(10, 256, 2, device=dev)
    # Warm-up: the first matrix product allocates cuBLAS's workspace, which is not the graph's.
    odeint(f, z0, t, method="rk4", options={"step_size": 0.1}).sum().backward()
    f.zero_grad(set_to_none=True)
    z0.grad = None
    print(f"{'how':>11} {'steps':>6} {'saved MiB':>10} {'held MiB':>10} {'peak MiB':>10}")
    ok = True
    rows = {}
    for how in ("backprop", "adjoint", "checkpoint"):
        for n in (10, 100, 1000):
            kw = dict(method="rk4", options={"step_size": 1.0 / n})

            def forward(how=how, kw=kw):
                if how == "backprop":
                    ys = odeint(f, z0, t, **kw)
                else:
                    ys = odeint_adjoint(f, z0, t, checkpoint=how == "checkpoint", **kw)
                return ((ys - target) ** 2).mean()

            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            loss, saved = saved_tensor_bytes(forward, exclude=params)
            torch.cuda.synchronize()
            held = torch.cuda.memory_allocated() - base
            del loss
            _, peak = cuda_peak_bytes(lambda: forward().backward())
            f.zero_grad(set_to_none=True)
            z0.grad = None
            rows[how, n] = (saved, held, peak)
            print(f"{how:>11} {n:>6} {saved / MiB:>10.3f} {held / MiB:>10.3f} "
                  f"{peak / MiB:>10.3f}")
            # The graph's saved tensors are what the forward pass leaves behind; CUDA's
            # caching allocator rounds each block up (to 512 bytes), so allow some slack.
            ok &= saved <= held <= 1.5 * saved + 1 * MiB
    ok &= rows["backprop", 1000][0] > 50 * rows["backprop", 10][0]
    ok &= rows["adjoint", 1000][0] == rows["adjoint", 10][0]
    ok &= rows["adjoint", 1000][2] < 2 * rows["adjoint", 10][2] + MiB
    print("consistent" if ok else "INCONSISTENT")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
