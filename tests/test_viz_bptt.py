"""The pictures of chapter 04 (awd_edu.viz.bptt): the window-length histogram and the window starts."""
import pytest

from awd_edu.viz.bptt import seq_len_figure, window_starts_figure


def test_seq_len_figure():
    fig = seq_len_figure(bptts=(20, 70), bptt=70, n_draws=3000)
    assert len(fig.data) == 4 and [tr.visible for tr in fig.data] == [False, False, True, True]
    bars, exact = fig.data[2], fig.data[3]
    assert sum(bars.y) == pytest.approx(1.0, abs=1e-4) and min(bars.x) >= 5
    assert sum(exact.y) == pytest.approx(1.0, abs=1e-6)
    # 0.95 * 69.5 + 0.05 * 34.5 = 67.75 (the normal draw is truncated by int)
    assert fig.layout.title.text.endswith("mean 67.75") and fig.layout.sliders[0].active == 1
    step = fig.layout.sliders[0].steps[0]
    assert list(step.args[0]["visible"]) == [True, True, False, False]
    assert "title" not in step.args[1] and "bptt = 20" in step.args[1]["title.text"]
    assert fig.layout.yaxis.type == "log" and fig.layout.width is None


def test_window_starts_figure():
    fig = window_starts_figure([[0, 60, 140], [0, 75, 150], [0, 33, 101]], [0, 70, 140, 210], view=150, shown=2)
    assert list(fig.data[0].x) == [0, 70, 140] and list(fig.data[0].y) == ["fixed"] * 3
    assert [list(tr.x) for tr in fig.data[1:]] == [[0, 60, 140], [0, 75], [0, 33, 101]]
    assert [tr.visible is not False for tr in fig.data] == [True, True, True, False]
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["1", "2", "3"] and fig.layout.sliders[0].active == 1
    assert list(steps[0].args[0]["visible"]) == [True, True, False, False]
    assert steps[0].args[1] == {"title.text": "Window starts over 1 epoch: the cuts move"}
    assert fig.layout.title.text == "Window starts over 2 epochs: the cuts move"
