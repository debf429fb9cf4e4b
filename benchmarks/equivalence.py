"""Same weights, same windows, the same dropout masks (then every dropout off): do awd_edu and the paper's code
compute the same numbers?

The fidelity curves (`fidelity.py`) are two samples of a random process: the two implementations draw their dropout
masks and window lengths from different random streams, so a gap between their curves is chance or a bug. This check
takes the chance out and compares the two implementations number by number. It copies the reference checkout
(salesforce/awd-lstm-lm) into a temporary folder with fidelity.py's patches (the checkout is never changed), imports
its modules from there, builds its `RNNModel` at the stated size, copies that model's initial weights into an awd_edu
`AWDLSTM`, and then checks:

1. data: the reference's `Corpus` gives the same ids as awd_edu's, split by split;
2. evaluation: each side's own evaluation of the validation stream (batch 10, windows of bptt) at the same weights
   (main.py's `evaluate()` loop is written out here, with the rows / (rows - 1) correction fidelity.py applies:
   main.py cannot be imported, it trains when imported);
3. training, twice from the same initial weights: `--steps` SGD steps on the same windows from the same zero state
   (learning rate scaled by window length, gradient clipping, AR, TAR, weight decay), awd_edu's `train_step` on one
   side, main.py's `train()` body written out on the other; the cross-entropy of every step, then every weight.
   First with every dropout on and the same masks on both sides (torch reseeded before each step of each side, and
   awd_edu's DropConnect mask drawn with `bernoulli_` as `F.dropout` draws it), then with every dropout probability
   set to 0;
4. evaluation again, at the weights the run with dropout on reached.

The exit status is 1 when a difference exceeds its tolerance (float32 arithmetic in another order: 1e-5 nats for a
loss; 1e-5 of the largest change the steps made for a weight).

    python benchmarks/equivalence.py --reference /path/to/awd-lstm-lm          # about 2 minutes on one core
    python benchmarks/equivalence.py --reference /path/to/awd-lstm-lm --tiny   # seconds
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import fidelity  # noqa: E402

# float32 arithmetic in another order: losses to 1e-5 nats; weights to 1e-5 of the largest change the steps made (an
# update of lr 30 turns a rounding difference of 1e-7 into ~1e-6 of the change, and steps compound it)
TOL = dict(loss=1e-5, weight_relative=1e-5)
SIZES = dict(emb_size=64, hidden_size=256, n_layers=3, bptt=35, batch_size=20)   # fidelity.py's recorded size
TINY = dict(emb_size=16, hidden_size=32, n_layers=2, bptt=10, batch_size=4)
REFERENCE_MODULES = ("model", "splitcross", "weight_drop", "locked_dropout", "embed_regularize", "data", "utils")


def import_reference(code: Path) -> dict:
    "The reference's modules, imported from the patched copy `code` (and removed from `sys.modules` again)."
    sys.path.insert(0, str(code))
    try:
        for name in REFERENCE_MODULES:
            sys.modules.pop(name, None)
        return {name: __import__(name) for name in ("model", "splitcross", "data")}
    finally:
        sys.path.remove(str(code))
        for name in REFERENCE_MODULES:
            sys.modules.pop(name, None)


def key_map(awd_keys, ref_keys) -> dict:
    "awd_edu state-dict name -> reference name: the raw recurrent matrix sits one module deeper in the reference."
    out = {k: k.replace(".weight_hh_l0_raw", ".module.weight_hh_l0_raw") for k in awd_keys}
    if set(out.values()) != set(ref_keys):
        raise SystemExit(f"the two models' weights do not pair up: only awd_edu {sorted(set(out.values()) - set(ref_keys))}"
                         f", only reference {sorted(set(ref_keys) - set(out.values()))}. Is --reference a checkout "
                         f"of salesforce/awd-lstm-lm at commit 1d466ec?")
    return out


def copy_weights(ref, awd, names: dict):
    "Load the reference model's weights into the awd_edu model (shapes must agree)."
    sd = ref.state_dict()
    awd.load_state_dict({k: sd[r].detach().clone() for k, r in names.items()})


def reference_loss(criterion, ref, output, targets):
    return criterion(ref.decoder.weight, ref.decoder.bias, output, targets)


@torch.no_grad()
def reference_evaluate(ref, criterion, source: torch.Tensor, bptt: int) -> float:
    "main.py's evaluate(): a window's mean loss times its length, summed, / rows; then * rows / (rows - 1)."
    ref.eval()
    hidden, total = ref.init_hidden(source.size(1)), 0.0
    for i in range(0, source.size(0) - 1, bptt):
        s = min(bptt, len(source) - 1 - i)
        data, targets = source[i:i + s], source[i + 1:i + 1 + s].reshape(-1)
        output, hidden = ref(data, hidden)
        total += len(data) * reference_loss(criterion, ref, output, targets).item()
    return total / len(source) * len(source) / (len(source) - 1)


def reference_step(ref, criterion, optimizer, params, data, targets, hidden, cfg):
    "main.py's train() body for one window of `len(data)` rows; returns (cross-entropy, hidden)."
    lr2 = optimizer.param_groups[0]["lr"]
    optimizer.param_groups[0]["lr"] = lr2 * len(data) / cfg.bptt
    ref.train()
    hidden = tuple(tuple(h.detach() for h in layer) for layer in hidden)
    optimizer.zero_grad()
    output, hidden, rnn_hs, dropped_rnn_hs = ref(data, hidden, return_h=True)
    raw_loss = reference_loss(criterion, ref, output, targets.reshape(-1))
    loss = raw_loss + cfg.alpha * dropped_rnn_hs[-1].pow(2).mean()
    loss = loss + cfg.beta * (rnn_hs[-1][1:] - rnn_hs[-1][:-1]).pow(2).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, cfg.clip)
    optimizer.step()
    optimizer.param_groups[0]["lr"] = lr2
    return raw_loss.item(), hidden


def dropout_off(awd, ref):
    "Every drop probability of both models set to 0 (they are read at each forward call)."
    awd.input_drop.p = awd.hidden_drop.p = awd.output_drop.p = 0.0
    awd.dropoute = 0.0
    for rnn in awd.rnns:
        rnn.p = 0.0
    ref.dropout = ref.dropouth = ref.dropouti = ref.dropoute = 0.0
    for rnn in ref.rnns:
        rnn.dropout = 0.0


def check(args) -> dict:
    from awd_edu.config import TrainConfig
    from awd_edu.data import Corpus, batchify, ptb_dir
    from awd_edu.bptt import sample_seq_len
    from awd_edu.loop import evaluate
    from awd_edu.model import AWDLSTM

    torch.set_num_threads(args.threads)
    ptb = Path(args.data).expanduser() if args.data else ptb_dir()
    cfg = TrainConfig.from_preset("ptb").replace(**(TINY if args.tiny else SIZES), device="cpu")
    tmp = Path(tempfile.mkdtemp(prefix="awd-edu-equivalence-"))
    try:
        ref_info = dict(path=str(args.reference), commit=fidelity.reference_commit(args.reference),
                        original_sha256=fidelity.patched_copy(args.reference, tmp / "code"))
        fidelity.reference_data(ptb, tmp / "data", None)
        mods = import_reference(tmp / "code")
        ref_corpus = mods["data"].Corpus(str(tmp / "data"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    corpus = Corpus(ptb)
    same_vocab = ref_corpus.dictionary.idx2word == list(corpus.vocab.itos)
    same_ids = {split: bool(torch.equal(getattr(ref_corpus, split), getattr(corpus, split)))
                for split in ("train", "valid", "test")}
    V = len(corpus.vocab)

    torch.manual_seed(args.seed)
    drops = dict(dropout=cfg.dropout, dropouth=cfg.dropouth, dropouti=cfg.dropouti, dropoute=cfg.dropoute,
                 wdrop=cfg.wdrop)
    with contextlib.redirect_stdout(io.StringIO()):   # the reference prints its layers and each weight drop
        ref = mods["model"].RNNModel("LSTM", V, cfg.emb_size, cfg.hidden_size, cfg.n_layers, tie_weights=True, **drops)
    criterion = mods["splitcross"].SplitCrossEntropyLoss(cfg.emb_size, splits=[], verbose=False)
    awd = AWDLSTM(V, emb_size=cfg.emb_size, hidden_size=cfg.hidden_size, n_layers=cfg.n_layers, **drops)
    names = key_map(awd.state_dict().keys(), ref.state_dict().keys())
    copy_weights(ref, awd, names)
    n_params = dict(awd_edu=sum(p.numel() for p in awd.parameters()), reference=sum(p.numel() for p in ref.parameters()))

    valid = batchify(corpus.valid[:args.eval_tokens] if args.eval_tokens else corpus.valid, cfg.eval_batch_size)

    def evaluations():
        a, r = evaluate(awd, valid, bptt=cfg.bptt), reference_evaluate(ref, criterion, valid, cfg.bptt)
        return dict(awd_edu=a, reference=r, difference=a - r)

    before = evaluations()
    train = batchify(corpus.train, cfg.batch_size)
    g = torch.Generator().manual_seed(args.seed)
    seq_lens = [sample_seq_len(cfg.bptt, g) for _ in range(args.steps)]
    if sum(seq_lens) > len(train) - 1:
        raise SystemExit(f"--steps {args.steps}: the windows need {sum(seq_lens):,} rows and the training stream has "
                         f"{len(train) - 1:,}; use fewer steps (about {(len(train) - 1) // cfg.bptt:,} fit)")
    start_awd, start_ref = copy.deepcopy(awd.state_dict()), copy.deepcopy(ref.state_dict())
    with_dropout = train_both(awd, ref, criterion, names, train, seq_lens, cfg, args.seed, same_masks=True)
    after = evaluations()
    awd.load_state_dict(start_awd); ref.load_state_dict(start_ref)
    dropout_off(awd, ref)
    without_dropout = train_both(awd, ref, criterion, names, train, seq_lens, cfg, args.seed, same_masks=False)
    passed = dict(data=same_vocab and all(same_ids.values()), n_params=n_params["awd_edu"] == n_params["reference"],
                  eval_before=abs(before["difference"]) <= TOL["loss"])
    for label, t in (("dropout_off", without_dropout), ("dropout_on_same_masks", with_dropout)):
        passed[f"train_{label}"] = (t["max_ce_difference"] <= TOL["loss"]
                                    and t["max_weight_difference"] <= TOL["weight_relative"] * t["max_weight_change"]
                                    and t["max_weight_change"] > 0)
    passed["eval_after"] = abs(after["difference"]) <= TOL["loss"]
    return dict(config=cfg.to_dict(), reference=ref_info, vocab=V, same_vocab=same_vocab, same_ids=same_ids,
                n_params=n_params, eval_tokens=int(valid.numel()), eval_before=before, seq_lens=seq_lens,
                train_dropout_off=without_dropout, train_dropout_on_same_masks=with_dropout, eval_after=after,
                tolerances=TOL, passed=passed, all_passed=all(passed.values()))


def bernoulli_mask(raw: torch.Tensor, p: float) -> torch.Tensor:
    "DropConnect's M/(1-p) drawn as the reference draws it (`F.dropout`: bernoulli_(1-p) on a tensor like `raw`)."
    return raw.new_empty(raw.shape).bernoulli_(1 - p).div_(1 - p)


def train_both(awd, ref, criterion, names: dict, train, seq_lens: list, cfg, seed: int, same_masks: bool) -> dict:
    """One SGD step per window length on each side from the current (equal) weights; the cross-entropy of every
    step and then every weight compared. `same_masks`: before each step both sides reseed torch, and awd_edu's
    DropConnect mask is drawn with `bernoulli_` as `F.dropout` draws it (its own draw, `rand >= p`, is equal in
    distribution but takes other numbers); every other mask is drawn the same way by both already, in the same order
    (embedding rows, input, then per layer the recurrent weights and the locked mask)."""
    from awd_edu.loop import train_step
    saved = [rnn.__dict__.get("_mask") for rnn in awd.rnns]
    if same_masks:
        for rnn in awd.rnns:
            rnn._mask = lambda raw, rnn=rnn: bernoulli_mask(raw, rnn.p)
    try:
        opt_a = torch.optim.SGD(awd.parameters(), lr=cfg.lr, weight_decay=cfg.wdecay)
        params_r = list(ref.parameters()) + list(criterion.parameters())
        opt_r = torch.optim.SGD(params_r, lr=cfg.lr, weight_decay=cfg.wdecay)
        start = {k: v.detach().clone() for k, v in awd.state_dict().items()}
        h_a, h_r = awd.init_hidden(cfg.batch_size), ref.init_hidden(cfg.batch_size)
        ce_a, ce_r, i = [], [], 0
        for n, s in enumerate(seq_lens):
            data, targets = train[i:i + s], train[i + 1:i + 1 + s]
            torch.manual_seed(seed + n)
            awd.train()
            c, h_a = train_step(awd, opt_a, data, targets, h_a, cfg)
            ce_a.append(c)
            torch.manual_seed(seed + n)
            c, h_r = reference_step(ref, criterion, opt_r, params_r, data, targets, h_r, cfg)
            ce_r.append(c)
            i += s
    finally:
        for rnn, m in zip(awd.rnns, saved):
            rnn.__dict__.pop("_mask", None)
            if m is not None:
                rnn._mask = m
    sa, sr = awd.state_dict(), ref.state_dict()
    weight_diff = {k: (sa[k] - sr[r]).abs().max().item() for k, r in names.items()}
    return dict(steps=len(seq_lens), ce_awd_edu=ce_a, ce_reference=ce_r,
                max_ce_difference=max(abs(a - b) for a, b in zip(ce_a, ce_r)),
                max_weight_difference=max(weight_diff.values()), weight_difference=weight_diff,
                max_weight_change=max((sa[k] - start[k]).abs().max().item() for k in names))


def summary(res: dict) -> str:
    on, off = res["train_dropout_on_same_masks"], res["train_dropout_off"]
    return (f"{'SAME' if res['all_passed'] else 'DIFFERENT'}: ids {'equal' if res['passed']['data'] else 'DIFFER'}; "
            f"{res['n_params']['awd_edu']:,} parameters each; validation loss at the initial weights "
            f"{res['eval_before']['awd_edu']:.6f} vs {res['eval_before']['reference']:.6f}; {on['steps']} steps with "
            f"dropout on and the same masks: largest cross-entropy difference {on['max_ce_difference']:.1e}, largest "
            f"weight difference {on['max_weight_difference']:.1e} (largest weight change {on['max_weight_change']:.2f})"
            f"; validation loss after them {res['eval_after']['awd_edu']:.6f} vs {res['eval_after']['reference']:.6f}"
            f"; with dropout off: {off['max_ce_difference']:.1e} and {off['max_weight_difference']:.1e}")


def parse_args(argv=None) -> argparse.Namespace:
    "The command line, checked; --tiny's defaults filled in."
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--reference", required=True, type=Path, help="a checkout of salesforce/awd-lstm-lm (never changed)")
    p.add_argument("--tiny", action="store_true", help="a tiny model, 5 steps, 2,000 validation tokens: seconds")
    p.add_argument("--steps", type=int, default=None, help="training steps compared (default 20; --tiny: 5)")
    p.add_argument("--eval-tokens", type=int, default=None,
                   help="validation tokens evaluated (default: all 73,760; --tiny: 2,000)")
    p.add_argument("--seed", type=int, default=141, help="seed of the initial weights and window lengths")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--data", help="folder of ptb.{train,valid,test}.txt (default: awd_edu.data.ptb_dir())")
    p.add_argument("--out", help="JSON path (default benchmarks/results/equivalence-cpu.json; --tiny: runs/benchmarks/)")
    args = p.parse_args(argv)
    if not (args.reference / "main.py").is_file():
        p.error(f"--reference {args.reference}: no main.py there; give a checkout of salesforce/awd-lstm-lm")
    args.steps = args.steps if args.steps is not None else (5 if args.tiny else 20)
    args.eval_tokens = args.eval_tokens if args.eval_tokens is not None else (2000 if args.tiny else 0)
    if args.steps < 1 or args.eval_tokens < 0:
        p.error("--steps must be >= 1 and --eval-tokens >= 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    load_before = common.load_average()
    try:
        res = check(args)
    except fidelity.PatchError as e:   # not the paper's code at the commit the patches were written for
        raise SystemExit(f"equivalence.py: {e}") from None
    rows = [[k, "yes" if v else "NO"] for k, v in res["passed"].items()]
    common.print_table(rows, ["check", "same"])
    on = res["train_dropout_on_same_masks"]
    print("\ndropout on, the same masks on both sides:")
    rows = [[n + 1, s, f"{a:.6f}", f"{r:.6f}", f"{a - r:+.1e}"]
            for n, (s, a, r) in enumerate(zip(res["seq_lens"], on["ce_awd_edu"], on["ce_reference"]))]
    common.print_table(rows, ["step", "seq_len", "cross-entropy awd_edu", "reference", "difference"])
    text = summary(res)
    print(f"\n{text}")
    device = torch.device("cpu")
    rec = common.record("equivalence", __file__, device, dict(steps=args.steps, eval_tokens=args.eval_tokens,
                                                               seed=args.seed, threads=args.threads, tiny=args.tiny),
                        res, text, args.tiny, notes=[
                            "each side evaluates with its own code; main.py's evaluate() and train() bodies are "
                            "transcribed in this script because main.py trains when imported",
                            "dropout on, same masks: torch reseeded before each step of each side and awd_edu's "
                            "DropConnect mask drawn with bernoulli_ as F.dropout draws it; its own draw (rand >= p) "
                            "is equal in distribution but takes other random numbers",
                            "dropout off: every drop probability of both models set to 0, from the same initial "
                            "weights again"], load_before=load_before, argv=argv)
    out = common.write_record(rec, args.out or common.default_out("equivalence", device, args.tiny))
    print(f"wrote {out}")
    return 0 if res["all_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
