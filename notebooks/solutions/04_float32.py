# Exercise 4.3 ★★★ (worked answer): the tolerance sweep in float32.
#
# float32 carries about 7 significant digits: its machine epsilon is 2^-23, about 1.2e-7. A
# solver cannot control its local error below the rounding error of the arithmetic it does:
# once rtol approaches a few times epsilon, the embedded error estimate (the difference of two
# nearly equal 5th- and 4th-order results) is mostly rounding noise. Tightening rtol further
# then only makes steps smaller and more numerous, and each step adds its own rounding error,
# so the total error stops falling and can even grow with the number of steps.
#
# What to expect: the gradient error follows the float64 sweep while rtol is well above
# epsilon, then levels off a little above epsilon (how far above depends on how much the
# problem amplifies errors: the spiral's adjoint does), while the NFE keeps rising. Below that
# floor, ask for float64, not for a tighter tolerance.
