"""Resume after a real SIGKILL in the middle of an epoch gives exactly the numbers of an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time

import torch
from safetensors import safe_open
from safetensors.torch import load_file

CLI = "import sys; from awd_edu.cli import main; sys.exit(main(sys.argv[1:]))"
TRAIN = ["train", "--preset", "tiny", "--epochs", "3", "--set", "max_train_tokens=12000",
         "--set", "max_eval_tokens=1000", "--quiet", "--no-report"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}   # both runs use the same thread count, so the same arithmetic
DETERMINISTIC = ("stage", "epoch", "train_loss", "valid_loss", "lr", "optimizer", "switched", "best", "mean_seq_len",
                 "n_batches")


def cli(*args):
    return subprocess.run([sys.executable, "-c", CLI, *args], env=ENV, capture_output=True, text=True, timeout=600)


def metrics(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: json.loads(l)[k] for k in DETERMINISTIC} for l in lines if l.strip()]


def test_resume_after_sigkill_equals_the_uninterrupted_run(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    r = cli(*TRAIN, "--run-dir", str(whole))
    assert r.returncode == 0, r.stderr

    proc = subprocess.Popen([sys.executable, "-c", CLI, *TRAIN, "--run-dir", str(killed)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = killed / "checkpoints" / "train-latest.json"
    deadline = time.monotonic() + 300
    while not pointer.exists():               # wait for epoch 1's checkpoint ...
        assert proc.poll() is None, "the training process ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.5)                           # ... and a little into epoch 2
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    at_kill = json.loads(pointer.read_text())["epoch"]
    assert 1 <= at_kill < 3 and len(metrics(killed)) < 3

    r = cli("resume", str(killed), "--quiet", "--no-report")
    assert r.returncode == 0, r.stderr
    assert f"after epoch {at_kill}" in r.stdout
    assert metrics(killed) == metrics(whole)
    a, b = (load_file(str(d / "best.safetensors")) for d in (killed, whole))   # the header's key order may differ
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with safe_open(str(killed / "best.safetensors"), "pt") as fk, safe_open(str(whole / "best.safetensors"), "pt") as fw:
        assert fk.metadata() == fw.metadata()
    res_k, res_w = (json.loads((d / "results.json").read_text())["train"] for d in (killed, whole))
    assert res_k == res_w
    assert not list(killed.rglob(".*.tmp"))   # a temporary file the kill may have left is cleaned up by resume
