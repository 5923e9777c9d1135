"""Every bad input raises a clear, documented error; a failing solve raises SolverError."""

import numpy as np
import pytest
import torch

import neuralode_helpers as nh

F64 = torch.float64
f = lambda t, z: -z  # noqa: E731
Z0 = torch.ones(3, dtype=F64)
T = torch.tensor([0.0, 1.0], dtype=F64)
SOLVERS = [nh.odeint, nh.odeint_adjoint]


@pytest.fixture(params=SOLVERS, ids=["odeint", "odeint_adjoint"])
def solver(request):
    return request.param


@pytest.mark.parametrize("t,match", [
    (torch.tensor(1.0, dtype=F64), "t must be 1-D"),
    (torch.ones(2, 2, dtype=F64), "t must be 1-D"),
    (torch.zeros(0, dtype=F64), "at least 1"),
    (torch.tensor([0.0, 1.0, 1.0], dtype=F64), "strictly increasing or strictly decreasing"),
    (torch.tensor([0.0, 1.0, 0.5], dtype=F64), "strictly increasing or strictly decreasing"),
    (torch.tensor([0.0, float("nan")], dtype=F64), "t must be finite"),
])
def test_bad_times(solver, t, match):
    with pytest.raises(ValueError, match=match):
        solver(f, Z0, t)


def test_integer_inputs(solver):
    with pytest.raises(TypeError, match="z0 must be floating point"):
        solver(f, torch.ones(3, dtype=torch.int64), T)
    with pytest.raises(TypeError, match="t must be floating point"):
        solver(f, Z0, torch.tensor([0, 1]))


def test_not_tensors(solver):
    with pytest.raises(TypeError, match="z0 must be a torch.Tensor"):
        solver(f, np.ones(3), T)
    with pytest.raises(TypeError, match="t must be a torch.Tensor"):
        solver(f, Z0, [0.0, 1.0])
    with pytest.raises(TypeError, match="func must be callable"):
        solver(3.0, Z0, T)


def test_device_mismatch(solver):
    meta = torch.tensor([0.0, 1.0], dtype=F64, device="meta")
    with pytest.raises(ValueError, match="same device"):
        solver(f, Z0, meta)


def test_non_finite_z0(solver):
    with pytest.raises(ValueError, match="z0 must be finite"):
        solver(f, torch.tensor([1.0, float("inf")], dtype=F64), T)


def test_wrong_output_shape_and_dtype(solver):
    with pytest.raises(ValueError, match=r"returned shape \(2,\), but z has shape \(3,\)"):
        solver(lambda t, z: z[:2], Z0, T)
    with pytest.raises(TypeError, match="returned dtype torch.float32"):
        solver(lambda t, z: z.float(), Z0, T)
    with pytest.raises(TypeError, match="must return a torch.Tensor"):
        solver(lambda t, z: 1.0, Z0, T)


def test_unknown_method_lists_valid_ones(solver):
    with pytest.raises(ValueError,
                       match="valid methods: euler, midpoint, heun2, heun3, rk4, adaptive_heun"):
        solver(f, Z0, T, method="rk45")


def test_bad_step_size(solver):
    with pytest.raises(ValueError, match="step_size"):
        solver(f, Z0, T, method="euler", options={"step_size": -0.1})
    with pytest.raises(ValueError, match="step_size"):
        solver(f, Z0, T, method="rk4", options={"step_size": "0.1"})


def test_renamed_options_say_their_new_name(solver):
    with pytest.raises(ValueError, match="'max_steps' is called 'max_num_steps'"):
        solver(f, Z0, T, options={"max_steps": 10})


def test_bad_option_values(solver):
    with pytest.raises(ValueError, match="max_num_steps.*positive integer"):
        solver(f, Z0, T, options={"max_num_steps": 2.5})
    with pytest.raises(TypeError, match="norm.*function"):
        solver(f, Z0, T, options={"norm": "rms"})


def test_bad_z0_containers(solver):
    with pytest.raises(TypeError, match="tuple of tensors, got a list"):
        solver(f, [Z0, Z0], T)
    with pytest.raises(TypeError, match=r"z0\[1\] must be a torch.Tensor"):
        solver(lambda t, z: z, (Z0, None), T)
    with pytest.raises(TypeError, match="z0 must be a torch.Tensor, got NoneType"):
        solver(f, None, T)
    with pytest.raises(TypeError, match="t must be a torch.Tensor, got NoneType"):
        solver(f, Z0, None)
    with pytest.raises(TypeError, match="func must be callable"):
        solver(None, Z0, T)


def test_tuple_func_must_return_a_tuple(solver):
    with pytest.raises(TypeError, match="must return a tuple of 2 tensors"):
        solver(lambda t, z: z[0], (Z0, Z0), T)
    with pytest.raises(ValueError, match=r"func\(t, z\)\[1\] returned shape"):
        solver(lambda t, z: (z[0], z[1][:1]), (Z0, Z0), T)


def test_unknown_option(solver):
    with pytest.raises(ValueError, match="unknown option"):
        solver(f, Z0, T, options={"stepsize": 0.1})


@pytest.mark.parametrize("tol", [0.0, -1e-6, "1e-6", float("nan")])
def test_bad_tolerances(solver, tol):
    with pytest.raises(ValueError, match="rtol must be a positive number"):
        solver(f, Z0, T, rtol=tol)
    with pytest.raises(ValueError, match="atol must be a positive number"):
        solver(f, Z0, T, atol=tol)


def test_scipy_methods_refuse_backprop():
    with pytest.raises(ValueError, match="use odeint_adjoint"):
        nh.odeint(f, Z0.clone().requires_grad_(), T, method="scipy:LSODA")


# ---- solver failures -----------------------------------------------------------------------

def blow_up(t, z):
    return z * z  # z(t) = 1 / (1 - t) from z(0) = 1: infinite at t = 1


@pytest.mark.parametrize("method", ["dopri5", "scipy:RK45", "scipy:LSODA"])
def test_finite_time_blow_up_raises_solver_error(method):
    with pytest.raises(nh.SolverError) as info:
        nh.odeint(blow_up, torch.ones(1, dtype=F64), torch.tensor([0.0, 2.0], dtype=F64),
                  method=method)
    err = info.value
    assert isinstance(err, RuntimeError)
    assert 0.9 < err.t_reached < 1.01
    assert "scipy:BDF" in str(err) and "t = " in str(err)


def test_max_num_steps_raises_solver_error():
    with pytest.raises(nh.SolverError, match="max_num_steps=5") as info:
        nh.odeint(lambda t, z: torch.cos(50 * t) * z, Z0, torch.tensor([0.0, 10.0], dtype=F64),
                  options={"max_num_steps": 5})
    assert "options['max_num_steps']" in str(info.value)


def test_nan_in_dynamics_raises_solver_error():
    def nan_after_half(t, z):
        return z * (float("nan") if t > 0.5 else 1.0)

    with pytest.raises(nh.SolverError, match="non-finite"):
        nh.odeint(nan_after_half, Z0, T)


def test_failure_in_backward_solve_raises_solver_error():
    # The forward solve on [0, 0.5] is fine; the adjoint is asked for a tolerance the backward
    # solve cannot meet within 3 steps.
    z0 = torch.ones(1, dtype=F64, requires_grad=True)
    zs = nh.odeint_adjoint(blow_up, z0, torch.tensor([0.0, 0.5], dtype=F64),
                           adjoint_options={"max_num_steps": 3})
    with pytest.raises(nh.SolverError, match="max_num_steps=3"):
        zs.sum().backward()


def test_scipy_evaluation_limit_raises_solver_error():
    with pytest.raises(nh.SolverError, match="max_nfe=50"):
        nh.odeint(lambda t, z: torch.cos(50 * t) * z, Z0, torch.tensor([0.0, 10.0], dtype=F64),
                  method="scipy:RK45", options={"max_nfe": 50})


def test_scipy_non_finite_derivative_raises_solver_error():
    def inf_after_half(t, z):
        return z * (float("inf") if t > 0.5 else 1.0)

    with pytest.raises(nh.SolverError, match="dz/dt became non-finite"):
        nh.odeint(inf_after_half, Z0, T, method="scipy:BDF")


def test_scipy_internal_failure_becomes_solver_error(monkeypatch):
    import scipy.integrate

    def broken(*args, **kwargs):
        raise ValueError("array must not contain infs or NaNs")

    monkeypatch.setattr(scipy.integrate.BDF, "step", broken)
    with pytest.raises(nh.SolverError, match="array must not contain infs"):
        nh.odeint(f, Z0, T, method="scipy:BDF")


def test_errors_from_func_pass_through_scipy_unchanged():
    with pytest.raises(ValueError, match="returned shape"):
        nh.odeint(lambda t, z: z[:2], Z0, T, method="scipy:LSODA")


def test_lists_and_arrays_say_how_to_convert(solver):
    with pytest.raises(TypeError, match=r"got list: convert it first, e\.g\. torch\.tensor"):
        solver(f, Z0, [0.0, 1.0])
    with pytest.raises(TypeError, match=r"t must be a torch.Tensor, got ndarray: convert"):
        solver(f, Z0, np.array([0.0, 1.0]))
    with pytest.raises(TypeError, match=r"z0 must be a torch.Tensor, got ndarray: .*as_tensor"):
        solver(f, np.ones(3), T)
    with pytest.raises(TypeError, match=r"z0 must be a torch.Tensor, got float: convert"):
        solver(f, 1.0, T)
    with pytest.raises(ValueError, match=r"got shape \(\): the start and end times"):
        solver(f, Z0, torch.tensor(1.0, dtype=F64))


@pytest.mark.parametrize("dtype,hint", [
    (torch.float16, "half precision"), (torch.bfloat16, "half precision"),
    (torch.complex64, "view_as_real"), (torch.int32, r"z0\.float\(\)")])
def test_only_float32_and_float64_states(solver, dtype, hint):
    # half precision used to start and then fail as "non-finite"; complex and integer states
    # are refused with what to do instead
    with pytest.raises(TypeError, match=f"got {dtype}: .*{hint}"):
        solver(f, torch.ones(3, dtype=dtype), T)
    with pytest.raises(TypeError, match=f"t must be floating point .*got {torch.float16}"):
        solver(f, Z0, T.half())


class _NoTime(torch.nn.Module):
    def forward(self, z):
        return -z


@pytest.mark.parametrize("func", [lambda z: -z, _NoTime()], ids=["lambda", "module"])
def test_a_field_without_t_is_refused_before_solving(solver, func):
    with pytest.raises(TypeError, match=r"func is called as func\(t, z\).*\(z\)"):
        solver(func, Z0, T)


def test_fields_that_take_t_and_z_in_any_form_pass_the_signature_check(solver):
    class Field(torch.nn.Module):
        def forward(self, *args):
            return -args[1]

    import functools

    def with_default(t, z, scale=1.0):
        return -scale * z

    for func in (Field(), with_default, functools.partial(with_default, scale=2.0),
                 lambda *a: -a[1]):
        assert solver(func, Z0, T).shape == (2, 3)


def test_a_dtype_mismatch_inside_func_says_what_to_do(solver):
    A = torch.eye(3)  # float32, while the state is float64

    with pytest.raises(TypeError, match=r"failed with z of dtype torch.float64: .*one dtype"):
        solver(lambda t, z: A @ z, Z0, T)
    # the tuple path too
    with pytest.raises(TypeError, match=r"failed with z of dtype torch.float64"):
        solver(lambda t, z: (A @ z[0], -z[1]), (Z0, Z0.clone()), T)
    # other errors raised inside func pass through unchanged
    with pytest.raises(RuntimeError, match="boom"):
        solver(lambda t, z: (_ for _ in ()).throw(RuntimeError("boom")), Z0, T)


def test_random_stable_matrix_needs_a_positive_size():
    with pytest.raises(ValueError, match="dim must be a positive int, got 0"):
        nh.random_stable_matrix(0)
    assert nh.random_stable_matrix(1).shape == (1, 1)
