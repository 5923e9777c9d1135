"""The exercises of notebooks 00-07, checked the way readers call them.

For every check: the worked solution and a float32 variant pass; typical wrong answers get a
hint (AssertionError) that names the mistake; garbage (None, a string, a tensor or number
instead of a function, an instance instead of a class) gets one sentence (TypeError); neither
the docstring nor a first hint gives the answer away; later hints go further.
"""

import inspect
import math
import re
import runpy
from pathlib import Path

import pytest
import torch
from torch import nn

from neuralode_helpers import exercises as ex
from neuralode_helpers import toy_solution

SOLUTIONS_DIR = Path(__file__).resolve().parents[1] / "notebooks" / "solutions"
SOLUTIONS = sorted(p for p in SOLUTIONS_DIR.glob("*.py") if "check_" in p.read_text())
# Worked answers to the open-ended ★★★ questions: a write-up, with code where it helps.
ANSWERS = sorted(p for p in SOLUTIONS_DIR.glob("*.py")
                 if "★★★ (worked " in p.read_text().split("\n", 1)[0])
# Solutions that check themselves with their own asserts (no check_ function in exercises).
SELF_CHECKED = sorted(p for p in SOLUTIONS_DIR.glob("*.py")
                      if p not in SOLUTIONS and p not in ANSWERS)
NOTEBOOKS = sorted(SOLUTIONS_DIR.parent.glob("[0-9][0-9]-*.ipynb"))
CHECKS = sorted(name for name in dir(ex) if name.startswith("check_"))


@pytest.fixture(autouse=True)
def _fresh_hints():
    ex.reset_hints()  # every test starts at the first tier of hints
    yield
    ex.reset_hints()


def solution(file, name):
    """The reader-facing worked solution (running the file also runs its check once)."""
    return runpy.run_path(str(SOLUTIONS_DIR / file))[name]


def as_float32(fn):
    """The same answer computed in float32: every tensor argument is cast first."""
    def answer(*args):
        return fn(*(a.float() if torch.is_tensor(a) and a.is_floating_point() else a
                    for a in args))
    return answer


def _s(W, z):
    return 1 - torch.tanh(W @ z) ** 2


def _vjp_with_autograd(W, z, a):
    W, z = W.clone().requires_grad_(True), z.clone().requires_grad_(True)
    out = torch.tanh(W @ z)
    return torch.autograd.grad(out, (z, W), grad_outputs=a)


def _window_targets_float32(t0, c, n_obs, window=1.0):
    s = torch.linspace(0, 1, n_obs)  # float32 by default, as in notebook 03
    return toy_solution(t0[None, :] + window * s[:, None], c[None, :]).unsqueeze(-1)


def _checkpoints_float32(t0, t1, lam):
    n = max(1, math.ceil(lam * (t1 - t0) / 5))
    return torch.linspace(t0, t1, n + 1)  # float32, as in notebook 04


def _checkpoints_uneven(t0, t1, lam):
    n = max(1, math.ceil(lam * (t1 - t0) / 5))
    even = torch.linspace(t0, t1, n + 2, dtype=torch.float64)
    return torch.cat([even[:1], even[2:]])  # the first gap twice the others


def _augmented_flow_float32(field, x, p):
    from neuralode_helpers import odeint

    z0 = torch.cat([x, x.new_zeros(*x.shape[:-1], p)], dim=-1)
    t = torch.tensor([0.0, 1.0])  # float32 whatever x is
    return odeint(field, z0.to(t.dtype), t, method="dopri5", rtol=1e-6, atol=1e-8)[-1][
        ..., :x.shape[-1]]


def _flow(field, z0):
    from neuralode_helpers import odeint

    return odeint(field, z0, torch.tensor([0.0, 1.0], dtype=z0.dtype), method="dopri5",
                  rtol=1e-7, atol=1e-9)


def _pad(x, p, value=0.0, front=False):
    extra = torch.full((*x.shape[:-1], p), value, dtype=x.dtype)
    return torch.cat([extra, x] if front else [x, extra], -1)


def _jacobian_rows(f, z):
    z = z.detach().requires_grad_(True)
    out = f(z)
    return [torch.autograd.grad(out[:, i].sum(), z, retain_graph=True)[0]
            for i in range(z.shape[1])]


def _vjp(f, z, eps):
    z = z.detach().requires_grad_(True)
    return torch.autograd.grad((f(z) * eps).sum(), z)[0]


class _SinCosField64(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1)).double()

    def forward(self, t, z):
        t = torch.as_tensor(t, dtype=z.dtype).expand(z.shape[:-1])
        return self.net(torch.cat([z, torch.sin(t)[..., None], torch.cos(t)[..., None]], -1))


class _RawTimeField(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(2, 1)

    def forward(self, t, z):
        t = torch.as_tensor(t, dtype=z.dtype).expand(z.shape[:-1])
        return self.net(torch.cat([z, t[..., None]], -1))


class _NoZField(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(2, 1)

    def forward(self, t, z):
        t = torch.as_tensor(t, dtype=z.dtype).expand(z.shape[:-1])
        return self.net(torch.stack([torch.sin(t), torch.cos(t)], -1))


class _NoCosField(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, t, z):
        t = torch.as_tensor(t, dtype=z.dtype).expand(z.shape[:-1])
        return self.net(torch.cat([z, torch.sin(t)[..., None]], -1))


class _NoBroadcastField(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(3, 1)

    def forward(self, t, z):
        return self.net(torch.cat([z, torch.sin(t)[..., None], torch.cos(t)[..., None]], -1))


def _hutchinson_with(probe):
    def answer(f, z, g):
        eps = probe(z, g)
        return (_vjp(f, z, eps) * eps).sum(-1)
    return answer


def _randn(z, g):
    return torch.randn(z.shape, generator=g, dtype=z.dtype)


def _unit_norm(z, g):
    eps = _randn(z, g)
    return eps / eps.norm(dim=-1, keepdim=True)


def _uniform(z, g):
    return torch.rand(z.shape, generator=g, dtype=z.dtype)


def _gauss_legendre_float32(g, lo, hi, n):
    import numpy as np

    nodes, weights = (a.astype(np.float32) for a in np.polynomial.legendre.leggauss(n))
    mid, half = np.float32(0.5 * (lo + hi)), np.float32(0.5 * (hi - lo))
    return half * sum(w * g(mid + half * x) for x, w in zip(nodes, weights))


def _gauss_legendre_unmapped(g, lo, hi, n):
    import numpy as np

    nodes, weights = np.polynomial.legendre.leggauss(n)
    return sum(w * g(x) for x, w in zip(nodes, weights))


def _gauss_legendre_extra_node(g, lo, hi, n):
    return _gauss_legendre_float32(g, lo, hi, n + 1)


def _steer_ends(b, n=2000, dtype=torch.float64):
    from neuralode_helpers import sample_end_time

    generator = torch.Generator().manual_seed(0)
    return torch.tensor([sample_end_time(0.0, 1.0, b, generator) for _ in range(n)],
                        dtype=dtype)


def _radau_float32(p, restore_z):
    worked = solution("08_radau_stiff.py", "radau_backsolve")
    return worked({k: v.float() if k != "exact" else v for k, v in p.items()}, restore_z)


def _radau_with_dopri5(p, restore_z):
    return solution("08_radau_stiff.py", "radau_backsolve")(p, restore_z, "dopri5")


def _resnet(blocks, h, scale=True):
    for f in blocks:
        h = h + f(h) / (len(blocks) if scale else 1)
    return h


# For each check: (solution file, its function), a float32 variant (None: cast the inputs),
# two typical wrong answers with a pattern their first hint matches, and text that would give
# the answer away.
TABLE = {
    "check_same_family_field": (
        ("00_same_family_field.py", "same_family_field"), None,
        [(lambda t, z: -torch.sin(t) * torch.exp(1 - torch.cos(t)) + 0 * z, "sign"),
         (lambda t, z: torch.sin(t) * z, "depends on z")],
        ["sin t · e^", "sin t e^", "sin(t) * torch.exp"]),
    "check_midpoint_step": (
        ("00_midpoint_step.py", "midpoint_step"), None,
        [(lambda f, t, z, h: z + h * f(t, z), "Euler step"),
         (lambda f, t, z, h: z + h * f(t + h / 2, z + h * f(t, z)), "full step")],
        ["t + h/2, z + h/2", "f(t + h/2", "h/2 · f(t, z)"]),
    "check_dL_dt0": (
        ("01_dL_dt0.py", "dL_dt0"),
        lambda lam, z0, t0, t1: -torch.tensor(lam * z0) * torch.exp(torch.tensor(lam * (t1 - t0))),
        [(lambda lam, z0, t0, t1: lam * z0 * math.exp(lam * (t1 - t0)), "dL/dt1"),
         (lambda lam, z0, t0, t1: -z0 * math.exp(lam * (t1 - t0)), "factor lam")],
        ["-lam z0 e^", "-a(t0) f(z0)", "-e^(lam", f"{-0.7 * 1.5 * math.exp(0.7 * 1.1):.4f}",
         f"{-0.7 * 1.5 * math.exp(0.7 * 1.1):.3f}"]),
    "check_vjp_tanh": (
        ("01_vjp_tanh.py", "vjp_tanh"), None,
        [(lambda W, z, a: (W.T @ a, torch.outer(a, z)), "derivative is missing"),
         (_vjp_with_autograd, "uses autograd")],
        ["W^T (s * a)", "outer(s * a", "1 - tanh(W z)^2", "1 - tanh(u)^2"]),
    "check_windowed_field": (
        ("02_windowed_field.py", "windowed_field"), None,
        [(lambda f, t0, d: (lambda s, z: f(t0 + s * d, z)), "factor is missing"),
         (lambda f, t0, d: (lambda s, z: d * f(t0, z)), "frozen at t0")],
        ["delta * f(t0 + s", "delta f(t0 + s", "t0 + s * delta"]),
    "check_aug": (
        ("02_aug.py", "aug"), None,
        [(lambda func, t, z, a: (func(t, z), -a, []), "one gradient per parameter"),
         ("_aug_signs_flipped", "sign is flipped")],
        ["grad_outputs=-a"]),
    "check_sincos_field": (
        ("03_sincos_field.py", "SinCosField"), _SinCosField64,
        [(_RawTimeField, "sees t itself"), (_NoCosField, "ignores cos t")],
        ["expand(", "torch.cat([z"]),
    "check_window_targets": (
        ("03_window_targets.py", "window_targets"), _window_targets_float32,
        [(lambda t0, c, n, w: _window_targets_float32(t0, c, n, 1.0), "ignore `window`"),
         (lambda t0, c, n, w: _window_targets_float32(t0, c, n, w).transpose(0, 1),
          "time goes first")],
        ["linspace(0, 1, n_obs)", "k / (n_obs - 1)"]),
    "check_checkpoint_times": (
        ("04_checkpoint_times.py", "checkpoint_times"), _checkpoints_float32,
        [(lambda t0, t1, lam: torch.linspace(t0, t1, 3), "too wide"),
         (_checkpoints_uneven, "evenly spaced")],
        ["ceil(", "linspace("]),
    "check_speed_penalty": (
        ("04_speed_penalty.py", "speed_penalty"), None,
        [(lambda func, t, z: func(t, z).square().sum(), "summed over the batch"),
         (lambda func, t, z: func(t, z).square().mean(), "D components")],
        ["square().sum(-1).mean()", "sum over d of"]),
    "check_cubic_field": (
        ("05_cubic_field.py", "cubic_field"), None,
        [(lambda A, z: (z**3) @ A, "transposed"), (lambda A, z: z @ A.T, "cube is missing")],
        ["(z**3) @ A.T", "z_b^T A^T"]),
    "check_kl_to_prior": (
        ("05_kl_to_prior.py", "kl_to_prior"), None,
        [(lambda mu, lv: -0.5 * (mu**2 + lv.exp() - lv - 1).sum(-1), "sign is flipped"),
         (lambda mu, lv: 0.5 * (mu**2 + (2 * lv).exp() - 2 * lv - 1).sum(-1),
          "log of the standard")],
        ["mu_j^2 + e^l_j", "1/2 sum_j", "e^l - l - 1", "+ v - log v"]),
    "check_divergence": (
        ("06_divergence.py", "divergence"), None,
        [(lambda f, z: -sum(g[:, i] for i, g in enumerate(_jacobian_rows(f, z))), "sign"),
         (lambda f, z: sum(g.sum(1) for g in _jacobian_rows(f, z)), "all the entries")],
        ["f[:, i].sum()", "entry i of the gradient of output i"]),
    "check_hutchinson": (
        ("06_hutchinson.py", "hutchinson"), None,
        [(_hutchinson_with(_unit_norm), "tr\\(df/dz\\) / D"),
         (_hutchinson_with(_uniform), "torch.rand")],
        ["(f * eps).sum()", "generator=generator"]),
    "check_resnet_euler": (
        ("07_resnet_euler.py", "resnet_euler"), None,
        [(lambda blocks, h: _resnet(blocks, h, scale=False), "step size is missing"),
         (lambda blocks, h: _resnet(blocks[::-1], h), "reverse order")],
        ["h_l + (1/L) f_l(h_l)", "h + f(h) / L"]),
    "check_augmented_flow": (
        ("07_augmented_flow.py", "augmented_flow"), _augmented_flow_float32,
        [(lambda field, x, p: x, "returned x"),
         (lambda field, x, p: _flow(field, _pad(x, p, 1.0))[-1][:, :x.shape[-1]], "ones")],
        ["torch.cat([x", "[:, :d]", "[-1]"]),
    "check_gauss_legendre": (
        ("08_gauss_legendre.py", "gauss_legendre"), _gauss_legendre_float32,
        [(_gauss_legendre_unmapped, "integral over \\[-1, 1\\]"),
         (_gauss_legendre_extra_node, "more nodes than n")],
        ["half * sum(", "mid + half * x", "0.5 * (hi - lo)"]),
    "check_steer_range": (
        ("09_steer_range.py", "ends"), _steer_ends(0.25, dtype=torch.float32),
        [(_steer_ends(0.5), "b = 0.5"), (_steer_ends(0.25, n=20), "draw 2,000")],
        []),
    "check_radau_stiff": (
        ("08_radau_stiff.py", "radau_backsolve"), _radau_float32,
        [(lambda p, restore_z: None, "`return` missing"),
         ("_radau_with_dopri5", "did not run scipy's Radau")],
        ["on_divergence=\"ignore\"", "method=\"scipy:Radau\""]),
}
# Checks that take the reader's data (not a function): an array-like of the wrong content is
# a wrong answer (AssertionError), not garbage.
DATA_CHECKS = {"check_steer_range"}
# Solutions whose file, run as a script, also compares several slow solves: run the check only.
SLOW_SCRIPTS = {"08_radau_stiff.py": ("check_radau_stiff", "radau_backsolve")}

# Garbage: what a reader hands in by mistake, for every check.
GARBAGE = [None, "my answer", torch.ones(3), 1.5, (torch.ones(2), torch.ones(2)), object()]


def _aug_signs_flipped(func, t, z, a):
    z = z.detach().requires_grad_(True)
    f = func(t, z)
    grads = torch.autograd.grad(f, (z, *func.parameters()), grad_outputs=a)
    return f.detach(), grads[0], list(grads[1:])


def _answer(item):
    return globals()[item] if isinstance(item, str) else item


def test_every_check_has_a_row_and_a_solution():
    assert sorted(TABLE) == CHECKS
    used = {name for path in SOLUTIONS for name in CHECKS if f"{name}(" in path.read_text()}
    assert used == set(CHECKS)


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_solution_passes_its_check(path, capsys):
    # Each solution ends with its own check call, which raises AssertionError if it is wrong.
    if path.name in SLOW_SCRIPTS:
        name, fn_name = SLOW_SCRIPTS[path.name]
        assert getattr(ex, name)(solution(path.name, fn_name)) is True
    else:
        runpy.run_path(str(path), run_name="__main__")
    assert "Well done" in capsys.readouterr().out


def test_every_worked_solution_is_graded_by_a_package_check_or_is_a_worked_answer():
    # A solution that checks itself with its own asserts would show its checks to a student
    # who loads it; every ★ and ★★ answer goes through a check_ function of the package.
    assert SELF_CHECKED == [], [p.name for p in SELF_CHECKED]


@pytest.mark.parametrize("path", ANSWERS, ids=lambda p: p.name)
def test_star3_answer_runs_and_is_loaded_by_its_notebook(path):
    # "# Exercise 1.3 ★★★ (worked answer)": the notebook's number without its leading zero, then
    # the exercise's (the older "# Exercise 01 ★★★" is still accepted).
    number = f"({path.name[:2]}|{int(path.name[:2])}\\.\\d+)"
    assert re.match(rf"# Exercise {number} ★★★ \(worked (answer|code)\)", path.read_text())
    runpy.run_path(str(path), run_name="__main__")  # runs without the notebook's variables
    notebook = next(nb for nb in NOTEBOOKS if nb.name.startswith(path.name[:2]))
    assert f"%load solutions/{path.name}" in notebook.read_text()


@pytest.mark.parametrize("name", CHECKS)
def test_float32_variant_passes(name, capsys):
    (file, fn_name), f32, _, _ = TABLE[name]
    worked = solution(file, fn_name)
    assert getattr(ex, name)(f32 if f32 is not None else as_float32(worked)) is True
    assert "Well done" in capsys.readouterr().out


def _one_sentence(message):
    assert "\n" not in message and "Traceback" not in message and "File \"" not in message
    assert message.endswith("."), message
    assert len(re.findall(r"[.!?](?=\s|$)", message)) == 1, message


@pytest.mark.parametrize("name", CHECKS)
@pytest.mark.parametrize("garbage", GARBAGE, ids=lambda g: type(g).__name__)
def test_garbage_gets_one_sentence(name, garbage):
    if name in DATA_CHECKS and (torch.is_tensor(garbage) or isinstance(garbage, tuple)):
        with pytest.raises(AssertionError):  # numbers, just the wrong ones
            getattr(ex, name)(garbage)
        return
    with pytest.raises(TypeError) as info:
        getattr(ex, name)(garbage)
    message = str(info.value)
    _one_sentence(message)
    assert name in message and "expects your" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_instance_for_a_class_and_a_result_for_a_function():
    sincos = solution("03_sincos_field.py", "SinCosField")
    with pytest.raises(TypeError, match="instance of SinCosField; pass the class itself"):
        ex.check_sincos_field(sincos())
    cubic = solution("05_cubic_field.py", "cubic_field")
    result = cubic(torch.eye(2), torch.ones(3, 2))
    with pytest.raises(TypeError, match="tensor of shape \\(3, 2\\); pass the function itself"):
        ex.check_cubic_field(result)
    with pytest.raises(TypeError, match="class SinCosField"):
        ex.check_cubic_field(sincos)


@pytest.mark.parametrize("name", CHECKS)
def test_wrong_answers_get_a_tiered_hint_without_the_answer(name):
    _, _, wrong, answer_text = TABLE[name]
    check = getattr(ex, name)
    for answer, pattern in wrong:
        ex.reset_hints()
        with pytest.raises(AssertionError) as first:
            check(_answer(answer))
        message = str(first.value)
        assert re.search(pattern, message), message
        assert "Traceback" not in message
        for text in answer_text:
            assert text not in message, (text, message)
        with pytest.raises(AssertionError) as again:
            check(_answer(answer))
        assert len(str(again.value)) >= len(message.split(" (Run the check again")[0])


@pytest.mark.parametrize("name", CHECKS)
def test_docstring_states_what_is_checked_not_the_answer(name):
    doc = inspect.getdoc(getattr(ex, name))
    assert doc and "Verifies" in doc
    for text in TABLE[name][3]:
        assert text not in doc, text


def test_check_dL_dt0_never_prints_the_expected_value():
    for tier in range(3):
        with pytest.raises(AssertionError) as info:
            ex.check_dL_dt0(lambda lam, z0, t0, t1: 42.0)
        for case in [(0.7, 1.5, 0.2, 1.3)]:
            lam, z0, t0, t1 = case
            expected = -lam * z0 * math.exp(lam * (t1 - t0))
            for digits in (2, 3, 4, 6):
                assert f"{expected:.{digits}f}" not in str(info.value), tier


def test_a_dtype_mix_is_named():
    def clash(A, z):
        other = torch.float32 if z.dtype == torch.float64 else torch.float64
        return (z**3) @ A.T.to(other)
    with pytest.raises(AssertionError, match="mixes float32 and float64"):
        ex.check_cubic_field(clash)


def test_the_reader_sees_where_their_code_failed():
    def broken(A, z):
        return A @ z**3  # one state per column: a shape error for (B, D)

    with pytest.raises(AssertionError) as info:
        ex.check_cubic_field(broken)
    assert "at line" in str(info.value) and "A @ z**3" in str(info.value)
    assert info.value.__cause__ is None


@pytest.mark.parametrize("shortcut, check, call", [
    ("latent.normal_kl", "check_kl_to_prior", lambda f: (lambda mu, lv: f(mu, lv))),
    ("cnf.exact_divergence", "check_divergence", None),
    ("cnf.hutchinson_divergence", "check_hutchinson", None),
])
def test_package_shortcuts_are_named(shortcut, check, call):
    from neuralode_helpers import cnf, latent

    helper = {"latent.normal_kl": latent.normal_kl, "cnf.exact_divergence": cnf.exact_divergence,
              "cnf.hutchinson_divergence": cnf.hutchinson_divergence}[shortcut]

    def via_package(f, z, *rest):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            out = f(z)
            if rest:
                eps = torch.randn(z.shape, generator=rest[0], dtype=z.dtype)
                return helper(out, z, eps, create_graph=False).detach()
            return helper(out, z, create_graph=False).detach()

    answer = call(helper) if call else via_package
    with pytest.raises(AssertionError, match=shortcut.split(".")[1]):
        getattr(ex, check)(answer)


# --- the hints of each check, one mistake at a time ---


def rejects(check, answer, hint):
    ex.reset_hints()
    with pytest.raises(AssertionError, match=hint):
        check(answer)


# --- notebook 00 ---


def test_same_family_field_hints():
    check = ex.check_same_family_field
    rejects(check, lambda t, z: -torch.sin(t) * torch.exp(1 - torch.cos(t)) + 0 * z, "sign")
    rejects(check, lambda t, z: torch.exp(1 - torch.cos(t)) + 0 * z, "curve .* itself")
    rejects(check, lambda t, z: torch.sin(t) * z, "depends on z")
    rejects(check, lambda t, z: z * torch.exp(-torch.cos(t)), "does not generate the family")
    rejects(check, lambda t, z: torch.sin(t)[:1], "Wrong shape")


def test_midpoint_step_hints():
    check = ex.check_midpoint_step
    rejects(check, lambda f, t, z, h: z + h * f(t, z), "Euler step: first order")
    rejects(check, lambda f, t, z, h: f(t + h / 2, z + h / 2 * f(t, z)), "slope")
    rejects(check, lambda f, t, z, h: z + h * f(t, z + h / 2 * f(t, z)), "its time is not")
    rejects(check, lambda f, t, z, h: z + h * f(t + h / 2, z + h * f(t, z)), "half a step")
    rejects(check, lambda f, t, z, h: (z + h * f(t, z))[0], "Wrong shape")


# --- notebook 01 ---


def test_dL_dt0_hints():
    check = ex.check_dL_dt0
    rejects(check, lambda lam, z0, t0, t1: lam * z0 * math.exp(lam * (t1 - t0)),
            "dL/dt1.*flipped sign")
    rejects(check, lambda lam, z0, t0, t1: -z0 * math.exp(lam * (t1 - t0)), "factor lam")
    rejects(check, lambda lam, z0, t0, t1: math.exp(lam * (t1 - t0)), "the adjoint")
    rejects(check, lambda lam, z0, t0, t1: -lam * z0 * math.exp(lam * (t0 - t1)), "exponent")


def test_vjp_tanh_hints():
    check = ex.check_vjp_tanh

    def s(W, z):
        return 1 - torch.tanh(W @ z) ** 2

    rejects(check, lambda W, z, a: (W.T @ a, torch.outer(a, z)), "derivative is missing")
    rejects(check, lambda W, z, a: (W @ (s(W, z) * a), torch.outer(s(W, z) * a, z)),
            "df/dz is transposed")
    rejects(check, lambda W, z, a: (W.T @ (s(W, z) * a), torch.outer(z, s(W, z) * a)),
            "df/dW is transposed")
    rejects(check, lambda W, z, a: (-W.T @ (s(W, z) * a), -torch.outer(s(W, z) * a, z)),
            "sign is flipped")
    rejects(check, lambda W, z, a: (W.T @ (s(W, z) * a), torch.outer(s(W, z) * a, z)[0]),
            "Wrong shape")


# --- notebook 02 ---


def test_windowed_field_hints():
    check = ex.check_windowed_field
    rejects(check, lambda f, t0, d: (lambda s, z: f(t0 + s * d, z)), "factor is missing")
    rejects(check, lambda f, t0, d: (lambda s, z: d * f(t0 + s, z)), "window is delta long")
    rejects(check, lambda f, t0, d: (lambda s, z: d * f(t0, z)), "frozen at t0")
    rejects(check, lambda f, t0, d: d * t0, "Return a function")


def _aug_with_backward(func, t, z, a):
    # backward() without zeroing .grad: correct on the first call only.
    z = z.detach().requires_grad_(True)
    f = func(t, z)
    (f * -a).sum().backward()
    return f.detach(), z.grad, [p.grad.clone() for p in func.parameters()]


def _aug_unweighted(func, t, z, a):
    z = z.detach().requires_grad_(True)
    f = func(t, z)
    grads = torch.autograd.grad(f.sum(), (z, *func.parameters()))
    return f.detach(), -a * grads[0], [-g for g in grads[1:]]


def test_aug_hints():
    check = ex.check_aug
    rejects(check, _aug_with_backward, "accumulates")
    rejects(check, _aug_signs_flipped, "sign is flipped")
    rejects(check, _aug_unweighted, "f.sum\\(\\)")
    rejects(check, lambda func, t, z, a: (func(t, z), -a, []), "one gradient per parameter")


# --- notebook 03 ---


def test_sincos_field_hints():
    check = ex.check_sincos_field
    rejects(check, _RawTimeField, "sees t itself")
    rejects(check, _NoZField, "ignores z")
    rejects(check, _NoBroadcastField, "0-d t .* raised RuntimeError at line")


def test_window_targets_hints():
    check = ex.check_window_targets

    def targets(t0, c, n_obs, window, s=None):
        s = torch.linspace(0, 1, n_obs, dtype=t0.dtype) if s is None else s
        return toy_solution(t0[None, :] + window * s[:, None], c[None, :]).unsqueeze(-1)

    rejects(check, lambda t0, c, n, w: targets(t0, c, n, w, torch.arange(n) / n),
            "counts both ends")
    rejects(check, lambda t0, c, n, w: targets(t0, c, n, 1.0), "ignore `window`")
    rejects(check, lambda t0, c, n, w: targets(t0, 0 * c, n, w), "offset c")
    rejects(check, lambda t0, c, n, w: targets(t0, c, n, w).transpose(0, 1), "time goes first")


# --- notebook 04 ---


def test_checkpoint_times_hints():
    check = ex.check_checkpoint_times
    rejects(check, lambda t0, t1, lam: torch.linspace(t0, t1, 3), "too wide")
    rejects(check, lambda t0, t1, lam: torch.linspace(t0, t1, 1000), "more than the rule needs")
    rejects(check, lambda t0, t1, lam: torch.arange(t0, t1, 1 / lam), "end at t1")


def test_speed_penalty_hints():
    check = ex.check_speed_penalty
    rejects(check, lambda func, t, z: func(t, z).square().sum(), "summed over the batch")
    rejects(check, lambda func, t, z: func(t, z).square().mean(), "D components")
    rejects(check, lambda func, t, z: func(t, z).norm(dim=-1).mean(), "its square")
    rejects(check, lambda func, t, z: z.square().sum(-1).mean(), "penalised \\|z\\|")
    rejects(check, lambda func, t, z: func(t, z).square().sum(-1).mean().item(), "Python float")
    rejects(check, lambda func, t, z: func(t, z).detach().square().sum(-1).mean(), "detached")


# --- notebook 05 ---


def test_cubic_field_hints():
    check = ex.check_cubic_field
    rejects(check, lambda A, z: (z**3) @ A, "transposed")
    rejects(check, lambda A, z: (z @ A.T) ** 3, "cubed after multiplying")
    rejects(check, lambda A, z: z @ A.T, "cube is missing")
    rejects(check, lambda A, z: A @ z**3, "one state per row")
    rejects(check, lambda A, z: ((z**3) @ A.T)[0], "Wrong shape")


def test_kl_to_prior_hints():
    check = ex.check_kl_to_prior
    rejects(check, lambda mu, lv: -0.5 * (mu**2 + lv.exp() - lv - 1).sum(-1), "sign is flipped")
    rejects(check, lambda mu, lv: 0.5 * (mu**2 + lv.exp() - lv - 1).mean(-1), "averaged over")
    rejects(check, lambda mu, lv: (mu**2 + lv.exp() - lv - 1).sum(-1), "twice the KL")
    rejects(check, lambda mu, lv: 0.5 * (mu**2 + (2 * lv).exp() - 2 * lv - 1).sum(-1),
            "log of the standard deviation")
    rejects(check, lambda mu, lv: 0.5 * (mu**2 + lv.exp() - lv).sum(-1), "constant term")
    rejects(check, lambda mu, lv: 0.5 * ((mu**2 + 1) * (-lv).exp() + lv - 1).sum(-1),
            "other direction")
    rejects(check, lambda mu, lv: 0.5 * (mu**2 + lv.exp() - lv - 1), "Wrong shape \\(B, L\\)")
    rejects(check, lambda mu, lv: 0.5 * (mu**2 + lv.exp() - lv - 1).sum(-1).mean(),
            "whole batch")


# --- notebook 06 ---


def test_divergence_hints():
    check = ex.check_divergence
    rejects(check, lambda f, z: -sum(g[:, i] for i, g in enumerate(_jacobian_rows(f, z))),
            "sign is flipped")
    rejects(check, lambda f, z: sum(g.sum(1) for g in _jacobian_rows(f, z)), "all the entries")
    rejects(check, lambda f, z: _jacobian_rows(f, z)[0][:, 0], "Only one diagonal")
    rejects(check, lambda f, z: torch.stack([g[:, i] for i, g in
                                             enumerate(_jacobian_rows(f, z))], 1),
            "Wrong shape \\(B, D\\)")
    rejects(check, lambda f, z: torch.autograd.grad(f(z).sum(), z)[0].sum(1), "requires grad")


def test_hutchinson_hints():
    check = ex.check_hutchinson

    def probe(z, g):
        return torch.randn(z.shape, generator=g, dtype=z.dtype)

    def exact(f, z, g):
        return torch.stack([r[:, i] for i, r in enumerate(_jacobian_rows(f, z))], 1).sum(1)

    def uniform(f, z, g):
        eps = torch.rand(z.shape, generator=g, dtype=z.dtype)
        return (_vjp(f, z, eps) * eps).sum(-1)

    def one_eps(f, z, g):
        return _vjp(f, z, probe(z, g)).sum(-1)

    def flipped(f, z, g):
        eps = probe(z, g)
        return -(_vjp(f, z, eps) * eps).sum(-1)

    def unseeded(f, z, g):
        eps = torch.randn(z.shape, dtype=z.dtype)
        return (_vjp(f, z, eps) * eps).sum(-1)

    rejects(check, exact, "exact trace")
    rejects(check, uniform, "uniform probe .*torch.rand")
    rejects(check, one_eps, "about 0")
    rejects(check, flipped, "sign is flipped")
    rejects(check, unseeded, "same generator seed")


def test_hutchinson_accepts_rademacher_probes():
    def rademacher(f, z, g):
        eps = torch.randint(0, 2, z.shape, generator=g).to(z.dtype) * 2 - 1
        return (_vjp(f, z, eps) * eps).sum(-1)

    assert ex.check_hutchinson(rademacher)


# --- notebook 07 ---


def test_resnet_euler_hints():
    check = ex.check_resnet_euler

    def no_scale(blocks, h):
        for f in blocks:
            h = h + f(h)
        return h

    def reversed_order(blocks, h):
        for f in blocks[::-1]:
            h = h + f(h) / len(blocks)
        return h

    def no_skip(blocks, h):
        for f in blocks:
            h = f(h) / len(blocks)
        return h

    rejects(check, no_scale, "step size is missing")
    rejects(check, lambda blocks, h: h + sum(f(h) for f in blocks) / len(blocks), "sees h_0")
    rejects(check, reversed_order, "reverse order")
    rejects(check, no_skip, "skip connection")


def test_augmented_flow_hints():
    check = ex.check_augmented_flow

    def pad(x, p, value=0.0, front=False):
        extra = torch.full((*x.shape[:-1], p), value, dtype=x.dtype)
        return torch.cat([extra, x] if front else [x, extra], -1)

    d = 2  # the check's main case
    rejects(check, lambda field, x, p: _flow(field, pad(x, p))[..., :x.shape[-1]], "whole path")
    rejects(check, lambda field, x, p: _flow(field, pad(x, p))[-1], "Wrong shape \\(B, d\\+p\\)")
    rejects(check, lambda field, x, p: _flow(field, pad(x, p, 1.0))[-1][:, :d], "padding is ones")
    rejects(check, lambda field, x, p: _flow(field, pad(x, p))[-1][:, -d:], "last d")
    rejects(check, lambda field, x, p: _flow(field, pad(x, p, front=True))[-1][:, :d],
            "zeros went in front")
    rejects(check, lambda field, x, p: x, "returned x")


# --- notebooks 08 and 09 ---


def test_gauss_legendre_hints():
    import numpy as np

    check = ex.check_gauss_legendre

    def unscaled(g, lo, hi, n):
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return sum(w * g((lo + hi) / 2 + (hi - lo) / 2 * x) for x, w in zip(nodes, weights))

    def as_array(g, lo, hi, n):
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return (hi - lo) / 2 * weights * g((lo + hi) / 2 + (hi - lo) / 2 * nodes)

    def no_return(g, lo, hi, n):
        np.polynomial.legendre.leggauss(n)

    rejects(check, _gauss_legendre_unmapped, "integral over \\[-1, 1\\]")
    rejects(check, unscaled, "weights are not rescaled")
    rejects(check, lambda g, lo, hi, n: 2 * _gauss_legendre_float32(g, lo, hi, n), "twice")
    rejects(check, lambda g, lo, hi, n: _gauss_legendre_float32(g, lo, hi, n - 1), "nodes where")
    rejects(check, _gauss_legendre_extra_node, "more nodes than n")
    rejects(check, as_array, "one number, got a NumPy array of shape \\(3,\\)")
    rejects(check, no_return, "`return` missing")


def test_steer_range_hints():
    check = ex.check_steer_range
    rejects(check, _steer_ends(0.5), "b = 0.5")
    rejects(check, _steer_ends(0.25, n=20), "draw 2,000")
    rejects(check, torch.full((2000,), 1.0), "anew")
    rejects(check, 0.75 + 0.5 * torch.rand(2000, generator=torch.Generator().manual_seed(0))
            ** 3, "mean")
    assert check(_steer_ends(0.25).tolist()) is True  # a list of floats is fine too
    with pytest.raises(TypeError, match="got None"):
        check(None)


def test_radau_stiff_names_the_guard():
    # the default on_divergence: the package refuses the backsolve's gradient; one Radau solve
    def guarded(p, restore_z):
        from neuralode_helpers import LinearODE, odeint_adjoint

        model = LinearODE(p["A"])
        z = odeint_adjoint(model, p["z0"], p["t"], method="scipy:Radau", restore_z=restore_z,
                           rtol=1e-6, atol=1e-8)
        return torch.autograd.grad((z * p["w"]).sum(), [model.A])[0]

    for _ in range(2):  # the second time, the fuller hint
        with pytest.raises(AssertionError, match="raised SolverError") as info:
            ex.check_radau_stiff(guarded)
    assert "on_divergence argument" in str(info.value)


def test_kl_to_prior_with_a_prior_variance_cannot_be_copied_from_the_elbo():
    # 05 §3's elbo_by_hand holds the standard prior's KL; with a prior_logvar argument the
    # check also tries other priors, where that line is wrong.
    def copied(mu, logvar, prior_logvar=0.0):
        return 0.5 * (mu**2 + logvar.exp() - logvar - 1).sum(dim=1)

    def log_std(mu, logvar, prior_logvar=0.0):
        v_p = torch.exp(2 * torch.as_tensor(prior_logvar, dtype=mu.dtype))
        return 0.5 * ((mu**2 + logvar.exp()) / v_p - 1 - logvar + v_p.log()).sum(-1)

    rejects(ex.check_kl_to_prior, copied, "the one to N\\(0, I\\)")
    rejects(ex.check_kl_to_prior, log_std, "standard deviation")
    # Two arguments: right as far as it goes, then told to take the prior's log-variance.
    rejects(ex.check_kl_to_prior, lambda mu, lv: copied(mu, lv), "asks for kl_to_prior\\(mu, "
            "logvar, prior_logvar\\)")
