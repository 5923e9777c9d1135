"""scipy's ODE solvers (``scipy.integrate.RK45``, ``LSODA``, ``BDF``, …) as black boxes.

The state goes to scipy as a float64 NumPy vector and every evaluation of f comes back
through torch, without a graph: only the adjoint method can differentiate these solves. We
drive scipy's solver one step at a time (as ``solve_ivp`` does inside), so that we know the
last accepted time when something fails and can stop early.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import SolverError


def _solver_class(name):
    import scipy.integrate  # imported here: only these methods need scipy

    return getattr(scipy.integrate, name)


class ScipySolver:
    """``integrate(y0, t, callback)`` like the torch solvers.

    ``head``: for the seminorm, only the first ``head`` entries of the flattened state enter
    scipy's error norm; the rest are pure quadratures (the adjoint's parameter channels):
    they never feed back into the dynamics, so their Jacobian columns are zero too.
    """

    def __init__(self, method, f, rtol, atol, options, stats, head=None):
        self.method = method
        self.cls = _solver_class(method.split(":", 1)[1])
        self.options = dict(options)
        # scipy has no step limit of its own; LSODA can loop for ever near a singularity.
        self.max_nfe = int(self.options.pop("max_nfe", 200_000))
        self.f, self.rtol, self.atol = f, rtol, atol
        self.stats = stats
        self.head = head
        self.t_accepted = None

    def _tolerances(self, numel):
        if self.head is None or self.head >= numel:
            return self.rtol, self.atol
        # scipy's norm is an RMS over all N entries. Entries outside the seminorm get an
        # absolute tolerance so large that their error is ~0; to keep the RMS over the
        # remaining `head` entries what it would be alone (independent of how many
        # parameters there are), scale both tolerances of those entries by sqrt(head / N).
        k = (self.head / numel) ** 0.5
        atol = np.full(numel, 1e30)
        atol[: self.head] = self.atol * k
        return self.rtol * k, atol

    def _extra_options(self, numel):
        name = self.method.split(":", 1)[1]
        if self.head is None or self.head >= numel or name not in ("BDF", "Radau"):
            return {}
        # Finite-difference Jacobians need one evaluation per group of columns that share
        # no row; the quadrature columns are zero, so they cost nothing.
        from scipy.sparse import csc_matrix

        pattern = np.zeros((numel, numel), dtype=bool)
        pattern[:, : self.head] = True
        return {"jac_sparsity": csc_matrix(pattern)}

    def integrate(self, y0, t, callback=None):
        shape, dtype, device = y0.shape, y0.dtype, y0.device
        tf = t.tolist()
        numel = y0.numel()
        rtol, atol = self._tolerances(numel)
        extra = self._extra_options(numel)

        def evaluate(tt, yy):
            if self.stats.nfe >= self.max_nfe:
                raise SolverError(f"gave up after max_nfe={self.max_nfe} evaluations",
                                  t_reached=self.t_accepted, method=self.method)
            if not np.isfinite(yy).all():
                raise SolverError("the state became non-finite (NaN or inf)",
                                  t_reached=self.t_accepted, method=self.method)
            z = torch.as_tensor(yy, device=device).to(dtype).view(shape)
            with torch.no_grad():
                dz = self.f(torch.tensor(tt, dtype=dtype, device=device), z)
            dz = dz.detach().to("cpu", torch.float64).numpy().ravel()
            if not np.isfinite(dz).all():
                raise SolverError("dz/dt became non-finite (NaN or inf)",
                                  t_reached=self.t_accepted, method=self.method)
            return dz

        def guarded(tt, yy):
            # Errors raised by func itself (or by our checks) pass through unchanged; only
            # scipy's own failures are turned into SolverError below.
            try:
                return evaluate(tt, yy)
            except Exception as err:
                err._from_func = True
                raise

        def to_torch(yy):
            return torch.as_tensor(yy, device=device).to(dtype).view(shape)

        def run(t_start, t_end, y_start, outputs):
            """Step from t_start to t_end; append the states at the times ``outputs``
            (within (t_start, t_end], in order) to ``results``."""
            self.t_accepted = t_start
            try:
                solver = self.cls(guarded, t_start, y_start, t_end, rtol=rtol, atol=atol,
                                  **extra, **self.options)
                direction = 1.0 if t_end > t_start else -1.0
                k = 0
                results = []
                while solver.status == "running":
                    message = solver.step()
                    if solver.status == "failed":
                        raise SolverError(f"scipy {self.cls.__name__} failed: {message}",
                                          t_reached=self.t_accepted, method=self.method)
                    self.stats.n_steps += 1
                    self.t_accepted = solver.t
                    if k < len(outputs) and direction * (outputs[k] - solver.t) <= 0:
                        dense = solver.dense_output()
                        while k < len(outputs) and direction * (outputs[k] - solver.t) <= 0:
                            results.append(solver.y.copy() if outputs[k] == solver.t
                                           else dense(outputs[k]))
                            k += 1
                return results
            except (ValueError, np.linalg.LinAlgError) as err:
                # e.g. an implicit method's LU factorisation of an overflowing Jacobian;
                # errors raised by func itself pass through unchanged.
                if getattr(err, "_from_func", False):
                    raise
                raise SolverError(f"scipy failed: {err}", t_reached=self.t_accepted,
                                  method=self.method) from err

        y = y0.detach().to("cpu", torch.float64).numpy().ravel()
        if callback is None:
            ys = run(tf[0], tf[-1], y, tf[1:])
            return torch.stack([y0] + [to_torch(v) for v in ys])
        out = [y0]
        y_t = y0
        for i in range(1, len(tf)):
            (y_end,) = run(tf[i - 1], tf[i], y_t.detach().to("cpu", torch.float64)
                           .numpy().ravel(), [tf[i]])
            y_t = to_torch(y_end)
            out.append(y_t)
            y_t = callback(i, y_t)
        return torch.stack(out)
