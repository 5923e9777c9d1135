"""The reader's text: no control characters, one notation, no lab notes.

Everything a reader sees is searched: every notebook cell (markdown and code), every module
of the package (its docstrings and comments), the worked solutions and the teaching notes.
The notation is the table of symbols in notebook 00 (the same table is in the teaching notes):
the adjoint a(t) is the *total* derivative dL/dz(t), and ∂ is kept for the direct partials
ℓ_i = ∂L/∂z_i; h is a solver's step, ε a finite-difference step, Δ a window's length, δ a
small change, γ damping."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]-*.ipynb"))
TEACHING_NOTES = NOTEBOOK_DIR / "README.md"


def _texts():
    """(where, text) for every piece of reader-facing text."""
    for nb in NOTEBOOKS:
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        for i, cell in enumerate(cells):
            src = cell["source"]
            yield f"{nb.name} cell {i} ({cell['cell_type']})", "".join(src) if isinstance(
                src, list) else src
    for path in sorted((ROOT / "neuralode_helpers").rglob("*.py")):
        yield str(path.relative_to(ROOT)), path.read_text(encoding="utf-8")
    for path in sorted((NOTEBOOK_DIR / "solutions").glob("*")):
        if path.is_file():
            yield str(path.relative_to(ROOT)), path.read_text(encoding="utf-8")
    for path in (ROOT / "README.md", TEACHING_NOTES):
        yield str(path.relative_to(ROOT)), path.read_text(encoding="utf-8")


TEXTS = list(_texts())
# Any C0 control character but the newline (and the carriage return of a Windows line end):
# a "\b", "\f" or "\t" in markdown is an unescaped backslash of \big, \frac or \theta.
CONTROL = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]")


def test_the_search_covers_the_text():
    kinds = {where.split(" ")[0].split("/")[0] for where, _ in TEXTS}
    assert len(NOTEBOOKS) >= 10
    assert {"neuralode_helpers", "notebooks", "README.md"} <= kinds | {"README.md"}
    assert sum(where.endswith("(markdown)") for where, _ in TEXTS) > 100


def test_no_control_characters():
    bad = []
    for where, text in TEXTS:
        for n, line in enumerate(text.split("\n"), 1):
            hit = CONTROL.search(line)
            if hit:
                bad.append(f"{where}, line {n}: {hit.group()!r} in {line.strip()[:60]!r}")
    assert not bad, "control characters (an unescaped backslash?):\n" + "\n".join(bad)


def test_control_character_search_finds_a_garbled_formula():
    # What json.loads makes of "\frac" and "\big" written without a second backslash.
    garbled = json.loads('"a = \\big(\\frac{dL}{dz}\\big)"'.replace("\\\\", "\\"))
    assert CONTROL.search(garbled)
    assert not CONTROL.search(r"a = \big(\frac{dL}{dz}\big)")


# The total derivative written with ∂ (what a(t) is not): ∂L/∂z(t), \partial L / \partial z(t).
PARTIAL_TOTAL = re.compile(
    r"∂L\s*/\s*∂z\s*\(t\)|\\partial\s*L\s*\}?\s*\{?\s*\\partial\s*z\s*\(t\)"
    r"|\\partial\s*L\s*/\s*\\partial\s*z\s*\(t\)")


@pytest.mark.parametrize("text, found", [
    (r"$a(t) = \big(\frac{\partial L}{\partial z(t)}\big)^\top$", True),
    ("a(t) = ∂L/∂z(t)", True),
    (r"$\partial L / \partial z(t)$", True),
    (r"$a(t) = \big(\frac{dL}{dz(t)}\big)^\top$", False),
    (r"$\ell_i = \big(\frac{\partial L}{\partial z_i}\big)^\top$", False),
])
def test_the_notation_search_tells_total_from_partial(text, found):
    assert bool(PARTIAL_TOTAL.search(text)) is found


def test_the_total_derivative_is_never_written_with_partials():
    bad = [f"{where}: {m.group()!r}" for where, text in TEXTS
           for m in PARTIAL_TOTAL.finditer(text)]
    assert not bad, "a(t) is the total derivative dL/dz(t), not ∂L/∂z(t):\n" + "\n".join(bad)


def _symbol_table(text):
    """The rows of the markdown table whose header starts with 'symbol'."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if re.match(r"\|\s*symbol\s*\|", line):
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip("|").split("|")])
            return rows
    return None


def _table_in_00():
    cells = json.loads((NOTEBOOK_DIR / "00-introduction.ipynb").read_text("utf-8"))["cells"]
    for cell in cells:
        if cell["cell_type"] == "markdown":
            rows = _symbol_table("".join(cell["source"]))
            if rows:
                return rows
    raise AssertionError("notebook 00 has no table of symbols (a table headed 'symbol')")


def test_one_table_of_symbols_in_00_and_the_teaching_notes():
    in_00 = _table_in_00()
    in_notes = _symbol_table(TEACHING_NOTES.read_text("utf-8"))
    assert in_notes is not None, "the teaching notes lost their table of symbols"
    assert in_00 == in_notes, "the two copies of the table of symbols differ"


# Each symbol with the meaning it must have in the table (a word of that meaning).
REQUIRED = {
    r"a(t)": r"dL}{dz(t)}",
    r"\ell_i": r"\partial L}{\partial z_i}",
    r"a_\theta": "parameter",
    r"h": "step",
    r"\varepsilon": "finite",
    r"\Delta": "window",
    r"s": "rescaled",
    r"\tau": "time",
    r"u": "augmented",
    r"\delta": "change",
    r"\gamma": "damping",
    "NFE": "evaluations",
}


def test_the_table_gives_each_symbol_one_meaning():
    rows = _table_in_00()
    symbols = {}
    for row in rows:
        for sym in re.findall(r"\$([^$]+)\$", row[0]) or [row[0]]:
            for part in sym.split(","):
                symbols.setdefault(part.strip(), []).append(" ".join(row))
    missing = []
    for sym, meaning in REQUIRED.items():
        rows_for = [r for s, rs in symbols.items() for r in rs
                    if s == sym or s.startswith(sym + " ") or s.startswith(sym + "(")
                    or s.startswith(sym + "=") or s.startswith(sym + " =")]
        if not any(meaning in r for r in rows_for):
            missing.append(f"{sym} ({meaning!r})")
    assert not missing, f"the table of symbols lacks: {', '.join(missing)}"


# Second meanings the table rules out, where a reader meets them (notebooks' markdown).
SECOND_MEANINGS = [
    (re.compile(r"damping[^.$]{0,40}\$\\delta\$|\$\\delta\$[^.$]{0,20}damping|damping δ"),
     "damping is γ (δ is a small change)"),
    (re.compile(r"\\Delta\s*L\b|ΔL\b"), "a change of the loss is δL (Δ is a window's length)"),
]


def test_no_second_meanings_in_the_notebooks():
    bad = []
    for where, text in TEXTS:
        if where.endswith("(markdown)") or where.endswith("(code)"):
            for pattern, why in SECOND_MEANINGS:
                for m in pattern.finditer(text):
                    bad.append(f"{where}: {m.group()!r}: {why}")
    assert not bad, "\n".join(bad)


# What belongs in the README or the teaching notes, never in a notebook.
LAB_NOTES = re.compile(
    r"\bnbval\b|\bruff\b|NBVAL_|\bpytest\b|\bmake test\b|compared by the tests|the test suite"
    r"|while writing (this|the) notebook|busy machine|\bCI\b", re.IGNORECASE)


@pytest.mark.parametrize("text, found", [
    ("The outputs are compared by the tests.", True),
    ("Runs made while writing this notebook gave 1.8.", True),
    ("On a busy machine this takes longer.", True),
    ("The test set holds 20 % of the digits.", False),
])
def test_the_lab_notes_search(text, found):
    assert bool(LAB_NOTES.search(text)) is found


def test_no_lab_notes_in_the_notebooks():
    bad = [f"{where}: {m.group()!r}" for where, text in TEXTS
           if where.endswith("(markdown)") or where.endswith("(code)")
           for m in LAB_NOTES.finditer(text)]
    assert not bad, ("how the series is checked belongs in the README or the teaching "
                     "notes:\n" + "\n".join(bad))
