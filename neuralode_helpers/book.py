"""The executed notebook series as a static HTML book (``make book``).

Each notebook becomes one page, rendered with its committed outputs by nbconvert's ``lab``
HTML template: figures stay embedded as ``data:`` URIs, so a page is one self-contained file.
On top of what nbconvert does, :func:`build_book`

- writes an index page: each notebook's H1 title and its "What you will learn" list;
- puts previous / contents / next links at the top and bottom of every page, and rewrites
  links to ``NN-name.ipynb`` (in markdown cells) to the matching ``NN-name.html`` page;
- gives every page a link to download its notebook (copied into the book's ``download/``
  folder) and a line on how to run it, since the pages themselves are read-only;
- renders each worked solution that a notebook loads with ``%load solutions/<file>.py`` as a
  page of its own, ``solution-<file>.html``, linked from the notebook's page;
- replaces each widget (sliders, progress bars) by a static snapshot of its saved state: the
  sliders' values as text and the figure that their ``Output`` showed when the notebook ran.
  Sliders need a running kernel; nbconvert's own live rendering of saved widget state would
  fetch a JavaScript widget manager from a CDN, which a reader offline does not have;
- typesets the math with MathJax from a local copy when one is installed (the
  ``jupyter-server-mathjax`` package, or Debian's ``libjs-mathjax``), copied into the book;
  otherwise from nbconvert's default CDN, and then the pages need a network connection to
  typeset formulas (offline they show their LaTeX source, which stays readable).

Nothing is executed: the pages show the outputs committed with the notebooks (``make run``
refreshes them).
"""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

__all__ = ["build_book"]

NOTEBOOK_GLOB = "[0-9][0-9]-*.ipynb"
DOWNLOAD_DIR = "download"
SOLUTION_LOAD = re.compile(r"%load\s+(solutions/[\w.-]+\.i?py)")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
MATHJAX_DIR = "_static/mathjax"

_STYLE = """<style>
nav.book-nav { display: flex; justify-content: space-between; gap: 1em; margin: 1em 0;
  padding: 0.6em 1em; border: 1px solid #ddd; border-radius: 6px; background: #f7f7f7;
  font-family: var(--jp-ui-font-family, sans-serif); font-size: 0.95em; }
nav.book-nav a { text-decoration: none; }
nav.book-nav span { flex: 1; }
nav.book-nav .book-next { text-align: right; }
nav.book-nav .book-contents { text-align: center; }
.book-widget { border: 1px dashed #bbb; border-radius: 4px; padding: 0.4em 0.6em; }
.book-widget-note { color: #666; font-size: 0.85em; font-style: italic; }
.book-widget-row { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: center; }
.book-widget-slider { font-family: var(--jp-code-font-family, monospace); }
.book-run { margin: 0.5em 0 1em; padding: 0.5em 1em; border-left: 4px solid #4a90d9;
  background: #f2f7fc; font-family: var(--jp-ui-font-family, sans-serif); font-size: 0.9em; }
</style>
"""


# -- reading notebooks ------------------------------------------------------------------------
def _markdown(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def notebook_summary(nb):
    """``(title, learn)``: the text of the first H1 and the markdown list that follows a
    "What you will learn" line in the first markdown cell ("" when there is none)."""
    first = next((_markdown(c) for c in nb["cells"] if c["cell_type"] == "markdown"), "")
    title = re.search(r"^#\s+(.+?)\s*$", first, flags=re.M)
    learn = ""
    head = re.search(r"^.*what you will learn.*$", first, flags=re.M | re.I)
    if head:
        items = []
        for line in first[head.end():].lstrip("\n").splitlines():
            if not line.strip() or not (line.lstrip().startswith(("-", "*")) or items):
                break
            items.append(line)
        learn = "\n".join(items)
    return (title.group(1) if title else "Untitled"), learn


# -- widgets as static snapshots --------------------------------------------------------------
def _format(value, fmt):
    try:
        return format(value, fmt or "")
    except (TypeError, ValueError):
        return str(value)


def _output_html(out):
    """One saved output of an ``Output`` widget: a picture, HTML or text."""
    data = out.get("data", {})
    for mime in ("image/png", "image/jpeg"):
        if mime in data:
            b64 = "".join(data[mime]) if isinstance(data[mime], list) else data[mime]
            return f'<img src="data:{mime};base64,{b64.strip()}">'
    if "image/svg+xml" in data:
        return "".join(data["image/svg+xml"])
    if "text/html" in data:
        return "".join(data["text/html"])
    text = out.get("text") or data.get("text/plain") or ""
    return f"<pre>{html.escape(''.join(text))}</pre>" if text else ""


def _widget_html(model_id, state, seen=()):
    """Static HTML for a saved widget and its children; None for a kind we do not know."""
    model = state.get(model_id)
    if model is None or model_id in seen:
        return None
    name, s = model.get("model_name", ""), model.get("state", {})
    seen = (*seen, model_id)
    desc = html.escape(s.get("description", ""))
    if name.endswith("BoxModel"):
        parts = [_widget_html(ref.removeprefix("IPY_MODEL_"), state, seen)
                 for ref in s.get("children", [])]
        inner = "".join(p for p in parts if p)
        return f'<div class="book-widget-row">{inner}</div>' if name == "HBoxModel" else (
            f"<div>{inner}</div>")
    if name == "OutputModel":
        return "".join(_output_html(o) for o in s.get("outputs", []))
    if name.endswith("SliderModel"):
        value = s.get("value")
        fmt = s.get("readout_format")
        shown = (" – ".join(_format(v, fmt) for v in value) if isinstance(value, list)
                 else _format(value, fmt))
        return f'<span class="book-widget-slider">{desc} = {html.escape(shown)}</span>'
    if name in ("HTMLModel", "HTMLMathModel"):
        return f"<span>{s.get('value', '')}</span>"
    if name in ("LabelModel", "TextModel", "FloatTextModel", "IntTextModel"):
        return f"<span>{desc} {html.escape(str(s.get('value', '')))}</span>"
    if name in ("FloatProgressModel", "IntProgressModel"):
        return (f'{desc}<progress value="{s.get("value", 0)}" max="{s.get("max", 100)}">'
                f"</progress>")
    return None


def _static_widgets(nb):
    """Replace each widget view by a static snapshot of its saved state; drop the saved state
    so that nbconvert does not load a widget manager from the web."""
    bundle = nb.get("metadata", {}).pop("widgets", {})
    state = bundle.get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(WIDGET_VIEW)
            if view is None:
                continue
            del out["data"][WIDGET_VIEW]
            snapshot = _widget_html(view.get("model_id", ""), state)
            if snapshot:  # else the output's text/plain stands in
                note = ('<div class="book-widget-note">A static snapshot: the sliders need a '
                        "running kernel (open the notebook in JupyterLab).</div>"
                        if "book-widget-slider" in snapshot else "")
                out["data"]["text/html"] = f'<div class="book-widget">{note}{snapshot}</div>'
    return nb


# -- MathJax ----------------------------------------------------------------------------------
def find_local_mathjax():
    """A folder holding MathJax 2's ``MathJax.js``, or None: the ``jupyter-server-mathjax``
    package first, then Debian's ``libjs-mathjax``."""
    try:
        import jupyter_server_mathjax

        candidates = [Path(jupyter_server_mathjax.__file__).parent / "static"]
    except ImportError:
        candidates = []
    candidates.append(Path("/usr/share/javascript/mathjax"))
    return next((c for c in candidates if (c / "MathJax.js").is_file()), None)


def _mathjax_url(out_dir, source):
    """Copy a local MathJax into the book (once) and return the pages' URL for it."""
    target = out_dir / MATHJAX_DIR
    if not (target / "MathJax.js").is_file():
        shutil.copytree(source, target, dirs_exist_ok=True, symlinks=False,
                        ignore=shutil.ignore_patterns("unpacked", "*.png", "*.md"))
    config = ("TeX-AMS_CHTML-full" if (target / "config" / "TeX-AMS_CHTML-full.js").is_file()
              else "TeX-AMS-MML_HTMLorMML-full")
    return f"{MATHJAX_DIR}/MathJax.js?config={config},Safe"


# -- pages ------------------------------------------------------------------------------------
def _nav(prev, nxt, contents=True):
    """Previous, contents and next links; ``prev``/``nxt`` are pages (dicts) or None."""
    def link(page, rel, text):
        if page is None:
            return f'<span class="book-{rel}"></span>'
        return (f'<span class="book-{rel}"><a rel="{rel}" href="{page["file"]}">'
                f"{text}</a></span>")

    middle = '<a href="index.html">Contents</a>' if contents else ""
    return ('<nav class="book-nav">'
            + link(prev, "prev", f"← {html.escape(prev['title'])}" if prev else "")
            + f'<span class="book-contents">{middle}</span>'
            + link(nxt, "next", f"{html.escape(nxt['title'])} →" if nxt else "")
            + "</nav>")


def _rewrite_links(body, stems):
    """``href="[../notebooks/]NN-name.ipynb[#anchor]"`` → ``href="NN-name.html[#anchor]"`` for
    every notebook in the book; links with a scheme (``https:``...) are left alone."""
    def repl(m):
        stem = m.group(2)
        return f'href="{stem}.html{m.group(3) or ""}"' if stem in stems else m.group(0)

    return re.sub(r'href="(?![a-zA-Z][a-zA-Z0-9+.-]*:)((?:[^"#]*/)?)([^"/#]+)\.ipynb(#[^"]*)?"',
                  repl, body)


def _export(nb, title, mathjax_url):
    import nbformat
    from nbconvert import HTMLExporter

    options = {"template_name": "lab"}
    if mathjax_url:
        options["mathjax_url"] = mathjax_url
    exporter = HTMLExporter(**options)
    body, _ = exporter.from_notebook_node(nbformat.from_dict(nb),
                                          resources={"metadata": {"name": title}})
    # require.js is only for live widgets and other JavaScript outputs, none of which the book
    # has: one request less to the web.
    body = re.sub(r'<script src="[^"]*require(\.min)?\.js"[^>]*>\s*</script>\s*', "", body)
    return body.replace("</head>", _STYLE + "</head>", 1)


def _with_nav(body, nav, top=""):
    body = body.replace("<main>", "<main>\n" + nav + top, 1)
    head, sep, tail = body.rpartition("</main>")
    return head + nav + "\n" + sep + tail if sep else body + nav


def solution_files(nb):
    """The solution files a notebook loads with ``%load solutions/<file>.py`` (or ``.ipy``),
    in order."""
    found = []
    for cell in nb["cells"]:
        for path in SOLUTION_LOAD.findall(_markdown(cell)):
            if path not in found:
                found.append(path)
    return found


def _solution_page(path):
    return "solution-" + Path(path).stem + ".html"


def _run_line(download_href, name, what="notebook"):
    """The banner under the top navigation: download link and how to run it."""
    how = ("To run it, open it in JupyterLab from the course's folder (README, Quick start: "
           "<code>make lab</code> on macOS and Linux; PowerShell or conda commands on Windows): "
           "it imports the course's package, <code>neuralode_helpers</code>.")
    if what == "solution":
        how = ("To run it, type <code>%load solutions/" + html.escape(name) + "</code> in a cell "
               "of its notebook in JupyterLab and run that cell twice (once to load, once to run).")
    return (f'<div class="book-run"><a class="book-download" href="{download_href}" download>'
            f"Download this {what} ({html.escape(name)})</a>. {how}</div>")


def _link_solutions(body, available):
    """Make ``%load solutions/<file>.py`` in the page's markdown a link to the solution page."""
    def repl(m):
        path = "solutions/" + m.group(1)
        return (f'<a href="{_solution_page(path)}">{m.group(0)}</a>' if path in available
                else m.group(0))

    return re.sub(r"<code>%load solutions/([\w.-]+\.i?py)</code>", repl, body)


def _index_notebook(pages, book_title, intro, notes):
    lines = [f"# {book_title}", "", intro, ""]
    for page in pages:
        lines += [f"## [{page['title']}]({page['file']})", ""]
        if page["learn"]:
            lines += ["What you will learn:", "", page["learn"], ""]
        if page.get("solutions"):
            links = ", ".join(f"[{Path(p).name}]({_solution_page(p)})" for p in page["solutions"])
            lines += [f"Worked solutions: {links}.", ""]
    lines += notes
    return _markdown_notebook("\n".join(lines))


def _markdown_notebook(text):
    return {"cells": [{"cell_type": "markdown", "id": "page", "metadata": {}, "source": text}],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _write_solution(source, page, out_dir, mathjax_url):
    """One worked solution as a page: its code (not run), linked back to its notebook."""
    name = source.name
    shutil.copyfile(source, out_dir / DOWNLOAD_DIR / "solutions" / name)
    title = f"Solution: {name}"
    intro = (f"# {title}\n\nA worked solution for an exercise of "
             f"[{page['title']}]({page['file']}).")
    nb = _markdown_notebook(intro)
    nb["cells"].append({"cell_type": "code", "id": "solution", "metadata": {},
                        "execution_count": None, "outputs": [],
                        "source": source.read_text(encoding="utf-8")})
    nb["metadata"] = {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                     "language": "python"},
                      "language_info": {"name": "python"}}
    body = _export(nb, title, mathjax_url)
    back = f'<a href="{page["file"]}">{html.escape(page["title"])}</a>'
    nav = ('<nav class="book-nav"><span class="book-prev">← ' + back + "</span>"
           '<span class="book-contents"><a href="index.html">Contents</a></span>'
           '<span class="book-next"></span></nav>')
    run = _run_line(f"{DOWNLOAD_DIR}/solutions/{name}", name, what="solution")
    body = _with_nav(body, nav, run)
    target = out_dir / _solution_page(f"solutions/{name}")
    target.write_text(body, encoding="utf-8")
    return target


def build_book(notebook_dir="notebooks", out_dir="_build/book", *,
               title="Neural ODEs from scratch", mathjax="auto"):
    """Render every ``NN-*.ipynb`` in ``notebook_dir`` (with its committed outputs) to
    ``out_dir/NN-*.html``, plus ``out_dir/index.html``.

    ``mathjax``: ``"auto"`` (a local copy if one is installed, else the CDN), ``"cdn"``, or the
    path of a folder holding ``MathJax.js``. Returns the paths of the pages written: index,
    notebooks, solutions, teaching notes.
    """
    import nbformat

    notebook_dir, out_dir = Path(notebook_dir), Path(out_dir)
    paths = sorted(notebook_dir.glob(NOTEBOOK_GLOB))
    if not paths:
        raise FileNotFoundError(f"no {NOTEBOOK_GLOB} notebooks in {notebook_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)

    source = find_local_mathjax() if mathjax == "auto" else (
        None if mathjax == "cdn" else Path(mathjax))
    if source is not None and not (Path(source) / "MathJax.js").is_file():
        raise FileNotFoundError(f"no MathJax.js in {source}")
    mathjax_url = _mathjax_url(out_dir, source) if source else None

    notebooks, pages = [], []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        page_title, learn = notebook_summary(nb)
        notebooks.append(nb)
        solutions = [s for s in solution_files(nb) if (notebook_dir / s).is_file()]
        pages.append({"file": path.stem + ".html", "title": page_title, "learn": learn,
                      "source": path, "solutions": solutions})
    stems = {p.stem for p in paths}
    downloads = out_dir / DOWNLOAD_DIR
    (downloads / "solutions").mkdir(parents=True, exist_ok=True)

    written, solution_pages = [], []
    for i, (nb, page) in enumerate(zip(notebooks, pages, strict=True)):
        # The notebook as committed (outputs included), for the download link.
        shutil.copyfile(page["source"], downloads / page["source"].name)
        body = _export(_static_widgets(nb), page["title"], mathjax_url)
        nav = _nav(pages[i - 1] if i else None, pages[i + 1] if i + 1 < len(pages) else None)
        run = _run_line(f"{DOWNLOAD_DIR}/{page['source'].name}", page["source"].name)
        body = _link_solutions(_rewrite_links(body, stems), set(page["solutions"]))
        body = _with_nav(body, nav, run)
        target = out_dir / page["file"]
        target.write_text(body, encoding="utf-8")
        written.append(target)
        for sol in page["solutions"]:
            solution_pages.append(_write_solution(notebook_dir / sol, page, out_dir,
                                                  mathjax_url))
    written += solution_pages

    if mathjax_url:
        math_note = "Formulas are typeset by a copy of MathJax inside the book; no network needed."
    else:
        math_note = ("Formulas are typeset by MathJax from the web: offline they show as their "
                     "LaTeX source. For an offline book, `pip install jupyter-server-mathjax` "
                     "(or `apt-get install libjs-mathjax`) and run `make book` again.")
    notes = ["---", "",
             "Each page shows the notebook as last run (`make run`); sliders appear as static "
             "snapshots of their values and figure, since they need a running kernel: open the "
             "notebooks in JupyterLab (`make lab`) to move them. " + math_note]
    teaching = notebook_dir / "README.md"
    if teaching.is_file():
        notes[-1] += " Teaching notes: [notes.html](notes.html)."
        notes_nb = _markdown_notebook(teaching.read_text(encoding="utf-8"))
        body = _export(notes_nb, "Teaching notes", mathjax_url)
        body = _with_nav(_rewrite_links(body, stems), _nav(None, None))
        (out_dir / "notes.html").write_text(body, encoding="utf-8")
        written.append(out_dir / "notes.html")

    intro = ("A hands-on course on neural ordinary differential equations and the adjoint "
             "method, one page per notebook.")
    index = _export(_index_notebook(pages, title, intro, notes), title, mathjax_url)
    index = _with_nav(_rewrite_links(index, stems), _nav(None, pages[0], contents=False))
    (out_dir / "index.html").write_text(index, encoding="utf-8")
    return [out_dir / "index.html", *written]


if __name__ == "__main__":  # python -m neuralode_helpers.book [notebook_dir] [out_dir]
    import sys

    for page in build_book(*sys.argv[1:3]):
        print(page)
