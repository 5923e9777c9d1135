"""The 90-minute lesson plan of notebooks/README.md runs as written.

Every notebook starts with one "Setup" code cell (all imports and global settings) right after
its title. A lesson segment runs the Setup cell and then only the cells of the sections it
names, in a fresh kernel, as a teacher would after "Restart kernel". Sections are the parts of
a notebook that start at a markdown heading "## N. ...". The segments are written down here
as data and checked against the plan's table, so the plan and the test cannot drift apart.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"

# The plan, in its order: (minutes, notebook prefix, section numbers; None = the whole notebook).
LESSON_PLAN = [
    ("0–5", None, None),  # set-up buffer: laptops open the notebooks, kernels start
    ("5–15", "00", [2, 4]),
    ("15–35", "01", [1, 2, 3]),
    ("35–40", None, None),  # questions, a break
    ("40–55", "01", [4, 5, 6, 7]),
    ("55–70", "02", [1, 2]),
    ("70–87", "03", None),
    ("87–90", None, None),  # homework
]
# Sections that build on earlier sections of the same notebook: each must be taught in the
# same segment as those, or after them. 01 section 7's code and explorer show a_t and the jumps
# (sections 4 and 5) and Algorithm 1 (section 6); 02 section 2's Function is built on the
# vector-Jacobian product of section 1.
PREREQUISITES = {
    ("01", 7): [1, 2, 3, 4, 5, 6],
    ("01", 3): [1, 2],
    ("01", 2): [1],
    ("02", 2): [1],
}
SEGMENTS = [(minutes, nb, sections) for minutes, nb, sections in LESSON_PLAN if nb]

SECTION_HEADING = re.compile(r"^## (\d+)\.", flags=re.M)
ANY_SECTION_HEADING = re.compile(r"^## ", flags=re.M)


def notebook_path(prefix: str) -> Path:
    (path,) = NOTEBOOK_DIR.glob(f"{prefix}-*.ipynb")
    return path


def _numbers(text: str) -> list[int]:
    """'sections 1–3 and 6' -> [1, 2, 3, 6]; 'sections 2 and 4' -> [2, 4]."""
    numbers = []
    for first, last in re.findall(r"(\d+)(?:\s*[–-]\s*(\d+))?", text):
        numbers += list(range(int(first), int(last or first) + 1))
    return numbers


def plan_from_readme() -> list[tuple[str, str | None, list[int] | None]]:
    """The rows of the table under '## A 90-minute lesson' in notebooks/README.md."""
    text = (NOTEBOOK_DIR / "README.md").read_text(encoding="utf-8")
    plan = text.split("## A 90-minute lesson", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in plan.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not re.match(r"\d+[–-]\d+", cells[0]):
            continue
        minutes, where = cells[0], cells[1]
        if not where:
            rows.append((minutes, None, None))
            continue
        nb, _, rest = where.partition(",")
        rows.append((minutes, nb.strip(), _numbers(rest) if rest.strip() else None))
    return rows


def setup_cell(nb) -> nbformat.NotebookNode:
    """The Setup cell: the first code cell, right after the title's markdown."""
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    assert code and code[0] == 1, "the first code cell must follow the title cell"
    cell = nb.cells[1]
    assert cell.source.lstrip().startswith("# Setup"), "the first code cell must be the Setup cell"
    return cell


def sections(nb) -> dict[int, list[nbformat.NotebookNode]]:
    """Numbered sections: every cell from a '## N.' heading up to the next '## ' heading."""
    found, current = {}, None
    for cell in nb.cells[2:]:
        if cell.cell_type == "markdown" and ANY_SECTION_HEADING.search(cell.source):
            match = SECTION_HEADING.search(cell.source)
            current = int(match.group(1)) if match else None
            if current is not None:
                found[current] = []
        if current is not None:
            found[current].append(cell)
    return found


def run_cells(path: Path, cells) -> None:
    """Execute the given cells (after a fresh start) in a new kernel; raise on any error."""
    nb = nbformat.read(path, as_version=4)
    nb.cells = [nbformat.v4.new_code_cell(c.source) if c.cell_type == "code"
                else nbformat.v4.new_markdown_cell(c.source) for c in cells]
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()


def segment_cells(prefix: str, numbers: list[int] | None):
    path = notebook_path(prefix)
    nb = nbformat.read(path, as_version=4)
    setup = setup_cell(nb)
    if numbers is None:  # the whole notebook, top to bottom
        return path, nb.cells
    found = sections(nb)
    missing = [n for n in numbers if n not in found]
    assert not missing, f"{path.name} has no section(s) {missing}"
    return path, [setup] + [cell for n in numbers for cell in found[n]]


def test_segments_match_the_plan_in_the_teaching_notes():
    assert plan_from_readme() == LESSON_PLAN


def _minutes(span: str) -> tuple[int, int]:
    first, last = re.split(r"[–-]", span)
    return int(first), int(last)


def test_the_plan_fills_90_minutes_and_starts_with_a_set_up_buffer():
    spans = [_minutes(minutes) for minutes, _, _ in LESSON_PLAN]
    assert spans[0] == (0, 5) and LESSON_PLAN[0][1] is None  # 40 laptops starting kernels
    assert spans[-1][1] == 90
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end == start


def test_each_segment_stands_on_what_was_shown_before_it():
    shown: dict[str, set[int]] = {}
    for minutes, prefix, numbers in SEGMENTS:
        if numbers is None:  # a whole notebook, top to bottom
            continue
        now = shown.setdefault(prefix, set()) | set(numbers)
        for number in numbers:
            missing = set(PREREQUISITES.get((prefix, number), [])) - now
            assert not missing, (f"{minutes}: {prefix} section {number} builds on sections "
                                 f"{sorted(missing)}, not shown before it")
        shown[prefix] = now


def _teaching_section(title: str) -> str:
    text = (NOTEBOOK_DIR / "README.md").read_text(encoding="utf-8")
    assert f"\n## {title}\n" in text, f"the teaching notes have no '## {title}' section"
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("minutes, prefix, numbers", SEGMENTS,
                         ids=[f"{m} {nb}" for m, nb, _ in SEGMENTS])
def test_each_segment_has_its_board_plan_question_and_numbers(minutes, prefix, numbers):
    board = _teaching_section("Board plan")
    entry = re.search(rf"\*\*{minutes}, {prefix}\b.*?\*\*(.*?)(?=\n\*\*\d|\Z)", board, re.S)
    assert entry, f"no board plan for {minutes}"
    text = entry.group(1)
    assert re.search(r"^1\. ", text, re.M), f"{minutes}: no equations in order"
    assert "*Ask:*" in text and "*Answer:*" in text, f"{minutes}: no question with its answer"
    sheet = _teaching_section("Numbers sheet")
    assert re.search(rf"^\| {minutes} \| {prefix}\b", sheet, re.M), f"{minutes}: no numbers"


@pytest.mark.parametrize("minutes, prefix, numbers", SEGMENTS,
                         ids=[f"{m} {nb} {s or 'all'}" for m, nb, s in SEGMENTS])
def test_lesson_segment_runs_in_a_fresh_kernel(minutes, prefix, numbers):
    path, cells = segment_cells(prefix, numbers)
    run_cells(path, cells)


@pytest.mark.parametrize("prefix", ["00", "01", "02", "03"])
def test_notebook_starts_with_one_setup_cell_holding_every_import(prefix):
    nb = nbformat.read(notebook_path(prefix), as_version=4)
    setup_cell(nb)
    for cell in nb.cells[2:]:
        if cell.cell_type != "code":
            continue
        for line in cell.source.splitlines():
            # Only the exercise cells import their check function where it is used.
            if re.match(r"\s*(import|from)\s", line):
                assert "neuralode_helpers.exercises import check_" in line, (
                    f"{notebook_path(prefix).name}: import outside the Setup cell: {line}")


@pytest.mark.parametrize("prefix", ["00", "01", "02"])
def test_every_section_runs_after_setup_alone(prefix):
    # Any section may be taught on its own: Setup plus that section's cells, nothing else.
    path = notebook_path(prefix)
    nb = nbformat.read(path, as_version=4)
    setup = setup_cell(nb)
    for number, cells in sorted(sections(nb).items()):
        if any(c.cell_type == "code" for c in cells):
            try:
                run_cells(path, [setup] + cells)
            except Exception as error:
                raise AssertionError(f"{path.name}, section {number} alone: {error}") from error


def _outputs_text(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append("".join(out.get("text", "")))
            parts.append(str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def test_the_numbers_sheet_quotes_the_notebooks_outputs():
    # Every number the sheet gives to five or more decimals (the exact linear examples, which
    # do not depend on the machine) is in its notebook's committed output.
    sheet = _teaching_section("Numbers sheet")
    for row in sheet.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) < 3 or not re.match(r"\d+[–-]\d+$", cells[0]):
            continue
        prefix = cells[1][:2]
        outputs = _outputs_text(notebook_path(prefix))
        for number in re.findall(r"-?\d+\.\d{5,}", cells[2]):
            assert number in outputs, (
                f"numbers sheet, {cells[1]}: {number} is not in {prefix}'s output")
