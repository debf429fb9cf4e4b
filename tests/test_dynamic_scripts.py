"""benchmarks/dynamic_eval.py and benchmarks/dynamic_equivalence.py.

The refusals always run; the end-to-end run of dynamic_eval.py on a tiny trained run is marked slow; the comparison
with the authors' code runs when AWD_LSTM_REFERENCE names a checkout of salesforce/awd-lstm-lm and
DYNAMIC_EVAL_REFERENCE one of benkrause/dynamic-evaluation (no test can fetch them: there is no network in CI).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))
import dynamic_equivalence  # noqa: E402
import fidelity  # noqa: E402

needs_references = pytest.mark.skipif(
    not (os.environ.get("AWD_LSTM_REFERENCE") and os.environ.get("DYNAMIC_EVAL_REFERENCE")),
    reason="set AWD_LSTM_REFERENCE (salesforce/awd-lstm-lm) and DYNAMIC_EVAL_REFERENCE "
           "(benkrause/dynamic-evaluation) to compare with the authors' code")


def script(name, *args, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(BENCH / f"{name}.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, ptb_folder):
    "A run directory of the tiny preset after one short epoch (about 10 s)."
    from awd_edu.config import TrainConfig
    from awd_edu.train import Trainer
    run_dir = tmp_path_factory.mktemp("runs") / "tiny-run"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = TrainConfig.from_preset("tiny").replace(epochs=1, max_train_tokens=4000, max_eval_tokens=500,
                                                      device="cpu")
        Trainer(cfg, run_dir, progress=False).fit()
    finally:
        torch.set_num_threads(n)
    return run_dir


# ---------------------------------------------------------------------------------------------------------------
# dynamic_eval.py

def test_dynamic_eval_refuses_a_folder_that_is_not_a_run(tmp_path):
    r = script("dynamic_eval", "--run", tmp_path)
    assert r.returncode == 2 and "not a finished run directory" in r.stderr and "awd-edu train" in r.stderr


@pytest.mark.parametrize("flags, named", [(["--etas", "-1e-4"], "--etas"), (["--lams", "1.5"], "--lams"),
                                          (["--eps", "0"], "--eps"), (["--bptt", "0"], "--bptt"),
                                          (["--max-tokens", "-5"], "--max-tokens")])
def test_dynamic_eval_refuses_bad_values_by_name(tmp_path, flags, named):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "best.safetensors").write_bytes(b"")
    r = script("dynamic_eval", "--run", tmp_path, *flags)
    assert r.returncode == 2 and named in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_dynamic_eval_records_the_four_methods_chosen_on_validation_and_resumes(tiny_run, tmp_path):
    from awd_edu.cache import evaluate_with_cache
    from awd_edu.data import batchify
    from awd_edu.rundir import load_best
    out = tmp_path / "d.json"
    args = ["--run", tiny_run, "--max-tokens", 400, "--grad-batches", 3, "--search-tokens", 150, "--time-tokens", 60,
            "--etas", "1e-4", "3e-3", "--lams", "0.002", "0.02", "--threads", 1, "--out", out]
    first = script("dynamic_eval", *args, "--fresh")
    assert first.returncode == 0, first.stdout + first.stderr
    text = out.read_text()
    assert str(tmp_path) not in text and str(tiny_run) not in text       # no absolute path of this machine
    rec = json.loads(text)
    res = rec["results"]
    assert rec["name"] == "dynamic-eval" and rec["tiny"] is True and "--run tiny-run" in rec["command"]
    for split in ("valid", "test"):
        for m in ("static", "cache", "dynamic", "dynamic_cache"):
            assert res[f"{split}_ppl_{m}"] > 1
    for timing in ("seconds_per_1k_tokens", "cpu_seconds_per_1k_tokens"):
        assert all(res[timing][m] > 0 for m in ("static", "cache", "dynamic", "dynamic_cache"))
    grid = res["search"]["grid"]
    assert len(grid) == 4 and res["tokens"]["search"] == 149
    best = min(grid, key=lambda r: r["loss"])
    assert res["chosen"]["dynamic"]["eta"] == best["eta"] and res["chosen"]["dynamic"]["lam"] == best["lam"]
    c = res["chosen"]["cache"]
    assert min(res["cache_search"], key=lambda r: r["loss"])["theta"] == c["theta"]
    # the static and cache numbers are chapter 09's evaluation of the run's best weights on the first 400 tokens
    _, corpus, model = load_best(tiny_run, device="cpu")
    want = evaluate_with_cache(model, batchify(corpus.test[:400], 1), **c, bptt=70)
    assert res["test_ppl_static"] == pytest.approx(want["base_ppl"], rel=1e-9)
    assert res["test_ppl_cache"] == pytest.approx(want["ppl"], rel=1e-9)
    again = script("dynamic_eval", *args)
    assert again.returncode == 0 and "resuming: " in again.stdout
    assert json.loads(out.read_text())["results"]["test_ppl_dynamic"] == res["test_ppl_dynamic"]


# ---------------------------------------------------------------------------------------------------------------
# dynamic_equivalence.py

def test_equivalence_refuses_folders_that_are_not_the_two_codes(tmp_path):
    r = script("dynamic_equivalence", "--reference", tmp_path, "--dyneval", tmp_path)
    assert r.returncode == 2 and "no main.py there" in r.stderr
    (tmp_path / "main.py").write_text("\n")
    r = script("dynamic_equivalence", "--reference", tmp_path, "--dyneval", tmp_path)
    assert r.returncode == 2 and "no dynamiceval.py there" in r.stderr and "benkrause/dynamic-evaluation" in r.stderr


def test_a_dynamiceval_py_that_is_not_the_authors_is_named_not_patched():
    with pytest.raises(fidelity.PatchError, match="dynamiceval.py patch .*8f872c5"):
        dynamic_equivalence.patch_dyneval("print('another script')\n")


def reference_args(*extra):
    return ["--reference", os.environ["AWD_LSTM_REFERENCE"], "--dyneval", os.environ["DYNAMIC_EVAL_REFERENCE"],
            "--tiny", *extra]


@needs_references
def test_the_authors_code_and_awd_edu_agree_per_segment(tmp_path, ptb_folder):
    refs = [Path(os.environ[k]) for k in ("AWD_LSTM_REFERENCE", "DYNAMIC_EVAL_REFERENCE")]
    before = [{p.name: p.read_bytes() for p in r.glob("*.py")} for r in refs]
    out = tmp_path / "e.json"
    r = script("dynamic_equivalence", *reference_args("--out", out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert [{p.name: p.read_bytes() for p in r.glob("*.py")} for r in refs] == before   # never changed
    res = json.loads(out.read_text())["results"]
    assert res["all_passed"] and all(res["passed"].values())
    assert res["segments"]["compared"] >= 50 and res["largest_change_from_static"] > 0.05
    assert str(tmp_path) not in out.read_text()


@needs_references
@pytest.mark.parametrize("slip", ["update before scoring", "the segment's summed loss"])
def test_the_check_finds_a_slip_in_awd_edu(monkeypatch, ptb_folder, slip):
    import awd_edu.dynamic as dyn
    real_update, real_outputs = dyn.dynamic_update, dyn.dynamic_outputs
    if slip == "the segment's summed loss":   # a gradient bptt times too large: eta x 5
        monkeypatch.setattr(dyn, "dynamic_update", lambda params, theta_g, ms, decay, eta, lam, eps:
                            real_update(params, theta_g, ms, decay, 5 * eta, lam, eps))
    else:
        def late_scoring(model, source, ms_sqrt, eta, lam, eps, bptt):   # score each segment after its own step
            import copy
            work = copy.deepcopy(model)
            for logits, hiddens, y in real_outputs(work, source, ms_sqrt, eta, lam, eps, bptt):
                yield logits + 0.01 * torch.randn_like(logits), hiddens, y
        monkeypatch.setattr(dyn, "dynamic_outputs", late_scoring)
    res = dynamic_equivalence.check(dynamic_equivalence.parse_args(reference_args()))
    assert res["passed"]["same_ids"] and res["passed"]["ms_sqrt"]
    assert not res["passed"]["segment_losses"] and not res["all_passed"]
