"""Does awd_edu learn like the paper's own code? Train both on one configuration, several seeds each, and put their
curves side by side.

The awd_edu side runs `awd_edu.train.Trainer` (public API only). The reference side runs `main.py` of a checkout of
the paper's code (salesforce/awd-lstm-lm, given with `--reference PATH`) in a temporary copy, with the minimal textual
patches modern PyTorch needs (`PATCHES` below; the checkout itself is never changed); its per-batch log lines are
parsed. Both record, per epoch: validation loss and perplexity (the main curve), training cross-entropy, batches, ms
per batch and seconds. Then, per epoch: the difference of the seed means of the validation loss (awd_edu minus
reference) and the seed spread of each side (max - min over seeds); the difference is *within the seed spread* when
|difference| <= the larger of the two spreads.

The two runs of one seed go side by side (one process each, `--threads` torch threads each, default 1, so that
2 cores hold both), so that their ms per batch are measured under the same load. Each finished (side, seed) is
written at once to a partial-results file (atomically); a killed run started again with the same arguments skips what
is recorded there (one folder per configuration under --work).

    python benchmarks/fidelity.py --reference /path/to/awd-lstm-lm       # 4 epochs, seeds 141 and 142: hours on 2 cores
    python benchmarks/fidelity.py --tiny                                 # seconds: awd_edu side only (CI's smoke run)
    python benchmarks/fidelity.py --tiny --reference /path/to/awd-lstm-lm  # seconds: both sides, tiny data
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

SIDES = ("awd_edu", "reference")

# The stated configuration: the paper's PTB command (the `ptb` preset) at a size a CPU trains in minutes per epoch.
SMALL = dict(emb_size=128, hidden_size=512, n_layers=3, bptt=35, batch_size=20)
# --tiny: a few hundred tokens of PTB, seconds per run; it checks that the pipeline works, not that numbers agree.
TINY = dict(emb_size=16, hidden_size=32, n_layers=2, bptt=10, batch_size=4, max_train_tokens=600, max_eval_tokens=300)

# TrainConfig field -> main.py flag. Every setting the two sides share is passed explicitly, defaults included.
REFERENCE_FLAGS = (("emb_size", "--emsize"), ("hidden_size", "--nhid"), ("n_layers", "--nlayers"), ("lr", "--lr"),
                   ("clip", "--clip"), ("epochs", "--epochs"), ("batch_size", "--batch_size"), ("bptt", "--bptt"),
                   ("dropout", "--dropout"), ("dropouth", "--dropouth"), ("dropouti", "--dropouti"),
                   ("dropoute", "--dropoute"), ("wdrop", "--wdrop"), ("seed", "--seed"), ("nonmono", "--nonmono"),
                   ("alpha", "--alpha"), ("beta", "--beta"), ("wdecay", "--wdecay"))
# What main.py hard-codes: the awd_edu config must agree, or the comparison is void.
REFERENCE_FIXED = dict(eval_batch_size=10, test_batch_size=1, tie_weights=True)


# ------------------------------------------------------------------------------------------ patching main.py
class PatchError(RuntimeError):
    "A patch site of the reference code was not found exactly once: the checkout is not the expected code."


# (file, what it fixes, regex of the site, replacement). Each regex must match exactly once in
# salesforce/awd-lstm-lm; the second field says why each patch is needed on PyTorch 2.x.
PATCHES = (
    ("main.py", "torch.load of the cached corpus: weights_only=False (the default is True since torch 2.6)",
     r"corpus = torch\.load\(fn\)", "corpus = torch.load(fn, weights_only=False)"),
    ("main.py", "torch.load of the saved [model, criterion, optimizer]: weights_only=False",
     r"model, criterion, optimizer = torch\.load\(f\)", "model, criterion, optimizer = torch.load(f, weights_only=False)"),
    ("weight_drop.py", "WeightDrop after an evaluation: in eval mode dropout returns the raw Parameter itself, which "
                       "setattr would register as a parameter; use a clone of it instead",
     r"(?m)^(?P<indent>[ \t]+)w = torch\.nn\.functional\.dropout\(raw_w, p=self\.dropout, training=self\.training\)\n",
     r"\g<0>\g<indent>if w is raw_w: w = raw_w.clone()  # fidelity.py patch: torch >= 1.x\n"),
)


def apply_patches(texts: dict, patches=PATCHES) -> dict:
    "Return `texts` ({file name: source}) with every patch applied; PatchError names any site not found exactly once."
    out = dict(texts)
    for name, why, site, new in patches:
        if name not in out:
            raise PatchError(f"reference patch '{why}': {name} is missing from the reference checkout")
        patched, n = re.subn(site, new, out[name])
        if n != 1:
            raise PatchError(f"reference patch '{why}': expected exactly one match of {site!r} in {name}, found {n}. "
                             f"Is --reference a checkout of salesforce/awd-lstm-lm at commit 1d466ec?")
        out[name] = patched
    return out


def patched_copy(reference: Path, dest: Path) -> dict:
    "Copy the reference checkout's top-level .py files into `dest` and patch them there; sha256 of the originals."
    files = sorted(p for p in Path(reference).glob("*.py") if p.is_file())
    if not any(p.name == "main.py" for p in files):
        raise PatchError(f"{reference} has no main.py: --reference must be a checkout of salesforce/awd-lstm-lm")
    texts = {p.name: p.read_text() for p in files}
    dest.mkdir(parents=True, exist_ok=True)
    for name, text in apply_patches(texts).items():
        (dest / name).write_text(text)
    return {name: hashlib.sha256(texts[name].encode()).hexdigest() for name in sorted({p[0] for p in PATCHES})}


def reference_commit(reference: Path) -> str | None:
    "The git commit of the reference checkout (read only), or None when it is not a git clone."
    try:
        out = subprocess.run(["git", "-C", str(reference), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def reference_command(config: dict, data: str, save: str) -> list:
    "main.py's arguments for `config` (a TrainConfig dict); `--cuda` is store_false there: passing it turns CUDA off."
    for k, v in REFERENCE_FIXED.items():
        if config[k] != v:
            raise SystemExit(f"the reference hard-codes {k}={v!r}; the awd_edu config has {config[k]!r}")
    args = ["main.py", "--data", data, "--model", "LSTM", "--optimizer", "sgd", "--cuda", "--log-interval", "1",
            "--save", save]
    for field, flag in REFERENCE_FLAGS:
        args += [flag, repr(config[field]) if isinstance(config[field], float) else str(config[field])]
    return args


# ------------------------------------------------------------------------------------------ the reference's log
# The reference prints, with --log-interval 1, after every batch b >= 1 (format strings copied from main.py):
#   '| epoch {:3d} | {:5d}/{:5d} batches | lr {:05.5f} | ms/batch {:5.2f} | loss {:5.2f} | ppl {:8.2f} | bpc {:8.3f}'
#   after every epoch:
#   '| end of epoch {:3d} | time: {:5.2f}s | valid loss {:5.2f} | valid ppl {:8.2f} | valid bpc {:8.3f}'
#   at the end:
#   '| End of training | test loss {:5.2f} | test ppl {:8.2f} | test bpc {:8.3f}'
# Its running sum starts at batch 0 and is first printed at batch 1, so the line of batch 1 holds the SUM of the
# cross-entropies of batches 0 and 1 (and their total time); every later line holds one batch. Losses are read from
# the ppl field (ln ppl: 2 decimals of ppl are ~1e-5 nats, the loss field has only 2 decimals).
_NUM = r"([-+]?(?:\d+\.?\d*|inf|nan))"
BATCH_RE = re.compile(rf"^\| epoch\s+(\d+) \|\s+(\d+)/\s*(\d+) batches \| lr\s+{_NUM} \| ms/batch\s+{_NUM} \| "
                      rf"loss\s+{_NUM} \| ppl\s+{_NUM} \| bpc\s+{_NUM}\s*$")
EPOCH_RE = re.compile(rf"^\| end of epoch\s+(\d+) \| time:\s+{_NUM}s \| valid loss\s+{_NUM} \| "
                      rf"valid ppl\s+{_NUM} \| valid bpc\s+{_NUM}\s*$")
TEST_RE = re.compile(rf"^\| End of training \| test loss\s+{_NUM} \| test ppl\s+{_NUM} \| test bpc\s+{_NUM}\s*$")
PARAMS_RE = re.compile(r"^Model total parameters:\s+(\d+)\s*$")


class LogError(ValueError):
    "The reference's output does not have the shape this parser expects."


def _loss_of(ppl: str, loss: str) -> float:
    p = float(ppl)
    return math.log(p) if 0 < p < math.inf else float(loss)


def parse_reference_log(text: str) -> dict:
    """The reference's numbers from its printed output: parameters, per epoch the per-batch lines and validation,
    the final test. Batch lines must run 1, 2, ..., N-1 within an epoch (the log interval must be 1)."""
    n_params, epochs, test, switched_at = None, [], None, None
    batches = []
    for line in text.splitlines():
        if m := PARAMS_RE.match(line):
            n_params = int(m[1])
        elif m := BATCH_RE.match(line):
            e, b = int(m[1]), int(m[2])
            expected = len(batches) + 1
            if e != len(epochs) + 1 or b != expected:
                raise LogError(f"batch line out of order (epoch {e}, batch {b}; expected epoch {len(epochs) + 1}, "
                               f"batch {expected}): run main.py with --log-interval 1. Line: {line!r}")
            batches.append(dict(batch=b, ms=float(m[5]), loss=_loss_of(m[7], m[6])))
        elif m := EPOCH_RE.match(line):
            e = int(m[1])
            if e != len(epochs) + 1:
                raise LogError(f"end of epoch {e} after {len(epochs)} epochs: {line!r}")
            if not batches:
                raise LogError(f"epoch {e} printed no batch line: it needs at least 2 batches to be measured")
            epochs.append(dict(epoch=e, batches=batches, seconds=float(m[2]), valid_loss_printed=_loss_of(m[4], m[3]),
                               valid_ppl_printed=float(m[4])))
            batches = []
        elif m := TEST_RE.match(line):
            test = dict(test_loss_printed=_loss_of(m[2], m[1]), test_ppl_printed=float(m[2]))
        elif line.strip() == "Switching to ASGD":
            switched_at = len(epochs)
    if batches:
        raise LogError(f"{len(batches)} batch lines after the last end-of-epoch line: the run did not finish")
    return dict(n_params=n_params, epochs=epochs, test=test, switched_at=switched_at)


def reference_seq_lens(seed: int, bptt: int, n_rows: int, epochs: int) -> list:
    """Window lengths (rows) of the reference's training batches, per epoch, replayed from its rule: numpy's global
    generator seeded with `seed` (its only use of numpy randomness), `bptt` or `bptt / 2` with p 0.95 / 0.05,
    `max(5, int(normal(base, 5)))`, cut at the end of the stream, while `i < n_rows - 2`."""
    rs = np.random.RandomState(seed)
    out = []
    for _ in range(epochs):
        lens, i = [], 0
        while i < n_rows - 1 - 1:
            base = bptt if rs.random_sample() < 0.95 else bptt / 2.0
            seq_len = max(5, int(rs.normal(base, 5)))
            lens.append(min(seq_len, n_rows - 1 - i))
            i += seq_len
        out.append(lens)
    return out


def reference_epochs(parsed: dict, seq_lens: list | None, valid_rows: int) -> list:
    """Per-epoch records of the reference in the same fields as the awd_edu side.

    - train_loss_batch_mean: (line of batch 1 + lines of batches 2..N-1) / N: the mean of the per-batch mean
      cross-entropies, N the batches of the epoch.
    - train_loss: the token-weighted mean, each batch weighted by its window length from `reference_seq_lens`
      (batches 0 and 1, printed as one sum, each take half of it); None when the replayed count of batches differs
      from the printed one.
    - valid_loss: per predicted token. main.py divides the sum by the rows of the validation stream, not by the rows
      that have a target (one fewer); valid_loss = printed * rows / (rows - 1). The printed value is kept.
    - ms_per_batch: the printed times summed over the epoch / N; ms_per_batch_median: median of batches 2..N-1.
    """
    out = []
    for k, ep in enumerate(parsed["epochs"]):
        bs = ep["batches"]
        n = len(bs) + 1  # batch 0 has no line of its own
        pair, rest = bs[0]["loss"], [b["loss"] for b in bs[1:]]
        lens = seq_lens[k] if seq_lens is not None and k < len(seq_lens) else None
        token_mean = None
        if lens is not None and len(lens) == n:
            weights = [(lens[0] + lens[1]) / 2] + lens[2:]
            token_mean = (pair * weights[0] + sum(l * w for l, w in zip(rest, weights[1:]))) / sum(lens)
        train_ms = sum(b["ms"] for b in bs)
        valid_loss = ep["valid_loss_printed"] * valid_rows / (valid_rows - 1)
        out.append(dict(epoch=ep["epoch"], valid_loss=valid_loss, valid_ppl=math.exp(valid_loss),
                        valid_loss_printed=ep["valid_loss_printed"], train_loss=token_mean,
                        train_loss_batch_mean=(pair + sum(rest)) / n, n_batches=n,
                        replayed_n_batches=None if lens is None else len(lens),
                        ms_per_batch=train_ms / n, ms_per_batch_median=statistics.median(b["ms"] for b in bs[1:])
                        if len(bs) > 1 else None, train_seconds=train_ms / 1000, epoch_seconds=ep["seconds"]))
    return out


# ------------------------------------------------------------------------------------------ comparison
def seed_spread(values: list) -> float:
    "max - min over seeds."
    return max(values) - min(values)


def compare(curves: dict, seeds: list, key: str = "valid_loss") -> list:
    """Per epoch: each side's `key` per seed, its seed mean and spread (max - min), the difference of the means
    (awd_edu - reference), the tolerance (the larger spread) and `within`: |difference| <= tolerance."""
    n_epochs = min(len(curves[side][str(s)]) for side in SIDES for s in seeds)
    rows = []
    for e in range(n_epochs):
        v = {side: [curves[side][str(s)][e][key] for s in seeds] for side in SIDES}
        if any(x is None for side in SIDES for x in v[side]):
            rows.append(dict(epoch=e + 1, awd_edu=v["awd_edu"], reference=v["reference"], difference=None,
                             within=None))
            continue
        mean = {side: statistics.fmean(v[side]) for side in SIDES}
        spread = {side: seed_spread(v[side]) for side in SIDES}
        diff = mean["awd_edu"] - mean["reference"]
        tol = max(spread.values())
        rows.append(dict(epoch=e + 1, awd_edu=v["awd_edu"], reference=v["reference"], mean_awd_edu=mean["awd_edu"],
                         mean_reference=mean["reference"], difference=diff, spread_awd_edu=spread["awd_edu"],
                         spread_reference=spread["reference"], tolerance=tol, within=abs(diff) <= tol))
    return rows


def side_spreads(curves: dict, seeds: list, key: str = "valid_loss") -> list:
    "Per epoch, one side's seed mean and spread of `key` (used when only one side ran)."
    n_epochs = min(len(curves[str(s)]) for s in seeds)
    return [dict(epoch=e + 1, values=[curves[str(s)][e][key] for s in seeds],
                 mean=statistics.fmean(curves[str(s)][e][key] for s in seeds),
                 spread=seed_spread([curves[str(s)][e][key] for s in seeds])) for e in range(n_epochs)]


# ------------------------------------------------------------------------------------------ the awd_edu side
def awd_edu_worker(config: dict, run_dir: Path, threads: int) -> dict:
    "Train `config` with the Trainer, timing every batch through its callback; then test the best weights."
    from awd_edu.model import count_parameters
    from awd_edu.config import TrainConfig
    from awd_edu.train import Trainer
    torch.set_num_threads(threads)
    cfg = TrainConfig.from_preset("ptb").replace(**{k: v for k, v in config.items() if k != "preset"})
    batches, clock = {}, dict(last=None)

    def on_event(e):  # per batch: wall time since the previous event (the previous batch or the epoch's end)
        now = time.perf_counter()
        if e["event"] == "batch":
            batches.setdefault(e["epoch"], []).append(dict(ms=1000 * (now - clock["last"]), loss=e["loss"],
                                                           seq_len=e["seq_len"]))
        clock["last"] = now

    w0 = time.perf_counter()
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a killed attempt's run directory: this (side, seed) starts again
    trainer = Trainer(cfg, run_dir, progress=False, callbacks=[on_event])
    n_params = count_parameters(trainer.model)
    clock["last"] = time.perf_counter()
    history = trainer.fit()
    t0 = time.perf_counter()
    test = trainer.test()
    test_seconds = time.perf_counter() - t0
    epochs = []
    for m in history:
        bs = batches[m["epoch"]]
        if len(bs) != m["n_batches"]:
            raise RuntimeError(f"epoch {m['epoch']}: {len(bs)} batch events for {m['n_batches']} batches")
        train_ms = sum(b["ms"] for b in bs)
        epochs.append(dict(epoch=m["epoch"], valid_loss=m["valid_loss"], valid_ppl=m["valid_ppl"],
                           train_loss=m["train_loss"], train_loss_batch_mean=statistics.fmean(b["loss"] for b in bs),
                           n_batches=m["n_batches"], mean_seq_len=m["mean_seq_len"], ms_per_batch=train_ms / len(bs),
                           ms_per_batch_median=statistics.median(b["ms"] for b in bs[2:]) if len(bs) > 2 else None,
                           train_seconds=train_ms / 1000, epoch_seconds=m["seconds"], optimizer=m["optimizer"]))
    return dict(n_params=n_params, epochs=epochs, test=dict(valid_loss=test["valid_loss"], valid_ppl=test["valid_ppl"],
                test_loss=test["test_loss"], test_ppl=test["test_ppl"], best_epoch=test["epoch"]),
                test_seconds=test_seconds, wall_seconds=time.perf_counter() - w0,
                switched_at=next((m["epoch"] for m in history if m["switched"]), None),
                torch_threads=torch.get_num_threads(), train_config=cfg.to_dict())


# ------------------------------------------------------------------------------------------ data for the reference
def count_tokens(path: Path) -> int:
    "Tokens of a PTB-style file as both sides read it: whitespace words plus one <eos> per line."
    with open(path) as f:
        return sum(len(line.split()) + 1 for line in f)


def reference_data(ptb: Path, dest: Path, tiny: dict | None) -> dict:
    """`dest/{train,valid,test}.txt` for main.py: symlinks to the PTB files, or with `tiny`, their first lines up to
    at least `max_train_tokens` / `max_eval_tokens` tokens. Token and vocabulary counts of what it reads."""
    dest.mkdir(parents=True, exist_ok=True)
    words = set()
    counts = {}
    for split in ("train", "valid", "test"):
        src, dst = ptb / f"ptb.{split}.txt", dest / f"{split}.txt"
        if not src.is_file():
            raise SystemExit(f"no {src}: --data must be a folder holding ptb.train.txt, ptb.valid.txt, ptb.test.txt")
        if tiny is None:
            dst.symlink_to(src.resolve())
        else:
            limit = tiny["max_train_tokens"] if split == "train" else tiny["max_eval_tokens"]
            lines, n = [], 0
            with open(src) as f:
                for line in f:
                    if n >= limit:
                        break
                    lines.append(line)
                    n += len(line.split()) + 1
            dst.write_text("".join(lines))
        with open(dst) as f:
            for line in f:
                words.update(line.split())
        counts[split] = count_tokens(dst)
    return dict(tokens=counts, vocab=len(words | {"<eos>"}))


# ------------------------------------------------------------------------------------------ running the jobs
def _atomic_json(path: Path, obj):
    "Write `obj` as JSON to `path`, all or nothing."
    from awd_edu.files import atomic_write_text
    atomic_write_text(path, json.dumps(obj, indent=1))


def _child_env(threads: int, awd_edu: bool) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    if awd_edu:  # the same awd_edu as this script imports
        env["PYTHONPATH"] = os.pathsep.join([str(common.ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    else:
        env.pop("PYTHONPATH", None)  # the reference imports its own modules only
    return env


class Job:
    "One (side, seed) run as a child process, its output going to a log file."

    def __init__(self, side: str, seed: int, argv: list, cwd: Path, log: Path, env: dict, shown: str):
        self.side, self.seed, self.log, self.shown = side, seed, log, shown
        log.parent.mkdir(parents=True, exist_ok=True)
        self.load_before, self.t0 = common.load_average(), time.perf_counter()
        self._out = open(log, "w")
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self._out, stderr=subprocess.STDOUT)
        print(f"  started {side} seed {seed} (pid {self.proc.pid}), log {log}", flush=True)

    def finish(self) -> int:
        rc = self.proc.wait()
        self._out.close()
        self.wall = time.perf_counter() - self.t0
        self.load_after = common.load_average()
        if rc != 0:
            tail = "".join(self.log.read_text().splitlines(keepends=True)[-30:])
            raise SystemExit(f"{self.side} seed {self.seed} failed (exit {rc}); the end of {self.log}:\n{tail}")
        return rc


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", help="a checkout of salesforce/awd-lstm-lm (never changed); without it, awd_edu only")
    p.add_argument("--epochs", type=int, help="epochs per run (default 4; --tiny: 2)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds, each run on both sides (default 141 142; --tiny: 1 2)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="change the stated configuration on both sides, e.g. emb_size=100 hidden_size=256 (settings "
                        "main.py takes: " + ", ".join(f for f, _ in REFERENCE_FLAGS if f not in ("epochs", "seed")) + ")")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each run (default 1: two runs on 2 cores)")
    p.add_argument("--sequential", action="store_true",
                   help="one run at a time instead of both sides of a seed at once")
    p.add_argument("--data", help="folder of ptb.{train,valid,test}.txt (default: awd_edu.data.ptb_dir())")
    p.add_argument("--tiny", action="store_true", help="tiny model on a few hundred tokens: a smoke test in seconds")
    p.add_argument("--out", help="JSON path (default benchmarks/results/fidelity-cpu.json; --tiny: runs/benchmarks/)")
    p.add_argument("--work", help="logs, run folders and partial results go to WORK/<configuration key>/ "
                                  "(default runs/benchmarks/fidelity[-tiny]/)")
    p.add_argument("--fresh", action="store_true", help="ignore the partial results of an earlier attempt")
    p.add_argument("--worker", nargs=3, metavar=("CONFIG_JSON", "RUN_DIR", "OUT_JSON"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.worker:  # a child process: one awd_edu run
        cfg_path, run_dir, out = args.worker
        _atomic_json(Path(out), awd_edu_worker(json.loads(Path(cfg_path).read_text()), Path(run_dir), args.threads))
        return {}
    from awd_edu.data import ptb_dir
    from awd_edu.model import parameter_counts
    from awd_edu.config import TrainConfig
    torch.set_num_threads(args.threads)  # recorded as the threads of each run
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a `kill` still removes the temporary copy (finally)
    device = torch.device("cpu")
    load_before = common.load_average()
    epochs = args.epochs or (2 if args.tiny else 4)
    seeds = list(args.seeds or ((1, 2) if args.tiny else (141, 142)))
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seeds must be distinct, got {seeds}")
    ptb = Path(args.data).expanduser() if args.data else ptb_dir()
    reference = Path(args.reference).expanduser().resolve() if args.reference else None
    sides = SIDES if reference else ("awd_edu",)
    base = TrainConfig.from_preset("ptb").replace(**(TINY if args.tiny else SMALL), epochs=epochs, device="cpu",
                                                  data_dir=str(ptb))
    shared = {f for f, _ in REFERENCE_FLAGS} - {"epochs", "seed"}
    for item in args.set:
        if item.partition("=")[0].strip().replace("-", "_") not in shared:
            raise SystemExit(f"--set {item}: only settings both sides take can change: {', '.join(sorted(shared))}")
    try:
        base = base.with_overrides(args.set)
    except ValueError as e:
        raise SystemExit(f"--set: {e}") from None
    cfg = base.to_dict()
    work = Path(args.work) if args.work else common.SCRATCH / ("fidelity-tiny" if args.tiny else "fidelity")
    tmp = Path(tempfile.mkdtemp(prefix="awd-edu-fidelity-"))
    try:
        ref_info, ref_data = None, None
        if reference:
            ref_info = dict(path=str(reference), commit=reference_commit(reference),
                            original_sha256=patched_copy(reference, tmp / "reference-code"),
                            patches=[dict(file=f, why=why, site=site, replacement=new) for f, why, site, new in PATCHES])
            ref_data = reference_data(ptb, tmp / "reference-data", TINY if args.tiny else None)
        key_src = dict(config={k: v for k, v in cfg.items() if k != "seed"}, threads=args.threads,
                       sequential=args.sequential, reference=ref_info and ref_info["original_sha256"],
                       ref_data=ref_data)
        key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:16]
        work = work / key  # one folder per configuration (logs, run folders, partial results): others are kept
        work.mkdir(parents=True, exist_ok=True)
        partial_path = work / "partial.json"
        partial = dict(key=key, jobs={})
        if partial_path.is_file() and not args.fresh:
            old = json.loads(partial_path.read_text())
            if old.get("key") == key:
                partial = old
                done = sorted(partial["jobs"])
                print(f"resuming: {len(done)} run(s) already recorded in {partial_path}: {', '.join(done) or '-'}")
        print(f"fidelity: {', '.join(sides)}; emb {cfg['emb_size']}, hidden {cfg['hidden_size']}, {cfg['n_layers']} "
              f"layers, bptt {cfg['bptt']}, batch {cfg['batch_size']}; {epochs} epochs; seeds {seeds}; "
              f"{args.threads} thread(s) per run, {'one run at a time' if args.sequential else 'both sides at once'}")
        commands = {}
        for seed in seeds:
            todo = [s for s in sides if f"{s}/{seed}" not in partial["jobs"]]
            jobs = []
            for side in todo:
                log = work / f"{side}-seed{seed}.log"
                if side == "awd_edu":
                    c = dict(cfg, seed=seed)
                    cfg_path = work / f"awd_edu-seed{seed}.config.json"
                    _atomic_json(cfg_path, c)
                    out = work / f"awd_edu-seed{seed}.result.json"
                    out.unlink(missing_ok=True)
                    run_argv = [sys.executable, str(Path(__file__).resolve()), "--threads", str(args.threads),
                                "--worker", str(cfg_path), str(work / f"awd_edu-seed{seed}.run"), str(out)]
                    jobs.append((Job(side, seed, run_argv, common.ROOT, log, _child_env(args.threads, True),
                                     shlex.join(run_argv)), out))
                else:
                    ref_argv = reference_command(dict(cfg, seed=seed), str(tmp / "reference-data"), "model.pt")
                    run_dir = tmp / f"reference-seed{seed}"
                    shutil.copytree(tmp / "reference-code", run_dir)
                    shown = (f"(cd <patched copy of {reference}> && OMP_NUM_THREADS={args.threads} "
                             f"MKL_NUM_THREADS={args.threads} python -u {shlex.join(ref_argv)})")
                    jobs.append((Job(side, seed, [sys.executable, "-u", *ref_argv], run_dir, log,
                                     _child_env(args.threads, False), shown), None))
                if args.sequential:
                    _collect([jobs.pop()], partial, partial_path, cfg, ref_data)
            _collect(jobs, partial, partial_path, cfg, ref_data)
        for side in sides:
            for seed in seeds:
                commands[f"{side}/{seed}"] = partial["jobs"][f"{side}/{seed}"]["command"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    curves = {side: {str(s): partial["jobs"][f"{side}/{s}"]["epochs"] for s in seeds} for side in sides}
    runs = {side: {str(s): {k: v for k, v in partial["jobs"][f"{side}/{s}"].items() if k != "epochs"} for s in seeds}
            for side in sides}
    expected_params = {side: sum(parameter_counts(v, cfg["emb_size"], cfg["hidden_size"], cfg["n_layers"]).values())
                       for side, v in (("awd_edu", 10_000), ("reference", ref_data and ref_data["vocab"]))
                       if side in sides}
    checks = dict(n_params={side: sorted({runs[side][str(s)]["n_params"] for s in seeds}) for side in sides},
                  n_params_expected=expected_params,
                  n_batches={side: {str(s): [e["n_batches"] for e in curves[side][str(s)]] for s in seeds}
                             for side in sides})
    results = dict(sides=list(sides), seeds=seeds, epochs=epochs, curves=curves, runs=runs, checks=checks,
                   spread={side: {key: side_spreads(curves[side], seeds, key) for key in ("valid_loss", "train_loss")}
                           for side in sides})
    notes = [
        "valid_loss: mean cross-entropy per predicted token of the validation stream (batch 10, windows of bptt) after "
        "each epoch; the reference's printed value divides by the rows of the stream instead of the rows with a "
        "target, so its valid_loss is the printed one times rows / (rows - 1) (valid_loss_printed keeps it as printed)",
        "train_loss: token-weighted mean cross-entropy of the epoch's training batches (dropouts on, AR/TAR excluded); "
        "train_loss_batch_mean: the plain mean over batches of each batch's mean cross-entropy. Reference: from its "
        "per-batch lines (--log-interval 1; the line of batch 1 holds the sum of batches 0 and 1), weighted by window "
        "lengths replayed from its numpy seed (checked: replayed_n_batches == n_batches)",
        "ms_per_batch: training wall time of the epoch / batches (awd_edu: between the trainer's batch events; "
        "reference: its printed ms/batch summed); ms_per_batch_median: median over batches 3..N",
        "within: |mean awd_edu - mean reference| <= max(seed spread awd_edu, seed spread reference), spread = max - min "
        "over seeds; with 2 seeds per side this is a coarse test: even two identical implementations fail it at some "
        "epochs by chance",
        f"the runs of one seed ran {'one at a time' if args.sequential else 'at the same time, side by side'}, "
        f"{args.threads} torch thread(s) each (OMP_NUM_THREADS / torch.set_num_threads)",
    ]
    if args.tiny:
        notes.append("--tiny: a smoke test; awd_edu reads the first max_train_tokens / max_eval_tokens of PTB, the "
                     "reference the first lines of each file up to at least as many tokens, so their vocabularies and "
                     "numbers are not comparable")
    if reference:
        results["reference"] = dict(ref_info, data=ref_data)
        results["comparison"] = {key: compare(curves, seeds, key) for key in
                                 ("valid_loss", "train_loss", "train_loss_batch_mean")}
        results["ms_per_batch"] = {side: statistics.fmean(e["ms_per_batch"] for s in seeds for e in curves[side][str(s)])
                                   for side in sides}
    summary = _summary(results, cfg)
    _print_table(results)
    print(f"\n{summary}")
    config = dict(train_config=cfg, reference_flags=dict(REFERENCE_FLAGS), reference_fixed=REFERENCE_FIXED,
                  threads_per_run=args.threads, side_by_side=not args.sequential, commands=commands,
                  awd_edu_package=str(Path(sys.modules["awd_edu"].__file__).parent))
    rec = common.record("fidelity", __file__, device, config, results, summary, args.tiny, notes, load_before, argv)
    out = common.write_record(rec, args.out or common.default_out("fidelity", device, args.tiny))
    print(f"wrote {out}")
    return rec


def _collect(jobs: list, partial: dict, partial_path: Path, cfg: dict, ref_data: dict | None):
    "Wait for `jobs`, turn each into its per-epoch record, and write the partial results after each one."
    pending = list(jobs)
    try:
        _wait(pending, partial, partial_path, cfg, ref_data)
    finally:
        for job, _ in pending:  # a failure stops the runs still going (their records would be incomplete)
            if job.proc.poll() is None:
                job.proc.terminate()
                job.proc.wait()


def _wait(pending: list, partial: dict, partial_path: Path, cfg: dict, ref_data: dict | None):
    while pending:
        for item in list(pending):
            job, out = item
            if job.proc.poll() is None:
                continue
            pending.remove(item)
            job.finish()
            if job.side == "awd_edu":
                res = json.loads(out.read_text())
            else:
                parsed = parse_reference_log(job.log.read_text())
                train_rows = ref_data["tokens"]["train"] // cfg["batch_size"]
                lens = reference_seq_lens(job.seed, cfg["bptt"], train_rows, len(parsed["epochs"]))
                valid_rows = ref_data["tokens"]["valid"] // REFERENCE_FIXED["eval_batch_size"]
                test_rows = ref_data["tokens"]["test"] // REFERENCE_FIXED["test_batch_size"]
                test = None
                if parsed["test"]:
                    t = parsed["test"]["test_loss_printed"] * test_rows / (test_rows - 1)
                    test = dict(parsed["test"], test_loss=t, test_ppl=math.exp(t))
                res = dict(n_params=parsed["n_params"], epochs=reference_epochs(parsed, lens, valid_rows), test=test,
                           switched_at=parsed["switched_at"], torch_threads=None)
            if len(res["epochs"]) != cfg["epochs"] or not res["test"]:
                raise LogError(f"{job.side} seed {job.seed} recorded {len(res['epochs'])} of {cfg['epochs']} epochs "
                               f"and {'a' if res['test'] else 'no'} test result; see {job.log}")
            res.update(command=job.shown, wall_seconds_process=job.wall, load_before=job.load_before,
                       load_after=job.load_after, log=str(job.log))
            partial["jobs"][f"{job.side}/{job.seed}"] = res
            _atomic_json(partial_path, partial)
            last = res["epochs"][-1]
            print(f"  done {job.side} seed {job.seed}: {job.wall / 60:.1f} min, valid ppl {last['valid_ppl']:.2f} "
                  f"after {last['epoch']} epochs, {last['ms_per_batch']:.0f} ms/batch", flush=True)
        if pending:
            time.sleep(0.2)


def _print_table(results: dict):
    seeds, sides = results["seeds"], results["sides"]
    heads = ["epoch"] + [f"{side} s{s}" for side in sides for s in seeds]
    if "comparison" in results:
        heads += ["Δ mean loss", "spread awd_edu", "spread ref", "within"]
    rows = []
    for e in range(results["epochs"]):
        row = [e + 1] + [f"{results['curves'][side][str(s)][e]['valid_ppl']:.2f}" for side in sides for s in seeds]
        if "comparison" in results:
            c = results["comparison"]["valid_loss"][e]
            row += [f"{c['difference']:+.4f}", f"{c['spread_awd_edu']:.4f}", f"{c['spread_reference']:.4f}",
                    "yes" if c["within"] else "NO"]
        rows.append(row)
    print("\nvalidation perplexity per epoch (differences and spreads in nats of validation loss):")
    common.print_table(rows, heads)
    rows = []
    for side in sides:
        for s in seeds:
            r, eps = results["runs"][side][str(s)], results["curves"][side][str(s)]
            test = r.get("test") or {}
            rows.append([side, s, r["n_params"], "/".join(str(e["n_batches"]) for e in eps),
                         f"{statistics.fmean(e['ms_per_batch'] for e in eps):.1f}",
                         f"{statistics.fmean(e['epoch_seconds'] for e in eps):.0f}",
                         f"{test['test_ppl']:.2f}" if test.get("test_ppl") else "-"])
    print()
    common.print_table(rows, ["side", "seed", "params", "batches per epoch", "ms/batch", "s/epoch", "test ppl"])


def _summary(results: dict, cfg: dict) -> str:
    seeds, e = results["seeds"], results["epochs"]
    size = (f"emb {cfg['emb_size']}/hidden {cfg['hidden_size']}/{cfg['n_layers']} layers, bptt {cfg['bptt']}, "
            f"batch {cfg['batch_size']}")
    last = {side: [results["curves"][side][str(s)][-1]["valid_ppl"] for s in seeds] for side in results["sides"]}
    ppl = "; ".join(f"{side} {' / '.join(f'{p:.1f}' for p in last[side])}" for side in results["sides"])
    text = f"valid ppl after {e} epochs (seeds {', '.join(map(str, seeds))}): {ppl}; {size}"
    if "comparison" in results:
        rows = results["comparison"]["valid_loss"]
        n_in = sum(bool(r["within"]) for r in rows)
        ms = results["ms_per_batch"]
        diffs = ", ".join(f"{r['difference']:+.4f}" for r in rows)
        if len(seeds) > 1:
            text += (f"; mean valid loss awd_edu - reference within the seed spread at {n_in}/{len(rows)} epochs "
                     f"(last: {rows[-1]['difference']:+.4f} nats, spread {rows[-1]['tolerance']:.4f})")
        else:   # one seed per side: there is no spread to compare against, only the differences
            text += f"; valid loss awd_edu - reference per epoch: {diffs} nats (one seed per side: no seed spread)"
        loads = [run.get("load_before") for side in results["runs"].values() for run in side.values()]
        same = len({None if not l else round(l[0]) for l in loads}) == 1
        text += (f"; {ms['awd_edu']:.0f} vs {ms['reference']:.0f} ms/batch"
                 + ("" if same else " (runs recorded under different loads: see load_before of each run)"))
    return text


if __name__ == "__main__":
    main()
