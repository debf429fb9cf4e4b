"""What each piece of AWD-LSTM buys: train every named ablation (`awd_edu.ablations`) with several seeds in the mini
regime, and record per-epoch curves, best validation perplexity and test perplexity, with mean and spread.

Each run trains, fine-tunes when its variant keeps fine-tuning, then tests. The study is resumable: every finished
(variant, seed) is written at once to `<work-dir>/partial.json` and skipped when the command is run again, and a run
killed halfway continues from its last epoch (`Trainer.resume`). Runs go to `<work-dir>/<variant>/seed-<seed>/`.

    python benchmarks/ablations.py --jobs 2                              # the study: every variant, seeds 1 2 3
    python benchmarks/ablations.py --only full,no-weight-drop --seeds 1  # a part of it
    python benchmarks/ablations.py --tiny                                # seconds: CI's smoke run
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from awd_edu.ablations import (  # noqa: E402
    ABLATIONS, PAPER_SOURCE, PAPER_TABLE, ablation_config, get_ablation, mini_config, run_ablation, summarise)
from awd_edu.checkpoint import atomic_write_text  # noqa: E402
from awd_edu.config import TrainConfig  # noqa: E402

NAME = "ablations"
DEFAULT_WORK = common.ROOT / "runs" / "ablations"
TINY_WORK = common.SCRATCH / "ablations-tiny"
# --tiny: the mini regime scaled down to seconds, with every piece still present (so every variant changes something)
TINY = dict(emb_size=16, hidden_size=24, n_layers=2, batch_size=4, bptt=8, eval_batch_size=4, test_batch_size=4,
            max_train_tokens=600, max_eval_tokens=200, epochs=3, finetune_epochs=2, nonmono=1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help=f"comma-separated variants (default: all): {', '.join(ABLATIONS)}")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (default 1,2,3)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel, each in its own process (default 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override settings of the base config")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--work-dir", help=f"run folders and partial.json (default {DEFAULT_WORK.relative_to(common.ROOT)}; "
                                      f"--tiny: {TINY_WORK.relative_to(common.ROOT)})")
    p.add_argument("--tiny", action="store_true", help="a scaled-down base config that runs in seconds (CI)")
    p.add_argument("--out", help="JSON path (default benchmarks/results/ablations-<device>.json; --tiny: runs/)")
    args = p.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if not args.seeds or len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds must name at least one seed, each once, got {args.seeds}")
    args.only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else list(STUDY)
    for n in args.only:
        if n not in ABLATIONS:
            p.error(f"--only: unknown variant {n!r}; known: {', '.join(ABLATIONS)}")
    if args.jobs < 1 or args.threads < 1:
        p.error("--jobs and --threads must be >= 1")
    return args


def base_config(tiny: bool, overrides, device: str) -> TrainConfig:
    "The mini regime (or its --tiny version) with `--set` overrides, on `device`."
    return mini_config(**(TINY if tiny else {}), device=device).with_overrides(overrides)


STUDY = list(ABLATIONS)   # the default study: every named variant
DERIVED = {"no-finetune": "full"}   # the same training as `full`, stopped before fine-tuning: read from its run


def derive_no_finetune(full_record: dict, config: TrainConfig) -> dict:
    "The `no-finetune` record of a seed, read from that seed's `full` run: its training stage is the same run."
    epochs = [m for m in full_record["epochs"] if m["stage"] == "train"]
    best = min(epochs, key=lambda m: m["valid_ppl"])
    before = full_record["before_finetune"]
    return dict(full_record, variant="no-finetune", config=config.to_dict(), epochs=epochs,
                best_valid_ppl=best["valid_ppl"], best_at=dict(stage="train", epoch=best["epoch"]),
                test_ppl=before["test_ppl"], valid_ppl=before["valid_ppl"], before_finetune=None,
                train_seconds=sum(m["seconds"] for m in epochs), derived_from=f"full/seed-{full_record['seed']}")


def _run_one(task: dict) -> dict:
    "Worker: one (variant, seed) run, in its own process when --jobs > 1."
    torch.set_num_threads(task["threads"])
    config = TrainConfig(**task["config"])
    record = run_ablation(config, task["run_dir"])
    where = Path(task["run_dir"]).resolve()   # recorded relative to the repository: no machine's path in a record
    return dict(variant=task["variant"], seed=task["seed"],
                run_dir=where.relative_to(common.ROOT).as_posix() if where.is_relative_to(common.ROOT)
                else f"<work-dir>/{task['variant']}/{where.name}", threads=task["threads"], **record)


def _read_partial(path: Path) -> dict:
    if not path.is_file():
        return dict(format=1, runs={}, invocations=[])
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise SystemExit(f"{path} is damaged; delete it to start the study afresh (finished run folders are resumed)")


def _write_partial(path: Path, partial: dict):
    atomic_write_text(path, json.dumps(partial, indent=1) + "\n")


def print_summary(summary: dict):
    "The measured table beside the paper's rows."
    rows = []
    for name, s in summary.items():
        pv, pt = get_ablation(name).paper
        v, t = s["best_valid_ppl"], s["test_ppl"]
        rows.append([name, f"{pv:.1f} / {pt:.1f}" if pv else "-", len(s["seeds"]),
                     f"{v['mean']:.1f} ± {v['std']:.1f} [{v['min']:.1f}-{v['max']:.1f}]",
                     f"{t['mean']:.1f} ± {t['std']:.1f}", f"{v.get('delta_vs_full', 0):+.1f}", s.get("verdict", "")])
    common.print_table(rows, ["variant", "paper PTB valid / test", "seeds", "best valid ppl mean ± std [min-max]",
                              "test ppl", "valid vs full", "verdict (valid)"])


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = common.resolve_device(args.device)
    load_before = common.load_average()
    w0 = time.perf_counter()
    base = base_config(args.tiny, args.set, str(device))
    work = Path(args.work_dir) if args.work_dir else TINY_WORK if args.tiny else DEFAULT_WORK
    work.mkdir(parents=True, exist_ok=True)
    partial_path = work / "partial.json"
    partial = _read_partial(partial_path)
    tasks, done = [], []
    for seed in args.seeds:            # seed by seed: after the first third every variant has one run
        for name in args.only:
            cfg = ablation_config(base, name).replace(seed=seed)
            key = f"{name}/seed-{seed}"
            old = partial["runs"].get(key)
            if old is not None and old["config"] == cfg.to_dict():
                done.append(old)
                continue
            if name in DERIVED and DERIVED[name] in args.only:   # read from the other variant's run, after it
                continue
            tasks.append(dict(variant=name, seed=seed, config=cfg.to_dict(), threads=args.threads,
                              run_dir=str(work / name / f"seed-{seed}")))
    print(f"ablations on {common.device_info(device)['device_name']}, torch {torch.__version__}; "
          f"{len(args.only)} variants x {len(args.seeds)} seeds: {len(done)} already done, {len(tasks)} to run "
          f"({args.jobs} at a time, {args.threads} thread(s) each); work dir {work}", flush=True)

    def finished(rec):
        partial["runs"][f"{rec['variant']}/seed-{rec['seed']}"] = rec
        _write_partial(partial_path, partial)
        done.append(rec)
        print(f"  {rec['variant']:>20s} seed {rec['seed']}: best valid ppl {rec['best_valid_ppl']:8.1f}  test ppl "
              f"{rec['test_ppl']:8.1f}  ({len(rec['epochs'])} epochs, {rec['cpu_s']:.0f} s CPU, "
              f"{rec['wall_s']:.0f} s wall)", flush=True)

    invocation = dict(command=common.command_line(__file__, argv), started=time.strftime("%Y-%m-%dT%H:%M:%S"),
                      load_average_before=load_before, runs=len(tasks), jobs=args.jobs)
    if args.jobs == 1:
        for task in tasks:
            finished(_run_one(task))
    elif tasks:
        ctx = multiprocessing.get_context("spawn")   # fresh interpreters: no torch thread pools inherited
        with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
            for fut in cf.as_completed([pool.submit(_run_one, t) for t in tasks]):
                finished(fut.result())
    for seed in args.seeds:             # the derived variants, from the runs they are read from
        for name, source in DERIVED.items():
            rec = next((r for r in done if r["variant"] == source and r["seed"] == seed), None)
            if name in args.only and source in args.only and rec and f"{name}/seed-{seed}" not in partial["runs"]:
                finished(derive_no_finetune(rec, ablation_config(base, name).replace(seed=seed)))
    invocation.update(wall_s=time.perf_counter() - w0, load_average_after=common.load_average())
    partial["invocations"].append(invocation)
    _write_partial(partial_path, partial)

    order = {(n, s): i for i, (n, s) in enumerate((n, s) for n in args.only for s in args.seeds)}
    runs = sorted(done, key=lambda r: order[(r["variant"], r["seed"])])
    summary = summarise(runs)
    print()
    print_summary(summary)
    study_wall = sum(i["wall_s"] for i in partial["invocations"])
    config = dict(base=base.to_dict(), variants={n: get_ablation(n).changes_for(base) for n in args.only},
                  seeds=args.seeds, jobs=args.jobs, threads_per_run=args.threads)
    results = dict(paper=dict(source=PAPER_SOURCE, columns=["row", "ptb_valid", "ptb_test", "wt2_valid", "wt2_test"],
                              rows=[list(r) for r in PAPER_TABLE]),
                   variants=summary, runs=runs,
                   study=dict(wall_s=study_wall, cpu_s=sum(r["cpu_s"] for r in runs),
                              invocations=partial["invocations"]))
    full = summary.get("full")
    if full and {"everything-off", "no-regularisation"} <= set(summary):
        fv, off, nr = (summary[n]["best_valid_ppl"] for n in ("full", "everything-off", "no-regularisation"))
        summ = (f"{len(args.only)} variants x {len(args.seeds)} seeds; best valid ppl (mean ± std): full "
                f"{fv['mean']:.1f} ± {fv['std']:.1f}, everything off {off['mean']:.1f} ± {off['std']:.1f}, "
                f"no regularisation {nr['mean']:.1f} ± {nr['std']:.1f}; study {study_wall / 60:.0f} min wall")
    else:
        summ = f"{len(args.only)} variants x {len(args.seeds)} seeds; study {study_wall / 60:.1f} min wall"
    notes = ["error bars and spreads: min-max over seeds; std is the sample standard deviation",
             "wall_s and cpu_s of a run count the invocation that finished it; train_seconds sums its epochs' wall "
             "times across resumes", "best_valid_ppl: the lowest validation perplexity over all epochs of both stages",
             "no-finetune is not trained again: it is the training stage of the same seed's full run (the same run "
             "until fine-tuning starts), tested before fine-tuning"]
    rec = common.record(NAME, __file__, device, config, results, summ, args.tiny, notes, load_before, argv)
    rec["load_average_before"] = (partial["invocations"][0]["load_average_before"]
                                  if partial["invocations"] else load_before)
    out = common.write_record(rec, args.out or common.default_out(NAME, device, args.tiny))
    print(f"\n{summ}\nwrote {out}")
    return rec


if __name__ == "__main__":
    main()
