"""No check gives its answer away: not in a hint, whatever the wrong answer and however often it
is tried, and not in its source (``check_cubic_field??``), which compares with numbers, autograd,
an exact solution or a different formulation, never with the worked solution's code.
"""

import inspect
import re
from pathlib import Path

import pytest
import torch
from test_exercises import DATA_CHECKS, TABLE, _answer, solution

from neuralode_helpers import exercises as ex

SOLUTIONS_DIR = Path(__file__).resolve().parents[1] / "notebooks" / "solutions"
CHECKS = sorted(name for name in dir(ex) if name.startswith("check_"))

# Text that would state a result: the worked solutions' formulas, as code and as prose.
ANSWER_TEXT = {
    "check_same_family_field": ["sin(t) * torch.exp", "sin t · e^(1", "sin t e^(1"],
    "check_midpoint_step": ["h / 2 * f(t, z)", "f(t + h / 2", "f(t + h/2", "h/2 · f(t, z)"],
    "check_dL_dt0": ["-lam * z0", "-lam z0", "-a_t0 * lam", "-a(t0) f(z0)"],
    "check_vjp_tanh": ["W.T @ (s * a)", "W^T (s * a)", "outer(s * a", "outer(sa, z)",
                       "W.T @ sa"],
    "check_windowed_field": ["delta * f(t0 + s", "delta f(t0 + s", "t0 + s * delta"],
    "check_aug": ["grad_outputs=-a"],
    "check_sincos_field": ["torch.cat([z", "t.expand(z.shape"],
    "check_window_targets": ["linspace(0, 1, n_obs", "k / (n_obs - 1)",
                             "window * s[:, None]"],
    "check_checkpoint_times": ["ceil(lam * (t1 - t0) / 5", "linspace(t0, t1, n + 1"],
    "check_speed_penalty": ["square().sum(-1).mean()", "sum over d of"],
    "check_cubic_field": ["(z**3) @ A.T", "(z**3) @ M.T", "z_b^T A^T", "transpose of A"],
    "check_kl_to_prior": ["mu**2 + logvar.exp() - logvar - 1", "e^l - l - 1",
                          "mu_j^2 + e^l_j"],
    "check_divergence": ["entry i of the gradient of output i"],
    "check_hutchinson": ["generator=generator"],
    "check_resnet_euler": ["h_l + (1/L) f_l(h_l)", "h + f(h) / L", "z + f(z) / K"],
    "check_augmented_flow": ["torch.cat([x", "[:, :d]", "from [x, 0_p]"],
    "check_gauss_legendre": ["half * sum(", "0.5 * (hi - lo)", "mid + half * x"],
    "check_steer_range": ["for _ in range(2000)"],
    "check_radau_stiff": ["on_divergence=\"ignore\"", "method=\"scipy:Radau\""],
}


def solution_code_lines():
    """{solution file: lines of its answer's code}: what a check's source must not hold."""
    found = {}
    for path in sorted(SOLUTIONS_DIR.glob("*.py")):
        lines = []
        for line in path.read_text(encoding="utf-8").splitlines():
            code = line.split("#")[0].strip()
            if line.startswith((" ", "\t")) and len(code) >= 16 and not code.startswith(
                    ("import ", "from ", "def ", "print(", "with torch.")):
                lines.append(code)
        found[path.name] = lines
    return found


def _source(name):
    check = getattr(ex, name)
    return inspect.getsource(getattr(check, "__wrapped__", check))


def test_every_check_has_its_answer_text():
    assert sorted(ANSWER_TEXT) == CHECKS


@pytest.mark.parametrize("name", CHECKS)
def test_the_source_of_a_check_holds_no_answer(name):
    source = _source(name)
    for text in ANSWER_TEXT[name]:
        assert text not in source, (name, text)
    file = TABLE[name][0][0]
    for line in solution_code_lines()[file]:  # the worked answer's own code
        assert line not in source, (name, file, line)


def _perturbed(value):
    """A wrong answer no check recognises: every number the answer returns, moved."""
    if callable(value) and not isinstance(value, type | torch.nn.Module):
        return lambda *args: _perturbed(value(*args))
    if torch.is_tensor(value) or type(value).__module__ == "numpy":
        return value * 1.37 + 0.11
    if isinstance(value, float | int) and not isinstance(value, bool):
        return value * 1.37 + 0.11
    if isinstance(value, tuple | list):
        return type(value)(_perturbed(v) for v in value)
    return value


SLOW = {"check_radau_stiff"}  # seconds per try: the table's mistakes only


def _mistakes(name):
    """The usual mistakes for a check: the table's, and the worked answer moved a little."""
    (file, fn_name), _, wrong, _ = TABLE[name]
    answers = [_answer(a) for a, _ in wrong]
    if name in SLOW:
        return answers
    worked = solution(file, fn_name)
    if name in DATA_CHECKS:
        answers.append(_perturbed(worked))
    elif not isinstance(worked, type):
        answers.append(lambda *args: _perturbed(worked(*args)))
        answers.append(lambda *args: None)  # a missing return
    return answers


@pytest.mark.parametrize("name", sorted(TABLE))
def test_no_hint_states_the_answer_however_often_it_is_tried(name, capsys):
    check = getattr(ex, name)
    forbidden = list(ANSWER_TEXT[name])
    forbidden += solution_code_lines()[TABLE[name][0][0]]
    ex.reset_hints()
    for answer in _mistakes(name):
        for _ in range(3):  # the first hint, then the fuller ones
            with pytest.raises(AssertionError) as info:
                check(answer)
            message = str(info.value)
            for text in forbidden:
                assert text not in message, (name, text, message)
    capsys.readouterr()
    ex.reset_hints()


def test_a_different_mistake_starts_at_the_first_tier():
    def euler(f, t, z, h):
        return z + h * f(t, z)

    def slope(f, t, z, h):
        return f(t + h / 2, z + h / 2 * f(t, z))

    with pytest.raises(AssertionError, match="Run the check again"):
        ex.check_midpoint_step(euler)
    with pytest.raises(AssertionError, match="Run the check again"):
        ex.check_midpoint_step(slope)  # another mistake: its first hint, not a fuller one
    with pytest.raises(AssertionError) as info:
        ex.check_midpoint_step(euler)  # the same mistake again: the fuller hint
    assert "Run the check again" not in str(info.value)
    assert re.search("middle of the step", str(info.value))
