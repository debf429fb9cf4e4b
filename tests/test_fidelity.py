"""benchmarks/fidelity.py: the tiny end-to-end runs write a complete record whose figures follow from its curves, and
the pieces that can fail on their own (the reference's log parser, the patcher, the spread and verdict) do what they
say. The paper's code is not needed: a fake checkout prints lines in its format. With AWD_LSTM_REFERENCE set to a
checkout of salesforce/awd-lstm-lm, one more test runs the real thing at the tiny size."""
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))
import common  # noqa: E402
import fidelity  # noqa: E402
from fidelity import LogError, PatchError  # noqa: E402

# The reference's print formats (main.py, salesforce/awd-lstm-lm at 1d466ec): the format strings only.
FMT_BATCH = ("| epoch {:3d} | {:5d}/{:5d} batches | lr {:05.5f} | ms/batch {:5.2f} | "
             "loss {:5.2f} | ppl {:8.2f} | bpc {:8.3f}")
FMT_EPOCH = ("| end of epoch {:3d} | time: {:5.2f}s | valid loss {:5.2f} | "
             "valid ppl {:8.2f} | valid bpc {:8.3f}")
FMT_TEST = "| End of training | test loss {:5.2f} | test ppl {:8.2f} | test bpc {:8.3f}"


def batch_line(epoch, batch, loss, ms=100.0, n=99, lr=30.0):
    return FMT_BATCH.format(epoch, batch, n, lr, ms, loss, math.exp(loss), loss / math.log(2))


def epoch_line(epoch, loss, seconds=12.5):
    return FMT_EPOCH.format(epoch, seconds, loss, math.exp(loss), loss / math.log(2))


# ------------------------------------------------------------------------------------------ the log parser
def test_parser_reads_every_number_of_the_reference_format():
    lines = ["Applying weight drop of 0.5 to weight_hh_l0", "Model total parameters: 5034768",
             batch_line(1, 1, 2 * 6.9137, ms=300.0), batch_line(1, 2, 6.4871, ms=150.0), batch_line(1, 3, 6.1, ms=170.0),
             "-" * 89, epoch_line(1, 5.8), "-" * 89, "Saving model (new best validation)",
             batch_line(2, 1, 2 * 5.6), batch_line(2, 2, 5.4), epoch_line(2, 5.5), "Switching to ASGD",
             "=" * 89, FMT_TEST.format(5.3, math.exp(5.3), 5.3 / math.log(2)), "=" * 89]
    p = fidelity.parse_reference_log("\n".join(lines) + "\n")
    assert p["n_params"] == 5034768 and p["switched_at"] == 2 and len(p["epochs"]) == 2
    e1 = p["epochs"][0]
    assert [b["batch"] for b in e1["batches"]] == [1, 2, 3] and [b["ms"] for b in e1["batches"]] == [300, 150, 170]
    # losses come from the ppl field (2 decimals of ppl), far finer than the 2 decimals of the loss field
    assert [b["loss"] for b in e1["batches"]] == pytest.approx([13.8274, 6.4871, 6.1], abs=1e-4)
    assert e1["valid_loss_printed"] == pytest.approx(5.8, abs=1e-4) and e1["seconds"] == 12.5
    assert p["test"]["test_loss_printed"] == pytest.approx(5.3, abs=1e-4)
    assert p["test"]["test_ppl_printed"] == pytest.approx(math.exp(5.3), abs=0.006)


def test_parser_refuses_logs_it_would_misread():
    with pytest.raises(LogError, match="--log-interval 1"):  # a log interval of 2 skips batch numbers
        fidelity.parse_reference_log("\n".join([batch_line(1, 2, 6.0), batch_line(1, 4, 6.0)]))
    with pytest.raises(LogError, match="did not finish"):  # killed in the middle of an epoch
        fidelity.parse_reference_log("\n".join([batch_line(1, 1, 6.0), epoch_line(1, 5.0), batch_line(2, 1, 6.0)]))
    with pytest.raises(LogError, match="end of epoch 2 after 0"):
        fidelity.parse_reference_log(epoch_line(2, 5.0))


def test_reference_epochs_averages_as_documented():
    lines = [batch_line(1, 1, 6.0 + 5.0, ms=400.0), batch_line(1, 2, 4.0, ms=100.0), batch_line(1, 3, 3.0, ms=300.0),
             epoch_line(1, 5.0, seconds=2.0)]
    parsed = fidelity.parse_reference_log("\n".join(lines))
    lens = [[30, 10, 20, 40]]  # window lengths of batches 0..3
    (e,) = fidelity.reference_epochs(parsed, lens, valid_rows=101)
    assert e["n_batches"] == 4 and e["replayed_n_batches"] == 4
    assert e["train_loss_batch_mean"] == pytest.approx((6 + 5 + 4 + 3) / 4, abs=1e-4)
    # batches 0 and 1 share their printed sum, each taking half of it with the mean of their lengths
    assert e["train_loss"] == pytest.approx((11 * 20 + 4 * 20 + 3 * 40) / 100, abs=1e-4)
    assert e["valid_loss"] == pytest.approx(5.0 * 101 / 100, abs=1e-4) and e["valid_ppl"] == math.exp(e["valid_loss"])
    assert e["valid_loss_printed"] == pytest.approx(5.0, abs=1e-4)
    assert e["ms_per_batch"] == pytest.approx(800 / 4) and e["ms_per_batch_median"] == 200.0
    assert e["train_seconds"] == pytest.approx(0.8) and e["epoch_seconds"] == 2.0
    (e,) = fidelity.reference_epochs(parsed, [[30, 10, 20]], valid_rows=101)  # the replay disagrees: no weights
    assert e["train_loss"] is None and e["replayed_n_batches"] == 3


def test_replayed_window_lengths_cover_the_stream_like_the_reference_loop():
    n_rows, bptt = 1000, 35
    a = fidelity.reference_seq_lens(141, bptt, n_rows, 3)
    assert a == fidelity.reference_seq_lens(141, bptt, n_rows, 3) != fidelity.reference_seq_lens(142, bptt, n_rows, 3)
    for lens in a:
        assert all(s >= 5 for s in lens[:-1]) and 1 <= lens[-1]
        assert n_rows - 2 <= sum(lens) <= n_rows - 1  # the loop runs while i < rows - 2
    assert a[0] != a[1]  # one numpy stream through all epochs
    assert 30 < statistics.fmean(s for lens in a for s in lens[:-1]) < 35


# ------------------------------------------------------------------------------------------ the patcher
FAKE_MAIN = '''import torch
def model_load(fn):
    with open(fn, 'rb') as f:
        model, criterion, optimizer = torch.load(f)
if False:
    corpus = torch.load(fn)
'''
FAKE_WEIGHT_DROP = '''import torch
class WeightDrop:
    def __init__(self, raw_w, dropout, training):
        self.raw_w, self.dropout, self.training = raw_w, dropout, training

    def _setweights(self):
        raw_w = self.raw_w
        if True:
            w = torch.nn.functional.dropout(raw_w, p=self.dropout, training=self.training)
        return w
'''


def test_patches_apply_and_fix_the_weight_drop_fault():
    texts = {"main.py": FAKE_MAIN, "weight_drop.py": FAKE_WEIGHT_DROP, "utils.py": "x = 1\n"}
    out = fidelity.apply_patches(texts)
    assert out["main.py"].count("weights_only=False") == 2 and out["utils.py"] == "x = 1\n"
    assert "        model, criterion, optimizer = torch.load(f, weights_only=False)\n" in out["main.py"]
    assert texts["main.py"] == FAKE_MAIN  # the input is not changed
    lines = out["weight_drop.py"].splitlines()
    k = next(i for i, line in enumerate(lines) if "functional.dropout(raw_w" in line)
    assert lines[k + 1].startswith(" " * 12 + "if w is raw_w: w = raw_w.clone()")  # same indentation, next line

    def setweights(source, training):
        ns = {}
        exec(compile(source, "weight_drop.py", "exec"), ns)
        raw = torch.nn.Parameter(torch.ones(4, 3))
        return raw, ns["WeightDrop"](raw, 0.5, training)._setweights()

    raw, w = setweights(FAKE_WEIGHT_DROP, training=False)
    assert w is raw  # the fault: in eval mode dropout hands back the Parameter itself
    raw, w = setweights(out["weight_drop.py"], training=False)
    assert w is not raw and not isinstance(w, torch.nn.Parameter) and torch.equal(w, raw)
    torch.manual_seed(0)
    raw, w = setweights(out["weight_drop.py"], training=True)
    assert set(w.unique().tolist()) == {0.0, 2.0}  # training: dropped and scaled by 1 / (1 - p), untouched


def test_a_missing_or_repeated_patch_site_fails_loudly():
    with pytest.raises(PatchError, match=r"main\.py, found 0"):
        fidelity.apply_patches({"main.py": FAKE_MAIN.replace("torch.load(fn)", "torch.load(fn, True)"),
                                "weight_drop.py": FAKE_WEIGHT_DROP})
    with pytest.raises(PatchError, match=r"weight_drop\.py, found 2"):
        doubled = FAKE_WEIGHT_DROP + FAKE_WEIGHT_DROP.split("if True:\n")[1]
        fidelity.apply_patches({"main.py": FAKE_MAIN, "weight_drop.py": doubled})
    with pytest.raises(PatchError, match="weight_drop.py is missing"):
        fidelity.apply_patches({"main.py": FAKE_MAIN})


def test_patched_copy_leaves_the_checkout_alone(tmp_path):
    ref, dest = tmp_path / "ref", tmp_path / "copy"
    ref.mkdir()
    (ref / "main.py").write_text(FAKE_MAIN)
    (ref / "weight_drop.py").write_text(FAKE_WEIGHT_DROP)
    sha = fidelity.patched_copy(ref, dest)
    assert (ref / "main.py").read_text() == FAKE_MAIN and (ref / "weight_drop.py").read_text() == FAKE_WEIGHT_DROP
    assert (dest / "main.py").read_text().count("weights_only=False") == 2
    assert set(sha) == {"main.py", "weight_drop.py"} and all(len(h) == 64 for h in sha.values())
    with pytest.raises(PatchError, match="no main.py"):
        fidelity.patched_copy(tmp_path / "copy" / "nothing-here", tmp_path / "x")


def test_reference_command_passes_every_shared_setting():
    from awd_edu.config import TrainConfig
    cfg = TrainConfig.from_preset("ptb").replace(**fidelity.SMALL, seed=7, epochs=3).to_dict()
    argv = fidelity.reference_command(cfg, "/data", "m.pt")
    assert argv[0] == "main.py" and "--cuda" in argv  # store_false in main.py: passing it switches CUDA off
    flags = dict(zip(argv[1:], argv[2:]))
    assert flags["--log-interval"] == "1" and flags["--data"] == "/data" and flags["--model"] == "LSTM"
    for field, flag in fidelity.REFERENCE_FLAGS:
        assert float(flags[flag]) == cfg[field], (field, flag)
    assert (flags["--emsize"], flags["--nhid"], flags["--bptt"], flags["--seed"]) == ("128", "512", "35", "7")
    with pytest.raises(SystemExit, match="hard-codes eval_batch_size=10"):
        fidelity.reference_command(dict(cfg, eval_batch_size=20), "/data", "m.pt")


def test_set_refuses_what_the_reference_cannot_take(capsys):
    with pytest.raises(SystemExit, match="only settings both sides take"):
        fidelity.main(["--tiny", "--set", "max_train_tokens=5"])
    with pytest.raises(SystemExit, match="--set: setting emb_size must be"):
        fidelity.main(["--tiny", "--set", "emb_size=big"])


# ------------------------------------------------------------------------------------------ spread and verdict
def _curves(values: dict) -> dict:
    "{side: {seed: [per-epoch valid losses]}} -> the curves structure of the record."
    return {side: {str(s): [dict(valid_loss=v) for v in vs] for s, vs in seeds.items()} for side, seeds in values.items()}


def test_compare_on_hand_made_numbers():
    curves = _curves({"awd_edu": {1: [5.0, 4.00], 2: [5.2, 4.02]}, "reference": {1: [5.1, 4.30], 2: [5.15, 4.31]}})
    r1, r2 = fidelity.compare(curves, [1, 2])
    assert r1["mean_awd_edu"] == pytest.approx(5.1) and r1["mean_reference"] == pytest.approx(5.125)
    assert r1["difference"] == pytest.approx(-0.025) and r1["spread_awd_edu"] == pytest.approx(0.2)
    assert r1["spread_reference"] == pytest.approx(0.05) and r1["tolerance"] == pytest.approx(0.2) and r1["within"]
    assert r2["difference"] == pytest.approx(4.01 - 4.305) and r2["tolerance"] == pytest.approx(0.02)
    assert r2["within"] is False
    # the larger spread decides, whichever side it is on
    (r,) = fidelity.compare(_curves({"awd_edu": {1: [1.1], 2: [1.1]}, "reference": {1: [1.2], 2: [1.5]}}), [1, 2])
    assert r["tolerance"] == pytest.approx(0.3) and r["difference"] == pytest.approx(-0.25) and r["within"]
    # a missing value gives no verdict instead of a wrong one
    (r,) = fidelity.compare(_curves({"awd_edu": {1: [1.0], 2: [1.1]}, "reference": {1: [None], 2: [1.0]}}), [1, 2])
    assert r["difference"] is None and r["within"] is None


# ------------------------------------------------------------------------------------------ end to end, tiny
def run_fidelity(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, str(BENCH / "fidelity.py"), *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=timeout, env=env)
    assert out.returncode == 0, f"fidelity.py {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out


def check_record(path: Path, args: tuple, sides: tuple, seeds: list, epochs: int) -> dict:
    rec = json.loads(path.read_text())
    assert set(common.REQUIRED_FIELDS) <= set(rec) and rec["name"] == "fidelity" and rec["tiny"] is True
    shown = [Path(a).name if Path(a).is_absolute() else a for a in args]      # no machine's path in a record
    assert rec["command"] == "python " + " ".join(["benchmarks/fidelity.py", *shown])
    assert rec["torch_version"] == torch.__version__ and rec["device"] == "cpu" and rec["git_commit"]
    assert len(rec["load_average_before"]) == 3 and len(rec["load_average_after"]) == 3
    res = rec["results"]
    assert res["sides"] == list(sides) and res["seeds"] == seeds and res["epochs"] == epochs
    for side in sides:
        for s in seeds:
            eps = res["curves"][side][str(s)]
            assert [e["epoch"] for e in eps] == list(range(1, epochs + 1))
            for e in eps:
                for k in ("valid_loss", "train_loss", "train_loss_batch_mean", "ms_per_batch", "epoch_seconds"):
                    assert math.isfinite(e[k]) and e[k] > 0, (side, s, k, e[k])
                assert e["valid_ppl"] == pytest.approx(math.exp(e["valid_loss"])) and e["n_batches"] >= 2
                assert e["train_seconds"] == pytest.approx(e["ms_per_batch"] * e["n_batches"] / 1000)
            run = res["runs"][side][str(s)]
            assert run["n_params"] > 0 and math.isfinite(run["test"]["test_ppl"]) and run["command"]
            assert rec["config"]["commands"][f"{side}/{s}"] == run["command"]
        # each side's seed spread, recomputed from its curves
        for k, row in enumerate(res["spread"][side]["valid_loss"]):
            vals = [res["curves"][side][str(s)][k]["valid_loss"] for s in seeds]
            assert row["spread"] == pytest.approx(max(vals) - min(vals)) and row["mean"] == pytest.approx(sum(vals) / 2)
    assert res["checks"]["n_params"]["awd_edu"] == [res["checks"]["n_params_expected"]["awd_edu"]]
    assert rec["config"]["train_config"]["emb_size"] == fidelity.TINY["emb_size"]
    return rec


@pytest.mark.slow   # benchmarks/fidelity.py --tiny: trainer runs on PTB in a new interpreter
def test_tiny_awd_edu_only(tmp_path, ptb_folder):
    out = tmp_path / "f.json"
    args = ("--tiny", "--seeds", "3", "4", "--work", str(tmp_path / "work"), "--out", str(out))
    printed = run_fidelity(*args).stdout
    rec = check_record(out, args, ("awd_edu",), [3, 4], 2)
    assert "comparison" not in rec["results"] and "reference" not in rec["results"]
    assert "awd_edu s3" in printed and "valid ppl after 2 epochs" in rec["summary"]
    # a second run with the same arguments takes every (side, seed) from the partial results
    again = run_fidelity(*args).stdout
    assert "resuming: 2 run(s) already recorded" in again and "started" not in again
    assert json.loads(out.read_text())["results"]["curves"] == rec["results"]["curves"]


FAKE_REFERENCE_MAIN = r'''"""A stand-in for the paper's main.py: takes its arguments, prints made-up numbers in its formats."""
import argparse, json, math, os
import numpy as np
# the two patch sites, never run here:
#     corpus = torch.load(fn)
#     model, criterion, optimizer = torch.load(f)
p = argparse.ArgumentParser()
for f in ("--data", "--model", "--optimizer", "--save"):
    p.add_argument(f)
p.add_argument("--cuda", action="store_false")
p.add_argument("--log-interval", type=int)
for f in ("--emsize", "--nhid", "--nlayers", "--epochs", "--batch_size", "--bptt", "--seed", "--nonmono"):
    p.add_argument(f, type=int)
for f in ("--lr", "--clip", "--dropout", "--dropouth", "--dropouti", "--dropoute", "--wdrop", "--alpha", "--beta",
          "--wdecay"):
    p.add_argument(f, type=float)
a = p.parse_args()
assert not a.cuda and a.log_interval == 1 and a.model == "LSTM", a
assert open(__file__).read().count("weights_only" + "=False") == 2, "not run from the patched copy"
assert "raw_w.clone()" in open(os.path.join(os.path.dirname(__file__), "weight_drop.py")).read()
tokens = sum(len(line.split()) + 1 for line in open(os.path.join(a.data, "train.txt")))
rows = tokens // a.batch_size
np.random.seed(a.seed)
truth = dict(epochs=[])
print("Model total parameters:", 4242)
for epoch in range(1, a.epochs + 1):
    i, batch, total, losses, lens = 0, 0, 0.0, [], []
    while i < rows - 1 - 1:
        bptt = a.bptt if np.random.random() < 0.95 else a.bptt / 2.
        seq_len = max(5, int(np.random.normal(bptt, 5)))
        loss = 6.0 - 0.3 * epoch + 0.05 * (batch % 3) + 0.01 * a.seed
        losses.append(loss)
        lens.append(min(seq_len, rows - 1 - i))
        total += loss
        if batch % a.log_interval == 0 and batch > 0:
            print(FMT_BATCH.format(epoch, batch, rows // a.bptt, a.lr, 2.0 + batch % 2, total, math.exp(total),
                                   total / math.log(2)))
            total = 0
        batch += 1
        i += seq_len
    vl = 5.5 - 0.2 * epoch + 0.01 * a.seed
    print("-" * 89)
    print(FMT_EPOCH.format(epoch, 1.25, vl, math.exp(vl), vl / math.log(2)))
    print("-" * 89)
    truth["epochs"].append(dict(losses=losses, lens=lens, valid_loss=vl))
print(FMT_TEST.format(5.0, math.exp(5.0), 5.0 / math.log(2)))
json.dump(truth, open(os.path.join(os.environ["FAKE_TRUTH"], f"seed{a.seed}.json"), "w"))
'''.replace("FMT_BATCH.", repr(FMT_BATCH) + ".").replace("FMT_EPOCH.", repr(FMT_EPOCH) + ".").replace(
    "FMT_TEST.", repr(FMT_TEST) + ".")


@pytest.mark.slow   # benchmarks/fidelity.py --tiny: trainer runs on PTB in a new interpreter
def test_tiny_with_a_fake_reference_compares_as_defined(tmp_path, ptb_folder):
    ref, truth = tmp_path / "fake-awd-lstm-lm", tmp_path / "truth"
    ref.mkdir()
    truth.mkdir()
    (ref / "main.py").write_text(FAKE_REFERENCE_MAIN)
    (ref / "weight_drop.py").write_text(FAKE_WEIGHT_DROP)
    out = tmp_path / "f.json"
    args = ("--tiny", "--reference", str(ref), "--work", str(tmp_path / "work"), "--out", str(out))
    printed = run_fidelity(*args, env=dict(os.environ, FAKE_TRUTH=str(truth))).stdout
    assert (ref / "main.py").read_text() == FAKE_REFERENCE_MAIN  # the checkout is never changed
    rec = check_record(out, args, fidelity.SIDES, [1, 2], 2)
    res = rec["results"]
    assert res["reference"]["path"] == str(ref) and res["reference"]["commit"] is None  # not a git clone
    assert len(res["reference"]["patches"]) == len(fidelity.PATCHES)
    assert "--cuda" in rec["config"]["commands"]["reference/1"]
    assert res["runs"]["reference"]["1"]["n_params"] == 4242
    # the reference's curves are the numbers the fake printed, averaged as documented
    valid_rows = res["reference"]["data"]["tokens"]["valid"] // 10
    for s in (1, 2):
        t = json.loads((truth / f"seed{s}.json").read_text())
        for e, te in zip(res["curves"]["reference"][str(s)], t["epochs"]):
            assert e["n_batches"] == e["replayed_n_batches"] == len(te["losses"])
            assert e["train_loss_batch_mean"] == pytest.approx(statistics.fmean(te["losses"]), abs=1e-4)
            (l0, l1), (s0, s1), rows = te["losses"][:2], te["lens"][:2], sum(te["lens"])
            exact = sum(loss * n for loss, n in zip(te["losses"], te["lens"])) / rows
            # batches 0 and 1 share one printed sum, each weighted by the mean of their lengths: off by at most this
            bound = abs(l0 - l1) * abs(s0 - s1) / (2 * rows)
            assert e["train_loss"] == pytest.approx(exact, abs=bound + 1e-4)
            assert e["valid_loss"] == pytest.approx(te["valid_loss"] * valid_rows / (valid_rows - 1), abs=1e-4)
    # the comparison, recomputed independently from the curves
    for key in ("valid_loss", "train_loss"):
        for k, row in enumerate(res["comparison"][key]):
            a = [res["curves"]["awd_edu"][s][k][key] for s in ("1", "2")]
            r = [res["curves"]["reference"][s][k][key] for s in ("1", "2")]
            diff = (a[0] + a[1]) / 2 - (r[0] + r[1]) / 2
            tol = max(abs(a[0] - a[1]), abs(r[0] - r[1]))
            assert row["difference"] == pytest.approx(diff) and row["tolerance"] == pytest.approx(tol)
            assert row["spread_awd_edu"] == pytest.approx(abs(a[0] - a[1]))
            assert row["spread_reference"] == pytest.approx(abs(r[0] - r[1]))
            assert row["within"] == (abs(diff) <= tol)
    spread = res["spread"]["reference"]["valid_loss"][0]["spread"]  # the fake's seeds 1 and 2 differ by 0.01
    assert spread == pytest.approx(0.01 * valid_rows / (valid_rows - 1), abs=1e-4)
    ms = res["ms_per_batch"]["reference"]
    assert ms == pytest.approx(statistics.fmean(e["ms_per_batch"] for s in ("1", "2")
                                                for e in res["curves"]["reference"][s]))
    assert "within" in printed and "reference s2" in printed


@pytest.mark.skipif(not os.environ.get("AWD_LSTM_REFERENCE"),
                    reason="set AWD_LSTM_REFERENCE to a checkout of salesforce/awd-lstm-lm to run the paper's code")
def test_tiny_with_the_real_reference(tmp_path, ptb_folder):
    ref = Path(os.environ["AWD_LSTM_REFERENCE"])
    before = {p.name: p.read_bytes() for p in ref.glob("*.py")}
    out = tmp_path / "f.json"
    args = ("--tiny", "--reference", str(ref), "--seeds", "5", "6", "--work", str(tmp_path / "w"), "--out", str(out))
    run_fidelity(*args)
    assert {p.name: p.read_bytes() for p in ref.glob("*.py")} == before
    res = check_record(out, args, fidelity.SIDES, [5, 6], 2)["results"]
    checks = res["checks"]
    assert checks["n_params"]["reference"] == [checks["n_params_expected"]["reference"]]
    assert all(e["replayed_n_batches"] == e["n_batches"] for s in ("5", "6") for e in res["curves"]["reference"][s])
