"""The one exception type of our own: a solver that could not finish."""

from __future__ import annotations


class SolverError(RuntimeError, AssertionError):
    """An ODE solve stopped before reaching the last requested time.

    It is a :class:`RuntimeError` and also an :class:`AssertionError`: torchdiffeq reports
    the same failures ("max_num_steps exceeded", "underflow in dt") with ``assert``, and code
    written for it catches ``AssertionError``.

    Attributes
    ----------
    t_reached : float
        The last time the solver reached with an accepted step.
    method : str
        The method that failed.
    kind : str or None
        torchdiffeq's words for the same failure, ``"max_num_steps exceeded"`` or
        ``"underflow in dt"``; the message then starts with them, as torchdiffeq's does (code
        written for it sorts failures by ``str(error).startswith(...)``).
    """

    KINDS = ("max_num_steps exceeded", "underflow in dt")

    def __init__(self, reason: str, *, t_reached: float, method: str, kind: str | None = None):
        if kind is not None and kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS} or None, got {kind!r}")
        self.t_reached = float(t_reached)
        self.method = method
        self.kind = kind
        # Imported here, not at the top: the solvers import this module.
        from .solvers.checks import FIXED_STEP_METHODS

        if method.startswith("scipy:"):
            limit = "a larger options['max_nfe']"
        elif method in FIXED_STEP_METHODS:
            limit = "a smaller options['step_size']"
        else:
            limit = "a larger options['max_num_steps']"
        hint = (
            "Try a looser tolerance (larger rtol/atol), a stiff method such as "
            "method='scipy:BDF' or 'scipy:LSODA', a smaller learning rate if this "
            f"happened during training, or {limit}."
        )
        lead = f"{kind}: " if kind else ""
        super().__init__(
            f"{lead}{method}: {reason} (the solve reached t = {self.t_reached:.6g}). {hint}"
        )

    def reword(self, before: str) -> None:
        """Put ``before`` in front of the message, after torchdiffeq's words if any (the
        adjoint says that the failure was in its backward solve)."""
        text = self.args[0]
        lead = f"{self.kind}: " if self.kind else ""
        if lead and text.startswith(lead):
            text = text[len(lead):]
        self.args = (f"{lead}{before}{text}", *self.args[1:])
