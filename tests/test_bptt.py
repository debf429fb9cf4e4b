"""Tests of awd_edu.bptt: the window-length draw, the per-step learning-rate scale, the epoch walk."""
import math
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from awd_edu.bptt import bptt_batches, sample_seq_len, scale_lr, seq_len_pmf, window_starts
from awd_edu.data import batchify


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- sample_seq_len

def test_same_seed_same_lengths_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = [sample_seq_len(70, g) for g in [gen(7)] for _ in range(300)]
    b = [sample_seq_len(70, g) for g in [gen(7)] for _ in range(300)]
    c = [sample_seq_len(70, g) for g in [gen(8)] for _ in range(300)]
    assert a == b
    assert a != c
    assert torch.equal(torch.get_rng_state(), before)


def test_no_generator_still_leaves_global_rng_alone():
    before = torch.get_rng_state()
    lengths = [sample_seq_len(70) for _ in range(50)]
    assert torch.equal(torch.get_rng_state(), before)
    assert all(isinstance(n, int) and n >= 5 for n in lengths)


def test_floor_cap_and_degenerate_settings():
    g = gen(0)
    assert min(sample_seq_len(3, g) for _ in range(300)) == 5          # never below min_len
    assert min(sample_seq_len(3, g, min_len=1) for _ in range(300)) >= 1
    capped = [sample_seq_len(70, g, max_len=80) for _ in range(3000)]
    assert max(capped) == 80                                          # the cap binds (N(70,5) exceeds 80 ~2%)
    assert sample_seq_len(70, g, p_full=1.0, std=0.0) == 70
    assert sample_seq_len(70, g, p_full=0.0, std=0.0) == 35
    assert sample_seq_len(71, g, p_full=0.0, std=0.0) == 35           # int(35.5) truncates
    assert sample_seq_len(8, g, p_full=0.0, std=0.0) == 5             # int(4) raised to min_len


def _exact_mean(bptt, p_full=0.95, std=5.0, min_len=5):
    """E[max(min_len, floor(X))], X a mixture of normals, summed over integer cells (by a route other than sampling)."""
    def cdf(x, mu):
        return 0.5 * (1 + math.erf((x - mu) / (std * math.sqrt(2))))
    total = 0.0
    for base, w in ((bptt, p_full), (bptt / 2, 1 - p_full)):
        total += w * min_len * cdf(min_len + 1, base)
        total += w * sum(k * (cdf(k + 1, base) - cdf(k, base)) for k in range(min_len + 1, int(base + 12 * std)))
    return total


def test_mean_length_matches_reference_number():
    # The paper's code (salesforce/awd-lstm-lm, main.py, train()): base = bptt with probability 0.95 else bptt / 2,
    # seq_len = max(5, int(np.random.normal(base, 5))). At bptt 70 the mean is exactly 67.75
    # (0.95*69.5 + 0.05*34.5: int() truncation takes half a row off each normal mean), i.e. about 67.8.
    assert abs(_exact_mean(70) - 67.75) < 1e-3
    g = gen(2024)
    draws = np.array([sample_seq_len(70, g) for _ in range(50_000)])
    # standard deviation of one draw is about 9.1, so the mean of 50,000 has standard error 0.04: allow 0.15
    assert abs(draws.mean() - 67.75) < 0.15
    assert abs((draws < 52).mean() - 0.05) < 0.006                    # the half-length mode has 5% of the mass


def test_pmf_by_hand_and_against_the_integer_cells():
    # no noise: the base itself, truncated and floored, exactly as sample_seq_len does it
    assert {k: p for k, p in seq_len_pmf(70, p_full=1.0, std=0.0).items() if p} == {70: 1.0}
    assert {k: p for k, p in seq_len_pmf(71, p_full=0.0, std=0.0).items() if p} == {35: 1.0}   # int(35.5)
    assert {k: p for k, p in seq_len_pmf(8, p_full=0.0, std=0.0).items() if p} == {5: 1.0}     # int(4) -> min_len
    assert {k: p for k, p in seq_len_pmf(3, std=0.0).items() if p} == {5: 1.0}                 # below the floor
    pmf = seq_len_pmf(70)
    assert sum(pmf.values()) == pytest.approx(1.0, abs=1e-12)
    assert sum(k * p for k, p in pmf.items()) == pytest.approx(_exact_mean(70), abs=1e-9)
    # the cap collects the upper tail: P(len = 80) = 0.95 P(N(70, 5) >= 80) + 0.05 P(N(35, 5) >= 80)
    tail = lambda mu: 0.5 * math.erfc((80 - mu) / (5 * math.sqrt(2)))
    capped = seq_len_pmf(70, max_len=80)
    assert max(capped) == 80 and capped[80] == pytest.approx(0.95 * tail(70) + 0.05 * tail(35), abs=1e-12)
    with pytest.raises(ValueError, match="p_full"):
        seq_len_pmf(70, p_full=2.0)


def test_pmf_is_the_law_of_the_draws():
    g = gen(11)
    draws = np.array([sample_seq_len(30, g, max_len=36) for _ in range(40_000)])
    pmf = seq_len_pmf(30, max_len=36)
    for k in (14, 27, 30, 33, 36):
        # the standard error of a frequency near 0.1 from 40,000 draws is 0.0015
        assert abs((draws == k).mean() - pmf[k]) < 0.006, k


def test_both_modes_present():
    g = gen(1)
    draws = np.array([sample_seq_len(70, g) for _ in range(5000)])
    assert ((draws > 25) & (draws < 45)).sum() > 150                   # around bptt/2
    assert ((draws > 60) & (draws < 80)).sum() > 4000                  # around bptt


@pytest.mark.parametrize("kwargs, name", [
    (dict(bptt=0), "bptt"), (dict(bptt=-3), "bptt"), (dict(bptt=70.0), "bptt"), (dict(bptt=True), "bptt"),
    (dict(bptt=70, p_full=-0.1), "p_full"), (dict(bptt=70, p_full=1.01), "p_full"),
    (dict(bptt=70, std=-1.0), "std"), (dict(bptt=70, std=float("inf")), "std"), (dict(bptt=70, std=float("nan")), "std"),
    (dict(bptt=70, min_len=0), "min_len"), (dict(bptt=70, max_len=4), "max_len"), (dict(bptt=70, max_len=2.5), "max_len"),
])
def test_sample_seq_len_rejects_bad_arguments(kwargs, name):
    wrong_type = any(isinstance(v, (bool, float)) for k, v in kwargs.items() if k in ("bptt", "min_len", "max_len"))
    with pytest.raises(TypeError if wrong_type else ValueError, match=name):
        sample_seq_len(**kwargs)


def test_sample_seq_len_rejects_non_generator():
    with pytest.raises(TypeError, match="generator"):
        sample_seq_len(70, generator=42)


# ---------------------------------------------------------------- scale_lr

def _optimizer(lrs=(30.0, 0.1)):
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs])


def _restores_exactly(lr_context):
    """True when `lr_context(opt, seq_len, bptt)` scales inside and leaves the bit-exact lrs after a normal exit and an exception."""
    opt = _optimizer()
    original = [g["lr"] for g in opt.param_groups]
    with lr_context(opt, 6, 70):
        if [g["lr"] for g in opt.param_groups] != [lr * 6 / 70 for lr in original]:
            return False
    if [g["lr"] for g in opt.param_groups] != original:
        return False
    try:
        with lr_context(opt, 13, 70):
            raise KeyError("boom")
    except KeyError:
        pass
    return [g["lr"] for g in opt.param_groups] == original


def test_scale_lr_scales_every_group_and_restores_exactly():
    assert _restores_exactly(scale_lr)


def test_the_restore_check_catches_broken_versions():
    @contextmanager
    def never_restores(opt, seq_len, bptt):
        for g in opt.param_groups:
            g["lr"] *= seq_len / bptt
        yield

    @contextmanager
    def divides_back(opt, seq_len, bptt):  # restores by division: off in the last bit for lr=30, 6/70
        for g in opt.param_groups:
            g["lr"] *= seq_len / bptt
        try:
            yield
        finally:
            for g in opt.param_groups:
                g["lr"] /= seq_len / bptt

    @contextmanager
    def no_finally(opt, seq_len, bptt):  # forgets the exception path
        old = [g["lr"] for g in opt.param_groups]
        for g in opt.param_groups:
            g["lr"] *= seq_len / bptt
        yield
        for g, lr in zip(opt.param_groups, old):
            g["lr"] = lr

    for broken in (never_restores, divides_back, no_finally):
        assert not _restores_exactly(broken), broken.__name__


def test_scale_lr_changes_the_step():
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=2.0)
    w.grad = torch.ones(1)
    with scale_lr(opt, 35, 70) as factor:
        opt.step()
    assert factor == 0.5
    assert w.item() == -1.0
    assert opt.param_groups[0]["lr"] == 2.0


def test_scale_lr_many_steps_no_drift():
    opt = _optimizer((30.0,))
    g = gen(3)
    for _ in range(700):
        with scale_lr(opt, sample_seq_len(70, g), 70):
            pass
    assert opt.param_groups[0]["lr"] == 30.0


@pytest.mark.parametrize("args, name", [((0, 70), "seq_len"), ((5, 0), "bptt"), ((5.5, 70), "seq_len")])
def test_scale_lr_rejects_bad_arguments(args, name):
    with pytest.raises(TypeError if any(isinstance(a, float) for a in args) else ValueError, match=name):
        with scale_lr(_optimizer(), *args):
            pass


def test_scale_lr_rejects_non_optimizer():
    with pytest.raises(TypeError, match="optimizer"):
        with scale_lr(object(), 5, 70):
            pass


# ---------------------------------------------------------------- bptt_batches

def _check_covers(source, windows):
    xs, ys, ls = zip(*windows)
    assert all(x.shape == y.shape and x.shape[0] == n >= 1 for x, y, n in zip(xs, ys, ls))
    assert torch.equal(torch.cat(xs), source[:-1])  # every input row once, in order
    assert torch.equal(torch.cat(ys), source[1:])   # every target row once, one row later
    return list(ls)


def test_coverage_property_on_random_sizes():
    rng = np.random.default_rng(0)
    for trial in range(150):
        n_steps = int(rng.integers(2, 400))
        bsz = int(rng.integers(1, 5))
        bptt = int(rng.integers(1, 90))
        source = torch.arange(n_steps * bsz).view(bsz, n_steps).t().contiguous()  # every cell distinct
        g = gen(trial)
        _check_covers(source, bptt_batches(source, bptt, g))
        ls = _check_covers(source, bptt_batches(source, bptt, fixed=True))
        assert all(n == bptt for n in ls[:-1]) and 1 <= ls[-1] <= bptt
        cap = max(5, bptt + int(rng.integers(0, 11)))
        ls = _check_covers(source, bptt_batches(source, bptt, g, max_len=cap))
        assert max(ls) <= cap


def test_coverage_on_batchified_stream():
    stream = torch.arange(1003)
    source = batchify(stream, 7)
    _check_covers(source, bptt_batches(source, 10, gen(0)))


def test_epochs_differ_and_replay_from_seed():
    source = torch.arange(3000).view(1000, 3)
    g = gen(5)
    e1 = [n for *_, n in bptt_batches(source, 20, g)]
    e2 = [n for *_, n in bptt_batches(source, 20, g)]
    assert e1 != e2                                        # the generator moves on: boundaries differ per epoch
    assert [n for *_, n in bptt_batches(source, 20, gen(5))] == e1
    state = torch.get_rng_state()
    list(bptt_batches(source, 20))
    assert torch.equal(torch.get_rng_state(), state)


def test_fixed_uses_no_randomness():
    source = torch.arange(500).view(100, 5)
    g = gen(0)
    before = g.get_state()
    assert [n for *_, n in bptt_batches(source, 30, g, fixed=True)] == [30, 30, 30, 9]
    assert torch.equal(g.get_state(), before)


def test_validation_is_eager():
    good = torch.zeros(10, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="source"):
        bptt_batches(torch.zeros(10, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="source"):
        bptt_batches(torch.zeros(1, 3, dtype=torch.long), 5)
    with pytest.raises(TypeError, match="source"):
        bptt_batches([[1, 2], [3, 4]], 5)
    with pytest.raises(ValueError, match="bptt"):
        bptt_batches(good, 0)
    with pytest.raises(ValueError, match="bptt"):
        bptt_batches(good, 0, fixed=True)
    with pytest.raises(ValueError, match="max_len"):
        bptt_batches(good, 70, max_len=3)
    with pytest.raises(ValueError, match="max_len"):
        bptt_batches(good, 70, max_len=80, fixed=True)
    with pytest.raises(TypeError, match="generator"):
        bptt_batches(good, 5, generator=0)
    with pytest.raises(TypeError, match="fixed"):
        bptt_batches(good, 5, fixed="yes")


def test_ptb_epoch_has_about_686_steps(ptb_corpus):
    # From first principles: PTB's 929,589 training tokens at batch 20 are 46,479 rows; the walk of the paper's
    # train() (salesforce/awd-lstm-lm, main.py) steps i += seq_len, 67.75 rows on average (above), over the
    # 46,478 rows that have a target: 46478/67.75 = 686.0 batches per epoch expected;
    # one epoch's count has a standard deviation of about 3.5, the mean of 10 about 1.1: allow 4.
    train = batchify(ptb_corpus.train, 20)
    g = gen(141)
    counts = []
    for _ in range(10):
        ls = _check_covers(train, bptt_batches(train, 70, g))
        counts.append(len(ls))
    assert abs(np.mean(counts) - 686) < 4
    assert all(670 < c < 702 for c in counts)


def test_window_starts():
    # by hand: 100 rows, rows 0..98 have targets: windows of exactly 30 start at 0, 30, 60 and 90 (9 rows)
    assert window_starts(torch.zeros(100, 2), 30, fixed=True) == [0, 30, 60, 90]
    # by hand, drawn lengths all forced to 5 (max_len = min_len = 5): 23 rows, 0..21 with targets, the last window 2
    assert window_starts(torch.zeros(23, 2), 20, gen(0), max_len=5) == [0, 5, 10, 15, 20]
    # drawn lengths: row r of the stream holds r, so the first input row of each window says where it starts
    source = torch.arange(300).view(300, 1).repeat(1, 2)
    starts = window_starts(source, 20, gen(4))
    firsts = [int(inputs[0, 0]) for inputs, _, _ in bptt_batches(source, 20, gen(4))]
    assert starts == firsts and starts[0] == 0 and len(starts) >= 10 and starts[-1] <= 298
