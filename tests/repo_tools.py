"""The repository's own scripts under `tools/`, imported by path (they are scripts, not a package) for the tests
that check them."""
import importlib.util
from pathlib import Path

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def load_tool(name: str):
    "The module `tools/<name>.py`, freshly executed."
    spec = importlib.util.spec_from_file_location(f"awd_tool_{name}", TOOLS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
