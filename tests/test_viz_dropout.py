"""Chapter 02's pictures (awd_edu.viz.dropout): the widget (sliders, resample button), its kernel-free plotly twin,
the smoothness figure, and the torch helpers behind them.

Heatmaps hold h~ as (features, time): a row is one feature across the sentence, a column one word's vector.
"""
import numpy as np
import plotly.graph_objects as go
import pytest
import torch

import awd_edu.viz.dropout as dropout
from awd_edu.viz.dropout import (DEMO_SENTENCE, demo_sequence, dropout_explorer, dropout_figure, smoothness_figure,
                                 three_dropouts)

NAMES = ["standard", "locked", "embedding"]  # the panels, left to right
WORDS = DEMO_SENTENCE.split()


def zs(fig):
    return [np.array(tr.z, dtype=float) for tr in fig.data]


def zero_frac(z):
    return float((z == 0).mean())


def whole_rows(z):
    "Every feature (row) is zero at all time steps or at none."
    zero = z == 0
    return bool((zero.all(1) | ~zero.any(1)).all())


def whole_columns(z):
    "Every word vector (column) is all zeros or has none."
    zero = z == 0
    return bool((zero.all(0) | ~zero.any(0)).all())


def same_fate_per_word(z):
    "A word type's column is zero at all its positions or at none."
    dropped = (z == 0).all(0)
    return all(len({bool(dropped[t]) for t, w in enumerate(WORDS) if w == word}) == 1 for word in set(WORDS))


def check_structure(k, z):
    "The structure each panel must show."
    if NAMES[k] == "locked":
        assert whole_rows(z), "locked dropout: a feature dropped at some steps only"
    if NAMES[k] == "embedding":
        assert whole_columns(z), "embedding dropout: part of a word vector dropped"
        assert same_fate_per_word(z), "embedding dropout: a word dropped at some of its positions only"


# ---------------------------------------------------------------------------------------------------------------
# The widget

def test_explorer_exposes_sliders_buttons_figure():
    ex = dropout_explorer()
    assert set(ex.sliders) == set(NAMES) and set(ex.buttons) == {"resample"}
    assert isinstance(ex.figure, go.FigureWidget) and len(ex.figure.data) == 3
    for z in zs(ex.figure):
        assert z.shape == (10, len(WORDS))                                # (features, time)
    assert ex.figure in ex.children


@pytest.mark.parametrize("k", range(3))
def test_each_slider_moves_only_its_panel(k):
    name = NAMES[k]
    ex = dropout_explorer(p_standard=0.3, p_locked=0.3, p_embed=0.3)
    before = zs(ex.figure)
    fracs = {}
    for p in (0.0, 0.3, 0.8):
        ex.sliders[name].value = p
        now = zs(ex.figure)
        for j in range(3):
            if j != k:
                assert np.array_equal(now[j], before[j]), f"moving {name} changed the {NAMES[j]} panel"
        check_structure(k, now[k])
        fracs[p] = zero_frac(now[k])
        assert f"p = {p:.2f}" in ex.figure.layout.annotations[k].text
    assert fracs[0.0] == 0                                                # p = 0 drops nothing
    assert fracs[0.0] < fracs[0.3] < fracs[0.8]                           # the zero fraction tracks p
    assert fracs[0.8] > 0.5


def test_standard_panel_changes_at_every_step():
    ex = dropout_explorer()
    ex.sliders["standard"].value = 0.5
    z = zs(ex.figure)[0]
    assert not whole_rows(z) and not whole_columns(z)                     # scattered, not locked to rows/columns
    assert abs(zero_frac(z) - 0.5) < 0.2


def test_locked_panel_drops_whole_rows():
    ex = dropout_explorer()
    ex.sliders["locked"].value = 0.6
    z = zs(ex.figure)[1]
    assert whole_rows(z) and (z == 0).all(1).any()                         # some features gone at every step
    assert not whole_columns(z)


def test_embedding_panel_drops_words_everywhere():
    ex = dropout_explorer()
    ex.sliders["embedding"].value = 0.6
    z = zs(ex.figure)[2]
    assert whole_columns(z) and same_fate_per_word(z) and (z == 0).all(0).any()


def test_resample_button_redraws_every_mask():
    ex = dropout_explorer(p_standard=0.5, p_locked=0.5, p_embed=0.5)
    before = zs(ex.figure)
    ex.buttons["resample"].click()
    after = zs(ex.figure)
    for k in range(3):
        assert not np.array_equal((before[k] == 0), (after[k] == 0)), f"{NAMES[k]} mask not redrawn"
        check_structure(k, after[k])
    assert [s.value for s in ex.sliders.values()] == [0.5, 0.5, 0.5]


def test_kept_cells_are_scaled():
    ex = dropout_explorer(p_standard=0.0, p_locked=0.0, p_embed=0.0)
    base = zs(ex.figure)[1]
    ex.sliders["locked"].value = 0.5
    z = zs(ex.figure)[1]
    kept = z != 0
    np.testing.assert_allclose(z[kept], 2 * base[kept], atol=2e-3)       # 1/(1-p) = 2 (figure rounds to 1e-3)


def test_a_failing_callback_is_not_swallowed(monkeypatch):
    ex = dropout_explorer()

    def broken(*args, **kwargs):
        raise RuntimeError("broken dropout")

    monkeypatch.setattr(dropout, "three_dropouts", broken)
    with pytest.raises(RuntimeError, match="broken dropout"):
        ex.sliders["locked"].value = 0.7
    with pytest.raises(RuntimeError, match="broken dropout"):
        ex.resample()                                                      # the button's handler


# ---------------------------------------------------------------------------------------------------------------
# The kernel-free twin

def test_twin_is_a_plain_figure_with_a_slider():
    ps = (0.0, 0.2, 0.4, 0.6, 0.8)
    fig = dropout_figure(ps=ps, active=2)
    assert type(fig) is go.Figure and len(fig.data) == 3 * len(ps)
    (slider,) = fig.layout.sliders
    assert len(slider.steps) == len(ps) and slider.active == 2
    assert [tr.visible for tr in fig.data] == [i // 3 == 2 for i in range(3 * len(ps))]
    for i, step in enumerate(slider.steps):
        assert step.method == "update"
        visible = step.args[0]["visible"]
        assert [j for j, v in enumerate(visible) if v] == [3 * i, 3 * i + 1, 3 * i + 2]
        assert all(f"p = {ps[i]:.2f}" in a["text"] for a in step.args[1]["annotations"])
        assert "title" not in step.args[1] and "title.text" not in step.args[1]   # the figure title stays
    assert len(fig.to_json()) < 200_000                                    # light enough for the docs page


def test_twin_panels_follow_p():
    ps = (0.0, 0.3, 0.6, 0.9)
    fig = dropout_figure(ps=ps)
    z = zs(fig)
    for k in range(3):
        fracs = [zero_frac(z[3 * i + k]) for i in range(len(ps))]
        assert fracs[0] == 0 and fracs == sorted(fracs) and fracs[-1] > 0.6, (NAMES[k], fracs)
        for i in range(len(ps)):
            check_structure(k, z[3 * i + k])


# ---------------------------------------------------------------------------------------------------------------
# The torch helpers behind them

def test_demo_sequence():
    words, ids, embed = demo_sequence()
    assert words == WORDS and ids.shape == (len(WORDS), 1)
    assert embed.num_embeddings == len(set(WORDS))
    assert (embed.weight.abs() >= 0.5).all() and (embed.weight.abs() <= 1).all()
    assert torch.equal(demo_sequence()[2].weight, embed.weight)             # seeded


def test_three_dropouts_is_seeded_and_leaves_global_state_alone():
    _, ids, embed = demo_sequence()
    embed.eval()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = three_dropouts(embed, ids, 0.5, 0.5, 0.5, seed=7)
    assert torch.equal(torch.rand(3), expected_next)                         # the caller's random stream untouched
    assert not embed.training                                                # the caller's mode restored
    b = three_dropouts(embed, ids, 0.5, 0.5, 0.5, seed=7)
    assert all(torch.equal(a[n], b[n]) for n in NAMES)
    assert (a["embedding"] == 0).any()                                       # dropout acted although embed was in eval
    for k, name in enumerate(["p_standard", "p_locked", "p_embed"]):
        ps = [0.5, 0.5, 0.5]
        ps[k] = 1.0
        with pytest.raises(ValueError, match=name):
            three_dropouts(embed, ids, *ps)


def test_panels_are_stacked_and_share_the_word_axis():
    fig = dropout_figure()
    doms = [fig.layout[f"yaxis{k}"].domain for k in ("", "2", "3")]
    assert doms[0][0] > doms[1][1] and doms[1][0] > doms[2][1]          # one panel per row: readable on a phone
    assert fig.layout.xaxis3.ticktext == tuple(WORDS) and fig.layout.width is None


def test_smoothness_figure_shows_the_series_and_the_steps():
    t = torch.arange(30.0)
    series = {"input h": t.sin(), "locked": 2 * t.sin(), "standard": t.sin() * (t % 2)}
    steps = {"input": 0.4, "locked": 1.6, "standard": 60.0}
    fig = smoothness_figure(series, steps, feature=5, p=0.5)
    lines, bar = fig.data[:3], fig.data[3]
    assert [tr.name for tr in lines] == list(series) and bar.type == "bar"
    np.testing.assert_allclose(lines[1].y, (2 * t.sin()).numpy(), atol=1e-4)
    assert list(bar.y) == [0.4, 1.6, 60.0] and fig.layout.yaxis2.type == "log"
    assert "feature 5" in fig.layout.annotations[0].text and "p = 0.5" in fig.layout.annotations[1].text
