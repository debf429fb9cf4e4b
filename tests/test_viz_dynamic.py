"""The pictures of chapter 09a (awd_edu.viz.dynamic). Expected values come from the inputs by hand, never from the
functions the figures call."""
import math

import pytest
import torch
from slider_checks import check_slider

from awd_edu.viz.dynamic import ppl_grid_figure, token_gain_figure

MARK, PLAIN = "#dd6b20", "#3182ce"


def grid():
    "Three lambdas x three etas; at eta 1e-3 and lambda 0 the run diverged (inf)."
    rows = []
    for lam in (0.02, 0.0, 0.002):                                  # unsorted on purpose
        for eta, ppl in ((1e-5, 99.0), (1e-4, 90.0 - 100 * lam), (1e-3, 120.0)):
            rows.append(dict(eta=eta, lam=lam, ppl=math.inf if (lam, eta) == (0.0, 1e-3) else ppl))
    return rows


def test_one_curve_per_lambda_behind_a_slider_and_the_two_baselines():
    fig = ppl_grid_figure(grid(), static_ppl=100.0, cache_ppl=95.0)
    curves, static, cache = fig.data[:3], fig.data[3], fig.data[4]
    titles = check_slider(fig, (0, 0.002, 0.02), "λ")                                  # sorted
    slider = fig.layout.sliders[0]
    assert slider.steps[slider.active].label == "0.02"                                # the largest lambda first
    for k, step in enumerate(slider.steps):                        # each lambda its own curve, both baselines always
        assert list(step.args[0]["visible"]) == [i == k for i in range(3)] + [True, True]
    assert list(curves[1].x) == [1e-5, 1e-4, 1e-3] and list(curves[1].y) == [99.0, pytest.approx(89.8), 120.0]
    assert curves[0].y[2] is None                                   # inf is not drawn ...
    assert "1 diverged" in titles[0] and not any("diverged" in t for t in titles[1:])  # ... and said, where it is
    assert list(static.y) == [100.0, 100.0] and list(cache.y) == [95.0, 95.0]
    assert fig.layout.xaxis.type == "log"
    # lambda 0.02: 90 - 100 * 0.02 = 88.0, the best, at eta 1e-4
    assert "88.0" in titles[2] and "0.0001" in titles[2]


def test_without_a_cache_there_is_one_baseline():
    fig = ppl_grid_figure(grid(), static_ppl=100.0)
    assert len(fig.data) == 4 and list(fig.layout.sliders[0].steps[1].args[0]["visible"]) == [False, True, False, True]


def test_an_empty_grid_is_refused():
    with pytest.raises(ValueError, match="ppl_grid_figure: grid must hold at least one"):
        ppl_grid_figure([], static_ppl=100.0)


def test_gain_bars_are_static_minus_dynamic_with_the_watched_word_in_orange():
    words = "a b c b d b".split()
    static, dynamic = torch.tensor([1.0, 5.0, 2.0, 5.0, 2.0, 5.0]), torch.tensor([1.5, 5.0, 2.0, 2.0, 2.0, 1.0])
    b = torch.tensor([w == "b" for w in words])
    fig = token_gain_figure(words, static, dynamic, [(0, 6), (2, 5)], marked=[b, b])
    assert list(fig.data[0].y) == [-0.5, 0.0, 0.0, 3.0, 0.0, 4.0]
    assert list(fig.data[0].marker.color) == [PLAIN, MARK, PLAIN, MARK, PLAIN, MARK]
    assert list(fig.data[1].x) == ["2: c", "3: b", "4: d"] and list(fig.data[1].y) == [0.0, 3.0, 0.0]
    titles = check_slider(fig, ("b", "b"), "words", value_in_title=False)         # labelled by the watched word
    # words 0-5: -0.5 + 3 + 4 = +6.5 nats in all, 0 + 3 + 4 = +7.0 on the 3 orange b; words 2-4: +3.0 on 1 b
    assert all(s in titles[0] for s in ("0-5", "+6.5", "+7.0", "3 orange"))
    assert all(s in titles[1] for s in ("2-4", "+3.0", "1 orange"))
    for k, step in enumerate(fig.layout.sliders[0].steps):                         # its own bars; the colour key stays
        assert list(step.args[0]["visible"]) == [k == 0, k == 1, True, True]


@pytest.mark.parametrize("stretches", [[], [(3, 3)], [(0, 7)], [(-1, 2)]])
def test_bad_stretches_are_refused(stretches):
    with pytest.raises(ValueError, match="token_gain_figure: stretches must be"):
        token_gain_figure(list("abcdef"), torch.zeros(6), torch.zeros(6), stretches)


def test_lengths_must_agree():
    with pytest.raises(ValueError, match="must have the same length"):
        token_gain_figure(list("abc"), torch.zeros(3), torch.zeros(2), [(0, 2)])
