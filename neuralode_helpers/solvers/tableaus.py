r"""Butcher tableaus: the data that defines each explicit Runge–Kutta method.

One step of an s-stage explicit method from :math:`(t, y)` with step :math:`h`:

.. math::
    k_i = f\Big(t + c_i h,\; y + h \sum_{j<i} a_{ij} k_j\Big), \qquad
    y_1 = y + h \sum_i b_i k_i .

An adaptive method also carries the weights :math:`e_i = b_i - \hat b_i` of an embedded
lower-order solution, so that :math:`h \sum_i e_i k_i` estimates the local error of the step
(the step-size controller reads it), and a dense output: polynomials
:math:`b_i(\theta) = \sum_m P_{im} \theta^{m+1}` with
:math:`y(t + \theta h) \approx y + h \sum_i b_i(\theta) k_i` for :math:`\theta \in [0, 1]`.

Adding a method means adding a table to :data:`TABLEAUS`; the stepper, controller and dense
output are shared.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge–Kutta method.

    ``c``: (s,) nodes; ``a``: s rows, row i holding a_ij for j < i; ``b``: (s,) solution
    weights; ``order``: the order of y_1. Adaptive methods add ``e`` (s,) = b - b_hat and
    ``dense`` (s rows of 4 coefficients of θ, θ², θ³, θ⁴). ``fsal``: the last stage is
    f(t + h, y_1), so it is the next step's first stage ("first same as last").
    """

    name: str
    order: int
    c: tuple
    a: tuple
    b: tuple
    e: tuple | None = None
    dense: tuple | None = None
    fsal: bool = False

    @property
    def adaptive(self) -> bool:
        return self.e is not None


def _hermite_dense(b: tuple) -> tuple:
    """Cubic Hermite dense output for an FSAL method: it matches y, f at both ends of the
    step (3rd-order accurate between them). In stage form, with H01 = 3θ² - 2θ³,
    H10 = θ - 2θ² + θ³ and H11 = θ³ - θ²:
    y(θ) = y + h [H01 Σ b_i k_i + H10 k_1 + H11 k_s] (k_s = f(t + h, y_1) by FSAL)."""
    s = len(b)
    rows = []
    for i, bi in enumerate(b):
        row = [0.0, 3.0 * bi, -2.0 * bi, 0.0]
        if i == 0:
            row = [row[0] + 1.0, row[1] - 2.0, row[2] + 1.0, 0.0]
        if i == s - 1:
            row = [row[0], row[1] - 1.0, row[2] + 1.0, 0.0]
        rows.append(tuple(row))
    return tuple(rows)


def _minus(b: tuple, b_hat: tuple) -> tuple:
    return tuple(x - y for x, y in zip(b, b_hat))


# ---- fixed-step methods ---------------------------------------------------------------------

EULER = ButcherTableau("euler", 1, c=(0.0,), a=((),), b=(1.0,))

MIDPOINT = ButcherTableau("midpoint", 2, c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0))

RK4 = ButcherTableau(
    "rk4", 4,
    c=(0.0, 0.5, 0.5, 1.0),
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
)

# ---- adaptive methods -----------------------------------------------------------------------

# Heun's method (order 2) with Euler embedded (order 1); the third stage is f(t + h, y_1).
_HEUN_B = (0.5, 0.5, 0.0)
ADAPTIVE_HEUN = ButcherTableau(
    "adaptive_heun", 2,
    c=(0.0, 1.0, 1.0),
    a=((), (1.0,), (0.5, 0.5)),
    b=_HEUN_B,
    e=_minus(_HEUN_B, (1.0, 0.0, 0.0)),
    dense=_hermite_dense(_HEUN_B),
    fsal=True,
)

# Bogacki & Shampine (1989): order 3 with an embedded order-2 solution.
_BS_B = (2 / 9, 1 / 3, 4 / 9, 0.0)
BOSH3 = ButcherTableau(
    "bosh3", 3,
    c=(0.0, 0.5, 0.75, 1.0),
    a=((), (0.5,), (0.0, 0.75), (2 / 9, 1 / 3, 4 / 9)),
    b=_BS_B,
    e=_minus(_BS_B, (7 / 24, 1 / 4, 1 / 3, 1 / 8)),
    dense=_hermite_dense(_BS_B),
    fsal=True,
)

# Dormand & Prince (1980): order 5 with an embedded order-4 solution; the dense output is
# Shampine's 4th-order continuous extension (the one scipy's RK45 uses).
_DP_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
DOPRI5 = ButcherTableau(
    "dopri5", 5,
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        _DP_B[:6],
    ),
    b=_DP_B,
    e=(71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40),
    dense=(
        (1.0, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432),
        (0.0, 0.0, 0.0, 0.0),
        (0.0, 131558114200 / 32700410799, -68118460800 / 10900136933,
         87487479700 / 32700410799),
        (0.0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072),
        (0.0, 127303824393 / 49829197408, -318862633887 / 49829197408,
         701980252875 / 199316789632),
        (0.0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844),
        (0.0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423),
    ),
    fsal=True,
)

# Tsitouras (2011): order 5(4), coefficients optimised without the usual simplifying
# assumptions; the published 4th-order dense output.
_TS_B = (0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742,
         -3.290069515436081, 2.324710524099774, 0.0)
TSIT5 = ButcherTableau(
    "tsit5", 5,
    c=(0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0),
    a=(
        (),
        (0.161,),
        (-0.008480655492356989, 0.335480655492357),
        (2.8971530571054935, -6.359448489975075, 4.3622954328695815),
        (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
        (5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401,
         -0.028269050394068383),
        _TS_B[:6],
    ),
    b=_TS_B,
    e=_minus(_TS_B, (0.09824077787029123, 0.010816434459657, 0.4720087724042376,
                     1.5237195812770048, -3.872426680888636, 2.7827926300289607,
                     -1 / 66)),
    dense=(
        (1.0, -2.763706197274826, 2.9132554618219126, -1.0530884977290216),
        (0.0, 0.13169999999999998, -0.2234, 0.1017),
        (0.0, 3.9302962368947516, -5.941033872131505, 2.490627285651253),
        (0.0, -12.411077166933676, 30.33818863028232, -16.548102889244902),
        (0.0, 37.50931341651104, -88.1789048947664, 47.37952196281928),
        (0.0, -27.896526289197286, 65.09189467479366, -34.87065786149661),
        (0.0, 1.5, -4.0, 2.5),
    ),
    fsal=True,
)

#: Every Runge–Kutta method by name (torchdiffeq's names).
TABLEAUS = {tab.name: tab for tab in (EULER, MIDPOINT, RK4, ADAPTIVE_HEUN, BOSH3, DOPRI5, TSIT5)}
