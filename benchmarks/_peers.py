"""The peers of ``bench_adjoint.py``: torchode and diffrax on the benchmark's problem.

Each ``*_methods`` function returns ``(methods, skipped)``: ``methods`` maps a row name to
``(library, kind, run)``, where ``run()`` does one forward + backward and returns
``(dL/dθ flat, dL/dz0, forward NFE, backward NFE or None, wall s, CPU s)`` as numpy arrays and
numbers; ``skipped`` is a list of ``(library, reason)`` for what could not run. Both
libraries are optional (``pip install -e ".[bench]"``): a missing one is skipped with the
reason, never an error.

Same problem for everybody: the whole batch is one ODE of 512 unknowns under one RMS error
norm, dopri5 with the integral controller (safety 0.9, factors [0.2, 10]), the benchmark's
rtol/atol forward and backward, float32, the same weights, z0, t and target.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

# XLA reads its flags when jax is first imported: one thread, like torch.set_num_threads(1).
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                      "intra_op_parallelism_threads=1")


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


# ---------------------------------------------------------------------------------------------
# torchode
# ---------------------------------------------------------------------------------------------

def torchode_methods(field, z0, t, target, loss_fn, rtol, atol):
    try:
        import torchode as to
    except ImportError as exc:
        return {}, [("torchode", f"not installed ({exc}); pip install -e \".[bench]\"")]
    B = z0.shape[0]

    def joint_field(tt, y):  # one problem of B*D unknowns: y is (1, B*D)
        return field(tt, y.reshape(B, -1)).reshape(1, -1)

    def controller(term):
        return to.IntegralController(atol=atol, rtol=rtol, term=term)

    def run(solve, flat):
        def once():
            field.zero_grad(set_to_none=True)
            z = z0.detach().clone().requires_grad_(True)
            field.nfe = 0
            ys = solve(z)
            nf = field.nfe
            loss_fn(ys, target).backward()
            return z, nf, field.nfe - nf

        (z, nf, nb), wall, cpu = _timed(once)
        g = torch.cat([p.grad.reshape(-1) for p in field.parameters()])
        return g.numpy(), z.grad.numpy(), nf, nb if not flat else None, wall, cpu

    def autodiff(z):
        term = to.ODETerm(joint_field)
        solver = to.AutoDiffAdjoint(to.Dopri5(term=term), controller(term),
                                    backprop_through_step_size_control=False)
        sol = solver.solve(to.InitialValueProblem(y0=z.reshape(1, -1), t_eval=t[None]))
        return sol.ys[0].reshape(len(t), B, -1)

    def joint_backsolve(z):
        # torchode's own batching: instances of one step size, joined into one problem
        term = to.ODETerm(field)
        solver = to.JointBacksolveAdjoint(term, to.Dopri5(term=term), controller(term))
        sol = solver.solve(to.InitialValueProblem(y0=z, t_eval=t.expand(B, -1)))
        return sol.ys.transpose(0, 1)

    methods = {
        "torchode JointBacksolveAdjoint": ("torchode", "adjoint",
                                           lambda: run(joint_backsolve, False)),
        "torchode AutoDiffAdjoint (backprop)": ("torchode", "backprop",
                                                lambda: run(autodiff, True)),
    }
    return methods, []


# ---------------------------------------------------------------------------------------------
# diffrax (JAX, jit-compiled)
# ---------------------------------------------------------------------------------------------

def jax_mlp(p, z):
    """The benchmark's 2-64-64-2 tanh network in JAX, on torch's (out, in) weight layout:
    ``p`` holds the six parameter arrays of the torch field, in its order."""
    import jax.numpy as jnp

    w1, b1, w2, b2, w3, b3 = p
    h = jnp.tanh(z @ w1.T + b1)
    h = jnp.tanh(h @ w2.T + b2)
    return h @ w3.T + b3


def diffrax_methods(field, z0, t, target, rtol, atol):
    try:
        import diffrax
        import jax
        import jax.numpy as jnp
    except ImportError as exc:
        return {}, [("diffrax", f"not installed ({exc}); pip install -e \".[bench]\"")], {}
    params = [jnp.asarray(p.detach().numpy()) for p in field.parameters()]
    y0 = jnp.asarray(z0.numpy())
    ts = jnp.asarray(t.numpy())
    tgt = jnp.asarray(target.numpy())

    calls = [0]

    def mlp(p, z, count=False):
        if count:  # a host callback per call of the field, in the counting build only
            jax.debug.callback(lambda: calls.__setitem__(0, calls[0] + 1))
        return jax_mlp(p, z)

    # pcoeff=0, icoeff=1: the integral controller, as ours, torchdiffeq's and torchode's
    controller = diffrax.PIDController(rtol=rtol, atol=atol, pcoeff=0.0, icoeff=1.0,
                                       safety=0.9, factormin=0.2, factormax=10.0)

    def solve(p, z, adjoint, count=False):
        term = diffrax.ODETerm(lambda tt, zz, pp: mlp(pp, zz, count))
        return diffrax.diffeqsolve(term, diffrax.Dopri5(), ts[0], ts[-1], None, z, args=p,
                                   saveat=diffrax.SaveAt(ts=ts), stepsize_controller=controller,
                                   adjoint=adjoint, max_steps=4096)

    def loss(p, z, adjoint, count=False):
        return jnp.mean((solve(p, z, adjoint, count).ys - tgt) ** 2)

    def count_calls(fn):
        """Calls of the field in one run of fn (compiled separately, with the callback)."""
        fn = jax.jit(fn)
        jax.block_until_ready(fn(params, y0))
        calls[0] = 0
        jax.block_until_ready(fn(params, y0))
        return calls[0]

    # Our adjoint rows use a seminorm by default; diffrax's is opt-in: its own recipe, with the
    # forward's controller settings repeated (the backward controller replaces the forward's).
    seminorm_controller = diffrax.PIDController(
        rtol=rtol, atol=atol, pcoeff=0.0, icoeff=1.0, safety=0.9, factormin=0.2,
        factormax=10.0, norm=diffrax.adjoint_rms_seminorm)
    methods, compile_s = {}, {}
    for name, kind, adjoint in [
        ("diffrax BacksolveAdjoint (jit)", "adjoint", diffrax.BacksolveAdjoint()),
        ("diffrax BacksolveAdjoint, adjoint_rms_seminorm (jit)", "adjoint",
         diffrax.BacksolveAdjoint(stepsize_controller=seminorm_controller)),
        ("diffrax RecursiveCheckpointAdjoint (jit, its default)", "backprop",
         diffrax.RecursiveCheckpointAdjoint()),
    ]:
        grad = jax.jit(jax.grad(lambda p, z, a=adjoint: loss(p, z, a), argnums=(0, 1)))
        start = time.perf_counter()
        grad = grad.lower(params, y0).compile()
        compile_s[name] = time.perf_counter() - start
        # Calls of the field, counted like the torch libraries' (a wrapper that counts): the
        # forward solve, and the backsolve's backward solve, a plain loop in which each
        # evaluation of the augmented dynamics calls the field once. Not the backward of
        # backprop through diffrax's loop: there JAX does not run the callback once per call.
        nfe_fwd = count_calls(lambda p, z, a=adjoint: loss(p, z, a, True))
        nfe_bwd = None if kind != "adjoint" else count_calls(jax.grad(
            lambda p, z, a=adjoint: loss(p, z, a, True), argnums=(0, 1))) - nfe_fwd

        def run(grad=grad, nfe_fwd=nfe_fwd, nfe_bwd=nfe_bwd):
            (gp, gz), wall, cpu = _timed(lambda: jax.block_until_ready(grad(params, y0)))
            flat = np.concatenate([np.asarray(g).reshape(-1) for g in gp])
            return flat, np.asarray(gz), nfe_fwd, nfe_bwd, wall, cpu

        methods[name] = ("diffrax", kind, run)
    return methods, [], compile_s


def versions():
    out = {}
    for mod in ("torchode", "jax", "diffrax"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = "not installed"
    return out
