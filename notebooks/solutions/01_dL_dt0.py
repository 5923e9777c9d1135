# Exercise 1.1 ★: dL/dt0 for dz/dt = lam z with L = z(t1).
import math

from neuralode_helpers.exercises import check_dL_dt0


def dL_dt0(lam, z0, t0, t1):
    # z(t1) = e^(lam (t1 - t0)) z0, so differentiating in t0 brings down -lam:
    #   dL/dt0 = -lam z0 e^(lam (t1 - t0)).
    # The adjoint route gives the same: a(t0) = dz(t1)/dz0 = e^(lam (t1 - t0)) and
    # f(z0) = lam z0, so -a(t0) f(z0) is the line below.
    a_t0 = math.exp(lam * (t1 - t0))
    return -a_t0 * lam * z0


check_dL_dt0(dL_dt0)
