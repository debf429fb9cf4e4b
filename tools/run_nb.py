"""Execute notebooks in place and keep their outputs, the way `nbdev_test` decides what runs.

Cells flagged with one of settings.ini's `tst_flags` (`#| slow`, `#| gpu`) are skipped (their outputs are left as
they were) unless named with `--flags`; cells marked `#| eval: false` are never run, as `nbdev_test` never runs them
(e.g. chapter 11's `if __name__ == "__main__"` guard, which a kernel, whose `__name__` is "__main__", would execute). Widget state is not stored: a plotly FigureWidget would otherwise save its
whole JavaScript bundle into the notebook. Every notebook gets the `python3` kernelspec, so JupyterLab, Binder and
Colab open it without asking.

    python tools/run_nb.py nbs/08_train.ipynb                # skip slow and gpu cells
    python tools/run_nb.py nbs/08_train.ipynb --flags slow   # also run the slow cells
Then `nbdev_clean` and `nbdev_export`, as CONTRIBUTING.md says.
"""
import argparse
import configparser
import copy
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cell_directives import directives, option   # noqa: E402  tools/: the one reading of `#|` lines

ROOT = Path(__file__).resolve().parent.parent
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def skipped_by_nbdev_test(source: str, skip: set) -> bool:
    "Would `nbdev_test` skip this code cell: a flag in `skip` among its directives, or `#| eval: false`?"
    d = directives(source)
    return bool(skip & d.keys()) or option(d, "eval") == "false"


def run_notebook(path, force_flags=(), timeout=1800) -> list:
    "Execute `path` in place, skipping cells flagged with a tst_flag not in `force_flags`; return skipped indices."
    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini")
    skip = set(cfg["DEFAULT"]["tst_flags"].split()) - set(force_flags)
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = KERNELSPEC
    run = copy.deepcopy(nb)
    skipped = [i for i, c in enumerate(run.cells)
               if c.cell_type == "code" and skipped_by_nbdev_test(c.source, skip)]
    for i in skipped:
        run.cells[i].source = "pass"
    NotebookClient(run, timeout=timeout, kernel_name="python3", store_widget_state=False,
                   resources={"metadata": {"path": str(Path(path).resolve().parent)}}).execute()
    for i, (cell, done) in enumerate(zip(nb.cells, run.cells)):
        if cell.cell_type == "code" and i not in skipped:
            cell.outputs, cell.execution_count = done.outputs, done.execution_count
    nbformat.write(nb, path)
    return skipped


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="+")
    ap.add_argument("--flags", default="", help="space-separated flags whose cells should run too, e.g. 'slow'")
    args = ap.parse_args()
    for path in args.notebooks:
        skipped = run_notebook(path, args.flags.split())
        print(f"{path}: executed" + (f", skipped flagged cells {skipped}" if skipped else ""))


if __name__ == "__main__":
    main()
