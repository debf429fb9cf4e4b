"""Tests of chapter 05's toy run and its explorers: the widget reacts to its sliders, the kernel-free twin has one
slider step per coefficient. A synthetic token stream keeps them fast and independent of the PTB files."""
import numpy as np
import pytest
import torch

from awd_edu.regularization import ar_tar_explorer, ar_tar_figure, toy_lm_data, train_toy_lm


@pytest.fixture(scope="module")
def tokens():
    g = torch.Generator().manual_seed(0)
    probs = 1.0 / torch.arange(1, 501, dtype=torch.float)          # Zipf-like over 500 word types
    return torch.multinomial(probs, 40_000, replacement=True, generator=g)


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_toy_lm_data_shapes_and_vocab(tokens):
    train, valid = toy_lm_data(tokens, vocab=50)
    assert train.shape == (2000, 16) and valid.shape == (1000, 8)
    assert train.max() == 49 and train.min() == 0                 # ranks, the tail merged into id 49
    with pytest.raises(ValueError, match="tokens"):
        toy_lm_data(tokens[:100])


def test_train_toy_lm_alpha_shrinks_beta_smooths(tokens):
    train, valid = toy_lm_data(tokens)
    base = train_toy_lm(train, valid, 0, 0, steps=40)
    ar = train_toy_lm(train, valid, 8, 0, steps=40)
    tar = train_toy_lm(train, valid, 0, 8, steps=40)
    assert base["raw"].dim() == 3 and base["raw"].shape[1:] == (8, 64)
    assert ar["magnitude"] < base["magnitude"] / 2
    assert tar["roughness"] < base["roughness"] / 2
    state = torch.get_rng_state()
    again = train_toy_lm(train, valid, 0, 0, steps=40)
    assert again["val_loss"] == base["val_loss"]                   # seeded: a run replays exactly
    assert torch.equal(torch.get_rng_state(), state)               # ... without touching the global generator


def test_widget_sliders_retrain_and_redraw(tokens):
    ex = ar_tar_explorer(tokens, steps=25, alphas=(0, 8), betas=(0, 8))
    assert set(ex.sliders) == {"alpha", "beta"} and ex.buttons == {}
    assert len(ex.figure.data) == 4
    y0 = np.concatenate([np.array(tr.y) for tr in ex.figure.data])
    ex.sliders["alpha"].value = 8
    y1 = np.concatenate([np.array(tr.y) for tr in ex.figure.data])
    assert (8, 0) in ex.runs and "alpha = 8" in ex.figure.layout.title.text
    assert np.mean(y1 ** 2) < np.mean(y0 ** 2) / 2                 # the drawn hidden state shrank
    ex.sliders["alpha"].value = 0
    ex.sliders["beta"].value = 8
    y2 = [np.array(tr.y) for tr in ex.figure.data]
    rough = lambda ys: np.mean([np.mean(np.diff(y) ** 2) / np.mean(y ** 2) for y in ys])
    assert rough(y2) < rough([np.array(tr.y) for tr in ar_tar_explorer(tokens, steps=25, alphas=(0,), betas=(0,)).figure.data])
    ex.sliders["beta"].value = 0                                   # back to a cached run: the first picture again
    assert np.allclose(np.concatenate([np.array(tr.y) for tr in ex.figure.data]), y0)


def test_widget_handler_errors_are_not_swallowed(tokens, monkeypatch):
    ex = ar_tar_explorer(tokens, steps=5, alphas=(0, 1), betas=(0,))
    import awd_edu.regularization as reg

    def boom(*a, **k):
        raise RuntimeError("training failed")
    monkeypatch.setattr(reg, "train_toy_lm", boom)
    with pytest.raises(RuntimeError, match="training failed"):
        ex.sliders["alpha"].value = 1


def test_kernel_free_twin(tokens):
    runs = {}
    fig = ar_tar_figure("beta", (0, 4), runs=runs, tokens=tokens, steps=10)
    assert set(runs) == {(0, 0), (0, 4)}                          # missing runs were trained into the cache
    assert len(fig.data) == 8 and len(fig.layout.sliders[0].steps) == 2
    assert sum(bool(tr.visible) for tr in fig.data) == 4
    step = fig.layout.sliders[0].steps[1]
    assert step.method == "update" and list(step.args[0]["visible"]) == [False] * 4 + [True] * 4
    assert "beta = 4" in step.args[1]["title.text"]
    with pytest.raises(ValueError, match="kind"):
        ar_tar_figure("gamma", runs=runs)
