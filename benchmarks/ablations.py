"""What each piece of AWD-LSTM buys: train every named ablation (`awd_edu.ablations`) with several seeds in the CPU
study's regime (`awd_edu.ablations.study_config`), and record per-epoch curves, validation and test perplexity, and
per variant the paired differences to the full model of the same seed with their 95% intervals.

Each run trains, fine-tunes when its variant keeps fine-tuning, then tests. The study survives a restart: every
finished (variant, seed) is written at once into the record itself (`--out`, by default the committed
`benchmarks/results/ablations-cpu.json`), and the same command started again, on this machine or on a fresh clone,
skips what the record holds. A run killed halfway continues from its last epoch when its run folder is still there
(`Trainer.resume`); on a fresh clone it starts again. Runs go to `<work-dir>/<variant>/seed-<seed>/`.

    python benchmarks/ablations.py --jobs 2                              # the study: every variant, seeds 1 to 4
    python benchmarks/ablations.py --jobs 2 --seeds 1,2                  # a sitting: half of it (the rest later)
    python benchmarks/ablations.py --only full,no-weight-drop --seeds 1  # a part of it
    python benchmarks/ablations.py --tiny                                # seconds: CI's smoke run
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from awd_edu.ablations import (  # noqa: E402
    ABLATIONS, PAPER_SOURCE, PAPER_TABLE, ablation_config, get_ablation, regime_checks, study_config, summarise)
from awd_edu.checkpoint import has_checkpoint  # noqa: E402
from awd_edu.config import TrainConfig  # noqa: E402
from awd_edu.data import Corpus  # noqa: E402
from awd_edu.files import atomic_write_text  # noqa: E402
from awd_edu.messages import catch_signal, raise_terminated  # noqa: E402
from awd_edu.model import count_parameters  # noqa: E402
from awd_edu.rundir import RESUMABLE  # noqa: E402
from awd_edu.train import Trainer  # noqa: E402

NAME = "ablations"
FORMAT = 3   # 1: the first (mini) study, min-max verdicts, partial.json; 2: paired intervals, the record is the state;
#              3: a run's lr_drop is a setting of its config (format 2 kept it beside the config)
DEFAULT_WORK = common.ROOT / "runs" / "ablations"
TINY_WORK = common.SCRATCH / "ablations-tiny"
# --tiny: the regime scaled down to seconds, with every piece still present (so every variant changes something)
TINY = dict(emb_size=16, hidden_size=24, n_layers=2, batch_size=4, bptt=8, eval_batch_size=4, test_batch_size=4,
            max_train_tokens=600, max_eval_tokens=200, epochs=3, finetune_epochs=2, nonmono=1, patience=0)
STUDY = list(ABLATIONS)   # the default study: every named variant
DERIVED = {"no-finetune": "full"}   # the same training as `full`, stopped before fine-tuning: read from its run


# ---------------------------------------------------------------- one run of the study (a cell of its table)
# Here, not in awd_edu.ablations: a variant is a config the package's Trainer trains as it is; what this adds (the
# record's layout, continuing a run folder of the same config, the timing) serves this study alone.

def _same_run(a: TrainConfig, b: TrainConfig) -> bool:
    "Whether two configs describe the same run (a resume may change only the `RESUMABLE` settings)."
    return not a.differences(b, ignore=RESUMABLE)


def _read_results(run_dir: Path) -> dict:
    "The tested stages a run folder already holds (`results.json`, written by `Trainer.test`); {} when none."
    path = Path(run_dir) / "results.json"
    return json.loads(path.read_text()) if path.is_file() else {}


EPOCH_KEYS = ("stage", "epoch", "train_ppl", "valid_ppl", "lr", "optimizer", "switched", "seconds")  # kept per epoch


def run_ablation(config: TrainConfig,  # the variant's config (`ablation_config(base, name)`, with its seed)
                 run_dir,  # its run directory; one holding checkpoints of the same run is continued
                 corpus: Corpus | None = None,  # the data; None: `load_ptb(config.data_dir)`
                 callbacks=(),  # subscribers, as for `Trainer`
                ) -> dict:
    "Train, fine-tune if the config keeps fine-tuning, test: the run's record, with per-epoch curves, best valid and test ppl."
    run_dir = Path(run_dir)
    w0, c0 = time.perf_counter(), time.process_time()
    if has_checkpoint(run_dir):
        trainer = Trainer.resume(run_dir, corpus=corpus, callbacks=callbacks, progress=False)
        if not _same_run(trainer.config, config):
            raise ValueError(f"{run_dir} holds a run of another config; delete it or choose another run directory")
    else:
        trainer = Trainer(config, run_dir, corpus=corpus, callbacks=callbacks, progress=False)
    results = _read_results(run_dir)  # the stages already tested (a resumed run)
    if trainer.stage == "train":
        trainer.fit()
        if "train" not in results:
            results["train"] = trainer.test()
    if config.finetune_epochs > 0 and "finetune" not in results:
        trainer.finetune()
        results["finetune"] = trainer.test()
    final = results["finetune" if config.finetune_epochs > 0 else "train"]
    epochs = [{k: m[k] for k in EPOCH_KEYS} for m in trainer.history]
    best = min(epochs, key=lambda m: m["valid_ppl"])
    before = results["train"] if config.finetune_epochs > 0 else None
    return dict(config=config.to_dict(), n_params=count_parameters(trainer.model), epochs=epochs,
                best_valid_ppl=best["valid_ppl"], best_at=dict(stage=best["stage"], epoch=best["epoch"]),
                test_ppl=final["test_ppl"], valid_ppl=final["valid_ppl"],
                before_finetune=dict(valid_ppl=before["valid_ppl"], test_ppl=before["test_ppl"]) if before else None,
                switched_at=trainer.switched_at, train_seconds=sum(m["seconds"] for m in epochs),
                wall_s=time.perf_counter() - w0, cpu_s=time.process_time() - c0)


# ---------------------------------------------------------------- the study

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help=f"comma-separated variants (default: all): {', '.join(ABLATIONS)}")
    p.add_argument("--seeds", default="1,2,3,4", help="comma-separated seeds (default 1,2,3,4)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel, each in its own process (default 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override settings of the base config")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--work-dir", help=f"run folders (default {DEFAULT_WORK.relative_to(common.ROOT)}; "
                                      f"--tiny: {TINY_WORK.relative_to(common.ROOT)})")
    p.add_argument("--tiny", action="store_true", help="a scaled-down base config that runs in seconds (CI)")
    p.add_argument("--out", help="the record, read at the start and rewritten after every finished run (default "
                                 "benchmarks/results/ablations-<device>.json; --tiny: runs/benchmarks/)")
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
    "The study's regime (or its --tiny version) with `--set` overrides, on `device`."
    return study_config(**(TINY if tiny else {}), device=device).with_overrides(overrides)


def variant_config(base: TrainConfig, name: str, seed: int) -> dict:
    "What identifies a run in the record: its config, with its seed (the learning-rate schedule, `lr_drop`, is a setting)."
    return ablation_config(base, name).replace(seed=seed).to_dict()


def run_config(run: dict) -> dict:
    "A recorded run's config in today's terms: a run of format 2 kept `lr_drop` beside its config (None: 1, never)."
    return {"lr_drop": run.get("lr_drop") or 1.0, **run["config"]}


def derive_no_finetune(full_record: dict, config: TrainConfig) -> dict:
    "The `no-finetune` record of a seed, read from that seed's `full` run: its training stage is the same run."
    epochs = [m for m in full_record["epochs"] if m["stage"] == "train"]
    best = min(epochs, key=lambda m: m["valid_ppl"])
    before = full_record["before_finetune"]
    return dict(full_record, variant="no-finetune", config=config.to_dict(), epochs=epochs,
                best_valid_ppl=best["valid_ppl"], best_at=dict(stage="train", epoch=best["epoch"]),
                test_ppl=before["test_ppl"], valid_ppl=before["valid_ppl"], before_finetune=None,
                train_seconds=sum(m["seconds"] for m in epochs), derived_from=f"full/seed-{full_record['seed']}")


def _worker_start(parent: int):
    """A worker (--jobs > 1) ends with the study: once the process that started it is gone (`kill PID`, a crash), it
    stops its run as Ctrl-C would, between writes, the run keeping its last completed epoch for the next sitting."""
    catch_signal(signal.SIGTERM, raise_terminated)

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)                 # the run has stopped by then; the pool's queue would keep the worker waiting
        os._exit(143)

    threading.Thread(target=watch, daemon=True).start()


def _run_one(task: dict) -> dict:
    "Worker: one (variant, seed) run, in its own process when --jobs > 1."
    torch.set_num_threads(task["threads"])
    config = TrainConfig(**task["config"])
    record = run_ablation(config, task["run_dir"])
    where = Path(task["run_dir"]).resolve()   # recorded relative to the repository: no machine's path in a record
    return dict(variant=task["variant"], seed=task["seed"],
                run_dir=where.relative_to(common.ROOT).as_posix() if where.is_relative_to(common.ROOT)
                else f"<work-dir>/{task['variant']}/{where.name}", threads=task["threads"], **record)


def read_record(path: Path) -> dict | None:
    "The record at `path`, or None when there is none yet; a damaged one stops the study with the fix named."
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise SystemExit(f"{path} is damaged (not valid JSON): restore it from git (`git checkout -- {path}`) or "
                         f"delete it to start the study afresh") from None


def recorded_runs(record: dict | None, base: TrainConfig) -> tuple:
    "`(kept, dropped)`: the record's runs that belong to this study's regime (the same config), and the count of the others."
    if not record:
        return [], 0
    kept = [dict({k: v for k, v in r.items() if k != "lr_drop"}, config=run_config(r))
            for r in record["results"]["runs"]
            if r["variant"] in ABLATIONS and run_config(r) == variant_config(base, r["variant"], r["seed"])]
    return kept, len(record["results"]["runs"]) - len(kept)


def print_summary(summary: dict):
    "The measured paired differences beside the paper's rows."
    rows = []
    for name, s in summary.items():
        pv, pt = get_ablation(name).paper
        row = [name, f"{pv:.1f} / {pt:.1f}" if pv else "-", len(s["seeds"]), f"{s['test_ppl']['mean']:.1f}"]
        for split in ("valid", "test"):
            p = s.get("paired", {}).get(split)
            row.append("" if p is None else f"{p['mean']:+.1f}" + (f" [{p['lo']:+.1f}, {p['hi']:+.1f}]"
                                                                   if p["lo"] is not None else ""))
        row.append(s["paired"]["test"]["verdict"] if "paired" in s else "(reference)")
        rows.append(row)
    common.print_table(rows, ["variant", "paper PTB valid / test", "seeds", "test ppl", "valid - full [95%]",
                              "test - full [95%]", "verdict (test)"])


def build_record(runs: list, base: TrainConfig, invocations: list, args, device, load_before, argv) -> dict:
    "The whole record from the runs done so far: config, runs, summary, the regime's checks, the study's timing."
    order = {n: i for i, n in enumerate(ABLATIONS)}
    runs = sorted(runs, key=lambda r: (order[r["variant"]], r["seed"]))
    names = list(dict.fromkeys(r["variant"] for r in runs))
    summary = summarise(runs) if runs else {}
    seeds = sorted({r["seed"] for r in runs})
    config = dict(base=base.to_dict(), variants={n: get_ablation(n).changes_for(base) for n in names}, seeds=seeds,
                  jobs=args.jobs, threads_per_run=args.threads)
    study_wall = sum(i.get("wall_s", 0.0) for i in invocations)
    results = dict(format=FORMAT,
                   paper=dict(source=PAPER_SOURCE, columns=["row", "ptb_valid", "ptb_test", "wt2_valid", "wt2_test"],
                              rows=[list(r) for r in PAPER_TABLE]),
                   variants=summary, checks=regime_checks(runs), runs=runs,
                   study=dict(wall_s=study_wall, cpu_s=sum(r["cpu_s"] for r in runs if "derived_from" not in r),
                              invocations=invocations))
    parts = [f"{len(names)} variants, {len(runs)} runs (seeds {', '.join(map(str, seeds))})"]
    for n in ("no-weight-drop", "no-ntasgd", "no-embed-dropout", "no-regularisation"):
        p = summary.get(n, {}).get("paired", {}).get("test")
        if p and p["lo"] is not None:
            parts.append(f"{n} test {p['mean']:+.1f} [{p['lo']:+.1f}, {p['hi']:+.1f}]")
    summ = "; ".join(parts) + f"; study {study_wall / 3600:.1f} h wall"
    notes = ["paired: for each variant and seed, its perplexity minus that of `full` with the same seed; mean over "
             "seeds with a two-sided 95% Student-t interval (mean ± t(n-1) s / sqrt(n)); verdict from the interval: "
             "worse (above 0), better (below 0), else no measurable effect at this size",
             "valid_ppl and test_ppl: the tested model (best weights of the last stage) on the validation and test "
             "splits; best_valid_ppl: the lowest validation perplexity over all epochs of both stages",
             "wall_s and cpu_s of a run count the invocation that finished it; train_seconds sums its epochs' wall "
             "times across resumes; results.study.invocations lists every sitting of the study and its wall time",
             "no-finetune is not trained again: it is the training stage of the same seed's full run (the same run "
             "until fine-tuning starts), tested before fine-tuning",
             "checks: every full run's convergence (best training epoch before the last 20% of its epochs, or the last "
             "20% gaining < 1%) and every everything-off run's overfitting (last training epoch >= 5% above its best)"]
    rec = common.record(NAME, __file__, device, config, results, summ, args.tiny, notes, load_before, argv)
    rec["load_average_before"] = invocations[0]["load_average_before"] if invocations else load_before
    return rec


def write(rec: dict, out: Path) -> Path:
    "Write the record atomically (a kill mid-write leaves the previous record whole)."
    missing = [k for k in common.REQUIRED_FIELDS if k not in rec]
    if missing:
        raise ValueError(f"the record lacks required fields {missing}")
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out, json.dumps(rec, indent=1) + "\n")


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = common.resolve_device(args.device)
    load_before = common.load_average()
    w0 = time.perf_counter()
    base = base_config(args.tiny, args.set, str(device))
    work = Path(args.work_dir) if args.work_dir else TINY_WORK if args.tiny else DEFAULT_WORK
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else common.default_out(NAME, device, args.tiny)
    old = read_record(out)
    done, dropped = recorded_runs(old, base)
    invocations = list(old["results"]["study"]["invocations"]) if done else []   # the sittings so far
    if dropped:
        print(f"{out}: {dropped} recorded run(s) of another regime or config are left out of the new record "
              f"(git keeps the old one)", flush=True)
    have = {(r["variant"], r["seed"]) for r in done}
    tasks = []
    for seed in args.seeds:            # seed by seed: after the first quarter every variant has one run
        for name in args.only:
            if (name, seed) in have or (name in DERIVED and DERIVED[name] in args.only):
                continue              # recorded, or read from the other variant's run once it is done
            tasks.append(dict(variant=name, seed=seed, threads=args.threads, run_dir=str(work / name / f"seed-{seed}"),
                              config=variant_config(base, name, seed)))
    n_derived = sum(1 for s in args.seeds for n in DERIVED if n in args.only and (n, s) not in have)
    print(f"ablations on {common.device_info(device)['device_name']}, torch {torch.__version__}; "
          f"{len(args.only)} variants x {len(args.seeds)} seeds: {len(have)} already recorded, {len(tasks)} to run "
          f"({args.jobs} at a time, {args.threads} thread(s) each) and {n_derived} to derive; record {out}; "
          f"work dir {work}", flush=True)
    invocation = dict(command=common.command_line(__file__, argv), started=time.strftime("%Y-%m-%dT%H:%M:%S"),
                      load_average_before=load_before, runs=len(tasks), jobs=args.jobs, finished=0, wall_s=0.0)
    invocations.append(invocation)

    def save():
        invocation.update(wall_s=time.perf_counter() - w0, load_average_after=common.load_average())
        return write(build_record(done, base, invocations, args, device, load_before, argv), out)

    def finished(rec):
        done.append(rec)
        invocation["finished"] += 1
        seed = rec["seed"]
        for name, source in DERIVED.items():     # a derived variant as soon as its source is recorded
            if rec["variant"] == source and name in args.only and seed in args.seeds and \
                    (name, seed) not in {(r["variant"], r["seed"]) for r in done}:
                done.append(derive_no_finetune(rec, ablation_config(base, name).replace(seed=seed)))
        save()
        print(f"  {rec['variant']:>20s} seed {seed}: valid ppl {rec['valid_ppl']:8.1f}  test ppl "
              f"{rec['test_ppl']:8.1f}  ({len(rec['epochs'])} epochs, {rec['cpu_s']:.0f} s CPU, "
              f"{rec['wall_s']:.0f} s wall)", flush=True)

    for seed in args.seeds:            # derived variants whose source was recorded by an earlier sitting
        src = {(r["variant"], r["seed"]): r for r in done}
        for name, source in DERIVED.items():
            if name in args.only and (name, seed) not in src and (source, seed) in src:
                done.append(derive_no_finetune(src[(source, seed)], ablation_config(base, name).replace(seed=seed)))
    if args.jobs == 1:
        for task in tasks:
            finished(_run_one(task))
    elif tasks:
        ctx = multiprocessing.get_context("spawn")   # fresh interpreters: no torch thread pools inherited
        with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx, initializer=_worker_start,
                                    initargs=(os.getpid(),)) as pool:
            for fut in cf.as_completed([pool.submit(_run_one, t) for t in tasks]):
                finished(fut.result())
    path = save()
    rec = read_record(path)
    print()
    print_summary(rec["results"]["variants"])
    print(f"\n{rec['summary']}\nwrote {path}")
    return rec


if __name__ == "__main__":
    main()
