"""Tests of awd_edu.loop: the loss, one step, one evaluation, one epoch, the divergence stop and the short loop."""
import math

import pytest
import torch

from awd_edu.config import TrainConfig
from awd_edu.data import batchify
from awd_edu.loop import (TrainingDiverged, divergence_bound, evaluate, lm_loss, perplexity, train_epoch, train_step,
                          unigram_perplexity)
from awd_edu.model import AWDLSTM


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest: one torch thread for the module


def toy(seed=0, **kw):
    torch.manual_seed(seed)
    return AWDLSTM(50, **{"emb_size": 8, "hidden_size": 16, "n_layers": 2, **kw})


def test_ar_reads_the_dropped_output_and_tar_the_raw_one():
    model = toy(dropout=0.5).train()
    x, y = torch.randint(0, 50, (6, 3)), torch.randint(0, 50, (6, 3))
    out = model(x)
    loss, ce = lm_loss(out, y, 0.0, 0.0)
    assert torch.equal(loss, ce)
    assert torch.allclose(ce, torch.nn.functional.cross_entropy(out.logits.view(-1, 50), y.view(-1)))
    dropped, raw = out.outputs[-1], out.raw_outputs[-1]
    assert not torch.equal(dropped, raw)                       # the output dropout was active
    assert torch.allclose(lm_loss(out, y, 2.0, 0.0)[0], ce + 2.0 * (dropped ** 2).mean())
    assert torch.allclose(lm_loss(out, y, 0.0, 3.0)[0], ce + 3.0 * ((raw[1:] - raw[:-1]) ** 2).mean())


def test_a_step_clips_before_it_steps_at_the_scaled_lr_and_restores_it():
    model = toy().train()
    opt = torch.optim.SGD(model.parameters(), lr=30.0)
    seen = {}
    real = opt.step
    def spy(*a, **k):
        seen["lr"] = opt.param_groups[0]["lr"]
        seen["norm"] = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()
        return real(*a, **k)
    opt.step = spy
    x, y = torch.randint(0, 50, (7, 3)), torch.randint(0, 50, (7, 3))
    h0 = [(h.requires_grad_(), c) for h, c in model.init_hidden(3)]
    ce, h1 = train_step(model, opt, x, y, h0, TrainConfig(bptt=14, clip=0.25))
    assert seen["lr"] == 30.0 * 7 / 14 == 15.0 and opt.param_groups[0]["lr"] == 30.0
    assert seen["norm"] <= 0.25 + 1e-6
    assert math.isfinite(ce) and h1[0][0].grad_fn is not None        # the new state carries this window's graph
    assert h0[0][0].grad is None                                     # ... the old one was cut (detached)


@pytest.mark.parametrize("lr", [float("inf"), 1e6])
def test_a_diverging_loss_stops_before_the_weights_are_touched(lr):
    model = toy().train()
    x, y = torch.randint(0, 50, (6, 3)), torch.randint(0, 50, (6, 3))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    hidden = model.init_hidden(3)
    with pytest.raises(TrainingDiverged) as e:
        for _ in range(20):
            before = [p.detach().clone() for p in model.parameters()]
            _, hidden = train_step(model, opt, x, y, hidden, TrainConfig(bptt=6, clip=0.25))
    after = list(model.parameters())
    for a, b in zip(after, before):                                   # the failing step changed nothing
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    assert "cross-entropy" in str(e.value)


def test_the_divergence_bound_and_perplexity_overflow():
    assert divergence_bound(10_000) == pytest.approx(3 * 9.2103, abs=1e-3)
    assert perplexity(math.log(50)) == pytest.approx(50)
    assert perplexity(1e4) == math.inf and perplexity(math.inf) == math.inf   # never OverflowError
    assert math.isnan(perplexity(math.nan))                                 # a NaN loss is no perplexity


def test_evaluate_is_deterministic_leaves_the_mode_and_shows_progress(capsys):
    model = toy().train()
    source = batchify(torch.randint(0, 50, (500,)), 5)
    a = evaluate(model, source, 20)
    assert model.training and a == evaluate(model, source, 20)
    assert a == pytest.approx(evaluate(model, source, 33), abs=1e-5)   # state carried: windows do not matter
    assert abs(evaluate(toy(3), source, 10) - math.log(50)) < 0.1       # untrained: about a uniform guess
    evaluate(model, source, 20, progress=True)
    assert "batch" in capsys.readouterr().err                           # tqdm's bar counts batches


def test_an_epoch_visits_every_row_once_in_random_or_fixed_windows():
    model = toy()
    text = batchify(torch.randint(0, 50, (801 * 4,)), 4)                # (801, 4): 800 rows have a target
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    cfg = TrainConfig(emb_size=8, hidden_size=16, n_layers=2, bptt=20)
    lens = []
    stats = train_epoch(model, opt, text, cfg, torch.Generator().manual_seed(0), on_batch=lambda b: lens.append(b))
    assert sum(b["seq_len"] for b in lens) == 800 == stats["tokens"] / 4 and stats["n_batches"] == len(lens)
    assert len({b["seq_len"] for b in lens}) > 3
    assert all(b["lr"] == 1.0 * b["seq_len"] / 20 and b["tokens"] == 4 * b["seq_len"] for b in lens)
    fixed = []
    train_epoch(model, opt, text, cfg.replace(variable_bptt=False), torch.Generator(),
                on_batch=lambda b: fixed.append(b["seq_len"]))
    assert fixed == [20] * 40                                            # 800 rows in windows of exactly 20
    capped = []
    train_epoch(model, opt, text, cfg, torch.Generator().manual_seed(1), max_len=22,
                on_batch=lambda b: capped.append(b["seq_len"]))
    assert max(capped) <= 22


def test_unigram_perplexity_hand_made():
    assert unigram_perplexity(torch.tensor([0, 1]), torch.tensor([0, 1]), 2, 0.0) == pytest.approx(2.0)
    # counts 3:1, add-one -> 4/6 and 2/6; scoring [0, 1]: exp(-(log 4/6 + log 2/6) / 2)
    assert unigram_perplexity(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 1]), 2) == \
        pytest.approx(math.exp(-(math.log(4 / 6) + math.log(2 / 6)) / 2))
