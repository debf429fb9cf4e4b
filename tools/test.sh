#!/usr/bin/env bash
# The whole test suite, in the order a contributor needs the answers: the data is there, the package matches the
# notebooks, the notebooks are clean, the notebooks run, the tests pass.
#
#   tools/test.sh              everything (`make test`, what CI runs)
#   tools/test.sh --fast       the data, the sync checks and `pytest -m "not slow"`: no notebooks, no Sphinx build,
#                              no browser, no long trainer run on PTB (`make test-fast`, the edit loop: a few minutes)
#   tools/test.sh --data-only  only the first step: make sure Penn Treebank is there
#   tools/test.sh --browser-only  only make sure Chromium is there for the browser tests
#
# Penn Treebank comes first: `awd-edu data download` checks the files under $AWD_EDU_DATA/ptb (else the per-user
# cache) and fetches only what is missing or damaged, so with valid files it is a no-op that needs no network.
# Without the files and without a network it fails here, in seconds, with the fix. AWD_EDU_PTB_MIRRORS
# (space-separated URLs) replaces the default mirrors; AWD_EDU_DOWNLOAD_TIMEOUT (seconds, default 15) is how long
# a silent mirror is waited for.
#
# What is slow (pyproject.toml's `slow` marker): the Sphinx builds and the browser tests, JupyterLab, trainer runs on
# PTB beyond a few thousand tokens, the benchmark scripts. `make test` runs every test; nothing is skipped there.
#
# The browser tests (tests/test_*_browser.py, slow) drive Debian's Chromium through Playwright. When it is missing, it is
# installed with apt-get (as root, or through `sudo -n`), as on a fresh machine or in CI; when that is not possible the
# script says so loudly and fails at the end (the browser tests fail too), never silently.
#
# A failing step does not stop the later ones (pytest runs even when a notebook fails); the script fails at the end
# if any step failed, and says which. Only a missing dataset stops it at once: every later step needs the data.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
MODE=all
case "${1:-}" in
  "") ;;
  --fast) MODE=fast ;;
  --data-only) MODE=data ;;
  --browser-only) MODE=browser ;;
  *) echo "usage: tools/test.sh [--fast | --data-only | --browser-only]" >&2; exit 2 ;;
esac

browser() {   # Chromium for the browser tests: found, or installed with apt-get; else a loud line and a failure
  local exe
  exe=$(command -v chromium || command -v chromium-browser || true)
  if [ -n "$exe" ]; then echo "Chromium: $exe"; return 0; fi
  echo "Chromium is missing (the browser tests need it): installing it with apt-get"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo -n"; fi
  if $sudo apt-get update -qq </dev/null && \
     $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver </dev/null && \
     { command -v chromium || command -v chromium-browser; } >/dev/null; then
    echo "Chromium: installed"; return 0
  fi
  echo "== WARNING: Chromium could not be installed (apt-get needs root or passwordless sudo, and the network):" \
       "the browser tests (tests/test_*_browser.py) will fail. Install it with" \
       "'apt-get install chromium chromium-driver' and run the tests again." >&2
  return 1
}

if [ "$MODE" = browser ]; then
  echo "== Chromium for the browser tests"
  browser
  exit $?
fi

echo "== Penn Treebank (awd-edu data download: checks the files, fetches only what is missing or damaged)"
mirrors=()
for url in ${AWD_EDU_PTB_MIRRORS:-}; do mirrors+=(--mirror "$url"); done
if ! "$BIN/python" -m awd_edu data download --quiet --timeout "${AWD_EDU_DOWNLOAD_TIMEOUT:-15}" ${mirrors[@]+"${mirrors[@]}"}; then
  echo "The tests need Penn Treebank and it could not be fetched (see above). Put the three files in a folder" \
       "ptb/ and set AWD_EDU_DATA to the folder above it, or connect to the network, then run the tests again." >&2
  exit 1
fi
[ "$MODE" = data ] && exit 0

failed=()
step() {   # step NAME COMMAND...: run it, remember a failure, go on
  local name=$1; shift
  echo "== $name"
  "$@"
  local rc=$?
  if [ "$name" = pytest ] && [ "$rc" -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; fi
  if [ "$rc" -ne 0 ]; then failed+=("$name (exit status $rc)"); fi
}

if [ "$MODE" = all ]; then step "Chromium for the browser tests" browser; fi   # --fast runs no browser test
step "awd_edu/ in sync with nbs/, notebooks clean" "$BIN/python" tools/check_sync.py
step "README.md in step with nbs/index.ipynb" "$BIN/python" tools/make_readme.py --check
if [ "$MODE" = all ]; then
  # Two notebooks run at once on two cores: one torch thread each avoids oversubscription.
  # Cells flagged gpu or slow are skipped (settings.ini tst_flags).
  step "nbdev_test" env OMP_NUM_THREADS=1 "$BIN/nbdev_test" --n_workers 2 --timing
  step pytest "$BIN/python" -m pytest -q
else
  # the slowest tests are listed at the end: one that takes more than a few seconds belongs under `slow`
  step pytest "$BIN/python" -m pytest -q -m "not slow" --durations=15
fi

if [ "${#failed[@]}" -ne 0 ]; then
  echo "== FAILED: ${failed[*]}"
  exit 1
fi
echo "== all passed"
