"""What do the AWD-LSTM's regularisers cost per training step? Time one full step, side by side, for

  (a) `AWDLSTM` in training mode with every regulariser on (embedding, locked and weight dropout, AR and TAR);
  (b) a bare model of the same shapes: embedding, plain one-layer `nn.LSTM`s, tied decoder, no dropout, no AR/TAR;
  (c) (b) with chapter 00's `ScratchLSTM` layers (reported, not a target). On a CPU it runs at a shorter window
      (`--scratch-bptt`, default 10) next to (b) at that same window, so its ratio is still side by side.

Shapes, dropouts, AR/TAR and optimizer settings come from an `awd_edu.train` preset (default `ptb`). A step is: zero
the gradients, forward, cross-entropy (+ AR + TAR for (a), by the trainer's `lm_loss`), read the loss value, backward,
clip the global gradient norm, one SGD step, and carry the detached hidden state to the next step, as the trainer
does. The variants are interleaved within each repetition (the order rotates), after warm-up; medians are quoted,
of wall time and of the process's CPU time (the steadier one on a busy machine, with `--threads 1`).

    python benchmarks/step_cost.py --device cpu --profile 15   # ptb shapes; about 5-10 minutes on 2 idle cores
    python benchmarks/step_cost.py --device cuda               # ptb shapes on a GPU, 30 repetitions
    python benchmarks/step_cost.py --tiny                      # seconds: CI's smoke run (writes under runs/)
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py, next to this script)

from awd_edu.lstm import ScratchLSTM  # noqa: E402
from awd_edu.model import build_model, detach_hidden, layer_sizes  # noqa: E402
from awd_edu.config import PRESETS, TrainConfig  # noqa: E402
from awd_edu.loop import lm_loss  # noqa: E402

PTB_VOCAB = 10_000  # Penn Treebank's vocabulary (the step time does not depend on the words themselves)
SHAPE_FIELDS = dict(emb="emb_size", hidden="hidden_size", layers="n_layers", batch="batch_size", bptt="bptt")
TINY = dict(vocab=200, emb=16, hidden=24, layers=3, batch=4, bptt=12)


def preset_shape(config: TrainConfig) -> dict:
    "The step's shape from a training config: vocabulary, sizes, batch and window."
    return dict(vocab=PTB_VOCAB, **{k: getattr(config, f) for k, f in SHAPE_FIELDS.items()})


PTB = preset_shape(TrainConfig.from_preset("ptb"))  # 10,000 / 400 / 1150 / 3 layers / batch 20 / bptt 70
TARGETS = dict(cpu=1.15, cuda=1.10)  # (a)/(b) at the ptb shapes
VARIANTS = {"a": "AWDLSTM, every regulariser on", "b": "bare nn.LSTM model, no regularisers",
            "c": "bare model with ScratchLSTM layers"}


class BareLM(nn.Module):
    "The floor: embedding, one-layer LSTMs of the AWD-LSTM's sizes, tied decoder; no dropout of any kind."
    def __init__(self, vocab: int, emb: int, hidden: int, layers: int, lstm=nn.LSTM):
        super().__init__()
        self.sizes = layer_sizes(emb, hidden, layers, True)  # [(400, 1150), (1150, 1150), (1150, 400)] at ptb
        self.encoder = nn.Embedding(vocab, emb)
        self.rnns = nn.ModuleList(lstm(i, o) for i, o in self.sizes)
        self.decoder = nn.Linear(emb, vocab)
        with torch.no_grad():
            self.encoder.weight.uniform_(-0.1, 0.1)
            self.decoder.bias.zero_()
        self.decoder.weight = self.encoder.weight  # tied

    def init_hidden(self, batch: int) -> list:
        w = self.encoder.weight
        return [(w.new_zeros(1, batch, o), w.new_zeros(1, batch, o)) for _, o in self.sizes]

    def forward(self, x, hidden):
        h, new_hidden = self.encoder(x), []  # (T, B, emb)
        for rnn, state in zip(self.rnns, hidden):
            h, state = rnn(h, state)  # (T, B, H_l)
            new_hidden.append(state)
        return self.decoder(h), new_hidden  # (T, B, V)


class Runner:
    "One variant: its model, optimizer, fixed batch and carried hidden state; `step()` is one training step."
    def __init__(self, key: str, shape: dict, config: TrainConfig, device: torch.device, seed: int = 0):
        torch.manual_seed(seed)
        self.key, self.shape, self.device = key, dict(shape), device
        self.config = config.replace(**{f: shape[k] for k, f in SHAPE_FIELDS.items()})
        V, E, H, L = shape["vocab"], shape["emb"], shape["hidden"], shape["layers"]
        if key == "a":
            model = build_model(self.config, V)  # the trainer's AWDLSTM, the config's dropouts
        else:
            model = BareLM(V, E, H, L, lstm=nn.LSTM if key == "b" else ScratchLSTM)
        self.model = model.to(device).train()
        self.params = list(self.model.parameters())
        self.opt = torch.optim.SGD(self.params, lr=self.config.lr, weight_decay=self.config.wdecay)
        g = torch.Generator().manual_seed(seed)
        data = torch.randint(V, (shape["bptt"] + 1, shape["batch"]), generator=g).to(device)  # uniform random ids
        self.x, self.y = data[:-1], data[1:]  # (T, B) inputs and next-word targets
        self.hidden = self.model.init_hidden(shape["batch"])
        self.loss = None

    def step(self):
        self.hidden = detach_hidden(self.hidden)  # truncated BPTT: keep the state, drop its graph
        self.opt.zero_grad(set_to_none=True)
        if self.key == "a":
            out = self.model(self.x, self.hidden)
            self.hidden = out.hidden
            loss, _ = lm_loss(out, self.y, self.config.alpha, self.config.beta)  # the trainer's: CE + AR + TAR
        else:
            logits, self.hidden = self.model(self.x, self.hidden)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), self.y.reshape(-1))
        self.loss = loss.item()  # as the trainer: read the loss (checked for NaN) before the backward pass
        loss.backward()
        nn.utils.clip_grad_norm_(self.params, self.config.clip)
        self.opt.step()

    @property
    def tokens(self) -> int:
        return self.shape["batch"] * self.shape["bptt"]


def profile_step(runner: Runner, rows: int, steps: int = 3) -> list:
    "Profile `steps` steps of `runner`; return the `rows` ops with the most self time per step (CPU, or GPU time)."
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if runner.device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            runner.step()
        common.sync(runner.device)
    key = "self_device_time_total" if runner.device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0) or 0, reverse=True)
    total = sum(getattr(e, key, 0) or 0 for e in prof.key_averages())
    print(f"\nprofile of {steps} steps of ({runner.key}) {VARIANTS[runner.key]}: top {rows} ops by self time")
    print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=40))
    return [dict(op=e.key, calls_per_step=e.count / steps, self_ms_per_step=(getattr(e, key, 0) or 0) / 1e3 / steps,
                 share=round((getattr(e, key, 0) or 0) / total, 4) if total else None) for e in events[:rows]]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--preset", default="ptb", choices=list(PRESETS),
                   help="awd_edu.train preset giving the shapes, dropouts, AR/TAR and optimizer settings (default ptb)")
    p.add_argument("--batch", type=int, help=f"sequences per batch (default {PTB['batch']}, the ptb preset)")
    p.add_argument("--bptt", type=int, help=f"window length (default {PTB['bptt']})")
    p.add_argument("--vocab", type=int, help=f"vocabulary size (default {PTB['vocab']})")
    p.add_argument("--emb", type=int, help=f"embedding size (default {PTB['emb']})")
    p.add_argument("--hidden", type=int, help=f"hidden size of the inner layers (default {PTB['hidden']})")
    p.add_argument("--layers", type=int, help=f"LSTM layers (default {PTB['layers']})")
    p.add_argument("--reps", type=int, help="timed repetitions per variant (default 7 on cpu, 30 on cuda)")
    p.add_argument("--warmup", type=int, help="untimed repetitions first (default 2 on cpu, 5 on cuda)")
    p.add_argument("--scratch-bptt", type=int,
                   help="window of (c) and of its side-by-side (b); default the full bptt on cuda, 10 on cpu")
    p.add_argument("--no-scratch", action="store_true", help="skip (c)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--profile", type=int, default=0, metavar="ROWS",
                   help="also profile 3 steps of (a) and of (b) and print the top ROWS ops")
    p.add_argument("--tiny", action="store_true", help="tiny shapes and 2 repetitions: a smoke test in seconds")
    p.add_argument("--out", help="JSON path (default benchmarks/results/step_cost-<device>.json; "
                                 "--tiny: runs/benchmarks/)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device, load_before = common.begin(args)
    config = TrainConfig.from_preset(args.preset)
    base = TINY if args.tiny else preset_shape(config)
    shape = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in base.items()}
    gpu = device.type == "cuda"
    reps = args.reps or (2 if args.tiny else 30 if gpu else 7)
    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 5 if gpu else 2)
    scratch_bptt = args.scratch_bptt or (shape["bptt"] if gpu or args.tiny else min(10, shape["bptt"]))
    short = dict(shape, bptt=scratch_bptt)
    notes = ["data: uniform random token ids (step time does not depend on the values)",
             "each step carries the detached hidden state to the next, as in training"]

    runners = {"a": Runner("a", shape, config, device), "b": Runner("b", shape, config, device)}
    if not args.no_scratch:
        if scratch_bptt != shape["bptt"]:
            runners["b_short"] = Runner("b", short, config, device)
            notes.append(f"(c) ScratchLSTM runs at bptt {scratch_bptt}, not {shape['bptt']}, to keep the run short; "
                         f"it is compared with (b) at that same bptt (b_short), measured side by side")
        runners["c"] = Runner("c", short, config, device)

    keys = list(runners)
    print(f"step_cost on {common.device_info(device)['device_name']}, torch {torch.__version__}")
    print(f"shape {shape}; warm-up {warmup}, repetitions {reps}, order rotated every repetition")
    times, cpu_times = {k: [] for k in keys}, {k: [] for k in keys}
    for r in range(warmup + reps):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for k in order:
            wall, cpu = common.timed(runners[k].step, device)
            if r >= warmup:
                times[k].append(wall); cpu_times[k].append(cpu)
        if r < warmup:
            print(f"  warm-up {r + 1}/{warmup}", flush=True)
        else:
            print(f"  rep {r - warmup + 1}/{reps}: " + ", ".join(f"({k}) {1e3 * times[k][-1]:.0f} ms" for k in keys),
                  flush=True)

    memory = {k: common.peak_memory(runners[k].step, device) for k in keys}
    finite = {k: math.isfinite(runners[k].loss) for k in keys}
    results = {}
    for k in keys:
        s, c = common.stats(times[k]), common.stats(cpu_times[k])
        rn = runners[k]
        results[k] = dict(variant=VARIANTS[k[0]], shape=rn.shape, ms_per_step=1e3 * s["median"],
                          ms_q1=1e3 * s["q1"], ms_q3=1e3 * s["q3"], ms_min=1e3 * s["min"], ms_max=1e3 * s["max"],
                          tokens_per_s=rn.tokens / s["median"], cpu_ms_per_step=1e3 * c["median"],
                          peak_mib=memory[k]["peak_mib"], total_peak_mib=memory[k]["total_peak_mib"],
                          params_mib=common.param_mib(rn.model), loss_finite=finite[k], times_s=times[k],
                          cpu_times_s=cpu_times[k])
    ratio = results["a"]["ms_per_step"] / results["b"]["ms_per_step"]
    paired = common.stats([ta / tb for ta, tb in zip(times["a"], times["b"])])
    target = TARGETS[device.type]
    at_ptb = shape == PTB and args.preset == "ptb"
    results["ratio_a_b"] = ratio
    results["ratio_a_b_paired_median"] = paired["median"]
    results["ratio_a_b_paired_q1_q3"] = [paired["q1"], paired["q3"]]
    results["ratio_a_b_cpu_time"] = results["a"]["cpu_ms_per_step"] / results["b"]["cpu_ms_per_step"]
    results["target_a_b"] = target
    results["at_ptb_shapes"] = at_ptb
    results["meets_target"] = ratio <= target if at_ptb else None
    if "c" in results:
        ref = "b_short" if "b_short" in results else "b"
        results["ratio_c_b"] = results["c"]["ms_per_step"] / results[ref]["ms_per_step"]
        results["ratio_c_b_reference"] = ref
    results["memory_method"] = memory["a"]["method"]
    profile = {}
    if args.profile:
        profile = {k: profile_step(runners[k], args.profile) for k in ("a", "b")}
        results["profile_top_ops"] = profile

    print()
    rows = [[f"({k[0]}){' short' if k == 'b_short' else ''} {results[k]['variant']}",
             f"T={results[k]['shape']['bptt']}", f"{results[k]['ms_per_step']:.1f}",
             f"{results[k]['ms_q1']:.0f}-{results[k]['ms_q3']:.0f}", f"{results[k]['cpu_ms_per_step']:.1f}",
             f"{results[k]['tokens_per_s']:,.0f}",
             "n/a" if results[k]['peak_mib'] is None else f"{results[k]['peak_mib']:.0f}"] for k in keys]
    common.print_table(rows, ["variant", "window", "ms/step (median)", "IQR ms", "CPU ms", "tokens/s", "peak MiB"])
    verdict = ("" if not at_ptb else f" -> target <= {target:.2f} {'met' if ratio <= target else 'MISSED'}")
    print(f"\n(a)/(b) = {ratio:.3f} (median of paired ratios {paired['median']:.3f}; "
          f"of CPU times {results['ratio_a_b_cpu_time']:.3f}){verdict}")
    if not at_ptb:
        print(f"  (not the ptb shapes, so the target <= {target:.2f} does not apply)")
    if "ratio_c_b" in results:
        print(f"(c)/({results['ratio_c_b_reference'].replace('_', ' ')}) = {results['ratio_c_b']:.2f}"
              + (f" at bptt {scratch_bptt} (a smaller shape, for time)" if scratch_bptt != shape["bptt"] else ""))
    print(f"peak memory: {memory['a']['method']}")
    for n in notes:
        print("note:", n)

    cpu_note = f", by CPU time {results['ratio_a_b_cpu_time']:.3f}" if device.type == "cpu" else ""
    summary = (f"(a) {results['a']['ms_per_step']:.0f} ms, (b) {results['b']['ms_per_step']:.0f} ms per step "
               f"(batch {shape['batch']}, bptt {shape['bptt']}, {results['a']['tokens_per_s']:,.0f} vs "
               f"{results['b']['tokens_per_s']:,.0f} tokens/s); (a)/(b) = {ratio:.3f}{cpu_note}"
               + (f" (target <= {target:.2f}: {'met' if ratio <= target else 'missed'})" if at_ptb else ""))
    if "ratio_c_b" in results:
        summary += f"; (c)/(b) = {results['ratio_c_b']:.1f}"
        summary += f" at bptt {scratch_bptt}" if scratch_bptt != shape["bptt"] else ""
    regs = ("dropout", "dropouth", "dropouti", "dropoute", "wdrop", "alpha", "beta")
    config = dict(preset=args.preset, shape=shape, scratch_shape=short if "c" in runners else None,
                  regularisers={k: getattr(config, k) for k in regs},
                  optimizer=dict(name="SGD", lr=config.lr, weight_decay=config.wdecay, clip=config.clip),
                  reps=reps, warmup=warmup, order="rotated per repetition",
                  threads=torch.get_num_threads())
    rec = common.record("step_cost", __file__, device, config, results, summary, args.tiny, notes, load_before, argv)
    out = common.write_record(rec, args.out or common.default_out("step_cost", device, args.tiny))
    print(f"\nwrote {out}")
    return rec


if __name__ == "__main__":
    main()
