# Exercise 0.2 ★★: one midpoint step for dz/dt = f(t, z), a second-order "residual block".
from neuralode_helpers.exercises import check_midpoint_step


def midpoint_step(f, t, z, h):
    # Euler's slope f(t, z) is only right at the start of the step. Use it to go half a step,
    # then take the slope there, at the middle of the step, for the whole step: the first-order
    # errors at both ends cancel, so the local error is O(h^3) and the global one O(h^2).
    z_mid = z + h / 2 * f(t, z)
    return z + h * f(t + h / 2, z_mid)


check_midpoint_step(midpoint_step)
