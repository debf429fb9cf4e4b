"""The project's own promises: environment.yml matches settings.ini, README matches index.ipynb, metadata is whole."""
import ast
import configparser
import importlib
import importlib.util
import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge/pytorch channel name, where they differ


def settings():
    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini")
    return cfg["DEFAULT"]


def split_req(req):
    m = re.match(r"^([A-Za-z0-9_.\-]+)(.*)$", req.strip())
    return m.group(1).lower(), m.group(2).strip()


def env_yml_entries():
    "The `- name spec` lines of environment.yml: (conda dependencies, pip dependencies)."
    conda, pip, in_pip = {}, {}, False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if re.match(r"^\s+- pip:\s*$", line):
            in_pip = True
            continue
        m = re.match(r"^(\s+)- ([^#]+?)\s*(#.*)?$", line)
        if not m:
            continue
        if in_pip and len(m.group(1)) <= 2:
            in_pip = False
        name, spec = split_req(m.group(2)) if not m.group(2).startswith("-e") else ("-e", m.group(2))
        (pip if in_pip else conda)[name] = spec
    return conda, pip


def test_environment_yml_lists_every_runtime_and_dev_requirement_with_the_same_bounds():
    conda, pip = env_yml_entries()
    for req in settings()["requirements"].split() + settings()["viz_requirements"].split():
        name, spec = split_req(req)
        conda_name = CONDA_NAMES.get(name, name)
        assert conda_name in conda, f"environment.yml lacks {conda_name} (settings.ini requires {req})"
        assert conda[conda_name] == spec, f"{conda_name}: environment.yml says {conda[conda_name]!r}, settings.ini {spec!r}"
    for req in settings()["dev_requirements"].split():
        name, spec = split_req(req)
        where = pip if "==" in spec else conda  # exact pins go through pip, as nbdev's set needs
        assert where.get(name) == spec, f"environment.yml: {name} should be {spec!r}, found {where.get(name)!r}"
    for key in ("docs_requirements", "browser_requirements"):
        for req in settings().get(key, "").split():
            name, spec = split_req(req)
            assert (pip.get(name) or conda.get(name)) == spec, f"environment.yml: {name} should be {spec!r}"
    assert "-e" in pip, "environment.yml must install the project itself (pip: - -e .)"
    python = settings()["min_python"]
    assert conda["python"] == f">={python}"


def test_torch_bound_admits_2_13_0():
    from packaging.specifiers import SpecifierSet
    spec = dict(split_req(r) for r in settings()["requirements"].split())["torch"]
    assert "2.13.0" in SpecifierSet(spec)


def test_readme_is_made_from_index_notebook():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "make_readme.py"), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and re.search(r"^exec make test\s*$", ci, re.M)


def test_nbdev_test_skips_the_cells_flagged_in_tst_flags(tmp_path):
    "A cell flagged with one of settings.ini's tst_flags is skipped by nbdev_test; an unflagged failing cell fails."
    from nbdev.test import test_nb
    flags = settings()["tst_flags"].split()
    assert {"gpu", "slow"} <= set(flags)
    def nb(*sources):
        cells = [{"cell_type": "code", "source": s, "metadata": {}, "outputs": [], "execution_count": None}
                 for s in sources]
        path = tmp_path / f"nb{len(list(tmp_path.iterdir()))}.ipynb"
        path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
        return path
    ok, _ = test_nb(nb("x = 1", "#| slow\nraise RuntimeError('a slow cell ran')",
                       "#| gpu\nraise RuntimeError('a gpu cell ran')"), skip_flags=flags, do_print=False)
    assert ok
    ok, _ = test_nb(nb("raise RuntimeError('an ordinary cell must run')"), skip_flags=flags, do_print=False)
    assert not ok


def _module_of(nb_path):
    m = re.search(r"#\|\s*default_exp\s+([\w.]+)", nb_path.read_text())
    return m.group(1) if m else None


def test_every_module_is_made_by_exactly_one_notebook_and_back():
    made = {}
    for nb in sorted((ROOT / "nbs").rglob("*.ipynb")):
        mod = _module_of(nb)
        if mod:
            assert mod not in made, f"{mod} is exported by {made.get(mod)} and {nb.name}"
            made[mod] = nb
            path = ROOT / "awd_edu" / (mod.replace(".", "/") + ".py")
            assert path.is_file(), f"{nb.name} exports {mod}, but {path} is missing (run nbdev_export)"
            assert f"File to edit: ../{'../' * mod.count('.')}nbs/{nb.relative_to(ROOT / 'nbs')}" in path.read_text()
    generated = {str(p.relative_to(ROOT / "awd_edu"))[:-3].replace("/", ".") for p in (ROOT / "awd_edu").rglob("*.py")
                 if p.name not in ("__init__.py", "_modidx.py", "__main__.py")}
    assert generated == set(made), f"modules without a notebook: {sorted(generated - set(made))}"
    assert {"lstm", "weight_drop", "dropout", "data", "bptt", "regularization", "model", "ntasgd", "loop", "config",
            "checkpoint", "callbacks", "train", "generate", "cache", "cli"} <= set(made)


def test_every_notebook_names_its_kernel():
    for nb in sorted((ROOT / "nbs").rglob("*.ipynb")):
        ks = json.loads(nb.read_text())["metadata"].get("kernelspec", {})
        assert ks.get("name") == "python3", f"{nb.name}: no python3 kernelspec (run it with tools/run_nb.py)"


def test_binder_installs_the_package_with_its_pictures_and_the_same_torch_bound():
    lines = [l.strip() for l in (ROOT / "binder" / "requirements.txt").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    torch_req = [r for r in settings()["requirements"].split() if r.startswith("torch")][0]
    assert torch_req in lines and "-e .[viz]" in lines
    assert settings()["viz_requirements"].split(), "the viz extra must name the faces' packages"


def awd_edu_modules():
    "Every module of the package (core and pictures), by name, without the notebook index `_modidx`."
    import awd_edu
    return sorted(m.name for m in pkgutil.walk_packages(awd_edu.__path__, "awd_edu.") if m.name != "awd_edu._modidx")


def test_every_name_in_all_and_every_function_a_module_defines_is_a_real_object():
    "`__all__` promises real objects, and a decorator that attaches a function to a class must hand it back (not None)."
    if importlib.util.find_spec("plotly") is None:
        pytest.skip("the viz modules need plotly")
    missing = []
    for name in awd_edu_modules():
        module = importlib.import_module(name)
        defined = [node.name for node in ast.parse(Path(module.__file__).read_text()).body
                   if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        for export in [*getattr(module, "__all__", []), *defined]:
            if getattr(module, export, None) is None:
                missing.append(f"{name}.{export}")
    assert not missing, f"names that are missing or None at module level: {missing}"


def test_no_module_imports_a_name_it_does_not_use():
    pytest.importorskip("pyflakes")
    files = [str(p) for p in sorted((ROOT / "awd_edu").rglob("*.py")) if p.name != "_modidx.py"]
    out = subprocess.run([sys.executable, "-m", "pyflakes", *files], capture_output=True, text=True).stdout
    unused = [line for line in out.splitlines() if "imported but unused" in line]
    assert not unused, "unused imports (delete them, or list a re-export in __all__):\n" + "\n".join(unused)
