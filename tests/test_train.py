"""Tests of awd_edu.train: the config, the loss and the step, NT-ASGD inside the trainer, checkpoints, divergence,
reproducibility, fine-tuning, sampling and the dashboard callbacks."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import awd_edu.train as T
from awd_edu.ntasgd import trigger_epoch
from awd_edu.train import (HTMLReport, LiveDashboard, StepTrace, TrainConfig, Trainer, TrainingDiverged,
                           CheckpointError, dashboard_figure, evaluate, load_weights, read_metrics, resolve_preset,
                           sample_words, unigram_perplexity)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    "Tiny models run faster on one thread (and the machine may be shared); restored afterwards."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small(**changes):
    "The tiny preset on a small slice: about a second per epoch."
    return TrainConfig.from_preset("tiny").replace(**{"max_train_tokens": 3_000, "max_eval_tokens": 600,
                                                      "epochs": 1, **changes})


def numbers(metrics):
    "The deterministic part of metrics lines (no timings)."
    keys = ("stage", "epoch", "train_loss", "valid_loss", "lr", "optimizer", "switched", "best", "mean_seq_len",
            "n_batches")
    return [{k: m[k] for k in keys} for m in metrics]


# ---------------------------------------------------------------- the module and the config

def test_import_does_not_import_plotly_or_widgets():
    code = "import sys, awd_edu.train; print('plotly' in sys.modules, 'ipywidgets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_defaults_are_the_papers_ptb_command():
    c = TrainConfig.from_preset("ptb")
    assert (c.batch_size, c.bptt, c.lr, c.clip, c.alpha, c.beta, c.wdecay, c.nonmono, c.epochs, c.seed) == \
           (20, 70, 30.0, 0.25, 2.0, 1.0, 1.2e-6, 5, 500, 141)
    assert (c.dropout, c.dropouth, c.dropouti, c.dropoute, c.wdrop) == (0.4, 0.25, 0.4, 0.1, 0.5)
    assert (c.emb_size, c.hidden_size, c.n_layers, c.eval_batch_size, c.test_batch_size) == (400, 1150, 3, 10, 1)
    assert c.max_train_tokens is None and c.max_eval_tokens is None and c.tie_weights


def test_presets_change_only_what_they_name():
    base = TrainConfig()
    for name, changes in T.PRESETS.items():
        c = TrainConfig.from_preset(name)
        assert c.preset == name
        for field in T.CONFIG_FIELDS:
            if field not in changes and field != "preset":
                assert getattr(c, field) == getattr(base, field), (name, field)
    assert TrainConfig.from_preset("tiny").max_train_tokens is not None
    assert TrainConfig.from_preset("ptb-small").max_train_tokens is None   # the whole corpus


@pytest.mark.parametrize("changes, words", [
    (dict(dropout=-0.1), ["dropout", "[0, 1)", "-0.1"]),
    (dict(wdrop=1.0), ["wdrop", "[0, 1)"]),
    (dict(bptt=0), ["bptt", ">= 1"]),
    (dict(lr=0.0), ["lr", "> 0"]),
    (dict(lr=float("nan")), ["lr", "finite"]),
    (dict(clip=-1.0), ["clip", ">= 0"]),
    (dict(batch_size=2.5), ["batch_size", "int"]),
    (dict(tie_weights=1), ["tie_weights", "bool"]),
    (dict(device="gpu"), ["device", "cuda"]),
    (dict(max_train_tokens=1), ["max_train_tokens", ">= 2"]),
    (dict(dropot=0.1), ["unknown", "dropot", "dropout"]),
])
def test_bad_values_are_refused_naming_the_field(changes, words):
    with pytest.raises((ValueError, TypeError)) as e:
        TrainConfig().replace(**changes)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError) as e:
        TrainConfig.from_preset("ptb-large")
    assert all(name in str(e.value) for name in T.PRESETS)
    with pytest.raises(ValueError):
        resolve_preset("ptb-large")


def test_auto_preset_depends_on_cuda():
    assert resolve_preset("auto", cuda=True)[0] == "ptb"
    name, reason = resolve_preset("auto", cuda=False)
    assert name == "ptb-small" and "CUDA" in reason
    assert resolve_preset("tiny") == ("tiny", "asked for by name")


def test_overrides_are_typed_by_the_field_and_survive_json(tmp_path):
    c = TrainConfig().with_overrides(["lr=20", "epochs=3", "max_eval_tokens=None", "tie_weights=false",
                                      "data_dir=/x", "dropouti=0.5"])
    assert (c.lr, c.epochs, c.max_eval_tokens, c.tie_weights, c.data_dir, c.dropouti) == (20.0, 3, None, False, "/x", 0.5)
    assert isinstance(c.lr, float) and isinstance(c.epochs, int)
    assert TrainConfig.load(c.save(tmp_path / "config.json")) == c
    for bad in (["epochs=three"], ["lr"], ["nope=1"], ["tie_weights=maybe"]):
        with pytest.raises(ValueError):
            TrainConfig().with_overrides(bad)
    (tmp_path / "bad.json").write_text(json.dumps({"lr": 1.0, "speed": 3}))
    with pytest.raises(ValueError, match="speed"):
        TrainConfig.load(tmp_path / "bad.json")


def test_unigram_perplexity_hand_made():
    assert unigram_perplexity(torch.tensor([0, 1]), torch.tensor([0, 1]), 2, 0.0) == pytest.approx(2.0)
    # counts 3:1, add-one -> 4/6 and 2/6; scoring [0, 1]: exp(-(log 4/6 + log 2/6) / 2)
    assert unigram_perplexity(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 1]), 2) == \
        pytest.approx(math.exp(-(math.log(4 / 6) + math.log(2 / 6)) / 2))


# ---------------------------------------------------------------- the tiny preset, trained once

@pytest.fixture(scope="module")
def tiny_run(ptb_corpus, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    events = []
    trainer = Trainer(TrainConfig.from_preset("tiny"), run_dir, corpus=ptb_corpus, callbacks=[events.append],
                      progress=False)
    history = trainer.fit()
    return trainer, history, events


def test_tiny_preset_falls_well_below_the_unigram_baseline(tiny_run, ptb_corpus):
    trainer, history, _ = tiny_run
    cfg = trainer.config
    baseline = unigram_perplexity(ptb_corpus.train[:cfg.max_train_tokens], ptb_corpus.valid[:cfg.max_eval_tokens],
                                  len(ptb_corpus.vocab))
    assert history[-1]["valid_ppl"] < 0.75 * baseline
    assert history[-1]["valid_ppl"] < history[0]["valid_ppl"]


def test_run_directory_and_metrics_lines(tiny_run):
    trainer, history, events = tiny_run
    run = trainer.run_dir
    assert TrainConfig.load(run / "config.json") == trainer.config
    assert read_metrics(run) == history and [m["epoch"] for m in history] == [1, 2, 3]
    for m in history:
        assert {"epoch", "train_loss", "valid_loss", "valid_ppl", "lr", "optimizer", "seconds", "tokens_per_s",
                "peak_mem_mb"} <= set(m)
        assert m["valid_ppl"] == pytest.approx(math.exp(m["valid_loss"]))
        assert m["seconds"] > 0 and m["tokens_per_s"] > 0
    pointer = json.loads((run / "checkpoints" / "train-latest.json").read_text())
    assert pointer["epoch"] == 3 and pointer["finished"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == \
        ["train-e0003.safetensors", "train-e0003.state.pt", "train-latest.json"]   # older epochs removed
    kinds = [e["event"] for e in events if e["event"] != "batch"]
    assert kinds == ["start", "epoch", "epoch", "epoch", "end"]


def test_every_step_lr_is_scaled_by_seq_len_over_bptt(tiny_run):
    trainer, _, events = tiny_run
    batches = [e for e in events if e["event"] == "batch"]
    cfg = trainer.config
    assert all(b["lr"] == pytest.approx(cfg.lr * b["seq_len"] / cfg.bptt) for b in batches)
    assert len({b["seq_len"] for b in batches}) > 5           # variable-length BPTT really varies
    assert trainer.optimizer.param_groups[0]["lr"] == cfg.lr


def test_best_weights_give_the_best_valid_loss_and_test_runs_at_batch_1(tiny_run, ptb_corpus):
    trainer, history, _ = tiny_run
    result = trainer.test()
    assert result["valid_loss"] == pytest.approx(min(m["valid_loss"] for m in history), abs=1e-6)
    assert trainer.data["test"].shape[1] == 1 and trainer.data["valid"].shape[1] == 10
    assert json.loads((trainer.run_dir / "results.json").read_text())["train"]["test_ppl"] == result["test_ppl"]


def test_sampling_is_reproducible_and_checks_its_arguments(tiny_run, ptb_corpus):
    trainer, _, _ = tiny_run
    m, v = trainer.model, ptb_corpus.vocab
    a = sample_words(m, v, 15, 0.8, prompt="the company", seed=4)
    assert a == sample_words(m, v, 15, 0.8, prompt="the company", seed=4) and len(a) == 15
    assert all(w in v for w in a)
    with pytest.raises(ValueError, match="vocabulary"):
        sample_words(m, v, 5, prompt="The Zebra")
    with pytest.raises(ValueError, match="temperature"):
        sample_words(m, v, 5, temperature=0)


# ---------------------------------------------------------------- the pieces of a step

def test_ar_reads_the_dropped_output_and_tar_the_raw_one(ptb_corpus, monkeypatch, tmp_path):
    seen = {"ar": [], "tar": [], "out": []}
    real_ar, real_tar = T.activation_reg, T.temporal_activation_reg
    monkeypatch.setattr(T, "activation_reg", lambda h, a: seen["ar"].append(h) or real_ar(h, a))
    monkeypatch.setattr(T, "temporal_activation_reg", lambda h, b: seen["tar"].append(h) or real_tar(h, b))
    trainer = Trainer(small(n_layers=2, dropout=0.5, max_train_tokens=1_000), tmp_path / "r", corpus=ptb_corpus,
                      progress=False)
    trainer.model.register_forward_hook(lambda mod, inp, out: seen["out"].append(out) if mod.training else None)
    trainer.run_epoch()
    assert len(seen["ar"]) == len(seen["tar"]) == len(seen["out"]) > 0
    for ar_h, tar_h, out in zip(seen["ar"], seen["tar"], seen["out"]):
        assert ar_h is out.outputs[-1] and tar_h is out.raw_outputs[-1]
        assert not torch.equal(ar_h, tar_h)          # the output dropout was active


def test_clip_before_the_step_and_lr_restored_after_it(ptb_corpus, tmp_path):
    trainer = Trainer(small(max_train_tokens=1_000), tmp_path / "r", corpus=ptb_corpus, progress=False)
    seen = []
    step = trainer.optimizer.step
    def spy(*a, **k):
        params = list(trainer.model.parameters())
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
        seen.append((trainer.optimizer.param_groups[0]["lr"], norm.item()))
        return step(*a, **k)
    trainer.optimizer.step = spy
    lengths = []
    trainer.callbacks.append(lambda e: lengths.append(e["seq_len"]) if e["event"] == "batch" else None)
    trainer.run_epoch()
    assert [lr for lr, _ in seen] == pytest.approx([30.0 * n / trainer.config.bptt for n in lengths])
    assert all(norm <= trainer.config.clip + 1e-5 for _, norm in seen)
    assert trainer.optimizer.param_groups[0]["lr"] == 30.0


def test_hidden_state_reset_each_epoch_and_detached_between_batches(ptb_corpus, tmp_path):
    trainer = Trainer(small(epochs=2, max_train_tokens=1_000), tmp_path / "r", corpus=ptb_corpus, progress=False)
    calls = []
    def hook(mod, args, kwargs):
        if mod.training:
            hidden = args[1] if len(args) > 1 else kwargs.get("hidden")
            calls.append([(h.detach().abs().sum().item(), h.grad_fn is None) for h, c in hidden])
    trainer.model.register_forward_pre_hook(hook, with_kwargs=True)
    per_epoch = []
    trainer.callbacks.append(lambda e: per_epoch.append(len(calls)) if e["event"] == "epoch" else None)
    trainer.fit()
    firsts = [0, per_epoch[0]]
    for i, call in enumerate(calls):
        assert all(no_graph for _, no_graph in call)                 # detached: no graph into the past
        assert all(s == 0 for s, _ in call) == (i in firsts)         # zeros exactly at the start of each epoch


def test_same_seed_same_numbers_other_seed_other_numbers(ptb_corpus, tmp_path):
    runs = [Trainer(small(epochs=2, seed=s), tmp_path / f"r{i}", corpus=ptb_corpus, progress=False).fit()
            for i, s in enumerate((141, 141, 7))]
    assert numbers(runs[0]) == numbers(runs[1])
    assert numbers(runs[0]) != numbers(runs[2])


# ---------------------------------------------------------------- NT-ASGD and fine-tuning

def feed(trainer, losses, log=None):
    "Replace validation by a hand-fed sequence; `log` records whether the averaged weights were in the model."
    it = iter(losses)
    def fake(split="valid"):
        if log is not None:
            p = next(iter(trainer.model.parameters()))
            ax = trainer.optimizer.state.get(p, {}).get("ax") if trainer.optimizer_name == "asgd" else None
            log.append(ax is not None and torch.equal(p, ax))
        return next(it)
    trainer.evaluate_split = fake


@pytest.mark.parametrize("losses, n", [([5.0, 4.0, 3.9, 4.1, 4.2, 3.7, 3.6], 2), ([5.0, 4.0, 4.5, 4.6, 3.0, 2.9], 1)])
def test_switch_to_asgd_on_the_trigger_epoch_and_average_from_then_on(ptb_corpus, tmp_path, losses, n):
    trainer = Trainer(small(nonmono=n, epochs=len(losses), max_train_tokens=1_000), tmp_path / "r",
                      corpus=ptb_corpus, progress=False)
    averaged = []
    feed(trainer, losses, averaged)
    metrics = trainer.fit()
    k = trigger_epoch(losses, n)
    assert k is not None and trainer.switched_at == k
    assert [m["switched"] for m in metrics] == [e == k for e in range(1, len(losses) + 1)]
    assert [m["optimizer"] for m in metrics] == ["sgd"] * k + ["asgd"] * (len(losses) - k)
    assert isinstance(trainer.optimizer, torch.optim.ASGD)
    assert averaged == [False] * k + [True] * (len(losses) - k)   # from the first epoch trained with ASGD
    # the last epoch was the best: best.safetensors holds the averages, not the live weights
    best = T.build_model(trainer.config, trainer.vocab_size)
    load_weights(best, trainer.run_dir / "best.safetensors")
    for p, q in zip(trainer.model.parameters(), best.parameters()):
        assert torch.equal(q, trainer.optimizer.state[p]["ax"])
    assert any(not torch.equal(p, trainer.optimizer.state[p]["ax"]) for p in trainer.model.parameters())


def test_finetune_starts_from_best_with_fresh_asgd_caps_windows_and_stops_on_the_rule(ptb_corpus, tmp_path):
    trainer = Trainer(small(epochs=2, finetune_epochs=10, nonmono=1, bptt=12, finetune_len_delta=2),
                      tmp_path / "r", corpus=ptb_corpus, progress=False)
    trainer.fit()
    best_before = (trainer.run_dir / "best.safetensors").read_bytes()
    start = trainer.evaluate_split("valid")
    steps, calls = [], []
    trainer.callbacks.append(lambda e: steps.append(e) if e["event"] == "batch" else None)
    real = trainer.evaluate_split
    losses = iter([start + 1.0, start + 0.5, start + 2.0, start + 3.0])  # never better than the start
    def fake(split="valid"):
        calls.append(split)
        return real(split) if len(calls) == 1 else next(losses)       # first call: the loss to beat, for real
    trainer.evaluate_split = fake
    ft = trainer.finetune()
    assert trainer.best_val_loss == pytest.approx(start)
    assert isinstance(trainer.optimizer, torch.optim.ASGD) and all(m["optimizer"] == "asgd" for m in ft)
    assert max(s["seq_len"] for s in steps) <= 12 + 2
    # nonmono 1: stops on the first epoch whose loss exceeds the minimum before the last one -> epoch 3
    assert [m["epoch"] for m in ft] == [1, 2, 3] == list(range(1, trigger_epoch([l["valid_loss"] for l in ft], 1) + 1))
    assert ft[-1]["stop"] and trainer.finished
    assert (trainer.run_dir / "best.safetensors").read_bytes() == best_before   # never improved: kept
    assert json.loads((trainer.run_dir / "checkpoints" / "finetune-latest.json").read_text())["finished"]


# ---------------------------------------------------------------- files, crashes, divergence

def test_an_existing_run_is_never_overwritten(ptb_corpus, tmp_path):
    Trainer(small(), tmp_path / "r", corpus=ptb_corpus, progress=False).fit()
    before = (tmp_path / "r" / "metrics.jsonl").read_text()
    with pytest.raises(FileExistsError, match="resume"):
        Trainer(small(), tmp_path / "r", corpus=ptb_corpus, progress=False)
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == before


def test_a_crash_inside_save_leaves_the_previous_checkpoint_intact(ptb_corpus, tmp_path, monkeypatch):
    trainer = Trainer(small(epochs=2), tmp_path / "r", corpus=ptb_corpus, progress=False)
    trainer.run_epoch()
    folder = trainer.run_dir / "checkpoints"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    import safetensors.torch
    def half_written(model, filename, metadata=None, **kw):
        Path(filename).write_bytes(b"\x00" * 100)   # a partial file ...
        raise OSError("disk full")                   # ... then the crash
    monkeypatch.setattr(safetensors.torch, "save_model", half_written)
    with pytest.raises(OSError, match="disk full"):
        trainer.run_epoch()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before   # same files, same bytes, no temp file
    monkeypatch.undo()
    resumed = Trainer.resume(trainer.run_dir, corpus=ptb_corpus, progress=False)
    assert resumed.epoch == 1


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(ptb_corpus, tmp_path):
    holder = {}
    def sabotage(event):
        if event["event"] == "epoch" and event["epoch"] == 1:
            holder["t"].optimizer.param_groups[0]["lr"] = float("inf")
    trainer = holder["t"] = Trainer(small(epochs=3), tmp_path / "r", corpus=ptb_corpus, callbacks=[sabotage],
                                    progress=False)
    folder = trainer.run_dir / "checkpoints"
    with pytest.raises(TrainingDiverged) as e:
        trainer.fit()
    msg = str(e.value)
    assert "nan" in msg.lower() and "epoch 2" in msg and "epoch 1" in msg and "lower learning rate" in msg
    assert json.loads((folder / "train-latest.json").read_text())["epoch"] == 1
    assert [m["epoch"] for m in read_metrics(trainer.run_dir)] == [1]
    resumed = Trainer.resume(trainer.run_dir, corpus=ptb_corpus, progress=False)
    assert resumed.epoch == 1 and all(torch.isfinite(p).all() for p in resumed.model.parameters())


def test_weights_from_another_vocabulary_or_size_are_refused(ptb_corpus, tmp_path):
    from awd_edu.data import Vocab
    cfg = small()
    trainer = Trainer(cfg, tmp_path / "r", corpus=ptb_corpus, progress=False)
    trainer.fit()
    best = trainer.run_dir / "best.safetensors"
    other_vocab = Vocab(list(reversed(ptb_corpus.vocab.itos)))
    with pytest.raises(CheckpointError, match="vocabulary"):
        load_weights(T.build_model(cfg, trainer.vocab_size), best, expect=T.weights_metadata(cfg, other_vocab))
    bigger = cfg.replace(emb_size=cfg.emb_size * 2)
    with pytest.raises(CheckpointError, match="model sizes"):
        load_weights(T.build_model(bigger, trainer.vocab_size), best, expect=T.weights_metadata(bigger, ptb_corpus.vocab))
    with pytest.raises(CheckpointError, match="does not fit"):   # no metadata check: the shapes still catch it
        load_weights(T.build_model(bigger, trainer.vocab_size), best)
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_weights(T.build_model(cfg, trainer.vocab_size), tmp_path / "junk.safetensors")


def test_evaluate_is_deterministic_and_leaves_the_mode(ptb_corpus):
    torch.manual_seed(0)
    model = T.build_model(small(), len(ptb_corpus.vocab)).train()
    source = T.batchify(ptb_corpus.valid[:500], 5)
    a = evaluate(model, source, 20)
    assert model.training and a == evaluate(model, source, 20)
    assert a == pytest.approx(evaluate(model, source, 33), abs=1e-5)   # state carried: windows do not matter


# ---------------------------------------------------------------- the dashboard callbacks

def test_dashboard_live_and_html_report(ptb_corpus, tmp_path):
    live = LiveDashboard(refresh_every=1)
    run_dir = tmp_path / "r"
    trainer = Trainer(small(epochs=3, nonmono=1), run_dir, corpus=ptb_corpus, callbacks=[live, HTMLReport(run_dir)],
                      progress=False)
    feed(trainer, [5.0, 4.0, 5.5])                  # nonmono 1: the switch fires at epoch 3
    trainer.fit()
    assert list(live.figure.data[1].y) == [m["valid_ppl"] for m in trainer.history]
    assert len(live.figure.data[2].x) == trainer.global_step
    assert any("NT-ASGD" in a.text for a in live.figure.layout.annotations)
    html = (run_dir / "report.html").read_text()
    assert "<html>" in html[:100] and "NT-ASGD switch" in html and len(html) > 1_000_000
    fig = dashboard_figure(read_metrics(run_dir))
    assert list(fig.data[0].y) == [m["train_ppl"] for m in trainer.history]


def test_step_trace_thins_itself():
    trace = StepTrace(max_points=100)
    for i in range(1, 1001):
        trace.add(dict(step=i, seq_len=70, lr=30.0))
    d = trace.as_dict()
    assert len(d["step"]) <= 100 and d["step"] == sorted(d["step"]) and d["step"][-1] > 900
