"""Tests of awd_edu.config: the paper's defaults, presets, typed overrides, and every bad value refused by name."""
import json

import pytest

from awd_edu.config import CONFIG_FIELDS, PRESETS, TrainConfig, parse_override, preset_changes, resolve_preset


def test_defaults_are_the_papers_ptb_command():
    # written out by hand from the PTB command of the paper code's README and its training script's defaults
    c = TrainConfig.from_preset("ptb")
    assert (c.batch_size, c.bptt, c.lr, c.clip, c.alpha, c.beta, c.wdecay, c.nonmono, c.epochs, c.seed) == \
           (20, 70, 30.0, 0.25, 2.0, 1.0, 1.2e-6, 5, 500, 141)
    assert (c.dropout, c.dropouth, c.dropouti, c.dropoute, c.wdrop) == (0.4, 0.25, 0.4, 0.1, 0.5)
    assert (c.emb_size, c.hidden_size, c.n_layers, c.eval_batch_size, c.test_batch_size) == (400, 1150, 3, 10, 1)
    assert (c.optimizer, c.variable_bptt, c.tie_weights, c.lr_drop) == ("ntasgd", True, True, 1.0)
    assert c.max_train_tokens is None and c.max_eval_tokens is None


def test_presets_change_only_what_they_name():
    base = TrainConfig()
    for name, changes in PRESETS.items():
        c = TrainConfig.from_preset(name)
        assert c.preset == name
        for field in CONFIG_FIELDS:
            if field not in changes and field != "preset":
                assert getattr(c, field) == getattr(base, field), (name, field)
        assert set(preset_changes(name)) <= set(changes)
    assert preset_changes("ptb") == {}
    assert preset_changes("ptb-small")["finetune_epochs"] == 2            # fits a CPU
    assert TrainConfig.from_preset("ptb-small").max_train_tokens is None   # the whole corpus


@pytest.mark.parametrize("changes, words", [
    (dict(dropout=-0.1), ["dropout", "[0, 1)", "-0.1"]),
    (dict(wdrop=1.0), ["wdrop", "[0, 1)"]),
    (dict(bptt=0), ["bptt", ">= 1"]),
    (dict(lr=0.0), ["lr", "> 0"]),
    (dict(lr=1e308), ["lr", "at most"]),
    (dict(lr=float("nan")), ["lr", "finite"]),
    (dict(clip=-1.0), ["clip", ">= 0"]),
    (dict(finetune_epochs=-1), ["finetune_epochs", ">= 0"]),
    (dict(batch_size=2.5), ["batch_size", "int"]),
    (dict(tie_weights=1), ["tie_weights", "bool"]),
    (dict(variable_bptt="no"), ["variable_bptt", "bool"]),
    (dict(optimizer="adam"), ["optimizer", "'ntasgd'", "'sgd'"]),
    (dict(device="gpu"), ["device", "cuda"]),
    (dict(max_train_tokens=1), ["max_train_tokens", ">= 2"]),
    (dict(dropot=0.1), ["unknown", "dropot", "dropout"]),
    (dict(optimizer="sgd", lr_drop=0.5), ["lr_drop", ">= 1", "0.5"]),
    (dict(optimizer="sgd", lr_drop="2"), ["lr_drop", "float", "'2'"]),
    (dict(optimizer="sgd", lr_drop=True), ["lr_drop", "float"]),
    (dict(lr_drop=2.0), ["lr_drop", "plain SGD", "optimizer='sgd'", "lr_drop=1"]),
])
def test_bad_values_are_refused_naming_the_field(changes, words):
    with pytest.raises((ValueError, TypeError)) as e:
        TrainConfig().replace(**changes)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_a_setting_the_model_would_ignore_is_refused():
    # one layer, tied: the only LSTM maps emb_size to emb_size, so hidden_size cannot matter
    with pytest.raises(ValueError, match="hidden_size=1000000 would be ignored"):
        TrainConfig.from_preset("tiny", hidden_size=1_000_000)
    assert TrainConfig.from_preset("tiny", hidden_size=100, tie_weights=False).hidden_size == 100
    assert TrainConfig.from_preset("tiny", hidden_size=100, n_layers=2).hidden_size == 100


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError) as e:
        TrainConfig.from_preset("ptb-large")
    assert all(name in str(e.value) for name in PRESETS)
    with pytest.raises(ValueError):
        resolve_preset("ptb-large")


def test_auto_preset_depends_on_cuda():
    assert resolve_preset("auto", cuda=True)[0] == "ptb"
    name, reason = resolve_preset("auto", cuda=False)
    assert name == "ptb-small" and "CUDA" in reason
    assert resolve_preset("tiny") == ("tiny", "asked for by name")


def test_overrides_are_typed_by_the_field_and_survive_json(tmp_path):
    c = TrainConfig().with_overrides(["lr=20", "epochs=3", "max_eval_tokens=None", "tie_weights=false",
                                      "data_dir=/x", "dropouti=0.5", "optimizer=sgd", "variable-bptt=no"])
    assert (c.lr, c.epochs, c.max_eval_tokens, c.tie_weights, c.data_dir, c.dropouti, c.optimizer, c.variable_bptt) \
        == (20.0, 3, None, False, "/x", 0.5, "sgd", False)
    assert isinstance(c.lr, float) and isinstance(c.epochs, int)
    assert TrainConfig.load(c.save(tmp_path / "config.json")) == c
    assert parse_override("lr=1e-3") == ("lr", 0.001)
    for bad in (["epochs=three"], ["lr"], ["nope=1"], ["tie_weights=maybe"], ["lr=1e999"]):
        with pytest.raises(ValueError):
            TrainConfig().with_overrides(bad)


@pytest.mark.parametrize("text, words", [
    (json.dumps({"lr": 1.0, "speed": 3}), ["config.json", "speed"]),
    (json.dumps({"lr": "30"}), ["config.json", "lr", "float", "str"]),
    (json.dumps({"epochs": 1.5}), ["config.json", "epochs", "int"]),
    (json.dumps([1, 2]), ["config.json", "JSON object"]),
    ("{lr: 30", ["config.json", "not valid JSON"]),
    ("", ["config.json", "not valid JSON"]),
])
def test_a_bad_config_file_is_refused_naming_the_file_and_setting(tmp_path, text, words):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ValueError) as e:   # a TypeError inside is turned into a ValueError naming the file
        TrainConfig.load(path)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_an_old_config_file_without_the_new_settings_still_loads(tmp_path):
    values = TrainConfig.from_preset("tiny").to_dict()
    for newer in ("optimizer", "variable_bptt", "lr_drop"):
        del values[newer]
    (tmp_path / "config.json").write_text(json.dumps(values))
    c = TrainConfig.load(tmp_path / "config.json")
    assert c == TrainConfig.from_preset("tiny")
