"""The committed record of chapter 10's converged CPU run and its weights: every field the chapter replays, the claims
it makes (the trigger fired by chapter 07's rule, averaging and fine-tuning ran, the baseline overfits, the model
beats Zaremba et al.'s small LSTM with fewer parameters, the cache helps), the weights file's hash, and (slow) the
committed half-precision weights reproducing the recorded test perplexity."""
import hashlib
import json
import math
from pathlib import Path

import pytest

from awd_edu.ntasgd import NonMonotonicTrigger

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "benchmarks" / "results" / "ptb-cpu-run.json"
FIELDS = ("device", "torch_version", "git_commit", "run_git_commit", "run_command", "rebuild_command", "config",
          "n_params", "wall_hours", "epochs", "switched_at", "valid_ppl", "test_ppl", "test_ppl_cache",
          "cache_settings", "samples", "weights", "baseline")


@pytest.fixture(scope="module")
def record():
    return json.loads(RECORD.read_text())


def test_the_record_has_every_field(record):
    assert not [k for k in FIELDS if k not in record]
    for m in record["epochs"]:
        assert {"stage", "epoch", "optimizer", "train_ppl", "valid_ppl", "seconds"} <= set(m)
    assert set(record["cache_settings"]) == {"window", "theta", "lambdasm"} and len(record["samples"]) == 3
    assert record["wall_hours"] == pytest.approx(sum(m["seconds"] for m in record["epochs"]) / 3600, abs=1e-3)


def test_the_trigger_fired_by_the_rule_then_averaging_and_fine_tuning_ran(record):
    train = [m for m in record["epochs"] if m["stage"] == "train"]
    rule = NonMonotonicTrigger(record["config"]["nonmono"])
    fired = next(m["epoch"] for m in train if rule.step(math.log(m["valid_ppl"])))    # chapter 07's rule, replayed
    assert fired == record["switched_at"]
    assert all(m["optimizer"] == ("sgd" if m["epoch"] <= fired else "asgd") for m in train)
    assert sum(m["optimizer"] == "asgd" for m in train) >= 3
    assert sum(m["stage"] == "finetune" for m in record["epochs"]) >= 1


def test_one_sitting_within_three_hours_with_the_preset_as_committed(record):
    "The record is a run of the `ptb-cpu` preset as it stands (only the device and where the data lies differ), in at most 3 hours of epochs."
    from awd_edu.config import TrainConfig
    assert record["wall_hours"] <= 3
    preset = TrainConfig.from_preset("ptb-cpu").to_dict()
    assert {k for k, v in record["config"].items() if preset[k] != v} <= {"device", "data_dir"}


def test_the_earlier_run_differs_only_in_its_window_and_agrees_until_the_first_trigger(record):
    "The preset's first run (window 3, kept in short): same settings but the window and the limit, same curve until the new run's trigger fired."
    earlier = record["earlier"]
    changed = {k for k, v in earlier["config"].items() if record["config"][k] != v}
    assert changed <= {"nonmono", "epochs"} and earlier["config"]["nonmono"] != record["config"]["nonmono"]
    s = record["switched_at"]
    assert earlier["switched_at"] > s
    same = [(a["valid_ppl"], b["valid_ppl"]) for a, b in zip(record["epochs"][:s], earlier["epochs"][:s])]
    assert all(abs(a - b) <= 1e-3 * b for a, b in same)      # same seed, same code: the same epochs until the switch
    assert earlier["wall_hours"] > record["wall_hours"]


def test_the_model_is_good_for_its_size_and_the_baseline_overfits(record):
    assert record["n_params"] <= 4.6e6 and record["test_ppl"] < 114.5            # Zaremba et al.'s small LSTM
    assert record["test_ppl_cache"] < record["test_ppl"]
    base = [m["valid_ppl"] for m in record["baseline"]["epochs"]]
    assert base[-1] >= 1.05 * min(base)                                           # it turned up by 5% or more
    assert min(base) > min(m["valid_ppl"] for m in record["epochs"])


def test_the_committed_weights_are_the_recorded_file(record):
    weights = RECORD.with_name(record["weights"]["file"])
    assert weights.stat().st_size == record["weights"]["bytes"] <= 12_500_000
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == record["weights"]["sha256"]


@pytest.mark.slow   # the whole test split at batch 1 through the 3.45M-parameter model: a minute or two
def test_pretrained_reproduces_the_recorded_test_perplexity(record, ptb_corpus):
    from awd_edu.data import batchify
    from awd_edu.hub import pretrained
    from awd_edu.loop import evaluate, perplexity
    model, corpus = pretrained("ptb-cpu")        # the file's SHA-256 and the vocabulary checked on the way in
    assert not model.training
    ppl = perplexity(evaluate(model, batchify(corpus.test, 1), bptt=record["config"]["bptt"]))
    assert abs(ppl / record["test_ppl"] - 1) < 5e-3


def test_awd_edu_presets_states_the_recorded_cost(record, capsys):
    "`awd-edu presets` gives every preset its measured cost, and ptb-cpu's is the record's."
    from awd_edu.cli import PRESET_COSTS, main
    from awd_edu.config import PRESETS
    assert set(PRESET_COSTS) == set(PRESETS)
    assert f"{record['wall_hours']:.1f} h" in PRESET_COSTS["ptb-cpu"] and f"{record['test_ppl']:.1f}" in PRESET_COSTS["ptb-cpu"]
    assert main(["presets"]) == 0
    assert PRESET_COSTS["ptb-cpu"] in capsys.readouterr().out
