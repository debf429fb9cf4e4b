"""The pictures of chapter 04 (awd_edu.viz.bptt): the window-length histogram and the window starts."""
import pytest
from slider_checks import check_slider

from awd_edu.viz.bptt import seq_len_figure, window_starts_figure


def test_seq_len_figure():
    fig = seq_len_figure(bptts=(20, 70), bptt=70, n_draws=3000)
    titles = check_slider(fig, (20, 70), "bptt")                  # grid, data and title move together
    slider = fig.layout.sliders[0]
    assert slider.steps[slider.active].label == "70"              # it opens on the bptt asked for
    bars, exact = [tr for tr in fig.data if tr.visible is not False]  # what shows: the draws and the exact law
    assert sum(bars.y) == pytest.approx(1.0, abs=1e-4) and min(bars.x) >= 5
    assert sum(exact.y) == pytest.approx(1.0, abs=1e-6)
    # 0.95 * 69.5 + 0.05 * 34.5 = 67.75 (the normal draw is truncated by int): the drawn law's mean, and the title's
    assert sum(x * y for x, y in zip(exact.x, exact.y)) == pytest.approx(67.75, abs=1e-3) and "67.75" in titles[1]
    assert fig.layout.yaxis.type == "log" and fig.layout.width is None


def test_window_starts_figure():
    fig = window_starts_figure([[0, 60, 140], [0, 75, 150], [0, 33, 101]], [0, 70, 140, 210], view=150, shown=2)
    assert list(fig.data[0].x) == [0, 70, 140] and list(fig.data[0].y) == ["fixed"] * 3
    assert [list(tr.x) for tr in fig.data[1:]] == [[0, 60, 140], [0, 75], [0, 33, 101]]
    assert [tr.visible is not False for tr in fig.data] == [True, True, True, False]
    check_slider(fig, (1, 2, 3), "epoch")                           # one step per number of epochs shown
    slider = fig.layout.sliders[0]
    assert slider.steps[slider.active].label == "2"                # it opens on the `shown` asked for
    # step k shows the fixed windows and the first k epochs' starts
    assert [list(s.args[0]["visible"]) for s in slider.steps] == [[True] * (k + 1) + [False] * (3 - k)
                                                                   for k in (1, 2, 3)]
