"""ODE solvers for dz/dt = f(t, z), one concept per module:

- ``tableaus``: the Butcher tableaus (data) of every Runge–Kutta method, by name;
- ``rk``: one explicit Runge–Kutta step, its error estimate and its dense output;
- ``controller``: the error norm and the step-size controller;
- ``fixed``, ``adaptive``: the integration loops (fixed grid; adaptive with dense output);
- ``scipy_bridge``: scipy's solvers as black boxes;
- ``checks``: input checks and tuple states; ``stats``: counters;
- ``odeint``: :func:`odeint`, a short composition of the above.

Every solver returns the states at every requested time, stacked along a new leading axis:
``(len(t), *z0.shape)``. The torch solvers are built from ordinary tensor operations, so
backprop through them works ("discretise then optimise"); scipy's are black boxes that only
the adjoint method can differentiate.
"""

from .checks import ADAPTIVE_METHODS, FIXED_STEP_METHODS, METHODS, SCIPY_METHODS
from .odeint import odeint, solve
from .stats import SolveStats, Stats
from .tableaus import TABLEAUS, ButcherTableau

__all__ = ["ADAPTIVE_METHODS", "FIXED_STEP_METHODS", "METHODS", "SCIPY_METHODS", "TABLEAUS",
           "ButcherTableau", "SolveStats", "Stats", "odeint", "solve"]
