"""Chapter 00's pictures (awd_edu.viz.lstm): the six-panel gates figure and the forget-gate-bias slider, widget and twin."""
import math

import numpy as np
import pytest
import torch

pytest.importorskip("plotly")

from awd_edu.lstm import LSTMCell, memory_trace, run_gates
from awd_edu.viz.lstm import forget_bias_explorer, forget_bias_figure, gates_figure


def _acts(forget_bias=4.0, T=12, seed=0):
    torch.manual_seed(seed)
    cell = LSTMCell(3, 8).double()
    with torch.no_grad():
        cell.bias_ih[8:16] += forget_bias                       # forget gates near 1: the cell state piles up
    return run_gates(cell, 3 * torch.randn(T, 2, 3, dtype=torch.float64))


def test_gates_figure_has_one_panel_per_quantity_in_its_own_range():
    acts = _acts()
    fig = gates_figure(acts, [f"w{t}" for t in range(12)], sequence=1)
    assert [a.text.split(" (")[0] for a in fig.layout.annotations] == [
        "input gate i", "forget gate f", "output gate o", "candidate c̃", "hidden state h", "cell state c"]
    for tr, key in zip(fig.data, ["i", "f", "o", "c_tilde", "h", "c"]):
        np.testing.assert_allclose(np.asarray(tr.z, dtype=float), acts[key][:, 1].T.detach().numpy(), atol=5e-4)
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (0, 1)
    assert (fig.layout.coloraxis2.cmin, fig.layout.coloraxis2.cmax) == (-1, 1)


def test_cell_state_scale_holds_every_value():
    "The old figure clipped c at +-1; the scale must reach the largest |c| (here well above 1)."
    acts = _acts(forget_bias=6.0, T=30)
    c_max = acts["c"][:, 0].abs().max().item()
    assert c_max > 2
    fig = gates_figure(acts, ["w"] * 30)
    ax = fig.layout.coloraxis3
    assert ax.cmax >= c_max and ax.cmin == -ax.cmax and ax.cmax < c_max + 0.11
    stops = [s[0] for s in ax.colorscale]
    assert stops[0] == 0 and stops[-1] == 1 and stops == sorted(stops)
    assert f"{ax.cmax:g}" in fig.layout.annotations[5].text


def test_gates_figure_checks_the_words():
    with pytest.raises(ValueError, match="one word per time step"):
        gates_figure(_acts(), ["too", "few"])


def test_gates_figure_is_styled_for_any_width():
    fig = gates_figure(_acts(), [f"w{t}" for t in range(12)], title="A<br>B")
    assert fig.layout.width is None and fig.layout.autosize and fig.layout.title.text == "A<br>B"
    doms = [fig.layout[f"yaxis{k}"].domain for k in ("", "2", "3", "4", "5", "6")]
    assert all(a[0] > b[1] for a, b in zip(doms, doms[1:]))           # stacked, top to bottom


def test_forget_bias_twin_slider_rewrites_the_title_text_not_the_title():
    biases = (-1.0, 0.0, 2.5)
    fig = forget_bias_figure(biases, steps=30, active=1)
    (slider,) = fig.layout.sliders
    assert len(fig.data) == 2 * len(biases) and len(slider.steps) == len(biases) and slider.active == 1
    for n, (b, step) in enumerate(zip(biases, slider.steps)):
        assert set(step.args[1]) == {"title.text", "xaxis.range"}    # never "title": plotly.js 4 would erase it
        f = 1 / (1 + math.exp(-b))
        assert f"f = {f:.3f}" in step.args[1]["title.text"]
        assert [k for k, v in enumerate(step.args[0]["visible"]) if v] == [2 * n, 2 * n + 1]
        np.testing.assert_allclose(fig.data[2 * n].y, [f ** t for t in range(30)], atol=1e-4)
        half_x = fig.data[2 * n + 1].x[0]
        assert abs(half_x - (1 + math.log(0.5) / math.log(f))) < 1e-9   # c_t = 1/2 at t = 1 + half-life
    assert [tr.visible for tr in fig.data] == [False, False, True, True, False, False]
    with pytest.raises(ValueError, match="active"):
        forget_bias_figure(biases, active=3)


def test_forget_bias_widget_slider_redraws_curve_marker_and_title():
    ex = forget_bias_explorer(0.0, steps=20)
    assert ex.figure.data[0].y[1] == 0.5
    ex.sliders["forget_bias"].value = 2.0
    np.testing.assert_allclose(ex.figure.data[0].y, memory_trace(2.0, 20).numpy(), atol=1e-4)
    f = 1 / (1 + math.exp(-2.0))
    assert abs(ex.figure.data[1].x[0] - (1 + math.log(0.5) / math.log(f))) < 1e-9
    assert "b_f = +2:" in ex.figure.layout.title.text and f"{f:.3f}" in ex.figure.layout.title.text


def test_the_half_life_marker_stays_on_the_figure_at_every_bias():
    "However late the half-life, each slider step's x-range holds the dotted marker, and the curve reaches it."
    biases = (0.0, 3.0, 5.0, 6.0)                                     # half-lives 1, 14, 103, 279 steps
    fig = forget_bias_figure(biases, steps=60, active=0)
    for n, step in enumerate(fig.layout.sliders[0].steps):
        x0, x1 = step.args[1]["xaxis.range"]
        curve, marker = fig.data[2 * n], fig.data[2 * n + 1]
        assert x0 < marker.x[0] < x1 and curve.x[-1] >= marker.x[0], (biases[n], step.args[1]["xaxis.range"])
        assert x1 >= 61                                               # never fewer than the steps asked for
    assert tuple(fig.layout.xaxis.range) == tuple(fig.layout.sliders[0].steps[0].args[1]["xaxis.range"])
    ex = forget_bias_explorer(0.0, steps=60)
    ex.sliders["forget_bias"].value = 6.0
    x0, x1 = ex.figure.layout.xaxis.range
    assert x0 < ex.figure.data[1].x[0] < x1 and ex.figure.data[0].x[-1] >= ex.figure.data[1].x[0]
    assert len(ex.figure.data[0].x) == len(ex.figure.data[0].y)
