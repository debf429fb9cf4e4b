"""Write README.md from nbs/index.ipynb (Quarto's nbdev_readme cannot run here), or check it is in step.

Markdown cells are copied as they are; code cells that are not hidden become Python blocks followed by
their plain-text output. `--check` exits 1 when README.md differs from what the notebook gives.
"""
import argparse, json, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cell_directives import option, split_directives   # noqa: E402  tools/: the one reading of `#|` lines

root = Path(__file__).resolve().parent.parent
HEADER = "<!-- Made from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->\n\n"


def _hidden(directives):
    "Is a cell with these directives left out of the README (nbdev hides it from the docs too)?"
    return (bool({"hide", "exporti", "export"} & directives.keys()) or option(directives, "echo") == "false"
            or option(directives, "include") == "false")


def _text_output(cell):
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append("".join(o["text"]))
        elif "text/plain" in o.get("data", {}) and not any(k.startswith(("text/html", "application/vnd")) for k in o["data"]):
            out.append("".join(o["data"]["text/plain"]))
    return "".join(out).rstrip("\n")


def render(nb_path=root / "nbs" / "index.ipynb"):
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    parts = [HEADER]
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            parts.append(src.strip() + "\n\n")
        elif cell["cell_type"] == "code" and src.strip() and not _hidden(split_directives(src)[0]):
            code = split_directives(src)[1]
            parts.append(f"```python\n{code.strip()}\n```\n\n")
            text = _text_output(cell)
            if text:
                parts.append(f"```\n{text}\n```\n\n")
    return "".join(parts).rstrip("\n") + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md is not what index.ipynb gives")
    args = ap.parse_args()
    want, readme = render(), root / "README.md"
    if args.check:
        if not readme.exists() or readme.read_text(encoding="utf-8") != want:
            print("README.md is out of step with nbs/index.ipynb: run `python tools/make_readme.py`.")
            sys.exit(1)
        print("README.md matches nbs/index.ipynb.")
    else:
        readme.write_text(want, encoding="utf-8")
        print(f"wrote {readme}")


if __name__ == "__main__":
    main()
