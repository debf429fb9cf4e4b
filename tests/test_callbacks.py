"""Tests of awd_edu.callbacks: dispatch by event, the history a picture needs, the progress bar counting batches."""
from awd_edu.callbacks import EVENTS, Callback, History, ProgressBar, StepTrace


def batch(step, **kw):
    return {"event": "batch", "stage": "train", "step": step, "batch": step, "seq_len": 70, "lr": 30.0,
            "loss": 5.0, "tokens_per_s": 1000.0, **kw}


def test_a_callback_runs_only_the_handlers_it_has():
    got = []
    class OnlySwitch(Callback):
        def on_switch(self, e): got.append(e["epoch"])
    cb = OnlySwitch()
    for kind in EVENTS:
        cb({"event": kind, "stage": "train", "epoch": 7})
    assert got == [7]


def test_history_keeps_epochs_and_a_thinned_ordered_trace():
    h = History(max_points=50)
    h({"event": "start", "stage": "train", "history": [{"epoch": 1, "valid_ppl": 400.0}]})
    for s in range(1, 1001):
        h(batch(s))
    h({"event": "epoch", "stage": "train", "epoch": 2, "valid_ppl": 300.0})
    assert [m["epoch"] for m in h.metrics] == [1, 2] and "event" not in h.metrics[1]
    steps = h.steps.as_dict()["step"]
    assert len(steps) <= 50 and steps == sorted(steps) and steps[-1] > 950 and steps[0] < 50


def test_step_trace_keeps_every_point_while_there_is_room():
    t = StepTrace(max_points=10)
    for s in range(1, 11):
        t.add(batch(s, seq_len=s))
    assert t.as_dict() == {"step": list(range(1, 11)), "seq_len": list(range(1, 11)), "lr": [30.0] * 10}


def test_the_progress_bar_counts_batches_and_ends_at_what_ran(capsys):
    bar = ProgressBar()
    bar({"event": "epoch_start", "stage": "train", "epoch": 1, "expected_batches": 40})
    for s in range(1, 38):
        bar(batch(s))
    assert bar.bar.n == 37 and bar.bar.total == 40 and bar.bar.unit == "batch"
    bar({"event": "epoch", "stage": "train", "epoch": 1})
    err = capsys.readouterr().err
    assert "37/37" in err and "batch" in err and "tok_s" in err
    assert bar.bar is None
    bar({"event": "end", "stage": "train"})              # nothing open: nothing to do, no error
