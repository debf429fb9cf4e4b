"""Resume after a real SIGKILL in the middle of an epoch gives exactly the numbers of an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from awd_edu.config import TrainConfig
from awd_edu.train import Trainer

# A run of the tiny preset in its own process. A subscriber writes a marker file once the 5th step of epoch 2 is done:
# the test kills the process when the marker appears, so the kill lands in the middle of epoch 2 for certain.
RUN = """
import sys
from pathlib import Path
from awd_edu.callbacks import Callback
from awd_edu.config import TrainConfig
from awd_edu.train import Trainer
class Marker(Callback):
    def on_batch(self, e):
        if e["epoch"] == 2 and e["batch"] == 5:
            Path(sys.argv[2]).write_text("epoch 2 is running")
config = TrainConfig.from_preset("tiny", epochs=3, max_train_tokens=12_000, max_eval_tokens=1_000)
trainer = Trainer.resume(sys.argv[1], progress=False) if sys.argv[3] == "resume" else \\
          Trainer(config, sys.argv[1], callbacks=[Marker()], progress=False)
trainer.fit()
trainer.test()
"""
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}   # both runs use the same thread count, so the same arithmetic
DETERMINISTIC = ("stage", "epoch", "train_loss", "valid_loss", "lr", "optimizer", "switched", "best", "mean_seq_len",
                 "n_batches")


def metrics(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: json.loads(l)[k] for k in DETERMINISTIC} for l in lines if l.strip()]


def run(run_dir, marker, mode):
    return subprocess.run([sys.executable, "-c", RUN, str(run_dir), str(marker), mode], env=ENV, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
def test_resume_after_sigkill_equals_the_uninterrupted_run(tmp_path):
    whole, killed, marker = tmp_path / "whole", tmp_path / "killed", tmp_path / "marker"
    r = run(whole, tmp_path / "unused", "new")
    assert r.returncode == 0, r.stderr

    proc = subprocess.Popen([sys.executable, "-c", RUN, str(killed), str(marker), "new"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not marker.exists():                # the condition: the 5th step of epoch 2 is done
        assert proc.poll() is None, f"the training process ended before epoch 2: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no sign of epoch 2 within 10 minutes"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((killed / "checkpoints" / "train-latest.json").read_text())["epoch"] == 1
    assert len(metrics(killed)) == 1

    r = run(killed, marker, "resume")
    assert r.returncode == 0, r.stderr
    assert metrics(killed) == metrics(whole)
    a, b = (load_file(str(d / "best.safetensors")) for d in (killed, whole))   # the header's key order may differ
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with safe_open(str(killed / "best.safetensors"), "pt") as fk, safe_open(str(whole / "best.safetensors"), "pt") as fw:
        assert fk.metadata() == fw.metadata()
    res_k, res_w = (json.loads((d / "results.json").read_text())["train"] for d in (killed, whole))
    assert res_k == res_w
    assert not list(killed.rglob(".*.tmp"))   # a temporary file the kill may have left is cleaned up by resume


def test_a_resumed_run_keeps_the_lowered_rate_and_the_fresh_trigger(ptb_corpus, tmp_path):
    """With lr_drop > 1 (the paper's '- NT-ASGD'), a run stopped after its first drop and resumed from its checkpoint
    ends as the uninterrupted run: the lowered rate (in SGD's state) and the fresh trigger (in the checkpoint) survive."""
    torch.set_num_threads(1)
    cfg = TrainConfig(optimizer="sgd", lr_drop=2.0, lr=60.0, nonmono=1, epochs=6, finetune_epochs=0, n_layers=2,
                      emb_size=16, hidden_size=24, batch_size=4, bptt=8, eval_batch_size=4, test_batch_size=4,
                      max_train_tokens=600, max_eval_tokens=200, device="cpu")   # lr 60 on 600 tokens: it fires
    whole = Trainer(cfg, tmp_path / "whole", corpus=ptb_corpus, progress=False)
    whole.fit()
    lrs = [m["lr"] for m in whole.history]
    first_drop = next(i for i, lr in enumerate(lrs) if lr < cfg.lr) + 1      # the epoch whose trigger fired
    assert first_drop < cfg.epochs, "the trigger never fired before the last epoch: the test needs a drop to resume"
    stopped = Trainer(cfg, tmp_path / "killed", corpus=ptb_corpus, progress=False)
    for _ in range(first_drop):
        stopped.run_epoch()
    del stopped
    resumed = Trainer.resume(tmp_path / "killed", corpus=ptb_corpus, progress=False)
    assert resumed.optimizer.param_groups[0]["lr"] == cfg.lr / 2 and type(resumed.optimizer) is torch.optim.SGD
    resumed.fit()
    assert metrics(tmp_path / "killed") == metrics(tmp_path / "whole")
