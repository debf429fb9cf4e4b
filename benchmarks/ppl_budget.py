"""How far does validation perplexity fall in a fixed wall-clock budget? Train a preset through `awd_edu.train`
for `--minutes` and record validation perplexity against minutes and epochs.

The clock counts everything training costs: the steps, each epoch's validation and checkpoint. Validation runs
after every epoch (the trainer's own, with the averaged weights after the NT-ASGD switch) and once more when the
budget runs out in the middle of an epoch. The preset's epoch limit is lifted (the budget decides) unless `--epochs`
is given. A validation of the untrained model is recorded at minute 0, outside the budget.

    python benchmarks/ppl_budget.py --device cpu --preset ptb-small --minutes 10
    python benchmarks/ppl_budget.py --device cuda --preset ptb --minutes 30
    python benchmarks/ppl_budget.py --tiny                  # seconds: CI's smoke run (tiny preset)
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from awd_edu.data import load_ptb  # noqa: E402
from awd_edu.model import count_parameters  # noqa: E402
from awd_edu.ntasgd import averaged_weights  # noqa: E402
from awd_edu.config import PRESETS, TrainConfig  # noqa: E402
from awd_edu.train import Trainer  # noqa: E402


class BudgetSpent(Exception):
    "Raised from the trainer's batch callback when the wall-clock budget is used up."


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--preset", default="ptb-small", choices=list(PRESETS), help="awd_edu.train preset (default ptb-small)")
    p.add_argument("--minutes", type=float, help="wall-clock budget in minutes (default 10; --tiny: 0.1)")
    p.add_argument("--epochs", type=int, help="also stop after this many epochs (default: only the budget stops it)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override TrainConfig settings")
    p.add_argument("--run-dir", help="keep the run (config, metrics, checkpoints) here; default a temporary folder")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--tiny", action="store_true", help="the tiny preset for 0.1 minutes: a smoke test in seconds")
    p.add_argument("--out", help="JSON path (default benchmarks/results/ppl_budget-<device>.json; --tiny: runs/)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    minutes = args.minutes if args.minutes is not None else 0.1 if args.tiny else 10.0
    if minutes <= 0:
        raise SystemExit(f"--minutes must be > 0, got {minutes}")
    device, load_before = common.begin(args)
    preset = "tiny" if args.tiny else args.preset
    budget = 60.0 * minutes
    config = TrainConfig.from_preset(preset, device=str(device)).with_overrides(args.set)
    config = config.replace(epochs=args.epochs or 10**6)  # the budget decides when to stop
    corpus = load_ptb(config.data_dir)
    tmp = None if args.run_dir else tempfile.TemporaryDirectory(prefix="awd-edu-ppl-budget-")
    run_dir = args.run_dir or tmp.name
    state = dict(start=None, rows=0)
    n_rows = None

    def on_event(e):  # the trainer's callback: count rows for fractional epochs, stop when the budget is spent
        if e["event"] == "batch":
            state["rows"] += e["seq_len"]   # the rows of this window
            if time.perf_counter() - state["start"] >= budget:
                raise BudgetSpent

    try:
        trainer = Trainer(config, run_dir=run_dir, corpus=corpus, callbacks=[on_event], progress=False)
        n_rows = len(trainer.data["train"]) - 1
        print(f"ppl_budget on {common.device_info(device)['device_name']}, torch {torch.__version__}")
        print(f"preset {preset}, budget {minutes:g} min; {count_parameters(trainer.model):,} parameters; "
              f"{trainer.data['train'].numel():,} training tokens per epoch")
        v0 = trainer.evaluate_split("valid")
        points = [dict(minutes=0.0, epochs=0.0, valid_ppl=math.exp(v0), train_ppl=None, optimizer="sgd",
                       complete_epoch=True)]
        print(f"  {0.0:6.2f} min  epoch {0.0:5.2f}  valid ppl {math.exp(v0):9.1f} (untrained)")
        state["start"] = time.perf_counter()
        while True:
            state["rows"] = 0
            try:
                m = trainer.run_epoch()
            except BudgetSpent:  # in the middle of an epoch: validate what the model has learnt so far
                with averaged_weights(trainer.model, trainer.optimizer):
                    v = trainer.evaluate_split("valid")
                elapsed = time.perf_counter() - state["start"]
                points.append(dict(minutes=elapsed / 60, epochs=trainer.epoch + state["rows"] / n_rows,
                                   valid_ppl=math.exp(v), train_ppl=None, optimizer=trainer.optimizer_name,
                                   complete_epoch=False))
                p = points[-1]
                print(f"  {p['minutes']:6.2f} min  epoch {p['epochs']:5.2f}  valid ppl {p['valid_ppl']:9.1f} "
                      f"(budget spent mid-epoch)")
                break
            elapsed = time.perf_counter() - state["start"]
            points.append(dict(minutes=elapsed / 60, epochs=float(m["epoch"]), valid_ppl=m["valid_ppl"],
                               train_ppl=m["train_ppl"], optimizer=m["optimizer"], complete_epoch=True,
                               switched=m["switched"]))
            print(f"  {elapsed / 60:6.2f} min  epoch {m['epoch']:5d}  valid ppl {m['valid_ppl']:9.1f}  "
                  f"train ppl {m['train_ppl']:9.1f}  {m['optimizer']}{'  (switch to ASGD)' if m['switched'] else ''}",
                  flush=True)
            if elapsed >= budget or trainer.finished:
                break
        switched_at = trainer.switched_at
    finally:
        if tmp is not None:
            tmp.cleanup()
    final = points[-1]
    best = min(points, key=lambda p: p["valid_ppl"])
    results = dict(points=points, final_valid_ppl=final["valid_ppl"], final_minutes=final["minutes"],
                   final_epochs=final["epochs"], best_valid_ppl=best["valid_ppl"], best_at_minutes=best["minutes"],
                   switched_at_epoch=switched_at, budget_minutes=minutes)
    summary = (f"valid ppl {final['valid_ppl']:.1f} after {final['minutes']:.1f} min ({final['epochs']:.2f} epochs; "
               f"best {best['valid_ppl']:.1f}); preset {preset}, budget {minutes:g} min"
               + (f"; ASGD from epoch {switched_at}" if switched_at else ""))
    print(f"\n{summary}")
    cfg = dict(preset=preset, minutes=minutes, train_config=config.to_dict(), threads=torch.get_num_threads(),
               epochs_limit=args.epochs)
    notes = ["the clock includes each epoch's validation and checkpoint; the minute-0 validation is outside it"]
    rec = common.record("ppl_budget", __file__, device, cfg, results, summary, args.tiny, notes, load_before, argv)
    out = common.write_record(rec, args.out or common.default_out("ppl_budget", device, args.tiny))
    print(f"wrote {out}")
    return rec


if __name__ == "__main__":
    main()
