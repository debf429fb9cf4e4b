"""The pictures of chapter 05 (awd_edu.viz.regularization): the measures figure, the widget that retrains on a slider
move, and its kernel-free twin. A synthetic token stream keeps them independent of the PTB files."""
import numpy as np
import pytest
import torch
from slider_checks import check_slider

from awd_edu.viz.regularization import ar_tar_explorer, ar_tar_figure, ar_tar_measures_figure


@pytest.fixture(scope="module")
def tokens():
    g = torch.Generator().manual_seed(0)
    probs = 1.0 / torch.arange(1, 501, dtype=torch.float)          # Zipf-like over 500 word types
    return torch.multinomial(probs, 40_000, replacement=True, generator=g)


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest: one torch thread for the module


def fake_run(magnitude, roughness, val_loss, T=60, H=4):
    "A made-up run: a raw state `(T, 8, H)` whose first column's unit u is the constant u / 10."
    raw = (torch.arange(H, dtype=torch.float) / 10).expand(T, 8, H).clone()
    return dict(raw=raw, magnitude=magnitude, roughness=roughness, val_loss=val_loss)


def test_measures_figure_draws_the_runs_numbers():
    runs = {(0, 0): fake_run(1.0, 0.5, 3.0), (4, 0): fake_run(0.1, 0.4, 3.1), (0, 4): fake_run(0.8, 0.05, 3.2)}
    fig = ar_tar_measures_figure(runs, alphas=(0, 4), betas=(0, 4))
    assert [tr.name for tr in fig.data] == ["raising alpha"] * 3 + ["raising beta"] * 3
    assert [list(tr.y) for tr in fig.data] == [[1.0, 0.1], [0.5, 0.4], [3.0, 3.1], [1.0, 0.8], [0.5, 0.05], [3.0, 3.2]]
    assert fig.layout.yaxis.type == "log" and fig.layout.width is None
    assert "AR" in fig.layout.title.text and "TAR" in fig.layout.title.text   # names both measures' pieces


def test_twin_from_cached_runs():
    runs = {(0, 0): fake_run(1.0, 0.5, 3.0), (0, 4): fake_run(0.8, 0.05, 3.2)}
    fig = ar_tar_figure("beta", (0, 4), runs=runs, units=(1, 3), span=5)
    assert len(fig.data) == 4 and [list(tr.y) for tr in fig.data[:2]] == [[0.1] * 5, [0.3] * 5]
    titles = check_slider(fig, (0, 4), "beta")                            # grid, traces and title move together
    for k, step in enumerate(fig.layout.sliders[0].steps):               # each run its two units
        assert list(step.args[0]["visible"]) == [k == 0, k == 0, k == 1, k == 1]
    assert all(n in titles[1] for n in ("0.8000", "0.050", "3.200"))      # the (0, 4) run's numbers, as made up
    with pytest.raises(ValueError, match="kind"):
        ar_tar_figure("gamma", runs=runs)


def test_twin_trains_missing_runs(tokens):
    runs = {}
    fig = ar_tar_figure("beta", (0, 4), runs=runs, tokens=tokens, steps=10)
    assert set(runs) == {(0, 0), (0, 4)}                          # missing runs were trained into the cache
    assert len(fig.data) == 8 and len(fig.layout.sliders[0].steps) == 2
    assert sum(tr.visible is not False for tr in fig.data) == 4


def test_widget_sliders_retrain_and_redraw(tokens):
    ex = ar_tar_explorer(tokens, steps=25, alphas=(0, 8), betas=(0, 8))
    assert set(ex.sliders) == {"alpha", "beta"} and ex.buttons == {}
    assert len(ex.figure.data) == 4
    y0 = np.concatenate([np.array(tr.y) for tr in ex.figure.data])
    ex.sliders["alpha"].value = 8
    y1 = np.concatenate([np.array(tr.y) for tr in ex.figure.data])
    assert (8, 0) in ex.runs and ex.figure.layout.title.text.startswith("alpha = 8, beta = 0:")
    assert np.mean(y1 ** 2) < np.mean(y0 ** 2) / 2                 # the drawn hidden state shrank
    ex.sliders["alpha"].value = 0
    ex.sliders["beta"].value = 8
    y2 = [np.array(tr.y) for tr in ex.figure.data]
    rough = lambda ys: np.mean([np.mean(np.diff(y) ** 2) / np.mean(y ** 2) for y in ys])
    assert rough(y2) < rough(np.split(y0, 4))                      # ... and with beta it is smoother
    ex.sliders["beta"].value = 0                                   # back to a cached run: the first picture again
    assert np.allclose(np.concatenate([np.array(tr.y) for tr in ex.figure.data]), y0)
    assert ex.figure.layout.title.x == 0


def test_widget_handler_errors_are_not_swallowed(tokens, monkeypatch):
    ex = ar_tar_explorer(tokens, steps=5, alphas=(0, 1), betas=(0,))
    import awd_edu.viz.regularization as viz

    def boom(*a, **k):
        raise RuntimeError("training failed")
    monkeypatch.setattr(viz, "train_toy_lm", boom)
    with pytest.raises(RuntimeError, match="training failed"):
        ex.sliders["alpha"].value = 1
