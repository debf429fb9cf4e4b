"""The `awd-edu` command line: `data download|verify|info`, exit statuses and error messages."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from awd_edu.cli import main
from awd_edu.data import PTB_FILES
from test_data import mirrors  # noqa: F401  (the fixture: mirrors served on 127.0.0.1)


def test_console_script_is_installed_and_helpful():
    exe = shutil.which("awd-edu") or str(Path(sys.executable).parent / "awd-edu")
    out = subprocess.run([exe, "data", "--help"], capture_output=True, text=True, check=True).stdout
    assert "download" in out and "verify" in out and "info" in out and "AWD_EDU_DATA" in out


def test_verify_and_info_on_the_real_files(ptb_folder, capsys):
    assert main(["data", "verify", "--dir", str(ptb_folder)]) == 0
    assert main(["data", "info", "--json", "--dir", str(ptb_folder)]) == 0
    info = json.loads(capsys.readouterr().out.split("verified.\n", 1)[1])
    assert info["vocab_size"] == 10_000
    assert [info["files"][n]["tokens"] for n in PTB_FILES] == [929_589, 73_760, 82_430]
    assert all(info["files"][n]["sha256_ok"] for n in PTB_FILES)


def test_missing_data_exits_2_with_the_fix(tmp_path, capsys):
    assert main(["data", "verify", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "ptb.train.txt") in err and "awd-edu data download" in err
    assert main(["data", "info", "--dir", str(tmp_path)]) == 1
    assert "missing" in capsys.readouterr().out


def test_download_through_the_command_line(mirrors, tmp_path, capsys):
    dest = tmp_path / "ptb"
    assert main(["data", "download", "--quiet", "--dir", str(dest), "--mirror", mirrors["good"]]) == 0
    assert "SHA-256 verified" in capsys.readouterr().out
    assert main(["data", "verify", "--dir", str(dest)]) == 0


def test_download_with_only_bad_mirrors_exits_2_naming_them(mirrors, tmp_path, capsys):
    bad = [mirrors["html"], mirrors["broken"]]
    args = ["data", "download", "--quiet", "--timeout", "5", "--dir", str(tmp_path / "ptb")]
    assert main(args + sum((["--mirror", m] for m in bad), [])) == 2
    err = capsys.readouterr().err
    assert all(m in err for m in bad) and "Could not download" in err


def test_unknown_action_is_rejected():
    with pytest.raises(SystemExit) as e:
        main(["data", "fetch"])
    assert e.value.code == 2
