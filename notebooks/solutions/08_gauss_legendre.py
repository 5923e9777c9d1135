# Exercise 8.1 ★ (worked solution): Gauss–Legendre quadrature on [lo, hi].
#
# leggauss(n) gives n nodes x_k and weights w_k on [-1, 1]; the affine map
# t = (lo + hi)/2 + (hi - lo)/2 * x moves them to [lo, hi], and dt = (hi - lo)/2 dx scales the
# weights. With n nodes the rule is exact for polynomials up to degree 2n - 1: this is why the
# quadrature adjoint needs only ceil((order + 1)/2) nodes per step of an order-`order` method.
import numpy as np

from neuralode_helpers.exercises import check_gauss_legendre


def gauss_legendre(g, lo, hi, n):
    nodes, weights = np.polynomial.legendre.leggauss(n)
    mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    return half * sum(w * g(mid + half * x) for x, w in zip(nodes, weights))


check_gauss_legendre(gauss_legendre)
