"""tools/: one reading of a cell's `#|` directive lines (tools/cell_directives.py, nbdev's own parser) shared by
run_nb.py, make_readme.py and docs.py, so the three never disagree with nbdev or with each other."""
import json
import re
from pathlib import Path

import pytest

from repo_tools import load_tool

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"


cd, run_nb, make_readme = load_tool("cell_directives"), load_tool("run_nb"), load_tool("make_readme")


@pytest.mark.parametrize("source, skipped", [
    ("#| slow\nx = 1", True), ("#|slow\nx = 1", True), ("#| export\n#| gpu\nx = 1", True),
    ("#| eval: false\nx = 1", True), ("#| eval:false\nx = 1", True), ("#| eval: False\nx = 1", True),
    ("#| hide\nx = 1", False), ("#| export\nx = 1", False), ("x = 1\n#| slow", False),   # after code: not a directive
    ("#| eval: true\nx = 1", False), ("# slow\nx = 1", False)])
def test_run_nb_skips_what_nbdev_test_skips(source, skipped):
    assert run_nb.skipped_by_nbdev_test(source, {"slow", "gpu"}) is skipped


def test_directives_and_the_code_after_them_as_nbdev_reads_them():
    d, code = cd.split_directives("#| export\n#| echo: false\n\nimport torch\n#| hide\n")
    assert d == {"export": [], "echo:": ["false"]} and code == "import torch\n#| hide\n"
    assert cd.option(d, "echo") == "false" and cd.option(d, "eval") is None
    assert cd.option(cd.directives("#| code-fold: 'true'\nx"), "code-fold") == "true"


def test_the_readme_leaves_out_hidden_cells_and_shows_code_without_its_directives(tmp_path):
    cells = [("#| hide\nsecret = 1", "h"), ("#| export\ndef f(): pass", "e"), ("#|echo: false\nprint(2)", "q"),
             ("#| include: false\nprint(3)", "i"), ("#| code-fold: true\nshown = 4", "s")]
    nb = {"cells": [{"cell_type": "code", "source": s, "outputs": [], "metadata": {}, "id": i, "execution_count": None}
                    for s, i in cells], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "index.ipynb").write_text(json.dumps(nb))
    out = make_readme.render(tmp_path / "index.ipynb")
    assert "```python\nshown = 4\n```" in out
    assert not any(w in out for w in ("secret", "def f", "print(2)", "print(3)", "#|"))


@pytest.mark.parametrize("tool", ["run_nb.py", "make_readme.py", "docs.py"])
def test_no_tool_parses_directives_itself(tool):
    text = (TOOLS / tool).read_text()
    assert "from cell_directives import" in text
    assert not re.search(r"""startswith\(\s*["']#\|""", text) and "extract_directives" not in text
