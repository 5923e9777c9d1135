r"""One explicit Runge–Kutta step for any :class:`~.tableaus.ButcherTableau`, its error
estimate and its dense output.

``h`` may be a Python float or a 0-d tensor (a step that lands on a requested time is
``t_i - t``, so that backprop through the solver reaches ``t_i``).

These functions are the reference. Where no graph is being built, the integration loops
take the same steps through :class:`LeanRK` (end of this module), which computes the same
sums in fewer tensor operations.
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
    return torch.zeros_like(ks[0]) if acc is None else h * acc


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


# ---- The lean path --------------------------------------------------------------------------
# Where no graph is being built (the adjoint's forward and backward solves, a solve under
# torch.no_grad()), a step on a small state costs the number of tensor operations, each a few
# µs to dispatch, far more than their arithmetic. The functions above spend one operation per
# non-zero coefficient (26 adds per dopri5 step); LeanRK keeps the stages, flattened, as the
# rows of one (s, n) buffer K and forms each y + h Σ_j a_ij k_j as one matrix-vector product
# (torch.addmv). The values are the same to round-off (the sums are taken in another order),
# not bit for bit: backprop through the solver (grad enabled) keeps the readable path.

LEAN = True  # False: every solve takes the readable path (for tests and benchmarks)


def lean_applies(step) -> bool:
    """Whether a solve with this ``step`` function may take the lean path now: the plain
    :func:`rk_step`, with no graph being built and the lean path switched on."""
    return LEAN and step is rk_step and not torch.is_grad_enabled()


class LeanRK:
    """:func:`rk_step`, :func:`error_estimate` and :func:`dense_output` of one tableau, with
    fewer tensor operations (see the comment above). ``step`` returns ``(y1, ks)`` as
    :func:`rk_step` does, ``ks`` being the very tensors that f returned; ``error()``,
    ``dense(y, theta)`` and the flat ``y0``, ``y1`` refer to the last step taken.

    A row of coefficients with a single non-zero entry is one ``torch.add``; a row with more
    is one ``addmv`` on the stages in K. Only the stages that such rows read are copied into
    K; the others stay zero there (a stale non-finite stage times 0 would give NaN). Every
    view of K is made once, when the buffer is.
    """

    def __init__(self, tab: ButcherTableau):
        self.tab = tab
        s = len(tab.c)
        a = [list(row) + [0.0] * (s - len(row)) for row in tab.a]
        b = None if tab.fsal else list(tab.b)
        e = None if tab.e is None or not any(tab.e) else list(tab.e)
        self._rows = [_row_plan(row[:i]) for i, row in enumerate(a)]
        self._b = _row_plan(b) if b is not None else None
        # Rows read as a product with K: the a and b rows with several entries, always e
        # and the dense output.
        matrix_rows = [row for row in a + [b] if row is not None and _row_plan(row)[0] == "mv"]
        if e is not None:
            matrix_rows.append(e)
        if tab.dense is not None:
            matrix_rows.append([1.0 if any(r) else 0.0 for r in tab.dense])
        self._copied = [any(row[j] for row in matrix_rows) for j in range(s)]
        self._coef_lists = {"a": a, "b": b, "e": e}
        self._key = None

    def _setup(self, y, t):
        key = (y.dtype, y.device, y.shape, t.dtype, t.device)
        if key == self._key:
            return
        self._key = key
        s, n = len(self.tab.c), y.numel()
        kw = dict(dtype=y.dtype, device=y.device)
        self.K = torch.zeros(s, n, **kw)
        self._Kt = [self.K[:i].t() for i in range(s + 1)]  # (n, i): the stages before i
        self._K_rows = [row.view(y.shape) for row in self.K]  # stage i, in the state's shape
        a = self._coef_lists["a"]
        self._a = [torch.tensor(row[:i], **kw) if i else None for i, row in enumerate(a)]
        b, e = self._coef_lists["b"], self._coef_lists["e"]
        self._b_t = torch.tensor(b, **kw) if b is not None else None
        self._e_t = torch.tensor(e, **kw) if e is not None else None
        self._err = torch.empty(n, **kw)
        self._c = torch.tensor(self.tab.c, dtype=t.dtype, device=t.device)
        self._flat_state = y.dim() == 1

    def _keep(self, i, k):
        if self._copied[i]:
            row = self._K_rows[i]
            row.copy_(k if k.shape == row.shape else k.reshape(row.shape))

    def _combine(self, y, h, i, plan, coef):
        """y + h Σ_{j<i} coef_j k_j on the flattened state (i: how many stages are read)."""
        kind, j, c = plan
        if kind == "none":
            return y
        if kind == "one":
            k = self._ks[j]
            return torch.add(y, k if self._flat_state else k.reshape(-1), alpha=h * c)
        return torch.addmv(y, self._Kt[i], coef, alpha=h)

    def step(self, f, t, h, y, k1=None):
        self._setup(y, t)
        h = float(h)  # a landing step's 0-d tensor: no graph is kept here
        self.h = h
        shape = y.shape
        flat = y if self._flat_state else y.reshape(-1)
        ks = self._ks = [f(t, y) if k1 is None else k1]
        self._keep(0, ks[0])
        yi = flat
        s = len(self.tab.c)
        # The stage times t + c_i h in one operation.
        times = torch.add(t, self._c, alpha=h).unbind() if s > 1 else ()
        for i in range(1, s):
            yi = self._combine(flat, h, i, self._rows[i], self._a[i])
            k = f(times[i], yi if self._flat_state else yi.view(shape))
            ks.append(k)
            self._keep(i, k)
        if self._b is not None:
            yi = self._combine(flat, h, s, self._b, self._b_t)
        self.y0, self.y1 = flat, yi
        return (yi if self._flat_state else yi.view(shape)), ks

    def error(self):
        """h Σ_i e_i k_i of the last step, flattened, in a buffer (overwritten by the next
        call; the error norm may scale it in place)."""
        if self._e_t is None:
            return self._err.zero_()
        return torch.addmv(self._err, self._Kt[-1], self._e_t, beta=0, alpha=self.h,
                           out=self._err)

    def dense(self, y, theta: float):
        """:func:`dense_output` of the last step at θ (a float)."""
        powers = [theta ** (m + 1) for m in range(max(len(r) for r in self.tab.dense))]
        w = [sum(c * p for c, p in zip(row, powers)) for row in self.tab.dense]
        w = torch.tensor(w, dtype=y.dtype, device=y.device)
        return torch.addmv(y.reshape(-1), self._Kt[-1], w, alpha=self.h).view(y.shape)


def _row_plan(row):
    """How to combine the stages with these coefficients: ``("none",)``, one stage
    ``("one", j, c)``, or a matrix-vector product ``("mv",)`` (padded to 3 entries)."""
    nz = [(j, c) for j, c in enumerate(row) if c]
    if not nz:
        return ("none", None, None)
    if len(nz) == 1:
        return ("one", *nz[0])
    return ("mv", None, None)
