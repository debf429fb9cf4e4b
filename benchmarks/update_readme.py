"""Rebuild the "Latest figures" table of benchmarks/README.md from the JSON files in benchmarks/results/.

    python benchmarks/update_readme.py           # rewrite the table in place
    python benchmarks/update_readme.py --check   # exit 1 when the README is not in step with the JSON

The table sits between the two marker lines below; everything else in the README is left alone.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
RESULTS = HERE / "results"
START = "<!-- results table: made by benchmarks/update_readme.py from benchmarks/results/*.json; do not edit -->"
END = "<!-- end of results table -->"
ORDER = ("step_cost", "epoch_time", "ppl_budget")  # table rows in this order, then any other benchmark by name


def load_results(folder: Path = RESULTS) -> list:
    "Every recorded (non --tiny) result in `folder`, in table order."
    recs = []
    for path in sorted(Path(folder).glob("*.json")):
        if path.name.endswith("-next.json"):   # a study still growing, sitting by sitting (benchmarks/README)
            continue
        rec = json.loads(path.read_text())
        if rec.get("tiny"):
            continue
        rec["_file"] = path.name
        recs.append(rec)
    rank = {n: i for i, n in enumerate(ORDER)}
    return sorted(recs, key=lambda r: (rank.get(r["name"], len(ORDER)), r["name"], r["device"], r["device_name"]))


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _load(rec: dict) -> str:
    "The 1-minute load average before and after the run, against the core count: a busy machine shows here."
    before, after = rec.get("load_average_before"), rec.get("load_average_after")
    cores = (rec.get("device_details") or {}).get("cpu_count")
    if not before or not after:
        return "?"
    return f"{before[0]:g} → {after[0]:g}" + (f" on {cores} cores" if cores else "")


def render_table(recs: list) -> str:
    "The markdown table of `recs`: benchmark, device, figures, date, and the command that produced them."
    if not recs:
        return "_No figures recorded yet: run the commands above._"
    lines = ["| benchmark | device | figures | load | date | command |", "| --- | --- | --- | --- | --- | --- |"]
    for r in recs:
        device = f"{r['device_name']}, torch {r['torch_version']}"
        lines.append("| " + " | ".join([f"[{r['name']}](results/{r['_file']})", _cell(device), _cell(r["summary"]),
                                        _load(r), r["date"][:10], f"`{_cell(r['command'])}`"]) + " |")
    return "\n".join(lines)


def updated_readme(text: str, recs: list) -> str:
    "`text` with the block between the markers replaced by the table of `recs`."
    if START not in text or END not in text:
        raise SystemExit(f"{README} lacks the marker lines:\n{START}\n{END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{render_table(recs)}\n{END}{tail}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only check; exit 1 when the README is out of step")
    p.add_argument("--readme", default=str(README))
    p.add_argument("--results", default=str(RESULTS))
    args = p.parse_args(argv)
    readme = Path(args.readme)
    old = readme.read_text()
    new = updated_readme(old, load_results(Path(args.results)))
    if args.check:
        if old != new:
            print(f"{readme} is out of step with {args.results}: run `python benchmarks/update_readme.py`")
            return 1
        print(f"{readme} is in step with {args.results}")
        return 0
    if old != new:
        readme.write_text(new)
        print(f"updated {readme}")
    else:
        print(f"{readme} already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
