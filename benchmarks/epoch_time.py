"""How long does one Penn Treebank epoch take? One training epoch plus validation with a preset (default `ptb`),
through `awd_edu.train`: seconds per epoch and training tokens per second.

Without `--max-batches`, `Trainer.run_epoch()` runs exactly as in training (variable-length windows, AR/TAR, clipping,
validation at batch 10, the per-epoch checkpoint). With `--max-batches N` (for a CPU, where a full `ptb` epoch takes
about 20 minutes) it times N training steps of the same trainer after a few untimed warm-up steps, validates in
full, and extrapolates the training time to the whole epoch from the time per token; the output and the JSON say so.

    python benchmarks/epoch_time.py                        # ptb preset, cuda if present, one full epoch
    python benchmarks/epoch_time.py --device cpu --max-batches 60
    python benchmarks/epoch_time.py --tiny                 # seconds: CI's smoke run (tiny preset)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from awd_edu.bptt import bptt_batches  # noqa: E402
from awd_edu.data import load_ptb  # noqa: E402
from awd_edu.ntasgd import averaged_weights  # noqa: E402
from awd_edu.config import PRESETS, TrainConfig  # noqa: E402
from awd_edu.loop import train_step  # noqa: E402
from awd_edu.train import Trainer  # noqa: E402


def epoch_plan(source: torch.Tensor, config: TrainConfig, generator: torch.Generator) -> dict:
    "Batches and tokens of the next epoch, drawn from a copy of the trainer's window-length generator."
    g = torch.Generator().set_state(generator.get_state())
    n_batches = tokens = 0
    for inputs, _, _ in bptt_batches(source, config.bptt, g):  # views of `source`: nothing is computed
        n_batches += 1
        tokens += inputs.numel()
    return dict(n_batches=n_batches, tokens=tokens)


def timed_batches(trainer: Trainer, n: int, warmup: int) -> dict:
    "Train `warmup` untimed steps, then `n` timed ones, with the trainer's own `train_step`; seconds and tokens."
    cfg, dev = trainer.config, trainer.device
    trainer.model.train()
    hidden = trainer.model.init_hidden(trainer.data["train"].size(1))
    seconds, tokens, done = 0.0, 0, 0
    for k, (inputs, targets, _) in enumerate(bptt_batches(trainer.data["train"], cfg.bptt, trainer.generator)):
        if k == warmup + n:
            break
        common.sync(dev)
        t0 = time.perf_counter()
        _, hidden = train_step(trainer.model, trainer.optimizer, inputs, targets, hidden, cfg)
        common.sync(dev)
        if k >= warmup:
            seconds += time.perf_counter() - t0
            tokens += targets.numel()
            done += 1
    return dict(seconds=seconds, tokens=tokens, n_batches=done)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--preset", default="ptb", choices=list(PRESETS), help="awd_edu.train preset (default ptb)")
    p.add_argument("--max-batches", type=int, metavar="N",
                   help="time only N training steps and extrapolate to the epoch (said so in the output)")
    p.add_argument("--warmup-batches", type=int, default=2, help="untimed steps before the N timed ones (default 2)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override TrainConfig settings, as `awd-edu train` does (e.g. max_train_tokens=20000)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--tiny", action="store_true", help="the tiny preset: a smoke test in seconds")
    p.add_argument("--out", help="JSON path (default benchmarks/results/epoch_time-<device>.json; --tiny: runs/)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device, load_before = common.begin(args)
    preset = "tiny" if args.tiny else args.preset
    config = TrainConfig.from_preset(preset, device=str(device)).with_overrides(args.set)
    corpus = load_ptb(config.data_dir)
    notes = []
    with tempfile.TemporaryDirectory(prefix="awd-edu-epoch-time-") as run_dir:
        trainer = Trainer(config, run_dir=run_dir, corpus=corpus, progress=False)
        plan = epoch_plan(trainer.data["train"], config, trainer.generator)
        print(f"epoch_time on {common.device_info(device)['device_name']}, torch {torch.__version__}")
        print(f"preset {preset}: {plan['n_batches']} training batches, {plan['tokens']:,} tokens per epoch "
              f"(batch {config.batch_size}, bptt {config.bptt}); validation {trainer.data['valid'].numel():,} tokens "
              f"at batch {config.eval_batch_size}")
        extrapolated = args.max_batches is not None and args.max_batches < plan["n_batches"]
        if extrapolated:
            part = timed_batches(trainer, args.max_batches, args.warmup_batches)
            train_s = part["seconds"] / part["tokens"] * plan["tokens"]
            common.sync(device)
            t0 = time.perf_counter()
            with averaged_weights(trainer.model, trainer.optimizer):
                valid_loss = trainer.evaluate_split("valid")
            common.sync(device)
            valid_s = time.perf_counter() - t0
            notes.append(f"EXTRAPOLATED: {part['n_batches']} training steps timed (after {args.warmup_batches} "
                         f"untimed), {part['tokens']:,} tokens in {part['seconds']:.1f} s, scaled to the epoch's "
                         f"{plan['tokens']:,} tokens; validation run in full; checkpoint writing not included")
            measured = dict(timed_batches=part["n_batches"], timed_tokens=part["tokens"],
                            timed_seconds=part["seconds"])
        else:
            common.sync(device)
            t0 = time.perf_counter()
            m = trainer.run_epoch()
            common.sync(device)
            total = time.perf_counter() - t0
            train_s = plan["tokens"] / m["tokens_per_s"]
            valid_s = m["seconds"] - train_s  # run_epoch's seconds: training, validation and the best-model save
            valid_loss = m["valid_loss"]
            notes.append(f"one full epoch through Trainer.run_epoch ({m['n_batches']} batches), validation included; "
                         f"with the checkpoint write it took {total:.1f} s")
            measured = dict(run_epoch_seconds=m["seconds"], with_checkpoint_seconds=total, n_batches=m["n_batches"],
                            peak_mem_mb=m["peak_mem_mb"])
    epoch_s = train_s + valid_s
    tokens_per_s = plan["tokens"] / train_s
    results = dict(epoch_seconds=epoch_s, train_seconds=train_s, valid_seconds=valid_s,
                   train_tokens_per_s=tokens_per_s, epoch_batches=plan["n_batches"], epoch_tokens=plan["tokens"],
                   valid_tokens=trainer.data["valid"].numel(), valid_loss=valid_loss, extrapolated=extrapolated,
                   **measured)

    how = "extrapolated from " + f"{measured['timed_batches']} batches" if extrapolated else "measured"
    print()
    common.print_table([["training", f"{train_s:.1f}", f"{tokens_per_s:,.0f}"],
                        ["validation", f"{valid_s:.1f}", ""], ["epoch", f"{epoch_s:.1f}", ""]],
                       ["part", "seconds", "train tokens/s"])
    print(f"\none {preset} epoch: {epoch_s:.1f} s ({epoch_s / 60:.1f} min), {how}")
    for n in notes:
        print("note:", n)
    summary = (f"{epoch_s:.0f} s per epoch ({epoch_s / 60:.1f} min: training {train_s:.0f} s, validation "
               f"{valid_s:.0f} s); {tokens_per_s:,.0f} training tokens/s; preset {preset}"
               + (f"; EXTRAPOLATED from {measured['timed_batches']} of {plan['n_batches']} batches" if extrapolated
                  else ""))
    cfg = dict(preset=preset, train_config=config.to_dict(), max_batches=args.max_batches,
               warmup_batches=args.warmup_batches if extrapolated else None, threads=torch.get_num_threads())
    rec = common.record("epoch_time", __file__, device, cfg, results, summary, args.tiny, notes, load_before, argv)
    out = common.write_record(rec, args.out or common.default_out("epoch_time", device, args.tiny))
    print(f"\nwrote {out}")
    return rec


if __name__ == "__main__":
    main()
