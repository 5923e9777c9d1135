"""benchmarks/_peers.py: a missing peer is skipped with its reason, never an error (the
package and `make test` do not need the optional `bench` extra). No timings are asserted."""

import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _peers():
    spec = importlib.util.spec_from_file_location("_peers", ROOT / "benchmarks" / "_peers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_missing_peers_are_skipped_with_a_reason(monkeypatch):
    peers = _peers()
    for name in ("torchode", "jax", "diffrax"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` fail
    field = torch.nn.Linear(2, 2)
    z0, t, target = torch.zeros(3, 2), torch.linspace(0, 1, 3), torch.zeros(3, 3, 2)
    methods, skipped = peers.torchode_methods(field, z0, t, target, None, 1e-5, 1e-6)
    assert methods == {} and skipped[0][0] == "torchode" and "not installed" in skipped[0][1]
    methods, skipped, compile_s = peers.diffrax_methods(field, z0, t, target, 1e-5, 1e-6)
    assert methods == {} and compile_s == {} and skipped[0][0] == "diffrax"
    assert "pip install" in skipped[0][1]
    assert peers.versions() == {"torchode": "not installed", "jax": "not installed",
                                "diffrax": "not installed"}
