"""Data-parallel training through torch.distributed (2 gloo processes on 127.0.0.1, launched by torchrun): the same
numbers as one process at the same global batch, identical weights in every process, exact resume."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from awd_edu.distributed import Group, shard_columns

# One worker per process. It trains a tiny config, and after each epoch every process records a digest of its
# weights (and rank 0 the metrics). argv: run_dir, out_dir, mode (new|resume), epochs, then key=value overrides.
WORKER = r"""
import hashlib, json, sys
from pathlib import Path
import torch
from awd_edu.callbacks import Callback
from awd_edu.config import TrainConfig
from awd_edu.distributed import init_from_env
from awd_edu.train import Trainer
torch.set_num_threads(1)
group = init_from_env()
run_dir, out, mode, epochs = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
overrides = dict(a.split("=", 1) for a in sys.argv[5:])
config = TrainConfig.from_preset("tiny").with_overrides([f"{k}={v}" for k, v in overrides.items()] + [f"epochs={epochs}"])
digests = []
def digest(model):
    return hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())).hexdigest()
if mode == "new":
    trainer = Trainer(config, run_dir, progress=False)
else:
    trainer = Trainer.resume(run_dir, progress=False, epochs=epochs)
while not trainer.finished:
    trainer.run_epoch()
    digests.append(digest(trainer.model))
out.mkdir(parents=True, exist_ok=True)
(out / f"rank{group.rank}.json").write_text(json.dumps(dict(digests=digests, world=group.world_size,
                                                         train_rows=trainer.data["train"].shape[1],
                                                         history=trainer.history)))
"""

QUIET = dict(dropout=0.0, dropouth=0.0, dropouti=0.0, dropoute=0.0, wdrop=0.0)   # no masks: nothing random
SMALL = dict(max_train_tokens=4000, max_eval_tokens=1000, batch_size=10)


def launch(tmp_path, n, run_dir, out, mode, epochs, **overrides):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    args = [f"{k}={v}" for k, v in {**SMALL, **overrides}.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           str(script), str(run_dir), str(out), mode, str(epochs), *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads((out / f"rank{i}.json").read_text()) for i in range(n)]


def losses(history):
    return [(m["epoch"], m["train_loss"], m["valid_loss"], m["optimizer"], m["switched"]) for m in history]


def test_a_batch_the_processes_cannot_share_evenly_is_refused():
    source = torch.arange(30).view(3, 10)
    assert torch.equal(shard_columns(source, Group(1, 2)), source[:, 5:])
    assert torch.equal(shard_columns(source, Group(0, 1)), source)
    with pytest.raises(ValueError, match="batch_size=10 cannot be split evenly over 3 processes"):
        shard_columns(source, Group(0, 3))


@pytest.mark.slow
def test_two_processes_give_the_numbers_of_one_including_the_nt_asgd_switch(tmp_path):
    # nonmono=1 on 4,000 tokens: the unregularised model overfits within a few epochs and the trigger fires
    cfg = dict(QUIET, nonmono=1)
    one = launch(tmp_path, 1, tmp_path / "one", tmp_path / "out1", "new", 5, **cfg)[0]
    two = launch(tmp_path, 2, tmp_path / "two", tmp_path / "out2", "new", 5, **cfg)
    assert two[0]["train_rows"] == two[1]["train_rows"] == one["train_rows"] // 2 == 5
    h1, h2 = losses(one["history"]), losses(two[0]["history"])
    assert any(m["switched"] for m in one["history"]), "the trigger must fire within the run for this test"
    assert [(e, o, s) for e, _, _, o, s in h1] == [(e, o, s) for e, _, _, o, s in h2]   # the same switch epoch
    diffs = [max(abs(a[1] - b[1]), abs(a[2] - b[2])) for a, b in zip(h1, h2)]
    print("largest difference per epoch (train or valid loss):", diffs)
    assert max(diffs) < 1e-3                                   # float sums in another order, nothing else
    assert h2 == losses(two[1]["history"])                     # every process saw the same numbers
    assert (tmp_path / "two" / "best.safetensors").is_file()


@pytest.mark.slow
def test_with_every_regulariser_on_the_processes_hold_identical_weights_and_resume_exactly(tmp_path):
    two = launch(tmp_path, 2, tmp_path / "whole", tmp_path / "w", "new", 3)
    assert two[0]["digests"] == two[1]["digests"] and len(set(two[0]["digests"])) == 3
    assert losses(two[0]["history"]) == losses(two[1]["history"])
    part = launch(tmp_path, 2, tmp_path / "split", tmp_path / "a", "new", 1)
    rest = launch(tmp_path, 2, tmp_path / "split", tmp_path / "b", "resume", 3)
    assert rest[0]["digests"] == rest[1]["digests"] == two[0]["digests"][1:]     # bit for bit, every process
    metrics = [json.loads(l) for l in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert losses(metrics) == losses(two[0]["history"])
    state = torch.load(tmp_path / "split" / "checkpoints" / "train-e0003.state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    assert not torch.equal(state["ranks"][0]["torch_rng"], state["ranks"][1]["torch_rng"])   # own masks per process


@pytest.mark.slow
def test_resuming_with_another_number_of_processes_is_refused(tmp_path):
    launch(tmp_path, 2, tmp_path / "r", tmp_path / "a", "new", 1)
    script = tmp_path / "worker.py"
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "r"), str(tmp_path / "b"), "resume", "2"],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode != 0 and "run of 2 process(es)" in r.stderr and "--nproc_per_node 2" in r.stderr


@pytest.mark.slow
def test_the_readme_commands_train_and_resume_through_torchrun(tmp_path):
    "`torchrun -m awd_edu.cli train ...` and `... resume` with 2 gloo processes, as the README shows them."
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    def torchrun(*args):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "awd_edu.cli",
               *args, "--quiet", "--no-report"]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    r = torchrun("train", "--preset", "tiny", "--run-dir", str(run), "--epochs", "1",
                 "--set", "max_train_tokens=4000", "--set", "max_eval_tokens=1000")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("train epoch   1:") == 1                  # one process speaks for the run
    r = torchrun("resume", str(run), "--epochs", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming" in r.stdout and r.stdout.count("train epoch   2:") == 1
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    assert torch.load(run / "checkpoints" / "train-e0002.state.pt", weights_only=True)["world_size"] == 2
