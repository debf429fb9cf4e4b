"""The layers: the core (every module of awd_edu/ but the command line and the pictures in awd_edu/viz/) imports no
plotting or widget library, even when they exist. The one test of it for every core module: the chapters' test files
do not repeat it."""
import subprocess
import sys
from pathlib import Path

import awd_edu

PKG = Path(awd_edu.__file__).parent
NOT_CORE = ("__init__", "__main__", "_modidx", "cli", "cli_evaluate")   # the front door and the command line (its reports)
CORE = tuple(sorted(p.stem for p in PKG.glob("*.py") if p.stem not in NOT_CORE))

BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("plotly", "ipywidgets", "anywidget"):
            raise ImportError(f"{name} is not available (blocked by the test)")
sys.meta_path.insert(0, Block())
"""


def test_the_core_is_every_module_but_the_command_line():
    assert {"model", "train", "ablations"} <= set(CORE) and not {"cli", "cli_evaluate"} & set(CORE) and len(CORE) >= 15


def test_every_core_module_imports_and_runs_without_plotly_or_ipywidgets():
    code = BLOCK + "import awd_edu\n" + "\n".join(f"import awd_edu.{m}" for m in CORE) + """
import torch
from awd_edu.model import AWDLSTM
out = AWDLSTM(20, 8, 16, 2)(torch.randint(0, 20, (5, 2)))
print(tuple(out.logits.shape), sorted(m for m in sys.modules if m.startswith(("plotly", "ipywidgets"))))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0] == "(5, 2, 20) []"


def test_the_blocker_really_blocks():
    r = subprocess.run([sys.executable, "-c", BLOCK + "import plotly"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "blocked by the test" in r.stderr


def test_core_source_never_names_plotly_or_ipywidgets():
    for m in CORE:
        text = (PKG / f"{m}.py").read_text()
        assert "plotly" not in text and "ipywidgets" not in text, f"awd_edu/{m}.py names a plotting library"


def test_every_module_is_at_most_about_400_lines():
    long = {p.name: n for p in PKG.rglob("*.py") if p.name != "_modidx.py"
            for n in [len(p.read_text().splitlines())] if n > 440}
    assert not long, f"modules over ~400 lines: {long}"
