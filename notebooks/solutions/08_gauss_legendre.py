# Exercise 08 ★ (worked solution): Gauss–Legendre quadrature on [lo, hi].
#
# leggauss(n) gives n nodes x_k and weights w_k on [-1, 1]; the affine map
# t = (lo + hi)/2 + (hi - lo)/2 * x moves them to [lo, hi], and dt = (hi - lo)/2 dx scales the
# weights. With n nodes the rule is exact for polynomials up to degree 2n - 1: this is why the
# quadrature adjoint needs only ceil((order + 1)/2) nodes per step of an order-`order` method.
import numpy as np


def gauss_legendre(g, lo, hi, n):
    nodes, weights = np.polynomial.legendre.leggauss(n)
    mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    return half * sum(w * g(mid + half * x) for x, w in zip(nodes, weights))


def check_gauss_legendre(gauss_legendre):
    # the notebook's check, repeated here so that this file also runs on its own
    def poly(x):
        return 1 - 2 * x + 3 * x**5

    exact = (2.0 - 0.5) - (2.0**2 - 0.5**2) + (2.0**6 - 0.5**6) / 2
    assert abs(gauss_legendre(poly, 0.5, 2.0, 3) - exact) < 1e-12, "not exact for degree 5"
    assert abs(gauss_legendre(lambda x: x**6, 0.0, 1.0, 3) - 1 / 7) > 1e-6, "too many nodes?"
    assert abs(gauss_legendre(np.exp, 0.0, 1.0, 4) - (np.e - 1)) < 1e-8
    print("Well done")


check_gauss_legendre(gauss_legendre)
