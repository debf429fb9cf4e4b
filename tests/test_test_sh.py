"""`make test` (tools/test.sh): Penn Treebank is made sure of first, and a missing dataset without a network fails in
seconds with the fix; a failing notebook does not keep pytest from running, and the script fails at the end if any
step failed."""
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "test.sh"


def refusing_url() -> str:
    "A mirror on 127.0.0.1 that refuses connections: a port with nothing listening."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/data/"


def test_data_step_without_data_or_network_fails_in_seconds_with_the_fix(tmp_path):
    env = {**os.environ, "AWD_EDU_DATA": str(tmp_path / "empty"), "AWD_EDU_PTB_MIRRORS": refusing_url(),
           "BIN": str(Path(sys.executable).parent)}
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(SCRIPT), "--data-only"], env=env, capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - t0
    assert r.returncode == 1, r.stdout + r.stderr
    assert "awd-edu data: error: Could not download ptb.train.txt, ptb.valid.txt, ptb.test.txt" in r.stderr
    assert "Connection refused" in r.stderr or "ConnectionError" in r.stderr, r.stderr
    assert "set AWD_EDU_DATA to the folder above it, or connect to the network" in r.stderr
    assert "Traceback" not in r.stderr and "== nbdev_test" not in r.stdout
    assert seconds < 60, seconds   # seconds (the interpreter's start-up), not a test suite's minutes


def test_data_step_with_valid_files_needs_no_network(ptb_folder):
    env = {**os.environ, "AWD_EDU_DATA": str(ptb_folder.parent), "AWD_EDU_PTB_MIRRORS": refusing_url(),
           "BIN": str(Path(sys.executable).parent)}
    r = subprocess.run(["bash", str(SCRIPT), "--data-only"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"Penn Treebank is ready in {ptb_folder}" in r.stdout


def fake_bin(folder: Path, notebooks_rc: int, pytest_rc: int) -> Path:
    "A BIN folder whose python and nbdev_test only log their arguments and exit with the given statuses."
    folder.mkdir()
    log = folder / "calls.log"
    (folder / "python").write_text(f"""#!/usr/bin/env bash
echo "python $*" >> {log}
case "$*" in
  "-m pytest"*) exit {pytest_rc} ;;
esac
exit 0
""")
    (folder / "nbdev_test").write_text(f'#!/usr/bin/env bash\necho "nbdev_test $*" >> {log}\nexit {notebooks_rc}\n')
    for f in ("python", "nbdev_test"):
        (folder / f).chmod((folder / f).stat().st_mode | stat.S_IEXEC)
    return log


@pytest.mark.parametrize("notebooks_rc, pytest_rc", [(1, 0), (0, 1), (1, 1), (0, 0), (0, 5)])
def test_pytest_runs_even_when_a_notebook_fails_and_any_failure_fails_the_script(tmp_path, notebooks_rc, pytest_rc):
    log = fake_bin(tmp_path / "bin", notebooks_rc, pytest_rc)
    r = subprocess.run(["bash", str(SCRIPT)], env={**os.environ, "BIN": str(tmp_path / "bin")},
                       capture_output=True, text=True, timeout=60)
    calls = log.read_text().splitlines()
    assert calls[0].startswith("python -m awd_edu data download")                 # the data first
    assert [c.split()[0] + " " + c.split()[1] for c in calls[1:]] == [
        "python tools/check_sync.py", "python tools/make_readme.py", "nbdev_test --n_workers", "python -m"]
    assert calls[-1].startswith("python -m pytest")                               # pytest ran, whatever came before
    failed = notebooks_rc != 0 or pytest_rc != 0
    assert r.returncode == (1 if failed else 0), r.stdout
    assert ("== FAILED" in r.stdout) == failed
    assert ("nbdev_test (exit status 1)" in r.stdout) == (notebooks_rc != 0)
    assert (f"pytest (exit status {pytest_rc})" in r.stdout) == (pytest_rc != 0)


def test_fast_mode_skips_the_notebooks_and_the_slow_tests(tmp_path):
    log = fake_bin(tmp_path / "bin", 1, 0)
    r = subprocess.run(["bash", str(SCRIPT), "--fast"], env={**os.environ, "BIN": str(tmp_path / "bin")},
                       capture_output=True, text=True, timeout=60)
    calls = log.read_text()
    assert r.returncode == 0 and "nbdev_test" not in calls and 'python -m pytest -q -m not slow' in calls


def test_fast_mode_needs_no_chromium(tmp_path):
    log = fake_bin(tmp_path / "fake", 0, 0)
    env = {**stub_path(tmp_path, "exit 100"), "BIN": str(tmp_path / "fake")}   # no Chromium, apt-get fails
    (tmp_path / "bin" / "bash").symlink_to(shutil.which("bash"))                  # the fake BIN's scripts need it
    r = subprocess.run(["/bin/bash", str(SCRIPT), "--fast"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Chromium" not in r.stdout + r.stderr, r
    assert not (tmp_path / "apt.log").exists() and 'python -m pytest -q -m not slow' in log.read_text()


# ------------------------------------------------------------------------- Chromium for the browser tests
def stub_path(tmp_path, apt_get: str) -> dict:
    "An environment whose PATH has no Chromium, only the tools the step needs and a stand-in `apt-get`."
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("id", "dirname", "env", "cat"):
        (bin_ / tool).symlink_to(subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True,
                                                text=True).stdout.strip())
    (bin_ / "apt-get").write_text(f"#!/bin/bash\necho \"$@\" >> {tmp_path}/apt.log\n{apt_get}\n")
    (bin_ / "apt-get").chmod(0o755)
    return {**os.environ, "PATH": str(bin_)}


def test_browser_step_installs_chromium_when_it_is_missing(tmp_path):
    fake = f"[ \"$1\" = install ] && printf '#!/bin/bash\\n' > {tmp_path}/bin/chromium && chmod +x {tmp_path}/bin/chromium; exit 0"
    r = subprocess.run(["/bin/bash", str(SCRIPT), "--browser-only"], env=stub_path(tmp_path, fake),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "installing it with apt-get" in r.stdout and "Chromium: installed" in r.stdout, r
    assert "install -y -qq chromium chromium-driver" in (tmp_path / "apt.log").read_text()


def test_browser_step_says_loudly_when_chromium_cannot_be_had(tmp_path):
    r = subprocess.run(["/bin/bash", str(SCRIPT), "--browser-only"], env=stub_path(tmp_path, "exit 100"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "== WARNING: Chromium could not be installed" in r.stderr, r
    assert "the browser tests (tests/test_*_browser.py) will fail" in r.stderr


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")), reason="no Chromium here")
def test_browser_step_finds_an_installed_chromium():
    r = subprocess.run(["bash", str(SCRIPT), "--browser-only"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Chromium: /" in r.stdout, r
