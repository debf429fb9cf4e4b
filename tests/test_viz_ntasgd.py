"""The pictures of chapter 07 (awd_edu.viz.ntasgd). Every expected epoch is worked out by hand in a comment, never by
asking the trigger: the rule (the paper's code) switches on the first epoch t with more than n earlier epochs whose
loss is greater than the minimum over the epochs before the last n."""
import pytest
from slider_checks import check_slider

from awd_edu.viz.ntasgd import ntasgd_run_figure, trigger_explorer, trigger_figure, trigger_thresholds

# Bottoms out at epoch 4 (5.0), then creeps up by 0.01 per epoch; 12 epochs.
CURVE = [6.0, 5.5, 5.2, 5.0, 5.01, 5.02, 5.03, 5.04, 5.05, 5.06, 5.07, 5.08]
# n = 1: epoch 6 (5.02) is the first compared with epoch 4 (history[:-1] = epochs 1-4): fires at 6
#        (epoch 5: 5.01 vs min(epochs 1-3) = 5.2, no).
# n = 2: epoch 7 (5.03) vs min(epochs 1-4) = 5.0: fires at 7 (epoch 6: 5.02 vs min(epochs 1-3) = 5.2, no).
# n = 5: epoch 10 (5.06) vs min(epochs 1-4) = 5.0: fires at 10 (epoch 9: 5.05 vs min(epochs 1-3) = 5.2, no).
# n = 8: epoch 13 would be the first compared with epoch 4: beyond 12 epochs, never.
BY_HAND = {1: 6, 2: 7, 5: 10, 8: None}


def test_thresholds_by_hand():
    # epoch 1-based t compares with min(epochs 1 .. t-1-n), from t = n + 2 on
    assert trigger_thresholds([3.0, 2.0, 2.5, 3.5, 2.7], 2) == [None, None, None, 3.0, 2.0]
    assert trigger_thresholds(CURVE, 5)[:8] == [None] * 6 + [6.0, 5.5]


def test_twin_marks_the_hand_worked_epochs():
    fig = trigger_figure(CURVE, nonmonos=list(BY_HAND), nonmono=2)
    crosses = fig.data[2::2]
    assert [list(c.x) for c in crosses] == [[e] if e else [None] for e in BY_HAND.values()]  # None: a legend entry only
    assert [c.name for c in crosses] == ["fires at epoch 6", "fires at epoch 7", "fires at epoch 10", "never fires"]
    assert [list(c.y) for c in crosses[:3]] == [[CURVE[5]], [CURVE[6]], [CURVE[9]]]


def test_twin_slider_keeps_the_title_and_has_a_second_readout():
    fig = trigger_figure(CURVE, nonmonos=list(BY_HAND), nonmono=2)
    check_slider(fig, list(BY_HAND), "nonmono")             # grid, crosses and title move together
    slider = fig.layout.sliders[0]
    steps = slider.steps
    assert steps[slider.active].label == "2"                # it opens on the window asked for
    for s, n in zip(steps, BY_HAND):
        layout = s.args[1]
        verdict = f"nonmono = {n}: fires at epoch {BY_HAND[n]}" if BY_HAND[n] else f"nonmono = {n}: never fires in 12 epochs"
        assert layout["title.text"].endswith(verdict) and layout["annotations[0].text"] == verdict
    assert fig.layout.annotations[0].text == steps[slider.active].args[1]["annotations[0].text"]   # opens on it
    assert fig.layout.width is None and fig.layout.title.x == 0    # apply_style's layout


def test_explorer_slider_moves_the_cross_and_the_readouts():
    box = trigger_explorer(CURVE, nonmono=2)
    fig = box.figure
    assert list(fig.data[2].x) == [7] and fig.data[2].name == "fires at epoch 7"
    box.sliders["nonmono"].value = 5
    assert list(fig.data[2].x) == [10] and list(fig.data[2].y) == [CURVE[9]]
    assert fig.layout.title.text.endswith("fires at epoch 10") and fig.layout.annotations[0].text.endswith("epoch 10")
    box.sliders["nonmono"].value = 9  # epoch 4 + 9 + 1 = 14 > 12 epochs
    assert list(fig.data[2].x) == [None] and fig.data[2].name == "never fires"
    assert "never fires" in fig.layout.title.text and "never fires" in fig.layout.annotations[0].text
    thr = fig.data[1].y
    assert all(v is None for v in thr[:10]) and thr[10] == 6.0  # epoch 11 is the first with 10 > 9 earlier epochs
    assert fig.layout.title.x == 0                              # only the text of the styled title changed


def test_run_figure():
    # n = 2, switch after epoch 6: 4.45 > min(epochs 1-3) = 4.4
    live = [5.0, 4.6, 4.4, 4.3, 4.35, 4.45, 4.5, 4.6]
    fig = ntasgd_run_figure(live, [None] * 6 + [4.2, 4.18], fired_at=6, nonmono=2)
    assert list(fig.data[1].y) == [None, None, None, 5.0, 4.6, 4.4, 4.3, 4.3]
    assert list(fig.data[2].x) == [7, 8] and list(fig.data[2].y) == [4.2, 4.18]
    assert fig.layout.shapes[0].x0 == 6 and fig.layout.annotations[0].text.startswith("switch: epoch 6")
    before = ntasgd_run_figure(live[:3], [None] * 3, fired_at=None, nonmono=2)   # no switch yet: no averaged curve
    assert len(before.data) == 2 and not before.layout.shapes


def test_trigger_figure_rejects_a_window_not_offered():
    with pytest.raises(ValueError):
        trigger_figure(CURVE, nonmonos=[1, 2], nonmono=5)
