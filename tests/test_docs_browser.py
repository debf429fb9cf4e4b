"""The documentation site in a real browser (headless Chromium driven by Playwright).

The site is built from nbs/ once per session with the same function `make docs` runs (tools/docs.py), served on
127.0.0.1 by a Python http.server thread, and every page is opened as a reader would: it must load with no console
error, no failed request and no request leaving 127.0.0.1; pages show their title, summary and, drawn, every plotly
figure saved in their notebook; the chapters with figures show them; plotly sliders move the figure and keep its title;
figures follow the page width with no text overlapping, on a desktop and on a phone, and no page scrolls sideways;
search finds `WeightDrop`; math is typeset; previous/next follow the reading order (the chapters by number then
letter, then the appendix of viz/ pages, "The pictures' code", which the sidebar lists under that caption); GPU-only
cells are labelled; an exercise's solution folds behind "Show solution" (on a small site built from a fixture
notebook). Screenshots go to test-artifacts/docs/.
"""
import contextlib
import functools
import http.server
import itertools
import json
import re
import shutil
import threading
from pathlib import Path

import pytest

from repo_tools import load_tool

pytestmark = [pytest.mark.browser, pytest.mark.slow,   # two Sphinx builds of the site, then Chromium: `make test` only
              pytest.mark.filterwarnings("ignore:To exit:UserWarning")]  # a CLI guard run while documenting

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "docs"


docs = load_tool("docs")
NBS = ROOT / docs.settings().get("nbs_path", "nbs")
PAGES = [docs.docname(NBS, p) for p in docs.notebooks(NBS)]  # `index`, `08a_config`, `viz/00_style`
CHAPTER = re.compile(r"^(\d+)([a-z]?)_")  # a chapter: its number, and a letter for a sub-chapter (08a_config)
CHAPTERS = [s for s in PAGES if CHAPTER.match(s)]
APPENDIX, APPENDIX_CAPTION = [s for s in PAGES if s.startswith("viz/")], "The pictures' code"
SEARCH_TERM, SEARCH_PAGE = "WeightDrop", "01_weight_drop"  # the name, and the chapter that documents it
WAIT = 20_000  # ms: the longest wait for a condition (it ends as soon as the condition holds): a busy machine


def _built_from(site):
    "The copies of the notebooks the site was built from (tools/docs.py snapshots nbs/ before processing)."
    return site.parent / "src" / "_notebooks"


def _heading(folder, stem, pattern=r"^#\s+(.+)$"):
    "The first match of `pattern` (default: the H1 title) in the notebook's markdown, as plain text."
    nb = json.loads((folder / f"{stem}.ipynb").read_text(encoding="utf-8"))
    for c in nb["cells"]:
        if c["cell_type"] == "markdown":
            m = re.search(pattern, "".join(c["source"]), re.M)
            if m:
                return re.sub(r"[`*]", "", m.group(1)).strip()
    return None


def _plain(text):
    "Text as typed: Sphinx's typographic quotes and dashes undone, whitespace collapsed."
    text = text.translate(str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'}))
    return " ".join(text.replace("\u2014", "---").replace("\u2013", "--").split())


def _built_pages(site):
    "The page names of the notebooks the site was built from, in reading order."
    return [docs.docname(_built_from(site), p) for p in docs.notebooks(_built_from(site))]


def _notebook(site, stem):
    return json.loads((_built_from(site) / f"{stem}.ipynb").read_text(encoding="utf-8"))


# nbdev drops the cells with these flags from the pages; the adapter drops those with include/output false
_NOT_SHOWN = {"hide", "export", "exporti", "default_exp"}


def _saved_figures(nb):
    "The number of plotly figures saved in a notebook's outputs that its page shows (not in a cell it hides)."
    n = 0
    for c in (c for c in nb.get("cells", []) if c["cell_type"] == "code"):
        directives = docs.split_directives("".join(c["source"]))[0]
        tags = docs.cell_tags(directives)
        if not (_NOT_SHOWN & set(directives) or {"remove-cell", "remove-output"} & set(tags)):
            n += sum(docs.PLOTLY_MIME in (o.get("data") or {}) for o in c.get("outputs", []))
    return n


def _slider_figures(nb):
    "The plotly figures of a notebook's saved outputs that carry a built-in slider."
    figs = []
    for c in nb.get("cells", []):
        for o in c.get("outputs", []):
            fig = o.get("data", {}).get(docs.PLOTLY_MIME)
            if fig and (fig.get("layout") or {}).get("sliders"):
                figs.append(fig)
    return figs


# The pages whose notebooks have a slider figure: one test per page, so `-k 08e_generate` checks one chapter's sliders
SLIDER_PAGES = [docs.docname(NBS, p) for p in docs.notebooks(NBS)
                if _slider_figures(json.loads(p.read_text(encoding="utf-8")))]


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def site(tmp_path_factory):
    "The site, built from nbs/ by the function `make docs` runs."
    return docs.build(tmp_path_factory.mktemp("docs_build"))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _serve(directory):
    "Serve `directory` by http.server on 127.0.0.1 (a free port), in a thread; gives the base URL."
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(directory)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def base_url(site):
    "The site served on 127.0.0.1."
    with _serve(site) as url:
        yield url


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "Chromium is missing: apt-get install -y chromium chromium-driver (.ci/run does it in CI)"
    return exe


@pytest.fixture(scope="module")  # module: Playwright's sync API runs one instance at a time (JupyterLab tests too)
def browser():
    from playwright.sync_api import expect, sync_playwright
    expect.set_options(timeout=WAIT)  # expect(...) waits as long as the other waits, not its default 5 s
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(), headless=True,
                              args=["--no-sandbox", "--disable-background-networking"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def context(browser):
    "One browser context for the session (its cache keeps plotly.js and MathJax from being fetched for every page)."
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    yield ctx
    ctx.close()


class Watched:
    "A page with everything that went wrong on it recorded: console errors, page errors, failed and outside requests."
    def __init__(self, context, base_url):
        self.base = base_url
        self.page = context.new_page()
        self.problems = []
        p = self.page
        p.on("console", lambda m: m.type == "error" and self.problems.append(f"console error: {m.text} ({m.location})"))
        p.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        p.on("requestfailed", lambda r: self._aborted_favicon(r)
             or self.problems.append(f"request failed: {r.url} ({r.failure})"))
        p.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))
        p.on("request", lambda r: (not r.url.startswith((self.base, "data:", "blob:", "about:")))
             and self.problems.append(f"request leaving the site: {r.url}"))

    @staticmethod
    def _aborted_favicon(r):
        """Chromium fetches a page's icon on its own, after the page has loaded (on a busy machine, after the network
        went idle): the next navigation cancels it. A missing icon still shows, as an HTTP 404."""
        return r.failure == "net::ERR_ABORTED" and r.url.endswith("/_static/favicon.svg")

    def goto(self, path):
        self.page.goto(self.base + path, wait_until="networkidle")
        return self.page

    def assert_clean(self, what):
        assert not self.problems, f"{what}:\n" + "\n".join(self.problems)

    def close(self):
        self.page.close()


@pytest.fixture()
def watched(context, base_url):
    w = Watched(context, base_url)
    yield w
    w.close()


# ------------------------------------------------------------------------------------------- tests
def test_site_has_every_notebook_in_reading_order(site):
    assert PAGES and PAGES[0] == "index", PAGES
    for s in PAGES:
        assert (site / f"{s}.html").is_file(), f"no page for nbs/{s}.ipynb"
    assert (site / "search.html").is_file() and (site / "searchindex.js").is_file()
    assert (site / "_static" / "plotly.min.js").is_file() and (site / "_static" / "mathjax" / "tex-svg.js").is_file()


def test_api_reference_covers_every_exported_function_and_class(site):
    "Each function and class in a module's __all__ has a section (from show_doc) and a line on the API page."
    import importlib
    import inspect
    api_md = (site.parent / "src" / "api.md").read_text(encoding="utf-8")
    api_html = (site / "api.html").read_text(encoding="utf-8")
    missing = []
    for stem in PAGES:
        exp = docs.default_exp(json.loads((_built_from(site) / f"{stem}.ipynb").read_text(encoding="utf-8")))
        if not exp:
            continue
        modname = f"{docs.settings()['lib_path']}.{exp}"
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            missing.append(f"{modname}: not exported from nbs/{stem}.ipynb ({e})")
            continue
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name, None)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and getattr(obj, "__module__", "") == modname:
                if f"](#{modname}.{name})" not in api_md:
                    missing.append(f"{modname}.{name} ({stem})")
    assert not missing, "exported but not documented (add show_doc to the chapter): " + ", ".join(missing)
    n_entries = api_md.count("- [`")
    assert n_entries > 0 and api_html.count('class="reference internal"') >= n_entries, "API links not resolved"


@pytest.mark.parametrize("stem", PAGES + ["api", "search"])
def test_page_loads_clean(watched, site, stem):
    """Every page: no console error, no failed request, nothing fetched from outside; its title; as many plotly
    figures drawn as its notebook has saved, and its math typeset; links to its notebook (GitHub, Colab, Binder,
    download). A screenshot of each chapter and appendix page."""
    page = watched.goto(f"{stem}.html")
    _wait_math(page, site, stem)
    h1 = page.locator("main h1:visible").first
    assert h1.is_visible(), f"{stem}: no visible title"
    if stem != "search":  # the search page has its own form too
        assert page.locator(".search-button-field:visible, form.bd-search:visible").count() == 1, f"{stem}: not one search box"
    if stem in PAGES:
        want = _heading(_built_from(site), stem)
        assert want and want in h1.inner_text(), f"{stem}: title {h1.inner_text()!r}, notebook says {want!r}"
        summary = _heading(_built_from(site), stem, r"^>\s+(.+)$")
        shown = page.locator(".awd-summary")
        assert shown.count() == (1 if summary else 0), f"{stem}: the notebook's summary line is not under the title"
        if summary:
            assert _plain(shown.inner_text()) == _plain(summary), \
                f"{stem}: summary shown as {shown.inner_text()!r}, notebook says {summary!r}"
        saved = _saved_figures(_notebook(site, stem))
        drawn = _wait_figures(page, saved)
        assert len(drawn) == saved, (f"{stem}: {saved} plotly figures saved in the notebook, {len(drawn)} drawn on "
                                     f"the page ({page.locator('div.awd-plotly').count()} placed)")
        if stem in CHAPTERS + APPENDIX:
            ARTIFACTS.joinpath(f"{stem}.png").parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"{stem}.png"), full_page=True)
        _check_notebook_links(page, watched.base, site, stem)
    watched.assert_clean(stem)


# The plotly figures of the page that are drawn: a plot with its SVG and at least one trace, on the page (not 0 px
# wide or high) unless folded away in a closed <details> (a solution).
_DRAWN = """() => [...document.querySelectorAll('div.awd-plotly.js-plotly-plot')].filter(gd => {
  const svg = gd.querySelector('.main-svg'), r = gd.getBoundingClientRect();
  return svg && (gd._fullData || []).length > 0 && (gd.closest('details:not([open])') || (r.width > 0 && r.height > 0));
}).map(gd => gd.id)"""


def _wait_figures(page, n):
    "The ids of the plotly figures drawn on the page, once `n` are (or after a bounded wait for them)."
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_function(f"({_DRAWN})().length >= {n}", timeout=WAIT)
    return page.evaluate(_DRAWN)


def test_chapters_with_figures_show_them(site):
    """At least as many chapters show plotly figures as have them saved in their notebooks, and these are the
    ones (each page draws them: `test_page_loads_clean`); some chapters have none by nature (a config, callbacks)."""
    saved = {s: _saved_figures(_notebook(site, s)) for s in _built_pages(site) if CHAPTER.match(s)}
    with_figures = [s for s, n in saved.items() if n]
    on_site = [s for s in saved if 'class="awd-plotly-data"' in (site / f"{s}.html").read_text(encoding="utf-8")]
    assert with_figures, "no chapter has a plotly figure saved in its notebook"
    assert len(on_site) >= len(with_figures) and set(with_figures) <= set(on_site), \
        (f"{len(with_figures)} chapters have figures in their notebooks, {len(on_site)} on the site; missing: "
         f"{sorted(set(with_figures) - set(on_site))}")


def _wait_drawn(page, site, stem):
    "Wait until the page's plotly figures are drawn and its math typeset; return the number of figures."
    html = (site / f"{stem}.html").read_text(encoding="utf-8")
    n_figs = html.count('class="awd-plotly-data"')
    if n_figs:
        page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length > 0 && "
                               f"document.querySelectorAll('.js-plotly-plot').length >= {n_figs}", timeout=WAIT)
    _wait_math(page, site, stem)
    return n_figs


def _wait_math(page, site, stem):
    "Wait until the page's math is typeset, and check MathJax could typeset all of it."
    n_math = len(re.findall(r'class="math notranslate nohighlight"', (site / f"{stem}.html").read_text(encoding="utf-8")))
    if n_math:
        page.wait_for_function(f"document.querySelectorAll('mjx-container').length >= {n_math}", timeout=WAIT)
        assert page.locator("mjx-merror").count() == 0, f"{stem}: MathJax could not typeset some math"


def _check_notebook_links(page, base, site, stem):
    "The theme's buttons to the notebook (GitHub, Colab, Binder), and a download that is the notebook itself."
    cfg = docs.settings()
    hrefs = page.eval_on_selector_all(".bd-header-article a[href]", "links => links.map(a => a.href)")
    path = f"{cfg['nbs_path']}/{stem}.ipynb"
    repo = cfg["git_url"].split("github.com/", 1)[1]
    assert any(h.startswith(f"{cfg['git_url']}/blob/{cfg['branch']}/{path}") for h in hrefs), hrefs
    assert f"https://colab.research.google.com/github/{repo}/blob/{cfg['branch']}/{path}" in hrefs, hrefs
    assert any(h.startswith(f"https://mybinder.org/v2/gh/{repo}/{cfg['branch']}?") and h.endswith(path) for h in hrefs), hrefs
    dl = page.locator(".awd-download a.download")
    assert dl.count() == 1, f"{stem}: no download link"
    r = page.request.get(dl.evaluate("a => a.href"))  # resolved against the page: pages in viz/ too
    assert r.ok and r.body() == (_built_from(site) / f"{stem}.ipynb").read_bytes(), \
        f"{stem}: the download is not the notebook the page was built from"


def test_math_is_typeset(watched, site):
    "At least one chapter has equations, and MathJax turns them into SVG."
    with_math = [s for s in CHAPTERS if 'class="math notranslate' in (site / f"{s}.html").read_text(encoding="utf-8")]
    assert with_math, "no chapter has an equation"
    page = watched.goto(f"{with_math[0]}.html")
    page.wait_for_selector("mjx-container svg", timeout=WAIT)
    assert page.locator("mjx-container[display='true'] svg, mjx-container svg").count() > 0
    watched.assert_clean(with_math[0])


def _site_figures(site, stem):
    "(div id, figure JSON) of every plotly figure of a page of the site."
    html = (site / f"{stem}.html").read_text(encoding="utf-8")
    return [(m.group(1), json.loads(m.group(2).replace("<\\/", "</"))) for m in re.finditer(
        r'<script type="application/json" class="awd-plotly-data" data-target="([^"]+)">(.*?)</script>', html, re.S)]


def _site_slider_figures(site):
    "(page, div id, figure JSON) of every figure in the site whose JSON has a slider."
    return [(s, div_id, fig) for s in _built_pages(site)
            for div_id, fig in _site_figures(site, s) if (fig.get("layout") or {}).get("sliders")]


_FINGERPRINT = """id => { const gd = document.getElementById(id);
  const layers = [...gd.querySelectorAll('.cartesianlayer, .polarlayer, .pielayer, .layer-above, .g-gtitle')];
  return layers.map(e => e.innerHTML).join('|'); }"""
# How many times plotly has finished an update of the figure (a slider step's method ends with one of these events).
_UPDATES = """id => { const gd = document.getElementById(id);
  if (gd.awdUpdates === undefined) {
    gd.awdUpdates = 0;
    for (const ev of ['plotly_update', 'plotly_relayout', 'plotly_restyle', 'plotly_animated']) gd.on(ev, () => gd.awdUpdates++);
  }
  return gd.awdUpdates; }"""
_TITLE = "id => (document.querySelector('#' + id + ' .g-gtitle .gtitle') || {}).textContent || ''"


def test_every_slider_figure_is_on_the_site(site):
    "Every slider figure of the notebooks is on the site, page by page."
    built = docs.notebooks(_built_from(site))  # the notebooks as they were when the site was built
    in_notebooks = {docs.docname(_built_from(site), p): len(_slider_figures(json.loads(p.read_text(encoding="utf-8"))))
                    for p in built}
    on_site = [stem for stem, _, _ in _site_slider_figures(site)]
    assert sum(in_notebooks.values()) > 0, "no chapter has a kernel-free slider figure"
    for stem, n in in_notebooks.items():
        assert on_site.count(stem) == n, f"{stem}: {n} slider figures in the notebook, {on_site.count(stem)} on the site"


@pytest.mark.parametrize("stem", SLIDER_PAGES)
def test_kernel_free_sliders_move_the_figure(watched, site, stem):
    "On the page, dragging each slider with the mouse changes the figure (the data, and the title where a step sets one)."
    on_site = [fig for fig in _site_slider_figures(site) if fig[0] == stem]
    assert on_site, f"{stem}: its notebook has slider figures, its page none"
    page = None
    for stem, div_id, _ in on_site:
        if page is None or not page.url.endswith(f"/{stem}.html"):
            page = watched.goto(f"{stem}.html")
        page.wait_for_selector(f"#{div_id} .slider-container", timeout=WAIT)
        page.locator(f"#{div_id} .slider-container").scroll_into_view_if_needed()
        before, updates = page.evaluate(_FINGERPRINT, div_id), page.evaluate(_UPDATES, div_id)
        active = page.evaluate("id => document.getElementById(id)._fullLayout.sliders[0].active || 0", div_id)
        rail = page.locator(f"#{div_id} .slider-container .slider-rail-rect").first.bounding_box()
        grip = page.locator(f"#{div_id} .slider-container .slider-grip-rect").first.bounding_box()
        assert rail and grip, f"{stem}: slider not drawn"
        x0, y0 = grip["x"] + grip["width"] / 2, grip["y"] + grip["height"] / 2
        to_right = x0 < rail["x"] + rail["width"] / 2
        x1 = rail["x"] + (rail["width"] - 2 if to_right else 2)
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move((x0 + x1) / 2, y0, steps=5)
        page.mouse.move(x1, y0, steps=5)
        page.mouse.up()
        page.wait_for_function(f"id => document.getElementById(id)._fullLayout.sliders[0].active !== {active}",
                               arg=div_id, timeout=WAIT)
        page.wait_for_function(f"id => document.getElementById(id).awdUpdates > {updates}", arg=div_id, timeout=WAIT)
        after = page.evaluate(_FINGERPRINT, div_id)
        assert after != before, f"{stem} #{div_id}: the slider moved but the figure did not change"
    watched.assert_clean("slider pages")


def _step_title(step):
    "The title a slider step sets (`title.text`, or `title` as a dict or a plain string), or None."
    for args in step.get("args", []):
        if isinstance(args, dict) and "title.text" in args:
            return args["title.text"]
        if isinstance(args, dict) and "title" in args:
            return args["title"].get("text") if isinstance(args["title"], dict) else args["title"]
    return None


@pytest.mark.parametrize("stem", SLIDER_PAGES)
def test_sliders_keep_the_figure_title(watched, site, stem):
    """Clicking every step of every slider figure of the page: the figure keeps its title, and a step that sets a new
    title shows it. (plotly.js 3 and later clear the title when a step sets `title` to a plain string: steps set
    `title.text`.)"""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    failures, page = [], None
    for stem, div_id, fig in [f for f in _site_slider_figures(site) if f[0] == stem]:
        if page is None or not page.url.endswith(f"/{stem}.html"):
            page = watched.goto(f"{stem}.html")
        page.wait_for_selector(f"#{div_id} .slider-container", timeout=WAIT)
        page.locator(f"#{div_id}").scroll_into_view_if_needed()
        for i, slider in enumerate(fig["layout"]["sliders"]):
            steps, where = slider["steps"], f"{stem} #{div_id}"
            active = page.evaluate(f"id => document.getElementById(id).layout.sliders[{i}].active || 0", div_id)
            shown = page.evaluate(_TITLE, div_id)
            if not shown.strip():
                failures.append(f"{where}: no title before the slider moves")
            ticks = page.locator(f"#{div_id} .slider-container").nth(i).locator(".slider-tick-rect")
            assert ticks.count() == len(steps), f"{where}: {ticks.count()} slider ticks for {len(steps)} steps"
            for k in [k for k in range(len(steps)) if k != active]:
                step = f"{where}: slider step {steps[k].get('label', k)!r}"
                ticks.nth(k).scroll_into_view_if_needed()
                updates, box = page.evaluate(_UPDATES, div_id), ticks.nth(k).bounding_box()
                page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                try:
                    page.wait_for_function(f"id => {{ const gd = document.getElementById(id); return "
                                           f"gd.layout.sliders[{i}].active === {k} && gd.awdUpdates > {updates}; }}",
                                           arg=div_id, timeout=WAIT)
                except PlaywrightTimeout:
                    failures.append(f"{step}: clicking it did not update the figure")
                    break
                before, shown = shown, page.evaluate(_TITLE, div_id)
                if not shown.strip():
                    failures.append(f"{step} leaves the figure with no title (its args set title = "
                                    f"{_step_title(steps[k])!r}{'' if 'title.text' in str(steps[k]) else ', not title.text'})")
                elif _step_title(steps[k]) not in (None, _step_title(steps[active])) and shown == before:
                    failures.append(f"{step} sets a new title, the figure still shows {shown!r}")
                active = k
        (ARTIFACTS / "sliders").mkdir(parents=True, exist_ok=True)
        page.locator(f"#{div_id}").screenshot(path=str(ARTIFACTS / "sliders" / f"{stem}-{div_id}.png"))
    watched.assert_clean("slider pages")
    assert not failures, "\n".join(failures)


# The text of a drawn plotly figure by kind, with boxes in page pixels; the figure's box; the width it is drawn at
# and the width of the output area it sits in.
_FIGURE_LAYOUT = """gd => {
  const kinds = {'title': '.g-gtitle .gtitle', 'annotation': '.annotation-text',
                 'axis title': '.infolayer > g[class^="g-"][class$="title"]:not(.g-gtitle) > text',
                 'tick label': 'g[class$="tick"] > text', 'legend': '.legend .legendtext, .legend .legendtitletext',
                 'slider label': '.slider-container text'};
  const box = e => { const r = e.getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; };
  const texts = [];
  for (const [kind, sel] of Object.entries(kinds))
    gd.querySelectorAll(sel).forEach(e => {
      const b = box(e);
      if (b.right > b.left && b.bottom > b.top && e.textContent.trim() && e.checkVisibility({opacityProperty: true, visibilityProperty: true}))
        texts.push({kind, text: e.textContent.trim().slice(0, 40), ...b});
    });
  return {texts, fig: box(gd.querySelector('.main-svg')), width: gd.querySelector('.main-svg').getBoundingClientRect().width,
          room: gd.closest('.cell_output, .output, article').getBoundingClientRect().width};
}"""
_SIDEWAYS = """() => { const art = document.querySelector('article.bd-article');
  return [document.documentElement.scrollWidth - window.innerWidth, art ? art.scrollWidth - art.clientWidth : 0]; }"""


def _overlaps(texts, slack=2):
    "Pairs of text boxes that overlap by more than `slack` px both ways (tick labels among themselves excepted)."
    for a, b in itertools.combinations(texts, 2):
        if a["kind"] == b["kind"] and a["kind"] in ("tick label", "legend", "slider label"):
            continue
        if min(a["right"], b["right"]) - max(a["left"], b["left"]) > slack and \
                min(a["bottom"], b["bottom"]) - max(a["top"], b["top"]) > slack:
            yield f"{a['kind']} {a['text']!r} overlaps {b['kind']} {b['text']!r}"


@pytest.mark.parametrize("width", [1280, 390])
@pytest.mark.parametrize("stem", PAGES + ["api"])
def test_figures_fit_the_page(browser, base_url, site, stem, width):
    """At a desktop and a phone width, on each page: no sideways scrolling; each plotly figure as wide as the
    output area it sits in; its title inside the figure; no text of a figure (title, subplot titles and other
    annotations, axis titles, tick labels, legend, slider labels) over another."""
    ctx = browser.new_context(viewport={"width": width, "height": 900})
    watched, failures = Watched(ctx, base_url), []
    try:
        page = watched.goto(f"{stem}.html")
        _wait_drawn(page, site, stem)
        page_x, article_x = page.evaluate(_SIDEWAYS)
        if page_x > 0 or article_x > 0:
            failures.append(f"{stem}: scrolls sideways (page by {page_x} px, article by {article_x} px)")
        for div_id, fig in _site_figures(site, stem):
            lay = page.evaluate(_FIGURE_LAYOUT, page.locator(f"#{div_id}").element_handle())
            where, bad = f"{stem} #{div_id} ({width} px)", []
            if abs(lay["width"] - lay["room"]) > 0.06 * lay["room"]:
                bad.append(f"drawn {lay['width']:.0f} px wide in an output area of {lay['room']:.0f} px")
            f = lay["fig"]
            for t in (t for t in lay["texts"] if t["kind"] == "title"):
                if t["left"] < f["left"] - 1 or t["right"] > f["right"] + 1 or t["top"] < f["top"] - 1:
                    bad.append(f"title {t['text']!r} cut off ({t['left']:.0f}-{t['right']:.0f} px in a figure "
                               f"{f['left']:.0f}-{f['right']:.0f} px)")
            bad += list(dict.fromkeys(_overlaps(lay["texts"])))  # once per pair of texts
            if bad:
                (ARTIFACTS / "layout").mkdir(parents=True, exist_ok=True)
                page.locator(f"#{div_id}").screenshot(path=str(ARTIFACTS / "layout" / f"{stem}-{div_id}-{width}.png"))
                failures += [f"{where}: {b}" for b in bad]
        watched.assert_clean(f"{stem} at {width} px")
    finally:
        watched.close()
        ctx.close()
    assert not failures, f"{len(failures)} layout problems:\n" + "\n".join(failures)


def _gpu_cells(nb):
    "The number of `#| gpu` code cells of a notebook."
    return sum("gpu" in docs.split_directives("".join(c["source"]))[0] for c in nb["cells"] if c["cell_type"] == "code")


def test_gpu_cells_show_their_code_under_a_label(watched, site):
    "Every `#| gpu` cell of the chapters shows its code, right under a 'Runs on a GPU' label."
    from playwright.sync_api import expect
    counts = {s: _gpu_cells(json.loads((_built_from(site) / f"{s}.ipynb").read_text(encoding="utf-8"))) for s in CHAPTERS}
    counts = {s: n for s, n in counts.items() if n}
    assert counts, "no chapter has a GPU cell"
    for stem, n in counts.items():
        page = watched.goto(f"{stem}.html")
        watched.assert_clean(stem)  # a page that did not load says so first
        cells = page.locator("div.cell.tag_gpu")
        expect(cells, f"{stem}: {n} GPU cells in the notebook").to_have_count(n)
        for i in range(n):
            assert cells.nth(i).locator(".cell_input pre").is_visible(), f"{stem}: GPU cell {i} shows no code"
            label = cells.nth(i).locator("xpath=preceding-sibling::*[1]")
            assert label.is_visible() and "Runs on a GPU" in label.inner_text(), f"{stem}: GPU cell {i} has no label"
    watched.assert_clean("GPU cells")


def _nb(*cells):
    return {"cells": [{"cell_type": t, "metadata": {}, "source": src, **({"outputs": outs, "execution_count": None}
                                                                         if t == "code" else {})}
                      for t, src, outs in cells], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture(scope="module")
def exercise_site(tmp_path_factory):
    "A small site built like the real one from fixture notebooks: a home page, and a chapter with an exercise."
    nbs = tmp_path_factory.mktemp("exercise_nbs")
    (nbs / "index.ipynb").write_text(json.dumps(_nb(("markdown", "# Fixture site\n> A home page.", None))))
    answer = {"output_type": "stream", "name": "stdout", "text": "42\n"}
    (nbs / "01_exercise.ipynb").write_text(json.dumps(_nb(
        ("markdown", "# An exercise\n> Try it, then unfold the answer.", None),
        ("markdown", "**Exercise.** Print six times seven.", None),
        ("code", "#| solution\nprint(6 * 7)  # the answer", [answer]),
    )))
    with _serve(docs.build(tmp_path_factory.mktemp("exercise_build"), nbs=nbs)) as url:
        yield url


def test_solution_folds_behind_show_solution(context, exercise_site):
    "A `#| solution` cell shows only 'Show solution'; clicking it unfolds the code and its output."
    from playwright.sync_api import expect
    watched = Watched(context, exercise_site)
    try:
        page = watched.goto("01_exercise.html")
        toggle = page.locator("div.cell.tag_solution details")
        expect(toggle, "the solution cell is not folded").to_have_count(1)
        summary, code, output = toggle.locator("summary"), toggle.locator(".cell_input pre"), toggle.locator(".cell_output")
        expect(summary).to_have_text("Show solution", use_inner_text=True)
        expect(code).to_be_hidden()
        expect(output).to_be_hidden()
        summary.click()
        expect(code).to_be_visible()
        expect(code).to_contain_text("print(6 * 7)")
        expect(output).to_have_text("42", use_inner_text=True)
        expect(summary).to_have_text("Hide solution", use_inner_text=True)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "solution-unfolded.png"), full_page=True)
        watched.assert_clean("exercise page")
    finally:
        watched.close()


def test_search_finds_weightdrop(watched):
    "Typing the name in the search box lists the chapter that documents it, and the result opens it."
    page = watched.goto("index.html")
    page.keyboard.press("Control+k")
    box = page.locator("input[name='q']:visible").first
    box.wait_for(timeout=WAIT)
    box.fill(SEARCH_TERM)
    box.press("Enter")
    page.wait_for_url(re.compile(r"search\.html\?q="), timeout=10_000)
    page.wait_for_selector("#search-results ul.search li a", timeout=WAIT)
    hit = page.locator(f"#search-results ul.search li a[href*='{SEARCH_PAGE}']").first
    assert hit.count() == 1, f"searching {SEARCH_TERM!r} does not list {SEARCH_PAGE}"
    hit.click()
    page.wait_for_url(re.compile(rf"{SEARCH_PAGE}\.html"), wait_until="commit", timeout=10_000)  # then its load, below
    page.wait_for_load_state("networkidle")
    heading = page.locator("article h1, article h2, article h3, article h4").filter(has_text=SEARCH_TERM)
    assert heading.count() > 0, f"{SEARCH_PAGE} has no heading naming {SEARCH_TERM}"
    watched.assert_clean("search")


def _page_name(url, base):
    "The page name of a URL of the site (`08a_config`, `viz/00_style`)."
    return url.removeprefix(base).split("#")[0].split("?")[0].removesuffix(".html") or "index"


def test_previous_next_follow_chapter_order(watched, site):
    """Clicking `next` from the home page visits every chapter in order of number then letter (08, 08a, ..., 08g, 09),
    then the appendix (viz/, the pictures' code) in the same order, then the API reference; `previous` goes back."""
    expected = _built_pages(site) + ["api"]
    keys = [(int(m.group(1)), m.group(2)) for m in map(CHAPTER.match, expected) if m]
    appendix = [s for s in expected if s.startswith("viz/")]
    viz_keys = [(int(m.group(1)), m.group(2)) for m in (CHAPTER.match(s.split("/", 1)[1]) for s in appendix) if m]
    assert expected[0] == "index" and keys and keys == sorted(keys), expected
    assert appendix and viz_keys == sorted(viz_keys) and len(viz_keys) == len(appendix), expected
    last_chapter = max(i for i, s in enumerate(expected) if CHAPTER.match(s))
    assert last_chapter < expected.index(appendix[0]) and expected.index(appendix[-1]) == len(expected) - 2, expected
    page = watched.goto("index.html")
    seen = ["index"]
    for _ in range(len(expected) + 2):
        nxt = page.locator("a.right-next")
        if nxt.count() == 0:
            break
        nxt.first.click()
        page.wait_for_load_state("domcontentloaded")
        seen.append(_page_name(page.url, watched.base))
    assert seen == expected, f"next visits {seen}, reading order is {expected}"
    page.locator("a.left-prev").first.click()
    page.wait_for_load_state("domcontentloaded")
    assert _page_name(page.url, watched.base) == expected[-2]
    page.wait_for_load_state("networkidle")
    watched.assert_clean("navigation")


def test_sidebar_lists_the_appendix_after_the_chapters(watched, site):
    "The sidebar lists the chapters, then the viz/ pages under 'The pictures' code' (each link opens its page), then the API."
    page = watched.goto("index.html")
    nav = page.locator("nav.bd-docs-nav")
    captions = [_plain(t) for t in nav.locator("p.caption").all_inner_texts()]
    assert APPENDIX_CAPTION in captions, f"the sidebar's captions are {captions}"
    links = nav.locator("a.reference.internal")
    hrefs = [_page_name(h, watched.base) for h in links.evaluate_all("links => links.map(a => a.href)")]
    assert [h for h in hrefs if h != "index"] == _built_pages(site)[1:] + ["api"], hrefs
    group = nav.locator("p.caption").nth(captions.index(APPENDIX_CAPTION)).locator("xpath=following-sibling::ul[1]")
    in_group = [_page_name(h, watched.base) for h in group.locator("a").evaluate_all("ls => ls.map(a => a.href)")]
    assert in_group == [s for s in _built_pages(site) if s.startswith("viz/")], in_group
    group.locator("a").first.click()
    page.wait_for_load_state("networkidle")
    assert _page_name(page.url, watched.base) == in_group[0]
    assert _heading(_built_from(site), in_group[0]) in page.locator("main h1").first.inner_text()
    watched.assert_clean("sidebar")
