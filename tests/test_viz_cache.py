"""The pictures of chapter 09 (awd_edu.viz.cache). Expected values come from hand computations or from the readable
loop `cache_nll_loop`, never from the functions the figures themselves call."""
import math

import plotly.graph_objects as go
import pytest
import torch
from slider_checks import check_slider

from awd_edu.cache import cache_nll_loop
from awd_edu.viz.cache import attention_figure, cache_explorer, ppl_sweep_figure

HIT, MISS = "#dd6b20", "#3182ce"


@pytest.fixture(scope="module")
def stream():
    "logits (T, V), their log p_model of the true next words, keys, next words, itos."
    g = torch.Generator().manual_seed(14)
    T, V = 160, 10
    logits, hiddens = torch.randn(T, V, generator=g), torch.randn(T, 6, generator=g)
    targets = torch.randint(0, V, (T,), generator=g)
    log_p_model = torch.log_softmax(logits.double(), -1).gather(1, targets[:, None])[:, 0]
    return logits, log_p_model, hiddens, targets, [f"w{i}" for i in range(V)]


def loop_ppl(logits, hiddens, targets, W, theta, lam):
    return cache_nll_loop(logits, hiddens, targets, W, theta, lam).mean().exp().item()


def test_attention_bars_by_hand():
    # theta = 0: uniform attention 1/W. Next words a b a c a b a (ids 0 1 0 2 0 1 0); at t = 6 the stored values
    # are positions 2..5, a c a b, and the true next word is a: orange, blue, orange, blue, p_cache 2/4.
    targets, itos = torch.tensor([0, 1, 0, 2, 0, 1, 0]), ["a", "b", "c"]
    fig = attention_figure(torch.randn(7, 3), targets, itos, [4, 6], window=4, theta=0.0)
    bars = fig.data[1]
    assert list(bars.y) == [0.25] * 4 and list(bars.marker.color) == [HIT, MISS, HIT, MISS]
    assert bars.customdata[-1] == "c a → b"                        # stored position 5: x_4 x_5 → x_6
    assert [tr.name for tr in fig.data[2:]] == ["value = the true next word", "another word"]  # the colour key
    titles = check_slider(fig, ["a", "a"], "t = ", value_in_title=False)   # labelled by the next word, a both times
    assert "t = 4" in titles[0] and "t = 6" in titles[1] and titles[1].endswith("p_cache = 0.5")
    for k, step in enumerate(fig.layout.sliders[0].steps):                # its own bars; the colour key stays
        assert list(step.args[0]["visible"]) == [k == 0, k == 1, True, True]


def test_attention_figure_on_a_stream(stream):
    logits, log_p_model, hiddens, targets, itos = stream
    W, positions = 50, [60, 100, 159]
    fig = attention_figure(hiddens, targets, itos, positions, window=W, theta=1.0, lambdasm=0.3, log_p_model=log_p_model)
    assert len(fig.data) == 3 + 2 and len(fig.layout.sliders[0].steps) == 3
    assert [tr.visible for tr in fig.data[:3]] == [True, False, False]
    for tr, t in zip(fig.data, positions):
        assert len(tr.y) == W and sum(tr.y) == pytest.approx(1.0, abs=1e-3)
        p_cache = sum(y for y, c in zip(tr.y, tr.marker.color) if c == HIT)
        # the loop's loss at t with lambda 1 is -log p_cache(x_{t+1})
        assert p_cache == pytest.approx(math.exp(-cache_nll_loop(logits, hiddens, targets, W, 1.0, 1.0)[t].item()),
                                        abs=1e-3)
        assert tr.customdata[-1].endswith("→ " + itos[int(targets[t - 1])])   # the last stored value is x_t
    mixed = math.exp(-cache_nll_loop(logits, hiddens, targets, W, 1.0, 0.3)[60].item())
    assert f"mixed p = {mixed:.3g} (λ = 0.3)" in fig.layout.title.text


def test_ppl_sweep_by_hand():
    # p_model 0.1 everywhere (perplexity 10); theta 0 and values alternating, so p_cache = 0.5 at each of the eight
    # cached positions (W = 2, T = 10): at lambda 0.5 each has p = 0.5*0.5 + 0.5*0.1 = 0.3
    fig = ppl_sweep_figure(torch.full((10,), math.log(0.1), dtype=torch.float64), torch.randn(10, 3), torch.tensor([0, 1] * 5), window=2,
                           thetas=(0.0,), lambdas=(0.0, 0.5))
    assert fig.data[0].y[0] == pytest.approx(10)
    assert fig.data[0].y[1] == pytest.approx(math.exp((2 * math.log(10) + 8 * math.log(1 / 0.3)) / 10))
    assert fig.data[1].name == "model alone" and fig.data[1].y == pytest.approx((10, 10))


def test_ppl_sweep_figure_matches_the_loop(stream):
    logits, log_p_model, hiddens, targets, _ = stream
    thetas, lambdas = (0.0, 1.0, 3.0), (0.0, 0.2, 0.5)
    fig = ppl_sweep_figure(log_p_model, hiddens, targets, window=40, thetas=thetas, lambdas=lambdas)
    assert len(fig.data) == 4
    check_slider(fig, thetas, "θ")                                      # grid, curve and title move together
    for k, theta in enumerate(thetas):
        for j, lam in enumerate(lambdas):
            assert fig.data[k].y[j] == pytest.approx(loop_ppl(logits, hiddens, targets, 40, theta, lam), rel=1e-9)
    for k, step in enumerate(fig.layout.sliders[0].steps):              # its own curve; the model alone stays
        assert list(step.args[0]["visible"]) == [i == k for i in range(3)] + [True]
    assert fig.layout.width is None and fig.layout.title.x == 0


def test_explorer_sliders_update_the_figure(stream):
    logits, log_p_model, hiddens, targets, itos = stream
    W = 50
    ex = cache_explorer(log_p_model, hiddens, targets, itos, window=W, theta=2.0, lambdasm=0.1, position=120)
    assert set(ex.sliders) == {"position", "theta", "lambdasm"} and ex.buttons == {}
    assert isinstance(ex.figure, go.FigureWidget) and len(ex.figure.data) == 4 + 2
    assert max(ex.figure.data[0].y) > 1.5 / W
    ex.sliders["theta"].value = 0.0                                         # uniform attention
    assert max(abs(y - 1 / W) for y in ex.figure.data[0].y) < 1e-6
    assert ex.figure.data[1].y[4] == pytest.approx(loop_ppl(logits, hiddens, targets, W, 0.0, 0.1), rel=1e-9)
    ex.sliders["theta"].value = 2.0
    ex.sliders["position"].value = 70
    assert ex.figure.data[0].customdata[-1].endswith("→ " + itos[int(targets[69])])
    ex.sliders["lambdasm"].value = 0.4
    assert ex.figure.data[3].x == (0.4,)
    assert ex.figure.data[3].y[0] == pytest.approx(loop_ppl(logits, hiddens, targets, W, 2.0, 0.4), rel=1e-9)
    assert ex.figure.layout.title.text.startswith("t = 70: next word") and ex.figure.layout.title.x == 0


def test_explorer_rejects_a_stream_shorter_than_the_window(stream):
    _, log_p_model, hiddens, targets, itos = stream
    with pytest.raises(ValueError, match="longer than window"):
        cache_explorer(log_p_model, hiddens, targets, itos, window=500)
