"""A run's report.html holds chapter 10's figure (`run_figure`), a baseline beside it when given, and the step panel
only when steps were seen."""
import pytest

pytest.importorskip("plotly")

from awd_edu.checkpoint import append_metrics  # noqa: E402
from awd_edu.viz.dashboard import HTMLReport  # noqa: E402


def epochs(ppl, switch_after=None, stage="train"):
    return [dict(stage=stage, epoch=i + 1, train_ppl=p * 1.1, valid_ppl=p, optimizer="sgd",
                 switched=switch_after == i + 1) for i, p in enumerate(ppl)]


@pytest.fixture
def run(tmp_path):
    for m in epochs([400, 300, 250, 251, 252, 240], switch_after=5):
        append_metrics(tmp_path, m)
    return tmp_path


def test_the_report_from_metrics_alone_is_the_run_figure(run):
    page = HTMLReport(run).write().read_text()
    assert page.count("Plotly.newPlot") == 1 and "NT-ASGD switch" in page and "best valid ppl 240.0" in page
    assert "<script src=" not in page and len(page) > 1_000_000              # plotly.js inlined: opens offline


def test_a_baseline_joins_the_figure(run):
    base = epochs([350, 260, 270, 300])
    fig, = HTMLReport(run, baseline=base).figures()
    names = [t.name for t in fig.data]
    assert names == ["AWD-LSTM: valid", "AWD-LSTM: train", "baseline: valid", "baseline: train"]
    assert list(fig.data[2].y) == [m["valid_ppl"] for m in base]


def test_steps_seen_add_the_step_panel(run):
    report = HTMLReport(run)
    report.on_batch(dict(event="batch", stage="train", epoch=1, batch=1, step=1, seq_len=70, lr=30.0))
    figs = report.figures()
    assert len(figs) == 2 and any(list(t.y) == [70] for t in figs[1].data)
    assert report.write().read_text().count("Plotly.newPlot") == 2


def test_awd_edu_report_draws_a_baseline_beside_the_run(run, tmp_path, capsys):
    from awd_edu.cli import main
    from awd_edu.config import TrainConfig
    base = tmp_path / "base"
    for folder in (run, base):
        TrainConfig.from_preset("tiny").save(folder / "config.json")
    for m in epochs([350, 260, 270, 300]):
        append_metrics(base, m)
    assert main(["report", str(run), "--baseline", str(base), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "baseline: valid" in page and "AWD-LSTM: valid" in page and "report of 6 epochs" in capsys.readouterr().out
    assert main(["report", str(run), "--out", str(tmp_path / "alone.html")]) == 0
    assert "baseline: valid" not in (tmp_path / "alone.html").read_text()
    assert main(["report", str(run), "--baseline", str(tmp_path / "nowhere")]) == 2   # refused, by name
    assert "no run directory at" in capsys.readouterr().err
