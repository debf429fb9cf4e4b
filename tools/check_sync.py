"""Fail when `awd_edu/` differs from what `nbdev_export` makes of `nbs/`, or when a notebook is not clean.

Works on a scratch copy of the tracked (and untracked, not ignored) files, so the tree is never modified.
"""
import filecmp, shutil, subprocess, sys, tempfile
from pathlib import Path

root = Path(__file__).resolve().parent.parent
bin_dir = Path(sys.executable).parent


def files_in_tree():
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                         cwd=root, check=True, capture_output=True).stdout
    return [f for f in out.decode().split("\0") if f and (root / f).is_file()]


def main():
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for f in files_in_tree():
            (tmp / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / f, tmp / f)
        for cmd in ("nbdev_export", "nbdev_clean"):
            subprocess.run([str(bin_dir / cmd)], cwd=tmp, check=True)
        for d in ("awd_edu", "nbs"):
            ours = {p.relative_to(root) for p in (root / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
            theirs = {p.relative_to(tmp) for p in (tmp / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
            for rel in sorted(theirs - ours):
                problems.append(f"{rel}: made by nbdev_export but missing from the tree")
            for rel in sorted(ours & theirs):
                if not filecmp.cmp(root / rel, tmp / rel, shallow=False):
                    what = "not clean (run nbdev_clean)" if d == "nbs" else "differs from its notebook (run nbdev_export)"
                    problems.append(f"{rel}: {what}")
    if problems:
        print("The package and the notebooks disagree. Edit the notebook, run nbdev_export and nbdev_clean, commit both:")
        print("\n".join("  " + p for p in problems))
        sys.exit(1)
    print("awd_edu/ matches nbs/, and every notebook is clean.")


if __name__ == "__main__":
    main()
