"""Grade a folder of submitted notebooks with the exercises' own checks.

    python -m neuralode_helpers.grading SUBMISSIONS_DIR --out DIR
        [--timeout 900] [--cell-timeout 300] [--notebooks notebooks]

Every ``.ipynb`` under SUBMISSIONS_DIR is one submission. Its student is the first folder under
SUBMISSIONS_DIR (``alice/00-introduction.ipynb``) or, for a file directly in it, the file's
name without ``.ipynb``. Each submission runs top to bottom in a fresh kernel, in an empty
temporary folder, with a time limit per cell and per notebook. A cell that raises does not
stop the run (the next exercise is still graded); a cell that runs over its limit, or a kernel
that dies, stops that submission only.

Exercises are known by their check function (``check_midpoint_step``), never by a cell's
position: the exercises of a notebook are the ``check_...`` functions of
:mod:`neuralode_helpers.exercises` that the course's own copy of the notebook calls (matched by
the two-digit number in the title, ``# 00 · ...``, or in the file name). Before the student's
first cell runs, every check in the package is wrapped so that each call writes its outcome to
a file outside the notebook; a student cannot fake a pass by printing "Well done" or by
defining a ``check_...`` of their own. For each exercise the table says

- ``passed``: the package's check returned True (its "Well done" message follows);
- ``failed``: the check raised (its message follows), or the cell that calls it raised first;
- ``timed out``: the cell calling the check ran over its limit;
- ``not reached``: the run stopped (time limit, dead kernel) before that cell;
- ``not attempted``: the call is still commented out;
- ``missing``: no cell of the submission calls the check (the cell was deleted);
- ``not graded``: the cell ran but never reached the package's check (a redefined check).

Written to DIR: ``grades.csv`` and ``grades.md`` (one row per submission, one column per
exercise), ``feedback/<student>.md`` (every message in full, one file per student) and
``executed/<student>/<notebook>.ipynb`` (the run, with its outputs, for a closer look).

Why not nbgrader or otter-grader: both grade notebooks prepared in their own format (nbgrader:
cell metadata, a course folder and a database; otter: its own test files, and Docker by default
for grading), neither is installed with the course, and both would replace the checks, whose
messages explain a student's mistake, by their own tests. This module is the small part of
them the course needs, on nbclient and nbformat (installed with Jupyter).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"

PASSED, FAILED, TIMED_OUT = "passed", "failed", "timed out"
NOT_REACHED, NOT_ATTEMPTED, MISSING, NOT_GRADED = (
    "not reached", "not attempted", "missing", "not graded")

_CALL = re.compile(r"\b(check_\w+)\s*\(")
_DEF = re.compile(r"^\s*def\s+check_\w+", re.M)
_TITLE = re.compile(r"^#\s+(\d\d)\b")
_NUMBER = re.compile(r"(?<!\d)(\d\d)(?!\d)")
_STARS = re.compile(r"^###.*?(★+)", re.M)

# Runs in the student's kernel before their first cell: wraps every check of the package so
# that each call appends its outcome to RESULTS (a JSON line), then behaves as before.
_PRELUDE = r'''
def _grading_prelude(results):
    import contextlib, functools, io, json, sys
    import neuralode_helpers.exercises as exercises

    class _Tee(io.StringIO):  # keeps what the check prints and still shows it
        def __init__(self, stream):
            super().__init__()
            self.stream = stream

        def write(self, text):
            self.stream.write(text)
            return super().write(text)

    def record(entry):
        with open(results, "a", encoding="utf-8") as file:
            file.write(json.dumps(entry) + "\n")

    def wrap(name, check):
        @functools.wraps(check)
        def graded(*args, **kwargs):
            printed = _Tee(sys.stdout)
            try:
                with contextlib.redirect_stdout(printed):
                    result = check(*args, **kwargs)
            except KeyboardInterrupt:
                record({"check": name, "status": "timed out", "message": ""})
                raise
            except BaseException as err:
                record({"check": name, "status": "failed",
                        "message": f"{type(err).__name__}: {err}"})
                raise
            passed = result is not False
            record({"check": name, "status": "passed" if passed else "failed",
                    "message": printed.getvalue().strip() or f"returned {result!r}"})
            return result
        graded._graded = True
        return graded

    for name in dir(exercises):
        check = getattr(exercises, name)
        if name.startswith("check_") and callable(check) and not getattr(check, "_graded", 0):
            setattr(exercises, name, wrap(name, check))

_grading_prelude({results!r})
del _grading_prelude
'''


@dataclass
class Exercise:
    check: str  # the check function's name
    stars: str = ""

    @property
    def label(self) -> str:
        return f"{self.stars} {self.check[len('check_'):]}".strip()


@dataclass
class Result:
    student: str
    path: Path
    notebook: str  # the course notebook it was matched with ("00"), or "?"
    run: str = ""  # how the run went, one line
    seconds: float = 0.0
    grades: dict[str, tuple[str, str]] = field(default_factory=dict)  # check -> (status, msg)
    labels: dict[str, str] = field(default_factory=dict)  # check -> "★★ midpoint_step"


def package_checks() -> set[str]:
    from . import exercises

    return {name for name in dir(exercises)
            if name.startswith("check_") and callable(getattr(exercises, name))}


def _code(nb) -> list[tuple[int, str]]:
    return [(i, c.source) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def _active_lines(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("#"))


def exercises_of(nb, known: set[str]) -> list[Exercise]:
    """The checked exercises of a notebook, in order: every package check it calls (or has a
    commented-out call of), with the stars of the nearest '###' heading above the call."""
    found: dict[str, Exercise] = {}
    stars = ""
    for cell in nb.cells:
        for match in _STARS.finditer(cell.source):
            stars = match.group(1)
        if cell.cell_type != "code":
            continue
        source = _DEF.sub("", cell.source)
        for name in _CALL.findall(source):
            if name in known and name not in found:
                found[name] = Exercise(name, stars)
    return list(found.values())


def course_number(nb, path: Path) -> str | None:
    """The course notebook a submission answers: '# NN · ...' in its title, or NN in its name."""
    for cell in nb.cells[:3]:
        if cell.cell_type == "markdown" and (match := _TITLE.match(cell.source.lstrip())):
            return match.group(1)
    match = _NUMBER.search(path.name)
    return match.group(1) if match else None


def reference_exercises(number: str | None, reference_dir: Path,
                        known: set[str]) -> list[Exercise] | None:
    if number is None:
        return None
    paths = sorted(reference_dir.glob(f"{number}-*.ipynb"))
    if not paths:
        return None
    return exercises_of(nbformat.read(paths[0], as_version=4), known)


def student_of(path: Path, root: Path) -> str:
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else path.stem


def _first_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def grade_notebook(path: Path, root: Path, *, reference_dir: Path = NOTEBOOK_DIR,
                   timeout: float = 600, cell_timeout: float = 120,
                   executed_dir: Path | None = None, kernel_name: str = "python3") -> Result:
    """Run one submission in a fresh kernel and grade each of its exercises."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    known = package_checks()
    result = Result(student_of(path, root), path, "?")
    start = time.monotonic()
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # not JSON, not a notebook
        why = f"{type(err).__name__}: {_first_line(str(err), 100)}"
        result.run = f"could not be read as a notebook ({why})"
        return result
    number = course_number(nb, path)
    result.notebook = number or "?"
    expected = reference_exercises(number, reference_dir, known)
    if expected is None:  # an unknown notebook: grade the checks it calls
        expected = exercises_of(nb, known)
    result.grades = {e.check: ("", "") for e in expected}
    result.labels = {e.check: e.label for e in expected}

    with tempfile.TemporaryDirectory(prefix="grading-") as work:
        results_file = Path(work) / ".grading-results.jsonl"
        prelude = nbformat.v4.new_code_cell(
            _PRELUDE.replace("{results!r}", repr(str(results_file))))
        client = NotebookClient(nb, timeout=cell_timeout, kernel_name=kernel_name,
                                allow_errors=False, interrupt_on_timeout=False,
                                resources={"metadata": {"path": work}})
        errors: dict[int, str] = {}  # cell index -> its error, one line
        stopped_at, stop = None, ""
        executed: set[int] = set()
        try:
            with client.setup_kernel():
                client.timeout = cell_timeout
                client.execute_cell(prelude, -1)
                for index, cell in enumerate(nb.cells):
                    if cell.cell_type != "code":
                        continue
                    left = timeout - (time.monotonic() - start)
                    if left <= 0:
                        stopped_at, stop = index, f"ran over the notebook's limit of {timeout:g} s"
                        break
                    client.timeout = max(1, int(min(cell_timeout, left)))
                    try:
                        client.execute_cell(cell, index)
                    except CellTimeoutError:
                        stopped_at = index
                        stop = (f"cell {index + 1} ran over its limit of {client.timeout} s "
                                "(an endless loop?); the cells after it did not run")
                        break
                    except DeadKernelError:
                        stopped_at = index
                        stop = (f"the kernel died in cell {index + 1}; "
                                "the cells after it did not run")
                        break
                    except CellExecutionError as err:
                        errors[index] = f"{err.ename}: {_first_line(err.evalue)}"
                    finally:
                        executed.add(index)
        except DeadKernelError:  # died while shutting down or starting
            stop = stop or "the kernel died"
        except Exception as err:  # a kernel that would not start
            stop = stop or f"could not run ({type(err).__name__}: {_first_line(str(err), 100)})"
        records = []
        if results_file.exists():
            for line in results_file.read_text(encoding="utf-8").splitlines():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    result.seconds = time.monotonic() - start

    last = {}
    for record in records:  # the last call of each check counts
        last[record["check"]] = record
    for check in result.grades:
        calls = [i for i, source in _code(nb) if check in _CALL.findall(_active_lines(source))]
        commented = [i for i, source in _code(nb) if check in _CALL.findall(source)]
        if check in last and last[check]["status"] != TIMED_OUT:
            grade = (last[check]["status"], last[check]["message"])
        elif any(i == stopped_at for i in calls):
            grade = (TIMED_OUT if "limit" in stop else NOT_REACHED, stop)
        elif not calls:
            grade = ((NOT_ATTEMPTED, "the call of the check is still commented out") if commented
                     else (MISSING, "no cell calls this check (a deleted cell?)"))
        elif all(stopped_at is not None and i > stopped_at for i in calls):
            grade = (NOT_REACHED, stop)
        elif any(i in errors for i in calls):
            i = next(i for i in calls if i in errors)
            grade = (FAILED, f"the cell raised before the check could run: {errors[i]}")
        else:
            grade = (NOT_GRADED, "the cell ran but the course's check was not called "
                                 "(was the check redefined or replaced?)")
        result.grades[check] = grade

    n_errors = len(errors)
    result.run = stop or ("ran to the end" + (f"; {n_errors} cell(s) raised" if n_errors else ""))
    if executed_dir is not None:
        target = executed_dir / result.student / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
    return result


def grade_folder(submissions: Path, out: Path, **options) -> list[Result]:
    """Grade every notebook under ``submissions``; write the table and the feedback to ``out``."""
    submissions, out = Path(submissions), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = sorted(p for p in submissions.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    results = []
    for path in paths:
        print(f"grading {path.relative_to(submissions)} ...", file=sys.stderr, flush=True)
        result = grade_notebook(path, submissions, executed_dir=out / "executed", **options)
        print(f"  {result.run} ({result.seconds:.1f} s)", file=sys.stderr, flush=True)
        results.append(result)
    write_table(results, out)
    write_feedback(results, out)
    return results


def _columns(results: list[Result]) -> list[tuple[str, str]]:
    """(notebook, check) for every exercise seen, in the notebooks' order."""
    seen: dict[tuple[str, str], None] = {}
    for result in sorted(results, key=lambda r: r.notebook):
        for check in result.grades:
            seen[(result.notebook, check)] = None
    return list(seen)


def _cell(grade: tuple[str, str] | None, limit: int) -> str:
    if grade is None:
        return ""
    status, message = grade
    if status == PASSED or not message:
        return status
    return f"{status}: {_first_line(message, limit)}"


def write_table(results: list[Result], out: Path) -> None:
    columns = _columns(results)
    header = ["student", "file", "notebook", "run", "passed"] + [
        f"{nb} {check}" for nb, check in columns]
    rows = []
    for r in results:
        passed = sum(status == PASSED for status, _ in r.grades.values())
        rows.append([r.student, r.path.name, r.notebook, r.run, f"{passed}/{len(r.grades)}"] + [
            _cell(r.grades.get(check) if nb == r.notebook else None, 10_000)
            for nb, check in columns])
    with open(out / "grades.csv", "w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows([header] + rows)

    def md(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in results:
        passed = sum(status == PASSED for status, _ in r.grades.values())
        cells = [r.student, r.path.name, r.notebook, r.run, f"{passed}/{len(r.grades)}"] + [
            _cell(r.grades.get(check) if nb == r.notebook else None, 80) for nb, check in columns]
        lines.append("| " + " | ".join(md(c) for c in cells) + " |")
    lines += ["", "Full messages: feedback/<student>.md. ★★★ questions are graded by hand."]
    (out / "grades.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_feedback(results: list[Result], out: Path) -> None:
    folder = out / "feedback"
    folder.mkdir(parents=True, exist_ok=True)
    by_student: dict[str, list[Result]] = {}
    for r in results:
        by_student.setdefault(r.student, []).append(r)
    for student, mine in by_student.items():
        lines = [f"# Feedback for {student}", ""]
        for r in mine:
            lines += [f"## {r.path.name} (notebook {r.notebook})", "", f"Run: {r.run}.", ""]
            if not r.grades:
                lines += ["No checked exercise was found in this notebook.", ""]
            for check, (status, message) in r.grades.items():
                label = r.labels.get(check, check)
                lines.append(f"- {label} (`{check}`): **{status}**")
                if message:
                    lines += ["", "  ```text"] + [f"  {line}" for line in message.splitlines()]
                    lines += ["  ```"]
            lines += ["", "The ★★★ questions are read and graded by hand.", ""]
        safe = re.sub(r"[^\w.-]+", "_", student) or "student"
        (folder / f"{safe}.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m neuralode_helpers.grading",
        description="Run every submitted notebook in a fresh kernel and grade its exercises "
                    "with the course's checks.")
    parser.add_argument("submissions", type=Path, help="folder of submitted .ipynb files")
    parser.add_argument("--out", type=Path, required=True, help="folder for the table and feedback")
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds per notebook (default 900)")
    parser.add_argument("--cell-timeout", type=float, default=300,
                        help="seconds per cell (default 300)")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOK_DIR,
                        help="the course's notebooks, which say what each one's exercises are")
    args = parser.parse_args(argv)
    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a folder")
    os.environ.setdefault("MPLBACKEND", "Agg")
    start = time.monotonic()
    results = grade_folder(args.submissions, args.out, timeout=args.timeout,
                           cell_timeout=args.cell_timeout, reference_dir=args.notebooks)
    print(f"{len(results)} submission(s) graded in {time.monotonic() - start:.0f} s: "
          f"{args.out / 'grades.md'}, {args.out / 'grades.csv'}, {args.out / 'feedback'}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
