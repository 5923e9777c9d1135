"""The one exception type of our own: a solver that could not finish."""


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
    """

    def __init__(self, reason: str, *, t_reached: float, method: str):
        self.t_reached = float(t_reached)
        self.method = method
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
        super().__init__(
            f"{method}: {reason} (the solve reached t = {self.t_reached:.6g}). {hint}"
        )
