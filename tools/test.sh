#!/usr/bin/env bash
# The whole test suite, in the order a contributor needs the answers:
# the package matches the notebooks, the notebooks are clean, the notebooks run, the tests pass.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}

echo "== awd_edu/ in sync with nbs/, notebooks clean"
"$BIN/python" tools/check_sync.py

echo "== README.md in step with nbs/index.ipynb"
"$BIN/python" tools/make_readme.py --check

echo "== nbdev_test (cells flagged gpu or slow are skipped: settings.ini tst_flags)"
# Two notebooks run at once on two cores: one torch thread each avoids oversubscription.
OMP_NUM_THREADS=1 "$BIN/nbdev_test" --n_workers 2 --timing

echo "== pytest"
set +e
"$BIN/python" -m pytest -q
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi
exit "$rc"
