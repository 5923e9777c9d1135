"""Batched training on the toy problem: rescaling, loss, interruption, save/load."""

import pytest
import torch

import neuralode_helpers as nh

F64 = torch.float64


def test_windowed_field_equals_solving_each_window_in_real_time():
    torch.manual_seed(0)
    model = nh.ODENet().double()
    t0 = torch.tensor([-1.0, 2.5, 7.0], dtype=F64)
    delta = 1.3
    z0 = torch.tensor([[1.0], [2.0], [3.0]], dtype=F64)
    s = torch.linspace(0, 1, 4, dtype=F64)
    batched = nh.odeint(nh.WindowedField(model, t0, delta), z0, s, rtol=1e-10, atol=1e-12)
    for b in range(3):
        alone = nh.odeint(model, z0[b], t0[b] + delta * s, rtol=1e-10, atol=1e-12)
        assert torch.allclose(batched[:, b], alone, rtol=1e-8, atol=1e-10)


def test_batched_loss_is_mean_of_per_window_losses():
    torch.manual_seed(0)
    model = nh.ODENet().double()
    t0 = torch.tensor([0.0, 3.0, 8.5], dtype=F64)
    c = torch.tensor([0.0, 0.5, -0.5], dtype=F64)
    kw = dict(rtol=1e-10, atol=1e-12)
    batched = nh.window_loss(model, t0, c, **kw)
    single = torch.stack([nh.window_loss(model, t0[i:i + 1], c[i:i + 1], **kw)
                          for i in range(3)])
    assert torch.allclose(batched, single.mean(), rtol=1e-8)


def test_training_reduces_the_loss_and_records_nfe():
    torch.manual_seed(0)
    model = nh.ODENet()
    # a fixed evaluation batch, the same before and after training
    t0 = torch.linspace(-1, 9, 50)
    c = torch.zeros(50)
    with torch.no_grad():
        before = nh.window_loss(model, t0, c, adjoint=False).item()
    result = nh.train(model, steps=80, batch_size=32, lr=1e-2, progress=False, seed=1)
    with torch.no_grad():
        after = nh.window_loss(model, t0, c, adjoint=False).item()
    assert after < 0.5 * before
    assert len(result.losses) == len(result.nfe_forward) == len(result.nfe_backward) == 80
    assert min(result.nfe_forward) > 0 and min(result.nfe_backward) > 0
    assert result.seconds > 0 and not result.interrupted


def test_keyboard_interrupt_stops_cleanly_and_keeps_history():
    model = nh.ODENet()

    def stop_at_3(step, loss):
        if step == 3:
            raise KeyboardInterrupt

    result = nh.train(model, steps=50, batch_size=8, progress=False, callback=stop_at_3)
    assert result.interrupted
    assert len(result.losses) == 4
    # the model is still usable
    assert torch.isfinite(nh.fit_curves(model, n=5)[2]).all()


def test_interrupt_in_backward_keeps_regulariser_lists_in_step(monkeypatch):
    # Ctrl-C while loss.backward() runs: every list holds one entry per completed step (the
    # RNODE terms used to be recorded before backward, one entry ahead of the losses).
    model = nh.ODENet()
    calls = {"n": 0}
    original = torch.Tensor.backward

    def backward(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "backward", backward)
    result = nh.train(model, steps=10, batch_size=4, progress=False,
                      regulariser=nh.RNODE(kinetic=0.01, jacobian=0.01), steer=0.5)
    assert result.interrupted
    assert (len(result.losses) == len(result.kinetic) == len(result.jacobian)
            == len(result.end_times) == len(result.nfe_forward) == 2)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = nh.ODENet(state_dim=2, hidden=(8, 4))
    path = tmp_path / "model.pt"
    nh.save_model(model, path)
    loaded = nh.load_model(path)
    z = torch.randn(5, 2)
    t = torch.tensor(0.3)
    assert torch.equal(model(t, z), loaded(t, z))
    assert loaded.hidden == (8, 4) and loaded.state_dim == 2


def test_fit_curves_start_from_the_true_initial_value():
    model = nh.ODENet()
    t, z_true, z_pred = nh.fit_curves(model, c=0.5, t_start=-2.0, t_end=3.0, n=11)
    assert t[0] == -2.0 and t[-1] == 3.0 and len(t) == 11
    assert torch.allclose(z_true, nh.toy_solution(t, 0.5))
    assert z_pred[0] == z_true[0]


def test_learning_rate_schedules():
    from neuralode_helpers.training import lr_factor

    # both schedules start at 1 and end at lr_final / lr; cosine stays above exponential
    for schedule in ("exponential", "cosine"):
        assert lr_factor(0, 100, 0.1, 1e-3, schedule) == 1.0
        assert abs(lr_factor(100, 100, 0.1, 1e-3, schedule) - 1e-2) < 1e-12
    assert abs(lr_factor(50, 100, 0.1, 1e-3, "exponential") - 0.1) < 1e-12
    assert abs(lr_factor(50, 100, 0.1, 1e-3, "cosine") - (1e-2 + 0.99 * 0.5)) < 1e-12
    # a linear warm-up scales the first steps
    assert abs(lr_factor(0, 100, 0.1, None, warmup=10) - 0.1) < 1e-12
    assert lr_factor(9, 100, 0.1, None, warmup=10) == 1.0
    assert lr_factor(20, 100, 0.1, None) == 1.0


def test_train_rejects_bad_arguments():
    import pytest

    model = nh.ODENet()
    with pytest.raises(ValueError, match="schedule"):
        nh.train(model, steps=1, schedule="linear", progress=False)
    with pytest.raises(ValueError, match="n_obs must be >= 2, got 1"):
        nh.train(model, steps=1, n_obs=1, progress=False)
    bad = [
        (dict(steps=2.5), TypeError, "steps must be an int, got float"),
        (dict(steps=-1), ValueError, "steps must be >= 0"),
        (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
        (dict(warmup=1.0), TypeError, "warmup must be an int"),
        (dict(lr=-1.0), ValueError, "lr must be a positive number"),
        (dict(lr_final=float("nan")), ValueError, "lr_final must be a non-negative number"),
        (dict(weight_decay=-0.1), ValueError, "weight_decay must be a non-negative"),
        (dict(window=0.0), ValueError, "window must be a positive number"),
        (dict(t0_range=(9.0, -1.0)), ValueError, "t0_range must be finite with low <= high"),
        (dict(c_range=1.0), TypeError, r"c_range must be a pair of numbers"),
    ]
    for kwargs, error, match in bad:
        with pytest.raises(error, match=match):
            nh.train(model, progress=False, **dict(dict(steps=1), **kwargs))
    # what is trained must be a module with parameters: a plain field has none
    with pytest.raises(TypeError, match=r"nn.Module with parameters to fit .*got function"):
        nh.train(lambda t, z: -z, steps=1, progress=False)
    with pytest.raises(TypeError, match="got NoneType"):
        nh.train(None, steps=1, progress=False)
    frozen = nh.ODENet().requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters that require grad"):
        nh.train(frozen, steps=1, progress=False)
    # lr_final=None keeps the rate constant, and a window of equal bounds is fine
    nh.train(model, steps=1, lr_final=None, t0_range=(2.0, 2.0), progress=False)


def test_window_loss_takes_numbers_and_lists():
    torch.manual_seed(0)
    model = nh.ODENet().double()
    t0 = torch.tensor([0.5, 2.0], dtype=F64)
    kw = dict(rtol=1e-10, atol=1e-12)
    expected = nh.window_loss(model, t0, torch.zeros(2, dtype=F64), **kw)
    assert torch.equal(nh.window_loss(model, [0.5, 2.0], 0.0, **kw), expected)
    single = nh.window_loss(model, 0.5, 0.0, **kw)
    assert torch.equal(single, nh.window_loss(model, t0[:1], torch.zeros(1, dtype=F64), **kw))
    with pytest.raises(ValueError, match="2 starts and 3 offsets"):
        nh.window_loss(model, t0, [0.0, 0.1, 0.2])
    with pytest.raises(ValueError, match="t0 must be 1-D"):
        nh.window_loss(model, torch.zeros(2, 2), 0.0)
    with pytest.raises(TypeError, match="t0 must be a number or a 1-D tensor"):
        nh.window_loss(model, "0.5", 0.0)


def test_odenet_arguments():
    torch.manual_seed(0)
    assert nh.ODENet(hidden=50).hidden == (50,)
    net = nh.ODENet(hidden=(8, 8), activation=torch.nn.PReLU())
    prelus = [m for m in net.net if isinstance(m, torch.nn.PReLU)]
    # an activation given as a module is copied per layer: no shared parameters
    assert len(prelus) == 2 and prelus[0].weight is not prelus[1].weight
    assert net(torch.tensor(0.0), torch.zeros(3, 1)).shape == (3, 1)
    for kwargs, match in [(dict(state_dim=0), "state_dim must be a positive int"),
                          (dict(hidden=(50, 0)), "hidden must be positive ints"),
                          (dict(hidden=(50.0,)), "hidden must be positive ints")]:
        with pytest.raises(ValueError, match=match):
            nh.ODENet(**kwargs)
    with pytest.raises(TypeError, match="activation must be an nn.Module class"):
        nh.ODENet(activation=torch.tanh)


def test_train_applies_the_schedule_and_solver_options():
    model = nh.ODENet()
    seen = []
    nh.train(model, steps=4, batch_size=4, lr=0.1, lr_final=None, warmup=4, progress=False,
             method="rk4", options={"step_size": 0.25},
             callback=lambda step, loss: seen.append(step))
    assert seen == [0, 1, 2, 3]
    stats = nh.Stats()
    t0, c = torch.zeros(3), torch.zeros(3)
    nh.window_loss(model, t0, c, method="rk4", options={"step_size": 0.25}, stats=stats)
    assert stats.forward.nfe == 16  # 4 rk4 steps of 4 evaluations on s in [0, 1]


def test_sincos_time_input_is_periodic_and_survives_save_and_load(tmp_path):
    torch.manual_seed(0)
    model = nh.ODENet(time_input="sincos")
    assert model.net[0].in_features == 3  # z, sin t, cos t
    z = torch.randn(5, 1)
    t = torch.linspace(-1, 3, 5)
    assert torch.allclose(model(t, z), model(t + 2 * torch.pi, z), atol=1e-5)
    assert not torch.allclose(model(t, z), model(t, z + 1.0))  # it still sees z
    path = tmp_path / "model.pt"
    nh.save_model(model, path)
    assert torch.equal(nh.load_model(path)(t, z), model(t, z))


def test_time_input_must_be_t_or_sincos():
    with pytest.raises(ValueError, match="time_input"):
        nh.ODENet(time_input="fourier")
