"""The one exception type of our own: a solver that could not finish."""


class SolverError(RuntimeError):
    """An ODE solve stopped before reaching the last requested time.

    Attributes
    ----------
    t_reached : float
        The last time the solver reached successfully.
    method : str
        The method that failed.
    """

    def __init__(self, reason: str, *, t_reached: float, method: str):
        self.t_reached = float(t_reached)
        self.method = method
        hint = (
            "Try a looser tolerance (larger rtol/atol), a stiff method such as "
            "method='scipy:BDF' or 'scipy:LSODA', a smaller learning rate if this "
            "happened during training, or a larger options['max_steps']."
        )
        super().__init__(
            f"{method}: {reason} (the solve reached t = {self.t_reached:.6g}). {hint}"
        )
