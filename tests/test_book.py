"""`make book`: the notebook series as static HTML pages, linked to each other."""

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from neuralode_helpers.book import build_book, notebook_summary, solution_files

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
PNG = base64.b64encode(bytes.fromhex(  # a 1x1 picture
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc000000301010018dd8db0000000"
    "0049454e44ae426082")).decode()


class Page(HTMLParser):
    """The links, pictures and scripts of one HTML page."""

    def __init__(self, path):
        super().__init__()
        self.links, self.images, self.scripts, self.downloads = [], [], [], []
        self.text = Path(path).read_text(encoding="utf-8")
        self.feed(self.text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and "href" in a and "download" in a:
            self.downloads.append(a["href"])
        elif tag == "a" and "href" in a:
            self.links.append((a.get("rel"), a["href"]))
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "script" and a.get("src"):
            self.scripts.append(a["src"])

    def rel(self, rel):
        return [href for r, href in self.links if r == rel]

    def data_images(self):
        return [s for s in self.images if s.startswith("data:image/")]


def image_outputs(nb):
    return sum(1 for c in nb["cells"] for o in c.get("outputs", [])
               if {"image/png", "image/jpeg"} & set(o.get("data", {})))


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    return out, build_book(ROOT / "notebooks", out, mathjax="cdn")


def test_every_notebook_has_a_page_with_its_figures(book):
    out, pages = book
    assert pages[0] == out / "index.html"
    for nb_path in NOTEBOOKS:
        page = out / (nb_path.stem + ".html")
        assert page in pages, page.name
        nb = json.loads(nb_path.read_text())
        html = Page(page)
        # Every figure the notebook shows is in the page itself, as a data: URI.
        assert len(html.data_images()) >= image_outputs(nb), page.name
        title, _ = notebook_summary(nb)
        assert f"<title>{title}</title>" in html.text.replace("&amp;", "&")
    total = sum(len(Page(p).data_images()) for p in pages)
    assert total > 0


def test_index_links_to_every_page_with_its_title_and_goals(book):
    out, _ = book
    index = Page(out / "index.html")
    hrefs = {href for _, href in index.links}
    for nb_path in NOTEBOOKS:
        assert nb_path.stem + ".html" in hrefs, nb_path.name
        title, learn = notebook_summary(json.loads(nb_path.read_text()))
        assert title in index.text.replace("&amp;", "&")
        if learn:  # the first goal's first words are on the index
            first = learn.splitlines()[0].lstrip("-* ").split("$")[0][:20].strip()
            assert first in index.text.replace("&amp;", "&"), first


def test_previous_and_next_links_resolve_in_order(book):
    out, _ = book
    names = [p.stem + ".html" for p in NOTEBOOKS]
    for i, name in enumerate(names):
        page = Page(out / name)
        prev, nxt = page.rel("prev"), page.rel("next")
        # Once at the top and once at the bottom of the page.
        assert prev == ([names[i - 1]] * 2 if i else []), (name, prev)
        assert nxt == ([names[i + 1]] * 2 if i + 1 < len(names) else []), (name, nxt)
        for _, href in page.links:
            if href.endswith(".html") or ".html#" in href:
                assert (out / href.split("#")[0]).is_file(), (name, href)
            assert ".ipynb" not in href or href.startswith(("http:", "https:")), (name, href)
    assert Page(out / "index.html").rel("next") == [names[0]] * 2


def test_every_page_offers_its_notebook_and_says_how_to_run_it(book):
    out, _ = book
    for nb_path in NOTEBOOKS:
        page = Page(out / (nb_path.stem + ".html"))
        assert page.downloads == [f"download/{nb_path.name}"], nb_path.name
        assert (out / "download" / nb_path.name).read_bytes() == nb_path.read_bytes()
        assert "To run it" in page.text and "make lab" in page.text


def test_every_loaded_solution_has_a_page(book):
    out, pages = book
    loaded = 0
    for nb_path in NOTEBOOKS:
        nb = json.loads(nb_path.read_text())
        nb_page = Page(out / (nb_path.stem + ".html"))
        for ref in solution_files(nb):
            source = ROOT / "notebooks" / ref
            assert source.is_file(), ref  # a %load that would fail in JupyterLab
            name = "solution-" + source.stem + ".html"
            assert out / name in pages and name in [h for _, h in nb_page.links], name
            solution = Page(out / name)
            assert solution.downloads == [f"download/solutions/{source.name}"]
            assert (out / "download" / "solutions" / source.name).is_file()
            assert nb_path.stem + ".html" in [h for _, h in solution.links]
            # the file is on the page (its first comment line names the exercise)
            assert source.read_text().splitlines()[0][2:20] in solution.text, name
            loaded += 1
    assert loaded >= 16


def _notebook(cells, metadata=None):
    return {"cells": cells, "metadata": metadata or {}, "nbformat": 4, "nbformat_minor": 5}


def _md(i, text):
    return {"cell_type": "markdown", "id": f"m{i}", "metadata": {}, "source": text}


def _code(i, outputs):
    return {"cell_type": "code", "id": f"c{i}", "metadata": {}, "source": "x = 1",
            "execution_count": i, "outputs": outputs}


def test_widgets_become_static_snapshots_and_links_become_pages(tmp_path):
    src = tmp_path / "nb"
    src.mkdir()
    state = {
        "box": {"model_name": "VBoxModel", "state": {
            "children": ["IPY_MODEL_c", "IPY_MODEL_t", "IPY_MODEL_out"]}},
        "c": {"model_name": "FloatSliderModel", "state": {
            "description": "c", "value": 0.5, "readout_format": ".1f"}},
        "t": {"model_name": "FloatRangeSliderModel", "state": {
            "description": "t window", "value": [0, 10], "readout_format": ".1f"}},
        "out": {"model_name": "OutputModel", "state": {"outputs": [
            {"output_type": "display_data", "metadata": {},
             "data": {"image/png": PNG, "text/plain": "<Figure>"}}]}},
    }
    view = {"output_type": "display_data", "metadata": {}, "data": {
        "application/vnd.jupyter.widget-view+json": {"model_id": "box", "version_major": 2,
                                                    "version_minor": 0},
        "text/plain": "VBox(...)"}}
    first = _notebook([
        _md(0, "# 00 · First\n\nIntro.\n\n**What you will learn**\n\n- the slope $a^2$;\n"
               "- the rest.\n\nMore text."),
        _md(1, "Next: [the second](02-second.ipynb#Part-2) and "
               "[again](../notebooks/02-second.ipynb); "
               "[on the web](https://example.org/02-second.ipynb)."),
        _code(1, [view]),
    ], {"widgets": {"application/vnd.jupyter.widget-state+json": {
        "state": state, "version_major": 2, "version_minor": 0}}})
    second = _notebook([_md(0, "# 02 · Second\n\nNo goals here."),
                        _code(1, [{"output_type": "display_data", "metadata": {},
                                   "data": {"image/png": PNG, "text/plain": "<Figure>"}}])])
    (src / "00-first.ipynb").write_text(json.dumps(first))
    (src / "02-second.ipynb").write_text(json.dumps(second))
    (src / "README.md").write_text("# Notes\n\nStart with [the first](00-first.ipynb).")

    out = tmp_path / "book"
    pages = build_book(src, out, mathjax="cdn")
    assert [p.name for p in pages] == ["index.html", "00-first.html", "02-second.html",
                                       "notes.html"]
    one, two = Page(out / "00-first.html"), Page(out / "02-second.html")
    # The slider values as text, the figure their Output showed, and a word on why.
    assert "c = 0.5" in one.text and "t window = 0.0 – 10.0" in one.text
    assert one.data_images() == [f"data:image/png;base64,{PNG}"]
    assert "need a running kernel" in one.text
    assert "widget-view+json" not in one.text and "html-manager" not in one.text
    assert not any("require" in s for s in one.scripts)
    hrefs = [h for _, h in one.links]
    assert "02-second.html#Part-2" in hrefs and "02-second.html" in hrefs
    assert "https://example.org/02-second.ipynb" in hrefs
    assert one.rel("next") == ["02-second.html"] * 2 and one.rel("prev") == []
    assert two.rel("prev") == ["00-first.html"] * 2 and two.rel("next") == []
    assert len(two.data_images()) == 1
    assert "00-first.html" in [h for _, h in Page(out / "notes.html").links]
    index = Page(out / "index.html")
    assert "00 · First" in index.text and "the slope" in index.text
    assert "No goals here" not in index.text
    # Without a local MathJax, the pages say that formulas need the web to be typeset.
    assert "LaTeX source" in index.text
    assert any("mathjax" in s.lower() for s in one.scripts)


def test_a_local_mathjax_is_copied_into_the_book(tmp_path):
    mathjax = tmp_path / "mathjax"
    (mathjax / "config").mkdir(parents=True)
    (mathjax / "MathJax.js").write_text("// stand-in")
    (mathjax / "config" / "TeX-AMS-MML_HTMLorMML-full.js").write_text("// stand-in")
    src = tmp_path / "nb"
    src.mkdir()
    (src / "00-only.ipynb").write_text(json.dumps(_notebook([_md(0, "# 00 · Only\n\n$x$")])))
    out = tmp_path / "book"
    build_book(src, out, mathjax=mathjax)
    assert (out / "_static" / "mathjax" / "MathJax.js").is_file()
    scripts = Page(out / "00-only.html").scripts
    assert "_static/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe" in scripts
    assert not any(s.startswith("http") for s in scripts)
    assert "no network needed" in Page(out / "index.html").text


def test_building_twice_into_the_same_folder_works(tmp_path):
    src = tmp_path / "nb"
    src.mkdir()
    (src / "00-only.ipynb").write_text(json.dumps(_notebook([_md(0, "# 00 · Only")])))
    first = build_book(src, tmp_path / "book", mathjax="cdn")
    assert build_book(src, tmp_path / "book", mathjax="cdn") == first
    with pytest.raises(FileNotFoundError):
        build_book(tmp_path / "empty", tmp_path / "book2")
    with pytest.raises(FileNotFoundError, match="MathJax.js"):
        build_book(src, tmp_path / "book3", mathjax=tmp_path / "nowhere")


def test_the_installed_mathjax_is_found_so_the_book_works_offline():
    # jupyter-server-mathjax is a dependency: `make book` must not need the network for math.
    from neuralode_helpers.book import find_local_mathjax

    found = find_local_mathjax()
    assert found is not None and (found / "MathJax.js").is_file()
