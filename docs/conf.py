"""Sphinx configuration of the documentation site. Build it with `make docs` (tools/docs.py), never by hand:
the source folder is made from nbs/ by tools/docs.py. Everything the pages load is served from the site itself
(plotly.js from the installed plotly package, MathJax from sphinx-mathjax-offline): no request leaves it."""
import configparser
import shutil
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_cp = configparser.ConfigParser(delimiters=["="])
_cp.read(ROOT / "settings.ini")
_cfg = _cp["DEFAULT"]

project = _cfg["title"]
author = _cfg["author"]
copyright = _cfg["copyright"]
release = version = _cfg["version"]

extensions = ["myst_nb", "sphinx.ext.mathjax", "sphinx.ext.githubpages"]  # githubpages: .nojekyll
exclude_patterns = ["_notebooks/**", "**.ipynb_checkpoints", "proc/**"]
html_static_path = ["_static"]
html_css_files = ["awd.css"]
html_title = _cfg["title"]
html_baseurl = _cfg["doc_host"].rstrip("/") + "/" + _cfg["doc_baseurl"].strip("/") + "/"
html_copy_source = False  # the header's source button links to the notebook on the repository
html_show_sourcelink = False
html_last_updated_fmt = None
html_favicon = "_static/favicon.svg"  # a page without one makes the browser ask for /favicon.ico
html_context = {"default_mode": "auto"}  # pydata-sphinx-theme logs an error when no mode is set

html_theme = "sphinx_book_theme"
html_theme_options = {
    "repository_url": _cfg["git_url"],
    "repository_branch": _cfg.get("branch", "main"),
    "path_to_docs": _cfg.get("nbs_path", "nbs"),
    "use_repository_button": True,
    "use_source_button": True,
    "use_issues_button": True,
    "use_download_button": False,  # its download is the processed notebook; each page links the real one
    "launch_buttons": {
        "notebook_interface": "jupyterlab",
        "binderhub_url": "https://mybinder.org",
        "colab_url": "https://colab.research.google.com",
    },
    "navbar_persistent": [],  # the sidebar has the search field: no second one in a header bar
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "show_toc_level": 2,
}

# myst-nb: show the outputs saved in the notebooks; never execute, never load widget JS from a CDN.
nb_execution_mode = "off"
nb_ipywidgets_js = {}
nb_render_markdown_format = "myst"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist", "attrs_inline"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]

# MathJax 3 served from _static/mathjax (copied below): the SVG build needs no font files.
mathjax_path = "mathjax/tex-svg.js"


def _mathjax_dir() -> Path:
    dist = metadata.distribution("sphinx-mathjax-offline")
    d = Path(dist.locate_file("sphinx-mathjax-offline/static/mathjax"))
    if not (d / "tex-svg.js").is_file():
        raise RuntimeError(f"MathJax not found in {d}: pip install sphinx-mathjax-offline")
    return d


def _plotly_js() -> Path:
    import plotly
    p = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not p.is_file():
        raise RuntimeError(f"{p} is missing: plotly's bundled plotly.js is needed")
    return p


def _copy_assets(app, exc):
    if exc is not None or app.builder.format != "html":
        return
    static = Path(app.outdir) / "_static"
    shutil.copytree(_mathjax_dir(), static / "mathjax", dirs_exist_ok=True)
    shutil.copyfile(_plotly_js(), static / "plotly.min.js")


def _plotly_per_page(app, pagename, templatename, context, doctree):
    "Load plotly.js (and the script that draws the figures) only on the pages that have a figure."
    if "awd-plotly-data" in (context.get("body") or ""):
        app.add_js_file("plotly.min.js", priority=400)
        app.add_js_file("awd_plotly.js", priority=401)


def setup(app):
    _mathjax_dir(), _plotly_js()  # fail early with a clear message
    app.connect("html-page-context", _plotly_per_page)
    app.connect("build-finished", _copy_assets)
