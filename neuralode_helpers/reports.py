"""The committed reports of the long runs that notebooks show, shipped with the package.

Some measurements take longer than a notebook's time budget (a sweep over learning rates and
seeds, a work–precision comparison): a script in ``benchmarks/`` runs them and writes a
Markdown report, which the notebook shows beside a reduced live run. The reports are copied
into ``neuralode_helpers/data/`` so that a notebook reads them from the installed package,
whatever folder it was opened from (``pip install``, Colab, a copy outside the repository).

``REPORTS`` lists them; each script writes both copies with :func:`publish`, and the tests
check that the two are the same.
"""

from importlib import resources
from pathlib import Path

# Report name -> the notebooks that show it.
REPORTS = {
    "sweep_latest": "08",
    "sweep_05_latent": "05",
    "sweep_rnode_toy": "09",
    "sweep_rnode_cnf": "09",
    "seminorm_equal_error": "04, 09",
}


def committed_report(name: str) -> str:
    """The text of the committed report ``name`` (a key of ``REPORTS``), from the package."""
    if name not in REPORTS:
        raise ValueError(f"no committed report {name!r}: the reports are {sorted(REPORTS)}")
    return resources.files(__package__).joinpath("data", f"{name}.md").read_text("utf-8")


def sections(text: str) -> dict:
    """A report's ``## `` sections: title -> body (the text before the first is left out)."""
    _, *parts = text.split("\n## ")
    return {p.split("\n", 1)[0].strip(): p.split("\n", 1)[1] if "\n" in p else ""
            for p in parts}


def publish(text: str, path: Path) -> list:
    """Write a report to ``path`` (in ``benchmarks/``) and, when it is one of ``REPORTS``, the
    same text to the package's copy. Returns the paths written."""
    path = Path(path)
    path.write_text(text, encoding="utf-8")
    written = [path]
    if path.stem in REPORTS:
        copy = Path(__file__).resolve().parent / "data" / path.name
        copy.write_text(text, encoding="utf-8")
        written.append(copy)
    return written
