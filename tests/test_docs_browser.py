"""The documentation site in a real browser (headless Chromium driven by Playwright).

The site is built from nbs/ once per session with the same function `make docs` runs (tools/docs.py), served on
127.0.0.1 by a Python http.server thread, and every page is opened as a reader would: it must load with no console
error, no failed request and no request leaving 127.0.0.1; chapters show their title and a drawn plotly figure;
plotly sliders move the figure; search finds `WeightDrop`; math is typeset; previous/next follow the reading
order. Screenshots of every page go to test-artifacts/docs/.
"""
import functools
import http.server
import importlib.util
import json
import re
import shutil
import threading
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser,
              pytest.mark.filterwarnings("ignore:To exit:UserWarning")]  # a CLI guard run while documenting

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "docs"


def _load_tool():
    spec = importlib.util.spec_from_file_location("awd_docs_tool", ROOT / "tools" / "docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


docs = _load_tool()
NBS = ROOT / docs.settings().get("nbs_path", "nbs")
PAGES = [p.stem for p in docs.notebooks(NBS)]
CHAPTERS = [s for s in PAGES if re.match(r"^\d+_", s)]
SEARCH_TERM, SEARCH_PAGE = "WeightDrop", "01_weight_drop"  # the name, and the chapter that documents it


def _built_from(site):
    "The copies of the notebooks the site was built from (tools/docs.py snapshots nbs/ before processing)."
    return site.parent / "src" / "_notebooks"


def _title(folder, stem):
    "The notebook's H1 title as plain text."
    nb = json.loads((folder / f"{stem}.ipynb").read_text(encoding="utf-8"))
    for c in nb["cells"]:
        if c["cell_type"] == "markdown":
            m = re.search(r"^#\s+(.+)$", "".join(c["source"]), re.M)
            if m:
                return re.sub(r"[`*]", "", m.group(1)).strip()
    return None


def _slider_figures(nb):
    "The plotly figures of a notebook's saved outputs that carry a built-in slider."
    figs = []
    for c in nb.get("cells", []):
        for o in c.get("outputs", []):
            fig = o.get("data", {}).get(docs.PLOTLY_MIME)
            if fig and (fig.get("layout") or {}).get("sliders"):
                figs.append(fig)
    return figs


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def site(tmp_path_factory):
    "The site, built from nbs/ by the function `make docs` runs."
    return docs.build(tmp_path_factory.mktemp("docs_build"))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def base_url(site):
    "The site served by http.server on 127.0.0.1 (a free port)."
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "Chromium is missing: apt-get install -y chromium chromium-driver (.ci/run does it in CI)"
    return exe


@pytest.fixture(scope="module")  # module: Playwright's sync API runs one instance at a time (JupyterLab tests too)
def browser():
    from playwright.sync_api import sync_playwright
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
        p.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url} ({r.failure})"))
        p.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))
        p.on("request", lambda r: (not r.url.startswith((self.base, "data:", "blob:", "about:")))
             and self.problems.append(f"request leaving the site: {r.url}"))

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
    """Every page: no console error, no failed request, nothing fetched from outside; its title; its figures and math
    drawn; links to its notebook (GitHub, Colab, Binder, download). A screenshot of each chapter."""
    page = watched.goto(f"{stem}.html")
    html = (site / f"{stem}.html").read_text(encoding="utf-8")
    n_figs = html.count('class="awd-plotly-data"')
    if n_figs:
        page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length > 0 && "
                               f"document.querySelectorAll('.js-plotly-plot').length >= {n_figs}", timeout=20_000)
    n_math = len(re.findall(r'class="math notranslate nohighlight"', html))
    if n_math:
        page.wait_for_function(f"document.querySelectorAll('mjx-container').length >= {n_math}", timeout=20_000)
        assert page.locator("mjx-merror").count() == 0, "MathJax could not typeset some math"
    page.wait_for_timeout(300)
    h1 = page.locator("main h1:visible").first
    assert h1.is_visible(), f"{stem}: no visible title"
    if stem in PAGES:
        want = _title(_built_from(site), stem)
        assert want and want in h1.inner_text(), f"{stem}: title {h1.inner_text()!r}, notebook says {want!r}"
    if stem in CHAPTERS:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{stem}.png"), full_page=True)
        assert n_figs > 0, f"{stem}: the chapter has no plotly figure in its saved outputs"
        drawn = page.locator(".js-plotly-plot .main-svg")
        assert drawn.count() > 0 and drawn.first.is_visible(), f"{stem}: no plotly figure drawn"
        assert page.locator(".js-plotly-plot .main-svg .cartesianlayer, .js-plotly-plot .main-svg .pielayer, "
                            ".js-plotly-plot .main-svg .polarlayer").count() > 0, f"{stem}: empty plotly figure"
    if stem in PAGES:
        _check_notebook_links(page, watched.base, site, stem)
    watched.assert_clean(stem)


def _check_notebook_links(page, base, site, stem):
    "Source on GitHub, Colab, Binder, and a download that is the notebook itself."
    cfg = docs.settings()
    links = page.locator(".awd-launch a")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    path = f"{cfg['nbs_path']}/{stem}.ipynb"
    assert f"{cfg['git_url']}/blob/{cfg['branch']}/{path}" in hrefs, hrefs
    assert any(h.startswith("https://colab.research.google.com/github/") and h.endswith(path) for h in hrefs), hrefs
    assert any(h.startswith("https://mybinder.org/v2/gh/") for h in hrefs), hrefs
    dl = page.locator(".awd-launch a.download")
    assert dl.count() == 1, f"{stem}: no download link"
    r = page.request.get(base + dl.get_attribute("href"))
    assert r.ok and r.body() == (_built_from(site) / f"{stem}.ipynb").read_bytes(), \
        f"{stem}: the download is not the notebook the page was built from"


def test_math_is_typeset(watched, site):
    "At least one chapter has equations, and MathJax turns them into SVG."
    with_math = [s for s in CHAPTERS if 'class="math notranslate' in (site / f"{s}.html").read_text(encoding="utf-8")]
    assert with_math, "no chapter has an equation"
    page = watched.goto(f"{with_math[0]}.html")
    page.wait_for_selector("mjx-container svg", timeout=20_000)
    assert page.locator("mjx-container[display='true'] svg, mjx-container svg").count() > 0
    watched.assert_clean(with_math[0])


def _site_slider_figures(site):
    "(page, div id) of every figure in the site whose JSON has a slider."
    found = []
    for s in [p.stem for p in docs.notebooks(_built_from(site))]:
        html = (site / f"{s}.html").read_text(encoding="utf-8")
        for m in re.finditer(r'<script type="application/json" class="awd-plotly-data" data-target="([^"]+)">(.*?)</script>',
                             html, re.S):
            fig = json.loads(m.group(2).replace("<\\/", "</"))
            if (fig.get("layout") or {}).get("sliders"):
                found.append((s, m.group(1)))
    return found


_FINGERPRINT = """id => { const gd = document.getElementById(id);
  const layers = [...gd.querySelectorAll('.cartesianlayer, .polarlayer, .pielayer, .layer-above, .g-gtitle')];
  return layers.map(e => e.innerHTML).join('|'); }"""


def test_kernel_free_sliders_move_the_figure(watched, site):
    "Every slider figure of the chapters is on the site, and dragging its slider with the mouse changes the figure."
    built = docs.notebooks(_built_from(site))  # the notebooks as they were when the site was built
    in_notebooks = sum(len(_slider_figures(json.loads(p.read_text(encoding="utf-8")))) for p in built)
    on_site = _site_slider_figures(site)
    assert in_notebooks > 0, "no chapter has a kernel-free slider figure"
    assert len(on_site) == in_notebooks, f"{in_notebooks} slider figures in the notebooks, {len(on_site)} on the site"
    page = None
    for stem, div_id in on_site:
        if page is None or not page.url.endswith(f"/{stem}.html"):
            page = watched.goto(f"{stem}.html")
        page.wait_for_selector(f"#{div_id} .slider-container", timeout=20_000)
        page.locator(f"#{div_id}").scroll_into_view_if_needed()
        before = page.evaluate(_FINGERPRINT, div_id)
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
                               arg=div_id, timeout=5_000)
        page.wait_for_timeout(300)
        after = page.evaluate(_FINGERPRINT, div_id)
        assert after != before, f"{stem} #{div_id}: the slider moved but the figure did not change"
    watched.assert_clean("slider pages")


def test_search_finds_weightdrop(watched):
    "Typing the name in the search box lists the chapter that documents it, and the result opens it."
    page = watched.goto("index.html")
    page.keyboard.press("Control+k")
    box = page.locator("input[name='q']:visible").first
    box.wait_for(timeout=5_000)
    box.fill(SEARCH_TERM)
    box.press("Enter")
    page.wait_for_url(re.compile(r"search\.html\?q="), timeout=10_000)
    page.wait_for_selector("#search-results ul.search li a", timeout=20_000)
    hit = page.locator(f"#search-results ul.search li a[href*='{SEARCH_PAGE}']").first
    assert hit.count() == 1, f"searching {SEARCH_TERM!r} does not list {SEARCH_PAGE}"
    hit.click()
    page.wait_for_url(re.compile(rf"{SEARCH_PAGE}\.html"), timeout=10_000)
    page.wait_for_load_state("networkidle")
    heading = page.locator("article h1, article h2, article h3, article h4").filter(has_text=SEARCH_TERM)
    assert heading.count() > 0, f"{SEARCH_PAGE} has no heading naming {SEARCH_TERM}"
    watched.assert_clean("search")


def test_previous_next_follow_chapter_order(watched, site):
    "Clicking `next` from the home page visits every chapter in number order, then the API reference; `previous` goes back."
    expected = [p.stem for p in docs.notebooks(_built_from(site))] + ["api"]
    numbers = [int(s.split("_")[0]) for s in expected if re.match(r"^\d+_", s)]
    assert expected[0] == "index" and numbers and numbers == sorted(numbers), expected
    page = watched.goto("index.html")
    seen = ["index"]
    for _ in range(len(expected) + 2):
        nxt = page.locator("a.right-next")
        if nxt.count() == 0:
            break
        nxt.first.click()
        page.wait_for_load_state("domcontentloaded")
        seen.append(page.url.rsplit("/", 1)[-1].split("#")[0].removesuffix(".html"))
    assert seen == expected, f"next visits {seen}, reading order is {expected}"
    page.locator("a.left-prev").first.click()
    page.wait_for_load_state("domcontentloaded")
    assert page.url.rsplit("/", 1)[-1].removesuffix(".html") == expected[-2]
    page.wait_for_load_state("networkidle")
    watched.assert_clean("navigation")
