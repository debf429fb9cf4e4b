"""The architecture diagram of chapter 06 (awd_edu.viz.model). Parameter counts are worked out by hand in comments."""
from slider_checks import check_slider

from awd_edu.viz.model import architecture_explorer, architecture_figure


def _lstm_boxes(annotations):
    return sum(1 for a in annotations if (a["text"] if isinstance(a, dict) else a.text or "").startswith("<b>LSTM"))


def _texts(annotations):
    return [a.text for a in annotations]


def test_the_ptb_diagram_shows_the_ptb_model():
    fig = architecture_figure()
    texts = _texts(fig.layout.annotations)
    assert "24,221,600 parameters (tied)" in fig.layout.title.text
    assert _lstm_boxes(fig.layout.annotations) == 3
    # the paper's PTB command: dropoute 0.1, dropouti 0.4, wdrop 0.5, dropouth 0.25, dropout 0.4
    assert "embedding dropout<br>dropoute = 0.1" in texts
    assert "LockedDropout dropouti = 0.4<br>one mask (1, B, 400)" in texts
    assert texts.count("WeightDrop on U<br>wdrop = 0.5") == 3
    assert texts.count("LockedDropout dropouth = 0.25<br>one mask (1, B, 1150)") == 2
    assert "LockedDropout dropout = 0.4<br>one mask (1, B, 400)" in texts
    # LSTM 2: 1150 -> 1150, 4*1150*2300 + 2*4*1150 = 10,589,200
    assert "<b>LSTM 2</b>: 1150 → 1150<br>10,589,200 params" in texts
    assert fig.layout.width is None and fig.layout.title.x == 0


def test_slider_steps_change_layers_and_keep_the_title_styled():
    fig = architecture_figure(n_layers_options=(1, 2, 3))
    check_slider(fig, (1, 2, 3), "layer")                       # grid, diagram and title move together
    slider = fig.layout.sliders[0]
    steps = slider.steps
    assert steps[slider.active].label == "3"                    # it opens on the default, the paper's 3 layers
    assert [_lstm_boxes(s.args[0]["annotations"]) for s in steps] == [1, 2, 3]
    one = steps[0].args[0]
    # one tied layer 400 -> 400: 4,000,000 + 4*400*800 + 8*400 (1,283,200) + 10,000 = 5,293,200
    assert "5,293,200 parameters" in one["title.text"]


def test_untied_diagram():
    fig = architecture_figure(n_layers_options=(2,), n_layers=2, tie_weights=False, emb_size=10, hidden_size=20)
    texts = _texts(fig.layout.annotations)
    # embedding 100,000; LSTM 10 -> 20: 4*20*30 + 160 = 2,560; LSTM 20 -> 20: 4*20*40 + 160 = 3,360;
    # decoder 10,000 x 20 + 10,000 = 210,000; total 315,920, no tying bracket
    assert "315,920 parameters" in fig.layout.title.text and "(tied)" not in fig.layout.title.text
    assert "the same matrix E" not in texts and "<b>Decoder</b> 20 → 10,000<br>own weight + bias: 210,000 params" in texts


def test_explorer_sliders_redraw():
    box = architecture_explorer()
    fig = box.figure
    assert _lstm_boxes(fig.layout.annotations) == 3
    box.sliders["n_layers"].value = 5
    assert _lstm_boxes(fig.layout.annotations) == 5
    box.sliders["hidden_size"].value = 500
    # 4,000,000 + (400 -> 500) 1,804,000 + 3 x (500 -> 500) 2,004,000 + (500 -> 400) 1,443,200 + 10,000
    assert "13,269,200 parameters" in fig.layout.title.text
    assert any(t.startswith("<b>LSTM 3</b>: 500 → 500") for t in _texts(fig.layout.annotations))
    assert fig.layout.title.x == 0
