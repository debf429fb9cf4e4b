"""Tests of awd_edu.train: the Trainer computes what the short loop computes, NT-ASGD and fine-tuning, checkpoints,
resume (exact, from the previous checkpoint, refused for an edited config), divergence and the ablation switches."""
import json
import math
from pathlib import Path

import pytest
import torch

from awd_edu.checkpoint import CheckpointError, checkpoint_dir, load_weights, read_metadata, read_metrics, read_pointer
from awd_edu.config import TrainConfig
from awd_edu.loop import TrainingDiverged, evaluate, simple_fit, unigram_perplexity
from awd_edu.model import build_model
from awd_edu.rundir import load_best
from awd_edu.train import Trainer
from folder_checks import snapshot


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest: one torch thread for the module


def small(**changes):
    "The tiny preset on a small slice: about a second per epoch."
    return TrainConfig.from_preset("tiny").replace(**{"max_train_tokens": 3_000, "max_eval_tokens": 600,
                                                      "epochs": 1, **changes})


def numbers(metrics):
    "The deterministic part of metrics lines (no timings)."
    keys = ("stage", "epoch", "train_loss", "valid_loss", "lr", "optimizer", "switched", "best", "mean_seq_len",
            "n_batches")
    return [{k: m[k] for k in keys} for m in metrics]


# ---------------------------------------------------------------- the tiny preset, trained once

@pytest.fixture(scope="module")
def tiny_run(ptb_corpus, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    events, inputs, lrs = [], [], []
    trainer = Trainer(TrainConfig.from_preset("tiny"), run_dir, corpus=ptb_corpus, callbacks=[events.append],
                      progress=False)
    trainer.model.register_forward_pre_hook(lambda m, a: inputs.append(a[0].shape[0]) if m.training else None)
    real = trainer.optimizer.step
    def spy(*a, **k):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        return real(*a, **k)
    trainer.optimizer.step = spy
    history = trainer.fit()
    return trainer, history, events, inputs, lrs


@pytest.mark.slow   # the whole tiny preset on PTB (tiny_run: 40,000 tokens, 3 epochs)
def test_the_trainer_computes_exactly_what_the_short_loop_computes(tiny_run, ptb_corpus):
    trainer, history, *_ = tiny_run
    _, short = simple_fit(trainer.config, ptb_corpus)
    assert [m["valid_loss"] for m in history] == short               # bit for bit


@pytest.mark.slow   # the whole tiny preset on PTB (tiny_run: 40,000 tokens, 3 epochs)
def test_tiny_preset_falls_well_below_the_unigram_baseline(tiny_run, ptb_corpus):
    trainer, history, *_ = tiny_run
    cfg = trainer.config
    baseline = unigram_perplexity(ptb_corpus.train[:cfg.max_train_tokens], ptb_corpus.valid[:cfg.max_eval_tokens],
                                  len(ptb_corpus.vocab))
    assert history[-1]["valid_ppl"] < 0.75 * baseline < history[0]["train_ppl"]


@pytest.mark.slow   # the whole tiny preset on PTB (tiny_run: 40,000 tokens, 3 epochs)
def test_run_directory_metrics_and_events(tiny_run):
    trainer, history, events, *_ = tiny_run
    run = trainer.run_dir
    assert TrainConfig.load(run / "config.json") == trainer.config
    assert read_metrics(run) == history and [m["epoch"] for m in history] == [1, 2, 3]
    for m in history:
        assert m["valid_ppl"] == pytest.approx(math.exp(m["valid_loss"]))
        assert m["seconds"] > 0 and m["tokens_per_s"] > 0 and m["optimizer"] == "sgd"
    pointer = read_pointer(run, "train")
    assert (pointer["epoch"], pointer["finished"], pointer["previous"]) == (3, True, "train-e0002")
    assert sorted(p.name for p in checkpoint_dir(run).iterdir()) == [
        "train-e0002.safetensors", "train-e0002.state.pt", "train-e0003.safetensors", "train-e0003.state.pt",
        "train-latest.json"]
    kinds = [e["event"] for e in events if e["event"] != "batch"]
    assert kinds == ["start"] + ["epoch_start", "checkpoint", "epoch"] * 3 + ["end"]
    assert all(e["stage"] == "train" for e in events)


@pytest.mark.slow   # the whole tiny preset on PTB (tiny_run: 40,000 tokens, 3 epochs)
def test_every_step_runs_at_lr_times_seq_len_over_bptt(tiny_run):
    trainer, _, events, inputs, lrs = tiny_run
    cfg = trainer.config
    assert len(inputs) == len(lrs) > 100
    # what the optimizer really saw, against the window length the model really got (not the logged values)
    assert lrs == pytest.approx([cfg.lr * n / cfg.bptt for n in inputs])
    assert len(set(inputs)) > 5                                    # variable-length BPTT really varies
    assert trainer.optimizer.param_groups[0]["lr"] == cfg.lr == 30.0
    assert [e["seq_len"] for e in events if e["event"] == "batch"] == inputs


@pytest.mark.slow   # the whole tiny preset on PTB (tiny_run: 40,000 tokens, 3 epochs)
def test_best_weights_give_the_best_valid_loss_and_test_runs_at_batch_1(tiny_run, ptb_corpus):
    trainer, history, *_ = tiny_run
    result = trainer.test()
    assert result["valid_loss"] == pytest.approx(min(m["valid_loss"] for m in history), abs=1e-6)
    assert trainer.data["test"].shape[1] == 1 and trainer.data["valid"].shape[1] == 10
    assert json.loads((trainer.run_dir / "results.json").read_text())["train"]["test_ppl"] == result["test_ppl"]
    config, corpus, model = load_best(trainer.run_dir, "cpu", ptb_corpus)
    assert config == trainer.config
    assert evaluate(model, trainer.data["valid"], config.bptt) == result["valid_loss"]


# ---------------------------------------------------------------- the pieces of a step, inside the trainer

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


# ---------------------------------------------------------------- NT-ASGD, the ablation switches, fine-tuning

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


# The rule, by hand: at epoch t, switch when more than n earlier epochs exist and the loss is above the minimum of
# the epochs before the last n.
#   [5.0, 4.0, 3.9, 4.1, 4.2, 3.7, 3.6], n=2: t=4: 4.1 > min(5.0)? no; t=5: 4.2 > min(5.0, 4.0)=4.0? yes -> 5
#   [5.0, 4.0, 4.5, 4.6, 3.0, 2.9], n=1: t=3: 4.5 > min(5.0)? no; t=4: 4.6 > min(5.0, 4.0)=4.0? yes -> 4
@pytest.mark.parametrize("losses, n, k", [([5.0, 4.0, 3.9, 4.1, 4.2, 3.7, 3.6], 2, 5),
                                          ([5.0, 4.0, 4.5, 4.6, 3.0, 2.9], 1, 4)])
def test_switch_to_asgd_on_the_trigger_epoch_and_average_from_then_on(ptb_corpus, tmp_path, losses, n, k):
    trainer = Trainer(small(nonmono=n, epochs=len(losses), max_train_tokens=1_000), tmp_path / "r",
                      corpus=ptb_corpus, progress=False)
    averaged = []
    feed(trainer, losses, averaged)
    metrics = trainer.fit()
    assert trainer.switched_at == k
    assert [m["switched"] for m in metrics] == [e == k for e in range(1, len(losses) + 1)]
    assert [m["optimizer"] for m in metrics] == ["sgd"] * k + ["asgd"] * (len(losses) - k)
    assert isinstance(trainer.optimizer, torch.optim.ASGD)
    assert averaged == [False] * k + [True] * (len(losses) - k)   # from the first epoch trained with ASGD
    # the last epoch was the best: best.safetensors holds the averages, not the live weights
    best = build_model(trainer.config, trainer.vocab_size)
    load_weights(best, trainer.run_dir / "best.safetensors")
    for p, q in zip(trainer.model.parameters(), best.parameters()):
        assert torch.equal(q, trainer.optimizer.state[p]["ax"])
    assert any(not torch.equal(p, trainer.optimizer.state[p]["ax"]) for p in trainer.model.parameters())


def test_the_sgd_ablation_never_switches(ptb_corpus, tmp_path):
    losses = [5.0, 4.0, 4.5, 4.6, 3.0, 2.9]                       # the rule fires at epoch 4 (by hand, above)
    trainer = Trainer(small(nonmono=1, epochs=len(losses), optimizer="sgd", max_train_tokens=1_000),
                      tmp_path / "r", corpus=ptb_corpus, progress=False)
    feed(trainer, losses)
    metrics = trainer.fit()
    assert trainer.switched_at is None and not any(m["switched"] for m in metrics)
    assert {m["optimizer"] for m in metrics} == {"sgd"} and isinstance(trainer.optimizer, torch.optim.SGD)


def test_lr_drop_lowers_sgd_on_each_firing_and_watches_afresh(ptb_corpus, tmp_path):
    # the rule on a hand-made history (nonmono 2): it fires at epochs 5 and 9 (the fresh trigger needs 3 epochs)
    cfg = TrainConfig.from_preset("tiny", optimizer="sgd", lr_drop=3.0, nonmono=2, device="cpu")
    t = Trainer(cfg, tmp_path / "r", corpus=ptb_corpus, progress=False)
    rates = []
    for e, loss in enumerate([1.0, 0.8, 0.85, 0.9, 0.95, 0.7, 0.75, 0.8, 0.78], start=1):
        fired, switched = t._apply_trigger(e, loss)
        assert not switched and fired == (e in (5, 9))
        rates.append(t.optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([cfg.lr] * 4 + [cfg.lr / 3] * 4 + [cfg.lr / 9])
    assert type(t.optimizer) is torch.optim.SGD and t.switched_at is None
    with pytest.raises(ValueError, match="optimizer='sgd'"):
        TrainConfig(lr_drop=2.0)                    # ntasgd with a drop: refused


def test_lr_drop_acts_in_training_only_and_one_means_never(ptb_corpus, tmp_path):
    losses = [1.0, 0.8, 0.85, 0.9, 0.95]            # nonmono 2: fires at epoch 5
    constant = Trainer(small(optimizer="sgd", nonmono=2), tmp_path / "c", corpus=ptb_corpus, progress=False)
    tuned = Trainer(small(optimizer="sgd", lr_drop=2.0, nonmono=2), tmp_path / "t", corpus=ptb_corpus, progress=False)
    tuned.stage = "finetune"                        # fine-tuning's trigger only stops the stage
    for e, loss in enumerate(losses, start=1):
        assert constant._apply_trigger(e, loss)[0] == tuned._apply_trigger(e, loss)[0] == (e == 5)
    assert constant.optimizer.param_groups[0]["lr"] == tuned.optimizer.param_groups[0]["lr"] == constant.config.lr


def test_the_fixed_bptt_ablation_uses_windows_of_exactly_bptt(ptb_corpus, tmp_path):
    cfg = small(variable_bptt=False, max_train_tokens=2_010, batch_size=10)   # 201 rows: 200 with a target
    trainer = Trainer(cfg, tmp_path / "r", corpus=ptb_corpus, progress=False)
    lengths = []
    trainer.model.register_forward_pre_hook(lambda m, a: lengths.append(a[0].shape[0]) if m.training else None)
    trainer.fit()
    assert lengths == [20] * 10


def test_finetune_starts_from_best_with_fresh_asgd_caps_windows_and_stops_on_the_rule(ptb_corpus, tmp_path):
    trainer = Trainer(small(epochs=2, finetune_epochs=10, nonmono=1, bptt=12, finetune_len_delta=2),
                      tmp_path / "r", corpus=ptb_corpus, progress=False)
    trainer.fit()
    best_before = (trainer.run_dir / "best.safetensors").read_bytes()
    start = trainer.evaluate_split("valid")
    lengths, calls = [], []
    trainer.model.register_forward_pre_hook(lambda m, a: lengths.append(a[0].shape[0]) if m.training else None)
    real = trainer.evaluate_split
    losses = iter([start + 1.0, start + 0.5, start + 2.0, start + 3.0])  # never better than the start
    def fake(split="valid"):
        calls.append(split)
        return real(split) if len(calls) == 1 else next(losses)       # first call: the loss to beat, for real
    trainer.evaluate_split = fake
    ft = trainer.finetune()
    assert trainer.best_val_loss == pytest.approx(start)
    assert isinstance(trainer.optimizer, torch.optim.ASGD) and all(m["optimizer"] == "asgd" for m in ft)
    assert max(lengths) <= 12 + 2
    # n=1, by hand: epoch 3's start+2.0 is above min(epoch 1) = start+1.0, with 2 > 1 earlier epochs -> stop at 3
    assert [m["epoch"] for m in ft] == [1, 2, 3] and ft[-1]["stop"] and trainer.finished
    assert (trainer.run_dir / "best.safetensors").read_bytes() == best_before   # never improved: kept
    assert read_pointer(trainer.run_dir, "finetune")["finished"]


def test_finetune_refuses_unfinished_training_unless_told(ptb_corpus, tmp_path):
    trainer = Trainer(small(epochs=3, finetune_epochs=1), tmp_path / "r", corpus=ptb_corpus, progress=False)
    trainer.run_epoch()
    before = snapshot(trainer.run_dir)
    with pytest.raises(ValueError, match="training stopped after epoch 1 of 3.*allow-unfinished"):
        trainer.finetune()
    assert snapshot(trainer.run_dir) == before and trainer.stage == "train"
    trainer.finetune(allow_unfinished=True)
    assert trainer.stage == "finetune" and trainer.finished


def test_finetune_can_be_switched_off(ptb_corpus, tmp_path):
    trainer = Trainer(small(finetune_epochs=0), tmp_path / "r", corpus=ptb_corpus, progress=False)
    trainer.fit()
    with pytest.raises(ValueError, match="finetune_epochs is 0"):
        trainer.finetune()


# ---------------------------------------------------------------- files, crashes, resume, divergence

def test_an_existing_run_is_never_overwritten(ptb_corpus, tmp_path):
    Trainer(small(), tmp_path / "r", corpus=ptb_corpus, progress=False).fit()
    before = snapshot(tmp_path / "r")
    with pytest.raises(FileExistsError, match="resume"):
        Trainer(small(), tmp_path / "r", corpus=ptb_corpus, progress=False)
    assert snapshot(tmp_path / "r") == before


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
    assert Trainer.resume(trainer.run_dir, corpus=ptb_corpus, progress=False).epoch == 1


def test_resume_from_the_previous_checkpoint_when_the_latest_is_damaged(ptb_corpus, tmp_path):
    whole = Trainer(small(epochs=3), tmp_path / "whole", corpus=ptb_corpus, progress=False).fit()
    run = tmp_path / "r"
    trainer = Trainer(small(epochs=3), run, corpus=ptb_corpus, progress=False)
    trainer.run_epoch(); trainer.run_epoch()
    state = checkpoint_dir(run) / "train-e0002.state.pt"
    state.write_bytes(state.read_bytes()[:100])                       # the latest, cut short
    before = snapshot(run)
    with pytest.raises(CheckpointError, match="train-e0002.state.pt.*--from-previous"):
        Trainer.resume(run, corpus=ptb_corpus, progress=False)
    assert snapshot(run) == before                                   # the refused resume changed nothing
    resumed = Trainer.resume(run, corpus=ptb_corpus, progress=False, from_previous=True)
    assert resumed.epoch == 1 and [m["epoch"] for m in read_metrics(run)] == [1]
    assert numbers(resumed.fit()) == numbers(whole)                   # epochs 2 and 3 again: the same numbers


def test_resume_refuses_a_hand_edited_config_and_changes_nothing(ptb_corpus, tmp_path):
    run = tmp_path / "r"
    Trainer(small(epochs=2), run, corpus=ptb_corpus, progress=False).run_epoch()
    small(epochs=2, dropouti=0.3, lr=10.0).save(run / "config.json")
    before = snapshot(run)
    with pytest.raises(ValueError) as e:
        Trainer.resume(run, corpus=ptb_corpus, progress=False)
    assert "dropouti" in str(e.value) and "lr" in str(e.value) and "config.json" in str(e.value)
    assert snapshot(run) == before
    with pytest.raises(ValueError, match="can change only"):
        Trainer.resume(run, corpus=ptb_corpus, progress=False, lr=1.0)
    assert snapshot(run) == before


def test_resume_may_extend_epochs_and_writes_the_config_only_when_a_stage_runs(ptb_corpus, tmp_path):
    run = tmp_path / "r"
    Trainer(small(epochs=1), run, corpus=ptb_corpus, progress=False).fit()
    state = checkpoint_dir(run) / "train-e0001.state.pt"
    good = state.read_bytes()
    state.write_bytes(b"")
    before = snapshot(run)
    with pytest.raises(CheckpointError):
        Trainer.resume(run, corpus=ptb_corpus, progress=False, epochs=3)
    assert snapshot(run) == before                                   # config.json not rewritten
    state.write_bytes(good)
    resumed = Trainer.resume(run, corpus=ptb_corpus, progress=False, epochs=3)
    assert not resumed.finished and TrainConfig.load(run / "config.json").epochs == 1   # not yet: nothing ran
    assert [m["epoch"] for m in resumed.fit()] == [1, 2, 3]
    assert TrainConfig.load(run / "config.json").epochs == 3         # written when the stage ran
    with pytest.raises(ValueError, match="epochs=2 is below the 3 epochs"):
        Trainer.resume(run, corpus=ptb_corpus, progress=False, epochs=2)


def test_a_finetune_refused_after_a_resume_leaves_the_config_as_it_was(ptb_corpus, tmp_path):
    run = tmp_path / "r"
    Trainer(small(epochs=2), run, corpus=ptb_corpus, progress=False).run_epoch()
    before = snapshot(run)
    trainer = Trainer.resume(run, corpus=ptb_corpus, progress=False, finetune_epochs=5)
    with pytest.raises(ValueError, match="training stopped after epoch 1 of 2"):
        trainer.finetune()
    assert snapshot(run) == before


def test_an_old_run_directory_still_resumes(ptb_corpus, tmp_path):
    "Checkpoints written before the config was stored in the state and the pointer named the previous epoch."
    run = tmp_path / "r"
    Trainer(small(epochs=2), run, corpus=ptb_corpus, progress=False).run_epoch()
    state_file = checkpoint_dir(run) / "train-e0001.state.pt"
    state = torch.load(state_file, weights_only=True)
    del state["config"]
    state["format"] = 1
    torch.save(state, state_file)
    pointer = checkpoint_dir(run) / "train-latest.json"
    p = json.loads(pointer.read_text()); del p["previous"]; pointer.write_text(json.dumps(p))
    resumed = Trainer.resume(run, corpus=ptb_corpus, progress=False)
    assert resumed.epoch == 1 and [m["epoch"] for m in resumed.fit()] == [1, 2]


@pytest.mark.parametrize("lr, what", [(float("inf"), "nan"), (1e6, "cross-entropy")])
def test_a_diverging_run_stops_keeps_its_good_files_and_resumes(ptb_corpus, tmp_path, lr, what):
    holder = {}
    def sabotage(event):
        if event["event"] == "epoch" and event["epoch"] == 1:
            holder["t"].optimizer.param_groups[0]["lr"] = lr
    trainer = holder["t"] = Trainer(small(epochs=3), tmp_path / "r", corpus=ptb_corpus, callbacks=[sabotage],
                                    progress=False)
    with pytest.raises(TrainingDiverged) as e:
        trainer.fit()
    msg = str(e.value)
    assert what in msg.lower() and "epoch 2" in msg and "epoch 1" in msg and "lower learning rate" in msg, msg
    assert read_pointer(trainer.run_dir, "train")["epoch"] == 1
    assert read_metadata(trainer.run_dir / "best.safetensors")["epoch"] == "1"   # a diverged epoch is never best
    assert [m["epoch"] for m in read_metrics(trainer.run_dir)] == [1]
    resumed = Trainer.resume(trainer.run_dir, corpus=ptb_corpus, progress=False)
    assert resumed.epoch == 1 and all(torch.isfinite(p).all() for p in resumed.model.parameters())


def test_a_diverged_validation_loss_is_never_saved_as_best(ptb_corpus, tmp_path):
    trainer = Trainer(small(epochs=2), tmp_path / "r", corpus=ptb_corpus, progress=False)
    feed(trainer, [5.0, 100.0])                                      # 100 nats: far above 3 log V (27.6)
    with pytest.raises(TrainingDiverged, match="validation loss is 100"):
        trainer.fit()
    assert read_metadata(trainer.run_dir / "best.safetensors")["epoch"] == "1"


def test_an_unreadable_run_folder_fails_before_training(ptb_corpus, tmp_path, monkeypatch):
    import errno
    import awd_edu.files as F
    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "r"))
    monkeypatch.setattr(F.tempfile, "mkstemp", read_only)
    with pytest.raises(OSError) as e:
        Trainer(small(), tmp_path / "r", corpus=ptb_corpus, progress=False)
    assert e.value.errno == errno.EROFS


# patience=2 by hand: best at epochs 1 and 2; epoch 3 is one epoch past the best, epoch 4 two -> training stops after 4
def test_patience_stops_training_that_many_epochs_after_the_best_and_a_resume_keeps_it_stopped(ptb_corpus, tmp_path):
    losses = [5.0, 4.0, 4.2, 4.1, 3.0]
    trainer = Trainer(small(optimizer="sgd", patience=2, epochs=len(losses), max_train_tokens=1_000), tmp_path / "r",
                      corpus=ptb_corpus, progress=False)
    feed(trainer, losses)
    metrics = trainer.fit()
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4] and trainer.finished
    assert [m["stop"] for m in metrics] == [False, False, False, True]
    assert Trainer.resume(trainer.run_dir, corpus=ptb_corpus, progress=False).finished   # stays stopped
    longer = Trainer.resume(trainer.run_dir, corpus=ptb_corpus, progress=False, patience=3)   # a longer look: epoch 5
    assert not longer.finished
    feed(longer, losses[4:])
    assert [m["epoch"] for m in longer.fit()] == [1, 2, 3, 4, 5] and longer.history[-1]["best"] and longer.finished
    assert TrainConfig.load(trainer.run_dir / "config.json").patience == 3


def test_without_patience_training_runs_every_epoch(ptb_corpus, tmp_path):
    losses = [5.0, 4.0, 4.2, 4.1, 3.0]
    trainer = Trainer(small(optimizer="sgd", epochs=len(losses), max_train_tokens=1_000), tmp_path / "r",
                      corpus=ptb_corpus, progress=False)
    feed(trainer, losses)
    assert [m["epoch"] for m in trainer.fit()] == [1, 2, 3, 4, 5] and not any(m["stop"] for m in trainer.history)
