"""`python -m neuralode_helpers.grading` grades a folder of made-up submissions correctly.

The submissions are made from the real notebook 00 and its worked solutions by
``make_submissions`` below (run this file as a script to rewrite tests/data/submissions/, the
copy a teacher can try `make grade SUBMISSIONS=tests/data/submissions` on). The test makes a
fresh set in a temporary folder, so that it always matches today's notebook. One submission is
the whole notebook 00, run end to end; the others keep only its title, its Setup cell and its
exercises (the part a grader needs), to keep the run short.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = next((ROOT / "notebooks").glob("00-*.ipynb"))
SOLUTIONS = ROOT / "notebooks" / "solutions"
DATA = ROOT / "tests" / "data" / "submissions"

FIELD, STEP = "check_same_family_field", "check_midpoint_step"

RIGHT_FIELD = (SOLUTIONS / "00_same_family_field.py").read_text(encoding="utf-8")
RIGHT_STEP = (SOLUTIONS / "00_midpoint_step.py").read_text(encoding="utf-8")
WRONG_FIELD = """\
def same_family_field(t, z):
    return torch.exp(1 - torch.cos(t)) * torch.ones_like(z)  # the curve, not its slope


check_same_family_field(same_family_field)
"""
WRONG_STEP = """\
def midpoint_step(f, t, z, h):
    return z + h * f(t, z)  # an Euler step


check_midpoint_step(midpoint_step)
"""
FLOAT32_FIELD = """\
def same_family_field(t, z):
    t = torch.as_tensor(t, dtype=torch.float32)
    return torch.sin(t) * torch.exp(1 - torch.cos(t)) * torch.ones(z.shape, dtype=torch.float32)


check_same_family_field(same_family_field)
"""
FLOAT32_STEP = """\
def midpoint_step(f, t, z, h):
    z = z.float()
    return z + h * f(t + h / 2, z + h / 2 * f(t, z))


check_midpoint_step(midpoint_step)
"""
LOOP = "while True:  # an endless loop\n    pass\n\n"
CRASH = "import os\n\nos._exit(1)  # the kernel dies\n"


def _check_cell(nb, check: str) -> int:
    """The code cell that calls (or has the commented-out call of) a check."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and re.search(rf"\b{check}\s*\(", cell.source):
            return i
    raise LookupError(check)


def _answer(nb, check: str, code: str) -> None:
    cell = nb.cells[_check_cell(nb, check)]
    cell.source = f"from neuralode_helpers.exercises import {check}\n\n{code}"


def _short(nb):
    """Title, Setup cell and the exercises: from the first markdown cell before the first
    exercise check to the end."""
    first = min(_check_cell(nb, FIELD), _check_cell(nb, STEP))
    start = max(i for i in range(first) if nb.cells[i].cell_type == "markdown"
                and nb.cells[i].source.lstrip().startswith("## "))
    short = nbformat.reads(nbformat.writes(nb), as_version=4)
    short.cells = short.cells[:2] + short.cells[start:]
    return short


def make_submissions(folder: Path) -> None:
    """Write the made-up submissions for notebook 00 into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    base = nbformat.read(NOTEBOOK, as_version=4)
    base.metadata.pop("widgets", None)  # the saved state of the explorers' widgets
    for cell in base.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None

    def variant(short=True):
        return _short(base) if short else nbformat.reads(nbformat.writes(base), as_version=4)

    def save(nb, name):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, path)

    nb = variant(short=False)  # the whole notebook, both answers right
    _answer(nb, FIELD, RIGHT_FIELD)
    _answer(nb, STEP, RIGHT_STEP)
    save(nb, "alice/00-introduction.ipynb")

    nb = variant()
    _answer(nb, FIELD, WRONG_FIELD)
    _answer(nb, STEP, WRONG_STEP)
    save(nb, "bob/00-introduction.ipynb")

    nb = variant()
    _answer(nb, FIELD, FLOAT32_FIELD)
    _answer(nb, STEP, FLOAT32_STEP)
    save(nb, "carol/00-introduction.ipynb")

    nb = variant()  # right answers after a cell that kills the kernel
    _answer(nb, FIELD, RIGHT_FIELD)
    _answer(nb, STEP, RIGHT_STEP)
    nb.cells.insert(_check_cell(nb, FIELD), nbformat.v4.new_code_cell(CRASH))
    save(nb, "dave/00-introduction.ipynb")

    nb = variant()  # the first answer right, an endless loop in the second one's cell
    _answer(nb, FIELD, RIGHT_FIELD)
    _answer(nb, STEP, LOOP + RIGHT_STEP)
    save(nb, "erin/00-introduction.ipynb")

    nb = variant()  # the first answer right, the second exercise's code cell deleted
    _answer(nb, FIELD, RIGHT_FIELD)
    del nb.cells[_check_cell(nb, STEP)]
    save(nb, "frank/00-introduction.ipynb")

    save(variant(), "gina/00-introduction.ipynb")  # nothing done

    (folder / "henry").mkdir(exist_ok=True)  # not a notebook at all
    (folder / "henry" / "00-introduction.ipynb").write_text("{ this is not JSON", encoding="utf-8")


# student -> (how the run went, {check: status}), what the table must say.
EXPECTED = {
    "alice": ("ran to the end", {FIELD: "passed", STEP: "passed"}),
    "bob": ("ran to the end; 2 cell(s) raised", {FIELD: "failed", STEP: "failed"}),
    "carol": ("ran to the end", {FIELD: "passed", STEP: "passed"}),
    "dave": ("the kernel died", {FIELD: "not reached", STEP: "not reached"}),
    "erin": ("ran over its limit", {FIELD: "passed", STEP: "timed out"}),
    "frank": ("ran to the end", {FIELD: "passed", STEP: "missing"}),
    "gina": ("ran to the end", {FIELD: "not attempted", STEP: "not attempted"}),
    "henry": ("could not be read", {}),
}
MESSAGES = {  # words of the check's own message that the table must carry
    ("bob", FIELD): "not its slope",
    ("bob", STEP): "Euler step",
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    out = tmp_path_factory.mktemp("grades")
    make_submissions(folder)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    start = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "neuralode_helpers.grading", str(folder), "--out", str(out),
         "--cell-timeout", "30", "--timeout", "300"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - start
    print(run.stderr[-3000:], f"\ngraded in {seconds:.0f} s")
    assert run.returncode == 0, run.stderr[-3000:]
    with open(out / "grades.csv", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    return out, {row["student"]: row for row in rows}


def test_one_row_per_submission(graded):
    _, rows = graded
    assert sorted(rows) == sorted(EXPECTED)


@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_the_table_is_right_for_each_submission(graded, student):
    _, rows = graded
    row = rows[student]
    run, grades = EXPECTED[student]
    assert run in row["run"], row["run"]
    for check, status in grades.items():
        cell = row[f"00 {check}"]
        assert cell == status or cell.startswith(status + ":"), (student, check, cell)
    for (who, check), words in MESSAGES.items():
        if who == student:
            assert words in row[f"00 {check}"], row[f"00 {check}"]
    passed = sum(status == "passed" for status in grades.values())
    assert row["passed"] == f"{passed}/{len(grades)}"


def test_markdown_table_and_feedback_files(graded):
    out, _ = graded
    table = (out / "grades.md").read_text(encoding="utf-8")
    for student in EXPECTED:
        assert f"| {student} |" in table
        feedback = (out / "feedback" / f"{student}.md").read_text(encoding="utf-8")
        assert feedback.startswith(f"# Feedback for {student}")
    bob = (out / "feedback" / "bob.md").read_text(encoding="utf-8")
    assert "not its slope" in bob and "**failed**" in bob
    alice = (out / "feedback" / "alice.md").read_text(encoding="utf-8")
    assert alice.count("**passed**") == 2 and "Well done" in alice  # the check's own words
    assert (out / "executed" / "alice" / "00-introduction.ipynb").exists()


def test_a_check_of_ones_own_does_not_pass(tmp_path):
    """Defining check_same_family_field in the notebook (a fake that returns True) is caught."""
    from neuralode_helpers.grading import NOT_GRADED, grade_notebook

    nb = _short(nbformat.read(NOTEBOOK, as_version=4))
    _answer(nb, FIELD, "def check_same_family_field(fn):\n    print('Well done')\n"
                       "    return True\n\n\ncheck_same_family_field(None)\n")
    nb.cells = [c for i, c in enumerate(nb.cells) if c.cell_type == "markdown" or i <= 1
                or FIELD in c.source]
    path = tmp_path / "mallory" / "00-introduction.ipynb"
    path.parent.mkdir()
    nbformat.write(nb, path)
    result = grade_notebook(path, tmp_path, cell_timeout=60, timeout=120)
    assert result.grades[FIELD][0] == NOT_GRADED
    assert result.grades[STEP][0] == "missing"


def test_exercises_are_found_by_their_check_in_every_notebook():
    from neuralode_helpers.grading import exercises_of, package_checks

    known = package_checks()
    found = {}
    for path in sorted((ROOT / "notebooks").glob("0*.ipynb")):
        found[path.name[:2]] = [e.check for e in exercises_of(nbformat.read(path, as_version=4),
                                                              known)]
    assert found["00"] == [FIELD, STEP]
    for number in ("00", "01", "02", "03", "04", "05", "06", "07"):
        assert len(found[number]) == 2, (number, found[number])


if __name__ == "__main__":
    make_submissions(DATA)
    print(f"wrote {DATA}")
