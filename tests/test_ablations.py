"""Tests of awd_edu.ablations and benchmarks/ablations.py (the study runner, with `run_ablation`): every named
variant differs from its base in exactly its piece, and the piece is really off in a built model or a run (the paper's '- NT-ASGD' lowers SGD's rate on the
trigger); the paired statistics agree with hand-computed examples; the study runner runs end to end, its record
agrees with a recomputation from its own runs, and a study killed halfway continues from its record, on the same
machine or on a fresh clone."""
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import awd_edu.model as M
from awd_edu.ablations import (
    ABLATIONS, MINI, NO_NTASGD_LR_DROP, PAPER_TABLE, REGIME, T_95, ablation_config,
    convergence, describe_regime, get_ablation, list_ablations, load_study, mean_interval, measured_table, mini_config, overfitting,
    paired, regime_checks, spread, study_config, summarise, t_critical, verdict, worth)
from awd_edu.viz.ablations import what_the_record_says
from awd_edu.config import TrainConfig
from awd_edu.loop import lm_loss
from awd_edu.model import build_model
from awd_edu.train import Trainer
from folder_checks import snapshot

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "ablations.py"
sys.path.insert(0, str(ROOT / "benchmarks"))
import common  # noqa: E402
from ablations import run_ablation  # noqa: E402  (the study runner, benchmarks/ablations.py)

# What each variant must change, written out independently of the module's table.
EXPECTED = {
    "full": {},
    "no-finetune": {"finetune_epochs": 0},
    "no-ntasgd": {"optimizer": "sgd", "lr_drop": 2.0, "finetune_epochs": 0},
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
    "sgd-constant-lr": {"optimizer": "sgd", "finetune_epochs": 0},
}
LR_DROP = {"no-ntasgd": 2.0}   # the variants whose SGD rate drops on the trigger, and by how much (others: 1)


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest: one torch thread for the module


def tiny_base(**changes):
    "The study's regime scaled down to a second per run (every piece still present, hidden != emb)."
    return study_config(**{**dict(patience=0, emb_size=16, hidden_size=24, batch_size=4, bptt=8, eval_batch_size=4,
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
    drops = {a.name: ablation_config(TrainConfig(), a.name).lr_drop for a in list_ablations()}
    assert {n: d for n, d in drops.items() if d != 1} == LR_DROP == {"no-ntasgd": NO_NTASGD_LR_DROP}
    with pytest.raises(ValueError, match="known ablations: full, no-finetune"):
        get_ablation("no-dropout")
    with pytest.raises(TypeError, match="base must be a TrainConfig"):
        ablation_config(REGIME, "full")


@pytest.mark.parametrize("base", [study_config(), mini_config(), TrainConfig.from_preset("ptb"),
                                  TrainConfig.from_preset("ptb-small")], ids=["study", "mini", "ptb", "ptb-small"])
@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_variant_differs_from_its_base_in_exactly_its_piece(base, name):
    expected = {k: getattr(base, v) if isinstance(v, str) and k == "emb_size" else v
                for k, v in EXPECTED[name].items()}
    expected = {k: v for k, v in expected.items() if getattr(base, k) != v}
    assert diff(base, ablation_config(base, name)) == expected
    assert get_ablation(name).changes_for(base) == expected


def test_the_study_regime_keeps_the_papers_recipe_and_regularisers_and_evaluates_on_whole_splits():
    "The paper's recipe but for the three locked dropouts, scaled down for 256-unit layers (weight drop stays 0.5)."
    cfg, paper = study_config(), TrainConfig()
    for k in ("dropoute", "wdrop", "alpha", "beta", "wdecay", "lr", "clip", "optimizer", "variable_bptt", "tie_weights"):
        assert getattr(cfg, k) == getattr(paper, k), k
    for k in ("dropout", "dropouth", "dropouti"):
        assert 0 < getattr(cfg, k) <= getattr(paper, k) / 4 + 1e-9, k
    assert cfg.wdrop == 0.5 and cfg.nonmono > 1      # the trigger is not fired by one noisy epoch
    assert cfg.max_eval_tokens is None and cfg.max_train_tokens and cfg.patience > cfg.nonmono + 1   # ASGD gets epochs
    assert cfg.epochs > cfg.nonmono + 1 and cfg.finetune_epochs > cfg.nonmono   # the trigger can fire in both stages
    assert study_config(seed=7).seed == 7 and study_config().preset == "ablation-cpu"
    assert mini_config().preset == "ablation-mini" and mini_config().max_train_tokens == MINI["max_train_tokens"]


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
        cfg = ablation_config(study_config(), name)
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
        model = build_model(ablation_config(study_config(), name), 200).train()
        model(words)
        out, plain = seen[0]
        zero_rows = (out == 0).all(-1)
        assert bool(zero_rows.any()) == dropped and torch.equal(out, plain) != dropped


def test_untied_means_the_decoder_has_its_own_weight():
    tied, untied = (build_model(ablation_config(study_config(), n), 100) for n in ("full", "untied"))
    assert tied.decoder.weight is tied.encoder.weight
    assert untied.decoder.weight is not untied.encoder.weight
    assert untied.decoder.weight.shape == (100, study_config().hidden_size)


def test_full_size_embedding_makes_every_layer_hidden_sized():
    model = build_model(ablation_config(study_config(), "full-size-embedding"), 100)
    H = study_config().hidden_size
    assert model.encoder.weight.shape == (100, H) and all(s == (H, H) for s in model.sizes)


def test_no_regularisation_makes_a_training_forward_equal_to_an_evaluation_forward():
    x = torch.randint(0, 100, (7, 3))
    for name, equal in (("full", False), ("no-regularisation", True)):
        model = build_model(ablation_config(study_config(), name), 100)
        out_train = model.train()(x).logits
        out_eval = model.eval()(x).logits
        assert torch.equal(out_train, out_eval) == equal


def test_no_ar_tar_means_the_loss_is_the_cross_entropy():
    x, y = torch.randint(0, 100, (7, 3)), torch.randint(0, 100, (7, 3))
    for name, extra in (("full", True), ("no-ar-tar", False)):
        cfg = ablation_config(study_config(), name)
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


@pytest.mark.parametrize("name", ["full", "no-finetune", "no-ntasgd", "sgd-constant-lr"])
def test_run_ablation_fine_tunes_only_where_the_variant_keeps_it_and_never_averages_without_ntasgd(
        name, ptb_corpus, tmp_path):
    cfg = ablation_config(tiny_base(epochs=6, lr=60.0), name)     # lr 60 on a tiny slice: validation turns up early
    rec = run_ablation(cfg, tmp_path / name, ptb_corpus)
    stages = [m["stage"] for m in rec["epochs"]]
    results = json.loads((tmp_path / name / "results.json").read_text())
    assert stages[:6] == ["train"] * 6
    assert ("finetune" in stages) == ("finetune" in results) == (name == "full")
    assert (rec["before_finetune"] is not None) == (name == "full")
    assert rec["best_valid_ppl"] == min(m["valid_ppl"] for m in rec["epochs"])
    assert rec["test_ppl"] == results["finetune" if name == "full" else "train"]["test_ppl"]
    assert rec["config"]["lr_drop"] == LR_DROP.get(name, 1.0) and "lr_drop" not in rec   # a setting, nothing beside it
    if name in ("no-ntasgd", "sgd-constant-lr"):
        assert rec["switched_at"] is None and {m["optimizer"] for m in rec["epochs"]} == {"sgd"}
        lrs = [m["lr"] for m in rec["epochs"]]
        if name == "sgd-constant-lr":
            assert lrs == [60.0] * 6
        else:   # halved exactly on the epochs where the (fresh after each drop) trigger fires, replayed by hand
            losses = [math.log(m["valid_ppl"]) for m in rec["epochs"]]
            expected, lr, history = [], 60.0, []
            for loss in losses:
                if len(history) > cfg.nonmono and loss > min(history[:-cfg.nonmono]):
                    lr, history = lr / 2, []
                else:
                    history.append(loss)
                expected.append(lr)
            assert lrs == pytest.approx(expected) and min(lrs) < 60.0   # lr 60 on 600 tokens: it does fire


def test_run_ablation_refuses_a_folder_holding_another_config(ptb_corpus, tmp_path):
    run_ablation(ablation_config(tiny_base(epochs=1, finetune_epochs=0), "full"), tmp_path / "r", ptb_corpus)
    with pytest.raises(ValueError, match="another config"):
        run_ablation(ablation_config(tiny_base(epochs=1, finetune_epochs=0), "no-weight-drop"), tmp_path / "r",
                     ptb_corpus)
    # the same config with another learning-rate schedule is another run too
    cfg = ablation_config(tiny_base(epochs=2), "sgd-constant-lr")
    run_ablation(cfg.replace(epochs=1), tmp_path / "s", ptb_corpus)
    with pytest.raises(ValueError, match="another config"):
        run_ablation(cfg.replace(lr_drop=2.0), tmp_path / "s", ptb_corpus)


# ---------------------------------------------------------------- the statistics

def t_two_sided_95(df: int) -> float:
    "The 0.975 quantile of Student's t, independently: Simpson's rule on the density, then bisection."
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    pdf = lambda x: c * (1 + x * x / df) ** (-(df + 1) / 2)
    def cdf_from_zero(x, n=4000):
        h = x / n
        return h / 3 * (pdf(0) + pdf(x) + sum((4 if i % 2 else 2) * pdf(i * h) for i in range(1, n)))
    lo, hi = 0.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf_from_zero(mid) < 0.475 else (lo, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 7, 10, 15, 20, 29, 30])
def test_every_t_critical_value_is_the_t_quantile(df):
    assert T_95[df - 1] == t_critical(df) == pytest.approx(t_two_sided_95(df), abs=6e-4)


def test_all_t_table_entries_and_the_expansion_beyond_it():
    for df in range(1, 31):
        assert t_critical(df) == pytest.approx(t_two_sided_95(df), abs=6e-4), df
    for df in (31, 40, 60, 120):
        assert t_critical(df) == pytest.approx(t_two_sided_95(df), abs=1e-3), df
    assert t_critical(30) > t_critical(31) > t_critical(1000) > 1.96
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError if type(bad) is int else TypeError, match="df must be an int >= 1"):
            t_critical(bad)


def test_spread_mean_interval_and_verdict_by_hand():
    s = spread([3.0, 1.0, 2.0])
    assert (s["mean"], s["std"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 1.0, 3.0, 3)
    assert spread([5.0])["std"] == 0.0
    with pytest.raises(ValueError):
        spread([])
    # differences 4, 3, 5, 4: mean 4, s = sqrt(2/3), half-width t(3) * s / 2 = 3.182 * 0.8165 / 2 = 1.2991
    i = mean_interval([4.0, 3.0, 5.0, 4.0])
    assert i["mean"] == 4.0 and i["half_width"] == pytest.approx(1.29904, abs=1e-5)
    assert (i["lo"], i["hi"]) == pytest.approx((2.70096, 5.29904), abs=1e-5)
    # differences 2, -1, 3: mean 4/3, s = sqrt(((2/3)^2 + (7/3)^2 + (5/3)^2) / 2) = sqrt(13/3), t(2) = 4.303
    j = mean_interval([2.0, -1.0, 3.0])
    assert j["half_width"] == pytest.approx(4.303 * math.sqrt(13 / 3) / math.sqrt(3))
    assert verdict(i) == "worse" and verdict(j) == "no measurable effect at this size"
    assert verdict(mean_interval([-4.0, -3.0, -5.0, -4.0])) == "better"
    assert verdict(mean_interval([7.0])) == "too few seeds" and mean_interval([7.0])["lo"] is None


def run_rec(variant, seed, test, valid=None, curve=(300.0, 250.0, 240.0)):
    return dict(variant=variant, seed=seed, test_ppl=test, valid_ppl=valid if valid is not None else test + 10,
                best_valid_ppl=min(curve), epochs=[dict(stage="train", epoch=i + 1, valid_ppl=v, train_ppl=v - 50)
                                                   for i, v in enumerate(curve)])


def test_paired_pairs_by_seed_not_by_position():
    # the variant's runs listed in another order, and one seed (5) that full does not have
    runs = [run_rec("full", s, t) for s, t in ((1, 100.0), (2, 110.0), (3, 90.0), (4, 100.0))]
    runs += [run_rec("no-weight-drop", s, t) for s, t in ((3, 95.0), (5, 500.0), (1, 104.0), (4, 104.0), (2, 113.0))]
    p = paired(runs, "no-weight-drop")
    assert p["seeds"] == [1, 2, 3, 4] and p["diffs"] == [4.0, 3.0, 5.0, 4.0] and p["verdict"] == "worse"
    assert paired(runs, "no-weight-drop", "valid_ppl")["diffs"] == [4.0, 3.0, 5.0, 4.0]
    with pytest.raises(ValueError, match="appears twice"):
        paired(runs + [run_rec("full", 2, 1.0)], "no-weight-drop")
    with pytest.raises(ValueError, match="no seed has both"):
        paired(runs, "untied")


def test_summarise_pairs_every_variant_with_full_on_valid_and_test():
    runs = [run_rec("full", s, t, t + 5) for s, t in ((1, 100.0), (2, 110.0))]
    runs += [run_rec("untied", s, t, t + 20) for s, t in ((1, 101.0), (2, 113.0))]
    s = summarise(runs)
    assert list(s) == ["full", "untied"] and "paired" not in s["full"]
    assert s["untied"]["paired"]["test"]["diffs"] == [1.0, 3.0]
    assert s["untied"]["paired"]["valid"]["diffs"] == [16.0, 18.0]     # (101+20) - (100+5), (113+20) - (110+5)
    assert s["untied"]["test_ppl"]["mean"] == 107.0 and s["full"]["seeds"] == [1, 2]
    assert json.loads(json.dumps(s)) == s                               # JSON-safe: the record compares equal


def test_convergence_and_overfitting_by_hand():
    curve = lambda *v: dict(epochs=[dict(stage="train", epoch=i + 1, valid_ppl=x) for i, x in enumerate(v)] +
                                   [dict(stage="finetune", epoch=1, valid_ppl=1.0)])   # fine-tuning is not looked at
    # 10 epochs: the tail is epochs 9-10; best at 7 -> converged
    c = convergence(curve(500, 400, 350, 330, 320, 318, 317, 319, 318, 320))
    assert c == dict(n_epochs=10, tail_from=9, best_epoch=7, tail_gain=pytest.approx((317 - 318) / 317),
                     converged=True)
    # best at 10, the tail gains (280 - 270) / 280 = 3.6% -> still learning
    assert not convergence(curve(500, 400, 350, 330, 320, 310, 300, 290, 280, 270))["converged"]
    # best at 10, but the tail gains (302 - 299.5) / 302 = 0.8% < 1% -> converged
    assert convergence(curve(500, 400, 350, 330, 320, 310, 305, 302, 300, 299.5))["converged"]
    # 7 epochs: the tail is ceil(1.4) = 2 epochs
    assert convergence(curve(5, 4, 3, 2, 1, 2, 3))["tail_from"] == 6
    with pytest.raises(ValueError, match="too few"):
        convergence(curve(300.0))
    o = overfitting(curve(500, 400, 380, 390, 399))         # 399 / 380 = +5.0%
    assert o["overfits"] and o["rise"] == pytest.approx(399 / 380 - 1)
    assert not overfitting(curve(500, 400, 380, 390, 398))["overfits"]      # +4.7%
    runs = [dict(run_rec("full", 1, 1.0), **curve(5, 4, 3, 2, 1, 2, 3)), dict(run_rec("everything-off", 1, 1.0),
                                                                               **curve(3, 2, 3))]
    checks = regime_checks(runs)
    assert [c["seed"] for c in checks["full_converged"]] == [1] and checks["full_converged"][0]["converged"]
    assert checks["everything_off_overfits"][0]["rise"] == pytest.approx(0.5)


def hand_study(runs, **base):
    b = dict(study_config().to_dict(), **base)
    return dict(config=dict(base=b, seeds=sorted({r["seed"] for r in runs})), results=dict(runs=runs))


def test_the_tables_and_sentences_read_the_runs():
    runs = [run_rec("full", s, t) for s, t in ((1, 100.0), (2, 110.0), (3, 90.0), (4, 100.0))]
    runs += [run_rec("no-weight-drop", s, t) for s, t in ((1, 104.0), (2, 113.0), (3, 95.0), (4, 104.0))]
    study = hand_study(runs)
    table = measured_table(study)
    assert "| `no-weight-drop` | – weight-dropping | 68.9 (+11.6) | 4 | +4.0 [+2.7, +5.3] | +4.0 [+2.7, +5.3] | worse |" \
        in table
    text = worth(study, "no-weight-drop")
    assert "+4.0 [+2.7, +5.3]" in text and "worse than the full model" in text and "the full model: 100.0" in text
    assert "no runs of `untied`" in worth(study, "untied") and "this course's CPU study" in text
    study["results"]["upgraded_from"] = 1          # a record of the first study says that it is superseded
    assert "first CPU study, superseded" in worth(study, "no-weight-drop")
    says = what_the_record_says(study)
    assert "**Worse than the full model (test interval above zero)**: `no-weight-drop`" in says
    assert "the full validation and test splits" in says and "4 seeds (1, 2, 3, 4)" in says
    study["results"]["runs"] += [dict(r, variant="no-finetune") for r in runs[:4]]   # a variant equal to full
    says = what_the_record_says(study)
    assert "`no-finetune` (the full model's perplexities exactly, in all 4 seeds)" in says, says
    said = worth(study, "no-finetune")
    assert "scores exactly what the full model of the same seed scores, in all 4 seeds" in said and "+0.0" not in said


def test_a_first_format_record_is_read_in_todays_terms(tmp_path):
    runs = [dict(run_rec(v, s, 100.0 + s), config={}) for v in ("full", "no-ntasgd") for s in (1, 2)]
    old = hand_study(runs, preset="ablation-mini")
    old["config"]["variants"] = {"full": {}, "no-ntasgd": {"optimizer": "sgd"}}
    old["results"].update(variants={}, study=dict(invocations=[]))
    (tmp_path / "old.json").write_text(json.dumps(old))
    study = load_study(tmp_path / "old.json")
    assert [r["variant"] for r in study["results"]["runs"]] == ["full", "full", "sgd-constant-lr", "sgd-constant-lr"]
    assert set(study["config"]["variants"]) == {"full", "sgd-constant-lr"} and study["results"]["upgraded_from"] == 1
    assert study["results"]["variants"] == summarise(study["results"]["runs"])


def test_a_second_format_record_reads_with_lr_drop_in_the_config(tmp_path):
    runs = [dict(run_rec(v, s, 100.0 + s), lr_drop=LR_DROP.get(v),
                 config=ablation_config(study_config(seed=s), v).replace(lr_drop=1.0).to_dict())
            for v in ("full", "no-ntasgd") for s in (1, 2)]
    for r in runs:
        del r["config"]["lr_drop"]                 # format 2: the schedule beside the config, not in it
    old = hand_study(runs)
    old["config"].update(variants={"full": {}, "no-ntasgd": {"optimizer": "sgd", "finetune_epochs": 0}},
                         lr_drop={"no-ntasgd": 2.0})
    old["results"].update(format=2, variants={}, study=dict(invocations=[]))
    (tmp_path / "old.json").write_text(json.dumps(old))
    study = load_study(tmp_path / "old.json")
    assert [(r["variant"], r["config"]["lr_drop"]) for r in study["results"]["runs"]] == [
        ("full", 1.0), ("full", 1.0), ("no-ntasgd", 2.0), ("no-ntasgd", 2.0)]
    assert all("lr_drop" not in r for r in study["results"]["runs"]) and "lr_drop" not in study["config"]
    base = TrainConfig(**study["config"]["base"])
    assert study["config"]["variants"]["no-ntasgd"] == get_ablation("no-ntasgd").changes_for(base)
    assert all(TrainConfig(**r["config"]) == ablation_config(base, r["variant"]).replace(seed=r["seed"])
               for r in study["results"]["runs"])
    assert study["results"]["upgraded_from"] == 2 and study["results"]["format"] == 3
    # the study runner keeps such runs: their config, read in today's terms, is today's config of the variant
    import ablations as runner
    assert runner.recorded_runs(old, study_config())[1] == 0


# ---------------------------------------------------------------- the study runner, end to end

def run_script(*args, timeout=1200):
    out = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, f"ablations.py {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.mark.slow
def test_the_tiny_study_runs_end_to_end_and_a_second_invocation_skips_recorded_runs(tmp_path):
    work, out = tmp_path / "work", tmp_path / "study.json"
    names = ("full", "no-finetune", "no-ntasgd", "everything-off")
    args = ("--tiny", "--only", ",".join(names), "--seeds", "1,2", "--work-dir", str(work), "--out", str(out))
    printed = run_script(*args)
    rec = json.loads(out.read_text())
    assert set(common.REQUIRED_FIELDS) <= set(rec) and rec["name"] == "ablations" and rec["tiny"] is True
    shown = [Path(a).name if Path(a).is_absolute() else a for a in args]      # no machine's path in a record
    assert rec["command"] == "python " + " ".join(["benchmarks/ablations.py", *shown])
    assert rec["device"] == "cpu" and rec["torch_version"] == torch.__version__ and rec["device_name"]
    cfg = rec["config"]
    assert cfg["seeds"] == [1, 2] and "lr_drop" not in cfg and cfg["variants"]["no-ntasgd"]["lr_drop"] == 2.0
    assert cfg["variants"] == {n: get_ablation(n).changes_for(TrainConfig(**cfg["base"])) for n in names}
    res = rec["results"]
    runs = res["runs"]
    assert res["format"] == 3 and [(r["variant"], r["seed"]) for r in runs] == [(n, s) for n in names for s in (1, 2)]
    for r in runs:
        assert r["config"]["seed"] == r["seed"] and r["wall_s"] > 0 and r["cpu_s"] > 0 and r["test_ppl"] > 1
        assert r["best_valid_ppl"] == min(m["valid_ppl"] for m in r["epochs"])
        assert {"stage", "epoch", "train_ppl", "valid_ppl", "lr"} <= set(r["epochs"][0])
        assert ("finetune" in {m["stage"] for m in r["epochs"]}) == (r["variant"] == "full")
        assert r["config"]["lr_drop"] == LR_DROP.get(r["variant"], 1.0) and "lr_drop" not in r
    by = {(r["variant"], r["seed"]): r for r in runs}
    for name in names[1:]:      # the paired differences, by hand from the runs
        for split in ("valid", "test"):
            p = res["variants"][name]["paired"][split]
            d = [by[(name, s)][f"{split}_ppl"] - by[("full", s)][f"{split}_ppl"] for s in (1, 2)]
            assert p["diffs"] == d and p["mean"] == pytest.approx(sum(d) / 2)
            assert p["half_width"] == pytest.approx(12.706 * abs(d[0] - d[1]) / math.sqrt(2) / math.sqrt(2))
    assert res["variants"] == summarise(runs) and res["checks"] == regime_checks(runs)
    for seed in (1, 2):   # no-finetune is read from the full run of its seed: its training stage, tested before
        full, nof = by[("full", seed)], by[("no-finetune", seed)]
        assert nof["epochs"] == [m for m in full["epochs"] if m["stage"] == "train"]
        assert nof["test_ppl"] == full["before_finetune"]["test_ppl"] and nof["derived_from"] == f"full/seed-{seed}"
    assert res["paper"]["rows"] == [list(r) for r in PAPER_TABLE]
    assert "no-ntasgd" in printed and "verdict" in printed
    assert len(res["study"]["invocations"]) == 1 and res["study"]["invocations"][0]["finished"] == 6

    # the same command again: everything is recorded, nothing is trained, the runs are the same
    stamps = {p: p.stat().st_mtime_ns for p in work.rglob("*.safetensors")}
    printed = run_script(*args)
    assert "8 already recorded, 0 to run" in printed
    assert {p: p.stat().st_mtime_ns for p in work.rglob("*.safetensors")} == stamps
    again = json.loads(out.read_text())["results"]
    assert again["runs"] == runs and len(again["study"]["invocations"]) == 2


@pytest.mark.slow
def test_a_killed_study_continues_from_its_record_on_a_fresh_clone(tmp_path):
    """Start a study, SIGKILL it once the record holds a run, throw the run folders away (a fresh clone has only
    the committed record), start the same command again: the recorded runs are kept as they were and not trained
    again, the others are run, and the record ends complete."""
    work, out = tmp_path / "work", tmp_path / "study.json"
    args = ["--tiny", "--only", "full,no-weight-drop,untied", "--seeds", "1,2", "--work-dir", str(work),
            "--out", str(out)]
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    t0, first = time.time(), []
    while time.time() - t0 < 600:
        if out.is_file():
            first = json.loads(out.read_text())["results"]["runs"]   # atomic writes: always whole
            if first:
                break
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert first, "the study recorded no run within 10 minutes"
    kept = json.loads(out.read_text())["results"]["runs"]
    assert 1 <= len(kept) < 6, "killed too late to test a continuation"
    shutil.rmtree(work)                                                  # a fresh clone: no run folders
    printed = run_script(*args)
    assert f"{len(kept)} already recorded, {6 - len(kept)} to run" in printed
    rec = json.loads(out.read_text())
    runs = rec["results"]["runs"]
    assert {(r["variant"], r["seed"]) for r in runs} == {(n, s) for n in ("full", "no-weight-drop", "untied")
                                                         for s in (1, 2)}
    for r in kept:                                                       # recorded runs are kept verbatim
        assert next(x for x in runs if (x["variant"], x["seed"]) == (r["variant"], r["seed"])) == r
        assert not (work / r["variant"] / f"seed-{r['seed']}").exists()   # and were not trained again
    assert len(rec["results"]["study"]["invocations"]) == 2 and rec["results"]["variants"] == summarise(runs)


def children(pid: int) -> list:
    "The processes whose parent is `pid` (read from /proc)."
    kids = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(p.name))
        except (OSError, IndexError, ValueError):
            pass
    return kids


def alive(pid: int) -> bool:
    "Is `pid` a running process (not gone, not a zombie)?"
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process table in /proc (Linux)")
def test_a_killed_study_leaves_no_worker_training(tmp_path):
    """`kill` the study's process while its two workers train: they stop within seconds, as Ctrl-C would, each run
    left at its last completed epoch with no half-written file, and nothing in the work folder changes after."""
    work, out = tmp_path / "work", tmp_path / "study.json"
    args = ["--tiny", "--set", "epochs=500", "patience=500", "--only", "full,no-weight-drop", "--seeds", "1",
            "--jobs", "2", "--work-dir", str(work), "--out", str(out)]
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    latest = [work / n / "seed-1" / "checkpoints" / "train-latest.json" for n in ("full", "no-weight-drop")]
    t0 = time.time()
    while not all(p.is_file() for p in latest) and time.time() - t0 < 300 and proc.poll() is None:
        time.sleep(0.05)
    workers = children(proc.pid)
    proc.kill()                                     # SIGKILL: the study's process has no say in what follows
    proc.wait()
    assert all(p.is_file() for p in latest), "the two runs did not checkpoint an epoch within 5 minutes"
    assert len(workers) >= 2, workers              # the two workers (and the pool's resource tracker)
    t0 = time.time()
    while any(map(alive, workers)) and time.time() - t0 < 90:
        time.sleep(0.2)
    assert not any(map(alive, workers)), "a worker went on training after the study was killed"
    assert not list(work.rglob("*.tmp"))
    before = snapshot(work)
    time.sleep(3)
    assert snapshot(work) == before
    for p in latest:                                # each run is left at a whole checkpoint, to resume from
        tag = json.loads(p.read_text())["tag"]
        assert (p.parent / f"{tag}.safetensors").is_file() and (p.parent / f"{tag}.state.pt").is_file()


@pytest.mark.slow
def test_a_killed_run_continues_from_its_checkpoint_and_ends_as_an_uninterrupted_one(ptb_corpus, tmp_path):
    # an "interrupted" run of the paper's '- NT-ASGD' (its halved rate must survive the resume): stopped after 3 epochs
    import ablations as runner
    cfg = ablation_config(runner.base_config(True, ["lr=60", "epochs=6"], "cpu"), "no-ntasgd").replace(seed=1)
    run_dir = tmp_path / "killed" / "no-ntasgd" / "seed-1"
    trainer = Trainer(cfg, run_dir, corpus=ptb_corpus, progress=False)
    for _ in range(3):
        trainer.run_epoch()
    del trainer
    outs = {}
    for name in ("killed", "whole"):
        run_script("--tiny", "--set", "lr=60", "epochs=6", "--only", "no-ntasgd", "--seeds", "1", "--work-dir",
                   str(tmp_path / name), "--out", str(tmp_path / f"{name}.json"))
        outs[name] = json.loads((tmp_path / f"{name}.json").read_text())["results"]["runs"][0]
    keys = ("stage", "epoch", "train_ppl", "valid_ppl", "lr", "optimizer", "switched")
    strip = lambda r: [{k: m[k] for k in keys} for m in r["epochs"]]
    assert strip(outs["killed"]) == strip(outs["whole"])
    assert min(m["lr"] for m in outs["whole"]["epochs"]) < 60.0          # the rate did drop in this run
    assert (outs["killed"]["valid_ppl"], outs["killed"]["test_ppl"]) == (outs["whole"]["valid_ppl"],
                                                                         outs["whole"]["test_ppl"])


def test_the_runner_refuses_bad_arguments():
    for args, message in ((("--only", "no-such"),  "unknown variant"), (("--seeds", "1,x"), "comma-separated"),
                          (("--seeds", "1,1"), "each once"), (("--jobs", "0"), ">= 1")):
        out = subprocess.run([sys.executable, str(SCRIPT), "--tiny", *args], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr)


def test_the_runner_refuses_a_damaged_record(tmp_path):
    bad = tmp_path / "study.json"
    bad.write_text("{ not json")
    out = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--only", "full", "--seeds", "1", "--work-dir",
                          str(tmp_path / "w"), "--out", str(bad)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode != 0 and "is damaged" in out.stderr and "git checkout" in out.stderr


# Student's t, two-sided 95%, for 1..10 degrees of freedom, from a printed table (not the module's T_95)
T95_TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def _stats(xs):
    "Mean, sample standard deviation (n - 1), min, max, n: written out, not the module's `spread`."
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return dict(mean=m, std=sd, min=min(xs), max=max(xs), n=len(xs))


def summary_from_the_runs(runs):
    """What a study's summary must say, computed here from its runs alone, with none of the module's functions: per
    variant its seeds and spreads; paired with `full` seed by seed, the differences, mean ± t · s / sqrt(n), and the
    verdict read off the interval (above 0: worse, below 0: better)."""
    value = {(r["variant"], r["seed"], k): float(r[k]) for r in runs for k in ("best_valid_ppl", "valid_ppl", "test_ppl")}
    out = {}
    for name in dict.fromkeys(r["variant"] for r in runs):
        seeds = [r["seed"] for r in runs if r["variant"] == name]
        entry = dict(seeds=seeds, **{k: _stats([value[(name, s, k)] for s in seeds])
                                     for k in ("best_valid_ppl", "valid_ppl", "test_ppl")})
        if name != "full":
            entry["paired"] = {}
            for split in ("valid", "test"):
                both = sorted(s for s in seeds if ("full", s, "test_ppl") in value)
                d = [value[(name, s, f"{split}_ppl")] - value[("full", s, f"{split}_ppl")] for s in both]
                st = _stats(d)
                half = T95_TABLE[len(d) - 1] * st["std"] / math.sqrt(len(d))
                lo, hi = st["mean"] - half, st["mean"] + half
                says = "worse" if lo > 0 else "better" if hi < 0 else "no measurable effect at this size"
                entry["paired"][split] = dict(metric=f"{split}_ppl", seeds=both, diffs=d, **st, half_width=half, lo=lo,
                                              hi=hi, verdict=says)
        out[name] = entry
    return out


def checks_from_the_runs(runs):
    """The regime's two checks computed here from the runs' curves (training stage only): a `full` run converged
    when its best epoch comes before the last fifth of its epochs or that fifth gains under 1% on the best before
    it; an `everything-off` run overfits when its last epoch ends at least 5% above its best."""
    def train_curve(r):
        return [m["valid_ppl"] for m in r["epochs"] if m["stage"] == "train"]
    full = []
    for r in (r for r in runs if r["variant"] == "full"):
        v = train_curve(r)
        n, k = len(v), -(-len(v) // 5)                       # the last fifth, rounded up
        best_epoch, gain = v.index(min(v)) + 1, (min(v[:-k]) - min(v[-k:])) / min(v[:-k])
        full.append(dict(seed=r["seed"], n_epochs=n, tail_from=n - k + 1, best_epoch=best_epoch, tail_gain=gain,
                         converged=best_epoch <= n - k or gain < 0.01))
    off = [dict(seed=r["seed"], best=min(v), last=v[-1], rise=v[-1] / min(v) - 1, overfits=v[-1] >= 1.05 * min(v))
           for r in runs if r["variant"] == "everything-off" for v in [train_curve(r)]]
    return dict(full_converged=full, everything_off_overfits=off)


def assert_same(got, want, where="summary"):
    "Equal structure and keys; numbers equal to 1e-9 relative; everything else exactly."
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for k in want:
            assert_same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(got, bool):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), f"{where}: {got!r} != {want!r}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def test_the_first_principles_summary_agrees_with_the_hand_examples():
    # the same numbers as test_paired_pairs_by_seed_not_by_position and test_summarise_...: by hand there
    runs = [run_rec("full", s, t) for s, t in ((1, 100.0), (2, 110.0), (3, 90.0), (4, 100.0))]
    runs += [run_rec("no-weight-drop", s, t) for s, t in ((3, 95.0), (1, 104.0), (4, 104.0), (2, 113.0))]
    p = summary_from_the_runs(runs)["no-weight-drop"]["paired"]["test"]
    assert p["diffs"] == [4.0, 3.0, 5.0, 4.0] and p["half_width"] == pytest.approx(1.29904, abs=1e-5)
    assert p["verdict"] == "worse"
    curve = lambda *v: [dict(stage="train", epoch=i + 1, valid_ppl=x) for i, x in enumerate(v)]
    c = checks_from_the_runs([dict(variant="full", seed=1, epochs=curve(500, 400, 350, 330, 320, 318, 317, 319,
                                                                          318, 320)),
                              dict(variant="everything-off", seed=1, epochs=curve(500, 380, 399))])
    assert c["full_converged"][0]["tail_from"] == 9 and c["full_converged"][0]["best_epoch"] == 7
    assert c["full_converged"][0]["converged"] and c["everything_off_overfits"][0]["overfits"]


def test_the_recorded_study_is_complete_and_its_summary_is_its_runs():
    path = ROOT / "benchmarks" / "results" / "ablations-cpu.json"
    if not path.is_file():
        pytest.skip("the study has not been recorded yet")
    rec = load_study(path)
    runs = rec["results"]["runs"]
    seeds = rec["config"]["seeds"]
    assert rec["tiny"] is False and len(seeds) >= 3
    variants = {r["variant"] for r in runs}
    assert {(r["variant"], r["seed"]) for r in runs} == {(n, s) for n in variants for s in seeds}   # same seeds
    assert all(r["best_valid_ppl"] == min(m["valid_ppl"] for m in r["epochs"]) for r in runs)
    assert_same(rec["results"]["variants"], summary_from_the_runs(runs), "variants")
    assert_same(rec["results"]["checks"], checks_from_the_runs(runs), "checks")
    if rec["results"].get("upgraded_from") != 1:     # a study of today's regime (format 2 on): every variant, 4 seeds
        assert variants == set(ABLATIONS) and len(seeds) >= 4
        base, regime = rec["config"]["base"], study_config().to_dict()
        differ = {k: (base[k], regime[k]) for k in regime if base[k] != regime[k] and k not in ("device", "data_dir")}
        assert not differ, f"the record was measured in another regime than study_config(): {differ}"


def test_the_regime_line_names_dropouts_that_differ_from_the_papers():
    "A chapter quoting the study says when its dropouts are not the paper's, and which they are."
    study = dict(config=dict(base=study_config().to_dict(), seeds=[1]), results=dict(runs=[]))
    line = describe_regime(study)
    assert "dropouts 0.1/0.06/0.1/0.1/0.5" in line and "the paper's 0.4/0.25/0.4/0.1/0.5" in line and "1 seed (1)" in line
    study["config"]["base"] = dict(study_config().to_dict(), dropout=0.4, dropouth=0.25, dropouti=0.4)
    study["config"]["seeds"] = [1, 2]
    assert "the paper's dropouts" in describe_regime(study) and "2 seeds (1, 2)" in describe_regime(study)
    study["config"]["base"] = {k: v for k, v in study_config().to_dict().items() if k not in ("dropout", "dropoute")}
    line = describe_regime(study)                # a record that leaves a setting out ran the default: 0.4 and 0.1
    assert "dropouts 0.4/0.06/0.1/0.1/0.5" in line, line
