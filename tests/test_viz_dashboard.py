"""Tests of awd_edu.viz.dashboard: the figure of a run, the live widget and the HTML report, fed hand-made events."""
import math

from awd_edu.viz.dashboard import HTMLReport, LiveDashboard, dashboard_figure


def hand_made_run():
    "Six training epochs (switch after epoch 4), then two of fine-tuning; the best is fine-tuning epoch 2."
    ppl = [420, 300, 250, 240, 238, 236, 230, 229]
    return [dict(stage="train" if i < 6 else "finetune", epoch=i + 1 if i < 6 else i - 5, train_ppl=p * 1.3,
                 valid_ppl=p, optimizer="sgd" if i < 4 else "asgd", switched=i == 3) for i, p in enumerate(ppl)]


def trace(fig, name):
    return next(t for t in fig.data if t.name == name)


def test_the_figure_shows_the_metrics_the_switch_and_fine_tuning():
    metrics = hand_made_run()
    steps = dict(step=[1, 2, 3], seq_len=[70, 35, 68], lr=[30.0, 15.0, 29.1])
    fig = dashboard_figure(metrics, steps, "run")
    assert list(trace(fig, "valid ppl").y) == [420, 300, 250, 240, 238, 236, 230, 229]
    assert list(trace(fig, "train ppl").x) == list(range(1, 9))
    assert list(trace(fig, "window length").y) == [70, 35, 68] and list(trace(fig, "lr of the step").y) == [30.0, 15.0, 29.1]
    marks = {a.text.strip(): a.x for a in fig.layout.annotations if a.text.strip() in ("NT-ASGD switch", "fine-tuning")}
    assert marks == {"NT-ASGD switch": 4.5, "fine-tuning": 6.5}         # after epoch 4; before the 7th epoch shown
    title = fig.layout.title.text                                       # the run's name, its best and where
    assert title.startswith("run") and "229.0" in title and "finetune" in title and "epoch 2" in title
    assert fig.layout.xaxis.dtick == 1                                  # whole epochs only
    assert fig.layout.width is None                                     # follows the page
    names = [t.name for t in fig.data]
    assert names.index("window length") > names.index("lr of the step")   # the markers are drawn on top


def test_an_empty_run_draws_without_error_and_without_a_best():
    fig = dashboard_figure([], None, "nothing yet")
    assert fig.layout.title.text.startswith("nothing yet") and "best" not in fig.layout.title.text
    assert not any(len(t.x or ()) for t in fig.data)


def feed(cb, metrics):
    cb({"event": "start", "stage": "train", "history": []})
    step = 0
    for m in metrics:
        for _ in range(3):
            step += 1
            cb({"event": "batch", "stage": m["stage"], "step": step, "batch": step, "seq_len": 70, "lr": 30.0,
                "loss": math.log(m["valid_ppl"]), "tokens_per_s": 1.0})
        cb({"event": "epoch", **m})
    cb({"event": "end", "stage": "finetune", "history": metrics})


def test_the_live_dashboard_redraws_from_events():
    live = LiveDashboard(refresh_every=2)
    feed(live, hand_made_run())
    assert list(trace(live.figure, "valid ppl").y) == [m["valid_ppl"] for m in hand_made_run()]
    assert len(trace(live.figure, "window length").x) == 24


def test_the_html_report_is_standalone_and_rewritten_each_epoch(tmp_path):
    report = HTMLReport(tmp_path)
    metrics = hand_made_run()
    feed(report, metrics[:2])
    first = (tmp_path / "report.html").read_text()
    assert "<html>" in first[:100] and "best valid ppl 300.0" in first and len(first) > 1_000_000
    feed(report, metrics)
    assert "best valid ppl 229.0 (finetune epoch 2)" in (tmp_path / "report.html").read_text()


def overfitting_baseline():
    return [dict(stage="train", epoch=i + 1, train_ppl=p * 0.8, valid_ppl=p, optimizer="sgd", switched=False)
            for i, p in enumerate([400, 280, 260, 262, 275, 290])]


def test_the_replay_figure_shades_the_phases_where_the_metrics_put_them():
    from awd_edu.viz.dashboard import run_figure
    metrics = hand_made_run()
    fig = run_figure(metrics, overfitting_baseline(), "run")
    valid = next(t for t in fig.data if t.name.endswith("valid") and t.legendgroup == "AWD-LSTM")
    assert list(valid.y) == [m["valid_ppl"] for m in metrics] and list(valid.x) == list(range(1, 9))
    rects = sorted((s.x0, s.x1) for s in fig.layout.shapes if s.type == "rect")
    assert rects == [(4.5, 6.5), (6.5, 8.5)]          # averaged SGD after the switch, then fine-tuning
    assert [s.x0 for s in fig.layout.shapes if s.type == "line"] == [4.5]
    assert "best valid ppl 229.0" in fig.layout.title.text
    moved = [dict(m, switched=m["epoch"] == 2 and m["stage"] == "train") for m in metrics]   # a switch elsewhere
    assert [s.x0 for s in run_figure(moved).layout.shapes if s.type == "line"] == [2.5]


def test_the_replay_selector_shows_one_run_or_both():
    from awd_edu.viz.dashboard import run_figure
    fig = run_figure(hand_made_run(), overfitting_baseline())
    groups = [t.legendgroup for t in fig.data]
    for button in fig.layout.updatemenus[0].buttons:
        visible = button.args[0]["visible"]
        shown = {g for g, v in zip(groups, visible) if v}
        assert shown == ({"AWD-LSTM", "baseline"} if button.label == "both runs" else {button.label})
    assert not run_figure(hand_made_run()).layout.updatemenus        # no baseline, no selector
