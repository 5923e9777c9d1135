r"""Butcher tableaus: the data that defines each explicit Runge–Kutta method.

One step of an s-stage explicit method from :math:`(t, y)` with step :math:`h`:

.. math::
    k_i = f\Big(t + c_i h,\; y + h \sum_{j<i} a_{ij} k_j\Big), \qquad
    y_1 = y + h \sum_i b_i k_i .

An adaptive method also carries the weights :math:`e_i = b_i - \hat b_i` of an embedded
lower-order solution (a higher-order one for fehlberg2, see there), so that
:math:`h \sum_i e_i k_i` estimates the local error of the step (the step-size controller
reads it), and a dense output: polynomials
:math:`b_i(\theta) = \sum_m P_{im} \theta^{m+1}` with
:math:`y(t + \theta h) \approx y + h \sum_i b_i(\theta) k_i` for :math:`\theta \in [0, 1]`.

Adding a method means adding a table to :data:`TABLEAUS`; the stepper, controller, dense
output and the method name lists (:data:`~.checks.FIXED_STEP_METHODS`,
:data:`~.checks.ADAPTIVE_METHODS`) are derived from it.

Every adaptive method here is FSAL: its last stage is :math:`f(t + h, y_1)`, the next step's
first stage. A published pair whose last stage is not that (Fehlberg 2(1), Dormand–Prince
8(7)) gets it appended as an extra stage with weight 0: the cost per accepted step is the
same (one evaluation saved at the start of every step, one added at its end), and the
derivative at the end of the step gives the cubic Hermite dense output.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge–Kutta method.

    ``c``: (s,) nodes; ``a``: s rows, row i holding a_ij for j < i; ``b``: (s,) solution
    weights; ``order``: the order of y_1. Adaptive methods add ``e`` (s,) = b - b_hat and
    ``dense`` (s rows of the coefficients of θ, θ², …: 4 of them, 5 for dopri8). ``fsal``:
    the last stage is f(t + h, y_1), so it is the next step's first stage ("first same as
    last"); checked when the tableau is built. ``land_on_outputs``: the dense output is
    much less accurate than the steps (dopri8), so the adaptive solver ends a step exactly on
    every output time rather than read the outputs between steps from it (see
    :func:`~.adaptive.integrate_adaptive`); the dense output then serves only what needs
    y(t) anywhere in a step (the interpolated and quadrature adjoints' trajectory).
    """

    name: str
    order: int
    c: tuple
    a: tuple
    b: tuple
    e: tuple | None = None
    dense: tuple | None = None
    fsal: bool = False
    land_on_outputs: bool = False

    def __post_init__(self):
        s = len(self.c)
        if len(self.a) != s or len(self.b) != s or any(len(r) != i for i, r in enumerate(self.a)):
            raise ValueError(f"{self.name}: c, a and b must describe {s} stages (row i of a "
                             "holding i entries)")
        if (self.e is not None and len(self.e) != s) or (self.dense is not None
                                                          and len(self.dense) != s):
            raise ValueError(f"{self.name}: e and dense must have one entry per stage ({s})")
        if self.fsal and (self.c[-1] != 1.0 or tuple(self.a[-1]) != tuple(self.b[:-1])
                          or self.b[-1] != 0.0):
            # The stepper takes the last stage's argument as y_1 and hands the last stage to
            # the next step as f(t + h, y_1): wrong unless the last row is b, at c = 1.
            raise ValueError(f"{self.name}: fsal=True needs c[-1] == 1, the last row of a "
                             "equal to b[:-1] and b[-1] == 0 (the last stage is "
                             "f(t + h, y_1))")


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

# Heun's method (Heun 1900; the trapezoidal rule with an Euler predictor), order 2.
HEUN2 = ButcherTableau("heun2", 2, c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5))

# Heun's third-order method (Heun 1900): nodes 0, 1/3, 2/3; b_2 = 0.
HEUN3 = ButcherTableau(
    "heun3", 3,
    c=(0.0, 1 / 3, 2 / 3),
    a=((), (1 / 3,), (0.0, 2 / 3)),
    b=(0.25, 0.0, 0.75),
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

# Fehlberg (1969, NASA TR R-315), RKF 1(2): stages at c = 0, 1/2, 1, the third at the
# 1st-order solution y + h (k1/256 + 255 k2/256); the 2nd-order weights (1/512, 255/256,
# 1/512) are propagated (local extrapolation, as torchdiffeq does). f(t + h, y_1) is appended
# as a fourth stage (FSAL): three evaluations per step, as torchdiffeq's.
#
# The error estimate is NOT Fehlberg's (nor torchdiffeq's). His h (k3 - k1) / 512 is the
# difference of the two published solutions: an estimate for the 1st-order one (the one
# Fehlberg propagated), and of its h² term only. That formula was built to make the h² error
# constant tiny (1/512 against Euler's 1/2), so its h³ term (~h³ y'''/6) dominates as soon as
# |h λ| > 0.012 and the estimate misses the error of either solution by ~85 |h λ|. On
# dz/dt = λ z it is (x² + 255 x³/512) / 512 times z (x = h λ): ~0 near x = -2, just where
# both solutions stop decaying, so steps outside the stability region pass. dz/dt = -56.8 z
# on [0, 1] at rtol 1e-2, atol 1e-6 gave z(1) = 1.8e9, exact 2e-25 (torchdiffeq's fehlberg2:
# 2.2e9; propagating the 1st-order solution, as Fehlberg did: 7.9e9); dz/dt = cos(t) z gave
# errors of 230 rtol at rtol 1e-3 (torchdiffeq's: 316).
#
# Here the propagated 2nd-order solution is compared with the 3rd-order solution of the same
# four stages, weights (1/6, 2/3, -128/3, 257/6): Simpson's rule on k1, k2, k4 plus
# 128/3 (k4 - k3), which supplies the h³ term that the Euler half-step inside k2 misses. So
# the estimate is the propagated solution's own leading (h³) error. Measured: that decay now
# ends at z(1) ~ atol at every rtol from 1e-1 to 1e-6 (and so for λ = -500, -5000), cos(t) z
# within 3-25 rtol at rtol 1e-3..1e-7 (before: 36-230 rtol), in 0.9-3.4 times the
# evaluations (an Euler comparison, estimate ~h² y''/2, was as safe but took 6-15 times
# more, for errors far below the tolerance). Prices: the weights ~43 amplify
# round-off in the estimate ~85 times (a floor of ~5e-6 |h λ| relative in float32); and the
# comparison is one order higher, not lower, while the controller keeps the exponent
# 1/order = 1/2 (it settles all the same: 2-20 rejected steps in those solves).
#: The 3rd-order solution of fehlberg2's four stages (its error estimate compares with it).
FEHLBERG2_ORDER3_WEIGHTS = (1 / 6, 2 / 3, -128 / 3, 257 / 6)
_FE_B = (1 / 512, 255 / 256, 1 / 512, 0.0)
FEHLBERG2 = ButcherTableau(
    "fehlberg2", 2,
    c=(0.0, 0.5, 1.0, 1.0),
    a=((), (0.5,), (1 / 256, 255 / 256), _FE_B[:3]),
    b=_FE_B,
    e=_minus(_FE_B, FEHLBERG2_ORDER3_WEIGHTS),
    dense=_hermite_dense(_FE_B),
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

# Prince & Dormand (1981), "High order embedded Runge–Kutta formulae", J. Comput. Appl. Math.
# 7(1), RK8(7)13M: order 8 with an embedded order-7 solution, 13 stages; the coefficients are
# the paper's rationals. Its 13th stage is not f(t + h, y_1), so that is appended as a 14th
# stage (FSAL): 13 evaluations per step, as without it.
#
# Dense output (ours, not published): the quintic weights b_i(θ) that satisfy the order
# conditions of every rooted tree up to order 5 at every θ (Σ_i b_i(θ) Φ_i(τ) = θ^|τ| / γ(τ)),
# with b_i(1) = b_i and b_i'(0), b_i'(1) picking k_1 and k_14 (so the interpolant is C¹ across
# steps); b_i(θ) = 0 for stages 2-5, whose solution weights are 0. Among the solutions, the
# one of least norm (an SVD, 40 digits, singular values below 1e-12 of the largest dropped).
# Order 5: local error O(h⁶), against O(h⁴) for the cubic Hermite interpolant, which left
# outputs between steps ~1e-5 wrong at tolerances of 1e-10.
#
# Still far too low for an 8th-order method's long steps: at rtol 1e-8 (dz/dt = A z, outputs
# at 0.23, 0.61, ...) odeint's outputs between steps were 17.5 rtol off (dopri5's: 0.27;
# torchdiffeq's dopri8, a quartic through a mid-step value: 286), and the interpolated and
# quadrature adjoints, which read z(t) between steps, gave dL/dA 13 and 25 rtol off. The
# published 7th-order dense output of Dormand–Prince 8(5,3) (DOP853, 3 extra stages) fits
# only DOP853's own stages, not these; none is published for RK8(7)13M. So (land_on_outputs)
# odeint ends a step exactly on every output time instead: outputs carry the steps' own
# error (0.03 rtol there), at the price of a shortened step per output inside a step: cheap
# for a few outputs (7 outputs over [0, 4]: 171 evaluations, against 119 for 2), costly on a
# fine grid (401: 5202; dopri5 takes 278 at any count), where sampling the steps that hold
# outputs, as the trajectory below does, would cost ~39 per step instead. The
# adjoints' trajectory, which needs z(t) anywhere, samples each step at θ = 1/3, 2/3 by two
# sub-steps of this method and reads a degree-7 Hermite interpolant (26 more evaluations per
# forward step; dL/dA 0.02 and 0.05 rtol off): see :mod:`~.trajectory`. This quintic stays
# for what has no field to sample with (Trajectory without use_field, the explorers).
_DP8_B = (14005451 / 335480064, 0.0, 0.0, 0.0, 0.0, -59238493 / 1068277825,
          181606767 / 758867731, 561292985 / 797845732, -1041891430 / 1371343529,
          760417239 / 1151165299, 118820643 / 751138087, -528747749 / 2220607170, 1 / 4, 0.0)
_DP8_B_HAT = (13451932 / 455176623, 0.0, 0.0, 0.0, 0.0, -808719846 / 976000145,
              1757004468 / 5645159321, 656045339 / 265891186, -3867574721 / 1518517206,
              465885868 / 322736535, 53011238 / 667516719, 2 / 45, 0.0, 0.0)
DOPRI8 = ButcherTableau(
    "dopri8", 8,
    c=(0.0, 1 / 18, 1 / 12, 1 / 8, 5 / 16, 3 / 8, 59 / 400, 93 / 200,
       5490023248 / 9719169821, 13 / 20, 1201146811 / 1299019798, 1.0, 1.0, 1.0),
    a=(
        (),
        (1 / 18,),
        (1 / 48, 1 / 16),
        (1 / 32, 0.0, 3 / 32),
        (5 / 16, 0.0, -75 / 64, 75 / 64),
        (3 / 80, 0.0, 0.0, 3 / 16, 3 / 20),
        (29443841 / 614563906, 0.0, 0.0, 77736538 / 692538347, -28693883 / 1125000000,
         23124283 / 1800000000),
        (16016141 / 946692911, 0.0, 0.0, 61564180 / 158732637, 22789713 / 633445777,
         545815736 / 2771057229, -180193667 / 1043307555),
        (39632708 / 573591083, 0.0, 0.0, -433636366 / 683701615, -421739975 / 2616292301,
         100302831 / 723423059, 790204164 / 839813087, 800635310 / 3783071287),
        (246121993 / 1340847787, 0.0, 0.0, -37695042795 / 15268766246,
         -309121744 / 1061227803, -12992083 / 490766935, 6005943493 / 2108947869,
         393006217 / 1396673457, 123872331 / 1001029789),
        (-1028468189 / 846180014, 0.0, 0.0, 8478235783 / 508512852, 1311729495 / 1432422823,
         -10304129995 / 1701304382, -48777925059 / 3047939560, 15336726248 / 1032824649,
         -45442868181 / 3398467696, 3065993473 / 597172653),
        (185892177 / 718116043, 0.0, 0.0, -3185094517 / 667107341, -477755414 / 1098053517,
         -703635378 / 230739211, 5731566787 / 1027545527, 5232866602 / 850066563,
         -4093664535 / 808688257, 3962137247 / 1805957418, 65686358 / 487910083),
        (403863854 / 491063109, 0.0, 0.0, -5068492393 / 434740067, -411421997 / 543043805,
         652783627 / 914296604, 11173962825 / 925320556, -13158990841 / 6184727034,
         3936647629 / 1978049680, -160528059 / 685178525, 248638103 / 1413531060, 0.0),
        _DP8_B[:13],
    ),
    b=_DP8_B,
    e=_minus(_DP8_B, _DP8_B_HAT),
    dense=(
        (1.0, -5.092259337050233, 10.635056750650767, -9.784598034443183, 3.28354811198418),
        (0.0, 0.0, 0.0, 0.0, 0.0),
        (0.0, 0.0, 0.0, 0.0, 0.0),
        (0.0, 0.0, 0.0, 0.0, 0.0),
        (0.0, 0.0, 0.0, 0.0, 0.0),
        (0.0, 1.125805268866587, -0.8761068244097207, -1.9024638008365153, 1.59731302776841),
        (0.0, 5.7110493349531435, -17.34732387804824, 18.75806378724295, -6.882476436946674),
        (0.0, 0.01814460213173058, 5.617118039084467, -7.77111653754691, 2.839364565734156),
        (0.0, -2.6828943358894564, 5.157662200998524, -6.065439463400982, 2.830911984477454),
        (0.0, -0.08992468244561141, 1.089914217115533, 1.3927607677172003, -1.7321872714648354),
        (0.0, 2.775915125549211, -12.340796165830783, 17.14478436756455, -7.421715844772854),
        (0.0, -0.8033069256242725, 2.5762480713120186, -3.9331230595155344, 1.9220723750749251),
        (0.0, -0.16876452524554783, 2.869113794563713, -3.981934013390783, 1.5315847440726176),
        (0.0, -0.7937645252455509, 2.619113794563722, -3.856934013390792, 2.0315847440726205),
    ),
    fsal=True,
    land_on_outputs=True,
)

#: Every Runge–Kutta method by name (torchdiffeq's names). Fixed-step methods are those
#: without error weights ``e``; the order here is the order of the name lists.
TABLEAUS = {tab.name: tab for tab in (EULER, MIDPOINT, HEUN2, HEUN3, RK4, ADAPTIVE_HEUN,
                                      FEHLBERG2, BOSH3, DOPRI5, TSIT5, DOPRI8)}
