"""benchmarks/equivalence.py: the pieces that need no reference (the weight pairing, the mask drawn as F.dropout draws
it, the command line) always; the check itself with AWD_LSTM_REFERENCE set to a checkout of salesforce/awd-lstm-lm
(no test can fetch it: there is no network in CI)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import equivalence  # noqa: E402

from awd_edu.model import AWDLSTM  # noqa: E402

needs_reference = pytest.mark.skipif(
    not os.environ.get("AWD_LSTM_REFERENCE"),
    reason="set AWD_LSTM_REFERENCE to a checkout of salesforce/awd-lstm-lm to compare with the paper's code")


def reference_style_keys(model):
    "The state-dict names the paper's RNNModel gives the same model: the raw U one module deeper."
    return [k.replace(".weight_hh_l0_raw", ".module.weight_hh_l0_raw") for k in model.state_dict()]


def test_key_map_pairs_every_weight_and_refuses_a_model_that_does_not_pair():
    awd = AWDLSTM(50, emb_size=8, hidden_size=12, n_layers=2)
    names = equivalence.key_map(awd.state_dict().keys(), reference_style_keys(awd))
    assert names["rnns.0.weight_hh_l0_raw"] == "rnns.0.module.weight_hh_l0_raw"
    assert names["rnns.1.module.weight_ih_l0"] == "rnns.1.module.weight_ih_l0"
    assert len(names) == len(awd.state_dict())
    with pytest.raises(SystemExit, match="do not pair up.*rnns.1.module.bias_hh_l0"):
        equivalence.key_map(awd.state_dict().keys(),
                            [k for k in reference_style_keys(awd) if k != "rnns.1.module.bias_hh_l0"])


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_bernoulli_mask_takes_the_numbers_f_dropout_takes(p):
    w = torch.randn(64, 16)
    torch.manual_seed(3)
    ours = w * equivalence.bernoulli_mask(w, p)
    torch.manual_seed(3)
    theirs = F.dropout(w, p, training=True)          # what the paper's WeightDrop calls
    assert torch.equal(ours, theirs)
    assert 0 < (ours == 0).float().mean() < 1


def test_a_folder_without_main_py_is_refused(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "equivalence.py"), "--reference", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no main.py there" in r.stderr and "salesforce/awd-lstm-lm" in r.stderr


def test_a_checkout_that_is_not_the_papers_code_is_named_not_a_traceback(tmp_path, ptb_folder):
    (tmp_path / "main.py").write_text("print('some other project')\n")   # no patch site matches
    (tmp_path / "weight_drop.py").write_text("\n")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "equivalence.py"), "--reference", str(tmp_path),
                        "--tiny", "--out", str(tmp_path / "e.json")], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "equivalence.py: reference patch" in r.stderr and "1d466ec" in r.stderr
    assert not (tmp_path / "e.json").exists()


@needs_reference
def test_the_paper_code_and_awd_edu_compute_the_same_numbers(tmp_path, ptb_folder):
    ref = Path(os.environ["AWD_LSTM_REFERENCE"])
    before = {p.name: p.read_bytes() for p in ref.glob("*.py")}
    out = tmp_path / "e.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "equivalence.py"), "--reference", str(ref), "--tiny",
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert {p.name: p.read_bytes() for p in ref.glob("*.py")} == before          # the checkout is never changed
    res = json.loads(out.read_text())["results"]
    assert res["all_passed"] and all(res["passed"].values())
    on, off = res["train_dropout_on_same_masks"], res["train_dropout_off"]
    assert on["max_weight_change"] > 0.1 and on["max_ce_difference"] <= 1e-5
    assert on["ce_awd_edu"][0] != pytest.approx(off["ce_awd_edu"][0], abs=1e-4)  # the masks were really on


@needs_reference
def test_the_check_finds_tar_taken_on_the_dropped_output(monkeypatch, ptb_folder):
    "A plausible slip (TAR on the dropped instead of the raw output) is invisible with dropout off, not with it on."
    import awd_edu.loop as loop
    from awd_edu.regularization import activation_reg, temporal_activation_reg

    def slipped(out, targets, alpha, beta):
        ce = F.cross_entropy(out.logits.reshape(-1, out.logits.size(-1)), targets.reshape(-1))
        return ce + activation_reg(out.outputs[-1], alpha) + temporal_activation_reg(out.outputs[-1], beta), ce

    monkeypatch.setattr(loop, "lm_loss", slipped)
    res = equivalence.check(equivalence.parse_args(["--reference", os.environ["AWD_LSTM_REFERENCE"], "--tiny"]))
    assert res["passed"]["train_dropout_off"] and res["passed"]["eval_before"]
    assert not res["passed"]["train_dropout_on_same_masks"] and not res["all_passed"]


@needs_reference
def test_more_steps_than_the_training_stream_holds_are_refused(tmp_path, ptb_folder):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "equivalence.py"), "--reference",
                        os.environ["AWD_LSTM_REFERENCE"], "--tiny", "--steps", "30000", "--out", str(tmp_path / "e.json")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "use fewer steps" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "e.json").exists()
