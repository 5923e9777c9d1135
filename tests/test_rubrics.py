"""The ★★/★★★ grading key (notebooks/solutions/RUBRICS.md) covers every such exercise, and the
worked solutions reproduce each number it states.

Each ``expect: FILE | PATTERN | VALUE | TOLERANCE`` line of the key names a worked solution,
a regular expression whose first group picks a number (or a line) from that solution's output,
and what it must be. Every solution named is run once, on its own, from notebooks/.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
RUBRICS = NOTEBOOKS / "solutions" / "RUBRICS.md"
EXPECT = re.compile(r"^expect: (.+)$", re.M)


def expectations() -> list[tuple[str, str, str, str]]:
    found = []
    for line in EXPECT.findall(RUBRICS.read_text(encoding="utf-8")):
        parts = [part.strip() for part in line.split("|")]  # no pattern uses "|"
        assert len(parts) == 4, f"an expect: line needs 4 fields: {line}"
        found.append(tuple(parts))
    return found


EXPECTATIONS = expectations()
_outputs: dict[str, str] = {}


def output_of(name: str) -> str:
    if name not in _outputs:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
        run = subprocess.run([sys.executable, f"solutions/{name}"], cwd=NOTEBOOKS, env=env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"{name} failed:\n{run.stderr[-2000:]}"
        _outputs[name] = run.stdout
    return _outputs[name]


def test_the_key_has_an_entry_for_every_two_and_three_star_exercise():
    key = RUBRICS.read_text(encoding="utf-8")
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        stars = [m.group(1) for cell in nb.cells if cell.cell_type == "markdown"
                 for m in re.finditer(r"^###[^\n]*?(★★★|★★)(?!★)", cell.source, re.M)]
        number = path.name[:2]
        for star in stars:
            assert re.search(rf"^### {number} {star}(?!★) ", key, re.M), (
                f"RUBRICS.md has no '### {number} {star} ...' entry")


def test_every_expected_file_exists():
    for name, *_ in EXPECTATIONS:
        assert (NOTEBOOKS / "solutions" / name).is_file(), name


@pytest.mark.parametrize("name, pattern, value, tolerance", EXPECTATIONS,
                         ids=[f"{e[0]}:{i}" for i, e in enumerate(EXPECTATIONS)])
def test_the_worked_solution_reproduces_the_number(name, pattern, value, tolerance):
    out = output_of(name)
    match = re.search(pattern, out, re.M)
    assert match, f"{name}: no line matches {pattern!r} in its output:\n{out}"
    if value == "passes":
        return
    got = float(match.group(1))
    if value.startswith("<"):
        assert abs(got) < float(value[1:]), (name, pattern, got)
        return
    if value.startswith(">"):
        assert abs(got) > float(value[1:]), (name, pattern, got)
        return
    kind, size = tolerance.split()
    want = float(value)
    if kind == "abs":
        assert abs(got - want) <= float(size), (name, pattern, got, want)
    else:
        assert abs(got - want) <= float(size) * abs(want), (name, pattern, got, want)
