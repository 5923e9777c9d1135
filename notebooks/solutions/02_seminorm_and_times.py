# Exercise 2.3 ★★★ (worked answer): the seminorm by hand, and several observation times.
#
# 1. Why an atol of 1e30 on the a_theta channels is safe. In the backward system
#    [z, a, a_theta], the right-hand side of z and a never reads a_theta: a_theta is a running
#    integral, da_theta/dt = -a^T df/dtheta, of quantities that the other channels determine. An
#    error in a_theta therefore never feeds back into the solution; it only adds up, and the
#    step-size control of z and a (whose errors do feed back) already makes that quadrature
#    accurate. Error control on a_theta only makes the solver take steps that improve nothing.
#    scipy accepts atol as an array, one entry per component of the state: keep the usual
#    atol for the 2 D entries of z and a, and give the len(theta) entries of a_theta 1e30, so
#    their error estimates never reject a step or shrink the next one. That is the "seminorm"
#    of Kidger et al. (2021), which the package's odeint_adjoint uses by default.
#
#    What to look for: fewer evaluations in the backward solve (count them as in the notebook's
#    "Going further" section; the more parameters, the bigger the saving, since without the
#    seminorm the largest error ratio over all channels decides), and a gradient that is still
#    within 1e-6 of backprop.
#
# 2. Several observation times t0 < t1 < ... < tN. Going backwards, solve the augmented system
#    interval by interval, from tN down to t0:
#    - start with z(tN) from the forward solve, a = ell_N = (partial L / partial z_N)^T (the
#      direct partial: nothing comes after tN), a_theta = 0;
#    - on (t_{i-1}, t_i], solve backwards as before;
#    - at each t_i (i = N-1, ..., 1) add the direct partial ell_i = (partial L / partial z_i)^T
#      to a (the jump rule of notebook 01, section 5) and carry z and a_theta on unchanged;
#    - at t0, a is (dL/dz0)^T and a_theta is (dL/dtheta)^T, the totals.
#    For the forward pass, return z at every t_i (scipy's t_eval, or one solve per interval),
#    so that the loss can read all of them. Check: a loss that reads every z(t_i) with random
#    weights, differentiated through odeint_adjoint(model, z0, t) with the same t, must give
#    the same dL/dz0 and dL/dtheta to within the tolerances.
