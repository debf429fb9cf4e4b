"""Chapter 08e's picture (awd_edu.viz.generate): the next word's distribution at a temperature, as a widget and as its
kernel-free plotly twin, both drawn from `temperature_softmax`, the distribution `sample_words` draws from."""
import math

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from awd_edu.generate import next_word_logits, temperature_softmax
from awd_edu.viz.generate import temperature_explorer, temperature_figure

V = 40
ITOS = ["<unk>", "<eos>"] + [f"w{i}" for i in range(V - 2)]


def scores(seed=0):
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(V, generator=g)


def entropy(p):
    p = np.asarray(p, dtype=float)
    return float(-(p * np.log(p)).sum())


def test_twin_is_a_plain_figure_whose_slider_moves_bars_and_title():
    temps = (0.5, 1.0, 2.0, 4.0)
    fig = temperature_figure(scores(), ITOS, "the", temperatures=temps, k=6, active=1)
    assert type(fig) is go.Figure and len(fig.data) == len(temps) + 1          # one bar trace per T, the T = 1 markers
    (slider,) = fig.layout.sliders
    assert len(slider.steps) == len(temps) and slider.active == 1
    titles = []
    for n, step in enumerate(slider.steps):
        assert step.method == "update" and set(step.args[1]) == {"title.text"}  # never "title": plotly.js 4 erases it
        assert [j for j, v in enumerate(step.args[0]["visible"]) if v] == [n, len(temps)]
        titles.append(step.args[1]["title.text"])
    assert len(set(titles)) == len(temps)                                        # each step retitles the figure
    bars = [np.asarray(tr.y, dtype=float) for tr in fig.data[:len(temps)]]
    for a, b in zip(bars, bars[1:]):
        assert not np.allclose(a, b)                                             # and shows other data
        assert a[0] > b[0] and a[-1] < b[-1]                  # hotter: less on the top word, more on the rest
    assert len(fig.to_json()) < 100_000


def test_bars_are_the_softmax_at_t_and_the_rest_sums_to_one():
    s = scores(1)
    fig = temperature_figure(s, ITOS, temperatures=(0.7, 1.0), k=5, active=0)
    for tr, T in zip(fig.data[:2], (0.7, 1.0)):
        p = torch.softmax(s.double() / T, -1)
        top = p.sort(descending=True).values[:5].numpy()
        np.testing.assert_allclose(tr.y[:5], top, atol=1e-5)
        assert abs(sum(tr.y) - 1) < 1e-4 and len(tr.x) == 6                       # 5 words and "the other 35"
    order = s.argsort(descending=True)[:5].tolist()
    assert list(fig.data[0].x[:5]) == [ITOS[i].replace("<", "&lt;").replace(">", "&gt;") for i in order]
    np.testing.assert_allclose(fig.data[-1].y, fig.data[1].y)                  # the markers: the model's own T = 1


def test_entropy_in_the_title_grows_with_the_temperature():
    s = scores(2)
    temps = (0.3, 1.0, 3.0)
    fig = temperature_figure(s, ITOS, temperatures=temps, k=4, active=0)
    choices = []
    for T, step in zip(temps, fig.layout.sliders[0].steps):
        H = entropy(temperature_softmax(s, T).numpy())
        text = step.args[1]["title.text"]
        assert f"T = {T:g}" in text
        choices.append(float(text.split("among ")[1].split(" words")[0].replace(",", "")))
        assert abs(choices[-1] - math.exp(H)) <= 0.05 * math.exp(H) + 0.05
    assert choices == sorted(choices)


def test_widget_slider_redraws_bars_and_title():
    s = scores(3)
    ex = temperature_explorer(s, ITOS, "the", temperature=1.0, k=6)
    assert isinstance(ex.figure, go.FigureWidget) and set(ex.sliders) == {"temperature"}
    before_y, before_title = np.asarray(ex.figure.data[0].y), ex.figure.layout.title.text
    ex.sliders["temperature"].value = 0.4
    after_y = np.asarray(ex.figure.data[0].y)
    assert after_y[0] > before_y[0] and ex.figure.layout.title.text != before_title
    p = torch.softmax(s.double() / 0.4, -1).sort(descending=True).values[:6].numpy()
    np.testing.assert_allclose(after_y[:6], p, atol=1e-5)


def test_bad_arguments_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="itos"):
        temperature_figure(scores(), ITOS[:-1])
    with pytest.raises(ValueError, match="k must be"):
        temperature_figure(scores(), ITOS, k=V)
    with pytest.raises(ValueError, match="active"):
        temperature_figure(scores(), ITOS, temperatures=(1.0, 2.0), active=2)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        temperature_figure(scores(), ITOS, temperatures=(0.0, 1.0), active=1)


def test_next_word_logits_are_what_the_model_scores_after_the_prompt():
    from awd_edu.data import Vocab
    from awd_edu.model import AWDLSTM
    torch.manual_seed(0)
    vocab = Vocab(ITOS)
    model = AWDLSTM(V, emb_size=8, hidden_size=8, n_layers=1).train()
    logits = next_word_logits(model, vocab, "w1 w2")
    assert logits.shape == (V,) and logits.dtype == torch.float64 and model.training   # mode restored
    model.eval()
    with torch.no_grad():
        expected = model(torch.tensor([[vocab["w1"]], [vocab["w2"]]])).logits[-1, 0].double()
    assert torch.equal(logits, expected)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        next_word_logits(model, vocab, "Zebra")
