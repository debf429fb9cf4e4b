"""The `awd-edu` training commands: train, resume, finetune, evaluate, generate; their help, outputs and errors."""
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from awd_edu.checkpoint import read_metrics
from awd_edu.cli import main
from awd_edu.config import TrainConfig
from folder_checks import snapshot

QUICK = ["--set", "max_train_tokens=4000", "--set", "max_eval_tokens=800", "--quiet"]


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest: one torch thread for the module


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ptb_folder):
    "A tiny run trained for 2 epochs through the command line (shared; tests that change it work on a copy)."
    run = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--preset", "tiny", "--run-dir", str(run), "--epochs", "2"] + QUICK) == 0
    return run


@pytest.fixture
def copy_of(trained, tmp_path):
    dest = tmp_path / "run"
    shutil.copytree(trained, dest)
    return dest


@pytest.mark.parametrize("command, words", [
    ("train", ["--preset", "tiny", "ptb-small", "auto", "--run-dir", "--set", "KEY=VALUE", "--resume-existing"]),
    ("resume", ["RUN_DIR", "last checkpoint"]),
    ("resume", ["--from-previous", "--epochs"]),
    ("finetune", ["RUN_DIR", "bptt+10", "--epochs", "--allow-unfinished"]),
    ("evaluate", ["--split", "--cache", "--window", "--theta", "--lambdasm", "--quiet"]),
    ("evaluate", ["--dynamic", "--eta", "--lambda", "--eps", "--bptt", "--grad-batches", "--search"]),
    ("presets", ["--json"]),
    ("generate", ["--words", "--temperature", "--seed", "--prompt"]),
])
def test_every_command_has_a_clear_help(command, words):
    exe = shutil.which("awd-edu") or str(Path(sys.executable).parent / "awd-edu")
    out = subprocess.run([exe, command, "--help"], capture_output=True, text=True, check=True).stdout
    assert all(w in out for w in words), out


def test_train_writes_a_complete_run_directory(trained):
    names = {str(p.relative_to(trained)) for p in trained.rglob("*")}
    assert {"config.json", "metrics.jsonl", "best.safetensors", "results.json", "report.html",
            "checkpoints/train-latest.json"} <= names
    assert [m["epoch"] for m in read_metrics(trained)] == [1, 2]
    cfg = TrainConfig.load(trained / "config.json")
    assert (cfg.preset, cfg.epochs, cfg.max_train_tokens, cfg.max_eval_tokens) == ("tiny", 2, 4000, 800)
    assert "plotly" in (trained / "report.html").read_text()[:100_000]


def test_train_prints_epochs_and_results(tmp_path, capsys, ptb_folder):
    assert main(["train", "--preset", "tiny", "--run-dir", str(tmp_path / "r"), "--epochs", "1", "--no-report"]
                + QUICK) == 0
    out = capsys.readouterr().out
    assert "train epoch   1" in out and "valid ppl" in out and "test ppl" in out and "awd-edu finetune" in out
    assert not (tmp_path / "r" / "report.html").exists()


def test_train_refuses_an_existing_run_and_changes_nothing(trained, capsys):
    before = snapshot(trained)
    assert main(["train", "--preset", "tiny", "--run-dir", str(trained), "--epochs", "2"] + QUICK) == 2
    err = capsys.readouterr().err
    assert "awd-edu resume" in err and str(trained) in err
    assert snapshot(trained) == before


def test_resume_existing_resumes_the_same_config_and_refuses_another(copy_of, capsys):
    args = ["train", "--preset", "tiny", "--run-dir", str(copy_of), "--epochs", "2", "--resume-existing"] + QUICK
    assert main(args) == 0
    assert "nothing to resume" in capsys.readouterr().out
    before = snapshot(copy_of)
    assert main(args + ["--set", "lr=20"]) == 2
    assert "another config" in capsys.readouterr().err and snapshot(copy_of) == before


@pytest.mark.parametrize("args, words", [
    (["--preset", "ptb-large"], ["unknown preset", "ptb", "ptb-small", "tiny"]),
    (["--preset", "tiny", "--set", "dropout=-0.1"], ["dropout", "[0, 1)", "-0.1"]),
    (["--preset", "tiny", "--set", "dropouti=1"], ["dropouti", "[0, 1)"]),
    (["--preset", "tiny", "--set", "bptt=0"], ["bptt", ">= 1"]),
    (["--preset", "tiny", "--set", "speed=3"], ["unknown setting", "speed"]),
    (["--preset", "tiny", "--set", "lr"], ["key=value"]),
    (["--preset", "tiny", "--set", "epochs=three"], ["epochs", "int"]),
])
def test_bad_training_input_exits_2_with_a_clear_message(tmp_path, capsys, args, words):
    run = tmp_path / "never"
    assert main(["train", "--run-dir", str(run)] + args) == 2
    err = capsys.readouterr().err
    assert err.startswith("awd-edu train: error:") and all(w in err for w in words), err
    assert not run.exists()


def test_resume_and_finetune_of_missing_or_empty_runs_exit_2(tmp_path, capsys):
    for cmd in ("resume", "finetune", "evaluate", "generate"):
        assert main([cmd, str(tmp_path / "nope")]) == 2
        assert "no run directory" in capsys.readouterr().err
    TrainConfig.from_preset("tiny").save(tmp_path / "empty" / "config.json")
    assert main(["resume", str(tmp_path / "empty")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "empty")]) == 2
    assert "best.safetensors" in capsys.readouterr().err


def test_resume_of_a_finished_run_says_what_is_next(trained, capsys):
    before = snapshot(trained)
    assert main(["resume", str(trained), "--quiet", "--no-report"]) == 0
    assert "awd-edu finetune" in capsys.readouterr().out
    assert {k: v for k, v in snapshot(trained).items()} == before


def test_resume_with_more_epochs_extends_a_finished_run(copy_of, capsys):
    assert main(["resume", str(copy_of), "--epochs", "3", "--quiet", "--no-report"]) == 0
    assert "after epoch 2" in capsys.readouterr().out
    assert [m["epoch"] for m in read_metrics(copy_of)] == [1, 2, 3]
    assert TrainConfig.load(copy_of / "config.json").epochs == 3


def test_finetune_then_refuse_a_second_one(copy_of, capsys):
    assert main(["finetune", str(copy_of), "--epochs", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "finetune epoch   1" in out
    assert "finetune" in json.loads((copy_of / "results.json").read_text())
    before = snapshot(copy_of)
    assert main(["finetune", str(copy_of)]) == 2
    assert "already" in capsys.readouterr().err and snapshot(copy_of) == before
    assert main(["resume", str(copy_of), "--quiet"]) == 0
    assert "fine-tuning finished" in capsys.readouterr().out


def test_evaluate_valid_test_and_cache(trained, capsys, ptb_corpus):
    assert main(["evaluate", str(trained), "--json"]) == 0
    valid = json.loads(capsys.readouterr().out)
    results = json.loads((trained / "results.json").read_text())["train"]
    assert valid["split"] == "valid" and valid["batch_size"] == 10
    assert valid["ppl"] == pytest.approx(results["valid_ppl"], rel=1e-6)
    assert main(["evaluate", str(trained), "--split", "test", "--json"]) == 0
    test = json.loads(capsys.readouterr().out)
    assert test["batch_size"] == 1 and test["ppl"] == pytest.approx(results["test_ppl"], rel=1e-6)
    assert main(["evaluate", str(trained), "--split", "test", "--cache", "--window", "50", "--json"]) == 0
    cached = json.loads(capsys.readouterr().out)
    assert cached["cache"] == dict(window=50, theta=1.0, lambdasm=0.1)
    assert cached["ppl_without_cache"] == pytest.approx(test["ppl"], rel=1e-4)   # the same model at batch 1
    assert cached["ppl"] != cached["ppl_without_cache"]
    assert main(["evaluate", str(trained), "--split", "test", "--cache", "--lambdasm", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ppl"] == pytest.approx(test["ppl"], rel=1e-4)
    assert main(["evaluate", str(trained)]) == 0
    assert "valid perplexity" in capsys.readouterr().out


def test_evaluate_refuses_weights_of_another_vocabulary_or_config(copy_of, capsys):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open
    best = copy_of / "best.safetensors"
    with safe_open(str(best), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(best))
    save_file(tensors, str(best), metadata={**meta, "awd_edu.vocab_sha256": "0123456789abcdef"})
    assert main(["evaluate", str(copy_of)]) == 2
    assert "vocabulary" in capsys.readouterr().err
    save_file(tensors, str(best), metadata=meta)
    cfg = json.loads((copy_of / "config.json").read_text())
    cfg["emb_size"] = cfg["hidden_size"] = 32   # one tied layer: both sizes must agree
    (copy_of / "config.json").write_text(json.dumps(cfg))
    assert main(["generate", str(copy_of)]) == 2
    assert "model sizes" in capsys.readouterr().err
    (copy_of / "best.safetensors").unlink()
    assert main(["evaluate", str(copy_of)]) == 2
    assert "best.safetensors" in capsys.readouterr().err


def test_generate_is_reproducible_and_checks_its_input(trained, capsys):
    args = ["generate", str(trained), "--words", "12", "--seed", "5", "--prompt", "the market"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first and first.startswith("the market")
    assert len(first.split()) >= 12
    for bad, word in ((["--temperature", "0"], "temperature"), (["--words", "0"], "words"),
                      (["--prompt", "The Zebra"], "vocabulary")):
        assert main(["generate", str(trained)] + bad) == 2
        assert word in capsys.readouterr().err


def test_a_diverging_run_exits_1_with_its_message(tmp_path, capsys, monkeypatch, ptb_folder):
    import awd_edu.loop
    nan = torch.tensor(float("nan"), requires_grad=True)
    monkeypatch.setattr(awd_edu.loop, "lm_loss", lambda out, targets, alpha, beta: (nan * 1, nan.detach()))
    assert main(["train", "--preset", "tiny", "--run-dir", str(tmp_path / "r"), "--epochs", "1"] + QUICK) == 1
    err = capsys.readouterr().err
    assert "diverged" in err and "no checkpoint had been written yet" in err


def test_progress_bars_count_batches_with_tokens_per_second(tmp_path, capsys, ptb_folder):
    run = tmp_path / "r"
    assert main(["train", "--preset", "tiny", "--run-dir", str(run), "--epochs", "1", "--no-report",
                 "--set", "max_train_tokens=4000", "--set", "max_eval_tokens=800"]) == 0
    err = capsys.readouterr().err
    n = read_metrics(run)[0]["n_batches"]          # windows of the epoch, about 4000 / 10 / 20
    assert "train epoch 1: 100%" in err and f" {n}/{n} " in err and "batch/s" in err and "tok_s=" in err
    assert main(["evaluate", str(run)]) == 0
    err = capsys.readouterr().err
    batches = math.ceil((800 // 10 - 1) / 20)        # valid: 800 tokens in 10 columns, windows of bptt 20
    assert "evaluate:   0%|" in err and f"0/{batches} " in err
    assert main(["evaluate", str(run), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_train_ablate_no_ntasgd_is_sgd_whose_rate_drops_on_the_trigger(tmp_path, capsys, monkeypatch):
    "The paper's '- NT-ASGD' from the command line is the chapter's variant: SGD, lr_drop > 1, no fine-tuning."
    from awd_edu.ablations import ablation_config
    from awd_edu.cli import _requested_config, build_parser
    from awd_edu.config import TrainConfig
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["train", "--preset", "tiny", "--ablate", "no-ntasgd"])
    config, name, _ = _requested_config(args)
    assert name == "tiny" and config == ablation_config(TrainConfig.from_preset("tiny"), "no-ntasgd")
    assert (config.optimizer, config.finetune_epochs) == ("sgd", 0) and config.lr_drop > 1
    assert main(["train", "--preset", "tiny", "--ablate", "no-ntasgd", "--show"]) == 0
    shown = {line.split()[0]: line.split()[2:] for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert shown["optimizer"] == ["sgd", "*"] and shown["finetune_epochs"][0] == "0"
    assert float(shown["lr_drop"][0]) == config.lr_drop and shown["lr_drop"][1] == "*"   # * : not the paper's 1
    assert not (tmp_path / "runs").exists()          # --show trains nothing


def test_train_ablate_takes_one_piece_out_and_names_the_run_after_it(tmp_path, capsys, monkeypatch, ptb_folder):
    from awd_edu.ablations import ablation_config, list_ablations
    from awd_edu.config import TrainConfig
    monkeypatch.chdir(tmp_path)
    assert main(["ablations"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == [a.name for a in list_ablations()]
    assert "no-weight-drop       paper 71.1 / 68.9" in listed[[a.name for a in list_ablations()].index("no-weight-drop")]
    assert main(["train", "--preset", "tiny", "--ablate", "no-ar-tar", "--epochs", "1"] + QUICK) == 0
    stored = TrainConfig.load(tmp_path / "runs" / "tiny-no-ar-tar" / "config.json")
    asked = ablation_config(TrainConfig.from_preset("tiny"), "no-ar-tar").replace(
        epochs=1, max_train_tokens=4000, max_eval_tokens=800)
    assert {k: v for k, v in stored.to_dict().items() if k not in ("data_dir", "device")} == \
        {k: v for k, v in asked.to_dict().items() if k not in ("data_dir", "device")}
    assert (stored.alpha, stored.beta) == (0.0, 0.0) and stored.wdrop == TrainConfig.from_preset("tiny").wdrop
    capsys.readouterr()
    assert main(["train", "--preset", "tiny", "--ablate", "no-such-piece"]) == 2
    assert "invalid choice: 'no-such-piece'" in capsys.readouterr().err
