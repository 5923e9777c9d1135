"""The checks' answers to slips found in review: one example each."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from neuralode_helpers import exercises as ex


@pytest.fixture(autouse=True)
def _fresh_hints():
    ex.reset_hints()
    yield
    ex.reset_hints()


def _slope(t):
    return torch.sin(t) * torch.exp(1 - torch.cos(t))


class _SinCos(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, t, z):
        t = torch.as_tensor(t, dtype=z.dtype).expand(z.shape[:-1])
        return self.net(torch.cat([z, torch.sin(t)[..., None], torch.cos(t)[..., None]], -1))


class _Buggy(_SinCos):
    def forward(self, t, z):
        raise RuntimeError("bug in my forward")


class _ZFirst(_SinCos):
    def forward(self, z, t):  # the slip: state first
        return super().forward(t, z)


def test_an_unrelated_error_gets_no_broadcast_hint_and_leaves_no_state():
    for _ in range(3):
        with pytest.raises(AssertionError) as info:
            ex.check_sincos_field(_Buggy)
        message = str(info.value)
        assert "bug in my forward" in message
        assert "expand" not in message and "copy of t" not in message
    # fixing the bug: the next answer is judged on its own
    assert ex.check_sincos_field(_SinCos) is True


def test_a_broadcast_error_gets_the_broadcast_hint_the_second_time():
    class NoBroadcast(_SinCos):
        def forward(self, t, z):
            return self.net(torch.cat([z, torch.sin(t)[..., None], torch.cos(t)[..., None]], -1))

    with pytest.raises(AssertionError, match="0-d t"):
        ex.check_sincos_field(NoBroadcast)
    with pytest.raises(AssertionError, match="copy of t"):
        ex.check_sincos_field(NoBroadcast)


@pytest.mark.parametrize("check, answer", [
    (ex.check_same_family_field, lambda z, t: _slope(t) * torch.ones_like(z)),
    (ex.check_sincos_field, _ZFirst),
    (ex.check_windowed_field, lambda f, t0, delta: (lambda z, s: delta * f(t0 + s * delta, z))),
])
def test_a_field_written_z_first_is_told_time_first(check, answer):
    with pytest.raises(AssertionError, match="time first"):
        check(answer)


def test_a_swapped_field_with_other_names_is_told_time_first():
    def field(a, b):  # reads (z, t) under names the signature does not give away
        return _slope(b) * torch.ones_like(a)

    with pytest.raises(AssertionError, match="time first"):
        ex.check_same_family_field(field)


def test_a_field_that_breaks_on_an_unbatched_state_is_rejected():
    def no_broadcast(t, z):  # right for t and z of one shape; a 0-d t gives a 0-d slope
        return _slope(t)

    with pytest.raises(AssertionError, match="0-d t and z of shape \\(1,\\)"):
        ex.check_same_family_field(no_broadcast)


def test_windowed_field_without_t0_is_a_hint_not_an_index_error():
    with pytest.raises(AssertionError, match="misses t0") as info:
        ex.check_windowed_field(lambda f, t0, delta: (lambda s, z: delta * f(s * delta, z)))
    assert "IndexError" not in str(info.value)


@pytest.mark.parametrize("wrap", [
    lambda x: np.array([x]), lambda x: np.float64(x), lambda x: np.array(x, dtype=np.float32),
    lambda x: torch.tensor([x], dtype=torch.float32),
])
def test_dL_dt0_takes_a_one_element_array(wrap, capsys):
    def answer(lam, z0, t0, t1):
        return wrap(-math.exp(lam * (t1 - t0)) * lam * z0)

    assert ex.check_dL_dt0(answer) is True


def test_messages_say_a_numpy_array():
    with pytest.raises(AssertionError, match="a NumPy array of shape \\(2,\\)"):
        ex.check_dL_dt0(lambda lam, z0, t0, t1: np.array([1.0, 2.0]))
    with pytest.raises(AssertionError, match="got a NumPy array of shape \\(5, 2\\)") as info:
        ex.check_cubic_field(lambda A, z: (z.numpy() ** 3) @ A.numpy().T)
    assert "instance of ndarray" not in str(info.value)
    with pytest.raises(TypeError, match="got a NumPy array of shape \\(3,\\)"):
        ex.check_cubic_field(np.ones(3))


def test_the_toy_field_is_named_not_numbered():
    ex.reset_hints()
    with pytest.raises(AssertionError) as info:
        ex.check_same_family_field(lambda t, z: torch.sin(t) * z)
    assert "toy problem's field" in str(info.value) and "section 4" not in str(info.value)


def test_a_step_that_calls_the_field_state_first_is_told_time_first():
    def swapped(f, t, z, h):
        return z + h * f(z + h / 2 * f(z, t), t + h / 2)

    with pytest.raises(AssertionError, match="time first"):
        ex.check_midpoint_step(swapped)
