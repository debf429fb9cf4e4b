"""A notebook cell's leading `#|` directive lines, read once for every tool here (run_nb.py, make_readme.py, docs.py).

The reading is nbdev's own (`nbdev.process.extract_directives`, what `nbdev_export`, `nbdev_test` and nbdev's docs
processing use), so a tool never disagrees with nbdev about `#| export`, `#| hide`, `#| slow` or `#| eval: false`.
As nbdev has it: a flag is a key with no arguments (`{'slow': []}`); a Quarto option keeps its colon
(`{'eval:': ['false']}`); only the lines before the cell's first line of code count.
"""
from __future__ import annotations

from fastcore.basics import AttrDict
from nbdev.process import extract_directives, first_code_ln


def split_directives(source: str) -> tuple[dict, str]:
    "A code cell's leading `#|` lines as nbdev reads them (`{'echo:': ['false'], 'gpu': []}`), and the code after them."
    lines, start = source.splitlines(True), first_code_ln(source.splitlines(True))
    return extract_directives(AttrDict(source=source), remove=False), "".join(lines[start:] if start is not None else [])


def directives(source: str) -> dict:
    "Only the directives of `split_directives`."
    return split_directives(source)[0]


def option(directives: dict, name: str) -> str | None:
    "A Quarto option's value, lower case and unquoted (`option(d, 'eval')` is `'false'` for `#| eval: false`), or None."
    if f"{name}:" not in directives:
        return None
    return " ".join(directives[f"{name}:"]).strip("'\"").lower()
