"""A bounded run of the gradient fuzzer (tests/fuzz_gradients.py; the long run is
``make fuzz``): a fixed seed, so the same examples every time, spread over every gradient
method and problem family. Zero failures allowed."""

import fuzz_gradients as fuzz
import torch

N_EXAMPLES = 196   # 4 per (gradient method, family) cell; 1-3 minutes on 2 cores


def test_every_cell_is_covered():
    assert len(fuzz.cells()) == len(fuzz.GRAD_METHODS) * len(fuzz.FAMILIES)
    assert N_EXAMPLES >= len(fuzz.cells())


def test_exact_reference_agrees_with_the_discrete_one_as_the_step_shrinks():
    # The two references the fuzzer trusts, checked against each other: rk4 on a fine grid
    # converges to the matrix exponential's z and gradients.
    case = fuzz.Case(grad="backprop", family="forced_sin", method="rk4", dtype="float64",
                     A=[[-0.5, 1.0], [-1.0, -0.3]], forcing="sin", theta=[0.8], omega=3.0,
                     b=[1.0, -0.5], z0=[0.3, -0.7], t=[0.5, 1.0, 2.5],
                     w=[[0.1, 0.2], [1.0, -0.4], [0.3, 0.9]], step_size=0.005, wrt_t=True)
    zs, grads = fuzz.exact_reference(case)
    zd, gd, n_steps, e_traj = fuzz.discrete_reference(case)
    assert n_steps == 400
    assert e_traj < 1e-9
    assert torch.allclose(zd, zs, rtol=1e-9, atol=1e-10)
    for a, b in zip(gd, grads):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-9)


def test_bounded_fuzz_run_finds_no_failure():
    results, _ = fuzz.run(N_EXAMPLES, seed=0, log=None)
    assert sum(r.tried for r in results) >= 0.9 * N_EXAMPLES
    failures = [f"{r.grad}/{r.family}: {r.failed} of {r.tried} failed; minimal example "
                f"{r.minimal!r}: {r.minimal_message}" for r in results if r.failed]
    assert not failures, "\n\n".join(failures)
