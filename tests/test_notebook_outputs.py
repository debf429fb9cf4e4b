"""The saved outputs of every notebook are what a reader should see: no tracebacks, no warnings on stderr, no local
paths, no development notes, no stray return values (a bare number such as `write_text`'s count of characters), no
docstring a method inherited from its base class (nn.Module's "Define the computation performed at every call")
(the docs site shows these outputs as they are). The records committed under benchmarks/results/ hold no absolute
path of the machine that made them."""
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "nbs").rglob("*.ipynb"))
LOCAL_PATH = re.compile(r"(/work/|/home/[^/\s]+/|/root/|/tmp/|/Users/[^/\s]+/|[A-Z]:\\\\Users\\\\)")
DEV_WORDS = re.compile(r"\b(TODO|FIXME|XXX|issue #?\d+|a later issue)\b", re.I)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# An expression's value left at the end of a cell, not a result anyone asked for: a bare number (`Path.write_text`
# returns the count it wrote), None, a path object.
STRAY_VALUE = re.compile(r"^(-?\d+(\.\d+)?|None|(Posix|Windows)?Path\(.*\))$")
# Docstrings a method inherits when it has none of its own (show_doc then shows the base class's words).
BOILERPLATE = re.compile(r"Define the computation performed at every call|Should be overridden by all subclasses|"
                         r"Initialize self\.\s+See help\(type\(self\)\)|Return repr\(self\)")
WIDGET_MIME, PLOTLY_MIME = "application/vnd.jupyter.widget-view+json", "application/vnd.plotly.v1+json"
PROGRESS = re.compile(r"\d+%\|")   # tqdm's bar: "  0%|          | 0/210"
RECORDS = sorted((ROOT / "benchmarks" / "results").glob("*.json"))


def outputs(nb_path):
    "(cell index, kind, text) for every text output of the notebook."
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            kind = out["output_type"]
            if kind == "stream":
                yield i, out["name"], "".join(out["text"])
            elif kind == "error":
                yield i, "error", out.get("ename", "") + ": " + out.get("evalue", "")
            else:
                data = out.get("data", {})
                yield i, kind, "".join(data.get("text/plain", ""))
                if "text/markdown" in data:                            # show_doc's page: the docstring as shown
                    yield i, "markdown", "".join(data["text/markdown"])


def widget_problems(nb: dict) -> list:
    "Saved progress bars (widgets or text), and live figures with no static copy in the same or the next cell."
    problems, cells = [], nb["cells"]
    for i, cell in enumerate(cells):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            plain, stream = "".join(data.get("text/plain", "")), "".join(out.get("text", ""))
            if PROGRESS.search(stream) or (WIDGET_MIME in data and PROGRESS.search(plain)):
                problems.append(f"cell {i}: a saved progress bar {(plain or stream).strip()[:60]!r} (progress=False)")
            elif WIDGET_MIME in data and plain.lstrip().startswith("FigureWidget("):
                near = [o for c in cells[i:i + 2] for o in c.get("outputs", [])]
                if not any(PLOTLY_MIME in o.get("data", {}) for o in near):
                    problems.append(f"cell {i}: a live figure (FigureWidget) with no static copy beside it: it is "
                                    f"empty on the docs site and in a notebook opened without a kernel")
    return problems


def test_there_are_notebooks_to_scan():
    assert len(NOTEBOOKS) >= 14


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT / "nbs")))
def test_saved_outputs_are_clean(nb_path):
    problems = []
    for i, kind, text in outputs(nb_path):
        plain = ANSI.sub("", text)
        if kind == "error" or "Traceback (most recent call last)" in plain:
            problems.append(f"cell {i}: a traceback or error output")
        if kind == "stderr" and re.search(r"warn", plain, re.I):
            problems.append(f"cell {i}: a warning on stderr: {plain.strip()[:120]!r}")
        for m in LOCAL_PATH.finditer(plain):
            problems.append(f"cell {i}: a local path {plain[max(0, m.start() - 20):m.end() + 30]!r}")
        for m in DEV_WORDS.finditer(plain):
            problems.append(f"cell {i}: a development note {m.group(0)!r}")
        if kind == "execute_result" and STRAY_VALUE.match(plain.strip()):
            problems.append(f"cell {i}: a stray return value {plain.strip()[:60]!r} (end the line with `;` or assign it)")
        for m in BOILERPLATE.finditer(plain):
            problems.append(f"cell {i}: an inherited boilerplate docstring {m.group(0)!r} (give the method its own)")
    problems += widget_problems(json.loads(nb_path.read_text(encoding="utf-8")))
    assert not problems, f"{nb_path.name}:\n" + "\n".join(problems)


def test_the_scan_finds_what_it_looks_for(tmp_path):
    "The checks above can fail: a notebook with each kind of problem is caught."
    bad = {"cells": [{"cell_type": "code", "source": "", "metadata": {}, "outputs": [
        {"output_type": "stream", "name": "stderr", "text": "UserWarning: careful\n"},
        {"output_type": "stream", "name": "stdout", "text": "saved to /work/main/runs/x\nTODO: later\n"},
        {"output_type": "error", "ename": "ValueError", "evalue": "boom", "traceback": []},
        {"output_type": "display_data", "metadata": {}, "data": {WIDGET_MIME: {"model_id": "a"},
                                                                "text/plain": "train epoch 1:   0%|   | 0/210"}},
        {"output_type": "execute_result", "metadata": {}, "data": {WIDGET_MIME: {"model_id": "b"},
                                                                  "text/plain": "FigureWidget({'data': []})"}}]}]}
    path = tmp_path / "bad.ipynb"
    path.write_text(json.dumps(bad))
    with pytest.raises(AssertionError) as e:
        test_saved_outputs_are_clean(path)
    msg = str(e.value)
    assert "warning on stderr" in msg and "local path" in msg and "development note" in msg and "traceback" in msg
    assert "saved progress bar" in msg and "live figure" in msg
    bad["cells"].append({"cell_type": "code", "source": "", "metadata": {}, "outputs": [   # its static copy after it
        {"output_type": "display_data", "metadata": {}, "data": {PLOTLY_MIME: {"data": []}, "text/plain": ""}}]})
    assert not any("live figure" in p for p in widget_problems(bad))


def _one_output_notebook(tmp_path, out):
    path = tmp_path / "one.ipynb"
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "source": "", "metadata": {}, "outputs": [out]}]}))
    return path


@pytest.mark.parametrize("out, problem", [
    ({"output_type": "execute_result", "data": {"text/plain": "601"}, "metadata": {}}, "stray return value"),
    ({"output_type": "execute_result", "data": {"text/plain": "PosixPath('runs/x')"}, "metadata": {}},
     "stray return value"),
    ({"output_type": "execute_result", "metadata": {}, "data": {
        "text/plain": "def forward(\n    input\n):\n\"\"\"Define the computation performed at every call.\"\"\"",
        "text/markdown": "### forward\n\n>      forward (input)\n\n*Define the computation performed at every call.*"}},
     "inherited boilerplate docstring"),
    ({"output_type": "execute_result", "metadata": {}, "data": {
        "text/markdown": "*Should be overridden by all subclasses.*", "text/plain": "<nbdev.showdoc.BasicMarkdownRenderer>"}},
     "inherited boilerplate docstring"),
])
def test_the_scan_finds_stray_values_and_inherited_docstrings(tmp_path, out, problem):
    "A bare number or path left as a cell's value, and a base class's docstring under show_doc, fail the scan."
    with pytest.raises(AssertionError, match=problem):
        test_saved_outputs_are_clean(_one_output_notebook(tmp_path, out))


@pytest.mark.parametrize("out", [
    {"output_type": "execute_result", "data": {"text/plain": "VBox(children=(FloatSlider(value=3.0),))"}, "metadata": {}},
    {"output_type": "stream", "name": "stdout", "text": "601 characters written\n"},
    {"output_type": "execute_result", "metadata": {}, "data": {
        "text/plain": "def forward(\n    input\n):\n\"\"\"Logits, the new state and each layer's outputs.\"\"\"",
        "text/markdown": "*Logits, the new state and each layer's outputs.*"}},
])
def test_the_scan_passes_what_a_reader_should_see(tmp_path, out):
    "A widget, a number printed in a sentence, and a method's own docstring are fine."
    test_saved_outputs_are_clean(_one_output_notebook(tmp_path, out))


def _strings(obj, where="$"):
    "(JSON path, text) of every key and string value in a parsed JSON document."
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f"{where}.{k}", str(k)
            yield from _strings(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for n, v in enumerate(obj):
            yield from _strings(v, f"{where}[{n}]")
    elif isinstance(obj, str):
        yield where, obj


def test_there_are_records_to_scan():
    assert len(RECORDS) >= 5


@pytest.mark.parametrize("record", RECORDS, ids=lambda p: p.name)
def test_committed_records_hold_no_absolute_path(record):
    "A record is read on other machines: a path in it is relative to the repository, or named (`<reference checkout>`)."
    found = [f"{where}: {text[max(0, m.start() - 20):m.end() + 30]!r}"
             for where, text in _strings(json.loads(record.read_text(encoding="utf-8")))
             for m in LOCAL_PATH.finditer(text)]
    assert not found, f"{record.name} holds absolute paths of the machine that made it:\n" + "\n".join(found[:10])


@pytest.mark.parametrize("path", ["/work/main/runs/ablations/full/seed-1", "/tmp/awd-lstm-lm", "/home/ann/data/ptb",
                                  "/root/.cache/awd_edu/ptb"])
def test_the_record_scan_finds_an_absolute_path(tmp_path, path):
    "The check above can fail: a record with an absolute path, as a value or inside a command, is caught."
    for rec in ({"results": {"runs": [{"variant": "full", "run_dir": path}]}},
                {"command": f"python benchmarks/fidelity.py --worker {path}/x.json"}):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(rec))
        with pytest.raises(AssertionError, match="absolute paths"):
            test_committed_records_hold_no_absolute_path(bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"run_dir": "runs/ablations/full/seed-1", "path": "<reference checkout>"}))
    test_committed_records_hold_no_absolute_path(good)


def test_the_ablation_study_records_run_dir_relative_to_the_repository(monkeypatch, tmp_path):
    "benchmarks/ablations.py writes each run's folder relative to the repository (or to its work dir when outside it)."
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import ablations as runner
    from awd_edu.config import TrainConfig
    monkeypatch.setattr(runner, "run_ablation", lambda config, run_dir: {"best_valid_ppl": 1.0})
    task = dict(variant="full", seed=1, threads=1, config=TrainConfig.from_preset("tiny").to_dict())
    inside = runner._run_one(dict(task, run_dir=str(ROOT / "runs" / "ablations" / "full" / "seed-1")))
    outside = runner._run_one(dict(task, run_dir=str(tmp_path / "full" / "seed-1")))
    assert inside["run_dir"] == "runs/ablations/full/seed-1" and inside["best_valid_ppl"] == 1.0
    assert outside["run_dir"] == "<work-dir>/full/seed-1"
    assert not LOCAL_PATH.search(json.dumps([inside, outside]))
