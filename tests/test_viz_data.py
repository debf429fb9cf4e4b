"""Chapter 03's pictures (awd_edu.viz.data): the stream in batchify's columns with a get_batch window, and the Zipf plot."""
import numpy as np
import pytest

pytest.importorskip("plotly")

from awd_edu.viz.data import batchify_figure, zipf_figure


def test_batchify_figure_lays_the_tokens_out_in_contiguous_columns():
    words = [f"w{k}" for k in range(22)]                         # 22 // 5 = 4 rows; w20, w21 dropped
    fig = batchify_figure(words, bsz=5, i=0, seq_len=2)
    text = np.array(fig.data[0].text)
    assert text.shape == (4, 5)
    assert list(text[:, 2]) == ["w8", "w9", "w10", "w11"]          # column j holds stream[4j : 4j + 4]
    assert "w20" not in text and np.array_equal(np.asarray(fig.data[0].z), np.arange(20).reshape(5, 4).T)


@pytest.mark.parametrize("i, seq_len, rows", [(1, 2, 2), (2, 10, 1)])   # a full window; one cut short at the end
def test_window_and_targets_boxes(i, seq_len, rows):
    fig = batchify_figure([f"w{k}" for k in range(16)], bsz=4, i=i, seq_len=seq_len)   # 4 rows
    inputs, targets = fig.layout.shapes
    assert round(inputs.y0 + 0.46, 6) == i and round(inputs.y1 + 0.54, 6) == i + rows
    assert round(targets.y0 - 0.54, 6) == i and round(targets.y1 - 0.46, 6) == i + rows   # one row later
    assert targets.line.dash == "dash" and inputs.line.dash in (None, "solid")
    assert fig.data[1].name == f"inputs: get_batch(source, {i}, {seq_len})"


def test_batchify_figure_refuses_what_get_batch_refuses():
    with pytest.raises(ValueError, match="get_batch: i must be"):
        batchify_figure([f"w{k}" for k in range(8)], bsz=2, i=3, seq_len=1)   # 4 rows: row 3 has no target


def test_zipf_figure_draws_log_spaced_ranks_and_the_reference_line():
    freqs = np.round(5000 / np.arange(1, 3001) ** 1.1)
    words = [f"w{k}" for k in range(3000)]
    fig = zipf_figure(freqs, words, slope=-1.1, n_points=50)
    points, line = fig.data
    assert len(points.x) <= 50 and points.x[0] == 1 and points.x[-1] == 3000
    assert points.text[0] == "w0" and points.y[-1] == freqs[-1]
    np.testing.assert_allclose(line.y, 5000 / np.asarray(line.x), atol=0.005)   # rounded to 2 decimals
    assert fig.layout.xaxis.type == fig.layout.yaxis.type == "log" and "slope -1.10" in fig.layout.title.text


def test_batchify_slider_lays_the_stream_out_again_at_each_batch_size():
    "Each step of the batch-size slider shows its own layout, moves the window boxes and rewrites the title text."
    words = [f"w{k}" for k in range(28)]
    bszs = (2, 3, 4, 7)
    fig = batchify_figure(words, bsz=4, i=1, seq_len=2, bszs=bszs)
    (slider,) = fig.layout.sliders
    assert slider.active == bszs.index(4) and len(slider.steps) == len(bszs)
    titles, layouts = [], []
    for j, (b, step) in enumerate(zip(bszs, slider.steps)):
        visible = step.args[0]["visible"]
        assert [k for k, v in enumerate(visible[:len(bszs)]) if v] == [j] and visible[len(bszs):] == [True, True]
        text = np.array(fig.data[j].text)
        assert text.shape == (28 // b, b) and list(text[:, 1]) == words[28 // b: 2 * (28 // b)]   # column 1
        inputs, targets = step.args[1]["shapes"]
        assert inputs["x1"] == targets["x1"] == b - 0.54                 # the boxes span every column
        assert set(step.args[1]) == {"shapes", "title.text"}             # never "title": plotly.js 4 would erase it
        titles.append(step.args[1]["title.text"])
        layouts.append(text.tobytes())
    assert len(set(titles)) == len(bszs) and len(set(layouts)) == len(bszs)
    assert f"{28 - 3 * 9} token dropped" in titles[1]                    # 28 = 3 x 9 + 1
    assert [tr.visible for tr in fig.data[:len(bszs)]] == [b == 4 for b in bszs]
    with pytest.raises(ValueError, match="bszs"):
        batchify_figure(words, bsz=5, bszs=bszs)
