"""The committed reports that notebooks show (neuralode_helpers.reports): each one shipped with
the package is the same as the one its script wrote in benchmarks/, and publish writes both."""

from pathlib import Path

import pytest

from neuralode_helpers import reports

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(reports.REPORTS))
def test_the_package_copy_is_the_committed_report(name):
    shipped = reports.committed_report(name)
    assert shipped == (ROOT / "benchmarks" / f"{name}.md").read_text(encoding="utf-8")
    assert reports.sections(shipped), f"{name}: no '## ' section"


def test_an_unknown_report_is_a_clear_error():
    with pytest.raises(ValueError, match="no committed report 'nope': the reports are"):
        reports.committed_report("nope")


def test_sections_split_on_level_two_headings():
    text = "# Title\nintro\n## First\nbody 1\n## Second\nbody 2\n"
    assert reports.sections(text) == {"First": "body 1", "Second": "body 2\n"}


def test_publish_writes_the_package_copy_of_a_known_report(tmp_path, monkeypatch):
    name = "test_publish_report"
    monkeypatch.setitem(reports.REPORTS, name, "none")
    copy = Path(reports.__file__).parent / "data" / f"{name}.md"
    try:
        written = reports.publish("## A\nrow\n", tmp_path / f"{name}.md")
        assert written == [tmp_path / f"{name}.md", copy]
        assert copy.read_text() == (tmp_path / f"{name}.md").read_text() == "## A\nrow\n"
    finally:
        copy.unlink(missing_ok=True)
    other = reports.publish("x", tmp_path / "scratch.md")
    assert other == [tmp_path / "scratch.md"]
