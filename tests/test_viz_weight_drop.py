"""Chapter 01's pictures (awd_edu.viz.weight_drop): drive the widget as a user would and check what the figure shows;
the kernel-free twin. The mask panel shows the scaled mask M/(1-p) transposed, (H, 4H): one row of U per column."""
import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")

import awd_edu.viz.weight_drop as wdmod
from awd_edu.viz.weight_drop import weight_drop_explorer, weight_drop_figure

TOL = 0.08  # zero fraction of a 64 x 16 mask: 1,024 entries, std <= 0.016, so 0.08 is 5 std


def z(fig, i):
    return np.asarray(fig.data[i].z, dtype=float)


def zero_frac(fig):
    return float((z(fig, 0) == 0).mean())


def test_explorer_exposes_its_controls():
    import ipywidgets as widgets
    import plotly.graph_objects as go
    ex = weight_drop_explorer()
    assert isinstance(ex, widgets.VBox)
    assert set(ex.sliders) == {"p"} and set(ex.buttons) == {"new_mask"}
    assert isinstance(ex.figure, go.FigureWidget) and len(ex.figure.data) == 3
    assert z(ex.figure, 0).shape == (16, 64)                       # U is (4H, H) with H = 16, drawn transposed
    assert z(ex.figure, 1).shape == z(ex.figure, 2).shape == (16, 40)  # (H, T)


def test_slider_sets_the_drop_rate_of_the_shown_mask():
    ex = weight_drop_explorer(p=0.5)
    assert abs(zero_frac(ex.figure) - 0.5) < TOL
    for p in (0.0, 0.1, 0.3, 0.6, 0.9):
        ex.sliders["p"].value = p
        assert abs(zero_frac(ex.figure) - p) < TOL
        assert f"p = {p:.2f}" in ex.figure.layout.title.text
        kept = z(ex.figure, 0)[z(ex.figure, 0) != 0]
        assert np.allclose(kept, 1 / (1 - p), atol=1e-3)          # the kept entries carry the 1/(1-p) scale


def test_slider_changes_both_trajectories_and_p0_makes_them_equal():
    ex = weight_drop_explorer(p=0.5)
    wd_half, naive_half = z(ex.figure, 1), z(ex.figure, 2)
    ex.sliders["p"].value = 0.0
    assert not np.array_equal(wd_half, z(ex.figure, 1)) and not np.array_equal(naive_half, z(ex.figure, 2))
    assert np.array_equal(z(ex.figure, 1), z(ex.figure, 2))       # no dropout: both are the plain LSTM


def test_new_mask_button_changes_the_mask_not_its_rate():
    ex = weight_drop_explorer(p=0.4)
    before = z(ex.figure, 0)
    traj_before = z(ex.figure, 1)
    ex.buttons["new_mask"].click()
    after = z(ex.figure, 0)
    assert not np.array_equal(before, after)
    assert not np.array_equal(traj_before, z(ex.figure, 1))
    assert abs(zero_frac(ex.figure) - 0.4) < TOL
    assert ex.sliders["p"].value == 0.4


def test_masks_are_nested_as_p_grows():
    "Same draw, larger p: every entry dropped at the smaller p stays dropped (the picture changes smoothly)."
    ex = weight_drop_explorer(p=0.2)
    low = z(ex.figure, 0) == 0
    ex.sliders["p"].value = 0.6
    high = z(ex.figure, 0) == 0
    assert np.all(high[low])


def test_naive_dropout_hits_different_units_at_each_step_weight_drop_none():
    ex = weight_drop_explorer(p=0.5)
    naive, wd = z(ex.figure, 2), z(ex.figure, 1)
    dropped = np.isnan(naive)                                       # the figure marks dropped units as NaN
    zero_sets = {frozenset(np.flatnonzero(dropped[:, t])) for t in range(naive.shape[1])}
    assert len(zero_sets) > naive.shape[1] // 2
    assert abs(dropped.mean() - 0.5) < 0.1                          # 640 cells: std 0.02
    assert not np.isnan(wd).any() and (wd == 0).mean() < 0.02       # weight drop silences no unit


def test_a_failing_slider_callback_is_not_swallowed(monkeypatch):
    ex = weight_drop_explorer()

    def boom(*a, **k):
        raise RuntimeError("callback failed")

    monkeypatch.setattr(wdmod, "_explorer_data", boom)
    with pytest.raises(RuntimeError, match="callback failed"):
        ex.sliders["p"].value = 0.3


def test_explorer_rejects_bad_p():
    with pytest.raises(ValueError, match="p"):
        weight_drop_explorer(p=1.2)


def test_kernel_free_twin_has_a_slider_over_p():
    import plotly.graph_objects as go
    ps = (0.0, 0.25, 0.5, 0.75)
    fig = weight_drop_figure(ps)
    assert isinstance(fig, go.Figure) and not isinstance(fig, go.FigureWidget)
    assert len(fig.data) == 3 * len(ps)
    (slider,) = fig.layout.sliders
    assert len(slider.steps) == len(ps)
    for n, (p, step) in enumerate(zip(ps, slider.steps)):
        visible = step.args[0]["visible"]
        assert [k for k, v in enumerate(visible) if v] == [3 * n, 3 * n + 1, 3 * n + 2]
        mask = np.asarray(fig.data[3 * n].z, dtype=float)
        assert abs((mask == 0).mean() - p) < TOL
        assert f"p = {p:.2f}" in step.args[1]["title.text"]
        assert "title" not in step.args[1]                          # a plain "title" would erase it on plotly.js 4
    shown = [k for k, tr in enumerate(fig.data) if tr.visible is not False]
    assert shown == [3 * slider.active + i for i in range(3)]      # the active step is what shows first


def test_twin_and_widget_show_the_same_data_for_the_same_seed():
    fig = weight_drop_figure((0.0, 0.5), seed=3)
    ex = weight_drop_explorer(p=0.5, seed=3)
    for i in range(3):
        assert np.array_equal(np.asarray(fig.data[3 + i].z, dtype=float), z(ex.figure, i), equal_nan=True)


def test_naive_panel_drops_exactly_the_units_whose_noise_is_below_p():
    "Independent of the figure code: rebuild the per-step keep pattern from the same seeded noise."
    cell, x, g = wdmod._explorer_setup(8, 16, 40, 0)
    u, v = wdmod._explorer_noise(cell, 40, g)
    ex = weight_drop_explorer(p=0.3)
    dropped = np.isnan(z(ex.figure, 2))                              # (H, T)
    assert np.array_equal(dropped, (v < 0.3).numpy().T)
    assert np.array_equal(z(ex.figure, 0) == 0, (u < 0.3).numpy().T)  # and the mask's zeros from u


def test_figure_fits_a_phone_layout():
    fig = weight_drop_figure()
    assert fig.layout.width is None and fig.layout.autosize           # the width follows the page
    assert [a.text for a in fig.layout.annotations][:3] == [
        "mask on U (4H x H = 64 x 16), one row of U per column", "h_t with weight drop",
        "h_t fed back, naive per-step dropout"]
    doms = [fig.layout[f"yaxis{k}"].domain for k in ("", "2", "3")]   # stacked: one panel per row
    assert doms[0][0] > doms[1][1] and doms[1][0] > doms[2][1]
    assert all(len(line) <= 52 for line in fig.layout.title.text.split("<br>"))  # each title line fits 390 px
