"""Counters of the work a solve does."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SolveStats:
    """Work done by one solve: function evaluations (NFE), accepted and rejected steps."""

    nfe: int = 0
    n_steps: int = 0
    n_rejected: int = 0

    def reset(self) -> None:
        self.nfe = self.n_steps = self.n_rejected = 0


@dataclass
class Stats:
    """Counters for a forward solve and (for :func:`odeint_adjoint`) its backward solve.

    Pass an instance as ``stats=`` and read it after the call (forward) or after
    ``loss.backward()`` (backward). Each new solve overwrites its half.
    """

    forward: SolveStats = field(default_factory=SolveStats)
    backward: SolveStats = field(default_factory=SolveStats)
