"""The benchmark scripts run, end to end, at a tiny size and write their JSON record; the README table is in step.

Speed is never asserted here (benchmarks/README.md holds the figures); these tests only keep the scripts from rotting.
The scripts run with `--threads 1`: on a busy 2-core machine two OpenMP threads wait on each other at every small op.
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))
import common  # noqa: E402
import update_readme  # noqa: E402


def run_script(name: str, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    "Run `python benchmarks/<name>.py ARGS` from the repository root, as a user would."
    out = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, f"{name}.py {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out


def check_record(path: Path, name: str, script_args: tuple) -> dict:
    rec = json.loads(path.read_text())
    assert set(common.REQUIRED_FIELDS) <= set(rec), f"missing {set(common.REQUIRED_FIELDS) - set(rec)}"
    assert rec["name"] == name and rec["device"] == "cpu" and rec["tiny"] is True
    assert rec["torch_version"] == torch.__version__
    assert rec["device_name"] and rec["date"][:4].isdigit() and isinstance(rec["config"], dict)
    # the command is what a user types from the repository root, with the exact arguments; an absolute path (a
    # folder outside the repository) is kept by its name only, so that no record holds a machine's path
    shown = [Path(a).name if Path(a).is_absolute() else a for a in script_args]
    assert rec["command"] == "python " + " ".join([f"benchmarks/{name}.py", *shown])
    assert rec["summary"]
    return rec


def test_step_cost_tiny_writes_every_field(tmp_path):
    out = tmp_path / "step_cost.json"
    args = ("--tiny", "--device", "cpu", "--threads", "1", "--reps", "2", "--warmup", "1", "--out", str(out))
    printed = run_script("step_cost", *args).stdout
    res = check_record(out, "step_cost", args)["results"]
    for k in ("a", "b", "c"):
        r = res[k]
        assert r["ms_per_step"] > 0 and r["tokens_per_s"] > 0 and len(r["times_s"]) == 2
        assert r["loss_finite"] and "peak_mib" in r and r["params_mib"] > 0
        assert r["shape"]["batch"] * r["shape"]["bptt"] / (r["ms_per_step"] / 1e3) == pytest.approx(r["tokens_per_s"])
    assert res["ratio_a_b"] == pytest.approx(res["a"]["ms_per_step"] / res["b"]["ms_per_step"])
    assert res["ratio_c_b"] == pytest.approx(res["c"]["ms_per_step"] / res["b"]["ms_per_step"])
    assert res["at_ptb_shapes"] is False and res["meets_target"] is None  # tiny shapes: no verdict
    assert "(a)/(b) =" in printed and "tokens/s" in printed


@pytest.mark.slow   # benchmarks/step_cost.py with the profiler in a new interpreter: about 6 CPU-seconds
def test_step_cost_short_scratch_window_is_compared_side_by_side(tmp_path):
    out = tmp_path / "s.json"
    args = ("--tiny", "--device", "cpu", "--threads", "1", "--reps", "1", "--warmup", "0", "--scratch-bptt", "4",
            "--profile", "3", "--out", str(out))
    printed = run_script("step_cost", *args).stdout
    res = json.loads(out.read_text())["results"]
    assert res["c"]["shape"]["bptt"] == res["b_short"]["shape"]["bptt"] == 4 and res["b"]["shape"]["bptt"] == 12
    assert res["ratio_c_b_reference"] == "b_short"
    assert res["ratio_c_b"] == pytest.approx(res["c"]["ms_per_step"] / res["b_short"]["ms_per_step"])
    assert len(res["profile_top_ops"]["a"]) == 3 and "at bptt 4" in printed


@pytest.fixture
def one_thread():
    "Run in-process benchmark mains with one torch thread, and give the test session its threads back afterwards."
    n = torch.get_num_threads()
    yield ("--threads", "1")
    torch.set_num_threads(n)


SMALL = ("max_train_tokens=3000", "max_eval_tokens=1000")  # the tiny preset on a few windows of real PTB


def test_epoch_time_extrapolates_from_max_batches_and_says_so(tmp_path, ptb_folder, one_thread, capsys):
    import epoch_time
    out = tmp_path / "e.json"
    args = ["--tiny", *one_thread, "--max-batches", "2", "--warmup-batches", "1", "--out", str(out)]
    epoch_time.main(args)
    rec = check_record(out, "epoch_time", tuple(args))
    res = rec["results"]
    assert res["extrapolated"] is True and res["timed_batches"] == 2 and res["epoch_batches"] > 3
    assert res["train_seconds"] == pytest.approx(res["timed_seconds"] / res["timed_tokens"] * res["epoch_tokens"])
    assert res["epoch_seconds"] == pytest.approx(res["train_seconds"] + res["valid_seconds"])
    assert "EXTRAPOLATED" in rec["summary"] and any("EXTRAPOLATED" in n for n in rec["notes"])
    assert "extrapolated from 2 batches" in capsys.readouterr().out


def test_epoch_time_full_epoch_runs_the_trainer(tmp_path, ptb_folder, one_thread):
    import epoch_time
    out = tmp_path / "e.json"
    args = ["--tiny", *one_thread, "--set", *SMALL, "--out", str(out)]
    epoch_time.main(args)
    res = check_record(out, "epoch_time", tuple(args))["results"]
    assert res["extrapolated"] is False and res["n_batches"] == res["epoch_batches"]  # the plan is the real epoch
    assert res["train_tokens_per_s"] > 0 and res["valid_seconds"] > 0 and math.isfinite(res["valid_loss"])


def test_ppl_budget_records_perplexity_against_minutes_and_epochs(tmp_path, ptb_folder, one_thread):
    import ppl_budget
    out = tmp_path / "p.json"
    args = ["--tiny", *one_thread, "--minutes", "0.02", "--epochs", "2", "--set", *SMALL, "--out", str(out)]
    ppl_budget.main(args)
    res = check_record(out, "ppl_budget", tuple(args))["results"]
    pts = res["points"]
    assert pts[0]["minutes"] == 0 and pts[0]["epochs"] == 0 and len(pts) >= 2
    assert all(a["minutes"] <= b["minutes"] and a["epochs"] <= b["epochs"] for a, b in zip(pts, pts[1:]))
    assert all(p["valid_ppl"] > 1 for p in pts)
    last = pts[-1]
    assert last["minutes"] >= 0.02 or last["epochs"] == 2  # stopped by the budget or by --epochs
    assert res["final_valid_ppl"] == last["valid_ppl"] and res["best_valid_ppl"] == min(p["valid_ppl"] for p in pts)


def test_bare_model_has_the_awd_lstm_shapes_and_no_dropout():
    import step_cost
    from awd_edu.model import AWDLSTM, count_parameters
    bare, awd = step_cost.BareLM(50, 8, 12, 3), AWDLSTM(50, 8, 12, 3)
    assert count_parameters(bare) == count_parameters(awd)  # same shapes, tied decoder in both
    assert bare.decoder.weight is bare.encoder.weight
    assert not any(isinstance(m, torch.nn.Dropout) for m in bare.modules())
    x = torch.randint(50, (5, 2))
    bare.train()
    (y1, _), (y2, _) = bare(x, bare.init_hidden(2)), bare(x, bare.init_hidden(2))
    assert torch.equal(y1, y2)  # deterministic in training mode: nothing random in it


def test_default_output_of_tiny_runs_never_touches_recorded_results():
    cpu = torch.device("cpu")
    assert common.default_out("step_cost", cpu, tiny=False) == BENCH / "results" / "step_cost-cpu.json"
    assert common.RESULTS not in common.default_out("step_cost", cpu, tiny=True).parents


def test_cpu_peak_memory_sees_a_large_allocation():
    r = common.peak_memory(lambda: torch.ones(25_000_000).sum(), torch.device("cpu"))  # 100 MB touched
    if r["peak_mib"] is None:
        pytest.skip(r["method"])
    assert r["peak_mib"] > 60


def test_readme_table_is_in_step_with_the_recorded_json():
    out = subprocess.run([sys.executable, str(BENCH / "update_readme.py"), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_update_readme_writes_the_table_and_check_sees_drift(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    readme = tmp_path / "README.md"
    readme.write_text(f"# B\n\n{update_readme.START}\nold\n{update_readme.END}\n\nafter\n")
    rec = dict(name="step_cost", device="cpu", device_name="Some CPU", torch_version="9.9", config={},
               command="python benchmarks/step_cost.py --device cpu", date="2026-01-02T03:04:05+00:00",
               results={}, summary="(a)/(b) = 1.05", tiny=False)
    (results / "step_cost-cpu.json").write_text(json.dumps(rec))
    (results / "step_cost-tinyrun.json").write_text(json.dumps(dict(rec, tiny=True, summary="TINY")))
    (results / "ablations-cpu-next.json").write_text(json.dumps(dict(rec, name="ablations", summary="GROWING")))
    argv = ["--readme", str(readme), "--results", str(results)]
    assert update_readme.main(argv + ["--check"]) == 1  # "old" is not the table
    assert update_readme.main(argv) == 0
    text = readme.read_text()
    assert "(a)/(b) = 1.05" in text and "`python benchmarks/step_cost.py --device cpu`" in text
    assert "TINY" not in text and "GROWING" not in text and "old" not in text and text.endswith("after\n")
    assert update_readme.main(argv + ["--check"]) == 0


def test_a_record_never_holds_an_absolute_path_of_this_machine(tmp_path, monkeypatch):
    import tempfile
    monkeypatch.setenv("AWD_EDU_DATA", str(tmp_path / "data"))
    rec = {k: "x" for k in common.REQUIRED_FIELDS}
    rec.update(command=f"python {common.ROOT / 'benchmarks' / 'fidelity.py'} --reference {tempfile.gettempdir()}/ref",
               config=dict(data_dir=str(tmp_path / "data" / "ptb"), log=[str(Path.home() / "x.log")]))
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")            # a committed record's folder
    assert json.loads(common.write_record(rec, tmp_path / "scratch.json").read_text()) == rec   # scratch: as it is
    out = common.write_record(rec, tmp_path / "results" / "rec.json")
    written = json.loads(out.read_text())
    assert written["command"] == "python benchmarks/fidelity.py --reference <temporary folder>/ref"
    assert written["config"] == dict(data_dir="$AWD_EDU_DATA/ptb", log=["~/x.log"])


def test_a_record_s_command_names_no_absolute_path():
    "A record's command is as typed from the repository root, with every absolute path made portable."
    import common
    line = common.command_line(common.ROOT / "benchmarks" / "x.py",
                               ["--run", "/elsewhere/runs/ptb-cpu", f"--out={common.ROOT}/runs/r.json", "--tiny", "rel/p"])
    assert line == "python benchmarks/x.py --run ptb-cpu --out=runs/r.json --tiny rel/p"
