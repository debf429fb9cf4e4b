"""The pictures of chapter 08f (awd_edu.viz.ablations): what they draw is the record's paired statistics and curves,
checked on a small made-up study whose differences are worked out by hand in the comments."""
import math

import pytest

from awd_edu.ablations import summarise
from awd_edu.viz.ablations import ablation_curves, ablation_paired

# full: test 200, 220 on seeds 1, 2; untied: +10 and +14 (mean 12, s = 2*sqrt(2), half-width 12.706*2 = 25.41);
# no-weight-drop: +2 and -2 (mean 0). Validation = test + 20 in every run.
TESTS = {"full": (200.0, 220.0), "untied": (210.0, 234.0), "no-weight-drop": (202.0, 218.0)}


def made_up_study(finetune=True):
    runs = []
    for name, tests in TESTS.items():
        for seed, t in zip((1, 2), tests):
            epochs = [dict(stage="train", epoch=e, valid_ppl=t + 100 / e, train_ppl=t - 50 + 10 * e) for e in (1, 2, 3)]
            if finetune and name != "no-weight-drop":
                epochs.append(dict(stage="finetune", epoch=1, valid_ppl=t + 30, train_ppl=t - 20))
            runs.append(dict(variant=name, seed=seed, epochs=epochs, test_ppl=t, valid_ppl=t + 20,
                             best_valid_ppl=min(m["valid_ppl"] for m in epochs)))
    return dict(results=dict(runs=runs))


def test_paired_figure_draws_the_paired_means_and_intervals_in_percent_of_the_full_model():
    fig = ablation_paired(made_up_study())
    paper_valid, paper_test, valid, test = fig.data
    assert list(test.y) == ["no-weight-drop", "untied"] == list(paper_test.y)      # table order, top to bottom
    assert list(test.x) == pytest.approx([0.0, 100 * 12 / 210])                     # full's mean test ppl: 210
    assert list(valid.x) == pytest.approx([0.0, 100 * 12 / 230])                    # full's mean valid ppl: 230
    assert list(test.error_x.array) == pytest.approx([100 * 12.706 * 2 / 210, 100 * 12.706 * 2 / 210])
    assert paper_test.x[0] == pytest.approx(100 * (68.9 - 57.3) / 57.3) and paper_test.x[1] is None   # untied: none
    assert [c[4] for c in test.customdata] == ["no measurable effect at this size"] * 2
    assert fig.layout.width is None and fig.layout.title.text


def test_paired_figure_recomputes_the_summary_from_the_runs():
    study = made_up_study()
    study["results"]["variants"] = {"stale": {}}          # a stale stored summary is never drawn
    assert list(ablation_paired(study).data[3].y) == ["no-weight-drop", "untied"]
    assert summarise(study["results"]["runs"])["untied"]["paired"]["test"]["mean"] == 12.0


def test_curves_have_train_dotted_and_valid_solid_and_every_menu_entry_covers_every_trace():
    fig = ablation_curves(made_up_study())
    n = len(fig.data)
    assert n == 3 * (2 + 2 * 2)                            # per variant: two means, two seeds x two kinds
    for t in fig.data:
        assert t.line.dash == ("dot" if t.name.endswith("train") else "solid"), t.name
    buttons = fig.layout.updatemenus[0].buttons
    assert all(len(b.args[0]["visible"]) == n for b in buttons)
    first = buttons[0].args[0]["visible"]
    assert [t.name for t, v in zip(fig.data, first) if v] == ["full", "untied", "no-weight-drop"]
    untied = dict(zip([t.name for t in fig.data], next(b for b in buttons if b.label == "untied").args[0]["visible"]))
    assert [k for k, v in untied.items() if v] == ["full", "full, train", "untied", "untied, train", "untied, seed 1",
                                                   "untied, seed 1, train", "untied, seed 2", "untied, seed 2, train"]


def test_curves_put_fine_tuning_after_a_gap_and_average_over_seeds():
    fig = ablation_curves(made_up_study())
    full_valid = fig.data[0]
    # epochs 1-3 of training, then fine-tuning epoch 1 at x = 3 + 1 + 1 = 5; mean over seeds: 210 + 100 / e, then 240
    assert list(full_valid.x) == [1, 2, 3, 5]
    assert list(full_valid.y) == pytest.approx([310.0, 260.0, 210 + 100 / 3, 240.0])
    assert len(fig.layout.shapes) == 1 and fig.layout.shapes[0].x0 == 4
    assert len(ablation_curves(made_up_study(finetune=False)).layout.shapes) == 0    # no fine-tuning: no marker
    assert math.isclose(fig.data[1].y[0], 210 - 40)          # the training curve's mean, epoch 1
