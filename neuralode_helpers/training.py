r"""Training an :class:`ODENet` on the toy problem, batched.

A naive loop solves one window :math:`[t_0, t_0 + \Delta]` at a time. Here every window of a step
goes into one solve: with :math:`t = t_0 + s\Delta`, each window becomes the interval
:math:`s \in [0, 1]` of the rescaled system

.. math:: \frac{dz}{ds} = \Delta\, f(z, t_0 + s\Delta; \theta),

so a batch of B windows is one state of shape (B, 1) solved on a shared s grid.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .adjoint import odeint_adjoint
from .models import ODENet
from .problems import toy_solution
from .regularisers import (
    RNODE,
    RegularisedField,
    _check_tensor,
    check_steer,
    cnf_nll,
    initial_state,
    sample_end_time,
)
from .solvers import Stats, odeint
from .solvers.checks import check_int


class WindowedField(nn.Module):
    r"""Rescaled dynamics :math:`g(s, z) = \Delta f(t_0 + s\Delta, z)` for a batch of windows.

    ``t0``: (B,) window starts; ``z``: (B, D). The parameters are those of ``model``.
    """

    def __init__(self, model: nn.Module, t0: torch.Tensor, delta: float):
        super().__init__()
        self.model = model
        self.t0 = t0
        self.delta = float(delta)

    def forward(self, s, z):
        return self.delta * self.model(self.t0 + s * self.delta, z)


@dataclass
class TrainResult:
    r"""What :func:`train` measured: one entry per optimisation step.

    ``losses`` is the fit term (the MSE) alone. With a ``regulariser``, ``kinetic`` and
    ``jacobian`` hold the batch means of :math:`\int\|g\|^2 ds` and of (the estimate of)
    :math:`\int\|\partial g/\partial z\|_F^2 ds` over the windows (rescaled field g); with
    ``steer``, ``end_times`` holds where each step's solve ended in s (1 without STEER).
    Lists of options that were not used stay empty.
    """

    losses: list = field(default_factory=list)
    nfe_forward: list = field(default_factory=list)
    nfe_backward: list = field(default_factory=list)
    kinetic: list = field(default_factory=list)
    jacobian: list = field(default_factory=list)
    end_times: list = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False


def _check_number(name, value, *, positive=False, allow_none=False):
    if value is None and allow_none:
        return
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real)
          and math.isfinite(value) and (value > 0 if positive else value >= 0))
    if not ok:
        raise ValueError(f"{name} must be a {'positive' if positive else 'non-negative'} "
                         f"number, got {value!r}")


def check_schedule(steps, lr, lr_final, weight_decay, schedule, warmup):
    """The arguments of :func:`optimise` that :func:`train` and ``train_cnf`` pass through,
    checked before any work: counts are ints, rates are numbers, the schedule is known."""
    check_int("steps", steps, 0)
    check_int("warmup", warmup, 0)
    _check_number("lr", lr, positive=True)
    _check_number("lr_final", lr_final, allow_none=True)
    _check_number("weight_decay", weight_decay)
    lr_factor(0, steps, lr, lr_final, schedule, warmup)  # rejects an unknown schedule


def check_trainable(model, name="model"):
    """A module with parameters to train, or a clear error (a plain function has none)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be an nn.Module with parameters to fit (e.g. ODENet()), "
                        f"got {type(model).__name__}")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"{name} has no parameters that require grad: nothing to train")


def _check_range(name, value):
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair of numbers (low, high), got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"{name} must be finite with low <= high, got {value!r}")


def sample_windows(batch_size, generator, t0_range=(-1.0, 9.0), c_range=(0.0, 0.0),
                   dtype=torch.float32):
    """Window starts t0 ~ U[t0_range] and offsets c ~ U[c_range], each of shape (B,)."""
    u = torch.rand(2, batch_size, generator=generator, dtype=dtype)
    t0 = t0_range[0] + (t0_range[1] - t0_range[0]) * u[0]
    c = c_range[0] + (c_range[1] - c_range[0]) * u[1]
    return t0, c


def _windows(model, t0, c):
    """``t0`` and ``c`` as 1-D tensors of one length, in the model's dtype and device (numbers
    and lists welcome; a single ``c`` holds for every window)."""
    p = next(model.parameters(), None)
    like = dict(dtype=p.dtype, device=p.device) if p is not None else {}
    out = []
    for name, x in (("t0", t0), ("c", c)):
        try:
            x = torch.as_tensor(x, **like) if not isinstance(x, torch.Tensor) else x.to(**like)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{name} must be a number or a 1-D tensor of window "
                            f"{'starts' if name == 't0' else 'offsets'}, got "
                            f"{type(x).__name__}") from None
        if x.ndim > 1:
            raise ValueError(f"{name} must be 1-D (one entry per window), got shape "
                             f"{tuple(x.shape)}")
        out.append(x.reshape(-1))
    t0, c = out
    if c.numel() == 1 and t0.numel() != 1:
        c = c.expand(t0.shape)
    if c.shape != t0.shape:
        raise ValueError(f"t0 and c need one entry per window: got {t0.numel()} starts and "
                         f"{c.numel()} offsets")
    return t0, c


def window_loss(model, t0, c, *, window=1.0, n_obs=2, adjoint=True, method="dopri5",
                rtol=1e-5, atol=1e-6, options=None, stats=None):
    """MSE between predicted and true z at ``n_obs`` evenly spaced points of each window
    (the first point is the initial condition, so ``n_obs=2`` compares the window's end only).

    ``t0``: the windows' starts, shape (B,) (a number or list is one or more windows);
    ``c``: their offsets, shape (B,) or one number for all."""
    t0, c = _windows(model, t0, c)
    s = torch.linspace(0, 1, n_obs, dtype=t0.dtype, device=t0.device)
    t_obs = t0[None, :] + window * s[:, None]  # (n_obs, B)
    z_true = toy_solution(t_obs, c[None, :]).unsqueeze(-1)  # (n_obs, B, 1)
    field_ = WindowedField(model, t0, window)
    solver = odeint_adjoint if adjoint else odeint
    z_pred = solver(field_, z_true[0], s, method=method, rtol=rtol, atol=atol, options=options,
                    stats=stats)
    return nn.functional.mse_loss(z_pred[1:], z_true[1:])


def regularised_window_loss(model, t0, c, *, regulariser=None, eps=None, end=1.0, window=1.0,
                            n_obs=2, adjoint=True, method="dopri5", rtol=1e-5, atol=1e-6,
                            options=None, stats=None):
    r""":func:`window_loss` with RNODE's terms and STEER's end time; returns
    ``(mse, kinetic, jacobian)``, each a 0-d tensor (the last two are batch means, ``None``
    without ``regulariser``).

    The windows' observation points are :math:`s_i = i/(N-1)`, :math:`i = 0..N-1` (``N =
    n_obs``), with targets :math:`z(t_0 + s_i\,\Delta)`. STEER (Ghosh et al. 2020): the solve
    ends at ``end`` (:func:`~neuralode_helpers.sample_end_time`, around 1) instead of
    :math:`s_{N-1} = 1`, and the state reached there is compared with the target at
    :math:`s_{N-1}`: the target does not move with the sampled end time. ``end`` must stay
    above :math:`s_{N-2}`. With a :class:`~neuralode_helpers.RNODE`, the state is the tuple
    ``(z, k, b)`` of :class:`~neuralode_helpers.RegularisedField` (probes ``eps`` ``(B, 1)``)
    and one solve gives the fit and both integrals.
    """
    if regulariser is not None and not isinstance(regulariser, RNODE):
        raise TypeError(f"regulariser must be an RNODE or None, got "
                        f"{type(regulariser).__name__}")
    t0, c = _windows(model, t0, c)
    n_obs = check_int("n_obs", n_obs, 2)
    targets_at = torch.linspace(0, 1, n_obs, dtype=t0.dtype, device=t0.device)
    end = float(end)
    if not end > (float(targets_at[-2]) if n_obs > 2 else 0.0):
        raise ValueError(f"end must be above the last observation point but one "
                         f"({float(targets_at[-2]) if n_obs > 2 else 0.0:g}), got {end:g}")
    s = targets_at.clone()
    s[-1] = end  # STEER: only the solve's end moves, never the targets
    t_obs = t0[None, :] + window * targets_at[:, None]  # (n_obs, B)
    z_true = toy_solution(t_obs, c[None, :]).unsqueeze(-1)  # (n_obs, B, 1)
    field_ = WindowedField(model, t0, window)
    solver = odeint_adjoint if adjoint else odeint
    kw = dict(method=method, rtol=rtol, atol=atol, options=options, stats=stats)
    if regulariser is None:
        z_pred = solver(field_, z_true[0], s, **kw)
        return nn.functional.mse_loss(z_pred[1:], z_true[1:]), None, None
    reg_field = RegularisedField(field_, eps, jacobian=regulariser.jacobian > 0)
    kw["options"] = regulariser.solver_options(method, options, z_true[0].numel())
    z_pred, kinetic, jacobian = solver(reg_field, initial_state(z_true[0]), s, **kw)
    return (nn.functional.mse_loss(z_pred[1:], z_true[1:]), kinetic[-1].mean(),
            jacobian[-1].mean())


def lr_factor(step, steps, lr, lr_final, schedule="exponential", warmup=0) -> float:
    r"""The learning rate at ``step`` divided by ``lr``, for :func:`train`.

    With :math:`r = \ell_\text{final}/\ell` and :math:`u = k / \text{steps}`:
    exponential :math:`r^u`; cosine :math:`r + (1 - r)\,\tfrac12 (1 + \cos \pi u)`. Both
    start at 1 and end at :math:`r` (``lr_final=None`` or 0 keeps the rate constant).
    During the first ``warmup`` steps the factor is also multiplied by
    :math:`(k + 1)/\text{warmup}`: Adam's first updates rest on poor estimates of the
    gradient's scale, so a large peak rate is only safe once they have settled.
    """
    r = lr_final / lr if lr_final else 1.0
    u = min(step, steps) / max(1, steps)
    if schedule == "exponential":
        factor = r ** u
    elif schedule == "cosine":
        factor = r + (1 - r) * 0.5 * (1 + math.cos(math.pi * u))
    else:
        raise ValueError(f"schedule must be 'exponential' or 'cosine', got {schedule!r}")
    if step < warmup:
        factor *= (step + 1) / warmup
    return factor


def train(model, *, steps=300, batch_size=100, lr=1e-2, lr_final=1e-3, weight_decay=0.0,
          window=1.0, n_obs=2, t0_range=(-1.0, 9.0), c_range=(0.0, 0.0), method="dopri5",
          rtol=1e-5, atol=1e-6, adjoint=True, seed=0, progress=True, callback=None,
          result=None, schedule="exponential", warmup=0, options=None, regulariser=None,
          steer=None):
    r"""Fit ``model`` to the toy problem with Adam; every step solves ``batch_size`` windows
    in one batched solve. The learning rate goes from ``lr`` to ``lr_final`` over ``steps``
    (see :func:`lr_factor`): geometrically (``schedule="exponential"``) or along half a
    cosine (``"cosine"``), after ``warmup`` steps of linear ramp-up from ``lr / warmup``.

    Returns a :class:`TrainResult` (loss and NFE per step, wall time). Pressing Ctrl-C
    (KeyboardInterrupt) stops cleanly: the model keeps its weights so far and the result is
    marked ``interrupted``. Pass ``result`` to append to an earlier run's history.
    ``callback(step, loss)`` is called after each step. ``method``, ``rtol``, ``atol`` and
    ``options`` go to the solver (``options={"step_size": h}`` for the fixed-step methods;
    the window is the interval s in [0, 1], so h is a fraction of a window).

    ``regulariser``: an :class:`~neuralode_helpers.RNODE` (Finlay et al. 2020): the loss
    minimised is the MSE plus :math:`\lambda_K` times the kinetic energy plus
    :math:`\lambda_J` times the Jacobian's Frobenius norm (Hutchinson), both integrated in
    the same solve; the terms are recorded per step. ``steer``: STEER's b (Ghosh et al.
    2020), 0 <= b < 1/(n_obs - 1): each step solves its windows to a random s in
    [1 - b, 1 + b] and compares the state there with the target at s = 1 (the targets stay
    where they are; see :func:`regularised_window_loss`). Probes and end times come from
    their own generator (seeded from ``seed``), so the windows are the same as without
    these options.
    """
    if regulariser is not None and not isinstance(regulariser, RNODE):
        raise TypeError(f"regulariser must be an RNODE or None, got "
                        f"{type(regulariser).__name__}")
    n_obs = check_int("n_obs", n_obs, 2)
    if steer is not None:
        # The sampled end must stay after the last observation point but one.
        steer = check_steer(steer, 1.0 / (n_obs - 1))
    check_trainable(model)
    check_schedule(steps, lr, lr_final, weight_decay, schedule, warmup)
    check_int("batch_size", batch_size, 1)
    check_int("n_obs", n_obs, 2)
    _check_number("window", window, positive=True)
    _check_range("t0_range", t0_range)
    _check_range("c_range", c_range)
    generator = torch.Generator().manual_seed(seed)
    # probes and end times: their own stream, so that the windows match a plain run's
    extra = torch.Generator().manual_seed(seed + 7919)
    first = next(model.parameters())
    result = TrainResult() if result is None else result

    def batch_loss(end, stats):
        # sampled on the CPU (one generator, same windows on any device), then moved
        t0, c = sample_windows(batch_size, generator, t0_range, c_range, first.dtype)
        t0, c = t0.to(first.device), c.to(first.device)
        eps = None
        if regulariser is not None:
            eps = regulariser.probes((batch_size, model_dim(model)), extra, first.dtype,
                                     first.device)
        return regularised_window_loss(
            model, t0, c, regulariser=regulariser, eps=eps, end=end, window=window,
            n_obs=n_obs, adjoint=adjoint, method=method, rtol=rtol, atol=atol,
            options=options, stats=stats)

    return optimise(model.parameters(), batch_loss, result, steps=steps, lr=lr,
                    lr_final=lr_final, schedule=schedule, warmup=warmup,
                    weight_decay=weight_decay, regulariser=regulariser, steer=steer,
                    extra=extra, progress=progress, callback=callback)


def optimise(params, batch_loss, result, *, steps, lr, lr_final, schedule, warmup,
             weight_decay, regulariser, steer, extra, progress, callback, name="loss",
             fmt=".2e", desc="training"):
    r"""The loop that :func:`train` and :func:`~neuralode_helpers.train_cnf` share: ``steps``
    steps of Adam on ``params`` with the learning rate of :func:`lr_factor`.

    Each step draws STEER's end time s₁ from ``extra`` (1 without ``steer``), calls
    ``batch_loss(s₁, stats)`` for the fit term and RNODE's two terms of a fresh batch, and
    minimises the fit term plus :math:`\lambda_K` times the kinetic and :math:`\lambda_J`
    times the Jacobian term. Appends to ``result`` (a :class:`TrainResult`) per step: the
    fit term, the forward and backward NFE of the step's solves, RNODE's terms and the end
    times when used; adds the wall time. A non-finite fit term stops before it reaches the weights
    (FloatingPointError naming ``name``; the progress bar shows it with ``fmt``); Ctrl-C
    stops cleanly (``result.interrupted``).
    """
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: lr_factor(k, steps, lr, lr_final, schedule, warmup))
    stats = Stats()
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    start = time.perf_counter()
    try:
        for step in bar:
            opt.zero_grad()
            end = 1.0 if steer is None else sample_end_time(0.0, 1.0, steer, extra)
            loss, kinetic, jacobian = batch_loss(end, stats)
            value = loss.item()
            # Checked before the step: a non-finite loss must not reach the weights.
            if not math.isfinite(value):
                raise FloatingPointError(f"{name} became {value} at step {step}: try a "
                                         "smaller lr")
            if regulariser is not None:
                terms = (kinetic.item(), jacobian.item())
                loss = (loss + regulariser.kinetic * kinetic
                        + regulariser.jacobian * jacobian)
            loss.backward()
            opt.step()
            sched.step()
            # Recorded together once the step is taken: Ctrl-C anywhere before this point
            # leaves every list one entry per completed step.
            result.losses.append(value)
            result.nfe_forward.append(stats.forward.nfe)
            result.nfe_backward.append(stats.backward.nfe)
            if regulariser is not None:
                result.kinetic.append(terms[0])
                result.jacobian.append(terms[1])
            if steer is not None:
                result.end_times.append(end)
            bar.set_postfix({name.lower(): format(value, fmt)}, refresh=False)
            if callback is not None:
                callback(step, value)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        bar.close()
        result.seconds += time.perf_counter() - start
    return result


def model_dim(model) -> int:
    """The state dimension D of ``model`` (``state_dim``, else 1 as for the toy problem)."""
    dim = getattr(model, "state_dim", None)
    if dim is None:
        dim = getattr(getattr(model, "net", None), "state_dim", 1)
    return int(dim)


@torch.no_grad()
def predict(model, z0, t, *, method="dopri5", rtol=1e-6, atol=1e-8):
    """Trajectory of the trained model from ``z0`` (shape (..., D)) at times ``t`` (T,)."""
    return odeint(model, z0, t, method=method, rtol=rtol, atol=atol)


def fit_curves(model, c=0.0, t_start=0.0, t_end=10.0, n=100):
    """The true and predicted curves over ``n`` points of [t_start, t_end], predicted from
    the true z(t_start). Returns (t, z_true, z_pred), each a 1-D tensor of length n."""
    if not t_end > t_start:
        raise ValueError(f"need t_end > t_start, got [{t_start}, {t_end}]")
    first = next(model.parameters())
    t = torch.linspace(t_start, t_end, n, dtype=first.dtype, device=first.device)
    z_true = toy_solution(t, c)
    z_pred = predict(model, z_true[:1], t)[:, 0]
    return t, z_true, z_pred


def fit_mse(model, c=0.0, t_start=0.0, t_end=10.0, n=100) -> float:
    """Mean squared error of :func:`fit_curves` (default: c=0, [0, 10], 100 points)."""
    _, z_true, z_pred = fit_curves(model, c, t_start, t_end, n)
    return float(((z_pred - z_true) ** 2).mean())


def save_model(model: ODENet, path) -> None:
    """Write the model's constructor arguments and weights to ``path`` (torch.save)."""
    torch.save({"config": model.config(), "state_dict": model.state_dict()}, path)


def load_model(path) -> ODENet:
    """Rebuild an :class:`ODENet` written by :func:`save_model`."""
    blob = torch.load(path, weights_only=True, map_location="cpu")
    config = dict(blob["config"])
    config["activation"] = getattr(nn, config["activation"])
    model = ODENet(**config)
    model.load_state_dict(blob["state_dict"])
    return model


def train_cnf(field, data, *, steps: int = 100, batch_size: int = 128, lr: float = 1e-2,
              lr_final: float | None = 1e-3, schedule: str = "cosine", warmup: int = 0,
              weight_decay: float = 0.0, method: str = "dopri5", rtol: float = 1e-5,
              atol: float = 1e-5, options=None, adjoint: bool = True, regulariser=None,
              steer=None, seed: int = 0, progress: bool = True, callback=None):
    r"""Fit a CNF (a :class:`~neuralode_helpers.CNFField`) to ``data`` ``(N, D)`` by maximum
    likelihood with Adam, as :func:`~neuralode_helpers.train` fits the toy problem: each
    step draws ``batch_size`` points (with replacement, from a generator seeded by ``seed``)
    and minimises :func:`~neuralode_helpers.cnf_nll`, plus
    :math:`\lambda_K\bar{\mathcal K} + \lambda_J\bar{\mathcal B}` with an
    :class:`~neuralode_helpers.RNODE` ``regulariser``. ``steer``: STEER's b, 0 <= b < 1:
    each step puts the data at a random time :math:`t_1' \sim \mathcal U[1-b,
    1+b]` instead of 1. The learning rate follows :func:`~neuralode_helpers.training.lr_factor`
    (``schedule``, ``lr_final``, ``warmup``).

    Returns a :class:`~neuralode_helpers.TrainResult`: per step the NLL of the batch
    (``losses``, at the training tolerance), the forward and backward NFE, RNODE's terms and
    STEER's end times when used, and the wall time. Ctrl-C stops cleanly (``interrupted``).
    """
    if not isinstance(field, nn.Module) or not hasattr(field, "net") or not hasattr(field,
                                                                                    "dim"):
        raise TypeError(f"field must be a CNFField, got {type(field).__name__}")
    _check_tensor("data", data)
    if data.dim() != 2 or data.shape[-1] != field.dim:
        raise ValueError(f"data must have shape (N, {field.dim}), got {tuple(data.shape)}")
    data = data.to(next(field.parameters()).dtype)  # float64 data for a float32 field, say
    if regulariser is not None and not isinstance(regulariser, RNODE):
        raise TypeError(f"regulariser must be an RNODE or None, got "
                        f"{type(regulariser).__name__}")
    if steer is not None:
        steer = check_steer(steer, 1.0)
    check_schedule(steps, lr, lr_final, weight_decay, schedule, warmup)
    check_int("batch_size", batch_size, 1)
    generator = torch.Generator().manual_seed(seed)
    # probes and end times: their own stream, so that the batches match a plain run's
    extra = torch.Generator().manual_seed(seed + 7919)

    def batch_loss(end, stats):
        x = data[torch.randint(0, len(data), (batch_size,), generator=generator)]
        eps = None
        if regulariser is not None:
            eps = regulariser.probes(x.shape, extra, x.dtype, x.device)
        return cnf_nll(field, x, regulariser=regulariser, eps=eps, end=end, adjoint=adjoint,
                       method=method, rtol=rtol, atol=atol, options=options, stats=stats)

    return optimise(field.parameters(), batch_loss, TrainResult(), steps=steps, lr=lr,
                    lr_final=lr_final, schedule=schedule, warmup=warmup,
                    weight_decay=weight_decay, regulariser=regulariser, steer=steer,
                    extra=extra, progress=progress, callback=callback, name="NLL", fmt=".3f",
                    desc="training CNF")
