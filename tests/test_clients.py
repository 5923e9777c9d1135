"""torchdiffeq's own clients, with only the import changed (issue #20).

Each test rebuilds, in a few lines of our own, the calling pattern of a program written for
torchdiffeq -- its examples (ode_demo, latent_ode, cnf, odenet_mnist, bouncing_ball,
learn_physics) and libraries built on it (a latent-ODE library with an ODE-RNN encoder, an
augmented-ODE library, an FFJORD-style CNF library) -- and runs it once with torchdiffeq and
once with this package in its place, the same seed, the same synthetic data. The losses of a
few training iterations and the gradients must agree to the solver's tolerance.

Nothing here is copied from those programs: the fields only reproduce what they ask of the
solver (the signature of the field, tuple states, a time tensor made afresh on every call,
divergences by autograd inside the field, in-place activations, options, the exceptions they
catch).
"""

import math
import types

import numpy as np
import pytest
import torch
from torch import nn

import neuralode_helpers as nh

torchdiffeq = pytest.importorskip("torchdiffeq", reason="pip install torchdiffeq")

F64 = torch.float64

# The two libraries, seen through the names a client imports.
BACKENDS = {
    "torchdiffeq": torchdiffeq,
    "ours": types.SimpleNamespace(odeint=nh.odeint, odeint_adjoint=nh.odeint_adjoint,
                                  odeint_event=nh.odeint_event),
}


def _rel(a, b):
    """Relative difference of two tensors (or numbers), measured against the second."""
    a, b = torch.as_tensor(a, dtype=F64), torch.as_tensor(b, dtype=F64)
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _train(build, iters, lr, optim=torch.optim.Adam, **optim_kw):
    """Train the model ``build()`` returns for ``iters`` steps; the losses and the first
    step's gradients. ``build`` returns (module, loss_fn(step)); the seed is fixed first."""
    torch.manual_seed(0)
    model, loss_fn = build()
    opt = optim(model.parameters(), lr=lr, **optim_kw)
    losses, grads = [], None
    for step in range(iters):
        opt.zero_grad()
        loss = loss_fn(step)
        loss.backward()
        if grads is None:
            grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                     for p in model.parameters()]
        losses.append(loss.item())
        opt.step()
    return losses, grads


def _both(make_build, iters, lr, **kw):
    """Train with torchdiffeq, then with ours: (their losses, our losses, their grads, ours)."""
    theirs = _train(make_build(BACKENDS["torchdiffeq"]), iters, lr, **kw)
    ours = _train(make_build(BACKENDS["ours"]), iters, lr, **kw)
    return theirs[0], ours[0], theirs[1], ours[1]


def _assert_agree(their_losses, our_losses, their_grads, our_grads, loss_tol, grad_tol):
    assert len(their_losses) == len(our_losses)
    for i, (a, b) in enumerate(zip(our_losses, their_losses)):
        assert math.isfinite(a), f"step {i}: our loss is {a}"
        assert abs(a - b) <= loss_tol * abs(b), f"step {i}: loss {a} (ours) vs {b}"
    # All parameters as one vector: a bias followed by a normalisation has a gradient that
    # is zero up to rounding, and its relative difference means nothing on its own.
    ours = torch.cat([g.flatten().double() for g in our_grads])
    theirs = torch.cat([g.flatten().double() for g in their_grads])
    assert torch.isfinite(ours).all()
    assert _rel(ours, theirs) <= grad_tol, f"gradients differ by {_rel(ours, theirs):.2e}"


# --- ode_demo: a cubic field learned from batches of a spiral, adjoint, default tolerances ---

class _CubicSpiral(nn.Module):
    """The demo's true dynamics, dz/dt = z^3 A, with A a plain attribute (not a parameter)."""

    def __init__(self):
        super().__init__()
        self.A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]])

    def forward(self, t, y):
        return torch.mm(y**3, self.A)


class _CubicNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 50), nn.Tanh(), nn.Linear(50, 2))
        for m in self.net.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0, std=0.1)
                nn.init.constant_(m.bias, val=0)

    def forward(self, t, y):
        return self.net(y**3)


@pytest.fixture(scope="module")
def spiral():
    """The demo's data, solved once without gradients by each library."""
    y0 = torch.tensor([[2.0, 0.0]])
    t = torch.linspace(0.0, 25.0, 200)
    with torch.no_grad():
        return (t, torchdiffeq.odeint(_CubicSpiral(), y0, t, method="dopri5"),
                nh.odeint(_CubicSpiral(), y0, t, method="dopri5"))


def test_ode_demo_data_under_no_grad(spiral):
    t, true_y, ours = spiral
    assert ours.shape == true_y.shape == (200, 1, 2)
    assert _rel(ours, true_y) < 1e-5


@pytest.mark.parametrize("interface", ["odeint", "odeint_adjoint"])
def test_ode_demo_cubic_field_on_batches_of_a_spiral(interface, spiral):
    t, true_y, _ = spiral

    def make(lib):
        def build():
            func = _CubicNet()
            rng = np.random.RandomState(0)

            def loss_fn(step):
                s = torch.from_numpy(rng.choice(np.arange(200 - 10, dtype=np.int64), 16,
                                                replace=False))
                batch_y0, batch_t = true_y[s], t[:10]            # (M, 1, 2), (T,)
                batch_y = torch.stack([true_y[s + i] for i in range(10)], dim=0)
                pred_y = getattr(lib, interface)(func, batch_y0, batch_t)
                return torch.mean(torch.abs(pred_y - batch_y))
            return func, loss_fn
        return build

    _assert_agree(*_both(make, iters=3, lr=1e-3, optim=torch.optim.RMSprop),
                  loss_tol=1e-4, grad_tol=1e-3)


# --- latent_ode example: recognition RNN backwards in time, odeint, decoder, ELBO ---

class _LatentField(nn.Module):
    def __init__(self, latent=4, hidden=20):
        super().__init__()
        self.elu = nn.ELU(inplace=True)             # in-place activations inside the field
        self.fc1, self.fc2 = nn.Linear(latent, hidden), nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, latent)
        self.nfe = 0

    def forward(self, t, x):
        self.nfe += 1
        return self.fc3(self.elu(self.fc2(self.elu(self.fc1(x)))))


class _RecognitionRNN(nn.Module):
    def __init__(self, latent=4, obs=2, hidden=25, nbatch=1):
        super().__init__()
        self.hidden, self.nbatch = hidden, nbatch
        self.i2h = nn.Linear(obs + hidden, hidden)
        self.h2o = nn.Linear(hidden, 2 * latent)

    def forward(self, x, h):
        h = torch.tanh(self.i2h(torch.cat((x, h), dim=1)))
        return self.h2o(h), h

    def init_hidden(self):
        return torch.zeros(self.nbatch, self.hidden)


def _noisy_spirals(n, nsample, rng):
    ts = np.linspace(0.0, 6 * np.pi, 1000)[:nsample]
    trajs = []
    for _ in range(n):
        a, phase = 0.3 + 0.1 * rng.rand(), 2 * np.pi * rng.rand()
        r = 1.0 + a * ts
        traj = np.stack([r * np.cos(ts + phase), r * np.sin(ts + phase)], 1) / 5
        trajs.append(traj + 0.3 * rng.randn(*traj.shape))
    return torch.from_numpy(np.stack(trajs)).float(), torch.from_numpy(ts).float()


@pytest.mark.parametrize("interface", ["odeint", "odeint_adjoint"])
def test_latent_ode_example_recognition_rnn_shared_grid_and_decoder(interface):
    trajs, ts = _noisy_spirals(16, 25, np.random.RandomState(0))
    latent, noise_std = 4, 0.3

    def make(lib):
        def build():
            func, rec = _LatentField(latent), _RecognitionRNN(latent, 2, 25, len(trajs))
            dec = nn.Sequential(nn.Linear(latent, 20), nn.ReLU(inplace=True), nn.Linear(20, 2))
            model = nn.ModuleList([func, rec, dec])
            gen = torch.Generator().manual_seed(1)

            def loss_fn(step):
                h = rec.init_hidden()
                for i in reversed(range(trajs.size(1))):
                    out, h = rec(trajs[:, i, :], h)
                mean, logvar = out[:, :latent], out[:, latent:]
                z0 = torch.randn(mean.size(), generator=gen) * torch.exp(0.5 * logvar) + mean
                pred_z = getattr(lib, interface)(func, z0, ts).permute(1, 0, 2)
                pred_x = dec(pred_z)
                var = torch.full_like(pred_x, noise_std**2)
                logpx = -0.5 * (math.log(2 * math.pi) + var.log()
                                + (trajs - pred_x) ** 2 / var)
                kl = -0.5 * logvar + 0.5 * (logvar.exp() + mean**2) - 0.5
                return torch.mean(-logpx.sum((-1, -2)) + kl.sum(-1), dim=0)
            return model, loss_fn
        return build

    _assert_agree(*_both(make, iters=3, lr=0.01), loss_tol=1e-4, grad_tol=1e-3)


# --- cnf example: a hypernetwork CNF, tuple state (z, logp), integrated from t1 down to t0 ---

class _HyperCNF(nn.Module):
    """dz/dt = mean_w U_w tanh(W_w z + B_w), (W, B, U) made by a small net of t; the trace of
    the Jacobian by autograd, with ``z.requires_grad_(True)`` on the state it is given."""

    def __init__(self, dim=2, hidden=8, width=8):
        super().__init__()
        self.dim, self.width, self.block = dim, width, width * dim
        self.hyper = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                   nn.Tanh(), nn.Linear(hidden, 3 * width * dim + width))

    def forward(self, t, states):
        z, _ = states
        with torch.set_grad_enabled(True):
            z.requires_grad_(True)
            p = self.hyper(t.reshape(1, 1)).reshape(-1)
            b = self.block
            W = p[:b].reshape(self.width, self.dim, 1)
            U = p[b:2 * b].reshape(self.width, 1, self.dim) * torch.sigmoid(
                p[2 * b:3 * b].reshape(self.width, 1, self.dim))
            B = p[3 * b:].reshape(self.width, 1, 1)
            Z = z.unsqueeze(0).repeat(self.width, 1, 1)
            dz = torch.matmul(torch.tanh(torch.matmul(Z, W) + B), U).mean(0)
            trace = sum(torch.autograd.grad(dz[:, i].sum(), z, create_graph=True)[0][:, i]
                        for i in range(z.shape[1]))
        return dz, -trace.view(-1, 1)


def _two_circles(n, gen):
    angle = 2 * math.pi * torch.rand(n, generator=gen)
    radius = torch.where(torch.arange(n) % 2 == 0, 1.0, 0.5)
    x = torch.stack([radius * angle.cos(), radius * angle.sin()], 1)
    return x + 0.06 * torch.randn(n, 2, generator=gen)


@pytest.mark.parametrize("interface", ["odeint", "odeint_adjoint"])
def test_cnf_example_hypernetwork_tuple_state_backwards_in_time(interface):
    t0, t1 = 0, 10
    prior = torch.distributions.MultivariateNormal(torch.zeros(2), 0.1 * torch.eye(2))

    def make(lib):
        def build():
            func = _HyperCNF()
            gen = torch.Generator().manual_seed(2)

            def loss_fn(step):
                x = _two_circles(32, gen)
                z_t, logp_t = getattr(lib, interface)(
                    func, (x, torch.zeros(32, 1)),
                    torch.tensor([t1, t0]).type(torch.float32),
                    atol=1e-5, rtol=1e-5, method="dopri5")
                return -(prior.log_prob(z_t[-1]) - logp_t[-1].view(-1)).mean(0)
            return func, loss_fn
        return build

    _assert_agree(*_both(make, iters=2, lr=1e-3), loss_tol=1e-3, grad_tol=1e-2)

    # Then samples, forward in time, under no_grad, with a float64 time grid.
    torch.manual_seed(0)
    func = _HyperCNF()
    z0 = prior.sample([64])
    grid = torch.tensor(np.linspace(t0, t1, 5))
    out = {}
    for name, lib in BACKENDS.items():
        with torch.no_grad():
            out[name] = getattr(lib, interface)(func, (z0, torch.zeros(64, 1)), grid,
                                                atol=1e-5, rtol=1e-5, method="dopri5")
    for ours, theirs in zip(out["ours"], out["torchdiffeq"]):
        assert ours.shape == theirs.shape == (5, 64, ours.shape[-1])
        assert ours.dtype == theirs.dtype == torch.float32
        assert _rel(ours, theirs) < 1e-3


# --- FFJORD-style CNF library: per-call time tensor, fixed noise, regularisation states ---

class _ConcatLinear(nn.Module):
    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.lin = nn.Linear(dim_in + 1, dim_out)

    def forward(self, t, x):
        return self.lin(torch.cat([torch.ones_like(x[:, :1]) * t, x], 1))


class _DiffEq(nn.Module):
    def __init__(self, dim=2, hidden=16):
        super().__init__()
        self.layers = nn.ModuleList([_ConcatLinear(dim, hidden), _ConcatLinear(hidden, hidden),
                                     _ConcatLinear(hidden, dim)])

    def forward(self, t, y):
        for i, layer in enumerate(self.layers):
            y = layer(t, y)
            if i < len(self.layers) - 1:
                y = torch.tanh(y)
        return y


class _DivergenceField(nn.Module):
    """The library's field: the time arrives as whatever the solver passes and is made into a
    fresh leaf that requires grad on every call; the noise of the Hutchinson estimate is
    drawn at the first call of a solve and kept; extra states (regularisers) get fresh zero
    leaves as derivatives; a call counter is a buffer incremented in place."""

    def __init__(self, diffeq, rademacher=True):
        super().__init__()
        self.diffeq, self.rademacher = diffeq, rademacher
        self.register_buffer("_num_evals", torch.tensor(0.0))
        self._e = None

    def before_odeint(self, e=None):
        self._e = e
        self._num_evals.fill_(0)

    def forward(self, t, states):
        y = states[0]
        self._num_evals += 1
        t = torch.tensor(t).type_as(y)
        if self._e is None:
            self._e = (torch.randint(0, 2, y.shape).to(y) * 2 - 1 if self.rademacher
                       else torch.randn_like(y))
        with torch.set_grad_enabled(True):
            y.requires_grad_(True)
            t.requires_grad_(True)
            for s in states[2:]:
                s.requires_grad_(True)
            dy = self.diffeq(t, y)
            if not self.training and dy.shape[1] == 2:   # brute force in evaluation
                div = sum(torch.autograd.grad(dy[:, i].sum(), y, create_graph=True)[0][:, i]
                          for i in range(y.shape[1])).view(-1, 1)
            else:
                e_dzdx = torch.autograd.grad(dy, y, self._e, create_graph=True)[0]
                div = (e_dzdx * self._e).view(y.shape[0], -1).sum(1).view(-1, 1)
        return tuple([dy, -div] + [torch.zeros_like(s).requires_grad_(True)
                                   for s in states[2:]])


class _Regularised(nn.Module):
    """Appends the integrands of ∫ rms(f) and of ∫ |e^T df/dx|^2 (a Frobenius-norm estimate
    with the field's noise e) to the state, as 0-d tensors."""

    def __init__(self, field):
        super().__init__()
        self.field = field

    def before_odeint(self, *args, **kwargs):
        self.field.before_odeint(*args, **kwargs)

    def forward(self, t, state):
        with torch.enable_grad():
            x, logp = state[:2]
            x.requires_grad_(True)
            logp.requires_grad_(True)
            dstate = self.field(t, (x, logp))
            if len(state) == 2:
                return dstate
            dx = dstate[0]
            e_jac = torch.autograd.grad(dx, x, self.field._e, create_graph=True)[0]
            return dstate + (dx.norm(dim=1).mean() / dx.shape[1] ** 0.5,
                             e_jac.square().sum(1).mean())


class _FlowBlock(nn.Module):
    def __init__(self, lib, solver="dopri5", options=None, T=0.5, nreg=2):
        super().__init__()
        self.odeint = lib.odeint_adjoint
        self.sqrt_end_time = nn.Parameter(torch.sqrt(torch.tensor(T)))
        self.odefunc = _Regularised(_DivergenceField(_DiffEq()))
        self.nreg, self.solver, self.solver_options = nreg, solver, dict(options or {})
        self.regularization_states = None

    def forward(self, z, logpz):
        times = torch.tensor([0.0, self.sqrt_end_time * self.sqrt_end_time]).to(z)
        self.odefunc.before_odeint()
        if self.training:
            reg = tuple(torch.tensor(0).to(z) for _ in range(self.nreg))
            state = self.odeint(self.odefunc, (z, logpz) + reg, times.to(z), atol=1e-5,
                                rtol=1e-5, method=self.solver, options=self.solver_options)
        else:
            state = self.odeint(self.odefunc, (z, logpz), times.to(z), atol=1e-5, rtol=1e-5,
                                method=self.solver)
        if len(times) == 2:
            state = tuple(s[1] for s in state)
        self.regularization_states = state[2:]
        return state[0], state[1]


def _eight_gaussians(n, gen):
    centres = torch.tensor([(math.cos(a), math.sin(a)) for a in np.arange(8) * math.pi / 4])
    idx = torch.randint(0, 8, (n,), generator=gen)
    return (2 * centres[idx] + 0.5 * torch.randn(n, 2, generator=gen)) / 1.414


def _normal_logprob(z):
    return (-0.5 * math.log(2 * math.pi) - z.pow(2) / 2).sum(1, keepdim=True)


@pytest.mark.filterwarnings("ignore:To copy construct from a tensor")
@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True to a scalar")
@pytest.mark.parametrize("solver,options", [("dopri5", None), ("rk4", {"step_size": 0.05})])
def test_ffjord_style_cnf_per_call_time_leaf_noise_and_regularisers(solver, options):
    def make(lib):
        def build():
            flow = _FlowBlock(lib, solver, options)
            gen = torch.Generator().manual_seed(3)

            def loss_fn(step):
                x = _eight_gaussians(48, gen)
                z, delta_logp = flow(x, torch.zeros(48, 1))
                nll = -(_normal_logprob(z) - delta_logp).mean()
                reg = sum(0.1 * r for r in flow.regularization_states)
                return nll + reg
            return flow, loss_fn
        return build

    # At rtol = atol = 1e-5 the regularisers' gradients of both libraries are off by ~3e-3
    # from a 1e-10 solve (float64), where the two agree to 1e-5.
    _assert_agree(*_both(make, iters=2, lr=1e-3), loss_tol=1e-4, grad_tol=1e-2)

    # Evaluation: no regularisers, no options, brute-force divergence, under no_grad.
    torch.manual_seed(0)
    x = _eight_gaussians(64, torch.Generator().manual_seed(4))
    out = {}
    for name, lib in BACKENDS.items():
        torch.manual_seed(5)
        flow = _FlowBlock(lib, solver, options).eval()
        with torch.no_grad():
            z, delta_logp = flow(x, torch.zeros(64, 1))
        out[name] = -(_normal_logprob(z) - delta_logp).mean()
        assert flow.regularization_states == ()
    assert _rel(out["ours"], out["torchdiffeq"]) < 1e-4


class _AmortizedDiffEq(_DiffEq):
    """The first hidden layer's bias is per sample and comes in as an extra state."""

    def forward(self, t, y, *extra):
        h = torch.tanh(self.layers[0](t, y) + extra[0])
        h = torch.tanh(self.layers[1](t, h))
        return self.layers[2](t, h)


@pytest.mark.filterwarnings("ignore:To copy construct from a tensor")
def test_ffjord_vae_amortized_parameters_ride_in_the_state():
    class Field(_DivergenceField):
        def forward(self, t, states):   # the library's field hands states[2:] to the net
            y = states[0]
            t = torch.tensor(t).type_as(y)
            if self._e is None:
                self._e = torch.randn_like(y)
            with torch.set_grad_enabled(True):
                y.requires_grad_(True)
                t.requires_grad_(True)
                for s in states[2:]:
                    s.requires_grad_(True)
                dy = self.diffeq(t, y, *states[2:])
                e_dzdx = torch.autograd.grad(dy, y, self._e, create_graph=True)[0]
                div = (e_dzdx * self._e).sum(1, keepdim=True)
            return tuple([dy, -div] + [torch.zeros_like(s).requires_grad_(True)
                                       for s in states[2:]])

    x = torch.randn(24, 4, generator=torch.Generator().manual_seed(11))

    def make(lib):
        def build():
            field = Field(_AmortizedDiffEq(2, 16))
            encoder = nn.Linear(4, 2 + 16)
            model = nn.ModuleList([field, encoder])

            def loss_fn(step):
                h = encoder(x)
                z0, bias = h[:, :2], h[:, 2:]
                field.before_odeint()
                states = lib.odeint_adjoint(field, (z0, torch.zeros(24, 1), bias),
                                            torch.tensor([0.0, 0.5]), atol=1e-5, rtol=1e-5,
                                            method="dopri5")
                z, delta_logp = states[0][-1], states[1][-1]
                return (z.square().mean() + delta_logp.mean()
                        + states[2][-1].square().mean())
            return model, loss_fn
        return build

    _assert_agree(*_both(make, iters=2, lr=1e-3), loss_tol=1e-4, grad_tol=1e-3)


# --- augmented neural ODEs: zero-padded state, max_num_steps, and the AssertionError path ---

class _AugField(nn.Module):
    def __init__(self, data_dim, hidden, augment_dim, time_dependent):
        super().__init__()
        self.augment_dim, self.time_dependent, self.nfe = augment_dim, time_dependent, 0
        d = data_dim + augment_dim
        self.fc1 = nn.Linear(d + int(time_dependent), hidden)
        self.fc2, self.fc3 = nn.Linear(hidden, hidden), nn.Linear(hidden, d)
        self.act = nn.ReLU(inplace=True)

    def forward(self, t, x):
        self.nfe += 1
        if self.time_dependent:
            x = torch.cat([torch.ones(x.shape[0], 1) * t, x], 1)
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


class _ConvAugField(nn.Module):
    """Time as an extra channel of every convolution."""

    def __init__(self, channels, filters):
        super().__init__()
        self.c1 = nn.Conv2d(channels + 1, filters, 1)
        self.c2 = nn.Conv2d(filters + 1, filters, 3, padding=1)
        self.c3 = nn.Conv2d(filters + 1, channels, 1)
        self.act, self.nfe = nn.ReLU(inplace=True), 0

    def forward(self, t, x):
        self.nfe += 1

        def with_time(h):
            return torch.cat([torch.ones_like(h[:, :1, :, :]) * t, h], 1)
        h = self.act(self.c1(with_time(x)))
        h = self.act(self.c2(with_time(h)))
        return self.c3(with_time(h))


class _AugBlock(nn.Module):
    def __init__(self, lib, field, adjoint, is_conv=False, tol=1e-3, max_num_steps=1000):
        super().__init__()
        self.lib, self.odefunc, self.adjoint, self.is_conv = lib, field, adjoint, is_conv
        self.tol, self.max_num_steps = tol, max_num_steps

    def forward(self, x, eval_times=None):
        self.odefunc.nfe = 0
        if eval_times is None:
            integration_time = torch.tensor([0, 1]).float().type_as(x)
        else:
            integration_time = eval_times.type_as(x)
        if self.is_conv:
            b, _, h, w = x.shape
            x_aug = torch.cat([x, torch.zeros(b, self.odefunc.augment_dim, h, w)], 1)
        elif self.odefunc.augment_dim > 0:
            x_aug = torch.cat([x, torch.zeros(x.shape[0], self.odefunc.augment_dim)], 1)
        else:
            x_aug = x
        solve = self.lib.odeint_adjoint if self.adjoint else self.lib.odeint
        out = solve(self.odefunc, x_aug, integration_time, rtol=self.tol, atol=self.tol,
                    method="dopri5", options={"max_num_steps": self.max_num_steps})
        return out[1] if eval_times is None else out


@pytest.mark.parametrize("adjoint", [False, True])
def test_augmented_node_mlp_and_conv(adjoint):
    gen = torch.Generator().manual_seed(6)
    r = torch.cat([0.5 * torch.rand(32, generator=gen), 1 + 0.5 * torch.rand(32, generator=gen)])
    angle = 6.283 * torch.rand(64, generator=gen)
    X = torch.stack([r * angle.cos(), r * angle.sin()], 1)
    Y = torch.cat([-torch.ones(32, 1), torch.ones(32, 1)])

    for augment_dim, time_dependent in [(0, False), (1, True)]:
        def make(lib, augment_dim=augment_dim, time_dependent=time_dependent):
            def build():
                block = _AugBlock(lib, _AugField(2, 16, augment_dim, time_dependent), adjoint)
                model = nn.ModuleDict({"block": block,
                                       "linear": nn.Linear(2 + augment_dim, 1)})

                def loss_fn(step):
                    sl = slice(16 * step, 16 * step + 16)
                    pred = model["linear"](block(X[sl]))
                    return nn.SmoothL1Loss()(pred, Y[sl])
                return model, loss_fn
            return build
        _assert_agree(*_both(make, iters=3, lr=1e-3), loss_tol=1e-3, grad_tol=1e-2)

    # A trajectory at several times, as its plotting code asks for.
    torch.manual_seed(0)
    field = _AugField(2, 16, 1, True)
    trajs = [_AugBlock(lib, field, adjoint)(X[:4], eval_times=torch.linspace(0.0, 1.0, 5))
             for lib in BACKENDS.values()]
    assert trajs[0].shape == trajs[1].shape == (5, 4, 3)
    assert _rel(trajs[1].detach(), trajs[0].detach()) < 1e-2   # rtol = atol = 1e-3

    # The convolutional variant on MNIST-shaped random images, classification.
    images = torch.rand(8, 1, 28, 28, generator=gen)
    labels = torch.randint(0, 10, (8,), generator=gen)

    def make_conv(lib):
        def build():
            field = _ConvAugField(2, 8)
            field.augment_dim = 1
            block = _AugBlock(lib, field, adjoint, is_conv=True)
            model = nn.ModuleDict({"block": block, "linear": nn.Linear(2 * 28 * 28, 10)})

            def loss_fn(step):
                feats = block(images)
                return nn.CrossEntropyLoss()(model["linear"](feats.view(8, -1)), labels)
            return model, loss_fn
        return build
    _assert_agree(*_both(make_conv, iters=1, lr=1e-3), loss_tol=1e-4, grad_tol=1e-2)


def _classify_failure(run):
    """What the augmented-ODE experiments do when an epoch fails: catch AssertionError and
    sort it by how torchdiffeq's message begins."""
    try:
        run()
    except AssertionError as e:
        message = e.args[0]
        if message.startswith("max_num_steps"):
            return "exceeded"
        if message.startswith("underflow"):
            return "underflow"
        return "unknown: " + message
    return "no failure"


@pytest.mark.parametrize("adjoint", [False, True])
def test_augmented_node_catches_max_num_steps_as_assertion_error(adjoint):
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(7))
    kinds = {}
    for name, lib in BACKENDS.items():
        torch.manual_seed(0)
        block = _AugBlock(lib, _AugField(2, 16, 1, False), adjoint, tol=1e-9, max_num_steps=2)
        kinds[name] = _classify_failure(lambda block=block: block(x).sum().backward())
    assert kinds["torchdiffeq"] == "exceeded"
    assert kinds["ours"] == kinds["torchdiffeq"]


def test_blow_up_is_caught_as_an_underflow_assertion_error():
    y0, t = torch.tensor([1.0], dtype=F64), torch.tensor([0.0, 2.0], dtype=F64)
    kinds = {name: _classify_failure(lambda lib=lib: lib.odeint(lambda t, y: y**2, y0, t,
                                                                 rtol=1e-3, atol=1e-3))
             for name, lib in BACKENDS.items()}
    assert kinds["torchdiffeq"] == "underflow"
    assert kinds["ours"] == kinds["torchdiffeq"]


# --- odenet_mnist: conv downsampling, an ODE block of GroupNorm + time-concat convs ---

class _ConcatConv(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv = nn.Conv2d(c_in + 1, c_out, 3, 1, 1)

    def forward(self, t, x):
        return self.conv(torch.cat([torch.ones_like(x[:, :1, :, :]) * t, x], 1))


class _ConvField(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (nn.GroupNorm(min(32, dim), dim) for _ in range(3))
        self.conv1, self.conv2 = _ConcatConv(dim, dim), _ConcatConv(dim, dim)
        self.relu, self.nfe = nn.ReLU(inplace=True), 0

    def forward(self, t, x):
        self.nfe += 1
        out = self.conv1(t, self.relu(self.norm1(x)))
        out = self.conv2(t, self.relu(self.norm2(out)))
        return self.norm3(out)


class _MnistODEBlock(nn.Module):
    def __init__(self, solve, field, tol):
        super().__init__()
        self.solve, self.odefunc, self.tol = solve, field, tol
        self.integration_time = torch.tensor([0, 1]).float()

    def forward(self, x):
        self.integration_time = self.integration_time.type_as(x)
        out = self.solve(self.odefunc, x, self.integration_time, rtol=self.tol, atol=self.tol)
        return out[1]


@pytest.mark.parametrize("interface", ["odeint", "odeint_adjoint"])
def test_odenet_mnist_ode_block(interface):
    gen = torch.Generator().manual_seed(8)
    images = torch.rand(8, 1, 28, 28, generator=gen)   # MNIST's shape; no download
    labels = torch.randint(0, 10, (8,), generator=gen)
    c = 16

    def make(lib):
        def build():
            def norm():
                return nn.GroupNorm(min(32, c), c)
            model = nn.Sequential(
                nn.Conv2d(1, c, 3, 1), norm(), nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 4, 2, 1), norm(), nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 4, 2, 1),
                _MnistODEBlock(getattr(lib, interface), _ConvField(c), tol=1e-3),
                norm(), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
                nn.Linear(c, 10))

            def loss_fn(step):
                return nn.CrossEntropyLoss()(model(images), labels)
            return model, loss_fn
        return build

    # At the client's tol = 1e-3, with ReLU and GroupNorm in the field, each library's
    # gradient is 13-30 % from a 1e-9 float64 solve (whose two libraries agree to 1e-3): the
    # gradients can only agree to that; the losses agree far better.
    _assert_agree(*_both(make, iters=2, lr=0.1, optim=torch.optim.SGD, momentum=0.9),
                  loss_tol=1e-3, grad_tol=0.5)


# --- bouncing_ball: odeint_event with parameters in the state, then the dense path ---

class _Ball(nn.Module):
    def __init__(self, lib, adjoint):
        super().__init__()
        self.lib = lib
        self.odeint = lib.odeint_adjoint if adjoint else lib.odeint
        self.gravity = nn.Parameter(torch.tensor([9.8], dtype=F64))
        self.log_radius = nn.Parameter(torch.log(torch.tensor([0.2], dtype=F64)))
        self.t0 = nn.Parameter(torch.tensor([0.0], dtype=F64))
        self.init_pos = nn.Parameter(torch.tensor([10.0], dtype=F64))
        self.init_vel = nn.Parameter(torch.tensor([0.0], dtype=F64))
        self.absorption = nn.Parameter(torch.tensor([0.2], dtype=F64))

    def forward(self, t, state):
        pos, vel, log_radius = state
        return vel, -self.gravity, torch.zeros_like(log_radius)

    def event_fn(self, t, state):
        pos, _, log_radius = state
        return pos - torch.exp(log_radius)

    def bounce(self, state):
        pos, vel, log_radius = state
        return pos + 1e-7, -vel * (1 - self.absorption), log_radius

    def collision_times(self, n):
        t0, state = self.t0, (self.init_pos, self.init_vel, self.log_radius)
        times = []
        for _ in range(n):
            event_t, solution = self.lib.odeint_event(
                self, state, t0, event_fn=self.event_fn, reverse_time=False,
                atol=1e-8, rtol=1e-8, odeint_interface=self.odeint)
            times.append(event_t)
            state = self.bounce(tuple(s[-1] for s in solution))
            t0 = event_t
        return times

    def path(self, event_t):
        t0, state = self.t0, (self.init_pos, self.init_vel, self.log_radius)
        tt = torch.linspace(float(t0), float(event_t), 20)[1:-1]
        tt = torch.cat([t0.reshape(-1), tt, event_t.reshape(-1)])
        return self.lib.odeint(self, state, tt, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("adjoint", [False, True])
def test_bouncing_ball_collision_times_gradients_and_path(adjoint):
    results = {}
    for name, lib in BACKENDS.items():
        ball = _Ball(lib, adjoint)
        times = ball.collision_times(2)
        times[-1].backward()
        grads = {k: p.grad.clone() for k, p in ball.named_parameters() if p.grad is not None}
        pos, vel, _ = ball.path(times[0])
        results[name] = [float(t) for t in times], grads, pos.detach(), vel.detach()
    t_ours, g_ours, pos_ours, vel_ours = results["ours"]
    t_theirs, g_theirs, pos_theirs, vel_theirs = results["torchdiffeq"]
    first = math.sqrt(2 * (10.0 - 0.2) / 9.8)
    assert t_ours[0] == pytest.approx(first, abs=1e-7)
    assert t_ours == pytest.approx(t_theirs, abs=1e-7)
    assert set(g_ours) == set(g_theirs)
    for k in g_theirs:
        assert g_ours[k].item() == pytest.approx(g_theirs[k].item(), rel=1e-5, abs=1e-8), k
    assert pos_ours.shape == pos_theirs.shape == (20, 1)
    assert _rel(pos_ours, pos_theirs) < 1e-7 and _rel(vel_ours, vel_theirs) < 1e-7


# --- learn_physics: a learned event function whose parameters ride in the state ---

class _Wall(nn.Module):
    def __init__(self):
        super().__init__()
        self.height = nn.Parameter(torch.tensor([0.5], dtype=F64))

    def forward(self, t, state):
        return state[0] - state[2]          # the wall's height travels in the state


class _Falling(nn.Module):
    def __init__(self):
        super().__init__()
        self.gravity = nn.Parameter(torch.tensor([2.0], dtype=F64))

    def forward(self, t, state):
        pos, vel, h = state
        return vel, -self.gravity * torch.ones_like(vel), torch.zeros_like(h)


@pytest.mark.parametrize("interface", ["odeint", "odeint_adjoint"])
def test_learn_physics_event_parameters_in_the_state(interface):
    out = {}
    for name, lib in BACKENDS.items():
        wall, dynamics = _Wall(), _Falling()
        end = torch.tensor(5.0, dtype=F64)

        def event_fn(t, state, wall=wall, end=end):
            if t > end + 1e-7:                # a terminal time folded into the event
                return torch.zeros_like(t)
            return wall(t, state)

        # For gradients through the event function, its parameters must be in the state.
        state = (torch.tensor([3.0], dtype=F64), torch.tensor([0.5], dtype=F64),
                 *wall.parameters())
        event_t, solution = lib.odeint_event(
            dynamics, state, torch.tensor([0.0], dtype=F64), event_fn=event_fn, atol=1e-8,
            rtol=1e-8, method="dopri5", odeint_interface=getattr(lib, interface))
        ts = torch.cat([torch.zeros(1, dtype=F64),
                        torch.linspace(0.1, 0.9, 5, dtype=F64) * event_t.reshape(-1)])
        path = lib.odeint(dynamics, state, ts, atol=1e-8, rtol=1e-8)[0]
        loss = event_t.sum() + path.square().mean()
        loss.backward()
        out[name] = (event_t.item(), solution[0][-1].item(), loss.item(),
                     dynamics.gravity.grad.item(), wall.height.grad.item())
    s = (0.5 + math.sqrt(0.25 + 4 * 2.5)) / 2     # 3 + 0.5 s - s^2 = 0.5
    assert out["torchdiffeq"][0] == pytest.approx(s, abs=1e-7)
    assert out["ours"][0] == pytest.approx(s, abs=1e-7)
    assert out["ours"][1] == pytest.approx(0.5, abs=1e-7)
    assert out["ours"][2:] == pytest.approx(out["torchdiffeq"][2:], rel=1e-6)


# --- a latent-ODE library: ODE-RNN encoder backwards in time, 3-D states, prior samples ---

class _GenField(nn.Module):
    """The library's field signature: ``forward(t_local, y, backwards=False)``."""

    def __init__(self, latent, units=20):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent, units), nn.Tanh(), nn.Linear(units, latent))

    def forward(self, t_local, y, backwards=False):
        grad = self.net(y)
        return -grad if backwards else grad

    def sample_next_point_from_prior(self, t_local, y):
        return self.net(y)


class _Solver(nn.Module):
    def __init__(self, lib, field, method, rtol=1e-3, atol=1e-4):
        super().__init__()
        self.lib, self.ode_func, self.method, self.rtol, self.atol = lib, field, method, rtol, atol

    def forward(self, first_point, times):
        pred = self.lib.odeint(self.ode_func, first_point, times, rtol=self.rtol,
                               atol=self.atol, method=self.method)
        pred = pred.permute(1, 2, 0, 3)
        assert torch.mean(pred[:, :, 0, :] - first_point) < 0.001
        return pred

    def sample_from_prior(self, start, times):
        pred = self.lib.odeint(self.ode_func.sample_next_point_from_prior, start, times,
                               rtol=self.rtol, atol=self.atol, method=self.method)
        return pred.permute(1, 2, 0, 3)


class _ODERNNEncoder(nn.Module):
    """Runs the hidden state backwards from the last observation to the first, with an Euler
    step where an interval is short and an 'euler' solve on a linspace grid otherwise."""

    def __init__(self, lib, latent, obs):
        super().__init__()
        self.latent = latent
        self.solver = _Solver(lib, _GenField(latent), "euler")
        self.gru = nn.GRUCell(obs, latent)
        self.out = nn.Linear(latent, 2 * latent)

    def forward(self, data, times):
        n_traj = data.shape[0]
        prev_y = torch.zeros(1, n_traj, self.latent)
        prev_t, minimum_step = times[-1] + 0.01, (times[-1] - times[0]) / 50
        for i in reversed(range(len(times))):
            t_i = times[i]
            if prev_t - t_i < minimum_step:
                inc = self.solver.ode_func(prev_t, prev_y) * (t_i - prev_t)
                sol = torch.stack((prev_y, prev_y + inc), 2)
            else:
                n = max(2, int((prev_t - t_i) / minimum_step))
                sol = self.solver(prev_y, torch.linspace(float(prev_t), float(t_i), n))
            y = self.gru(data[:, i, :], sol[0, :, -1, :]).unsqueeze(0)
            prev_y, prev_t = y, t_i
        mean, logstd = self.out(prev_y).chunk(2, dim=-1)
        return mean, logstd.exp()


def test_latent_ode_library_odernn_encoder_and_3d_states():
    gen = torch.Generator().manual_seed(9)
    times = torch.linspace(0.0, 5.0, 20)
    data = (torch.sin(times[None, :, None] * (1 + torch.rand(8, 1, 1, generator=gen)))
            + 0.01 * torch.randn(8, 20, 1, generator=gen))
    latent, n_samples = 4, 3

    def make(lib):
        def build():
            encoder = _ODERNNEncoder(lib, latent, 1)
            gen_solver = _Solver(lib, _GenField(latent), "dopri5")
            decoder = nn.Linear(latent, 1)
            model = nn.ModuleList([encoder, gen_solver, decoder])
            noise = torch.Generator().manual_seed(10)

            def loss_fn(step):
                mean, std = encoder(data, times)                    # (1, n_traj, latent)
                eps = torch.randn(n_samples, *mean.shape[1:], generator=noise)
                z0 = mean + std * eps                               # (samples, n_traj, latent)
                pred = decoder(gen_solver(z0, times))               # (samples, n_traj, T, 1)
                loglik = -0.5 * ((pred - data[None]) / 0.01).pow(2).mean((-1, -2))
                kl = (std.log().neg() + 0.5 * (std**2 + mean**2) - 0.5).sum(-1)
                return -(loglik.mean(0) - 0.1 * kl).mean()
            return model, loss_fn
        return build

    _assert_agree(*_both(make, iters=3, lr=1e-2), loss_tol=1e-3, grad_tol=1e-2)

    # Sampling from the prior through a bound method that is not a module.
    out = []
    for lib in BACKENDS.values():
        torch.manual_seed(0)
        solver = _Solver(lib, _GenField(latent), "dopri5")
        start = torch.randn(n_samples, 5, latent)
        with torch.no_grad():
            out.append(solver.sample_from_prior(start, times))
    assert out[0].shape == out[1].shape == (n_samples, 5, 20, latent)
    assert _rel(out[1], out[0]) < 1e-3
