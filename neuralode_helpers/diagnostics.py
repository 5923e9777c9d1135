r"""Measuring what a gradient costs: memory kept for backward, NFE, time, and error.

Used by the cost-and-accuracy notebook to put numbers on the paper's claims:

- :func:`saved_tensor_bytes`: bytes the autograd graph holds for ``backward()``. Backprop
  through a solver with N steps keeps every stage of every step, O(N); the adjoint keeps the
  outputs at the observation times and the parameters, O(len(t)).
- :func:`cuda_peak_bytes`: peak CUDA memory of a call, where a GPU is available.
- :func:`measure_gradient`: one gradient with its forward/backward NFE and wall time.
- :func:`relative_error`: :math:`\lVert x - x_{ref}\rVert_2 / \lVert x_{ref}\rVert_2` over
  one or several tensors.
- :func:`reconstruction_error`: how far the backward solve's reconstruction of
  :math:`z(t_0)` lands from the true :math:`z_0` (the adjoint's weak spot on contracting
  dynamics).
"""

from __future__ import annotations

import statistics
import time
import weakref
from dataclasses import dataclass

import torch

from .solvers import Stats, odeint


class _Saved:
    """Holder for one saved tensor; a weak reference to it tells whether the graph that saved
    the tensor is still alive."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor):
        # Detached: a saved *output* (tanh saves its result) would otherwise reference its
        # own graph through this holder, a cycle that keeps a dropped graph alive for ever.
        self.tensor = tensor.detach()


def _storage_key(t: torch.Tensor):
    s = t.untyped_storage()
    return (t.device, s.data_ptr()), s.nbytes()


def saved_tensor_bytes(fn, *args, exclude=(), **kwargs):
    r"""Run ``fn(*args, **kwargs)``; return ``(output, bytes)``, where ``bytes`` is the memory
    of the tensors that the autograd graph still keeps for ``backward()`` when ``fn`` returns.

    Every tensor an operation saves for backward passes through a
    ``torch.autograd.graph.saved_tensors_hooks`` pack hook (custom ``autograd.Function``\ s'
    ``save_for_backward`` included). We count each distinct storage once (a weight saved by
    every layer call is one tensor in memory) and only those still reachable from a live graph
    at the end: a graph that was built and dropped inside ``fn`` (for example by an input
    check) held its memory only briefly. Storages of the tensors in ``exclude`` (e.g. the
    parameters, which exist anyway) are not counted.

    This measures the memory that grows with the solver's steps; it does not see temporaries
    freed during the forward or the backward pass. Python's ``tracemalloc`` cannot do this job
    on CPU: torch allocates tensor memory outside Python's allocator.
    """
    holders = []

    def pack(t):
        h = _Saved(t)
        holders.append(weakref.ref(h))
        return h

    def unpack(h):
        return h.tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        out = fn(*args, **kwargs)
    skip = {_storage_key(t)[0] for t in exclude}
    sizes = {}
    for ref in holders:
        h = ref()
        if h is not None:
            key, nbytes = _storage_key(h.tensor)
            if key not in skip:
                sizes[key] = nbytes
    return out, sum(sizes.values())


def cuda_peak_bytes(fn, *args, device=None, **kwargs):
    """Run ``fn(*args, **kwargs)`` on a CUDA device; return ``(output, bytes)`` with the peak
    of CUDA memory allocated during the call above what was allocated before it.

    Unlike :func:`saved_tensor_bytes` this sees every temporary, forward and backward alike
    (pass a ``fn`` that calls ``backward()`` to include the backward pass). Raises
    ``RuntimeError`` where CUDA is not available.
    """
    if not torch.cuda.is_available():
        raise RuntimeError("cuda_peak_bytes needs a CUDA device; on CPU use saved_tensor_bytes")
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = fn(*args, **kwargs)
    torch.cuda.synchronize(device)
    return out, torch.cuda.max_memory_allocated(device) - base


def _flat(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().reshape(-1).to(torch.float64)
    return torch.cat([_flat(v) for v in x])


def relative_error(x, ref) -> float:
    r""":math:`\lVert x - x_{ref}\rVert_2 / \lVert x_{ref}\rVert_2` in float64.

    ``x`` and ``ref`` are tensors of the same shape, or sequences of such tensors (e.g. the
    gradients of all parameters), which are flattened and joined first.
    """
    a, b = _flat(x), _flat(ref)
    if a.shape != b.shape:
        raise ValueError(f"x has {a.numel()} entries but ref has {b.numel()}")
    return float((a.cpu() - b.cpu()).norm() / b.norm().cpu())


@dataclass
class GradientCost:
    """One gradient and what it cost (see :func:`measure_gradient`)."""

    grads: tuple
    loss: float
    nfe_forward: int
    nfe_backward: int
    seconds: float


def measure_gradient(loss_fn, inputs, repeats=1) -> GradientCost:
    r"""Gradient of ``loss_fn(stats)`` with respect to ``inputs``, with its cost.

    ``loss_fn(stats)`` must build a scalar loss from one solve to which it passes
    ``stats=stats`` (a fresh :class:`~neuralode_helpers.solvers.Stats`). The forward and
    backward NFE are read from ``stats`` (the backward counter stays 0 for backprop through
    the solver: autograd replays the stored graph without calling ``f``). ``seconds`` is the
    median wall time of forward + backward over ``repeats`` runs; the gradients are those of
    the last run.
    """
    inputs = list(inputs)
    times = []
    for _ in range(max(1, repeats)):
        stats = Stats()
        start = time.perf_counter()
        loss = loss_fn(stats)
        grads = torch.autograd.grad(loss, inputs)
        times.append(time.perf_counter() - start)
    return GradientCost(tuple(g.detach() for g in grads), float(loss.detach()), stats.forward.nfe,
                        stats.backward.nfe, statistics.median(times))


@torch.no_grad()
def reconstruction_error(func, z0, t, *, method="dopri5", rtol=1e-6, atol=1e-8, options=None,
                         restore_z=False) -> float:
    r"""Relative error of :math:`z(t_0)` rebuilt by solving backwards, as the adjoint does.

    The forward solve gives :math:`\hat z(t_i)`; solving :math:`\frac{dz}{dt} = f(z, t)`
    (``func(t, z)`` in code) from :math:`\hat z(t_{T-1})` back to :math:`t_0` gives
    :math:`\tilde z(t_0)`, and we return
    :math:`\lVert\tilde z(t_0) - z_0\rVert / \lVert z_0\rVert`. This is the z-channel of
    :func:`~neuralode_helpers.odeint_adjoint`'s backward solve, run on its own. On
    contracting dynamics it blows up: a perturbation that decays like :math:`e^{-kt}`
    forwards grows like :math:`e^{kt}` backwards, so the forward error in the tiny
    :math:`\hat z(t_{T-1})` returns multiplied by :math:`e^{k(t_{T-1} - t_0)}`.

    With ``restore_z=True`` the backward solve restarts from the forward state at every
    observation time (what ``odeint_adjoint(..., restore_z=True)`` does), so
    :math:`\tilde z(t_0)` comes from :math:`\hat z(t_1)` and the error is amplified over
    :math:`[t_0, t_1]` only.
    """
    ys = odeint(func, z0, t, method=method, rtol=rtol, atol=atol, options=options)
    start = 1 if restore_z else len(t) - 1
    back = odeint(func, ys[start], t[:start + 1].flip(0), method=method, rtol=rtol, atol=atol,
                  options=options)
    return relative_error(back[-1], z0)
