"""Build the documentation site from the notebooks in nbs/, offline, with one command.

    python tools/docs.py build [--out docs/_build]   # what `make docs` runs; the site lands in OUT/html
    python tools/docs.py serve [--port 8000]         # serve the built site on http://127.0.0.1:PORT

Pages follow `notebooks`: the home page, the chapters by number then letter (08, 08a, ..., 08g, 09), then each
subfolder of nbs/ as an appendix (`viz/`: the pictures' code), then the API page.

1. `process`: nbdev's own docs processing of each notebook (`NBProcessor`, `FilterDefaults().procs()`), as
   `nbdev_proc_nbs` does it but re-running nothing: saved outputs are used, and the show_doc cells nbdev adds for
   undocumented exports get show_doc's markdown for the exported object.
2. `adapt_notebook`: nbdev's Quarto-flavoured notebook as myst-nb input (tests/test_docs_adapter.py).
3. Sphinx with myst-nb and sphinx-book-theme (docs/conf.py: theme, launch buttons, execution off).
"""
from __future__ import annotations

import argparse
import configparser
import contextlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from execnb.nbio import nb2dict
from fastcore.basics import AttrDict
from IPython.core.formatters import format_display_data
from nbdev.config import create_output
from nbdev.process import NBProcessor
from nbdev.processors import FilterDefaults, exec_show_docs
from nbdev.showdoc import show_doc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cell_directives import split_directives  # noqa: E402  tools/: the one reading of `#|` lines (tests use docs.split_directives)

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
NOTE = '<div class="awd-widget-note admonition note"><p class="admonition-title">{}</p><p>{}</p></div>'
WIDGET_NOTES = {  # what the site shows in place of a widget (no kernel here)
    "explorer": NOTE.format("Interactive widget", "This explorer needs a Python kernel: open the notebook (rocket "
                            "button at the top of the page) and run the cell. The slider figure here needs none."),
    "figure": NOTE.format("Live figure", "The running code redraws this figure: open the notebook to watch it.")}
SOLUTION_PROMPTS = {"code_prompt_show": "Show solution", "code_prompt_hide": "Hide solution"}


CHAPTER = re.compile(r"^(\d+)([a-z]?)_")  # a chapter's name: its number, then a letter for a sub-chapter (08a_config)
APPENDICES = {"viz": "The pictures' code"}  # a subfolder of nbs/ is an appendix after the chapters: its sidebar caption
SECTIONS = ("Chapters", "Reference")  # the sidebar captions of the chapters, and of the API page


def docname(nbs: Path, path: Path) -> str:
    "A notebook's page name: its path from `nbs` without `.ipynb` (`08a_config`, `viz/00_style`)."
    return Path(path).relative_to(nbs).with_suffix("").as_posix()


def reading_key(name: str) -> tuple:
    """Where a page (`docname`) comes in the reading order: `index`; the chapters by number, then letter (08, 08a,
    ..., 08g, 09, 10); the other top-level pages by name; then each subfolder (an appendix), ordered the same way."""
    folder, _, stem = name.rpartition("/")
    if name == "index":
        return (0,)
    m = CHAPTER.match(stem)
    return (1 if not folder else 2, folder) + ((0, int(m.group(1)), m.group(2), stem) if m else (1, 0, "", stem))


def notebooks(nbs: Path) -> list[Path]:
    """The notebooks of `nbs` and its subfolders that become pages, in reading order (`reading_key`); names starting
    with `_` or `.`, and everything in folders named so, are skipped."""
    nbs = Path(nbs)
    found = (p for p in nbs.rglob("*.ipynb")
             if not any(part.startswith(("_", ".")) for part in p.relative_to(nbs).parts))
    return sorted(found, key=lambda p: reading_key(docname(nbs, p)))


def toc_groups(names: list[str], api: bool = False) -> list[tuple[str, list[str]]]:
    """The sidebar: (caption, pages) for the top-level pages, for each appendix (a subfolder), and for the API page
    when there is one; `index` is the home page, in none."""
    groups: dict[str, list[str]] = {}
    for n in (n for n in names if n != "index"):
        folder = n.rpartition("/")[0]
        groups.setdefault(APPENDICES.get(folder, folder) if folder else SECTIONS[0], []).append(n)
    return list(groups.items()) + ([(SECTIONS[1], ["api"])] if api else [])


def settings(root: Path = ROOT) -> dict:
    "The DEFAULT section of settings.ini as a dict."
    cp = configparser.ConfigParser(delimiters=["="])
    cp.read(Path(root) / "settings.ini")
    return dict(cp["DEFAULT"])


def text(v) -> str:
    return "".join(v) if isinstance(v, list) else (v or "")


def default_exp(nb: dict) -> str | None:
    "The module a notebook exports to (`#| default_exp name`), or None."
    found = (re.search(r"^\s*#\s*\|\s*default_exp\s+(\S+)", text(c.get("source")), re.M)
             for c in nb.get("cells", []) if c.get("cell_type") == "code")
    return next((m.group(1) for m in found if m), None)


# ------------------------------------------------------------------------------------------- step 1: nbdev
def process(path: Path, module: str | None) -> dict:
    "nbdev's docs processing of one notebook, without Quarto or a kernel; `#|` directives stay in the sources."
    ns = {**(vars(importlib.import_module(module)) if module else {}), "show_doc": show_doc}

    def show_missing_docs(cell):  # in exec_show_docs' place: show_doc on the exported module, for cells with no output
        call = cell.cell_type == "code" and re.search(r"^show_doc\(.*\)\s*$", cell.source, re.M | re.S)
        if call and not cell.get("outputs"):
            out = create_output(format_display_data(eval(call.group(0), ns))[0]["text/markdown"], "markdown")[0]
            cell.outputs = [AttrDict(out, data=AttrDict(out["data"]))]  # as read_nb makes them: add_links links them
    with contextlib.chdir(ROOT):  # nbdev reads settings.ini from the working directory
        procs = [show_missing_docs if p is exec_show_docs else p for p in FilterDefaults().procs()]
        proc = NBProcessor(path, procs, rm_directives=False)
        proc.process()
    return nb2dict(proc.nb)


# ------------------------------------------------------------------------------------------- step 2: the adapter
def cell_tags(directives: dict) -> list[str]:
    "myst-nb tags for a code cell's Quarto options and flags (`gpu`: GPU-only, not run; `solution`: an exercise's answer)."
    opt = {k.rstrip(":"): " ".join(v).strip("'\"").lower() for k, v in directives.items()}
    if opt.get("include") == "false":
        return ["remove-cell"]
    tags = ["remove-input"] if opt.get("echo") == "false" else []
    tags += ["hide-input"] if not tags and opt.get("code-fold") in ("true", "hide") else []
    tags += ["remove-output"] if opt.get("output") == "false" else []
    return tags + (["hide-cell", "solution"] if "solution" in opt else []) + (["gpu"] if "gpu" in opt else [])


def api_section(md: str, module: str | None) -> tuple[str, dict | None]:
    """show_doc's markdown as an API section, its heading labelled `(module.name)=` (nbdev's rule above it, blank lines
    inside fences and Quarto link attributes dropped); and its API entry (name, label, module, summary) or None."""
    md = re.sub(r"\A\s*-{3,}\s*\n", "", md)
    md = re.sub(r"^(```[\w-]*\n)(.*?)\n?(^```\s*$)", lambda m: m[1] + m[2].strip("\n") + "\n" + m[3], md, flags=re.M | re.S)
    md = re.sub(r'\{target="_blank"[^}]*\}', "{.awd-source}", md)
    h = re.search(r"^#{1,6}\s+(.+?)\s*$", md, re.M)
    if not h:
        return md, None
    name = re.sub(r"[`*\\]", "", h.group(1)).strip()
    label = f"{module}.{name}" if module else name
    summary = re.search(r"^\*(?!\*)(.+?)\*\s*$", md[h.end():], re.M)
    entry = {"name": name, "label": label, "module": module, "summary": summary.group(1) if summary else ""}
    return f"{md[:h.start()]}({label})=\n{md[h.start():]}", entry


def relink(md: str, cfg: dict, labels: dict) -> str:
    "nbdev's links to its Quarto pages (`{doc_host}{doc_baseurl}/data.html#corpus`) pointed at this site's API labels."
    base = "/".join(s.strip("/") for s in (cfg.get("doc_host", ""), cfg.get("doc_baseurl", "")) if s.strip("/"))

    def sub(m):  # nbdev's page of module `a.b` is `a/b.html`
        label = labels.get(f"{cfg.get('lib_path', '')}.{m.group(2).replace('/', '.')}.{m.group(3)}".lower())
        return f"[{m.group(1)}](#{label})" if label else m.group(1)  # a name with no documentation: its text
    return re.sub(rf"\[([^\]]*)\]\({re.escape(base)}/([\w./]+)\.html#([\w.-]+)\)", sub, md) if base else md


def plotly_html(fig: dict, n: int) -> str:
    "A div and the figure's JSON, drawn by _static/awd_plotly.js with the locally served plotly.js."
    payload = json.dumps({k: fig[k] for k in ("data", "layout", "frames", "config") if k in fig}, separators=(",", ":"))
    payload = payload.replace("</", "<\\/")  # never close the script element early
    height = (fig.get("layout") or {}).get("height")
    style = f' style="min-height:{int(height)}px"' if isinstance(height, (int, float)) else ""
    return (f'<div class="awd-plotly" id="awd-plotly-{n}"{style}></div>\n<script type="application/json" '
            f'class="awd-plotly-data" data-target="awd-plotly-{n}">{payload}</script>\n')


def convert_outputs(outputs: list, counter: list) -> list:
    """Outputs for the site: plotly figures drawn locally, plotly's CDN loaders dropped, widgets replaced by a note
    (with the kernel's stderr chatter about the widget's comm messages, meaningless without a kernel)."""
    out, has_widget = [], any(WIDGET_MIME in (o.get("data") or {}) for o in outputs)
    for o in outputs:
        data = o.get("data") or {}
        html = text(data.get("text/html", ""))
        if (has_widget and o.get("name") == "stderr"
                or set(data) <= {"text/html", "text/plain"} and "cdn.plot.ly" in html and "Plotly.newPlot" not in html):
            continue  # a widget's stderr chatter, or the HTML that loads plotly.js from its CDN
        if PLOTLY_MIME in data:
            counter[0] += 1
            o = {**o, "data": {"text/html": plotly_html(data[PLOTLY_MIME], counter[0])}, "metadata": {}}
        elif WIDGET_MIME in data:  # a widget's kind from its text form: a box of controls, a FigureWidget, or else
            plain = text(data.get("text/plain", "")).lstrip()
            boxed = re.match(r"^(VBox|HBox|Box|GridBox|Tab|Accordion)\(", plain) or "children=" in plain
            if not (boxed or plain.startswith("FigureWidget(")):
                continue  # a progress bar: its saved state is its first frame
            o = {**o, "data": {"text/html": WIDGET_NOTES["figure" if plain.startswith("FigureWidget(") else "explorer"]},
                 "metadata": {}}
        out.append(o)
    return out


def md_cell(source: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": source}


def toctree(pages: list[str], caption: str | None = None) -> str:
    "A hidden toctree of `pages` (page names from the source root), under `caption` in the sidebar."
    return ("```{toctree}\n:hidden:\n:maxdepth: 1\n" + (f":caption: {caption}\n" if caption else "") + "\n"
            + "\n".join(pages) + "\n```")


def adapt_notebook(nb: dict, docname: str, cfg: dict, module: str | None = None, labels: dict | None = None,
                   toc: list | None = None) -> tuple[dict, list[dict]]:
    """A notebook processed by nbdev as myst-nb input, and the API entries (one per show_doc) it documents.

    - nbdev's YAML front matter becomes the page's `# title`, its summary, and a download of the notebook (the copy
      in `_notebooks/`, by its path from the source root: right from a page in a subfolder too);
    - Quarto options and flags become myst-nb tags (`cell_tags`), and the `#|` lines go;
    - a `#| gpu` cell gets a "Runs on a GPU" label; a `#| solution` cell folds behind "Show solution";
    - `output: asis` markdown becomes markdown cells, show_doc's as labelled API sections;
    - plotly figures are drawn by the site's plotly.js; widget outputs become a note (no kernel on the site);
    - nbdev's links to its Quarto pages point at the API labels in `labels` (lower-case label -> label);
    - `toc` (for the home page): the reading order, as hidden toctrees at the end: a list of page names (one
      toctree), or of (caption, page names) (one toctree per caption, `toc_groups`).
    """
    labels, fm, cells, entries, counter = labels or {}, {}, [], [], [0]
    for cell in nb.get("cells", []):
        ctype, src = cell.get("cell_type"), text(cell.get("source"))
        front = ctype == "raw" and not fm and re.match(r"\s*---\s*\n(.*?)\n---\s*$", src, re.S)
        if front:
            fm = yaml.safe_load(front.group(1)) or {}
        elif ctype == "markdown":
            cells.append(md_cell(relink(src, cfg, labels)))
        elif ctype != "code":
            cells.append(dict(cell))
        else:
            directives, code = split_directives(src)
            tags, outputs = cell_tags(directives), cell.get("outputs", [])
            if "remove-cell" in tags:
                continue
            if directives.get("output:") == ["asis"]:  # show_doc's cells, and cells that print markdown
                for md in filter(str.strip, (text(o.get("data", {}).get("text/markdown")) for o in outputs)):
                    md, entry = api_section(md, module) if "show_doc" in code else (md, None)
                    entries += [{**entry, "docname": docname}] if entry else []
                    cells.append(md_cell(relink(md, cfg, labels)))
                outputs = []
            outputs = convert_outputs(outputs, counter)
            if not outputs and (not code.strip() or "remove-input" in tags):
                continue
            if "gpu" in tags:
                cells.append(md_cell(":::{container} awd-gpu-label\n**Runs on a GPU**"
                                     + ("" if outputs else " · not run for this page, so it shows no output") + "\n:::"))
            meta = dict(cell.get("metadata", {}))
            tags = [t for t in meta.pop("tags", []) if t not in tags] + tags
            meta |= {"tags": tags} if tags else {}
            meta |= {"mystnb": SOLUTION_PROMPTS} if "solution" in tags else {}  # the labels of myst-nb's toggle
            cells.append({"cell_type": "code", "execution_count": cell.get("execution_count"), "metadata": meta,
                          "outputs": outputs, "source": code.strip("\n")})
    head = [md_cell(f"# {fm['title']}")] if fm.get("title") else []
    head += [md_cell(":::{container} awd-summary\n" + fm["description"] + "\n:::")] if fm.get("description") else []
    head += [md_cell(f":::{{container}} awd-download\n{{download}}`Download the notebook </_notebooks/{docname}.ipynb>`"
                     "\n:::")]
    groups = [(None, list(toc))] if toc and all(isinstance(t, str) for t in toc) else toc or []
    cells = head + cells + [md_cell(toctree(pages, caption)) for caption, pages in groups]
    for i, c in enumerate(cells):
        c["id"] = f"awd-{i}"  # nbformat 4.5: unique cell ids
    meta = {k: v for k, v in nb.get("metadata", {}).items() if k != "widgets"}  # no widget state: no kernel here
    meta |= {"myst": {"html_meta": {"description": fm["description"]}}} if fm.get("description") else {}
    meta.setdefault("kernelspec", {"display_name": "Python 3", "language": "python", "name": "python3"})
    meta.setdefault("language_info", {"name": "python"})
    return {"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5}, entries


def api_page(entries_by_page: dict[str, list[dict]]) -> str:
    "The API index page (MyST markdown): for each page (docname -> its API entries) a list of its names."
    out = ["# API reference", "", "Every name the package exports, grouped by the chapter that builds it, with the "
           "first line of its docstring. Each links to its documentation in the chapter.", ""]
    for docname, entries in ((d, e) for d, e in entries_by_page.items() if e):
        mods = sorted({e["module"] for e in entries if e.get("module")})
        out += [f"## {', '.join(f'`{m}`' for m in mods) or docname}", "", f"From {{doc}}`{docname}`.", ""]
        out += [f"- [`{e['name']}`](#{e['label']})" + (f": {e['summary']}" if e.get("summary") else "") for e in entries]
        out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------- the build
def module_of(nb: dict, cfg: dict) -> str | None:
    "The module a notebook documents: `lib_path` and its `#| default_exp` (`viz.style` -> `awd_edu.viz.style`), or None."
    m = default_exp(nb)
    return m and f"{cfg['lib_path']}.{m}"


def prepare(src: Path, nbs: Path, cfg: dict | None = None) -> list[str]:
    """Steps 1 and 2 for every notebook of `nbs` (`notebooks`): the Sphinx source folder SRC, with a page per notebook
    at its path from `nbs` (`viz/00_style.ipynb`), the notebooks as they are now in `SRC/_notebooks/` (what is
    processed, and the pages' downloads), and `api.md`. Returns the page names in reading order."""
    cfg, src, nbs = cfg or settings(), Path(src), Path(nbs)
    if not notebooks(nbs):
        raise SystemExit(f"no notebooks in {nbs}")
    shutil.rmtree(src, ignore_errors=True)
    (src / "_notebooks").mkdir(parents=True)
    paths = {}  # page name (`viz/00_style`) -> its copy in _notebooks/
    for p in notebooks(nbs):
        paths[docname(nbs, p)] = copy = src / "_notebooks" / p.relative_to(nbs)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, copy)
    modules = {s: module_of(json.loads(p.read_text(encoding="utf-8")), cfg) for s, p in paths.items()}
    processed = {s: process(p, modules[s]) for s, p in paths.items()}
    by_page = {s: adapt_notebook(nb, s, cfg, modules[s])[1] for s, nb in processed.items()}
    labels = {e["label"].lower(): e["label"] for entries in by_page.values() for e in entries}
    toc = toc_groups(list(processed), api=bool(labels))
    for s, nb in processed.items():
        page, _ = adapt_notebook(nb, s, cfg, modules[s], labels, toc if s == "index" else None)
        (src / f"{s}.ipynb").parent.mkdir(parents=True, exist_ok=True)
        (src / f"{s}.ipynb").write_text(json.dumps(page, indent=1, ensure_ascii=False), encoding="utf-8")
    if labels:
        (src / "api.md").write_text(relink(api_page(by_page), cfg, labels), encoding="utf-8")
    return list(processed)


def build(out: Path = DOCS / "_build", nbs: Path | None = None, quiet: bool = True) -> Path:
    "Build the site: nbdev processing and the adapter into OUT/src (`prepare`), then Sphinx into OUT/html (returned)."
    cfg, out = settings(), Path(out).resolve()
    prepare(out / "src", Path(nbs) if nbs else ROOT / cfg.get("nbs_path", "nbs"), cfg)
    subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-c", DOCS, "-j", "2", "-E", "-d", out / "doctrees",
                    *(["-q"] if quiet else []), out / "src", out / "html"], check=True, cwd=ROOT)
    return out / "html"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cmd", choices=["build", "serve"], help="build the site into OUT/html, or serve it on 127.0.0.1")
    ap.add_argument("--out", type=Path, default=DOCS / "_build")
    ap.add_argument("--nbs", type=Path, help="build: the notebooks (default: nbs_path of settings.ini)")
    ap.add_argument("--verbose", action="store_true", help="build: show Sphinx's progress")
    ap.add_argument("--port", type=int, default=8000, help="serve: the port")
    a = ap.parse_args(argv)
    site = build(a.out, a.nbs, quiet=not a.verbose) if a.cmd == "build" else a.out / "html"
    if a.cmd == "build":
        print(f"Site built in {site}: open {site / 'index.html'} or run `make serve-docs`")
    elif not (site / "index.html").exists():
        raise SystemExit(f"{site} has no index.html: run `make docs` first")
    else:  # this process becomes Python's own file server, on the loopback interface only
        os.execv(sys.executable, [sys.executable, "-m", "http.server", str(a.port), "--bind", "127.0.0.1",
                                  "--directory", site])


if __name__ == "__main__":
    main()
