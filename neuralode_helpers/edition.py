"""The student edition of the course (``make student``): everything a student needs, without
the answers.

The repository itself is the teacher's edition: notebooks, worked solutions
(``notebooks/solutions/``), teaching notes (``notebooks/README.md``) and the book with a page per
worked solution. :func:`build_student_edition` copies into one folder (``_build/student/``)

- the notebooks, with every mention of ``%load solutions/<file>`` (in the exercise text, in
  the comments of the answer cells, in a cell that loads a solution) replaced by a line saying
  that the teacher holds the key;
- the package ``neuralode_helpers/`` and what installs it (``pyproject.toml``, ``Makefile``,
  ``environment.yml``, ``README.md`` with a note on top, ``LICENSE``), so that ``make lab``
  works in the folder;
- the book (``book/``), rendered from those notebooks: no solution page, no teaching notes.

Left out: ``notebooks/solutions/``, the teaching notes (their lesson plan and numbers sheet give
answers away), the tests (they hold reference answers) and the benchmarks.

``python -m neuralode_helpers.edition [out_dir] [--no-book]`` from the repository's root.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
from pathlib import Path

__all__ = ["build_student_edition", "student_notebook", "student_text"]

NOTEBOOK_GLOB = "[0-9][0-9]-*.ipynb"
# Copied as they are (files or folders, relative to the repository's root).
COPIED = ["LICENSE", "pyproject.toml", "Makefile", "environment.yml", "neuralode_helpers"]
LOAD = re.compile(r"%load\s+solutions/")
KEY = "your teacher holds the key"
MARKER = ".student-edition"
_LABEL = re.compile(r"^(\W*)(Solution|Worked solution|Worked answer)s?:\s*"
                    r"`?%load\s+solutions/\S*?`?\s*\.?\s*$")
README_NOTE = (
    "> **Student edition.** The worked solutions (`notebooks/solutions/`) and the teaching notes "
    "are not part of this edition: your teacher holds the key. The checks in "
    "`neuralode_helpers.exercises` still say what is wrong with an answer.\n\n")


def _sentences(paragraph):
    """Split a paragraph after each ``.``, ``?`` or ``!`` that ends a sentence, keeping the
    whitespace so that ``"".join`` gives the paragraph back."""
    return re.split(r"(?<=[.?!])(\s+)", paragraph)


def student_text(text):
    """Markdown without any ``%load solutions/...``: a sentence that names one becomes a
    sentence saying that the teacher holds the key."""
    if not LOAD.search(text):
        return text
    out = []
    for paragraph in re.split(r"(\n\s*\n)", text):
        pieces = _sentences(paragraph)
        for i, piece in enumerate(pieces):
            if i % 2 or not LOAD.search(piece):
                continue
            label = _LABEL.match(piece)
            if label:
                pieces[i] = f"{label.group(1)}{label.group(2)}: {KEY}."
            else:
                pieces[i] = "Worked solutions are not part of this edition: " + KEY + "."
        out.append("".join(pieces))
    return "".join(out)


def _code(source):
    """A code cell's source without ``%load solutions/...``: a comment line keeps its comment
    with the key instead; a line that runs ``%load`` makes the cell a markdown note."""
    lines = source.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if not LOAD.search(line):
            continue
        hash_at = line.find("#")
        if hash_at < 0 or hash_at > LOAD.search(line).start():
            return None  # the cell loads a solution: it becomes a note
        head = line[:hash_at]
        ending = "\n" if line.endswith("\n") else ""
        lines[i] = f"{head}# Worked solution: {KEY}.{ending}"
    return "".join(lines)


def student_notebook(nb):
    """A copy of notebook ``nb`` (a dict, nbformat 4) with every reference to a worked solution
    replaced (see :func:`student_text`); outputs are kept."""
    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        if cell["cell_type"] == "code":
            new = _code(source)
            if new is None:
                cell.clear()
                cell.update({"cell_type": "markdown", "id": _key_id(source), "metadata": {},
                             "source": f"Worked solutions are not part of this edition: {KEY}."})
                continue
        else:
            new = student_text(source)
        cell["source"] = new
    return nb


def _key_id(source):
    return "key-" + hashlib.sha1(source.encode()).hexdigest()[:8]


def _write_notebook(nb, path):
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def build_student_edition(root=".", out_dir="_build/student", *, book=True):
    """Build the student edition of the repository at ``root`` into ``out_dir`` (emptied
    first). Returns the list of files written."""
    root, out_dir = Path(root).resolve(), Path(out_dir).resolve()
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / MARKER).is_file():  # never empty a folder this function did not make
            raise FileExistsError(f"{out_dir} is not empty and holds no earlier student edition")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("Built by python -m neuralode_helpers.edition\n")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".ipynb_checkpoints")
    for name in COPIED:
        source = root / name
        if source.is_dir():
            shutil.copytree(source, out_dir / name, ignore=ignore)
        elif source.is_file():
            shutil.copyfile(source, out_dir / name)
    readme = root / "README.md"
    if readme.is_file():
        (out_dir / "README.md").write_text(README_NOTE + readme.read_text(encoding="utf-8"),
                                           encoding="utf-8")
    notebooks = out_dir / "notebooks"
    notebooks.mkdir()
    for path in sorted((root / "notebooks").glob(NOTEBOOK_GLOB)):
        nb = json.loads(path.read_text(encoding="utf-8"))
        _write_notebook(student_notebook(nb), notebooks / path.name)
    if book:
        from .book import build_book

        build_book(notebooks, out_dir / "book")
    return sorted(p for p in out_dir.rglob("*") if p.is_file())


if __name__ == "__main__":  # python -m neuralode_helpers.edition [out_dir] [--no-book]
    import sys

    args = [a for a in sys.argv[1:] if a != "--no-book"]
    files = build_student_edition(".", args[0] if args else "_build/student",
                                  book="--no-book" not in sys.argv[1:])
    print(f"{len(files)} files in {args[0] if args else '_build/student'}")
