"""The command line when something goes wrong: damaged or missing files in a run folder, a folder that cannot be
written, values out of range, a diverged run, an interrupted one. Each exits non-zero with a message that names the
file or the setting and says what to do, without a traceback (unless --debug), and a refused command changes
nothing on disk. Also: the CLI is a thin face over the package (it never reads checkpoints or writes config.json
itself), and a run directory written before checkpoints stored their config still resumes."""
import errno
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest
import torch

import awd_edu.checkpoint as ckpt
import awd_edu.cli as cli
import awd_edu.files as files
import awd_edu.loop as loop
import awd_edu.messages as messages
import awd_edu.rundir as R
from awd_edu.cli import main
from folder_checks import snapshot
from awd_edu.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["--set", "max_train_tokens=4000", "--set", "max_eval_tokens=800", "--quiet"]


pytestmark = pytest.mark.usefixtures("one_thread", "corpus_once")   # conftest: one torch thread, PTB read once


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus_once):
    "A tiny run trained for 2 epochs (finished): checkpoints of epochs 1 and 2 are kept. Tests work on copies."
    run = tmp_path_factory.mktemp("errors") / "run"
    assert main(["train", "--preset", "tiny", "--run-dir", str(run), "--epochs", "2", "--no-report"] + QUICK) == 0
    return run


@pytest.fixture
def run(trained, tmp_path):
    dest = tmp_path / "run"
    shutil.copytree(trained, dest)
    return dest


def latest_state(run_dir) -> Path:
    return ckpt.checkpoint_dir(run_dir) / f"{ckpt.read_pointer(run_dir, 'train')['tag']}.state.pt"


def error_of(capsys, command) -> str:
    "The command's stderr, checked to be a short message in the CLI's form, without a traceback."
    err = capsys.readouterr().err
    assert err.startswith(f"awd-edu {command}: "), err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    return err


def cli_env(**extra) -> dict:
    "The environment of a subprocess running this tree's package."
    path = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


# ------------------------------------------------------------------------------------ damaged files in a run folder
DAMAGE = {"half": lambda raw: raw[: len(raw) // 2], "10 bytes": lambda raw: raw[:10], "0 bytes": lambda raw: b""}
STATE_DAMAGE = list(DAMAGE)   # an empty file makes torch.load raise EOFError with an empty message: covered too


@pytest.mark.parametrize("size", STATE_DAMAGE)
@pytest.mark.parametrize("command", [["resume"], ["resume", "--epochs", "3"], ["finetune"],
                                     ["finetune", "--epochs", "1"]])
def test_a_damaged_latest_state_file_is_named_and_nothing_changes(run, capsys, command, size):
    state = latest_state(run)
    state.write_bytes(DAMAGE[size](state.read_bytes()))
    before = snapshot(run)
    assert main([command[0], str(run), *command[1:], "--quiet", "--no-report"]) == 2
    err = error_of(capsys, command[0])
    assert str(state) in err and "damaged" in err
    assert f"awd-edu resume {run} --from-previous" in err   # the way out
    assert snapshot(run) == before                          # config.json too: --epochs was not written


def test_resume_from_previous_recovers_a_damaged_latest_checkpoint(run, trained, capsys):
    state = latest_state(run)
    state.write_bytes(state.read_bytes()[:10])
    assert main(["resume", str(run), "--from-previous", "--quiet", "--no-report"]) == 0
    assert "after epoch 1 (the checkpoint before the latest)" in capsys.readouterr().out
    redone, original = ckpt.read_metrics(run), ckpt.read_metrics(trained)
    assert [m["epoch"] for m in redone] == [1, 2]
    assert redone[1]["valid_loss"] == pytest.approx(original[1]["valid_loss"], rel=1e-6)   # epoch 2, trained again
    assert ckpt.load_checkpoint(run, "train")[0]["epoch"] == 2                             # and readable now
    assert main(["resume", str(run), "--quiet", "--no-report"]) == 0
    assert "training finished (2 epochs)" in capsys.readouterr().out


@pytest.mark.parametrize("text", ['{"epoch": 2, "finished": true}', "{not json", ""])
@pytest.mark.parametrize("command", ["resume", "finetune"])
def test_a_damaged_pointer_is_named(run, capsys, command, text):
    pointer = ckpt.checkpoint_dir(run) / "train-latest.json"
    pointer.write_text(text)
    before = snapshot(run)
    assert main([command, str(run), "--quiet", "--no-report"]) == 2
    err = error_of(capsys, command)
    assert str(pointer) in err and "damaged" in err
    assert snapshot(run) == before


@pytest.mark.parametrize("value", ['"fast"', "true", "null"])
def test_a_wrong_type_in_config_json_is_named(run, capsys, value):
    config = run / "config.json"
    config.write_text(config.read_text().replace('"lr": 30.0', f'"lr": {value}'))
    before = snapshot(run)
    for command in ("resume", "finetune", "evaluate", "generate"):
        assert main([command, str(run), "--quiet"] if command != "generate" else [command, str(run)]) == 2
        err = error_of(capsys, command)
        assert str(config) in err and "lr must be a float" in err
    assert snapshot(run) == before


def test_a_config_json_edited_by_hand_is_refused_naming_the_setting(run, capsys):
    config = run / "config.json"
    config.write_text(config.read_text().replace('"lr": 30.0', '"lr": 5.0'))
    before = snapshot(run)
    assert main(["resume", str(run), "--epochs", "3", "--quiet", "--no-report"]) == 2
    err = error_of(capsys, "resume")
    assert str(config) in err and "'lr': (30.0, 5.0)" in err
    assert snapshot(run) == before


def test_weights_without_metadata_are_reported_as_such(run, capsys):
    from safetensors.torch import load_file, save_file
    best = run / "best.safetensors"
    save_file(load_file(str(best)), str(best))   # the same tensors, no header metadata
    assert main(["evaluate", str(run), "--quiet"]) == 2
    err = error_of(capsys, "evaluate")
    assert str(best) in err and "not written by awd_edu" in err and "None" not in err


@pytest.mark.parametrize("size", ["half", "0 bytes"])
def test_damaged_best_weights_are_named(run, capsys, size):
    best = run / "best.safetensors"
    best.write_bytes(DAMAGE[size](best.read_bytes()))
    for command in ("evaluate", "generate"):
        assert main([command, str(run)]) == 2
        err = error_of(capsys, command)
        assert str(best) in err and "damaged" in err


# --------------------------------------------------------------------------------------- a folder that is read-only
def refuse_writes_under(monkeypatch, folder, code=errno.EROFS):
    "Make every atomic write under `folder` fail as on a read-only disk (chmod does not stop root)."
    real = tempfile.mkstemp
    def mkstemp(suffix=None, prefix=None, dir=None, text=False):
        if dir is not None and Path(dir).resolve().is_relative_to(Path(folder).resolve()):
            raise OSError(code, os.strerror(code), os.path.join(dir, f"{prefix}XXXXXXXX{suffix}"))
        return real(suffix, prefix, dir, text)
    monkeypatch.setattr(files, "tempfile", types.SimpleNamespace(mkstemp=mkstemp))


@pytest.mark.parametrize("command", ["train", "resume", "finetune"])
def test_a_read_only_run_folder_is_named_with_the_way_out(run, tmp_path, monkeypatch, capsys, command):
    folder = tmp_path / "new" if command == "train" else run
    folder.mkdir(exist_ok=True)
    refuse_writes_under(monkeypatch, folder)
    before = snapshot(folder)
    args = ["--preset", "tiny", "--run-dir", str(folder)] + QUICK if command == "train" else [str(folder), "--quiet"]
    assert main([command, *args]) == 2
    err = error_of(capsys, command)
    assert f"the folder {folder} is on a read-only file system" in err
    assert ("--run-dir you can write" in err) if command == "train" else (f"cp -r {folder} NEW_DIR" in err)
    assert snapshot(folder) == before


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes through chmod")
def test_a_run_folder_without_write_permission_is_named(run, tmp_path, capsys):
    parent = tmp_path / "locked"
    parent.mkdir()
    folders = [run, ckpt.checkpoint_dir(run), parent]
    before = snapshot(run)
    for f in folders:
        f.chmod(0o555)
    try:
        for command, args in (("resume", [str(run)]), ("finetune", [str(run)]),
                              ("train", ["--preset", "tiny", "--run-dir", str(parent / "run")] + QUICK)):
            assert main([command, *args, "--quiet", "--no-report"]) == 2
            err = error_of(capsys, command)
            assert "permission denied" in err and (str(run) in err or str(parent / "run") in err)
    finally:
        for f in folders:
            f.chmod(0o755)
    assert snapshot(run) == before and not (parent / "run").exists()


def test_no_space_left_and_other_disk_errors_are_explained(run):
    status, message = messages.explain(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "runs/x/.metrics.jsonl.ab.tmp"),
                                  "train", "runs/x")
    assert status == 2 and "the folder runs/x" in message and "no space left" in message
    assert "nothing had been checkpointed yet" in message and "start it again" in message
    status, message = messages.explain(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run / "metrics.jsonl")),
                                  "resume", str(run))
    assert f"{run / 'metrics.jsonl'} cannot be written: no space left" in message
    assert "the last checkpoint (train epoch 2) is intact" in message and f"`awd-edu resume {run}`" in message
    status, message = messages.explain(OSError(errno.EIO, os.strerror(errno.EIO), "runs/x/best.safetensors"), "evaluate")
    assert status == 2 and message == f"awd-edu evaluate: error: {os.strerror(errno.EIO)}: runs/x/best.safetensors"


def test_out_of_gpu_memory_is_explained():
    for text in ("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail", ""):
        status, message = messages.explain(torch.cuda.OutOfMemoryError(text), "train", "runs/x")
        assert status == 2 and message.startswith("awd-edu train: error: out of GPU memory")
        assert text.partition("\n")[0] in message and "more detail" not in message and "--device cpu" in message


def test_a_bug_keeps_its_traceback(monkeypatch):
    def broken(args):
        raise TypeError("a bug")
    monkeypatch.setattr(cli, "cmd_presets", broken)
    assert messages.explain(TypeError("a bug"), "presets") is None
    with pytest.raises(TypeError, match="a bug"):
        main(["presets"])


# ----------------------------------------------------------------------------------------------- values out of range
@pytest.mark.parametrize("setting, words", [
    ("lr=1e308", ["lr must be > 0 and at most 1e+09", "1e+308"]),
    ("lr=inf", ["lr must be a finite number"]),
    ("hidden_size=1000000", ["hidden_size=1000000 would be ignored", "set hidden_size=64"]),
])
def test_settings_out_of_range_are_refused_before_anything_is_made(tmp_path, capsys, setting, words):
    assert main(["train", "--preset", "tiny", "--run-dir", str(tmp_path / "r"), "--set", setting]) == 2
    err = error_of(capsys, "train")
    assert all(w in err for w in words), err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, words", [
    (["--batch-size", "0"], ["--batch-size", "must be an integer > 0, got '0'"]),
    (["--batch-size", "-3"], ["--batch-size", "> 0"]),
    (["--batch-size", "401"], ["--batch-size 401 is too large", "800 tokens", "at most 400"]),
    (["--cache", "--batch-size", "4"], ["--cache scores one stream, at batch 1"]),
])
def test_evaluate_refuses_a_batch_size_it_cannot_use(trained, capsys, args, words):
    assert main(["evaluate", str(trained), "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(w in err for w in words), err


# -------------------------------------------------------------------------------------------------------- divergence
def test_finite_divergence_stops_the_run_and_never_becomes_best(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "--preset", "tiny", "--run-dir", str(run), "--epochs", "2", "--set", "lr=1e6"]
                + QUICK) == 1
    err = error_of(capsys, "train")
    assert err.startswith("awd-edu train: stopped: training diverged in train epoch ")
    assert "lower learning rate" in err and "OverflowError" not in err
    diverged = int(err.split("training diverged in train epoch ")[1].split(":")[0])
    assert all(m["epoch"] < diverged for m in ckpt.read_metrics(run))   # the diverged epoch is not logged ...
    if (run / "best.safetensors").exists():                            # ... and never becomes the best
        assert int(ckpt.read_metadata(run / "best.safetensors")["epoch"]) < diverged
        assert main(["evaluate", str(run), "--quiet"]) == 0
    else:
        for command in ("evaluate", "generate"):
            assert main([command, str(run)]) == 2
            assert "no best.safetensors yet" in error_of(capsys, command)


def test_a_loss_too_large_for_exp_prints_inf(trained, monkeypatch, capsys):
    monkeypatch.setattr(R, "evaluate", lambda *a, **k: 800.0)   # exp(800) overflows a float (score_run's evaluate)
    assert main(["evaluate", str(trained), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("valid perplexity inf ")
    assert main(["evaluate", str(trained), "--quiet", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)   # standard JSON: no Infinity
    assert result["loss"] == 800.0 and result["ppl"] is None
    cli._print_event(dict(event="epoch", stage="train", epoch=3, train_ppl=loop.perplexity(800.0), valid_ppl=float("inf"),
                          optimizer="sgd", seconds=1.0, tokens_per_s=10.0, best=False))
    assert "train ppl      inf  valid ppl      inf" in capsys.readouterr().out


# ------------------------------------------------------------------------------------- traps that left a run stuck
def test_finetune_refuses_unfinished_training_unless_told(run, capsys):
    config = run / "config.json"   # epochs is a setting a resume may change: 2 of 3 epochs done
    config.write_text(config.read_text().replace('"epochs": 2', '"epochs": 3'))
    before = snapshot(run)
    for extra in ([], ["--epochs", "1"]):
        assert main(["finetune", str(run), *extra, "--quiet", "--no-report"]) == 2
        out, err = capsys.readouterr()
        assert err.startswith("awd-edu finetune: error: training stopped after epoch 2 of 3") and "Traceback" not in err
        assert "--allow-unfinished" in err and "fine-tuning the best weights" not in out
        assert snapshot(run) == before   # finetune_epochs was not written
    assert main(["finetune", str(run), "--allow-unfinished", "--epochs", "1", "--quiet", "--no-report"]) == 0
    assert "note: training stopped after epoch 2 of 3" in capsys.readouterr().out
    assert TrainConfig.load(config).finetune_epochs == 1
    assert [m["stage"] for m in ckpt.read_metrics(run)] == ["train", "train", "finetune"]


def test_an_interrupted_run_says_how_to_go_on_and_resumes(tmp_path, monkeypatch, capsys):
    run = tmp_path / "r"
    def interrupt(event):   # Ctrl-C right after epoch 1 was checkpointed
        if event["event"] == "epoch":
            raise KeyboardInterrupt
    monkeypatch.setattr(cli, "_print_event", interrupt)
    assert main(["train", "--preset", "tiny", "--run-dir", str(run), "--epochs", "2", "--no-report"] + QUICK) == 130
    err = error_of(capsys, "train")
    assert err.startswith("awd-edu train: interrupted") and f"`awd-edu resume {run}`" in err
    monkeypatch.undo()
    assert main(["resume", str(run), "--quiet", "--no-report"]) == 0
    assert [m["epoch"] for m in ckpt.read_metrics(run)] == [1, 2]


# ------------------------------------------------------------------------------------------ tracebacks only on demand
def test_debug_or_the_environment_variable_shows_the_traceback(run):
    state = latest_state(run)
    state.write_bytes(state.read_bytes()[:10])
    plain = subprocess.run([sys.executable, "-m", "awd_edu", "resume", str(run)], env=cli_env(),
                           capture_output=True, text=True, timeout=300)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr and str(state) in plain.stderr
    for args, env in ((["--debug", "resume", str(run)], {}), (["resume", str(run), "--debug"], {}),
                      (["resume", str(run)], {messages.DEBUG_ENV: "1"})):
        r = subprocess.run([sys.executable, "-m", "awd_edu", *args], env=cli_env(**env), capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 1 and "Traceback" in r.stderr and "CheckpointError" in r.stderr, (args, env)


# ------------------------------------------------------------------------------------------------- a thin face
def test_the_cli_never_reads_checkpoints_or_writes_config_itself():
    source = inspect.getsource(cli)
    for needle in ("-latest.json", ".state.pt", "torch.load", ".save(", "write_text", "math.exp"):
        assert needle not in source, needle


def test_an_old_run_directory_still_resumes_and_finetunes(run, capsys):
    "Checkpoints written before this change: a state without `config` (format 1), a pointer without `previous`, and only the latest epoch kept."
    folder = ckpt.checkpoint_dir(run)
    pointer = json.loads((folder / "train-latest.json").read_text())
    for f in folder.glob("train-e*"):
        if not f.name.startswith(pointer["tag"] + "."):
            f.unlink()
    state = torch.load(folder / f"{pointer['tag']}.state.pt", weights_only=True)
    del state["config"]
    state["format"] = 1
    torch.save(state, folder / f"{pointer['tag']}.state.pt")
    del pointer["previous"]
    (folder / "train-latest.json").write_text(json.dumps(pointer) + "\n")
    assert main(["resume", str(run), "--epochs", "3", "--quiet", "--no-report"]) == 0
    assert "after epoch 2" in capsys.readouterr().out
    assert [m["epoch"] for m in ckpt.read_metrics(run)] == [1, 2, 3]
    assert TrainConfig.load(run / "config.json").epochs == 3
    assert main(["finetune", str(run), "--epochs", "1", "--quiet", "--no-report"]) == 0
    assert [m["stage"] for m in ckpt.read_metrics(run)][-1] == "finetune"


def test_an_error_raised_in_a_cell_run_by_nbdev_test_counts_as_the_packages():
    from awd_edu.messages import raised_by_us
    def raised_in(filename):
        try:
            exec(compile("raise ValueError('x')", filename, "exec"))
        except ValueError as e:
            return e
    assert raised_by_us(raised_in("<ipython-input-3-d34a0d851a90>"))    # execnb names the cells it runs so
    assert not raised_by_us(raised_in("<string>"))                       # code made up at run time is not ours


def test_positive_and_checked_share_one_parse_step():
    import argparse
    from awd_edu.messages import checked, positive
    assert positive(int)("3") == 3 and positive(float)("0.5") == 0.5
    for parse, text, words in ((positive(int), "x", "must be an integer > 0, got 'x'"),
                               (positive(int), "0", "must be an integer > 0, got '0'"),
                               (positive(float), "inf", "must be a number > 0, got 'inf'"),
                               (checked(float, lambda v: v), "x", "must be a number, got 'x'"),
                               (checked(int, lambda v: 1 // 0 if v else v), "1.5", "must be an integer, got '1.5'")):
        with pytest.raises(argparse.ArgumentTypeError, match=words):
            parse(text)
