"""The run directory (issue 21): one writer at a time, new runs only in new folders, fine-tuning that never loses
training's best weights to a crash, a full disk as one message, paths stored resolved, --device checked everywhere,
the core install training alone, and the catch-all keeping real bugs' tracebacks."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import awd_edu.checkpoint as ckpt
import awd_edu.files as files
import awd_edu.messages as messages
import awd_edu.train as T
from awd_edu.cli import main
from awd_edu.config import TrainConfig
from folder_checks import snapshot

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["--set", "max_train_tokens=4000", "--set", "max_eval_tokens=800", "--quiet", "--no-report"]
TINY = ["--preset", "tiny"] + QUICK

pytestmark = pytest.mark.usefixtures("one_thread", "corpus_once")   # conftest: one torch thread, PTB read once


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus_once):
    "A tiny run, training finished (2 epochs, finetune_epochs 2). Tests work on copies."
    run = tmp_path_factory.mktemp("rundir") / "run"
    assert main(["train", "--run-dir", str(run), "--epochs", "2"] + TINY) == 0
    return run


@pytest.fixture
def run(trained, tmp_path):
    dest = tmp_path / "run"
    shutil.copytree(trained, dest)
    return dest


def error_of(capsys, command) -> str:
    "The command's stderr: one short message in the CLI's form, without a traceback."
    err = capsys.readouterr().err
    assert err.startswith(f"awd-edu {command}: "), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def cli_env(**extra) -> dict:
    path = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def awd(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "awd_edu", *map(str, args)], env=cli_env(), capture_output=True,
                          text=True, timeout=300, **kw)


HOLD = """
import sys, time
from awd_edu.rundir import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder(run):
    "Another process holding `run` (as a training run would): yields its Popen."
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], env=cli_env(), stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    yield p
    p.kill()
    p.wait()


# --------------------------------------------------------------------------------------------------- one writer
@pytest.mark.parametrize("command", ["train", "resume", "finetune"])
def test_a_second_writer_is_refused_at_once_naming_the_holder(run, holder, capsys, command):
    before = snapshot(run)
    args = ["--run-dir", str(run), "--resume-existing", "--epochs", "2"] + TINY if command == "train" else [str(run), "--quiet"]
    assert main([command, *args]) == 2
    err = error_of(capsys, command)
    assert f"{run} is in use by process {holder.pid}" in err and "nothing was changed" in err
    assert snapshot(run) == before


def test_readers_never_need_the_lock(run, holder, capsys):
    assert main(["evaluate", str(run), "--quiet"]) == 0
    assert main(["generate", str(run), "--words", "3", "--seed", "1"]) == 0
    assert main(["report", str(run), "--out", str(run.parent / "r.html")]) == 0
    assert (run.parent / "r.html").stat().st_size > 1000


def test_a_killed_holder_leaves_no_stale_lock(run, holder, capsys):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert main(["resume", str(run), "--epochs", "3", "--quiet", "--no-report"]) == 0
    assert [m["epoch"] for m in ckpt.read_metrics(run)] == [1, 2, 3]


def test_the_lock_is_reentrant_within_a_process_and_released_by_close(run, ptb_corpus):
    a = T.Trainer.resume(run, corpus=ptb_corpus, progress=False)
    b = T.Trainer.resume(run, corpus=ptb_corpus, progress=False)   # a notebook's second trainer of one folder
    ask = "import sys; from awd_edu.rundir import RunLock; RunLock(sys.argv[1]).acquire()"
    busy = subprocess.run([sys.executable, "-c", ask, str(run)], env=cli_env(), capture_output=True, text=True)
    assert busy.returncode != 0 and "RunInUse" in busy.stderr
    a.close(), b.close()
    free = subprocess.run([sys.executable, "-c", ask, str(run)], env=cli_env(), capture_output=True, text=True)
    assert free.returncode == 0, free.stderr


@pytest.mark.slow
def test_two_terminals_training_one_folder(tmp_path):
    "Two `awd-edu train` processes on one folder (`make train` twice): the second is refused; the first's run is whole."
    folder = tmp_path / "run"
    args = ["train", "--run-dir", folder, "--epochs", "6", "--resume-existing", *TINY]
    first = subprocess.Popen([sys.executable, "-m", "awd_edu", *map(str, args)], env=cli_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while not (folder / "config.json").is_file() and time.monotonic() - t0 < 120:
        time.sleep(0.05)
    second = awd(*args)   # the same command: it would resume the run, but the run is being written
    other = awd("train", "--run-dir", folder, "--epochs", "2", "--seed", "7", *TINY)   # another config
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert second.returncode == 2 and f"is in use by process {first.pid}" in second.stderr, second.stderr
    assert other.returncode == 2 and "nothing was changed" in other.stderr, other.stderr
    assert "Traceback" not in second.stderr + other.stderr
    assert TrainConfig.load(folder / "config.json").seed == 141   # the first run's config, not the other's
    assert [m["epoch"] for m in ckpt.read_metrics(folder)] == [1, 2, 3, 4, 5, 6]   # each epoch logged once


# ------------------------------------------------------------------------------------ new runs only in new folders
@pytest.mark.parametrize("name, content", [("config.json", '{"model": "resnet50"}'), ("metrics.jsonl", "loss=3.2\n"),
                                           ("notes.txt", "my notes")])
def test_train_into_a_folder_with_foreign_files_is_refused(tmp_path, capsys, name, content):
    folder = tmp_path / "theirs"
    folder.mkdir()
    (folder / name).write_text(content)
    before = snapshot(folder)
    assert main(["train", "--run-dir", str(folder), "--preset", "tiny", "--quiet"]) == 2   # with its report
    err = error_of(capsys, "train")
    assert f"files awd_edu did not write ({name})" in err and "--run-dir NEW" in err
    assert snapshot(folder) == before


def test_train_into_a_finished_run_without_checkpoints_is_refused(run, capsys):
    shutil.rmtree(run / "checkpoints")
    before = snapshot(run)
    for extra in ([], ["--resume-existing"]):
        assert main(["train", "--run-dir", str(run), "--epochs", "2"] + TINY + extra) == 2
        err = error_of(capsys, "train")
        assert "without a checkpoint to continue from" in err and "--run-dir NEW" in err
    assert snapshot(run) == before


def test_a_run_killed_in_its_first_epoch_starts_again_and_leaves_no_temporary_file(tmp_path, capsys):
    folder = tmp_path / "r"
    cfg = TrainConfig.from_preset("tiny", max_train_tokens=4000, max_eval_tokens=800)
    folder.mkdir()
    cfg.save(folder / "config.json")
    (folder / "metrics.jsonl").write_text("")
    (folder / ".best.safetensors.x1y2.tmp").write_bytes(b"\0" * 3_000_000)   # a write the kill interrupted
    assert main(["train", "--run-dir", str(folder), "--epochs", "1"] + TINY) == 0
    assert not list(folder.rglob("*.tmp")) and [m["epoch"] for m in ckpt.read_metrics(folder)] == [1]


def test_resume_removes_the_temporary_files_of_an_interrupted_write(run):
    stale = [run / ".best.safetensors.ab12.tmp", ckpt.checkpoint_dir(run) / ".train-e0003.state.pt.cd34.tmp"]
    for f in stale:
        f.write_bytes(b"\0" * 2_000_000)
    assert main(["resume", str(run), "--quiet", "--no-report"]) == 0
    assert not any(f.exists() for f in stale)


# -------------------------------------------------------------------- fine-tuning never loses training's best
def finetuned(folder) -> tuple:
    "The run's fine-tuning results and best weights after `finetune` (what an uninterrupted one gives)."
    from safetensors.torch import load_file
    return (json.loads((folder / "results.json").read_text())["finetune"],
            load_file(folder / "best.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ft") / "run"
    shutil.copytree(trained, folder)
    assert main(["finetune", str(folder), "--quiet", "--no-report"]) == 0
    return finetuned(folder)


def same(a, b):
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys() and all(torch.equal(a[1][k], b[1][k]) for k in a[1])


def test_a_crash_when_finetuning_first_saves_best_weights_then_finetune_again(run, uninterrupted, monkeypatch,
                                                                              capsys):
    training_best = (run / "best.safetensors").read_bytes()
    real = T.save_weights
    def crash_after(model, path, metadata=None):   # Ctrl-C the moment fine-tuning's first best weights are written
        out = real(model, path, metadata)
        if metadata.get("stage") == "finetune":
            raise KeyboardInterrupt
        return out
    monkeypatch.setattr(T, "save_weights", crash_after)
    assert main(["finetune", str(run), "--quiet", "--no-report"]) == 130
    assert (run / "best.safetensors").read_bytes() == training_best   # the run's best is still training's
    assert (ckpt.checkpoint_dir(run) / "train-best.safetensors").read_bytes() == training_best
    monkeypatch.undo()
    assert main(["finetune", str(run), "--quiet", "--no-report"]) == 0
    same(finetuned(run), uninterrupted)
    assert (ckpt.checkpoint_dir(run) / "train-best.safetensors").read_bytes() == training_best


def test_a_crash_between_the_checkpoint_and_the_move_of_best_then_resume(run, uninterrupted, monkeypatch):
    training_best = (run / "best.safetensors").read_bytes()
    def crash(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(T, "publish_best", crash)
    assert main(["finetune", str(run), "--quiet", "--no-report"]) == 130
    assert (run / "best.safetensors").read_bytes() == training_best
    monkeypatch.undo()
    assert main(["resume", str(run), "--quiet", "--no-report"]) == 0
    same(finetuned(run), uninterrupted)


KILL_AT_FINETUNE_BEST = """
import os, signal, sys
import awd_edu.train as T
real = T.save_weights
def save_then_die(model, path, metadata=None):
    out = real(model, path, metadata)
    if metadata.get("stage") == "finetune":
        os.kill(os.getpid(), signal.SIGKILL)
    return out
T.save_weights = save_then_die
from awd_edu.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_sigkill_when_finetuning_first_saves_best_weights_then_finetune_again(run, uninterrupted):
    training_best = (run / "best.safetensors").read_bytes()
    r = subprocess.run([sys.executable, "-c", KILL_AT_FINETUNE_BEST, "finetune", str(run), "--quiet", "--no-report"],
                       env=cli_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert (run / "best.safetensors").read_bytes() == training_best
    assert awd("finetune", run, "--quiet", "--no-report").returncode == 0
    same(finetuned(run), uninterrupted)


# ------------------------------------------------------------------------------------------------- a full disk
def torch_save_on_a_full_disk(obj, f, *a, **k):
    Path(f).write_bytes(b"\0" * 1000)   # part of the file, then torch's zip writer gives up in its own words
    raise RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing file "
                       "data/3: file write failed")


def safetensors_on_a_full_disk(model, filename, metadata=None, force_contiguous=False):
    from safetensors import SafetensorError
    Path(filename).write_bytes(b"\0" * 1000)
    raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                          "\"No space left on device\" })")


def text_on_a_full_disk(self, *a, **k):
    raise OSError(28, "No space left on device")   # Python's own write: an errno but no file name


@pytest.mark.parametrize("writer", ["torch.save", "safetensors", "json"])
def test_a_full_disk_is_one_message_naming_the_file_and_the_intact_checkpoint(run, monkeypatch, capsys, writer):
    import safetensors.torch
    from pathlib import Path as P
    real = {"torch.save": torch.save, "safetensors": safetensors.torch.save_model, "json": P.write_text}[writer]
    full = {"torch.save": torch_save_on_a_full_disk, "safetensors": safetensors_on_a_full_disk,
            "json": text_on_a_full_disk}[writer]
    def write(*args, **kw):   # the disk fills up during epoch 3's checkpoint (or its config/results writes)
        target = str(args[1] if writer != "json" else args[0])
        if "e0003" in target or (writer == "json" and "results" in target):
            return full(*args, **kw)
        return real(*args, **kw)
    monkeypatch.setattr(files.os, "statvfs", lambda folder: os.statvfs_result((4096, 4096, 1000, 0, 0, 1000, 0, 0, 0, 255)))   # a full disk
    if writer == "torch.save":
        monkeypatch.setattr(torch, "save", write)
    elif writer == "safetensors":
        monkeypatch.setattr(safetensors.torch, "save_model", write)
    else:
        monkeypatch.setattr(P, "write_text", write)
    before = snapshot(ckpt.checkpoint_dir(run))
    assert main(["resume", str(run), "--epochs", "3", "--quiet", "--no-report"]) == 2
    err = error_of(capsys, "resume")
    assert "no space left on its device" in err and f"`awd-edu resume {run}`" in err, err
    if writer != "json":
        assert "e0003" in err and "the last checkpoint (train epoch 2) is intact" in err, err
    else:
        assert "results.json cannot be written" in err and "train epoch 3" in err, err
    assert not list(run.rglob("*.tmp"))   # no partial temporary file left behind
    if writer != "json":
        assert all(snapshot(ckpt.checkpoint_dir(run)).get(k) == v for k, v in before.items())
    monkeypatch.undo()   # space freed
    assert main(["resume", str(run), "--epochs", "3", "--quiet", "--no-report"]) == 0
    assert [m["epoch"] for m in ckpt.read_metrics(run)] == [1, 2, 3]


def test_a_full_disk_while_logging_an_epoch_leaves_no_half_line(run, monkeypatch):
    real = os.write
    def write(fd, data):
        if b'"epoch": 3' in bytes(data):
            real(fd, bytes(data)[:20])   # part of the line reached the disk
            raise OSError(28, "No space left on device")
        return real(fd, data)
    monkeypatch.setattr(files.os, "write", write)
    with pytest.raises(OSError) as e:
        T.Trainer.resume(run, epochs=3, progress=False).fit()
    assert e.value.errno == 28 and str(run / "metrics.jsonl") == e.value.filename
    assert [m["epoch"] for m in ckpt.read_metrics(run)] == [1, 2]   # the log is whole: resume works


# ----------------------------------------------------------------------------- paths resolved, data moved, devices
def test_a_relative_data_dir_works_from_another_folder_and_a_moved_one_is_named(ptb_folder, tmp_path, monkeypatch,
                                                                                 capsys):
    data = tmp_path / "data" / "ptb"
    shutil.copytree(ptb_folder, data)
    monkeypatch.chdir(tmp_path / "data")
    assert main(["train", "--run-dir", str(tmp_path / "r"), "--epochs", "1", "--data-dir", "ptb"] + TINY) == 0
    assert TrainConfig.load(tmp_path / "r" / "config.json").data_dir == str(data)   # stored resolved
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "r", "--quiet"]) == 0 and main(["resume", "r", "--epochs", "2", "--quiet", "--no-report"]) == 0
    moved = tmp_path / "elsewhere" / "ptb"
    shutil.move(data, moved)
    for command in (["evaluate", "r"], ["generate", "r"], ["resume", "r", "--epochs", "3"], ["finetune", "r"]):
        assert main(command + ["--quiet"] * (command[0] != "generate")) == 2
        err = error_of(capsys, command[0])
        assert f"says the data is in {data}" in err and "--data-dir DIR" in err
    assert main(["evaluate", "r", "--quiet", "--data-dir", str(moved)]) == 0
    assert main(["resume", "r", "--epochs", "3", "--quiet", "--no-report", "--data-dir", "elsewhere/ptb"]) == 0
    assert TrainConfig.load(tmp_path / "r" / "config.json").data_dir == str(moved)


@pytest.mark.parametrize("device", ["gpu0", "tpu", "cuda:x"])
@pytest.mark.parametrize("command", ["train", "resume", "finetune", "evaluate", "generate"])
def test_a_bad_device_is_refused_by_every_command(run, capsys, command, device):
    before = snapshot(run)
    args = ["--run-dir", str(run.parent / "new")] + TINY if command == "train" else [str(run)]
    assert main([command, *args, "--device", device]) == 2
    err = error_of(capsys, command)
    assert f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got '{device}'" in err
    assert snapshot(run) == before and not (run.parent / "new").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_gpu_run_on_a_machine_without_one_names_the_way_out(run, capsys):
    config = json.loads((run / "config.json").read_text())
    config["device"] = "cuda"
    (run / "config.json").write_text(json.dumps(config))
    assert main(["evaluate", str(run), "--device", "cuda", "--quiet"]) == 2
    assert "no CUDA device on this machine; use --device cpu" in error_of(capsys, "evaluate")
    assert main(["resume", str(run), "--epochs", "3", "--quiet", "--no-report", "--device", "cpu"]) == 0


# -------------------------------------------------------------------------------------- the core install alone
BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("plotly", "ipywidgets", "anywidget"):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, Block())
from awd_edu.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_train_and_report_without_plotly(tmp_path):
    folder = tmp_path / "r"
    args = ["train", "--preset", "tiny", "--run-dir", str(folder), "--epochs", "1", "--quiet",
            "--set", "max_train_tokens=4000", "--set", "max_eval_tokens=800"]
    r = subprocess.run([sys.executable, "-c", BLOCK, *args], env=cli_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip().splitlines()[0]]   # one line
    assert "plotly is not installed, so no report.html is written" in r.stderr and 'awd_edu[viz]' in r.stderr
    assert (folder / "best.safetensors").is_file() and not (folder / "report.html").exists()
    r = subprocess.run([sys.executable, "-c", BLOCK, "report", str(folder)], env=cli_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert 'pip install "awd_edu[viz]"' in r.stderr and not (folder / "report.html").exists()


def test_report_rewrites_the_html_report_from_the_metrics(run, capsys):
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "AWD-LSTM training: run" in html and "best valid ppl" in html
    assert "report of 2 epochs" in capsys.readouterr().out
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(lines[0] + "\n{damaged\n")
    assert main(["report", str(run)]) == 2
    assert "line 2 is not valid JSON" in error_of(capsys, "report")
    assert main(["resume", str(run), "--quiet", "--no-report"]) == 2
    assert "Delete or repair that line" in error_of(capsys, "resume")


# ------------------------------------------------------------------------------ the catch-all catches only ours
def test_a_torch_value_error_inside_training_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    def shape_bug(*args, **kw):   # a shape mismatch deep inside torch
        return torch.nn.functional.cross_entropy(torch.zeros(4, 5), torch.zeros(3, dtype=torch.long))
    monkeypatch.setattr(T, "train_epoch", shape_bug)
    with pytest.raises(ValueError, match="Expected input batch_size"):
        main(["train", "--run-dir", str(tmp_path / "r"), "--epochs", "1"] + TINY)
    assert capsys.readouterr().err == ""
    assert messages.explain(ValueError("TrainConfig: lr must be > 0"), "train") is not None   # ours: a message


def test_a_lost_torchrun_process_says_how_to_resume():
    lost = getattr(torch.distributed, "DistBackendError", RuntimeError)("[../gloo/transport/tcp/pair.cc:534] "
                                                                        "Connection closed by peer [127.0.0.1]:5678")
    status, message = messages.explain(lost, "train", "runs/x")
    assert status == 2 and "another process of this data-parallel run stopped" in message
    assert "`awd-edu resume runs/x`" in message and "torchrun" in message


# ---------------------------------------------------------------------------------- signals and a closed pipe
def as_from_a_terminal():
    "A shell starts a background job (`pytest &`) with Ctrl-C ignored, and its children inherit that: undo it."
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def started(folder, timeout=300):
    t0 = time.monotonic()
    while not (folder / "checkpoints" / "train-latest.json").is_file() and time.monotonic() - t0 < timeout:
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("sig, status, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "SIGTERM")])
def test_ctrl_c_twice_or_sigterm_is_one_line_and_resumes(tmp_path, sig, status, word):
    folder = tmp_path / "r"
    p = subprocess.Popen([sys.executable, "-m", "awd_edu", "train", "--run-dir", str(folder), "--epochs", "500",
                          "--preset", "tiny", "--set", "max_train_tokens=4000", "--set", "max_eval_tokens=800",
                          "--quiet"], env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=as_from_a_terminal)
    started(folder)
    p.send_signal(sig)
    time.sleep(0.05)
    p.send_signal(sig)   # impatient: a second one during the shutdown
    out, err = p.communicate(timeout=300)
    assert p.returncode == status, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and word in err, err
    assert f"`awd-edu resume {folder}`" in err
    assert not list(folder.rglob("*.tmp"))
    done = len(ckpt.read_metrics(folder))
    r = awd("resume", folder, "--epochs", str(done + 1), "--quiet", "--no-report")
    assert r.returncode == 0, r.stderr
    assert [m["epoch"] for m in ckpt.read_metrics(folder)] == list(range(1, done + 2))


def test_a_closed_output_pipe_stops_quietly(run):
    p = subprocess.Popen([sys.executable, "-m", "awd_edu", "generate", str(run), "--words", "20000"], env=cli_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.read(10)
    p.stdout.close()   # as `| head -c 10` does
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141 and "Traceback" not in err and "Exception ignored" not in err, err


@pytest.mark.slow
def test_a_real_full_disk(tmp_path):
    "A 9 MB tmpfs (root only): the disk fills at epoch 3's checkpoint; one line; the run resumes once there is space."
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=9m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        folder = disk / "r"
        r = awd("train", "--run-dir", folder, "--epochs", "3", *TINY)
        assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "no space left on its device" in r.stderr and "the last checkpoint (train epoch 2) is intact" in r.stderr
        assert not list(folder.rglob("*.tmp"))
        subprocess.run(["mount", "-o", "remount,size=30m", str(disk)], check=True)   # space freed
        r = awd("resume", folder, "--quiet", "--no-report")
        assert r.returncode == 0, r.stderr
        assert [m["epoch"] for m in ckpt.read_metrics(folder)] == [1, 2, 3]
    finally:
        subprocess.run(["umount", str(disk)])
