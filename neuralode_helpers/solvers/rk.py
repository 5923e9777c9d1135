r"""One explicit Runge–Kutta step for any :class:`~.tableaus.ButcherTableau`, its error
estimate and its dense output.

``h`` may be a Python float or a 0-d tensor (a step that lands on a requested time is
``t_i - t``, so that backprop through the solver reaches ``t_i``).
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint

from .tableaus import ButcherTableau


def _combine(coeffs, ks):
    """Σ_j coeffs[j] k_j over the non-zero coefficients (None if all are zero)."""
    acc = None
    for c, k in zip(coeffs, ks):
        if c:
            acc = k * c if acc is None else torch.add(acc, k, alpha=c)
    return acc


def _axpy(y, h, acc):
    """y + h * acc, for a float or tensor h."""
    if acc is None:
        return y
    if isinstance(h, torch.Tensor):
        return y + h * acc
    return torch.add(y, acc, alpha=h)


def rk_step(f, tab: ButcherTableau, t, h, y, k1=None):
    """One step from (t, y) with step h; ``k1 = f(t, y)`` if given (FSAL or cached), else
    evaluated here.

    Returns ``(y1, ks)``: the new state and the list of stage derivatives k_1..k_s. For an
    FSAL method the last stage is evaluated at (t + h, y1), so ``ks[-1] = f(t + h, y1)``.
    """
    ks = [f(t, y) if k1 is None else k1]
    y1 = None
    for i in range(1, len(tab.c)):
        yi = _axpy(y, h, _combine(tab.a[i], ks))
        ks.append(f(t + tab.c[i] * h, yi))
        y1 = yi
    if not tab.fsal:
        y1 = _axpy(y, h, _combine(tab.b, ks))
    return y1, ks


def error_estimate(tab: ButcherTableau, h, ks):
    r"""The local error estimate :math:`h \sum_i e_i k_i` of an adaptive step."""
    acc = _combine(tab.e, ks)
    return torch.zeros_like(ks[0]) if acc is None else _axpy(torch.zeros_like(acc), h, acc)


def dense_output(tab: ButcherTableau, y, ks, h, theta):
    r""":math:`y(t + \theta h) \approx y + h \sum_i k_i \sum_m P_{im} \theta^{m+1}`, for
    θ in [0, 1] (``theta`` a float or 0-d tensor); ``P = tab.dense``, rows of any length
    (the degree of the interpolant)."""
    degree = max(len(row) for row in tab.dense)
    powers = [theta]
    for _ in range(degree - 1):
        powers.append(powers[-1] * theta)
    out = y
    for row, k in zip(tab.dense, ks):
        if any(row):
            w = sum(c * p for c, p in zip(row, powers) if c)
            out = out + (h * w) * k
    return out


def _step_from_start(f, tab, t, h, y):
    return rk_step(f, tab, t, h, y, None)


def checkpointed_rk_step(f, tab, t, h, y, k1=None):
    """:func:`rk_step` whose graph is not kept: backprop recomputes it from (t, h, y).

    Backprop through a solve built from these steps keeps only each step's inputs instead of
    every stage's activations, and gives the same gradient as plain backprop: the same
    operations are replayed (the idea of ACA, Zhuang et al. 2020). The price is a second
    evaluation of every stage during backward.

    The first stage is evaluated inside the checkpoint, so that its activations are not kept
    either, except for an FSAL method given ``k1``: that is the previous step's last stage, an
    output of the previous checkpoint that holds no activations, and it is kept as an input
    (one state per step). A ``k1`` given to a method that is not FSAL was evaluated outside,
    with a graph: it is not used (its graph is freed when the caller drops it), and its
    evaluation is repeated inside; pass ``k1=None`` to avoid that extra evaluation.
    """
    if k1 is None or not tab.fsal:
        return torch.utils.checkpoint.checkpoint(_step_from_start, f, tab, t, h, y,
                                                 use_reentrant=False)
    return torch.utils.checkpoint.checkpoint(rk_step, f, tab, t, h, y, k1, use_reentrant=False)
