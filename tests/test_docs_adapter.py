"""The docs build (tools/docs.py): the adapter from nbdev's processed notebooks to myst-nb input, on small notebooks
made here, and nbdev's own processing of a small chapter before it."""
import json
import re
from pathlib import Path

import pytest

from repo_tools import load_tool

ROOT = Path(__file__).resolve().parent.parent


docs = load_tool("docs")
CFG = {"git_url": "https://github.com/org/proj", "branch": "main", "nbs_path": "nbs", "lib_path": "proj",
       "doc_host": "https://org.github.io", "doc_baseurl": "/proj"}
# nbdev's front matter for a `# title` and `> summary` (FrontmatterProc writes it with yaml.dump: quoted, folded)
FRONT_MATTER = ("---\ndescription: 'Two penalties on the last LSTM layer''s output: AR keeps the activations\n"
                "  the decoder sees small, TAR keeps the hidden state from jumping between time steps.'\n"
                "output-file: regularization.html\ntitle: 'AR and TAR: the model''s penalties'\n\n---\n\n")


def code(src, outputs=(), **meta):
    return {"cell_type": "code", "execution_count": None, "metadata": dict(meta), "outputs": list(outputs),
            "source": src}


def md(src):
    return {"cell_type": "markdown", "metadata": {}, "source": src}


def raw(src=FRONT_MATTER):
    return {"cell_type": "raw", "metadata": {}, "source": src}


def show_doc_output(name="WeightDrop", doc="Apply DropConnect to the named weights.", level=3):
    "show_doc's markdown as nbdev saves it: a rule, the source link with Quarto attributes, heading, signature, doc."
    text = ("---\n\n[source](https://github.com/org/proj/blob/main/proj/x.py#L5){target=\"_blank\" "
            "style=\"float:right; font-size:smaller\"}\n\n"
            f"{'#' * level} {name}\n\n```python\n\ndef {name}(\n    module, # the wrapped module\n):\n\n\n```\n\n*{doc}*")
    return {"output_type": "execute_result", "execution_count": 1, "metadata": {},
            "data": {"text/markdown": text, "text/plain": f"<{name}>"}}


def nb_of(*cells, **meta):
    return {"cells": list(cells), "metadata": dict(meta), "nbformat": 4, "nbformat_minor": 5}


def srcs(nb):
    return ["".join(c["source"]) for c in nb["cells"]]


def code_cells(nb):
    return {c["source"]: c for c in nb["cells"] if c["cell_type"] == "code"}


# ------------------------------------------------------------------------------------------- ordering
def test_notebooks_in_reading_order(tmp_path):
    "Home page first, then the chapters by number (9 before 10), then the rest; `_` and `.` names skipped."
    for n in ["10_ptb_gpu", "02_dropout", "index", "9_late", "00_lstm_gates", "11_cli", "01_weight_drop", "_scratch",
              ".hidden", "notes", "about"]:
        (tmp_path / f"{n}.ipynb").write_text("{}")
    got = [p.stem for p in docs.notebooks(tmp_path)]
    assert got == ["index", "00_lstm_gates", "01_weight_drop", "02_dropout", "9_late", "10_ptb_gpu", "11_cli", "about",
                   "notes"]


def test_sub_chapters_by_number_then_letter_then_the_appendix(tmp_path):
    """A chapter's letter orders it after its number and before the next number (08, 08a, 08g, 09); the notebooks of
    a subfolder (`viz/`) come after every top-level page, ordered the same way, named by their path."""
    names = ["viz/09_cache", "10_ptb_gpu", "08g_distributed", "viz/08_dashboard", "09_cache", "index", "08a_config",
             "viz/08f_ablations", "08_loop", "viz/00_style", "notes", "08b_checkpoint", "viz/_scratch", "_tmp/00_x",
             ".ipynb_checkpoints/08a_config-checkpoint", "viz/.ipynb_checkpoints/00_style-checkpoint"]
    for n in names:
        (tmp_path / f"{n}.ipynb").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"{n}.ipynb").write_text("{}")
    got = [docs.docname(tmp_path, p) for p in docs.notebooks(tmp_path)]
    assert got == ["index", "08_loop", "08a_config", "08b_checkpoint", "08g_distributed", "09_cache", "10_ptb_gpu",
                   "notes", "viz/00_style", "viz/08_dashboard", "viz/08f_ablations", "viz/09_cache"]
    assert got == sorted(got, key=docs.reading_key)


def test_sidebar_groups_the_chapters_the_appendix_and_the_api():
    names = ["index", "08_loop", "08a_config", "09_cache", "viz/00_style", "viz/08_dashboard"]
    assert docs.toc_groups(names, api=True) == [
        ("Chapters", ["08_loop", "08a_config", "09_cache"]), ("The pictures' code", ["viz/00_style", "viz/08_dashboard"]),
        ("Reference", ["api"])]
    assert docs.toc_groups(["index", "00_a"]) == [("Chapters", ["00_a"])]


def test_default_exp():
    assert docs.default_exp(nb_of(code("#| default_exp weight_drop"))) == "weight_drop"
    assert docs.default_exp(nb_of(md("#| default_exp x"))) is None


# ------------------------------------------------------------------------------------------- cell options
@pytest.mark.parametrize("src,directives,rest", [
    ("#| echo: false\n#| output: asis\nshow_doc(f)", {"echo:": ["false"], "output:": ["asis"]}, "show_doc(f)"),
    ("#| gpu\nx = 1", {"gpu": []}, "x = 1"),
    ("#|code-fold: show\n#| code-summary: \"Exported source\"\ndef f(): pass",
     {"code-fold:": ["show"], "code-summary:": ['"Exported', 'source"']}, "def f(): pass"),
    ("x = 1  #| not a directive\n#| late: 1", {}, "x = 1  #| not a directive\n#| late: 1"),
    ("#| solution", {"solution": []}, ""),
])
def test_split_directives(src, directives, rest):
    assert docs.split_directives(src) == (directives, rest)


@pytest.mark.parametrize("directives,tags", [
    ({"echo:": ["false"]}, ["remove-input"]),
    ({"output:": ["false"]}, ["remove-output"]),
    ({"include:": ["false"]}, ["remove-cell"]),
    ({"code-fold:": ["true"]}, ["hide-input"]),
    ({"code-fold:": ["show"]}, []),
    ({"echo:": ["false"], "output:": ["false"]}, ["remove-input", "remove-output"]),
    ({"slow": []}, []),
    ({"gpu": []}, ["gpu"]),
    ({"solution": []}, ["hide-cell", "solution"]),
])
def test_cell_tags(directives, tags):
    assert docs.cell_tags(directives) == tags


# ------------------------------------------------------------------------------------------- the notebook
@pytest.fixture()
def adapted():
    nb = nb_of(
        raw(),
        md("<!-- WARNING: THIS FILE WAS AUTOGENERATED! DO NOT EDIT! -->"),
        md("## The idea\n\nSee [`batchify`](https://org.github.io/proj/data.html#batchify) and "
           "[`nothing`](https://org.github.io/proj/data.html#nothing) and [paper](https://arxiv.org/abs/1708.02182)."),
        code("#| output: asis\n#| echo: false\nshow_doc(WeightDrop)", [show_doc_output()]),
        code("#| echo: false\nprint('shown without its code')",
             [{"output_type": "stream", "name": "stdout", "text": "shown without its code\n"}]),
        code("#| include: false\nsecret = 1"),
        code("#| slow\nx = 3"),
        code("", []),
    )
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    labels = {"proj.data.batchify": "proj.data.batchify"}
    return docs.adapt_notebook(nb, "05_regularization", CFG, module="proj.weight_drop", labels=labels)


def test_front_matter_becomes_title_summary_and_download(adapted):
    "nbdev's YAML front matter, read as YAML: no quotes, no doubled apostrophes, folded lines joined."
    nb, _ = adapted
    s = srcs(nb)
    assert s[0] == "# AR and TAR: the model's penalties"
    summary = ("Two penalties on the last LSTM layer's output: AR keeps the activations the decoder sees small, "
               "TAR keeps the hidden state from jumping between time steps.")
    assert s[1] == ":::{container} awd-summary\n" + summary + "\n:::"
    # the copy of the notebook, by its path from the source root (`/`): right from a page in a subfolder too
    assert s[2] == ":::{container} awd-download\n{download}`Download the notebook </_notebooks/05_regularization.ipynb>`\n:::"
    assert not any(c["cell_type"] == "raw" for c in nb["cells"])
    assert nb["metadata"]["myst"]["html_meta"]["description"] == summary


def test_download_link_first_when_no_front_matter():
    nb, _ = docs.adapt_notebook(nb_of(md("Some text"), code("x = 1")), "index", CFG)
    s = srcs(nb)
    assert "awd-download" in s[0] and s[1:] == ["Some text", "x = 1"]


def test_show_doc_becomes_labelled_api_section(adapted):
    nb, entries = adapted
    doc = next(c for c in nb["cells"] if "### WeightDrop" in c["source"])
    assert doc["cell_type"] == "markdown"
    assert doc["source"] == (
        "[source](https://github.com/org/proj/blob/main/proj/x.py#L5){.awd-source}\n\n"  # floats right of the heading
        "(proj.weight_drop.WeightDrop)=\n### WeightDrop\n\n"
        "```python\ndef WeightDrop(\n    module, # the wrapped module\n):\n```\n\n"  # no blank lines inside the fence
        "*Apply DropConnect to the named weights.*")
    assert entries == [{"name": "WeightDrop", "label": "proj.weight_drop.WeightDrop", "module": "proj.weight_drop",
                        "summary": "Apply DropConnect to the named weights.", "docname": "05_regularization"}]
    assert "show_doc(WeightDrop)" not in code_cells(nb)


def test_asis_markdown_that_is_not_show_doc_is_inserted_as_is():
    out = {"output_type": "display_data", "metadata": {}, "data": {"text/markdown": "## Results\n\n| a |\n|---|\n| 1 |"}}
    nb, entries = docs.adapt_notebook(nb_of(code("#| echo: false\n#| output: asis\nprint_table()", [out])), "x", CFG)
    assert srcs(nb)[-1] == "## Results\n\n| a |\n|---|\n| 1 |" and nb["cells"][-1]["cell_type"] == "markdown"
    assert entries == []


def test_quarto_options_become_tags(adapted):
    nb, _ = adapted
    cells = code_cells(nb)
    assert cells["print('shown without its code')"]["metadata"]["tags"] == ["remove-input"]
    assert "x = 3" in cells and "tags" not in cells["x = 3"]["metadata"]  # test flags are not tags
    assert not any("secret" in s for s in cells)
    assert not any("#|" in s for s in srcs(nb))
    assert "" not in cells


def test_nbdev_doc_links_point_at_labels(adapted):
    nb, _ = adapted
    s = next(x for x in srcs(nb) if x.startswith("## The idea"))
    assert "[`batchify`](#proj.data.batchify)" in s
    assert "`nothing`" in s and "data.html#nothing" not in s  # undocumented name: plain text
    assert "[paper](https://arxiv.org/abs/1708.02182)" in s


def test_nbdev_links_to_a_module_in_a_subfolder_point_at_its_labels():
    "nbdev's page of `proj.viz.dashboard` is `viz/dashboard.html`: its links go to the labels of that module."
    md_src = ("[`LiveDashboard`](https://org.github.io/proj/viz/dashboard.html#livedashboard) draws "
              "[`History`](https://org.github.io/proj/callbacks.html#history)")
    labels = {"proj.viz.dashboard.livedashboard": "proj.viz.dashboard.LiveDashboard",
              "proj.callbacks.history": "proj.callbacks.History"}
    assert docs.relink(md_src, CFG, labels) == ("[`LiveDashboard`](#proj.viz.dashboard.LiveDashboard) draws "
                                                "[`History`](#proj.callbacks.History)")


def test_widget_state_dropped_and_cell_ids_unique(adapted):
    nb, _ = adapted
    assert "widgets" not in nb["metadata"]
    ids = [c["id"] for c in nb["cells"]]
    assert len(ids) == len(set(ids)) == len(nb["cells"])
    json.dumps(nb)  # still plain JSON


# ------------------------------------------------------------------------------------------- GPU cells and solutions
def test_gpu_cell_shows_its_source_under_a_label():
    "A `#| gpu` cell (not run, no output) keeps its code, tagged `gpu`, right after a 'Runs on a GPU' label."
    nb, _ = docs.adapt_notebook(nb_of(md("# T"), code("#| gpu\nmodel.cuda().fit()"),
                                      code("#| gpu\ncheck()", [{"output_type": "stream", "name": "stdout",
                                                                "text": "no GPU here\n"}])), "x", CFG)
    i = next(i for i, c in enumerate(nb["cells"]) if c["source"] == "model.cuda().fit()")
    assert nb["cells"][i]["metadata"]["tags"] == ["gpu"] and nb["cells"][i]["outputs"] == []
    label = nb["cells"][i - 1]
    assert label["cell_type"] == "markdown" and "awd-gpu-label" in label["source"]
    assert "**Runs on a GPU**" in label["source"] and "not run for this page" in label["source"]
    j = next(i for i, c in enumerate(nb["cells"]) if c["source"] == "check()")
    assert "**Runs on a GPU**" in nb["cells"][j - 1]["source"] and "not run" not in nb["cells"][j - 1]["source"]


def test_solution_cell_folds_behind_show_solution():
    "A `#| solution` cell: code and output folded by myst-nb (hide-cell) behind 'Show solution'."
    out = {"output_type": "stream", "name": "stdout", "text": "42\n"}
    nb, _ = docs.adapt_notebook(nb_of(md("Exercise: print the answer."), code("#| solution\nprint(6 * 7)", [out])),
                                "x", CFG)
    cell = code_cells(nb)["print(6 * 7)"]
    assert cell["metadata"]["tags"] == ["hide-cell", "solution"]
    assert cell["metadata"]["mystnb"] == {"code_prompt_show": "Show solution", "code_prompt_hide": "Hide solution"}
    assert cell["outputs"] == [out]


def test_nbdev_test_runs_solution_cells_and_skips_gpu_cells(tmp_path):
    "nbdev_test's runner ignores the unknown `solution` directive (the cell runs) and skips the `gpu` flag."
    from nbdev.test import test_nb
    ran = tmp_path / "ran"
    nb = nb_of(md("# Exercise"), code(f"from pathlib import Path\nran = Path({str(ran)!r})\nran.mkdir()"),
               code("#| solution\n(ran / 'solution').write_text('ok')"),
               code("#| gpu\n(ran / 'gpu').write_text('ok')"))
    p = tmp_path / "exercise.ipynb"
    p.write_text(json.dumps(nb))
    ok, _ = test_nb(p, skip_flags=docs.settings()["tst_flags"].split())
    assert ok and (ran / "solution").is_file() and not (ran / "gpu").exists()


# ------------------------------------------------------------------------------------------- outputs
PLOTLY_FIG = {"data": [{"type": "heatmap", "z": [[0, 1], [1, 0]], "name": "</script><b>x"}],
              "layout": {"height": 380, "sliders": [{"steps": [{"method": "restyle", "args": ["visible", [True]]}]}]},
              "config": {"plotlyServerURL": "https://plot.ly"}}


def test_plotly_figure_drawn_by_local_plotly():
    loader = {"output_type": "display_data", "metadata": {},
              "data": {"text/html": '<script type="module">import "https://cdn.plot.ly/plotly-3.1.1.min"</script>'}}
    fig = {"output_type": "display_data", "metadata": {},
           "data": {docs.PLOTLY_MIME: PLOTLY_FIG,
                    "text/html": '<script src="https://cdn.plot.ly/plotly-3.1.1.min.js"></script><div>Plotly.newPlot</div>'}}
    nb, _ = docs.adapt_notebook(nb_of(md("# T"), code("fig.show()", [loader, fig])), "x", CFG)
    outs = nb["cells"][-1]["outputs"]
    assert len(outs) == 1 and list(outs[0]["data"]) == ["text/html"]
    h = outs[0]["data"]["text/html"]
    assert "cdn.plot.ly" not in h and "https://" not in h.replace("https://plot.ly", "")
    m = re.search(r'<div class="awd-plotly" id="(awd-plotly-\d+)".*?</div>\s*'
                  r'<script type="application/json" class="awd-plotly-data" data-target="\1">(.*)</script>', h, re.S)
    assert m, h
    assert "</script><b>" not in m.group(2)  # the JSON cannot close its script element
    assert json.loads(m.group(2).replace("<\\/", "</")) == PLOTLY_FIG
    assert "min-height:380px" in h


def test_plotly_ids_unique_within_page():
    fig = {"output_type": "display_data", "metadata": {}, "data": {docs.PLOTLY_MIME: PLOTLY_FIG}}
    nb, _ = docs.adapt_notebook(nb_of(code("a", [fig]), code("b", [fig, fig])), "x", CFG)
    html = "".join(o["data"]["text/html"] for c in nb["cells"] for o in c.get("outputs", []))
    ids = re.findall(r'id="(awd-plotly-\d+)"', html)
    assert len(ids) == 3 and len(set(ids)) == 3


def test_widget_output_becomes_note():
    w = {"output_type": "execute_result", "execution_count": 3, "metadata": {},
         "data": {docs.WIDGET_MIME: {"model_id": "abc", "version_major": 2, "version_minor": 0},
                  "text/plain": "VBox(children=...)"}}
    warn = {"output_type": "stream", "name": "stderr", "text": "session.py:727: UserWarning: Message serialization failed"}
    nb, _ = docs.adapt_notebook(nb_of(code("dropout_explorer()", [warn, w])), "02_dropout", CFG)
    assert len(nb["cells"][-1]["outputs"]) == 1  # the kernel's stderr about the widget is dropped with it
    out = nb["cells"][-1]["outputs"][0]
    assert list(out["data"]) == ["text/html"] and "awd-widget-note" in out["data"]["text/html"]
    assert nb["cells"][-1]["source"] == "dropout_explorer()"


def test_progress_bars_dropped_and_live_figures_noted():
    def w(plain):
        return {"output_type": "display_data", "metadata": {},
                "data": {docs.WIDGET_MIME: {"model_id": "m"}, "text/plain": plain}}
    bar, live = w(["train epoch 1:   0%|          | 0/3999 [00:00<?, ?row/s]"]), w(["FigureWidget({\n", "'data': []})"])
    stdout = {"output_type": "stream", "name": "stdout", "text": "epoch 1 done\n"}
    nb, _ = docs.adapt_notebook(nb_of(code("trainer.fit()", [bar, stdout]), code("live.figure", [live])), "08_train", CFG)
    assert nb["cells"][-2]["outputs"] == [stdout]
    assert "Live figure" in nb["cells"][-1]["outputs"][0]["data"]["text/html"]


def test_other_outputs_untouched():
    outs = [{"output_type": "stream", "name": "stdout", "text": "hi\n"},
            {"output_type": "error", "ename": "E", "evalue": "v", "traceback": []},
            {"output_type": "execute_result", "execution_count": 1, "metadata": {},
             "data": {"text/html": "<table></table>", "text/plain": "t"}}]
    nb, _ = docs.adapt_notebook(nb_of(code("x", outs)), "x", CFG)
    assert nb["cells"][-1]["outputs"] == outs


# ------------------------------------------------------------------------------------------- toc and API page
def test_index_gets_one_captioned_toctree_per_group():
    groups = [("Chapters", ["00_a", "08a_b"]), ("The pictures' code", ["viz/00_style"]), ("Reference", ["api"])]
    nb, _ = docs.adapt_notebook(nb_of(md("# Home")), "index", CFG, toc=groups)
    trees = [s for s in srcs(nb) if s.startswith("```{toctree}")]
    assert trees == srcs(nb)[-3:]
    for tree, (caption, pages) in zip(trees, groups):
        head, entries = tree.split("\n\n", 1)
        assert ":hidden:" in head and f":caption: {caption}" in head.split("\n")
        assert entries.split("\n")[:-1] == pages and entries.endswith("\n```")


def test_index_gets_hidden_toctree_in_reading_order():
    nb, _ = docs.adapt_notebook(nb_of(md("# Home")), "index", CFG, toc=["00_a", "01_b", "api"])
    last = srcs(nb)[-1]
    assert last.startswith("```{toctree}") and ":hidden:" in last
    assert last.split("\n\n", 1)[1].split("\n")[:3] == ["00_a", "01_b", "api"]


def test_api_page_links_every_entry():
    entries = [{"name": "WeightDrop", "label": "proj.weight_drop.WeightDrop", "module": "proj.weight_drop",
                "summary": "Apply DropConnect."},
               {"name": "WeightDrop.forward", "label": "proj.weight_drop.WeightDrop.forward",
                "module": "proj.weight_drop", "summary": ""}]
    page = docs.api_page({"01_weight_drop": entries, "index": []})
    assert page.startswith("# API reference")
    assert "## `proj.weight_drop`" in page and "{doc}`01_weight_drop`" in page
    assert "- [`WeightDrop`](#proj.weight_drop.WeightDrop): Apply DropConnect." in page
    assert "- [`WeightDrop.forward`](#proj.weight_drop.WeightDrop.forward)\n" in page
    assert "{doc}`index`" not in page  # a page with no API has no section


# ------------------------------------------------------------------------------------------- with nbdev
SCRATCH_EXPORTS = [
    "import sys\nif __name__ == '__main__':\n    sys.exit(2)  # a CLI's guard: never run while documenting",
    "from dataclasses import dataclass\n\n@dataclass\nclass Settings:\n    \"How to double.\"\n    factor: int = 2  # the multiplier",
    "def twice(x: int,  # the number\n          ) -> int:\n    \"Double `x`.\"\n    return 2 * x",
]


def test_nbdev_processing_then_adapter(tmp_path, monkeypatch):
    """nbdev's processing of a small chapter, then the adapter: front matter, hidden and export cells gone, the
    undocumented exports documented by show_doc from the exported module, a GPU cell kept."""
    (tmp_path / "scratch_mod.py").write_text("\n\n".join(SCRATCH_EXPORTS) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    src = nb_of(
        md("# Scratch chapter\n> The model's summary line: it is long enough for nbdev's YAML writer to fold it over "
           "two lines and quote it."),
        code("#| default_exp scratch"),
        code("#| hide\nfrom nbdev.showdoc import show_doc"),
        md("## Doubling"),
        *[code("#| export\n" + s) for s in SCRATCH_EXPORTS],
        code("assert twice(2) == 4"),
        code("#| gpu\ntwice(torch.ones(1, device='cuda'))"),
    )
    for i, c in enumerate(src["cells"]):
        c["id"] = f"c{i}"
    p = tmp_path / "99_scratch.ipynb"
    p.write_text(json.dumps(src))
    processed = docs.process(p, "scratch_mod")
    page, entries = docs.adapt_notebook(processed, "99_scratch", docs.settings(), module="awd_edu.scratch")
    s = srcs(page)
    assert s[0] == "# Scratch chapter" and s[1] == (":::{container} awd-summary\nThe model's summary line: it is long "
                                                    "enough for nbdev's YAML writer to fold it over two lines and quote it.\n:::")
    assert not any("show_doc" in x or "default_exp" in x or "#|" in x or "sys.exit" in x for x in s)
    assert [e["name"] for e in entries] == ["Settings", "twice"]  # nbdev documents both; the dataclass too
    assert entries[1]["summary"] == "Double `x`." and entries[0]["summary"] == "How to double."
    doc = next(x for x in s if "(awd_edu.scratch.twice)=" in x)
    assert "(awd_edu.scratch.twice)=\n### twice" in doc and "def twice(" in doc
    assert "assert twice(2) == 4" in s
    assert code_cells(page)["twice(torch.ones(1, device='cuda'))"]["metadata"]["tags"] == ["gpu"]


# ------------------------------------------------------------------------------------------- pages in a subfolder
def test_subfolder_pages(tmp_path, monkeypatch):
    """`prepare` on nbs/ with a chapter and a viz/ notebook: the viz page sits at `viz/NN_name`, downloads its own
    notebook by a path from the source root, documents its names against `lib_path.viz.name`, and is in the
    appendix of the home page's sidebar and in the API page."""
    import importlib.util
    import sys
    cfg = docs.settings()
    lib = cfg["lib_path"]
    mod_file = tmp_path / "scratch_viz.py"  # stands in for `{lib}.viz.scratch`, the module the notebook exports to
    mod_file.write_text("\n\n".join(SCRATCH_EXPORTS[1:]) + "\n")
    spec = importlib.util.spec_from_file_location(f"{lib}.viz.scratch", mod_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setitem(sys.modules, f"{lib}.viz.scratch", mod)
    nbs = tmp_path / "nbs"
    (nbs / "viz").mkdir(parents=True)
    pages = {"index": nb_of(md("# Home\n> The home page.")),
             "08a_sub": nb_of(md("# A sub-chapter\n> Between 08 and 09."), code("x = 1")),
             "viz/00_scratch": nb_of(md("# Scratch figures\n> The code of a picture."),
                                     code("#| default_exp viz.scratch"),
                                     code("#| hide\nfrom nbdev.showdoc import show_doc"), code("show_doc(twice)"))}
    for name, nb in pages.items():
        for i, c in enumerate(nb["cells"]):
            c["id"] = f"c{i}"
        (nbs / f"{name}.ipynb").write_text(json.dumps(nb))
    src = tmp_path / "src"
    assert docs.prepare(src, nbs, cfg) == ["index", "08a_sub", "viz/00_scratch"]
    assert docs.docname(nbs, nbs / "viz" / "00_scratch.ipynb") == "viz/00_scratch"
    assert docs.module_of(pages["viz/00_scratch"], cfg) == f"{lib}.viz.scratch"
    assert docs.module_of(pages["08a_sub"], cfg) is None
    # the page, and the notebook it downloads: the one in nbs/viz/
    assert (src / "_notebooks" / "viz" / "00_scratch.ipynb").read_bytes() == (nbs / "viz" / "00_scratch.ipynb").read_bytes()
    page = json.loads((src / "viz" / "00_scratch.ipynb").read_text())
    s = srcs(page)
    assert s[0] == "# Scratch figures"
    assert "{download}`Download the notebook </_notebooks/viz/00_scratch.ipynb>`" in s[2]
    doc = next(x for x in s if "### twice" in x)
    assert f"({lib}.viz.scratch.twice)=\n### twice" in doc and "Double `x`." in doc
    # the home page's sidebar: the appendix after the chapters, then the API page
    index = srcs(json.loads((src / "index.ipynb").read_text()))
    trees = [x for x in index if x.startswith("```{toctree}")]
    assert [":caption: Chapters" in trees[0], ":caption: The pictures' code" in trees[1], ":caption: Reference" in trees[2]] \
        == [True, True, True]
    assert trees[0].endswith("\n08a_sub\n```") and trees[1].endswith("\nviz/00_scratch\n```")
    api = (src / "api.md").read_text()
    assert f"## `{lib}.viz.scratch`" in api and "{doc}`viz/00_scratch`" in api
    assert f"- [`twice`](#{lib}.viz.scratch.twice): Double `x`." in api
