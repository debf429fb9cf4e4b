"""What does it cost to draw one process's masks as its slice of the whole batch's (chapter 08g, issue #27)?

Under data parallelism every process draws the dropout masks of each step either way. Before issue #27 each drew
them from its own random stream for its own `B` sequences; now every process draws from one stream that is the same
everywhere, and a per-sequence (locked dropout) mask is drawn for all `W * B` sequences of the global batch, of which
the process keeps its block of `B`. The weight-drop and embedding-dropout masks have the same shape either way (they
do not depend on the batch), so the only extra work is `W - 1` more blocks of each locked-dropout mask. No message
passes between the processes for it.

This script times, in ONE process and side by side, the trainer's training step (the `AWDLSTM` of a preset, every
regulariser on, CE + AR + TAR, backward, clip, SGD) at the per-process batch `B` with

  own      its own masks: `LockedDropout.shard = (0, 1)` (what every process did before issue #27);
  W=2,4,8  the shared stream: `shard = (0, W)`, the locked masks drawn for `W * B` sequences and block 0 kept.

The variants are interleaved within each repetition (the order rotates), after warm-up; medians are quoted, of wall
time and of the process's CPU time (the steadier one on a busy machine, with `--threads 1`).

    python benchmarks/mask_stream.py --device cpu --preset ptb-cpu --threads 1   # a few minutes on one idle core
    python benchmarks/mask_stream.py --device cuda                              # ptb shapes on a GPU
    python benchmarks/mask_stream.py --tiny                                     # seconds: a smoke run (runs/)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py, next to this script)
from step_cost import PTB_VOCAB, TINY, Runner, preset_shape  # noqa: E402  (the same step as step_cost's (a))

from awd_edu.dropout import LockedDropout  # noqa: E402
from awd_edu.config import PRESETS, TrainConfig  # noqa: E402


def set_shard(model: torch.nn.Module, rank: int, world_size: int):
    "Give every `LockedDropout` of `model` the shard `(rank, world_size)`, as `distributed.share_masks` does."
    for m in model.modules():
        if isinstance(m, LockedDropout):
            m.shard = (rank, world_size)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--preset", default="ptb", choices=list(PRESETS), help="the shapes and dropouts (default ptb)")
    p.add_argument("--batch", type=int, help="sequences per process, B (default: the preset's batch_size)")
    p.add_argument("--bptt", type=int, help="window length (default: the preset's)")
    p.add_argument("--worlds", default="2,4,8", help="numbers of processes W to compare with `own` (default 2,4,8)")
    p.add_argument("--reps", type=int, help="timed repetitions per variant (default 7 on cpu, 30 on cuda)")
    p.add_argument("--warmup", type=int, help="untimed repetitions first (default 2 on cpu, 5 on cuda)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--note", action="append", default=[], help="a note for the record (e.g. the machine's load)")
    p.add_argument("--tiny", action="store_true", help="tiny shapes and 2 repetitions: a smoke test in seconds")
    p.add_argument("--out", help="JSON path (default benchmarks/results/mask_stream-<device>.json; "
                                 "--tiny: runs/benchmarks/)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device, load_before = common.begin(args)
    config = TrainConfig.from_preset(args.preset)
    shape = dict(TINY) if args.tiny else preset_shape(config)
    shape.update({k: v for k, v in (("batch", args.batch), ("bptt", args.bptt)) if v is not None})
    worlds = [int(w) for w in args.worlds.split(",")]
    if not worlds or min(worlds) < 2:
        raise SystemExit(f"--worlds: numbers of processes >= 2, comma-separated (e.g. 2,4,8); got {args.worlds!r}")
    gpu = device.type == "cuda"
    reps = args.reps or (2 if args.tiny else 30 if gpu else 7)
    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 5 if gpu else 2)

    runners = {"own": Runner("a", shape, config, device)}
    for w in worlds:
        runners[f"W={w}"] = Runner("a", shape, config, device)
        set_shard(runners[f"W={w}"].model, 0, w)
    keys = list(runners)
    print(f"mask_stream on {common.device_info(device)['device_name']}, torch {torch.__version__}")
    print(f"shape {shape} (B = batch per process); warm-up {warmup}, repetitions {reps}, order rotated every repetition")
    times, cpu_times = {k: [] for k in keys}, {k: [] for k in keys}
    for r in range(warmup + reps):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for k in order:
            wall, cpu = common.timed(runners[k].step, device)
            if r >= warmup:
                times[k].append(wall); cpu_times[k].append(cpu)
        if r >= warmup:
            print(f"  rep {r - warmup + 1}/{reps}: " + ", ".join(f"{k} {1e3 * times[k][-1]:.0f} ms" for k in keys),
                  flush=True)

    results = {}
    for k in keys:
        s, c = common.stats(times[k]), common.stats(cpu_times[k])
        paired = common.stats([t / o for t, o in zip(times[k], times["own"])])
        paired_cpu = common.stats([t / o for t, o in zip(cpu_times[k], cpu_times["own"])])
        results[k] = dict(ms_per_step=1e3 * s["median"], ms_q1=1e3 * s["q1"], ms_q3=1e3 * s["q3"],
                          cpu_ms_per_step=1e3 * c["median"], ratio_to_own=s["median"] / common.stats(times["own"])["median"],
                          ratio_to_own_paired_median=paired["median"], ratio_to_own_cpu_paired_median=paired_cpu["median"],
                          locked_mask_columns=shape["batch"] * (1 if k == "own" else int(k[2:])),
                          times_s=times[k], cpu_times_s=cpu_times[k])
    rows = [[k, results[k]["locked_mask_columns"], f"{results[k]['ms_per_step']:.1f}",
             f"{results[k]['ms_q1']:.0f}-{results[k]['ms_q3']:.0f}", f"{results[k]['cpu_ms_per_step']:.1f}",
             f"{results[k]['ratio_to_own_paired_median']:.3f}", f"{results[k]['ratio_to_own_cpu_paired_median']:.3f}"]
            for k in keys]
    print()
    common.print_table(rows, ["masks", "locked-mask columns", "ms/step (median)", "IQR ms", "CPU ms",
                              "/own (paired)", "/own CPU (paired)"])
    worst = max(worlds)
    summary = (f"one process's step at B={shape['batch']}, bptt {shape['bptt']} ({'tiny' if args.tiny else args.preset} shapes): "
               f"own masks {results['own']['ms_per_step']:.0f} ms; shared stream "
               + ", ".join(f"W={w} {results[f'W={w}']['ratio_to_own_paired_median']:.3f}x" for w in worlds)
               + f" (paired medians of wall time; CPU time W={worst} "
               f"{results[f'W={worst}']['ratio_to_own_cpu_paired_median']:.3f}x)")
    print("\n" + summary)
    notes = ["data: uniform random token ids (step time does not depend on the values)",
             "the weight-drop and embedding masks are the same size either way; only the locked masks grow by W",
             *args.note]
    rec_config = dict(preset=args.preset, shape=shape, vocab=shape.get("vocab", PTB_VOCAB), worlds=worlds, reps=reps,
                      warmup=warmup, order="rotated per repetition", threads=torch.get_num_threads(),
                      regularisers={k: getattr(config, k) for k in ("dropout", "dropouth", "dropouti", "dropoute",
                                                                     "wdrop", "alpha", "beta")})
    rec = common.record("mask_stream", __file__, device, rec_config, results, summary, args.tiny, notes, load_before,
                        argv)
    out = common.write_record(rec, args.out or common.default_out("mask_stream", device, args.tiny))
    print(f"\nwrote {out}")
    return rec


if __name__ == "__main__":
    main()
