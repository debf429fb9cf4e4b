"""Tests of awd_edu.ablations and benchmarks/ablations.py: every named variant differs from its base in exactly its
piece, and the piece is really off in a built model or a run; the study runner runs end to end, its JSON agrees
with a recomputation from its own curves, and a second invocation (or a killed run) continues instead of starting
again."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import awd_edu.model as M
from awd_edu.ablations import (
    ABLATIONS, MINI, PAPER_TABLE, Ablation, ablation_config, get_ablation, list_ablations, mini_config, run_ablation,
    spread, summarise, verdict)
from awd_edu.config import TrainConfig
from awd_edu.loop import lm_loss
from awd_edu.train import Trainer, build_model

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "ablations.py"
sys.path.insert(0, str(ROOT / "benchmarks"))
import common  # noqa: E402

# What each variant must change, written out independently of the module's table.
EXPECTED = {
    "full": {},
    "no-finetune": {"finetune_epochs": 0},
    "no-ntasgd": {"optimizer": "sgd", "finetune_epochs": 0},
    "fixed-bptt": {"variable_bptt": False},
    "no-embed-dropout": {"dropoute": 0.0},
    "no-weight-decay": {"wdecay": 0.0},
    "no-ar-tar": {"alpha": 0.0, "beta": 0.0},
    "full-size-embedding": {"emb_size": "hidden_size"},
    "no-weight-drop": {"wdrop": 0.0},
    "untied": {"tie_weights": False},
    "no-regularisation": {"dropout": 0.0, "dropouth": 0.0, "dropouti": 0.0, "dropoute": 0.0, "wdrop": 0.0,
                          "alpha": 0.0, "beta": 0.0, "wdecay": 0.0},
    "everything-off": {"dropout": 0.0, "dropouth": 0.0, "dropouti": 0.0, "dropoute": 0.0, "wdrop": 0.0,
                       "alpha": 0.0, "beta": 0.0, "wdecay": 0.0, "optimizer": "sgd", "finetune_epochs": 0,
                       "variable_bptt": False},
}


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest: one torch thread for the module


def tiny_base(**changes):
    "The mini regime scaled down to a second per run (every piece still present, hidden != emb)."
    return mini_config(**{**dict(emb_size=16, hidden_size=24, batch_size=4, bptt=8, eval_batch_size=4,
                                 test_batch_size=4, max_train_tokens=600, max_eval_tokens=200, epochs=3,
                                 finetune_epochs=2, nonmono=1, device="cpu"), **changes})


def diff(a: TrainConfig, b: TrainConfig) -> dict:
    return {k: v for k, v in b.to_dict().items() if v != a.to_dict()[k]}


# ---------------------------------------------------------------- the named variants

def test_the_variants_cover_the_paper_table_once_and_unknown_names_are_refused():
    names = [a.name for a in list_ablations()]
    assert names[0] == "full" and len(set(names)) == len(names) and set(names) == set(EXPECTED)
    rows = [a.paper_row for a in list_ablations() if a.paper_row]
    assert sorted(rows) == sorted(r[0] for r in PAPER_TABLE)
    assert get_ablation("no-weight-drop").paper == (71.1, 68.9) and get_ablation("untied").paper == (None, None)
    with pytest.raises(ValueError, match="known ablations: full, no-finetune"):
        get_ablation("no-dropout")
    with pytest.raises(TypeError, match="base must be a TrainConfig"):
        ablation_config(MINI, "full")


@pytest.mark.parametrize("base", [mini_config(), TrainConfig.from_preset("ptb"), TrainConfig.from_preset("ptb-small")],
                         ids=["mini", "ptb", "ptb-small"])
@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_variant_differs_from_its_base_in_exactly_its_piece(base, name):
    expected = {k: getattr(base, v) if isinstance(v, str) and k == "emb_size" else v
                for k, v in EXPECTED[name].items()}
    expected = {k: v for k, v in expected.items() if getattr(base, k) != v}
    assert diff(base, ablation_config(base, name)) == expected
    assert get_ablation(name).changes_for(base) == expected


def test_the_mini_regime_keeps_the_papers_optimiser_and_lightens_only_the_dropouts():
    mini, paper = mini_config(), TrainConfig()
    for k in ("dropoute", "alpha", "beta", "wdecay", "lr", "clip", "optimizer", "variable_bptt", "tie_weights"):
        assert getattr(mini, k) == getattr(paper, k), k
    for k in ("dropout", "dropouth", "dropouti", "wdrop"):
        assert 0 < getattr(mini, k) < getattr(paper, k), k
    assert mini.max_train_tokens and mini.epochs > mini.nonmono + 1          # the trigger can fire within the run
    assert mini_config(seed=7).seed == 7 and mini_config().preset == "ablation-mini"


def hh_weights_in_forward(model, x):
    "The hidden-to-hidden matrix each LSTM multiplies with in one training-mode forward pass."
    seen = []
    hooks = [rnn.module.register_forward_pre_hook(lambda m, a: seen.append(m.weight_hh_l0.detach().clone()))
             for rnn in model.rnns]
    model.train()
    model(x)
    for h in hooks:
        h.remove()
    return seen


def test_no_weight_drop_means_the_recurrent_weights_get_no_mask():
    x = torch.randint(0, 50, (6, 3))
    torch.manual_seed(0)
    for name, masked in (("full", True), ("no-weight-drop", False)):
        cfg = ablation_config(mini_config(), name)
        model = build_model(cfg, 50)
        for rnn, w in zip(model.rnns, hh_weights_in_forward(model, x)):
            raw = rnn.weight_hh_l0_raw.detach()
            assert torch.equal(w, raw) != masked
            if masked:    # DropConnect: a fraction p of the entries zeroed, the rest scaled by 1/(1-p)
                p = cfg.wdrop
                assert abs((w == 0).float().mean() - p) < 0.05
                assert torch.allclose(w[w != 0], raw[w != 0] / (1 - p))
            assert (rnn.last_masks == {}) != masked


def test_no_embedding_dropout_drops_no_row(monkeypatch):
    seen = []
    real = M.embedded_dropout
    def spy(embed, words, dropout):
        out = real(embed, words, dropout)
        seen.append((out.detach(), F.embedding(words, embed.weight).detach()))
        return out
    monkeypatch.setattr(M, "embedded_dropout", spy)
    words = torch.arange(400).view(40, 10) % 200                   # 200 word types, each twice
    torch.manual_seed(0)
    for name, dropped in (("full", True), ("no-embed-dropout", False)):
        seen.clear()
        model = build_model(ablation_config(mini_config(), name), 200).train()
        model(words)
        out, plain = seen[0]
        zero_rows = (out == 0).all(-1)
        assert bool(zero_rows.any()) == dropped and torch.equal(out, plain) != dropped


def test_untied_means_the_decoder_has_its_own_weight():
    tied, untied = (build_model(ablation_config(mini_config(), n), 100) for n in ("full", "untied"))
    assert tied.decoder.weight is tied.encoder.weight
    assert untied.decoder.weight is not untied.encoder.weight
    assert untied.decoder.weight.shape == (100, mini_config().hidden_size)


def test_full_size_embedding_makes_every_layer_hidden_sized():
    model = build_model(ablation_config(mini_config(), "full-size-embedding"), 100)
    H = mini_config().hidden_size
    assert model.encoder.weight.shape == (100, H) and all(s == (H, H) for s in model.sizes)


def test_no_regularisation_makes_a_training_forward_equal_to_an_evaluation_forward():
    x = torch.randint(0, 100, (7, 3))
    for name, equal in (("full", False), ("no-regularisation", True)):
        model = build_model(ablation_config(mini_config(), name), 100)
        out_train = model.train()(x).logits
        out_eval = model.eval()(x).logits
        assert torch.equal(out_train, out_eval) == equal


def test_no_ar_tar_means_the_loss_is_the_cross_entropy():
    x, y = torch.randint(0, 100, (7, 3)), torch.randint(0, 100, (7, 3))
    for name, extra in (("full", True), ("no-ar-tar", False)):
        cfg = ablation_config(mini_config(), name)
        out = build_model(cfg, 100).train()(x)
        loss, ce = lm_loss(out, y, cfg.alpha, cfg.beta)
        assert (loss.item() > ce.item()) == extra and (loss.item() == ce.item()) != extra


def test_no_weight_decay_gives_optimizers_without_decay(ptb_corpus, tmp_path):
    for name, wd in (("full", 1.2e-6), ("no-weight-decay", 0.0)):
        trainer = Trainer(ablation_config(tiny_base(), name), tmp_path / name, corpus=ptb_corpus, progress=False)
        assert [g["weight_decay"] for g in trainer.optimizer.param_groups] == [wd]
        assert [g["weight_decay"] for g in trainer._asgd().param_groups] == [wd]     # after the switch too


def test_fixed_bptt_means_every_window_has_the_nominal_length(ptb_corpus, tmp_path):
    cfg = ablation_config(tiny_base(max_train_tokens=4 * 81, epochs=1), "fixed-bptt")   # 81 rows: 80 with a target
    trainer = Trainer(cfg, tmp_path / "r", corpus=ptb_corpus, progress=False)
    lengths = []
    trainer.model.register_forward_pre_hook(lambda m, a: lengths.append(a[0].shape[0]) if m.training else None)
    trainer.fit()
    assert lengths == [cfg.bptt] * 10


@pytest.mark.parametrize("name", ["full", "no-finetune", "no-ntasgd"])
def test_run_ablation_fine_tunes_only_where_the_variant_keeps_it_and_never_averages_without_ntasgd(
        name, ptb_corpus, tmp_path):
    cfg = ablation_config(tiny_base(epochs=4, lr=60.0), name)     # lr 60 on a tiny slice: validation turns up early
    rec = run_ablation(cfg, tmp_path / name, ptb_corpus)
    stages = [m["stage"] for m in rec["epochs"]]
    results = json.loads((tmp_path / name / "results.json").read_text())
    assert stages[:4] == ["train"] * 4
    assert ("finetune" in stages) == ("finetune" in results) == (name == "full")
    assert (rec["before_finetune"] is not None) == (name == "full")
    assert rec["best_valid_ppl"] == min(m["valid_ppl"] for m in rec["epochs"])
    assert rec["test_ppl"] == results["finetune" if name == "full" else "train"]["test_ppl"]
    if name == "no-ntasgd":
        assert rec["switched_at"] is None and {m["optimizer"] for m in rec["epochs"]} == {"sgd"}


def test_run_ablation_refuses_a_folder_holding_another_config(ptb_corpus, tmp_path):
    run_ablation(ablation_config(tiny_base(epochs=1, finetune_epochs=0), "full"), tmp_path / "r", ptb_corpus)
    with pytest.raises(ValueError, match="another config"):
        run_ablation(ablation_config(tiny_base(epochs=1, finetune_epochs=0), "no-weight-drop"), tmp_path / "r",
                     ptb_corpus)


# ---------------------------------------------------------------- the summary

def test_spread_and_verdict():
    s = spread([3.0, 1.0, 2.0])
    assert (s["mean"], s["std"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 1.0, 3.0, 3)
    assert spread([5.0])["std"] == 0.0
    full = spread([100, 102, 104])
    assert verdict(spread([105, 106, 110]), full) == "worse"
    assert verdict(spread([90, 95, 99]), full) == "better"
    assert verdict(spread([103, 110, 120]), full) == "inside the seed spread"
    with pytest.raises(ValueError):
        spread([])


# ---------------------------------------------------------------- the study runner, end to end

def run_script(*args, timeout=1200):
    out = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, f"ablations.py {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def recompute(runs):
    "Mean, sample std, min and max per variant, by hand, from each run's curve."
    out = {}
    for r in runs:
        best = min(m["valid_ppl"] for m in r["epochs"])
        out.setdefault(r["variant"], []).append(best)
    stats = {}
    for name, xs in out.items():
        mean = sum(xs) / len(xs)
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
        stats[name] = (mean, std, min(xs), max(xs))
    return stats


@pytest.mark.slow
def test_the_tiny_study_runs_end_to_end_and_a_second_invocation_skips_finished_runs(tmp_path):
    work, out = tmp_path / "work", tmp_path / "study.json"
    args = ("--tiny", "--only", "full,no-finetune,no-regularisation", "--seeds", "1,2", "--work-dir", str(work),
            "--out", str(out))
    printed = run_script(*args)
    rec = json.loads(out.read_text())
    assert set(common.REQUIRED_FIELDS) <= set(rec) and rec["name"] == "ablations" and rec["tiny"] is True
    assert rec["command"] == "python " + " ".join(["benchmarks/ablations.py", *args])
    assert rec["device"] == "cpu" and rec["torch_version"] == torch.__version__ and rec["device_name"]
    assert rec["load_average_before"] and rec["load_average_after"] and "git_commit" in rec
    cfg = rec["config"]
    assert cfg["seeds"] == [1, 2] and cfg["variants"] == {n: get_ablation(n).changes_for(TrainConfig(**cfg["base"]))
                                                          for n in ("full", "no-finetune", "no-regularisation")}
    res = rec["results"]
    runs = res["runs"]
    assert [(r["variant"], r["seed"]) for r in runs] == [(n, s) for n in ("full", "no-finetune", "no-regularisation")
                                                         for s in (1, 2)]
    for r in runs:
        assert r["config"]["seed"] == r["seed"] and r["wall_s"] > 0 and r["cpu_s"] > 0 and r["test_ppl"] > 1
        assert len(r["epochs"]) >= 3 and all(m["valid_ppl"] > 1 for m in r["epochs"])
        assert r["best_valid_ppl"] == min(m["valid_ppl"] for m in r["epochs"])
        assert ("finetune" in {m["stage"] for m in r["epochs"]}) == (r["variant"] != "no-finetune")
    for name, (mean, std, lo, hi) in recompute(runs).items():
        s = res["variants"][name]["best_valid_ppl"]
        assert (s["mean"], s["std"], s["min"], s["max"]) == pytest.approx((mean, std, lo, hi))
        assert s["delta_vs_full"] == pytest.approx(mean - recompute(runs)["full"][0])
    assert res["variants"] == summarise(runs)
    for seed in (1, 2):   # no-finetune is read from the full run of its seed: its training stage, tested before
        full, nof = (next(r for r in runs if r["variant"] == n and r["seed"] == seed) for n in ("full", "no-finetune"))
        assert nof["epochs"] == [m for m in full["epochs"] if m["stage"] == "train"]
        assert nof["test_ppl"] == full["before_finetune"]["test_ppl"] and nof["derived_from"] == f"full/seed-{seed}"
    assert res["paper"]["rows"] == [list(r) for r in PAPER_TABLE]
    assert "no-regularisation" in printed and "verdict" in printed

    # the same command again: everything is done, nothing is trained, the record is the same
    stamps = {p: p.stat().st_mtime_ns for p in work.rglob("*.safetensors")}
    printed = run_script(*args)
    assert "6 already done, 0 to run" in printed
    assert {p: p.stat().st_mtime_ns for p in work.rglob("*.safetensors")} == stamps
    assert json.loads(out.read_text())["results"]["runs"] == runs
    assert len(json.loads((work / "partial.json").read_text())["invocations"]) == 2


@pytest.mark.slow
def test_a_killed_run_continues_from_its_checkpoint_and_ends_as_an_uninterrupted_one(ptb_corpus, tmp_path):
    # an "interrupted" study: the run of (no-weight-drop, seed 1) stopped after its first epoch
    import ablations as runner
    cfg = ablation_config(runner.base_config(True, [], "cpu"), "no-weight-drop").replace(seed=1)
    trainer = Trainer(cfg, tmp_path / "killed" / "no-weight-drop" / "seed-1", corpus=ptb_corpus, progress=False)
    trainer.run_epoch()
    del trainer
    outs = {}
    for name in ("killed", "whole"):
        run_script("--tiny", "--only", "no-weight-drop", "--seeds", "1", "--work-dir", str(tmp_path / name),
                   "--out", str(tmp_path / f"{name}.json"))
        outs[name] = json.loads((tmp_path / f"{name}.json").read_text())["results"]["runs"][0]
    keys = ("stage", "epoch", "train_ppl", "valid_ppl", "optimizer", "switched")
    strip = lambda r: [{k: m[k] for k in keys} for m in r["epochs"]]
    assert strip(outs["killed"]) == strip(outs["whole"])
    assert (outs["killed"]["best_valid_ppl"], outs["killed"]["test_ppl"]) == (outs["whole"]["best_valid_ppl"],
                                                                              outs["whole"]["test_ppl"])


def test_the_runner_refuses_bad_arguments():
    for args, message in ((("--only", "no-such"),  "unknown variant"), (("--seeds", "1,x"), "comma-separated"),
                          (("--seeds", "1,1"), "each once"), (("--jobs", "0"), ">= 1")):
        out = subprocess.run([sys.executable, str(SCRIPT), "--tiny", *args], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr)


def runner_study():
    "The variants the study runs by default (benchmarks/ablations.py's STUDY)."
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import ablations as runner
    return runner.STUDY


def test_the_recorded_study_holds_every_variant_and_seed_with_curves():
    path = ROOT / "benchmarks" / "results" / "ablations-cpu.json"
    if not path.is_file():
        pytest.skip("the study has not been recorded yet")
    rec = json.loads(path.read_text())
    runs = rec["results"]["runs"]
    seeds = rec["config"]["seeds"]
    assert rec["tiny"] is False and len(seeds) >= 3
    assert {(r["variant"], r["seed"]) for r in runs} == {(n, s) for n in runner_study() for s in seeds}
    assert all(r["best_valid_ppl"] == min(m["valid_ppl"] for m in r["epochs"]) for r in runs)
    assert rec["results"]["variants"] == summarise(runs)
    full = rec["results"]["variants"]["full"]["best_valid_ppl"]
    bare = rec["results"]["variants"]["everything-off"]["best_valid_ppl"]
    assert bare["min"] > full["max"]        # the full model beats the plain, unregularised one beyond the seed spread


def test_the_ablations_module_is_core_it_imports_without_plotly_or_ipywidgets():
    block = ("import importlib.abc, sys\n"
             "class Block(importlib.abc.MetaPathFinder):\n"
             "    def find_spec(self, name, path, target=None):\n"
             "        if name.split('.')[0] in ('plotly', 'ipywidgets'):\n"
             "            raise ImportError(name + ' is blocked by the test')\n"
             "sys.meta_path.insert(0, Block())\n"
             "import awd_edu.ablations as A\n"
             "print(len(A.list_ablations()), sorted(m for m in sys.modules if m.startswith(('plotly', 'ipywidgets'))))")
    r = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{len(EXPECTED)} []"
    assert "plotly" not in (ROOT / "awd_edu" / "ablations.py").read_text()
