"""The `awd-edu` command line: `data download|verify|info`, exit statuses and error messages."""
import json
import os
import re
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


def test_unknown_action_is_rejected(capsys):
    assert main(["data", "fetch"]) == 2   # main returns argparse's status instead of exiting
    assert "invalid choice: 'fetch'" in capsys.readouterr().err


# ------------------------------------------------------------------------------- what a user expects of a CLI
ROOT = Path(__file__).resolve().parent.parent


def run_module(*args, **env):
    "`python -m ARGS` with this tree's package first on the path."
    path = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": path, **env})


def test_version(capsys):
    import awd_edu
    r = run_module("awd_edu", "--version")
    assert r.returncode == 0 and r.stdout.startswith(f"awd-edu {awd_edu.__version__} (torch ")
    assert main(["--version"]) == 0 and awd_edu.__version__ in capsys.readouterr().out


@pytest.mark.parametrize("module", ["awd_edu", "awd_edu.cli"])
def test_python_dash_m_runs_the_command_line(module, tmp_path):
    r = run_module(module, "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: awd-edu") and "presets" in r.stdout
    r = run_module(module, "data", "verify", "--dir", str(tmp_path))   # the exit status comes through
    assert r.returncode == 2 and r.stderr.startswith("awd-edu data: error: ") and "Traceback" not in r.stderr


def table(text: str) -> dict:
    "The rows of `awd-edu presets` (or `train --show`) as {setting: [type, value, value, ...]}."
    lines = text.splitlines()
    head = lines[0].split()
    rows = {}
    for line in lines[1:]:
        if not line or line.startswith(("*", "--")):
            break
        cells = [c.strip() for c in re.split(r" {2,}", line.strip())]
        rows[cells[0]] = cells[1:]
    assert all(len(cells) == len(head) - 1 for cells in rows.values()), rows
    return rows


def test_presets_shows_every_value_as_set_takes_it(capsys):
    from awd_edu.config import CONFIG_FIELDS, PRESETS, TrainConfig, parse_value, preset_changes
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    rows = table(out)
    assert set(rows) == set(CONFIG_FIELDS) - {"preset"}
    for col, name in enumerate(PRESETS, start=1):
        config, changed = TrainConfig.from_preset(name), preset_changes(name)
        for key, cells in rows.items():
            value, marked = cells[col].removesuffix(" *"), cells[col].endswith(" *")
            assert parse_value(key, value) == getattr(config, key), (name, key, value)   # what --set would take
            assert marked == (key in changed), (name, key)
    assert "--preset auto is ptb" in out
    assert main(["presets", "tiny", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"tiny": TrainConfig.from_preset("tiny").to_dict()}
    assert main(["presets", "huge"]) == 2 and "unknown preset 'huge'" in capsys.readouterr().err


def test_train_show_prints_the_settings_and_trains_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--preset", "tiny", "--set", "lr=20", "--epochs", "5", "--show"]) == 0
    rows = table(capsys.readouterr().out)
    assert rows["lr"] == ["float", "20.0 *"] and rows["epochs"] == ["int", "5 *"] and rows["bptt"] == ["int", "20 *"]
    assert rows["clip"] == ["float", "0.25"]
    assert list(tmp_path.iterdir()) == []


def test_set_help_lists_every_setting():
    from awd_edu.config import CONFIG_FIELDS
    out = run_module("awd_edu", "train", "--help").stdout
    help_of_set = " ".join(out.split("--set KEY=VALUE")[-1].split("--epochs")[0].split())
    assert all(key in help_of_set for key in CONFIG_FIELDS if key != "preset"), help_of_set


def test_the_cpu_preset_fine_tunes_for_no_longer_than_it_trains():
    from awd_edu.config import TrainConfig, resolve_preset
    cpu = TrainConfig.from_preset(resolve_preset("auto", cuda=False)[0])
    assert 1 <= cpu.finetune_epochs <= cpu.epochs <= 10


# ------------------------------------------------------------------------------- data info on damaged files
def damaged_copy(ptb_folder, folder, name, how):
    folder.mkdir()
    for n in PTB_FILES:
        (folder / n).symlink_to(ptb_folder / n)
    raw = (ptb_folder / name).read_bytes()
    (folder / name).unlink()
    (folder / name).write_bytes({"truncated": raw[: len(raw) // 2],
                                 "altered": raw.replace(b" the ", b" teh ", 1),
                                 "html": b"<!DOCTYPE html><html><body>rate limited</body></html>\n"}[how])
    return folder


@pytest.mark.parametrize("name, how", [("ptb.train.txt", "truncated"), ("ptb.valid.txt", "altered"),
                                       ("ptb.test.txt", "html")])
def test_info_on_a_damaged_file_says_damaged_not_unknown_words(ptb_folder, tmp_path, capsys, name, how):
    folder = damaged_copy(ptb_folder, tmp_path / "ptb", name, how)
    assert main(["data", "info", "--dir", str(folder)]) == 1
    out, err = capsys.readouterr()
    assert f"{name:14s}" in out and "DAMAGED" in out and "vocabulary" not in out
    assert str(folder / name) in err and "truncated or altered" in err and f"awd-edu data download --dir {folder}" in err
    assert ("HTML page" in err) == (how == "html")
    assert "<unk>" not in err and "not in the training vocabulary" not in err
    assert main(["data", "info", "--json", "--dir", str(folder)]) == 1
    info = json.loads(capsys.readouterr().out)
    assert [n for n, e in info["files"].items() if not e["sha256_ok"]] == [name] and "vocab_size" not in info


def test_download_hides_pooch_hash_advice_and_quiet_hides_its_log(mirrors, tmp_path):
    loud = run_module("awd_edu", "data", "download", "--dir", str(tmp_path / "a"), "--mirror", mirrors["good"])
    assert loud.returncode == 0, loud.stderr
    assert "Downloading data from" in loud.stderr and "known_hash" not in loud.stderr   # pooch's log reaches stderr
    quiet = run_module("awd_edu", "data", "download", "--quiet", "--dir", str(tmp_path / "b"),
                       "--mirror", mirrors["good"])
    assert quiet.returncode == 0 and quiet.stderr == "" and "SHA-256 verified" in quiet.stdout
    again = run_module("awd_edu", "data", "download", "--quiet", "--dir", str(tmp_path / "b"),
                       "--mirror", mirrors["down"])   # valid files: nothing to fetch, the mirror is never asked
    assert again.returncode == 0 and again.stderr == ""


# ------------------------------------------------------------------------------- evaluate --dynamic
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, ptb_folder, one_thread):
    "A tiny run, one epoch on a slice of PTB, trained through the command line."
    run = tmp_path_factory.mktemp("dynamic") / "run"
    assert main(["train", "--preset", "tiny", "--run-dir", str(run), "--epochs", "1", "--set", "max_train_tokens=4000",
                 "--set", "max_eval_tokens=600", "--quiet", "--no-report"]) == 0
    return run


def library(run, split: str, eta: float, lam: float, eps: float, bptt: int, grad_batches: int) -> dict:
    "Dynamic evaluation of the run's best weights by awd_edu.dynamic's own functions, step by step (not the CLI's path)."
    from awd_edu.data import batchify
    from awd_edu.dynamic import evaluate_dynamic, gradient_rms
    from awd_edu.train import load_best
    config, corpus, model = load_best(run, "cpu")
    ms_sqrt = gradient_rms(model, batchify(corpus.train[:config.max_train_tokens], 100), bptt, grad_batches)
    return evaluate_dynamic(model, batchify(getattr(corpus, split)[:config.max_eval_tokens], 1), ms_sqrt, eta, lam, eps,
                            bptt)


def test_evaluate_dynamic_is_the_library_s_dynamic_evaluation(tiny_run, capsys):
    settings = ["--eta", "1e-3", "--lambda", "0.01", "--eps", "1e-4", "--bptt", "7", "--grad-batches", "3"]
    assert main(["evaluate", str(tiny_run), "--dynamic", "--split", "test", "--json", "--quiet"] + settings) == 0
    r = json.loads(capsys.readouterr().out)
    expected = library(tiny_run, "test", eta=1e-3, lam=0.01, eps=1e-4, bptt=7, grad_batches=3)
    assert (r["split"], r["eta"], r["lam"], r["eps"], r["bptt"], r["tokens"]) == ("test", 1e-3, 0.01, 1e-4, 7, 599)
    assert r["ppl"] == pytest.approx(expected["ppl"], rel=1e-9) and r["loss"] == pytest.approx(expected["loss"], rel=1e-9)
    assert r["ppl"] != pytest.approx(r["static_ppl"], rel=1e-3)   # it did adapt
    assert r["search"] is None


def test_evaluate_dynamic_with_eta_0_prints_the_static_perplexity(tiny_run, capsys):
    assert main(["evaluate", str(tiny_run), "--dynamic", "--eta", "0", "--grad-batches", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    m = re.fullmatch(r"valid perplexity ([\d.]+) static, ([\d.]+) dynamic \(eta 0, lambda 0\.002; eps 2e-05, "
                     r"segments of 5; batch 1, 599 tokens\)\n", out)
    assert m, out
    static, dynamic = map(float, m.groups())
    assert dynamic == pytest.approx(static, abs=0.011)   # the same perplexity, to the printed two decimals
    assert main(["evaluate", str(tiny_run), "--quiet", "--json", "--batch-size", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["ppl"] == pytest.approx(static, abs=0.006)   # score_run's, at batch 1


@pytest.mark.parametrize("args, words", [
    (["--dynamic", "--eta", "-1"], ["argument --eta", ">= 0"]),
    (["--dynamic", "--eta", "nan"], ["argument --eta", "finite"]),
    (["--dynamic", "--lambda", "1.5"], ["argument --lambda", "[0, 1]"]),
    (["--dynamic", "--lambda", "-0.1"], ["argument --lambda", "[0, 1]"]),
    (["--dynamic", "--eps", "0"], ["argument --eps", "> 0"]),
    (["--dynamic", "--bptt", "0"], ["argument --bptt", ">= 1"]),
    (["--dynamic", "--bptt", "2.5"], ["argument --bptt", "an integer"]),
    (["--dynamic", "--grad-batches", "0"], ["argument --grad-batches", "> 0"]),
    (["--eta", "1e-4"], ["--eta", "add --dynamic"]),
    (["--lambda", "0.1", "--bptt", "3"], ["--lambda, --bptt", "add --dynamic"]),
    (["--search"], ["--search", "add --dynamic"]),
    (["--dynamic", "--search", "--eta", "1e-4"], ["--search", "drop --eta"]),
    (["--dynamic", "--search", "--split", "valid"], ["--search", "drop --split valid"]),
    (["--dynamic", "--cache"], ["--dynamic", "drop --cache"]),
    (["--dynamic", "--batch-size", "4"], ["--dynamic", "--batch-size"]),
])
def test_bad_dynamic_settings_exit_2_naming_the_flag_before_any_work(tmp_path, capsys, args, words):
    assert main(["evaluate", str(tmp_path / "no-run")] + args) == 2   # refused before the run is even looked for
    err = capsys.readouterr().err
    assert all(w in err for w in words) and "no-run" not in err and "Traceback" not in err, err


@pytest.mark.slow
def test_evaluate_dynamic_search_chooses_on_valid_then_scores_test(tiny_run, capsys):
    assert main(["evaluate", str(tiny_run), "--dynamic", "--search", "--grad-batches", "3", "--json", "--quiet"]) == 0
    r = json.loads(capsys.readouterr().out)
    from awd_edu.dynamic import DYNAMIC_SEARCH
    grid = r["search"]["grid"]
    assert len(grid) == len(DYNAMIC_SEARCH["etas"]) * len(DYNAMIC_SEARCH["lams"]) and r["search"]["tokens"] == 599
    best = min(grid, key=lambda g: g["loss"])
    assert (r["split"], r["eta"], r["lam"]) == ("test", best["eta"], best["lam"])   # chosen on valid, scored on test
    expected = library(tiny_run, "test", eta=best["eta"], lam=best["lam"], eps=2e-5, bptt=5, grad_batches=3)
    assert r["ppl"] == pytest.approx(expected["ppl"], rel=1e-9)


def test_resume_passes_patience_on_and_refuses_a_bad_one(capsys):
    from awd_edu.cli import _moved, build_parser
    parse = build_parser().parse_args
    assert _moved(parse(["resume", "r", "--patience", "3"]), "epochs") == {"patience": 3}
    assert _moved(parse(["resume", "r", "--epochs", "9"]), "epochs") == {"epochs": 9}       # not given: unchanged
    with pytest.raises(SystemExit) as e:
        parse(["resume", "r", "--patience", "0"])
    assert e.value.code == 2 and "--patience" in capsys.readouterr().err


def test_resume_and_finetune_take_the_options_that_continue_a_run():
    from awd_edu.cli import build_parser
    parser = build_parser()
    for command, extra in (("resume", ["--patience", "2", "--from-previous"]), ("finetune", ["--allow-unfinished"])):
        args = parser.parse_args([command, "r", "--epochs", "3", "--device", "cpu", "--data-dir", "d", "--quiet",
                                  "--no-report"] + extra)
        assert (args.run_dir, args.epochs, args.device, args.data_dir, args.quiet, args.no_report) == (
            "r", 3, "cpu", "d", True, True)
