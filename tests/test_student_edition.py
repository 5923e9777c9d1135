"""The student edition (``make student``): the notebooks, the package and the book without any
worked solution.

The unit test builds it without the book (the book renders every notebook: tens of seconds) and
searches every file for each worked solution's distinctive lines; the book's page list is tested
on a one-notebook book. ``NEURALODE_STUDENT_EDITION=_build/student`` makes the search also run on
a full build (``make student``), book included.
"""

import functools
import html
import json
import os
import re
from pathlib import Path

import pytest

from neuralode_helpers import edition
from neuralode_helpers.book import build_book, solution_files

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted(p for p in (ROOT / "notebooks" / "solutions").iterdir()
                   if p.suffix in {".py", ".ipy"})
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))


def _notebook_text(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    parts = []
    for cell in nb["cells"]:
        parts.append("".join(cell["source"]))
        for out in cell.get("outputs", []):
            parts.append("".join(out.get("text", "")))
            parts += ["".join(v) if isinstance(v, list) else str(v)
                      for v in out.get("data", {}).values()]
    return "\n".join(parts)


def text_of(path):
    """What a reader sees in a file: a notebook's cells and outputs, an HTML page's text."""
    if path.suffix == ".ipynb":
        return _notebook_text(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".html":
        text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return text


@functools.cache
def distinctive_lines():
    """{line: solution file} for every line of a worked solution that gives something away: at
    least 20 characters once stripped, not an import or a check's call, and found neither in
    the teacher's notebooks nor in the package's modules other than the checks (set-up code
    that a solution repeats, an idiom the package itself uses, is no answer). The checks,
    exercises*.py, must not hold a worked answer's lines either."""
    notebooks = "\n".join(_notebook_text(p) for p in NOTEBOOKS)
    notebooks += "\n".join(p.read_text(encoding="utf-8")
                           for p in (ROOT / "neuralode_helpers").rglob("*.py")
                           if not p.name.startswith("exercises"))
    notebooks = "\n".join(line.strip() for line in notebooks.splitlines())
    lines = {}
    for path in SOLUTIONS:
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if len(line) < 20 or line.startswith(("import ", "from ")) or line in notebooks:
                continue
            if re.match(r"check_\w+\(\w+\)$", line):  # the call of a check is no answer
                continue
            lines.setdefault(line, path.name)
    return lines


def leaks(folder):
    """(file, line, solution) for each distinctive solution line found in a file of ``folder``."""
    wanted = distinctive_lines()
    found = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        if path.suffix not in {".py", ".ipy", ".ipynb", ".md", ".html", ".txt", ".toml", ".yml",
                               ".cfg", ""}:
            continue
        text = text_of(path)
        found += [(str(path.relative_to(folder)), line, name)
                  for line, name in wanted.items() if line in text]
    return found


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    edition.build_student_edition(ROOT, out, book=False)
    return out


def test_there_are_distinctive_lines_to_look_for():
    lines = distinctive_lines()
    # every worked solution contributes something to look for
    assert {name for name in lines.values()} == {p.name for p in SOLUTIONS}
    assert len(lines) > 10 * len(SOLUTIONS) // 2


def test_the_search_finds_a_solution_where_there_is_one(tmp_path):
    (tmp_path / "notes.md").write_text(SOLUTIONS[0].read_text(encoding="utf-8"))
    assert leaks(tmp_path)


def test_no_worked_solution_in_the_student_edition(student):
    assert not (student / "notebooks" / "solutions").exists()
    assert not (student / "notebooks" / "README.md").exists()  # the teaching notes
    assert not (student / "tests").exists()
    assert leaks(student) == []


def test_the_student_edition_has_the_notebooks_and_the_package(student):
    assert sorted(p.name for p in (student / "notebooks").glob("*.ipynb")) == \
        [p.name for p in NOTEBOOKS]
    assert (student / "neuralode_helpers" / "exercises.py").is_file()
    assert (student / "pyproject.toml").is_file() and (student / "Makefile").is_file()
    assert "Student edition" in (student / "README.md").read_text()
    assert not list(student.rglob("__pycache__"))


def test_every_load_says_the_teacher_holds_the_key(student):
    for path in NOTEBOOKS:
        teacher = json.loads(path.read_text(encoding="utf-8"))
        mine = json.loads((student / "notebooks" / path.name).read_text(encoding="utf-8"))
        assert len(mine["cells"]) == len(teacher["cells"])
        loads = sum("%load solutions/" in "".join(c["source"]) for c in teacher["cells"])
        keys = sum(edition.KEY in "".join(c["source"]) for c in mine["cells"])
        assert "%load" not in _notebook_text(student / "notebooks" / path.name)
        assert solution_files(mine) == []  # so the book renders no solution page
        assert keys == loads, path.name
        # outputs are kept, cell for cell
        assert [c.get("outputs") for c in mine["cells"]] == \
            [c.get("outputs") for c in teacher["cells"]]


def test_sentences_and_cells():
    text = ("Stuck? A worked solution loads into a cell\nwith `%load solutions/<file>.py`; run "
            "that cell. The ★★★ questions have answers.\n\nSolution: `%load solutions/x.py`\n\n"
            "### ★★ Next")
    out = edition.student_text(text)
    assert out == ("Stuck? Worked solutions are not part of this edition: your teacher holds "
                   "the key. The ★★★ questions have answers.\n\nSolution: your teacher holds "
                   "the key.\n\n### ★★ Next")
    nb = {"cells": [{"cell_type": "code", "id": "a", "metadata": {}, "outputs": [],
                     "execution_count": None, "source": "%load solutions/x.py"},
                    {"cell_type": "code", "id": "b", "metadata": {}, "outputs": [],
                     "execution_count": None,
                     "source": "# answer here\n# Worked solution: %load solutions/x.py"}]}
    cells = edition.student_notebook(nb)["cells"]
    assert cells[0]["cell_type"] == "markdown" and edition.KEY in cells[0]["source"]
    assert cells[1]["source"] == "# answer here\n# Worked solution: your teacher holds the key."
    assert nb["cells"][0]["cell_type"] == "code"  # the teacher's notebook is left alone


def test_the_book_of_the_student_edition_has_no_solution_page(tmp_path):
    # One small notebook that loads a solution, whose file is even present: the student
    # edition's copy of the notebook names no solution, so the book renders no solution page.
    nb = {"cells": [{"cell_type": "markdown", "id": "t", "metadata": {},
                     "source": "# 00 · A page\n\nSolution: `%load solutions/00_x.py`"}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    for folder, book in ((teacher, nb), (student, edition.student_notebook(nb))):
        (folder / "solutions").mkdir(parents=True)
        (folder / "solutions" / "00_x.py").write_text("answer = 42\n")
        (folder / "00-a.ipynb").write_text(json.dumps(book))
    names = [p.name for p in build_book(teacher, tmp_path / "tbook", mathjax="cdn")]
    assert "solution-00_x.html" in names
    names = [p.name for p in build_book(student, tmp_path / "sbook", mathjax="cdn")]
    assert names == ["index.html", "00-a.html"]
    assert not list((tmp_path / "sbook").rglob("solution-*"))


def test_a_folder_that_is_not_an_edition_is_not_emptied(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        edition.build_student_edition(ROOT, tmp_path, book=False)
    assert (tmp_path / "precious.txt").is_file()


def test_a_built_edition_with_its_book_has_no_solution(tmp_path):
    # The whole edition, book included, as `make student` builds it (about a minute);
    # NEURALODE_STUDENT_EDITION names one already built to check instead.
    given = os.environ.get("NEURALODE_STUDENT_EDITION")
    folder = Path(given) if given else tmp_path / "student"
    if not given:
        edition.build_student_edition(ROOT, folder, book=True)
    assert (folder / "book" / "index.html").is_file()
    assert not list((folder / "book").rglob("solution-*"))
    assert leaks(folder) == []
