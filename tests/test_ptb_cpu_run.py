"""benchmarks/ptb_cpu_run.py turns a finished run (and its baseline) into chapter 10's record: run on two tiny runs."""
import json
import math
import sys
from pathlib import Path

import pytest

from awd_edu.cache import CACHE_PRESETS, evaluate_with_cache
from awd_edu.config import TrainConfig
from awd_edu.data import batchify
from awd_edu.files import sha256_file
from awd_edu.rundir import load_best
from awd_edu.train import Trainer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import ptb_cpu_run  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**changes):
    return TrainConfig.from_preset("tiny").replace(**{"max_train_tokens": 4_000, "max_eval_tokens": 1_200,
                                                      "test_batch_size": 1, **changes})


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ptb_corpus):
    folder = tmp_path_factory.mktemp("runs")
    run = Trainer(tiny(epochs=4, nonmono=1, finetune_epochs=2), folder / "run", corpus=ptb_corpus, progress=False)
    run.fit()
    run.finetune()
    base = Trainer(tiny(epochs=6, patience=1, optimizer="sgd", finetune_epochs=0, dropout=0.0, dropouth=0.0,
                        dropouti=0.0, wdrop=0.0, lr=60.0), folder / "base", corpus=ptb_corpus, progress=False)
    base.fit()
    base.test()
    return folder, run, base


@pytest.mark.slow   # two trainer runs on PTB (4 + 2 and up to 6 epochs), the cache search, the scoring
def test_the_record_holds_the_run_its_cache_choice_and_its_weights(runs, ptb_corpus, tmp_path, capsys):
    folder, run, base = runs
    out = tmp_path / "results" / "ptb-cpu-run.json"
    assert ptb_cpu_run.main(["--run", str(folder / "run"), "--out", str(out), "--threads", "1"]) == 0
    rec = json.loads(out.read_text())
    hours = sum(m["seconds"] for m in run.history) / 3600                     # every epoch of both stages
    assert rec["wall_hours"] == pytest.approx(hours, abs=6e-4) and rec["n_params"] == sum(p.numel() for p in run.model.parameters())
    assert [(e["stage"], e["epoch"]) for e in rec["epochs"]] == [(m["stage"], m["epoch"]) for m in run.history]
    assert rec["switched_at"] == run.switched_at and rec["config"]["data_dir"] is None
    assert str(tmp_path) not in json.dumps({k: v for k, v in rec.items() if k != "command"})
    # the final weights' numbers, computed here independently
    config, _, model = load_best(folder / "run", "cpu", ptb_corpus)
    valid = batchify(ptb_corpus.valid[:1_200], 1)
    chosen = rec["cache_settings"]
    again = evaluate_with_cache(model, valid, bptt=config.bptt, **chosen)
    assert math.isclose(again["ppl"], rec["results"]["cache"]["valid_ppl_cache"], rel_tol=1e-6)
    paper = evaluate_with_cache(model, valid, bptt=config.bptt, **CACHE_PRESETS["ptb"])
    assert rec["results"]["cache"]["valid_ppl_cache"] <= paper["ppl"] + 1e-9     # the grid holds the paper's setting
    test = evaluate_with_cache(model, batchify(ptb_corpus.test[:1_200], 1), bptt=config.bptt, **chosen)
    assert math.isclose(rec["test_ppl_cache"], test["ppl"], rel_tol=1e-6)
    assert math.isclose(rec["test_ppl"], test["base_ppl"], rel_tol=1e-6)       # batch 1: the model alone
    weights = out.with_name("ptb-cpu.safetensors")
    assert rec["weights"]["sha256"] == sha256_file(weights) and rec["weights"]["file"] == weights.name
    assert abs(rec["results"]["test_ppl_half_precision"] / rec["test_ppl"] - 1) < 5e-3
    assert len(rec["samples"]) == 3 and all(len(s.split()) >= 40 for s in rec["samples"])
    # recorded again with the baseline: the scores are reused, the baseline added
    capsys.readouterr()
    ptb_cpu_run.main(["--run", str(folder / "run"), "--baseline", str(folder / "base"), "--out", str(out),
                      "--threads", "1", "--baseline-command", "first", "--baseline-command", "then",
                      "--run-command", "train it", "--run-command", "fine-tune it", "--rebuild-command", "in one go",
                      "--earlier", str(out), "--earlier-commit", "abc1234"])   # the record as it was, kept in short
    assert "reused" in capsys.readouterr().out
    rec2 = json.loads(out.read_text())
    assert rec2["test_ppl"] == rec["test_ppl"] and rec2["wall_hours"] == rec["wall_hours"]
    valid_ppl = [m["valid_ppl"] for m in base.history]
    b = rec2["baseline"]
    assert b["commands"] == ["first", "then"]                                  # in the order given
    assert rec2["run_command"] == ["train it", "fine-tune it"] and rec2["rebuild_command"] == ["in one go"]
    assert rec["rebuild_command"] == rec["run_command"]                        # without one, the run's own commands
    assert b["best_valid_ppl"] == min(valid_ppl) and b["last_valid_ppl"] == valid_ppl[-1]
    assert b["best_at"] == valid_ppl.index(min(valid_ppl)) + 1 and len(b["epochs"]) == len(base.history)
    assert math.isclose(b["rise_above_best_pct"], 100 * (valid_ppl[-1] / min(valid_ppl) - 1))
    assert b["wall_hours"] == pytest.approx(sum(m["seconds"] for m in base.history) / 3600, abs=6e-4)
    assert rec2["earlier"]["epochs"] == rec["epochs"] and rec2["earlier"]["weights"]["in_commit"] == "abc1234"
    ptb_cpu_run.main(["--run", str(folder / "run"), "--out", str(out), "--threads", "1"])
    assert json.loads(out.read_text())["earlier"] == rec2["earlier"]          # kept when recorded again
    ptb_cpu_run.main(["--run", str(folder / "run"), "--out", str(out), "--threads", "1", "--run-command", "new"])
    assert json.loads(out.read_text())["rebuild_command"] == ["new"]          # new run commands: not the old rebuild


def test_scoring_again_keeps_a_weights_file_whose_tensors_are_the_same(tmp_path):
    "safetensors writes its metadata in a different order from one process to the next: the same weights must not make a new file (the record's hash, the repository's history)."
    import torch
    from safetensors.torch import save_file
    weights = tmp_path / "w.safetensors"
    t = {"a": torch.arange(6.0).reshape(2, 3)}

    def write(tensors, meta):
        return lambda path: (save_file(tensors, str(path), metadata=meta), sha256_file(path))[1]
    first = ptb_cpu_run.keep_or_replace(weights, write(t, {"x": "1", "y": "2"}))
    before = weights.read_bytes()
    assert ptb_cpu_run.keep_or_replace(weights, write(dict(t), {"y": "2", "x": "1"})) == first
    assert weights.read_bytes() == before and not list(tmp_path.glob("*.new.*"))
    changed = ptb_cpu_run.keep_or_replace(weights, write({"a": t["a"] + 1}, {"x": "1", "y": "2"}))
    assert changed != first and changed == sha256_file(weights)
    assert ptb_cpu_run.keep_or_replace(weights, write({"a": t["a"] + 1}, {"x": "1", "y": "3"})) != changed  # metadata


def test_an_earlier_record_is_kept_in_short_and_a_wrong_file_is_refused():
    "`--earlier`: an earlier run of the preset (another trigger window) kept beside the new one, its weights pointed at in git."
    record = json.loads((ROOT / "benchmarks" / "results" / "ptb-cpu-run.json").read_text())
    short = ptb_cpu_run.earlier_part(record, "abc1234")
    assert short["epochs"] == record["epochs"] and short["test_ppl"] == record["test_ppl"]
    assert short["config"]["nonmono"] == record["config"]["nonmono"] and short["wall_hours"] == record["wall_hours"]
    assert short["weights"]["sha256"] == record["weights"]["sha256"] and short["weights"]["in_commit"] == "abc1234"
    assert "baseline" not in short and "samples" not in short              # in short: the run, not its whole record
    assert ptb_cpu_run.earlier_part(record)["weights"] is None             # no commit: no pointer to a file
    with pytest.raises(ValueError, match="lacks switched_at.*written by this script"):
        ptb_cpu_run.earlier_part({k: v for k, v in record.items() if k != "switched_at"})


def test_a_missing_earlier_record_or_run_folder_is_refused_before_scoring(tmp_path, monkeypatch):
    "A wrong --earlier, --run or --baseline is named with its fix before the long scoring starts (which must not run)."
    monkeypatch.setattr(ptb_cpu_run, "score_run", lambda *a: pytest.fail("scoring started despite a bad input"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps(dict(stage="train", epoch=1, valid_ppl=100.0)) + "\n")
    out = str(tmp_path / "rec.json")
    with pytest.raises(FileNotFoundError, match=r"--earlier .*nope\.json: no such file.*git show <commit>:"):
        ptb_cpu_run.main(["--run", str(run), "--out", out, "--earlier", str(tmp_path / "nope.json")])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"--earlier .*bad\.json: not a JSON record"):
        ptb_cpu_run.main(["--run", str(run), "--out", out, "--earlier", str(tmp_path / "bad.json")])
    with pytest.raises(FileNotFoundError, match=r"--run .*empty: no metrics\.jsonl there.*--run-dir"):
        ptb_cpu_run.main(["--run", str(tmp_path / "empty"), "--out", out])
    with pytest.raises(FileNotFoundError, match=r"--baseline .*base: no metrics\.jsonl"):
        ptb_cpu_run.main(["--run", str(run), "--baseline", str(tmp_path / "base"), "--out", out])
    assert not (tmp_path / "rec.json").exists()
