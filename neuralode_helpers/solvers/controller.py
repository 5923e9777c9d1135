r"""Step-size control: how large is the error of a step, and how large should the next be.

The error of a step is measured relative to the tolerances, entry by entry,

.. math:: r = \Big\| \frac{\text{err}}{\text{atol} + \text{rtol}\,\max(|y_0|, |y_1|)} \Big\|,

with the root mean square as the norm. A step is accepted when :math:`r \le 1`. The next step
is :math:`h \cdot \text{safety} \cdot r^{-1/p}` for a method of order p (the error of the
embedded pair scales like :math:`h^p`), kept within ``[dfactor, ifactor]`` times h.
"""

from __future__ import annotations

import math

import torch


class ErrorNorm:
    """The error ratio r of a step (a Python float).

    ``segments``: sizes of consecutive parts of the flattened state (default: one part).
    The norm is the largest RMS over the first ``n_counted`` parts: a long part cannot
    dilute the error of a short one, and parts beyond ``n_counted`` are left out (the
    adjoint's seminorm). ``custom``: a callable of the scaled error (torchdiffeq's
    ``norm`` option) that replaces all of this.
    """

    def __init__(self, rtol, atol, segments=None, n_counted=None, custom=None):
        self.rtol, self.atol = rtol, atol
        self.segments = segments
        self.n_counted = n_counted if n_counted is not None else (
            len(segments) if segments else None)
        self.custom = custom

    def __call__(self, err, y0, y1=None):
        y1 = y0 if y1 is None else y1
        scaled = err / (self.atol + self.rtol * torch.maximum(y0.abs(), y1.abs()))
        if self.custom is not None:
            return float(self.custom(scaled))
        flat = scaled.reshape(-1)
        if flat.numel() == 0:
            return 0.0
        if not self.segments or len(self.segments) == 1:
            return flat.pow(2).mean().sqrt().item()
        parts = flat.split(list(self.segments))[: self.n_counted]
        return torch.stack([p.pow(2).mean().sqrt() for p in parts if p.numel()]).max().item()

    def lean(self, err, y0, y1, shape):
        """The same ratio as calling the norm, to round-off, in fewer tensor operations (the
        lean path of :class:`~.rk.LeanRK`, where each operation's dispatch is the cost).
        ``err``, ``y0`` and ``y1`` are flat (``shape``: the state's, for a custom norm);
        ``err`` is overwritten. Only the counted parts are looked at, and with
        err / (atol + rtol m) = (err / rtol) / (atol / rtol + m) the ratio is
        ‖err / (atol / rtol + m)‖₂ / (rtol √n): one norm per part, one ``.item()``."""
        if self.custom is not None or err.numel() == 0:
            return self(err.view(shape), y0.view(shape), y1.view(shape))
        sizes = list(self.segments)[: self.n_counted] if self.segments else [err.numel()]
        head = sum(sizes)
        if head < err.numel():
            y0, y1, err = y0[:head], y1[:head], err[:head]
        scale = torch.maximum(y0.abs(), y1.abs()).add_(self.atol / self.rtol)
        err.div_(scale)
        if len(sizes) == 1:
            return torch.linalg.vector_norm(err).item() / (self.rtol * math.sqrt(head))
        norms = torch.stack([torch.linalg.vector_norm(p) / math.sqrt(p.numel())
                             for p in err.split(sizes) if p.numel()])
        return norms.max().item() / self.rtol


class StepController:
    """Proposes the next step size from the current one and its error ratio."""

    def __init__(self, order, safety=0.9, ifactor=10.0, dfactor=0.2):
        self.exponent = -1.0 / order
        self.safety, self.ifactor, self.dfactor = float(safety), float(ifactor), float(dfactor)

    def next_step(self, h, ratio):
        """A rejected step (ratio > 1) never grows; an error of exactly 0 grows by ifactor."""
        if ratio == 0:
            return h * self.ifactor
        factor = min(self.ifactor, max(self.dfactor, self.safety * ratio ** self.exponent))
        return h * (min(1.0, factor) if ratio > 1 else factor)


def initial_step(f, t0, y0, f0, order, norm, span):
    """A first step whose error is about the tolerance (Hairer, Nørsett & Wanner, "Solving
    ODEs I", II.4), never longer than the interval ``span`` (t0's sign of direction is in
    ``span``'s sign)."""
    direction = math.copysign(1.0, span)
    span = abs(span)
    d0 = norm(y0, y0)
    d1 = norm(f0, y0)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    if not (math.isfinite(h0) and h0 > 0):  # |f0| so large that its norm overflowed
        h0 = 1e-6
    h0 = min(h0, span)
    f1 = f(t0 + direction * h0, y0 + (direction * h0) * f0)
    d2 = norm(f1 - f0, y0) / h0
    dmax = max(d1, d2)
    h1 = max(1e-6, h0 * 1e-3) if dmax <= 1e-15 else (0.01 / dmax) ** (1.0 / order)
    h = min(100 * h0, h1, span)
    return h if math.isfinite(h) and h > 0 else min(1e-6, span)
