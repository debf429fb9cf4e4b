"""Build the documentation site from the notebooks in nbs/, offline, with one command.

    python tools/docs.py build [--out docs/_build]   # what `make docs` runs; the site lands in OUT/html
    python tools/docs.py serve [--port 8000]         # serve the built site on http://127.0.0.1:PORT

The build has three steps:
1. nbdev's own processing of each notebook (front matter, show_doc cells, hidden and export cells removed),
   as `nbdev_proc_nbs` does it, minus Quarto (not installable here) and minus re-running the notebook: the
   saved outputs are used, and only the show_doc cells that nbdev adds for undocumented exports are executed.
2. `adapt_notebook`, the adapter from nbdev's Quarto-flavoured output to myst-nb input: front matter to page
   title and summary, Quarto cell options (`echo: false`, `output: asis`, ...) to myst-nb tags, show_doc
   output to API sections with a label per name, plotly figures to locally served plotly.js, links to
   open, launch and download the notebook. It uses only the standard library (tests/test_docs_adapter.py).
3. Sphinx with myst-nb and sphinx-book-theme (configuration in docs/conf.py), execution off.
"""
from __future__ import annotations

import argparse
import configparser
import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# ------------------------------------------------------------------------------------------- ordering
_re_num = re.compile(r"^(\d+)_")


def chapter_key(stem: str):
    "Sort key for a notebook name: `index` first, then by chapter number, then by name."
    if stem == "index":
        return (0, -1, stem)
    m = _re_num.match(stem)
    return (0, int(m.group(1)), stem) if m else (1, 0, stem)


def notebooks(nbs: Path) -> list[Path]:
    "The notebooks of `nbs` that become pages, in reading order (names starting with `_` or `.` are skipped)."
    found = [p for p in Path(nbs).glob("*.ipynb") if not p.name.startswith(("_", "."))]
    return sorted(found, key=lambda p: chapter_key(p.stem))


def settings(root: Path = ROOT) -> dict:
    "The DEFAULT section of settings.ini as a dict."
    cp = configparser.ConfigParser(delimiters=["="])
    cp.read(Path(root) / "settings.ini")
    return dict(cp["DEFAULT"])


# ------------------------------------------------------------------------------------------- the adapter
_re_directive = re.compile(r"^\s*#\s*\|\s*(.*?)\s*$")
_re_heading = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_re_fence = re.compile(r"^\s*(```|~~~)")
_re_mdlink = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
_re_quarto_attrs = re.compile(r"\{target=\"_blank\"[^}]*\}")  # Quarto link attributes of show_doc's source link
_re_source_link = re.compile(r"^\[source\]\([^)]+\)(\{[^}]*\})?\s*$")

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_NOTE = ('<div class="awd-widget-note admonition note"><p class="admonition-title">Interactive widget</p>'
               "<p>This explorer needs a running Python kernel: open the notebook in JupyterLab (or launch it on "
               "Colab or Binder with the links at the top of the page) and run the cell. The figure with a slider "
               "on this page works without a kernel.</p></div>")


LIVE_FIGURE_NOTE = ('<div class="awd-widget-note admonition note"><p class="admonition-title">Live figure</p>'
                    "<p>This figure is redrawn by the running code while the cell runs in a Python kernel: open the "
                    "notebook (links at the top of the page) to watch it.</p></div>")


def widget_kind(data: dict) -> str | None:
    "A widget output's kind from its text form: 'explorer' (a box of controls), 'figure' (a FigureWidget), or None."
    plain = _text(data.get("text/plain", "")).lstrip()
    if plain.startswith("FigureWidget("):
        return "figure"
    if re.match(r"^(VBox|HBox|Box|GridBox|Tab|Accordion)\(", plain) or "children=" in plain:
        return "explorer"
    return None


def _text(v) -> str:
    return "".join(v) if isinstance(v, list) else (v or "")


def split_directives(source: str) -> tuple[dict, str]:
    """Leading `#|` lines of a cell as {option: value} (flags get ''), and the source without them.

    `#| echo: false` gives {'echo': 'false'}; `#| hide` gives {'hide': ''}."""
    opts, lines = {}, source.splitlines()
    i = 0
    while i < len(lines):
        m = _re_directive.match(lines[i])
        if not m:
            if lines[i].strip():
                break
            i += 1
            continue
        body = m.group(1)
        if ":" in body:
            k, v = body.split(":", 1)
            opts[k.strip()] = v.strip().strip("'\"").lower()
        elif body:
            k, *rest = body.split()
            opts[k.strip()] = " ".join(rest)
        i += 1
    return opts, "\n".join(lines[i:]).strip("\n")


def cell_tags(opts: dict) -> list[str]:
    "myst-nb tags for Quarto cell options and nbdev flags."
    tags = []
    if opts.get("include") == "false" or "hide" in opts:
        return ["remove-cell"]
    if opts.get("echo") == "false" or "hide_input" in opts:
        tags.append("remove-input")
    elif opts.get("code-fold") in ("true", "hide"):
        tags.append("hide-input")
    if opts.get("output") == "false" or "hide_output" in opts:
        tags.append("remove-output")
    return tags


def parse_front_matter(text: str) -> dict:
    "The YAML between `---` lines of nbdev's front-matter raw cell (simple `key: value` YAML, folded lines joined)."
    body = text.strip()
    if not body.startswith("---"):
        return {}
    body = body[3:]
    end = body.find("\n---")
    body = body if end < 0 else body[:end]
    out, key = {}, None
    for line in body.splitlines():
        if not line.strip():
            continue
        if line[0] in " \t" and key:  # a folded continuation line
            out[key] = (out[key] + " " + line.strip()).strip()
            continue
        if ":" in line:
            key, v = line.split(":", 1)
            key, v = key.strip(), v.strip()
            if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
                v = v[1:-1].replace("''", "'") if v[0] == "'" else v[1:-1]
            out[key] = v
    return out


def _md_lines_outside_fences(md: str):
    "Yield (index, line, inside_fence) for the lines of a markdown text."
    fence = None
    for i, line in enumerate(md.splitlines()):
        m = _re_fence.match(line)
        if m:
            if fence is None:
                fence = m.group(1)
            elif fence == m.group(1):
                fence = None
                yield i, line, True
                continue
        yield i, line, fence is not None


def headings(md: str) -> list[tuple[int, str]]:
    "(level, text) of the markdown headings of `md` outside code fences."
    out = []
    for _, line, fenced in _md_lines_outside_fences(md):
        m = None if fenced else _re_heading.match(line)
        if m:
            out.append((len(m.group(1)), m.group(2)))
    return out


def _plain_name(heading_text: str) -> str:
    t = _re_mdlink.sub(lambda m: m.group(1), heading_text)
    return re.sub(r"[`*\\]", "", t).strip()


def api_label(module: str | None, name: str) -> str:
    "The cross-reference label of an API name: `awd_edu.data.Corpus`."
    return f"{module}.{name}" if module else name


def trim_fences(md: str) -> str:
    "Drop the blank lines just inside fenced code blocks (show_doc pads its signature with them)."
    out, fence, pending = [], None, []
    for line in md.splitlines():
        m = _re_fence.match(line)
        if fence is None:
            out.append(line)
            if m:
                fence = m.group(1)
            continue
        if m and m.group(1) == fence and not line.strip()[len(fence):].strip():
            out.append(line)  # closing fence: the blank lines before it are dropped
            fence, pending = None, []
            continue
        if not line.strip():
            if out and not _re_fence.match(out[-1]):
                pending.append(line)
            continue
        out.extend(pending)
        pending = []
        out.append(line)
    return "\n".join(out + pending)


def show_doc_markdown(md: str, module: str | None, max_level: int) -> tuple[str, dict | None]:
    """show_doc's markdown output as page markdown: a label before its heading, the heading no deeper than
    `max_level` (sub-headings shifted alike), the leading `---` rule dropped. Also returns the API entry."""
    lines = trim_fences(md.strip("\n")).splitlines()
    while lines and (not lines[0].strip() or set(lines[0].strip()) == {"-"}):
        lines.pop(0)
    lines = [_re_quarto_attrs.sub("{.awd-source}", line) for line in lines]
    if lines and _re_source_link.match(lines[0]):  # nbdev puts its source link above the heading: move it below
        link = lines.pop(0)
        while lines and not lines[0].strip():
            lines.pop(0)
        if lines and _re_heading.match(lines[0]):
            lines[1:1] = ["", link]
        else:
            lines.insert(0, link)
    hs = [(i, line) for i, line, fenced in _md_lines_outside_fences("\n".join(lines))
          if not fenced and _re_heading.match(line)]
    if not hs:
        return "\n".join(lines), None
    first_level = len(_re_heading.match(hs[0][1]).group(1))
    shift = max(0, first_level - max_level)
    for i, line in hs:
        m = _re_heading.match(line)
        lines[i] = "#" * max(1, len(m.group(1)) - shift) + " " + m.group(2)
    name = _plain_name(_re_heading.match(hs[0][1]).group(2))
    label = api_label(module, name)
    rest = "\n".join(lines[hs[0][0] + 1:])
    summary = ""
    for para in re.split(r"\n\s*\n", rest):
        p = para.strip()
        if p.startswith("*") and p.endswith("*") and not p.startswith("**"):
            summary = p.strip("*").strip()
            break
    lines.insert(hs[0][0], f"({label})=")
    return "\n".join(lines), {"name": name, "label": label, "module": module, "summary": summary}


def plotly_html(fig: dict, n: int) -> str:
    "A div and the figure's JSON, drawn by _static/awd_plotly.js with the locally served plotly.js."
    payload = json.dumps({k: fig[k] for k in ("data", "layout", "frames", "config") if k in fig},
                         separators=(",", ":"))
    payload = payload.replace("</", "<\\/")  # never close the script element early
    height = (fig.get("layout") or {}).get("height")
    style = f' style="min-height:{int(height)}px"' if isinstance(height, (int, float)) else ""
    return (f'<div class="awd-plotly" id="awd-plotly-{n}"{style}></div>\n'
            f'<script type="application/json" class="awd-plotly-data" data-target="awd-plotly-{n}">{payload}</script>\n')


def _is_plotly_loader(data: dict) -> bool:
    "The HTML output plotly's notebook renderers emit once to load plotly.js from its CDN."
    h = _text(data.get("text/html", ""))
    return set(data) <= {"text/html", "text/plain"} and "cdn.plot.ly" in h and "Plotly.newPlot" not in h


def convert_outputs(outputs: list, counter: list) -> list:
    """Outputs for the site: plotly figures drawn locally, plotly's CDN loaders dropped, widgets replaced by a note
    (with the kernel's stderr chatter about the widget's comm messages, meaningless without a kernel)."""
    out = []
    has_widget = any(WIDGET_MIME in (o.get("data") or {}) for o in outputs)
    for o in outputs:
        if has_widget and o.get("output_type") == "stream" and o.get("name") == "stderr":
            continue
        data = o.get("data")
        if o.get("output_type") not in ("execute_result", "display_data") or not data:
            out.append(o)
            continue
        if PLOTLY_MIME in data:
            counter[0] += 1
            o = {**o, "data": {"text/html": plotly_html(data[PLOTLY_MIME], counter[0])}, "metadata": {}}
        elif WIDGET_MIME in data:
            kind = widget_kind(data)
            if kind is None:
                continue  # a progress bar: its saved state is its first frame
            o = {**o, "data": {"text/html": WIDGET_NOTE if kind == "explorer" else LIVE_FIGURE_NOTE}, "metadata": {}}
        elif _is_plotly_loader(data):
            continue
        out.append(o)
    return out


def launch_links(docname: str, cfg: dict) -> str:
    "Markdown links to the notebook: on GitHub, on Colab, on Binder, and a download of the .ipynb."
    git = cfg["git_url"].rstrip("/")
    owner_repo = git.split("github.com/", 1)[-1]
    branch, nbs = cfg.get("branch", "main"), cfg.get("nbs_path", "nbs").strip("/")
    path = f"{nbs}/{docname}.ipynb"
    return (":::{container} awd-launch\n"
            f"[Source on GitHub]({git}/blob/{branch}/{path}) · "
            f"[Open in Colab](https://colab.research.google.com/github/{owner_repo}/blob/{branch}/{path}) · "
            f"[Launch on Binder](https://mybinder.org/v2/gh/{owner_repo}/{branch}?labpath={quote(path, safe='')}) · "
            f"{{download}}`Download the notebook <_notebooks/{docname}.ipynb>`\n"
            ":::")


def doc_link_target(url: str, doc_prefix: str, lib: str) -> str | None:
    "The API label an nbdev doc URL (`{doc_prefix}data.html#corpus`) points at, or None for another URL."
    if not url.startswith(doc_prefix):
        return None
    page, _, anchor = url[len(doc_prefix):].partition("#")
    if not page.endswith(".html") or not anchor:
        return None
    return f"{lib}.{page[:-5]}.{anchor}".lower()


def relink(md: str, doc_prefix: str, lib: str, labels: dict) -> str:
    "Point nbdev's links to its Quarto pages (names in backticks) at the API labels of this site."
    def sub(m):
        target = doc_link_target(m.group(2), doc_prefix, lib)
        if target is None:
            return m.group(0)
        if target in labels:
            return f"[{m.group(1)}](#{labels[target]})"
        return m.group(1)  # a name with no documentation: keep the text
    return _re_mdlink.sub(sub, md)


def md_cell(source: str, **meta) -> dict:
    return {"cell_type": "markdown", "metadata": dict(meta), "source": source}


def adapt_notebook(nb: dict, docname: str, cfg: dict, module: str | None = None, labels: dict | None = None,
                   toc: list[str] | None = None) -> tuple[dict, list[dict]]:
    """A notebook processed by nbdev as myst-nb input, and the API entries (one per show_doc) it documents.

    - nbdev's front matter (raw cell) becomes the page's `# title`, its summary (description), and the links to
      open, launch and download the notebook;
    - Quarto options become myst-nb tags: `echo: false` -> remove-input, `output: false` -> remove-output,
      `include: false` or `#| hide` -> remove-cell, `code-fold: true` -> hide-input; the `#|` lines are removed;
    - `output: asis` cells (show_doc) become markdown cells: a label `(module.name)=` and the API section;
    - plotly figures are drawn by the site's own plotly.js; widget outputs become a note (no kernel on the site);
    - nbdev's links to its Quarto pages point at the API labels in `labels` (lower-case label -> label);
    - `toc` (for the home page): the reading order, as a hidden toctree at the end.
    """
    nb = copy.deepcopy(nb)
    labels = labels or {}
    base = cfg.get("doc_baseurl", "").strip("/")
    doc_prefix = cfg.get("doc_host", "").rstrip("/") + "/" + (base + "/" if base else "") if cfg.get("doc_host") else "\0"
    lib = cfg.get("lib_path", "")
    fm, cells, entries, counter, level = {}, [], [], [0], 1
    for cell in nb.get("cells", []):
        ctype, src = cell.get("cell_type"), _text(cell.get("source"))
        if ctype == "raw" and not fm and src.lstrip().startswith("---"):
            fm = parse_front_matter(src)
            if fm:
                continue
        if ctype == "markdown":
            if not src.strip() or src.strip().startswith("<!-- WARNING: THIS FILE WAS AUTOGENERATED"):
                continue
            hs = headings(src)
            if hs:
                level = hs[-1][0]
            cells.append({**cell, "source": relink(src, doc_prefix, lib, labels)})
            continue
        if ctype != "code":
            cells.append(cell)
            continue
        opts, code = split_directives(src)
        tags = cell_tags(opts)
        if "remove-cell" in tags:
            continue
        outputs = cell.get("outputs", [])
        if opts.get("output") == "asis":
            mds = [_text(o.get("data", {}).get("text/markdown")) for o in outputs]
            mds = [m for m in mds if m.strip()]
            if mds:
                for m in mds:
                    if "show_doc" not in code:  # plain `output: asis` markdown: inserted as it is
                        cells.append(md_cell(relink(m, doc_prefix, lib, labels)))
                        continue
                    md, entry = show_doc_markdown(m, module, level + 1)
                    if entry:
                        entry["docname"] = docname
                        entries.append(entry)
                    cells.append(md_cell(relink(md, doc_prefix, lib, labels)))
                if "remove-input" in tags or not code.strip():
                    continue
                tags = [t for t in tags if t != "remove-output"] + ["remove-output"]
        outputs = convert_outputs(outputs, counter)
        if not code.strip() and not outputs:
            continue
        meta = {k: v for k, v in cell.get("metadata", {}).items() if k not in ("tags",)}
        old_tags = [t for t in cell.get("metadata", {}).get("tags", []) if t not in tags]
        if tags or old_tags:
            meta["tags"] = old_tags + tags
        new = {"cell_type": "code", "execution_count": cell.get("execution_count"), "metadata": meta,
               "outputs": outputs, "source": code}
        if "id" in cell:
            new["id"] = cell["id"]
        cells.append(new)
    head = []
    if fm.get("title"):
        head.append(md_cell(f"# {fm['title']}"))
    if fm.get("description"):
        head.append(md_cell(":::{container} awd-summary\n" + fm["description"] + "\n:::"))
    head.append(md_cell(launch_links(docname, cfg)))
    if not fm.get("title"):  # the title stayed in the first markdown cell: links go after it
        first_md = next((i for i, c in enumerate(cells) if c["cell_type"] == "markdown"), None)
        cells[first_md + 1 if first_md is not None else 0:0] = head
    else:
        cells = head + cells
    if toc:
        cells.append(md_cell("```{toctree}\n:hidden:\n:maxdepth: 1\n\n" + "\n".join(toc) + "\n```"))
    md = nb.setdefault("metadata", {})
    md.pop("widgets", None)
    if fm.get("description"):
        md.setdefault("myst", {})["html_meta"] = {"description": fm["description"]}
    md.setdefault("kernelspec", {"display_name": "Python 3", "language": "python", "name": "python3"})
    md.setdefault("language_info", {"name": "python"})
    nb["cells"] = cells
    nb.setdefault("nbformat", 4)
    nb.setdefault("nbformat_minor", 5)
    seen = set()
    for i, c in enumerate(nb["cells"]):  # nbformat 4.5: every cell has a unique id
        if nb["nbformat_minor"] >= 5 and (c.get("id") in seen or "id" not in c):
            c["id"] = f"awd-{i}"
        seen.add(c.get("id"))
    return nb, entries


def api_entries(nb: dict, module: str | None) -> list[dict]:
    "The API entries (name, label, summary) documented by the show_doc outputs of a processed notebook."
    return adapt_notebook(nb, "_", {"git_url": "https://github.com/_/_"}, module)[1]


def api_page(entries_by_page: list[tuple[str, str, list[dict]]]) -> str:
    "The API index page (MyST markdown): for each chapter (docname, title, entries) a list of its names."
    out = ["# API reference", "",
           "Every name the package exports, grouped by the chapter that builds it, with the first line of its "
           "docstring. Each links to its documentation in the chapter.", ""]
    for docname, title, entries in entries_by_page:
        if not entries:
            continue
        mods = sorted({e["module"] for e in entries if e.get("module")})
        out += [f"## {', '.join(f'`{m}`' for m in mods) or title}", "", f"From {{doc}}`{docname}`.", ""]
        for e in entries:
            line = f"- [`{e['name']}`](#{e['label']})"
            if e.get("summary"):
                line += f": {e['summary']}"
            out.append(line)
        out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------- the build
def default_exp(nb: dict) -> str | None:
    "The module a notebook exports to (`#| default_exp name`), as `lib.name`, or None."
    for c in nb.get("cells", []):
        if c.get("cell_type") == "code":
            m = re.search(r"^\s*#\s*\|\s*default_exp\s+(\S+)", _text(c.get("source")), re.M)
            if m:
                return m.group(1)
    return None


def _filter_class():
    "nbdev's FilterDefaults with its show_doc executor replaced by one that runs only what is missing."
    from execnb.shell import CaptureShell
    from nbdev import processors
    from nbdev.process import Processor

    class exec_missing_show_docs(Processor):
        "Run the show_doc cells that have no saved output (nbdev adds them for undocumented exports)."
        def begin(self):
            self.k, self.pending = None, []

        def __call__(self, cell):
            if cell.cell_type != "code":
                return
            if cell.directives_.keys() & {"export", "exports", "exporti"}:
                self.pending.append(cell.source)
                return
            if not processors._is_showdoc(cell) or cell.get("outputs"):
                return
            if self.k is None:
                self.k = CaptureShell()  # cells run as `__main__`, as in nbdev_test and nbdev_proc_nbs
                self.k.run_cell("from nbdev.showdoc import show_doc")
            for src in self.pending:
                exc = self.k.run_cell(src).exception
                if exc and not isinstance(exc, SystemExit):  # a CLI's `sys.exit(main())` guard ran: harmless
                    raise RuntimeError(f"{self.nb.path_}: an export cell failed:\n{src}") from exc
            self.pending = []
            self.k.cell(cell)
            if self.k.exc:
                raise RuntimeError(f"{self.nb.path_}: {cell.source}") from self.k.exc

    class Filter(processors.FilterDefaults):
        def base_procs(self):
            procs = [p for p in super().base_procs() if p is not processors.insert_warning]
            return [exec_missing_show_docs if p is processors.exec_show_docs else p for p in procs]
    return Filter


def nbdev_process(src: Path, dst: Path) -> None:
    "nbdev's docs processing of one notebook (what nbdev_proc_nbs does to it), written to `dst`."
    import os
    from nbdev.serve_drv import main
    old, argv = Path.cwd(), sys.argv
    os.chdir(ROOT)  # nbdev finds settings.ini from the working directory
    sys.argv = [argv[0]]  # a CLI's `if __name__ == "__main__": main()` in an export cell sees no arguments of ours
    try:
        main((Path(src).resolve(), Path(dst).resolve(), _filter_class()))
    finally:
        os.chdir(old)
        sys.argv = argv


def prepare(nbs: Path, out: Path, cfg: dict | None = None) -> list[str]:
    "Steps 1-2: process and adapt every notebook of `nbs` into `out/src` (the Sphinx source); return the docnames."
    cfg = cfg or settings()
    proc, src = out / "proc", out / "src"
    for d in (proc, src):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    paths = notebooks(nbs)
    if not paths:
        raise SystemExit(f"no notebooks in {nbs}")
    snapshot = src / "_notebooks"  # the notebooks as they are now: the pages' downloads, and what is processed
    snapshot.mkdir()
    for p in paths:
        shutil.copyfile(p, snapshot / p.name)
    paths = [snapshot / p.name for p in paths]
    originals, processed = {}, {}
    for p in paths:
        originals[p.stem] = json.loads(p.read_text(encoding="utf-8"))
        nbdev_process(p, proc / p.name)
        processed[p.stem] = json.loads((proc / p.name).read_text(encoding="utf-8"))
    lib = cfg.get("lib_path", "")
    modules = {}
    for s, nb in originals.items():
        m = default_exp(nb)
        modules[s] = f"{lib}.{m}" if m else None
    labels, by_page = {}, []
    for s, nb in processed.items():
        ents = api_entries(nb, modules[s])
        for e in ents:
            labels[e["label"].lower()] = e["label"]
        by_page.append((s, s, ents))
    docnames = [p.stem for p in paths]
    chapters = [d for d in docnames if d != "index"]
    toc = chapters + (["api"] if labels else [])
    for s, nb in processed.items():
        page, _ = adapt_notebook(nb, s, cfg, modules[s], labels, toc if s == "index" else None)
        (src / f"{s}.ipynb").write_text(json.dumps(page, indent=1, ensure_ascii=False), encoding="utf-8")
    if "index" not in processed:
        (src / "index.md").write_text("# " + cfg.get("title", "Documentation") + "\n\n```{toctree}\n:maxdepth: 1\n\n"
                                      + "\n".join(toc) + "\n```\n", encoding="utf-8")
    if labels:
        (src / "api.md").write_text(api_page(by_page), encoding="utf-8")
    return docnames


def build(out: Path = DOCS / "_build", nbs: Path | None = None, quiet: bool = True) -> Path:
    "Build the site: nbdev processing, the adapter, then Sphinx. Returns the folder of the HTML site."
    out = Path(out).resolve()
    nbs = Path(nbs) if nbs else ROOT / settings().get("nbs_path", "nbs")
    prepare(nbs, out)
    html_dir = out / "html"
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-c", str(DOCS), "-j", "2", "-E",
           "-d", str(out / "doctrees"), str(out / "src"), str(html_dir)]
    if quiet:
        cmd.insert(3, "-q")
    subprocess.run(cmd, check=True, cwd=ROOT)
    return html_dir


def serve(directory: Path, port: int = 8000) -> None:
    "Serve `directory` on http://127.0.0.1:PORT until interrupted."
    import functools
    import http.server
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as httpd:
        print(f"Serving {directory} at http://127.0.0.1:{httpd.server_address[1]}/ (Ctrl-C stops)")
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the site into OUT/html")
    b.add_argument("--out", type=Path, default=DOCS / "_build")
    b.add_argument("--nbs", type=Path, default=None)
    b.add_argument("--verbose", action="store_true", help="show Sphinx's progress")
    s = sub.add_parser("serve", help="serve the built site on 127.0.0.1")
    s.add_argument("--out", type=Path, default=DOCS / "_build")
    s.add_argument("--port", type=int, default=8000)
    a = ap.parse_args(argv)
    if a.cmd == "build":
        site = build(a.out, a.nbs, quiet=not a.verbose)
        print(f"Site built in {site}: open {site / 'index.html'} or run `make serve-docs`")
    else:
        site = a.out / "html"
        if not (site / "index.html").exists():
            raise SystemExit(f"{site} has no index.html: run `make docs` first")
        serve(site, a.port)


if __name__ == "__main__":
    main()
