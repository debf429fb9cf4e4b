"""Data-parallel training through torch.distributed (gloo processes on 127.0.0.1, launched by torchrun): with every
regulariser on, the same numbers as one process at the same global batch (one mask stream, issue #27), identical
weights in every process, exact resume; the old per-process masks, restored, fail the same check."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from awd_edu.distributed import Group, share_masks, shard_columns, shared_mean
from awd_edu.dropout import LockedDropout
from awd_edu.model import AWDLSTM

ROOT = Path(__file__).resolve().parents[1]

# One worker per process. It trains a tiny config (then fine-tunes it when asked), and after each training epoch every
# process records a digest of its weights (and every process the metrics). argv: run_dir, out_dir, mode (new|resume),
# epochs, finetune (0|1), then key=value overrides. AWD_EDU_PER_PROCESS_MASKS=1 restores the behaviour before issue
# #27: each process seeds its own random stream (seed + rank) and draws the masks of its own columns only.
WORKER = r"""
import hashlib, json, os, sys
from pathlib import Path
import torch
from awd_edu import distributed
from awd_edu.config import TrainConfig
from awd_edu.distributed import init_from_env
from awd_edu.train import Trainer
torch.set_num_threads(1)
if os.environ.get("AWD_EDU_PER_PROCESS_MASKS"):
    shared_seed = Trainer._seed
    def per_process_seed(self, seed):
        shared_seed(self, seed + self.group.rank)               # a random stream per process ...
        self.generator = torch.Generator().manual_seed(seed)    # ... the window lengths still shared
    Trainer._seed = per_process_seed
    distributed.share_masks = lambda model, group: model        # each draws the masks of its own columns only
group = init_from_env()
run_dir, out, mode, epochs, finetune = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
config = TrainConfig.from_preset("tiny").with_overrides(sys.argv[6:] + [f"epochs={epochs}"])
def digest(model):
    return hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())).hexdigest()
digests = []
trainer = (Trainer(config, run_dir, progress=False) if mode == "new"
           else Trainer.resume(run_dir, progress=False, epochs=epochs))
while trainer.stage == "train" and not trainer.finished:
    trainer.run_epoch()
    digests.append(digest(trainer.model))
if finetune and not (trainer.stage == "finetune" and trainer.finished):
    trainer.finetune()
out.mkdir(parents=True, exist_ok=True)
(out / f"rank{group.rank}.json").write_text(json.dumps(dict(digests=digests, world=group.world_size,
                                                         train_rows=trainer.data["train"].shape[1],
                                                         history=trainer.history)))
"""

SMALL = dict(max_train_tokens=4000, max_eval_tokens=1000)   # the tiny preset (batch 10, every regulariser on), cut
SAME = 2e-3   # "the same numbers": per-epoch losses within this many nats (float sums in another order, nothing else)


def launch(tmp_path, n, run_dir, out, mode, epochs, finetune=False, per_process_masks=False, **overrides):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    args = [f"{k}={v}" for k, v in {**SMALL, **overrides}.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    env.pop("AWD_EDU_PER_PROCESS_MASKS", None)
    if per_process_masks:
        env["AWD_EDU_PER_PROCESS_MASKS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           str(script), str(run_dir), str(out), mode, str(epochs), "1" if finetune else "0", *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads((out / f"rank{i}.json").read_text()) for i in range(n)]


def losses(history):
    return [(m["stage"], m["epoch"], m["train_loss"], m["valid_loss"], m["optimizer"], m["switched"]) for m in history]


def gaps(one, many):
    "Per epoch, the larger of the train and valid loss differences; the epochs, stages and switches must match."
    a, b = losses(one), losses(many)
    assert [(s, e, o, w) for s, e, _, _, o, w in a] == [(s, e, o, w) for s, e, _, _, o, w in b]
    return [max(abs(x[2] - y[2]), abs(x[3] - y[3])) for x, y in zip(a, b)]


def test_a_batch_the_processes_cannot_share_evenly_is_refused():
    source = torch.arange(30).view(3, 10)
    assert torch.equal(shard_columns(source, Group(1, 2)), source[:, 5:])
    assert torch.equal(shard_columns(source, Group(0, 1)), source)
    with pytest.raises(ValueError, match="batch_size=10 cannot be split evenly over 3 processes"):
        shard_columns(source, Group(0, 3))


def test_share_masks_gives_every_locked_dropout_this_process_block():
    model = AWDLSTM(30, emb_size=4, hidden_size=6, n_layers=2)
    share_masks(model, Group(1, 4))
    locked = [m for m in model.modules() if isinstance(m, LockedDropout)]
    assert len(locked) == 3 and all(m.shard == (1, 4) for m in locked)      # input, between layers, output
    assert all(m.shard == (0, 1) for m in share_masks(model, Group()).modules() if isinstance(m, LockedDropout))


def _step(model, x, y, seed):
    "One training forward and backward under `torch.manual_seed(seed)`: logits, U masks, gradients."
    from awd_edu.loop import lm_loss
    torch.manual_seed(seed)
    model.zero_grad()
    out = model(x)
    lm_loss(out, y, 2.0, 1.0)[0].backward()
    return (out.logits.detach(), [r.last_masks["weight_hh_l0"] for r in model.rnns],
            [p.grad.clone() for p in model.parameters()])


def test_two_processes_draw_one_process_masks_and_average_to_its_gradient():
    "The data-parallel step, simulated in one process: every mask one process draws, and DDP's mean of gradients."
    import copy
    torch.manual_seed(0)
    model = AWDLSTM(40, emb_size=6, hidden_size=10, n_layers=2, dropout=0.4, dropouth=0.3, dropouti=0.4,
                    dropoute=0.2, wdrop=0.5).train()
    x, y = torch.randint(40, (7, 6)), torch.randint(40, (7, 6))             # (T, B): 6 sequences, 3 per process
    logits, masks, grads = _step(model, x, y, seed=5)
    halves = [(x[:, 3 * r:3 * r + 3], y[:, 3 * r:3 * r + 3]) for r in range(2)]
    now = [_step(share_masks(copy.deepcopy(model), Group(r, 2)), *halves[r], seed=5) for r in range(2)]
    assert torch.allclose(torch.cat([n[0] for n in now], dim=1), logits, atol=1e-6)   # the whole batch's outputs
    assert all(torch.equal(m, w) for n in now for m, w in zip(n[1], masks))           # the same U masks everywhere
    for g, g0, g1 in zip(grads, now[0][2], now[1][2]):
        assert torch.allclose((g0 + g1) / 2, g, atol=1e-6)                  # DDP's average = one process's gradient
    old = [_step(copy.deepcopy(model), *halves[r], seed=5 + r) for r in range(2)]   # a stream per process, own masks
    assert not torch.equal(old[1][1][0], masks[0])
    assert (torch.cat([o[0] for o in old], dim=1) - logits).abs().max() > 1e-2


def test_shared_mean_of_one_process_is_the_score_itself():
    source = torch.arange(20.0).view(4, 5)
    assert shared_mean(lambda s: float(s.sum()), source, Group()) == 190.0


def test_mask_stream_benchmark_tiny_writes_its_table_and_record(tmp_path):
    out = tmp_path / "ms.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "mask_stream.py"), "--tiny", "--threads", "1",
                        "--worlds", "2,4", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads(out.read_text())
    assert rec["name"] == "mask_stream" and rec["tiny"] and list(rec["results"]) == ["own", "W=2", "W=4"]
    assert [rec["results"][k]["locked_mask_columns"] for k in ("own", "W=2", "W=4")] == [4, 8, 16]
    assert rec["results"]["own"]["ratio_to_own_paired_median"] == 1.0 and "W=4" in rec["summary"]
    assert "/own (paired)" in r.stdout


@pytest.mark.slow
def test_the_tiny_preset_on_two_processes_gives_one_process_numbers_and_the_old_masks_do_not(tmp_path):
    "Issue #27's check: the tiny preset as shipped (every regulariser on), 2 epochs and fine-tuning, 1 vs 2 processes."
    one = launch(tmp_path, 1, tmp_path / "one", tmp_path / "o1", "new", 2, finetune=True)[0]
    two = launch(tmp_path, 2, tmp_path / "two", tmp_path / "o2", "new", 2, finetune=True)
    assert [m["stage"] for m in one["history"]] == ["train", "train", "finetune", "finetune"]
    assert losses(two[0]["history"]) == losses(two[1]["history"])           # every process saw the same numbers
    now = gaps(one["history"], two[0]["history"])
    print("largest loss difference per epoch, shared masks:", now)
    assert max(now) < SAME
    old = launch(tmp_path, 2, tmp_path / "old", tmp_path / "o3", "new", 2, finetune=True, per_process_masks=True)
    before = gaps(one["history"], old[0]["history"])
    print("largest loss difference per epoch, a stream per process (before issue #27):", before)
    assert max(before) > SAME                                               # the check tells the two apart


@pytest.mark.slow
def test_one_two_and_three_processes_agree_across_the_switch_fine_tuning_and_a_resume(tmp_path):
    "Batch 12 (1, 2 and 3 divide it); nonmono=1 on 4,000 tokens: the trigger fires (epoch 5 of 6); 2 processes killed and resumed."
    cfg = dict(batch_size=12, eval_batch_size=12, nonmono=1)
    one = launch(tmp_path, 1, tmp_path / "one", tmp_path / "o1", "new", 6, finetune=True, **cfg)[0]
    assert any(m["switched"] for m in one["history"]), "the trigger must fire within the run for this test"
    three = launch(tmp_path, 3, tmp_path / "three", tmp_path / "o3", "new", 6, finetune=True, **cfg)
    assert three[0]["train_rows"] == one["train_rows"] // 3 == 4
    launch(tmp_path, 2, tmp_path / "two", tmp_path / "a", "new", 2, **cfg)   # "killed" after epoch 2 ...
    launch(tmp_path, 2, tmp_path / "two", tmp_path / "b", "resume", 6, finetune=True, **cfg)   # ... and resumed
    two = [json.loads(l) for l in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    for name, many in (("2 processes, resumed", two), ("3 processes", three[0]["history"])):
        diffs = gaps(one["history"], many)
        print(f"largest loss difference per epoch, {name}:", diffs)
        assert max(diffs) < SAME


@pytest.mark.slow
def test_with_every_regulariser_on_the_processes_hold_identical_weights_and_resume_exactly(tmp_path):
    two = launch(tmp_path, 2, tmp_path / "whole", tmp_path / "w", "new", 3)
    assert two[0]["digests"] == two[1]["digests"] and len(set(two[0]["digests"])) == 3
    assert losses(two[0]["history"]) == losses(two[1]["history"])
    launch(tmp_path, 2, tmp_path / "split", tmp_path / "a", "new", 1)          # epoch 1, then stop
    rest = launch(tmp_path, 2, tmp_path / "split", tmp_path / "b", "resume", 3)
    assert rest[0]["digests"] == rest[1]["digests"] == two[0]["digests"][1:]     # bit for bit, every process
    metrics = [json.loads(l) for l in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert losses(metrics) == losses(two[0]["history"])
    state = torch.load(tmp_path / "split" / "checkpoints" / "train-e0003.state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    assert torch.equal(state["ranks"][0]["torch_rng"], state["ranks"][1]["torch_rng"])   # one mask stream


@pytest.mark.slow
def test_resuming_with_another_number_of_processes_is_refused(tmp_path):
    launch(tmp_path, 2, tmp_path / "r", tmp_path / "a", "new", 1)
    script = tmp_path / "worker.py"
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "r"), str(tmp_path / "b"), "resume", "2", "0"],
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


def test_resolve_device_turns_a_name_into_this_process_s_device():
    from awd_edu.distributed import resolve_device
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda", Group(1, 2, 1))
