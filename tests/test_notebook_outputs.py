"""The saved outputs of every notebook are what a reader should see: no tracebacks, no warnings on stderr, no local
paths, no development notes (the docs site shows these outputs as they are)."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "nbs").rglob("*.ipynb"))
LOCAL_PATH = re.compile(r"(/work/|/home/[^/\s]+/|/root/|/tmp/|/Users/[^/\s]+/|[A-Z]:\\\\Users\\\\)")
DEV_WORDS = re.compile(r"\b(TODO|FIXME|XXX|issue #?\d+|a later issue)\b", re.I)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


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
                yield i, kind, "".join(out.get("data", {}).get("text/plain", ""))


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
    assert not problems, f"{nb_path.name}:\n" + "\n".join(problems)


def test_the_scan_finds_what_it_looks_for(tmp_path):
    "The checks above can fail: a notebook with each kind of problem is caught."
    bad = {"cells": [{"cell_type": "code", "source": "", "metadata": {}, "outputs": [
        {"output_type": "stream", "name": "stderr", "text": "UserWarning: careful\n"},
        {"output_type": "stream", "name": "stdout", "text": "saved to /work/main/runs/x\nTODO: later\n"},
        {"output_type": "error", "ename": "ValueError", "evalue": "boom", "traceback": []}]}]}
    path = tmp_path / "bad.ipynb"
    path.write_text(json.dumps(bad))
    with pytest.raises(AssertionError) as e:
        test_saved_outputs_are_clean(path)
    msg = str(e.value)
    assert "warning on stderr" in msg and "local path" in msg and "development note" in msg and "traceback" in msg
