"""Static, cache, dynamic evaluation, and dynamic evaluation + cache on a trained run: chosen on validation, then test.

For a run directory (anything `awd-edu train` made; its best weights through `awd_edu.rundir.load_best`):

1. the neural cache (chapter 09): window 500, theta and lambda chosen on the validation text over a small grid
   (the model runs once; each setting is a few matrix products), then static and cache on validation and test;
2. dynamic evaluation (chapter 09a): sqrt(MS_g) gathered on the training text (batch 100, segments of --bptt),
   eta and lambda chosen on the first --search-tokens of the validation text over a grid (default:
   awd_edu.dynamic.DYNAMIC_SEARCH, dynamiceval.py's default and the range around it), then dynamic evaluation and
   dynamic evaluation + cache (the cache at the setting chosen in 1., on the adapted model's outputs) on validation
   and test in one pass each;
3. the cost of each method on this machine, in seconds per 1,000 tokens of the test text (dynamic evaluation alone
   timed on the first --time-tokens of it; dynamic + cache from its full pass).

The test text is used once per method, at the settings chosen on validation. The record is written to
benchmarks/results/dynamic-eval-<device>.json with the papers' rows beside it. Every finished step is kept in a
partial file under runs/benchmarks/, so an interrupted run picks up where it stopped (`--fresh` starts over).

    python benchmarks/dynamic_eval.py --run runs/ptb-cpu --threads 2     # ptb-cpu: about 30 minutes on an idle core
    python benchmarks/dynamic_eval.py --run runs/ptb-cpu --max-tokens 2000 --grad-batches 20 --out /tmp/d.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from awd_edu.cache import cache_log_p, collect_outputs, evaluate_with_cache, mix_nll, stream_outputs  # noqa: E402
from awd_edu.data import batchify  # noqa: E402
from awd_edu.dynamic import (DYNAMIC_DEFAULTS, DYNAMIC_SEARCH, evaluate_dynamic, gradient_rms,  # noqa: E402
                             search_dynamic)
from awd_edu.files import sha256_file  # noqa: E402
from awd_edu.loop import perplexity  # noqa: E402
from awd_edu.model import count_parameters  # noqa: E402

NAME = "dynamic-eval"
GRID = DYNAMIC_SEARCH  # dynamiceval.py's default (eta 5e-5, lambda 0.002) in the middle, larger steps too
CACHE_GRID = dict(window=500, thetas=(0.5, 1.0, 2.0), lambdas=(0.05, 0.1, 0.15, 0.2, 0.3))
PAPERS = dict(
    source="Merity et al. 2017 (AWD-LSTM, 24M parameters, PTB, Table 1) and Krause et al. 2018 (dynamic evaluation, "
           "Table 2)",
    valid=dict(static=60.0, cache=53.9, dynamic=51.6),
    test=dict(static=57.3, cache=52.8, dynamic=51.1),
    dynamic_cache=None)  # neither paper reports dynamic evaluation + cache for AWD-LSTM




def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path, help="a run directory (config.json and best.safetensors)")
    p.add_argument("--max-tokens", type=int, default=0, help="use only the first N tokens of validation and test "
                   "(0: all) and mark the record tiny (it then goes to runs/benchmarks/ unless --out)")
    p.add_argument("--search-tokens", type=int, default=DYNAMIC_SEARCH["tokens"],
                   help="validation tokens for the eta/lambda search (default 10,000; capped by --max-tokens)")
    p.add_argument("--grad-batches", type=int, default=0,
                   help="training batches for sqrt(MS_g) (default 0: the whole training text, as the authors)")
    p.add_argument("--time-tokens", type=int, default=5_000, help="test tokens to time dynamic evaluation alone")
    p.add_argument("--etas", type=float, nargs="+", default=list(GRID["etas"]), help="step sizes searched")
    p.add_argument("--lams", type=float, nargs="+", default=list(GRID["lams"]), help="decay rates searched")
    p.add_argument("--eps", type=float, default=DYNAMIC_DEFAULTS["eps"], help="stabiliser (default 2e-5)")
    p.add_argument("--bptt", type=int, default=DYNAMIC_DEFAULTS["bptt"], help="segment length (default 5)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--fresh", action="store_true", help="ignore a partial file of an earlier, interrupted run")
    p.add_argument("--out", help=f"JSON path (default benchmarks/results/{NAME}-cpu.json)")
    args = p.parse_args(argv)
    if not (args.run / "config.json").is_file() or not (args.run / "best.safetensors").is_file():
        p.error(f"--run {args.run}: not a finished run directory (config.json and best.safetensors are needed); "
                f"runs are made by `awd-edu train --run-dir DIR`")
    for name in ("max_tokens", "grad_batches"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    for name in ("search_tokens", "time_tokens"):
        if getattr(args, name) < 2:
            p.error(f"--{name.replace('_', '-')} must be >= 2, got {getattr(args, name)}")
    if args.bptt < 1:
        p.error(f"--bptt must be >= 1, got {args.bptt}")
    if not args.eps > 0 or not math.isfinite(args.eps):
        p.error(f"--eps must be a finite number > 0, got {args.eps}")
    bad = [x for x in args.etas if not (x >= 0 and math.isfinite(x))] + [x for x in args.lams if not 0 <= x <= 1]
    if bad:
        p.error(f"--etas must be finite numbers >= 0 and --lams numbers in [0, 1]; refused {bad}")
    return args


class Steps:
    "Finished steps kept in a JSON file, so that an interrupted run resumes; reset when the inputs differ."
    def __init__(self, path: Path, key: dict, fresh: bool):
        self.path, self.key = path, json.loads(json.dumps(key))  # as it reads back from the file (lists, not tuples)
        old = {}
        if path.is_file() and not fresh:
            try:
                old = json.loads(path.read_text())
            except json.JSONDecodeError:
                old = {}
        self.done = old.get("done", {}) if old.get("key") == self.key else {}
        if self.done:
            print(f"resuming: {len(self.done)} steps already done ({common.portable(path)})")

    def get(self, name: str, fn):
        "The stored result of step `name`, or run `fn()` now and store it."
        if name not in self.done:
            self.done[name] = fn()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(dict(key=self.key, done=self.done), indent=1))
            tmp.replace(self.path)
        return self.done[name]


def timed(fn) -> tuple:
    "`(result, wall seconds, CPU seconds of this process)` of `fn()`."
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def cache_search(model, valid) -> dict:
    "Perplexity of the cache on validation for each (theta, lambda) of CACHE_GRID; the model runs once."
    log_p_model, keys, nexts = collect_outputs(model, valid)
    grid = []
    for theta in CACHE_GRID["thetas"]:
        lpc = cache_log_p(keys, nexts, CACHE_GRID["window"], theta)
        for lam in CACHE_GRID["lambdas"]:
            loss = mix_nll(lpc, log_p_model, lam).mean().item()
            grid.append(dict(theta=theta, lambdasm=lam, loss=loss, ppl=perplexity(loss)))
    best = min(grid, key=lambda r: r["loss"])
    return dict(grid=grid, best=dict(window=CACHE_GRID["window"], theta=best["theta"], lambdasm=best["lambdasm"]),
                static_loss=-log_p_model.mean().item())


def run(args) -> dict:
    from awd_edu.rundir import load_best
    if args.threads:
        torch.set_num_threads(args.threads)
    config, corpus, model = load_best(args.run, device="cpu")
    model.eval()
    cut = (lambda t: t[:args.max_tokens]) if args.max_tokens else (lambda t: t)
    valid, test = batchify(cut(corpus.valid), 1), batchify(cut(corpus.test), 1)
    search_src = valid[:min(args.search_tokens, len(valid))]
    key = dict(format=2, weights=sha256_file(args.run / "best.safetensors"), max_tokens=args.max_tokens,
               search_tokens=len(search_src), grad_batches=args.grad_batches, etas=args.etas, lams=args.lams,
               eps=args.eps, bptt=args.bptt, cache_grid=CACHE_GRID, time_tokens=args.time_tokens)
    steps = Steps(common.SCRATCH / f"{NAME}-{args.run.resolve().name}.partial.json", key, args.fresh)
    n_params = count_parameters(model)
    print(f"run {common.portable(args.run)}: {n_params:,} parameters; validation {len(valid) - 1:,} tokens, test "
          f"{len(test) - 1:,}; torch threads {torch.get_num_threads()}", flush=True)

    # 1. the cache, chosen on validation
    cs = steps.get("cache_search", lambda: cache_search(model, valid))
    cache = cs["best"]
    print(f"cache chosen on validation: theta {cache['theta']:g}, lambda {cache['lambdasm']:g}", flush=True)

    def static_and_cache(source):
        _, t_static, c_static = timed(lambda: sum(1 for _ in stream_outputs(model, source, 70)))
        r, t_cache, c_cache = timed(lambda: evaluate_with_cache(model, source, **cache, bptt=70))
        return dict(static_loss=r["base_loss"], cache_loss=r["loss"], seconds_static=t_static, seconds_cache=t_cache,
                    cpu_seconds_static=c_static, cpu_seconds_cache=c_cache, tokens=len(source) - 1)
    sc_valid = steps.get("static_cache_valid", lambda: static_and_cache(valid))
    sc_test = steps.get("static_cache_test", lambda: static_and_cache(test))
    print(f"static {perplexity(sc_valid['static_loss']):.2f} / {perplexity(sc_test['static_loss']):.2f}, "
          f"cache {perplexity(sc_valid['cache_loss']):.2f} / {perplexity(sc_test['cache_loss']):.2f} "
          f"(validation / test)", flush=True)

    # 2. dynamic evaluation: the statistics, the search on validation, then validation and test
    ms_path = steps.path.with_name(steps.path.name.replace(".partial.json", ".ms_sqrt.pt"))

    def statistics():
        train = batchify(corpus.train, DYNAMIC_DEFAULTS["batch_size"])
        n = args.grad_batches or None
        print(f"gathering sqrt(MS_g) over {n or (len(train) - 1 + args.bptt - 1) // args.bptt:,} training batches",
              flush=True)
        ms, seconds, cpu = timed(lambda: gradient_rms(model, train, args.bptt, n))
        torch.save(ms, ms_path)
        return dict(seconds=seconds, cpu_seconds=cpu, sha256=sha256_file(ms_path))
    st = steps.get("ms_sqrt", statistics)
    if not ms_path.is_file() or sha256_file(ms_path) != st["sha256"]:
        steps.done.pop("ms_sqrt")
        st = steps.get("ms_sqrt", statistics)
    ms_sqrt = torch.load(ms_path, weights_only=True)

    grid = []
    for lam in args.lams:
        for eta in args.etas:
            def one(eta=eta, lam=lam):
                s = search_dynamic(model, search_src, ms_sqrt, (eta,), (lam,), args.eps, args.bptt, progress=True)
                return s["grid"][0]
            r = steps.get(f"search eta={eta!r} lam={lam!r}", one)
            print(f"  search: eta {eta:g}, lambda {lam:g}: validation[:{len(search_src) - 1}] perplexity "
                  f"{r['ppl']:.2f}", flush=True)
            grid.append(r)
    best = min(grid, key=lambda r: r["loss"] if r["loss"] == r["loss"] else math.inf)
    eta, lam = best["eta"], best["lam"]
    print(f"dynamic evaluation chosen on validation: eta {eta:g}, lambda {lam:g}", flush=True)

    def dynamic(source):
        r = evaluate_dynamic(model, source, ms_sqrt, eta, lam, args.eps, args.bptt, cache=cache, progress=True)
        return {k: r[k] for k in ("loss", "cache_loss", "seconds", "cpu_seconds", "tokens")}
    dyn_valid = steps.get("dynamic_valid", lambda: dynamic(valid))
    dyn_test = steps.get("dynamic_test", lambda: dynamic(test))
    alone = steps.get("dynamic_timing", lambda: evaluate_dynamic(
        model, test[:min(args.time_tokens, len(test))], ms_sqrt, eta, lam, args.eps, args.bptt))

    def per_1k(seconds, tokens):
        return 1000 * seconds / tokens
    results = dict(
        run=common.portable(args.run), n_params=n_params, stage_config=dict(emb_size=config.emb_size,
                                                                     hidden_size=config.hidden_size,
                                                                     n_layers=config.n_layers),
        tokens=dict(valid=len(valid) - 1, test=len(test) - 1, search=len(search_src) - 1),
        chosen=dict(cache=cache, dynamic=dict(eta=eta, lam=lam, eps=args.eps, bptt=args.bptt),
                    grad_batches=args.grad_batches or "all", chosen_on="validation only"),
        valid_ppl_static=perplexity(sc_valid["static_loss"]), valid_ppl_cache=perplexity(sc_valid["cache_loss"]),
        valid_ppl_dynamic=perplexity(dyn_valid["loss"]),
        valid_ppl_dynamic_cache=perplexity(dyn_valid["cache_loss"]),
        test_ppl_static=perplexity(sc_test["static_loss"]), test_ppl_cache=perplexity(sc_test["cache_loss"]),
        test_ppl_dynamic=perplexity(dyn_test["loss"]), test_ppl_dynamic_cache=perplexity(dyn_test["cache_loss"]),
        seconds_per_1k_tokens=dict(
            static=per_1k(sc_test["seconds_static"], sc_test["tokens"]),
            cache=per_1k(sc_test["seconds_cache"], sc_test["tokens"]),
            dynamic=per_1k(alone["seconds"], alone["tokens"]),
            dynamic_cache=per_1k(dyn_test["seconds"], dyn_test["tokens"]),
            gradient_statistics_seconds=st["seconds"]),
        cpu_seconds_per_1k_tokens=dict(  # this process's CPU time: steadier than the wall clock on a busy machine
            static=per_1k(sc_test["cpu_seconds_static"], sc_test["tokens"]),
            cache=per_1k(sc_test["cpu_seconds_cache"], sc_test["tokens"]),
            dynamic=per_1k(alone["cpu_seconds"], alone["tokens"]),
            dynamic_cache=per_1k(dyn_test["cpu_seconds"], dyn_test["tokens"]),
            gradient_statistics_seconds=st["cpu_seconds"]),
        search=dict(grid=grid, tokens=len(search_src) - 1), cache_search=cs["grid"], papers=PAPERS)
    results["dynamic_below_cache"] = results["test_ppl_dynamic"] < results["test_ppl_cache"]
    return results


def summary(r: dict) -> str:
    c, d = r["chosen"]["cache"], r["chosen"]["dynamic"]
    return (f"{r['run']} ({r['n_params']:,} parameters), test perplexity: static {r['test_ppl_static']:.2f}, cache "
            f"{r['test_ppl_cache']:.2f}, dynamic {r['test_ppl_dynamic']:.2f}, dynamic + cache "
            f"{r['test_ppl_dynamic_cache']:.2f} (validation {r['valid_ppl_static']:.2f} / {r['valid_ppl_cache']:.2f} / "
            f"{r['valid_ppl_dynamic']:.2f} / {r['valid_ppl_dynamic_cache']:.2f}); chosen on validation: cache theta "
            f"{c['theta']:g}, lambda {c['lambdasm']:g}; dynamic eta {d['eta']:g}, lambda {d['lam']:g}; papers at full "
            f"size 57.3 / 52.8 / 51.1")


def main(argv=None) -> int:
    args = parse_args(argv)
    load_before = common.load_average()
    res = run(args)
    s, c = res["seconds_per_1k_tokens"], res["cpu_seconds_per_1k_tokens"]
    rows = [[m, f"{res[f'valid_ppl_{k}']:.2f}", f"{res[f'test_ppl_{k}']:.2f}",
             "" if p is None else f"{p:.1f}", f"{s[k]:.2f}", f"{c[k]:.2f}"]
            for m, k, p in (("static", "static", PAPERS["test"]["static"]), ("cache", "cache", PAPERS["test"]["cache"]),
                            ("dynamic", "dynamic", PAPERS["test"]["dynamic"]),
                            ("dynamic + cache", "dynamic_cache", None))]
    print()
    common.print_table(rows, ["method", "valid ppl", "test ppl", "paper test (24M)", "s / 1k tokens",
                              "CPU s / 1k tokens"])
    text = summary(res)
    print(f"\n{text}")
    device = torch.device("cpu")
    cfg = {k: (common.portable(v) if k == "run" else v) for k, v in vars(args).items() if k not in ("out", "fresh")}
    notes = ["hyperparameters chosen on validation only: the cache's theta and lambda over the whole validation text "
             "(window 500), dynamic evaluation's eta and lambda over its first search tokens; the test text is "
             "evaluated once per method",
             "static and cache at batch 1 in windows of 70 tokens; dynamic evaluation at batch 1 in segments of bptt "
             "tokens; dynamic + cache is chapter 09's cache on the adapted model's outputs, in the same pass",
             "seconds (wall clock, and this process's CPU time) per 1,000 test tokens on this CPU; dynamic alone is timed on the first time_tokens of the test "
             "text, dynamic + cache over all of it; gathering sqrt(MS_g) is a one-off cost, given separately",
             "the papers' dynamic-evaluation row is Krause et al.'s AWD-LSTM (51.6 / 51.1); neither paper reports "
             "dynamic evaluation + cache for AWD-LSTM"]
    rec = common.record(NAME, __file__, device, cfg, res, text, bool(args.max_tokens), notes, load_before, argv)  # command_line keeps no absolute path
    out = common.write_record(rec, args.out or common.default_out(NAME, device, bool(args.max_tokens)))
    print(f"wrote {common.portable(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
