"""Chapter 10's record: a converged AWD-LSTM run on Penn Treebank (and the same model without the paper's tricks),
turned into `benchmarks/results/ptb-cpu-run.json` plus its weights in half precision.

It reads two finished run directories (made by the commands recorded in the JSON), scores the run's final weights
on validation and test, chooses the neural cache's window, theta and lambda on validation only (the paper's way)
and applies them to test, draws three samples, writes the weights with the project's metadata and checks that the
half-precision file reproduces the test perplexity. The heavy part (scoring, the cache search) is kept in the JSON
and reused when the same run is recorded again with a baseline added.

    python benchmarks/ptb_cpu_run.py --run runs/ptb-cpu \\
        --baseline runs/ptb-cpu-baseline
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from awd_edu.cache import cache_log_p, collect_outputs, mix_nll  # noqa: E402
from awd_edu.checkpoint import METRICS_FILE, load_weights, read_metadata, read_metrics, weights_metadata  # noqa: E402
from awd_edu.config import TrainConfig  # noqa: E402
from awd_edu.data import batchify  # noqa: E402
from awd_edu.files import sha256_file  # noqa: E402
from awd_edu.generate import format_words, sample_words  # noqa: E402
from awd_edu.hub import PRETRAINED, save_pretrained  # noqa: E402
from awd_edu.loop import evaluate, perplexity  # noqa: E402
from awd_edu.model import build_model, count_parameters  # noqa: E402
from awd_edu.rundir import load_best  # noqa: E402

NAME = "ptb-cpu"
WINDOWS = (100, 200, 500, 1000, 2000)
THETAS = (0.1, 0.3, 0.5, 0.7, 1.0, 2.0)   # 2.0: dynamic_eval.py's cache grid reaches it too
LAMBDAS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
ANCHORS = [  # word-level PTB, from the papers
    dict(model="LSTM, 2 x 200, no dropout (Zaremba et al. 2014, small)", params_m=4.6, valid_ppl=120.7, test_ppl=114.5),
    dict(model="LSTM, 2 x 650, dropout 0.5 (Zaremba et al. 2014, medium)", params_m=20, valid_ppl=86.2, test_ppl=82.7),
    dict(model="AWD-LSTM (Merity et al. 2017), fine-tuned", params_m=24, valid_ppl=60.0, test_ppl=57.3),
    dict(model="AWD-LSTM + continuous cache (Merity et al. 2017)", params_m=24, valid_ppl=53.9, test_ppl=52.8),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="the converged run's directory (trained, then fine-tuned)")
    p.add_argument("--run-commit", help="the commit the run was trained at (default: this checkout's)")
    p.add_argument("--run-command", action="append",
                   help="a command that made the run, in order (repeat it; default: train with the preset, then "
                        "finetune)")
    p.add_argument("--rebuild-command", action="append",
                   help="the commands that rebuild the same weights in one go (repeat it; default: --run-command's)")
    p.add_argument("--baseline", help="the baseline's run directory (the everything-off ablation at the same sizes)")
    p.add_argument("--baseline-commit", help="the commit the baseline was trained at")
    p.add_argument("--baseline-command", action="append",
                   help="a command that made the baseline, in order (repeat it; default: the train command its config "
                        "gives)")
    p.add_argument("--earlier", help="an earlier record of this preset (another trigger window, say) to keep beside the "
                        "new one, in short: its settings, curve, wall time and results (default: the record's own)")
    p.add_argument("--earlier-commit", help="the commit whose tree holds the earlier record's weights file")
    p.add_argument("--out", default=str(common.RESULTS / PRETRAINED[NAME]), help="the record (JSON)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--rescore", action="store_true",
                   help="score the final weights again although the record holds this run (e.g. after the grid changed)")
    return p.parse_args(argv)


def wall_hours(metrics: list) -> float:
    "Hours the run's epochs took: the sum of every epoch's `seconds` (training and validation, both stages)."
    return round(sum(m["seconds"] for m in metrics) / 3600, 3)


WALL_HOURS = ("the sum of every epoch's seconds as the trainer measured them (training plus validation, training and "
              "fine-tuning stages); pauses between sittings, start-up and this script's scoring are not counted")


def epochs_of(metrics: list) -> list:
    "The per-epoch entries a record keeps."
    keys = ("stage", "epoch", "optimizer", "train_ppl", "valid_ppl", "seconds", "switched", "best")
    return [{k: (round(m[k], 3) if isinstance(m[k], float) else m[k]) for k in keys} for m in metrics]


def shareable(config: TrainConfig) -> dict:
    "The config as recorded: no path of this machine."
    return {**config.to_dict(), "data_dir": None}


def cache_search(model, valid, test, bptt: int) -> dict:
    "The cache's window, theta and lambda chosen on validation (grid), then the same on test."
    lp, h, y = collect_outputs(model, valid, bptt)
    grid = []
    for window, theta in itertools.product(WINDOWS, THETAS):
        lpc = cache_log_p(h, y, window, theta)
        for lam in LAMBDAS:
            grid.append(dict(window=window, theta=theta, lambdasm=lam, valid_ppl=math.exp(mix_nll(lpc, lp, lam).mean())))
    best = min(grid, key=lambda g: g["valid_ppl"])
    lp_t, h_t, y_t = collect_outputs(model, test, bptt)
    test_ppl = math.exp(mix_nll(cache_log_p(h_t, y_t, best["window"], best["theta"]), lp_t, best["lambdasm"]).mean())
    paper = math.exp(mix_nll(cache_log_p(h_t, y_t, 500, 1.0), lp_t, 0.1).mean())
    return dict(chosen=dict(window=best["window"], theta=best["theta"], lambdasm=best["lambdasm"]),
                valid_ppl_cache=best["valid_ppl"], test_ppl_cache=test_ppl, test_ppl_cache_paper_settings=paper,
                valid_ppl_static=math.exp(-lp.mean().item()), test_ppl_static=math.exp(-lp_t.mean().item()),
                grid=[{k: round(v, 3) if isinstance(v, float) else v for k, v in g.items()} for g in grid])


def keep_or_replace(weights: Path, write) -> str:
    "Write the weights with `write(path)` beside `weights`; keep the existing file when its tensors and metadata are the same (safetensors orders its metadata differently from one process to the next, so the bytes would change); returns the kept file's SHA-256."
    fresh = weights.with_name(weights.stem + ".new.safetensors")
    sha = write(fresh)
    if weights.is_file() and read_metadata(weights) == read_metadata(fresh):
        old, new = load_file(weights), load_file(fresh)
        if old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old):
            fresh.unlink()
            return sha256_file(weights)
    fresh.replace(weights)
    return sha


def score_run(run: Path, out: Path) -> dict:
    "The heavy part: final weights scored, the cache searched, samples drawn, half-precision weights written."
    config, corpus, model = load_best(run, "cpu")
    valid, test = corpus.valid[:config.max_eval_tokens], corpus.test[:config.max_eval_tokens]
    valid_b, test_b = batchify(valid, config.eval_batch_size), batchify(test, config.test_batch_size)
    valid_ppl = perplexity(evaluate(model, valid_b, config.bptt))
    test_ppl = perplexity(evaluate(model, test_b, config.bptt))
    cache = cache_search(model, batchify(valid, 1), batchify(test, 1), config.bptt)
    samples = [format_words(sample_words(model, corpus.vocab, 50, temperature=0.8, seed=s)) for s in range(3)]
    weights = out.with_name(f"{NAME}.safetensors")
    sha = keep_or_replace(weights, lambda path: save_pretrained(model, path, config, corpus.vocab, out.name))
    half = build_model(config, len(corpus.vocab))
    load_weights(half, weights, expect=weights_metadata(config, corpus.vocab))
    return dict(config=shareable(config), n_params=count_parameters(model), valid_ppl=valid_ppl, test_ppl=test_ppl,
                test_ppl_cache=cache["test_ppl_cache"], cache_settings=cache["chosen"], samples=samples,
                weights=dict(file=weights.name, sha256=sha, bytes=weights.stat().st_size, dtype="float16"),
                results=dict(cache=cache, test_ppl_half_precision=perplexity(evaluate(half, test_b, config.bptt))))


def baseline_part(run: Path, commit, commands=None) -> dict:
    "The baseline's curve and where it stopped."
    metrics = read_metrics(run)
    config = TrainConfig.load(run / "config.json")
    valid = [m["valid_ppl"] for m in metrics]
    best = min(valid)
    results = json.loads((run / "results.json").read_text()) if (run / "results.json").is_file() else {}
    commands = commands or [f"awd-edu train --preset ptb-cpu --ablate everything-off --set patience={config.patience} "
                            f"--epochs {config.epochs} --device cpu --run-dir runs/ptb-cpu-baseline"]
    return dict(commands=commands,
                git_commit=commit, config=shareable(config), wall_hours=wall_hours(metrics), epochs=epochs_of(metrics),
                best_valid_ppl=best, best_at=valid.index(best) + 1, last_valid_ppl=valid[-1],
                rise_above_best_pct=100 * (valid[-1] / best - 1), test_ppl=results.get("train", {}).get("test_ppl"))


def earlier_part(record: dict, commit=None) -> dict:
    "An earlier record of the preset, in short: what it was run with, its curve, switch, wall time and results."
    keep = ("run_git_commit", "run_command", "config", "n_params", "wall_hours", "epoch_seconds_median", "epochs",
            "switched_at", "averaged_epochs", "finetune_epochs", "valid_ppl", "test_ppl", "test_ppl_cache",
            "cache_settings")
    missing = [k for k in keep if k not in record]
    if missing:
        raise ValueError(f"--earlier: the record lacks {', '.join(missing)}; give a record written by this script")
    weights = dict(record["weights"], in_commit=commit) if commit else None   # the file is replaced; git keeps it
    return dict({k: record[k] for k in keep}, weights=weights)


def read_earlier(path, commit=None) -> dict:
    "`--earlier`'s record read and kept in short (`earlier_part`); a missing or unreadable file is refused."
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--earlier {path}: no such file. Give the earlier run's record as it was committed, e.g. "
                                f"`git show <commit>:benchmarks/results/{NAME}-run.json > earlier.json`, and that "
                                f"commit as --earlier-commit")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"--earlier {path}: not a JSON record ({e}); give a record written by this script") from None
    return earlier_part(record, commit)


def check_inputs(args) -> None:
    "Every folder and file named on the command line is there, checked before the (long) scoring starts."
    for option, folder in (("--run", args.run), ("--baseline", args.baseline)):
        if folder and not read_metrics(folder):
            raise FileNotFoundError(f"{option} {folder}: no {METRICS_FILE} there; give the folder a run was trained "
                                    f"in (`awd-edu train ... --run-dir FOLDER`)")


def main(argv=None) -> int:
    args = parse_args(argv)
    check_inputs(args)
    earlier = read_earlier(args.earlier, args.earlier_commit) if args.earlier else None
    torch.set_num_threads(args.threads)
    run, out = Path(args.run), Path(args.out)
    metrics = read_metrics(run)
    old = json.loads(out.read_text()) if out.is_file() else {}
    epochs = epochs_of(metrics)
    if old.get("epochs") == epochs and "cache" in old.get("results", {}) and not args.rescore:
        print(f"{out}: this run is recorded already; its scores are reused")
        scored = {k: old[k] for k in ("config", "n_params", "valid_ppl", "test_ppl", "test_ppl_cache", "cache_settings",
                                       "samples", "weights", "results")}
    else:
        scored = score_run(run, out)
    switched = [m["epoch"] for m in metrics if m["stage"] == "train" and m["switched"]]
    baseline = (baseline_part(Path(args.baseline), args.baseline_commit, args.baseline_command) if args.baseline
                else old.get("baseline"))
    earlier = earlier or old.get("earlier")
    rec = common.record(NAME, __file__, torch.device("cpu"), scored["config"],
                        dict(scored["results"], anchors=ANCHORS),
                        summary=(f"valid {scored['valid_ppl']:.2f} / test {scored['test_ppl']:.2f}, "
                                 f"{scored['test_ppl_cache']:.2f} with the cache"), tiny=False, argv=argv)
    run_command = args.run_command or old.get("run_command") or [
        "awd-edu train --preset ptb-cpu --device cpu --run-dir runs/ptb-cpu", "awd-edu finetune runs/ptb-cpu"]
    rebuild = args.rebuild_command or (None if args.run_command else old.get("rebuild_command")) or run_command
    rec.update(run_command=run_command, rebuild_command=rebuild,   # new run commands: the old rebuild is not theirs
               run_git_commit=args.run_commit or old.get("run_git_commit") or rec["git_commit"],
               n_params=scored["n_params"], wall_hours=wall_hours(metrics), wall_hours_means=WALL_HOURS,
               epoch_seconds_median=round(statistics.median(m["seconds"] for m in metrics), 1),
               epochs=epochs, switched_at=switched[0] if switched else None,
               averaged_epochs=sum(m["stage"] == "train" and m["optimizer"] == "asgd" for m in metrics),
               finetune_epochs=sum(m["stage"] == "finetune" for m in metrics),
               **{k: scored[k] for k in ("valid_ppl", "test_ppl", "test_ppl_cache", "cache_settings", "samples",
                                         "weights")}, baseline=baseline, **({"earlier": earlier} if earlier else {}))
    common.write_record(rec, out)
    print(f"{out}: valid {rec['valid_ppl']:.2f}, test {rec['test_ppl']:.2f}, test with the cache "
          f"{rec['test_ppl_cache']:.2f} ({rec['cache_settings']}); half-precision test "
          f"{rec['results']['test_ppl_half_precision']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
