"""Same weights, same segments: do the authors' dynamiceval.py and awd_edu.dynamic compute the same numbers?

Krause et al.'s code (benkrause/dynamic-evaluation, `dynamiceval.py`, written for PyTorch 0.2 on top of the paper's
code) is the reference for chapter 09a. This script runs it, not a transcription of it:

1. the paper's code (salesforce/awd-lstm-lm) is copied into a temporary folder with fidelity.py's patches, and
   dynamiceval.py beside it with the patches below (`DYNEVAL_PATCHES`: three for PyTorch 2.x, three that only record
   what it computes); neither checkout is changed, nothing is copied into this project;
2. the paper's `RNNModel` is built at the size of the awd_edu model and given its weights (a run's best weights with
   `--run`, else a small model's initial weights), wrapped so that it returns the decoder's scores as the paper's
   code of 2017 did (dynamiceval.py calls `criterion(output.view(-1, ntokens), targets)`), and saved whole, as
   dynamiceval.py expects to `torch.load` it;
3. `python dynamiceval.py --val ...` runs on the whole training text for its gradient statistics (the first
   `--grad-batches` batches of 100) and on the first `--tokens` tokens of the validation text (whole lines: a folder
   of the PTB files with shortened validation and test files);
4. awd_edu's `gradient_rms` and `dynamic_outputs` run on the same model, batches and segments;
5. compared: the token ids, sqrt(MS_g) weight by weight, and the loss of every segment (the mean over its tokens,
   float32, as both codes compute it).

The exit status is 1 when a difference exceeds its tolerance (float32 arithmetic in another order: 1e-5 nats for a
segment's loss; 1e-5 of the largest sqrt(MS_g) for the statistics).

    python benchmarks/dynamic_equivalence.py --reference PATH/awd-lstm-lm --dyneval PATH/dynamic-evaluation --run runs/ptb-cpu
    python benchmarks/dynamic_equivalence.py --reference PATH/awd-lstm-lm --dyneval PATH/dynamic-evaluation --tiny
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import equivalence  # noqa: E402
import fidelity  # noqa: E402

TOL = dict(segment_loss=1e-5, ms_sqrt_relative=1e-5)
TINY = dict(emb_size=16, hidden_size=32, n_layers=2)  # the model when no --run is given (its initial weights)

# (what it fixes, regex of the site, replacement); each regex must match exactly once in dynamiceval.py
DYNEVAL_PATCHES = (
    ("torch.load of the saved model: weights_only=False (the default is True since torch 2.6)",
     r"model = torch\.load\(f\)", "model = torch.load(f, weights_only=False)"),
    ("repackage_hidden: a tensor is no longer a Variable, so the old test recursed into the tensor itself",
     r"if type\(h\) == Variable:", "if isinstance(h, torch.Tensor):"),
    ("the perplexity printed at the end is a 0-d array now, which cannot be indexed",
     r"print\('perplexity loss: ' \+ str\(loss\[0\]\)\)", "print('perplexity loss: ' + str(loss))"),
    ("record: a list for the loss of every segment",
     r"(?m)^import data\n", "import data\nSEGMENT_LOSSES = []  # dynamic_equivalence.py: the loss of every segment\n"),
    ("record: each segment's loss as it is added to the total",
     r"(?m)^(?P<i>[ \t]+)total_loss \+= \(seq_len/seq_len0\)\*loss\.data\n",
     r"\g<0>\g<i>SEGMENT_LOSSES.append(float(loss.data))  # dynamic_equivalence.py\n"),
    ("record: the statistics sqrt(MS_g) after gradstat(), the evaluated ids, and the losses at the end",
     r"(?m)^gradstat\(\)\n",
     "gradstat()\nimport atexit, json as _json  # dynamic_equivalence.py\n"
     "torch.save({n: p.MS.clone() for n, p in model.named_parameters()}, 'ms_sqrt.pt')\n"
     "torch.save(val_data.view(-1).clone(), 'eval_ids.pt')\n"
     "atexit.register(lambda: open('segment_losses.json', 'w').write(_json.dumps(SEGMENT_LOSSES)))\n"),
)

ADAPTER = '''"""Written by awd_edu's benchmarks/dynamic_equivalence.py into a temporary folder (not part of either code)."""
import torch.nn as nn


class DecodedRNNModel(nn.Module):
    "The paper's RNNModel returning the decoder's scores, as its 2017 code did and dynamiceval.py expects."
    def __init__(self, rnn_model):
        super().__init__()
        self.m = rnn_model

    def forward(self, input, hidden):
        output, hidden = self.m(input, hidden)   # (T*B, d): the last layer's output
        return self.m.decoder(output), hidden    # (T*B, V)

    def init_hidden(self, bsz):
        return self.m.init_hidden(bsz)
'''

BUILDER = '''import json, sys
import torch
sys.path.insert(0, ".")
import model as M
from awd_edu_adapter import DecodedRNNModel
spec = json.load(open(sys.argv[1]))
torch.manual_seed(0)
ref = M.RNNModel("LSTM", spec["vocab"], spec["emb_size"], spec["hidden_size"], spec["n_layers"], dropout=spec["dropout"],
                 dropouth=spec["dropouth"], dropouti=spec["dropouti"], dropoute=spec["dropoute"], wdrop=spec["wdrop"],
                 tie_weights=spec["tie_weights"])
ref.load_state_dict(torch.load(spec["weights"]))
torch.save(DecodedRNNModel(ref), spec["model"])
'''


def patch_dyneval(text: str) -> str:
    "dynamiceval.py with every DYNEVAL_PATCHES applied; PatchError names a site not found exactly once."
    for why, site, new in DYNEVAL_PATCHES:
        text, n = re.subn(site, new, text)
        if n != 1:
            raise fidelity.PatchError(f"dynamiceval.py patch '{why}': expected exactly one match of {site!r}, found "
                                      f"{n}. Is --dyneval a checkout of benkrause/dynamic-evaluation (commit 8f872c5)?")
    return text


def shortened_data(ptb: Path, dest: Path, eval_tokens: int) -> int:
    "`dest/{train,valid,test}.txt`: train whole (a link), valid and test cut after the line reaching `eval_tokens`."
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "train.txt").symlink_to((ptb / "ptb.train.txt").resolve())
    counts = {}
    for split in ("valid", "test"):
        lines, n = [], 0
        with open(ptb / f"ptb.{split}.txt") as f:
            for line in f:
                if n >= eval_tokens:
                    break
                lines.append(line)
                n += len(line.split()) + 1   # the words and <eos>
        (dest / f"{split}.txt").write_text("".join(lines))
        counts[split] = n
    return counts["valid"]


def awd_model(args, vocab_size: int):
    "`(model, drops, sizes, source)`: the awd_edu model compared, its dropouts and sizes, and where its weights came from."
    from awd_edu.model import AWDLSTM
    from awd_edu.rundir import load_best
    if args.run:
        config, corpus, model = load_best(args.run, device="cpu")
        sizes = dict(emb_size=config.emb_size, hidden_size=config.hidden_size, n_layers=config.n_layers,
                     tie_weights=config.tie_weights)
        drops = dict(dropout=config.dropout, dropouth=config.dropouth, dropouti=config.dropouti,
                     dropoute=config.dropoute, wdrop=config.wdrop)
        return model.eval(), drops, sizes, f"best weights of run {Path(args.run).name}"
    torch.manual_seed(args.seed)
    sizes = dict(TINY, tie_weights=True)
    drops = dict(dropout=0.4, dropouth=0.25, dropouti=0.4, dropoute=0.1, wdrop=0.5)
    model = AWDLSTM(vocab_size, **sizes, **drops).eval()
    return model, drops, sizes, f"initial weights of a {TINY} model, seed {args.seed}"


def check(args) -> dict:
    from awd_edu.data import Corpus, batchify, ptb_dir
    from awd_edu.dynamic import dynamic_outputs, gradient_rms

    torch.set_num_threads(args.threads)
    ptb = Path(args.data).expanduser() if args.data else ptb_dir()
    corpus = Corpus(ptb)
    V = len(corpus.vocab)
    awd, drops, sizes, weights_from = awd_model(args, V)
    if awd.vocab_size != V:
        raise SystemExit(f"the run's model has {awd.vocab_size} words and the corpus at {ptb} has {V}")
    tmp = Path(tempfile.mkdtemp(prefix="awd-edu-dynamic-equivalence-"))
    try:
        code = tmp / "code"
        ref_sha = fidelity.patched_copy(args.reference, code)
        dyneval_src = (args.dyneval / "dynamiceval.py").read_text()
        (code / "dynamiceval.py").write_text(patch_dyneval(dyneval_src))
        (code / "awd_edu_adapter.py").write_text(ADAPTER)
        (tmp / "build.py").write_text(BUILDER)
        n_eval = shortened_data(ptb, tmp / "data", args.tokens)

        # the same weights under the reference's names (the raw recurrent matrix one module deeper)
        ref_names = [k.replace(".weight_hh_l0_raw", ".module.weight_hh_l0_raw") for k in awd.state_dict()]
        names = equivalence.key_map(awd.state_dict().keys(), ref_names)
        torch.save({names[k]: v.detach().clone() for k, v in awd.state_dict().items()}, tmp / "weights.pt")
        spec = dict(vocab=V, **sizes, **{k: (v if k != "wdrop" else (v or 0.5)) for k, v in drops.items()},
                    weights=str(tmp / "weights.pt"), model=str(tmp / "model.pt"))
        (tmp / "spec.json").write_text(json.dumps(spec))
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONWARNINGS="ignore")
        env.pop("PYTHONPATH", None)   # the reference's modules, not anything else named `model` or `data`
        built = subprocess.run([sys.executable, str(tmp / "build.py"), str(tmp / "spec.json")], cwd=code,
                               capture_output=True, text=True, env=env)
        if built.returncode != 0:
            raise SystemExit(f"building the paper's RNNModel failed:\n{built.stderr[-3000:]}")
        cmd = ["dynamiceval.py", "--model", str(tmp / "model.pt"), "--data", str(tmp / "data"), "--gpu", "-1", "--val",
               "--lr", repr(args.eta), "--lamb", repr(args.lam), "--epsilon", repr(args.eps), "--bptt",
               str(args.bptt), "--batch_size", str(args.batch_size), "--max_batches", str(args.grad_batches)]
        ran = subprocess.run([sys.executable, *cmd], cwd=code, capture_output=True, text=True, env=env)
        if ran.returncode != 0:
            raise SystemExit(f"dynamiceval.py failed:\n{ran.stdout[-2000:]}\n{ran.stderr[-3000:]}")
        ref_losses = json.loads((code / "segment_losses.json").read_text())
        ref_ms = torch.load(code / "ms_sqrt.pt")
        ref_ids = torch.load(code / "eval_ids.pt")
        ref_ppl = float(re.search(r"perplexity loss: ([-+0-9.eE]+|nan|inf)", ran.stdout).group(1))
        dyneval_info = dict(commit=fidelity.reference_commit(args.dyneval),
                            original_sha256=hashlib.sha256(dyneval_src.encode()).hexdigest(),
                            command="python " + " ".join(c if not c.startswith(str(tmp)) else
                                                         "TMP/" + str(Path(c).relative_to(tmp)) for c in cmd))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    # awd_edu on the same batches and segments
    ids = corpus.valid[:n_eval]
    same_ids = bool(torch.equal(ref_ids.long(), ids))
    train = batchify(corpus.train, args.batch_size)
    ms = gradient_rms(awd, train, args.bptt, args.grad_batches)
    source = batchify(ids, 1)
    awd_losses = [F.cross_entropy(lo, y).item()
                  for lo, _, y in dynamic_outputs(awd, source, ms, args.eta, args.lam, args.eps, args.bptt)]
    static = [F.cross_entropy(lo, y).item()   # eta = 0: the static model on the same segments
              for lo, _, y in dynamic_outputs(awd, source, ms, 0.0, args.lam, args.eps, args.bptt)]
    moved = max(abs(a - b) for a, b in zip(awd_losses, static))   # how far adapting moved the losses

    inverse = {r: a for a, r in names.items()}
    ms_diff = {inverse[r.removeprefix("m.")]: (ms[inverse[r.removeprefix("m.")]] - v).abs().max().item()
               for r, v in ref_ms.items()}
    ms_scale = max(v.abs().max().item() for v in ms.values())
    n = min(len(ref_losses), len(awd_losses))
    diffs = [a - r for a, r in zip(awd_losses[:n], ref_losses[:n])]
    worst = max(range(n), key=lambda k: abs(diffs[k])) if n else None
    rows_read = (args.grad_batches * args.bptt + 1)
    last = V - 1   # on torch >= 0.4 the paper's embedded_dropout passes padding_idx=-1: this word's row gets no
    quirk = dict(word=corpus.vocab.itos[last], id=last,  # gradient through the embedding in the reference
                 in_statistics=int((train[:rows_read] == last).sum()), in_evaluated_text=int((ids[:-1] == last).sum()))
    passed = dict(same_ids=same_ids, same_parameters=set(ms_diff) == set(ms),
                  ms_sqrt=max(ms_diff.values()) <= TOL["ms_sqrt_relative"] * ms_scale,
                  segments_scored=n > 0 and abs(len(ref_losses) - len(awd_losses)) <= 1,
                  segment_losses=n > 0 and max(abs(d) for d in diffs) <= TOL["segment_loss"],
                  adapted=moved > 100 * TOL["segment_loss"])   # else the comparison would test the static model only
    return dict(weights=weights_from, sizes=sizes, vocab=V, tokens=n_eval, grad_batches=args.grad_batches,
                settings=dict(eta=args.eta, lam=args.lam, eps=args.eps, bptt=args.bptt, batch_size=args.batch_size),
                reference=dict(path=Path(args.reference).name, commit=fidelity.reference_commit(args.reference),
                               original_sha256=ref_sha),
                dyneval=dict(dyneval_info, path=Path(args.dyneval).name,
                             patches=[dict(why=w, site=s, replacement=r) for w, s, r in DYNEVAL_PATCHES]),
                reference_perplexity=ref_ppl, segments=dict(reference=len(ref_losses), awd_edu=len(awd_losses),
                                                            compared=n),
                segment_loss_awd_edu=awd_losses, segment_loss_reference=ref_losses, segment_loss_static=static,
                largest_change_from_static=moved,
                max_segment_difference=max(abs(d) for d in diffs) if n else None,
                worst_segment=worst, ms_sqrt_max_difference=ms_diff, ms_sqrt_scale=ms_scale,
                last_word_padding_quirk=quirk, tolerances=TOL, passed=passed, all_passed=all(passed.values()))


def summary(res: dict) -> str:
    s = res["segments"]
    return (f"{'SAME' if res['all_passed'] else 'DIFFERENT'}: {res['weights']}; {s['compared']} segments of "
            f"{res['settings']['bptt']} tokens compared (dynamiceval.py scored {s['reference']}, awd_edu "
            f"{s['awd_edu']}); largest segment-loss difference {res['max_segment_difference']:.1e} nats; largest "
            f"sqrt(MS_g) difference {max(res['ms_sqrt_max_difference'].values()):.1e} (largest value "
            f"{res['ms_sqrt_scale']:.1e}); ids {'equal' if res['passed']['same_ids'] else 'DIFFER'}; adapting moved a "
            f"segment's loss by up to {res['largest_change_from_static']:.3f} nats")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--reference", required=True, type=Path, help="a checkout of salesforce/awd-lstm-lm (never changed)")
    p.add_argument("--dyneval", required=True, type=Path,
                   help="a checkout of benkrause/dynamic-evaluation (never changed)")
    p.add_argument("--run", type=Path, help="a run directory: compare on its best weights (default: a small model)")
    p.add_argument("--tiny", action="store_true", help="300 validation tokens, 3 training batches: seconds")
    p.add_argument("--tokens", type=int, help="validation tokens evaluated, whole lines (default 2,000; --tiny: 300)")
    p.add_argument("--grad-batches", type=int, help="training batches for sqrt(MS_g) (default 20; --tiny: 3)")
    p.add_argument("--eta", type=float, default=None, help="step size (default dynamiceval.py's 5e-5; --tiny: 1e-3)")
    p.add_argument("--lam", type=float, default=0.002, help="decay rate (default dynamiceval.py's 0.002)")
    p.add_argument("--eps", type=float, default=2e-5, help="stabiliser (default dynamiceval.py's 2e-5)")
    p.add_argument("--bptt", type=int, default=5, help="segment length (default 5)")
    p.add_argument("--batch-size", type=int, default=100, help="batch of the statistics (default 100)")
    p.add_argument("--seed", type=int, default=141, help="seed of the small model's weights (without --run)")
    p.add_argument("--threads", type=int, default=1, help="torch threads on each side (default 1)")
    p.add_argument("--data", help="folder of ptb.{train,valid,test}.txt (default: awd_edu.data.ptb_dir())")
    p.add_argument("--out", help="JSON path (default benchmarks/results/dynamic-equivalence-cpu.json; --tiny: runs/)")
    args = p.parse_args(argv)
    if not (args.reference / "main.py").is_file():
        p.error(f"--reference {args.reference}: no main.py there; give a checkout of salesforce/awd-lstm-lm")
    if not (args.dyneval / "dynamiceval.py").is_file():
        p.error(f"--dyneval {args.dyneval}: no dynamiceval.py there; give a checkout of benkrause/dynamic-evaluation")
    if args.run is not None and not (args.run / "best.safetensors").is_file():
        p.error(f"--run {args.run}: not a finished run directory (no best.safetensors)")
    args.tokens = args.tokens if args.tokens is not None else (300 if args.tiny else 2000)
    args.grad_batches = args.grad_batches if args.grad_batches is not None else (3 if args.tiny else 20)
    args.eta = args.eta if args.eta is not None else (1e-3 if args.tiny else 5e-5)
    if args.tokens < 2 * args.bptt or args.grad_batches < 1 or args.bptt < 1 or args.batch_size < 1:
        p.error("--tokens must be >= 2 x --bptt, and --grad-batches, --bptt, --batch-size >= 1")
    if not (args.eta >= 0 and 0 <= args.lam <= 1 and args.eps > 0):
        p.error(f"--eta must be >= 0, --lam in [0, 1], --eps > 0; got {args.eta}, {args.lam}, {args.eps}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    load_before = common.load_average()
    try:
        res = check(args)
    except fidelity.PatchError as e:
        raise SystemExit(f"dynamic_equivalence.py: {e}") from None
    common.print_table([[k, "yes" if v else "NO"] for k, v in res["passed"].items()], ["check", "same"])
    n = res["segments"]["compared"]
    shown = sorted(set(range(min(n, 5))) | set(range(max(0, n - 3), n)) | ({res["worst_segment"]} - {None}))
    print("\nloss of each segment (the first, the last, the largest difference):")
    common.print_table([[k, f"{res['segment_loss_awd_edu'][k]:.6f}", f"{res['segment_loss_reference'][k]:.6f}",
                         f"{res['segment_loss_awd_edu'][k] - res['segment_loss_reference'][k]:+.1e}"] for k in shown],
                       ["segment", "awd_edu", "dynamiceval.py", "difference"])
    q = res["last_word_padding_quirk"]
    if q["in_statistics"] or q["in_evaluated_text"]:
        print(f"\nnote: the last word of the vocabulary ({q['word']!r}) is read {q['in_statistics']} times in the "
              f"statistics' batches and {q['in_evaluated_text']} times in the evaluated text; the paper's "
              f"embedded_dropout (padding_idx=-1 on torch >= 0.4) gives its embedding row no gradient there")
    text = summary(res)
    print(f"\n{text}")
    device = torch.device("cpu")
    raw = list(sys.argv[1:] if argv is None else argv)
    shown_argv = [Path(a).name if i and raw[i - 1] in ("--reference", "--dyneval", "--run", "--out", "--data") else a
                  for i, a in enumerate(raw)]   # no absolute path of this machine in the record
    cfg = dict(tokens=args.tokens, grad_batches=args.grad_batches, eta=args.eta, lam=args.lam, eps=args.eps,
               bptt=args.bptt, batch_size=args.batch_size, threads=args.threads, tiny=args.tiny,
               run=args.run.name if args.run else None, seed=None if args.run else args.seed)
    rec = common.record("dynamic-equivalence", __file__, device, cfg, res, text, args.tiny, notes=[
        "dynamiceval.py itself ran (a patched copy in a temporary folder); its patches are listed in "
        "results.dyneval.patches: three for PyTorch 2.x, three that only record what it computes",
        "the paper's RNNModel is wrapped to return the decoder's scores (DecodedRNNModel), as the paper's code of "
        "2017 returned them; dynamiceval.py calls its criterion on the model's first output",
        "dynamiceval.py's loop stops at i < len - 2, so when (tokens - 1) % bptt == 1 it never scores the last "
        "token; awd_edu scores every target: the segments compared are those both scored"],
        load_before=load_before, argv=shown_argv)
    out = common.write_record(rec, args.out or common.default_out("dynamic-equivalence", device, args.tiny))
    print(f"wrote {out.name}")
    return 0 if res["all_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
