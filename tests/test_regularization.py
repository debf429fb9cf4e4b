"""Tests of awd_edu.regularization: AR and TAR on hand-made tensors, the tensor each one takes, bad arguments."""
import math

import pytest
import torch

from awd_edu.regularization import activation_reg, ar_tar_penalty, temporal_activation_reg
from awd_edu.viz.regularization import toy_lm_data, train_toy_lm


def t(values):
    "A (T, B, H) float tensor from nested lists."
    return torch.tensor(values, dtype=torch.float32)


# ---------------------------------------------------------------- hand-computed values

def test_ar_hand_computed():
    h = t([[[1, 2]], [[3, 5]]])                 # (T=2, B=1, H=2)
    # squares 1, 4, 9, 25 -> mean 39/4 = 9.75; alpha 2 -> 19.5
    assert activation_reg(h, 2.0).item() == 19.5
    h = t([[[1, -1], [0, 2]]])                  # (T=1, B=2, H=2): squares 1, 1, 0, 4 -> mean 1.5
    assert activation_reg(h, 1.0).item() == 1.5
    assert activation_reg(h, 0.5).item() == 0.75


def test_tar_hand_computed():
    h = t([[[1, 2]], [[3, 5]]])                 # steps +2 and +3: (4 + 9) / 2 = 6.5
    assert temporal_activation_reg(h, 1.0).item() == 6.5
    h = t([[[0]], [[1]], [[3]], [[6]]])         # (T=4, B=1, H=1): steps 1, 2, 3 -> (1 + 4 + 9) / 3
    assert temporal_activation_reg(h, 3.0).item() == pytest.approx(14.0)
    h = t([[[0], [5]], [[2], [5]], [[0], [5]]])  # (T=3, B=2, H=1): steps 2, -2 and 0, 0 -> (4 + 4 + 0 + 0) / 4
    assert temporal_activation_reg(h, 1.0).item() == 2.0


def test_tar_constant_sequence_is_zero():
    h = torch.randn(1, 4, 6).expand(9, 4, 6) * 1000  # the same state at every step, large values
    assert temporal_activation_reg(h, 5.0).item() == 0.0


def test_tar_single_step_is_zero_not_nan():
    for beta in (0.0, 1.0, 7.5):
        out = temporal_activation_reg(torch.randn(1, 3, 4), beta)
        assert out.item() == 0.0 and not torch.isnan(out)
        assert out.dim() == 0


def test_zero_coefficient_computes_nothing():
    # with inf inside, computing 0 * mean(h^2) would give nan: a zero answer shows nothing was computed
    h = torch.full((5, 2, 3), math.inf, requires_grad=True)
    for out in (activation_reg(h, 0.0), temporal_activation_reg(h, 0.0), ar_tar_penalty(dropped_output=h, raw_output=h, alpha=0, beta=0)):
        assert out.item() == 0.0
        assert out.grad_fn is None  # no graph was built
        assert out.dim() == 0


def test_penalties_are_differentiable_scalars():
    h = torch.randn(6, 2, 3, requires_grad=True)
    (activation_reg(h, 2.0) + temporal_activation_reg(h, 1.0)).backward()
    assert h.grad is not None and h.grad.abs().sum() > 0
    # gradient of alpha * mean(h^2) is 2 * alpha * h / numel
    h2 = h.detach().clone().requires_grad_(True)
    activation_reg(h2, 2.0).backward()
    assert torch.allclose(h2.grad, 4.0 * h2.detach() / h2.numel())


def test_dtype_and_device_follow_input():
    h = torch.randn(4, 2, 3, dtype=torch.float64)
    assert activation_reg(h, 1.0).dtype == torch.float64
    assert temporal_activation_reg(h[:1], 1.0).dtype == torch.float64
    assert activation_reg(h, 0.0).dtype == torch.float64


# ---------------------------------------------------------------- axis convention

def test_batch_first_gives_a_different_tar():
    # time-first: sequence 0 climbs 0, 1, 2; sequence 1 stays at 5
    h_tf = t([[[0], [5]], [[1], [5]], [[2], [5]]])      # (T=3, B=2, H=1)
    h_bf = h_tf.transpose(0, 1).contiguous()           # (B=2, T=3, H=1): same numbers, batch first
    assert temporal_activation_reg(h_tf, 1.0).item() == 0.5            # steps 1, 1, 0, 0 -> 2/4
    assert temporal_activation_reg(h_bf, 1.0).item() == pytest.approx(50 / 3)  # 5, 4, 3 between sequences
    assert activation_reg(h_tf, 1.0).item() == activation_reg(h_bf, 1.0).item()  # AR does not care


# ---------------------------------------------------------------- which tensor each takes

def test_ar_takes_dropped_and_tar_takes_raw():
    dropped = t([1, -1, 1, -1]).view(4, 1, 1).expand(4, 2, 3)  # AR (mean sq) 1, TAR (mean sq step) 4
    raw = torch.full((4, 2, 3), 3.0)                           # AR 9, TAR 0
    got = ar_tar_penalty(dropped_output=dropped, raw_output=raw, alpha=2.0, beta=1.0).item()
    assert got == 2 * 1 + 1 * 0
    for wrong in (2 * 9 + 1 * 4, 2 * 1 + 1 * 4, 2 * 9 + 1 * 0):  # swapped, both dropped, both raw
        assert got != wrong


def test_tensor_arguments_are_keyword_only():
    h = torch.randn(3, 2, 2)
    with pytest.raises(TypeError):
        ar_tar_penalty(h, h)  # positional tensors could be swapped silently: not allowed


def test_ar_on_dropped_output_spares_dropped_units():
    # the decoder never saw a dropped unit this step, so AR must not push on it
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(5, 3, 8, generator=g, requires_grad=True)
    mask = torch.bernoulli(torch.full((1, 3, 8), 0.6), generator=g) / 0.6  # locked dropout mask, p = 0.4
    assert (mask == 0).any() and (mask != 0).any()
    activation_reg(raw * mask, 2.0).backward()
    dropped = (mask == 0).expand_as(raw)
    assert (raw.grad[dropped] == 0).all()
    assert (raw.grad[~dropped] != 0).all()


def test_tar_on_dropped_output_would_measure_the_mask():
    g = torch.Generator().manual_seed(1)
    T, B, H, p = 12, 4, 30, 0.4
    steady = torch.randn(1, B, H, generator=g).expand(T, B, H)  # a state that never changes
    per_step_mask = torch.bernoulli(torch.full((T, B, H), 1 - p), generator=g) / (1 - p)
    assert temporal_activation_reg(steady, 1.0).item() == 0.0
    assert temporal_activation_reg(steady * per_step_mask, 1.0).item() > 0.5  # jumps made by dropout alone
    # locked masks: on average TAR is inflated by 1/(1-p), and it varies with the mask
    walk = torch.randn(T, B, H, generator=g).cumsum(0)
    raw_tar = temporal_activation_reg(walk, 1.0).item()
    locked = [temporal_activation_reg(walk * torch.bernoulli(torch.full((1, B, H), 1 - p), generator=g) / (1 - p), 1.0).item()
              for _ in range(400)]
    assert abs(sum(locked) / len(locked) / (raw_tar / (1 - p)) - 1) < 0.05
    assert max(locked) - min(locked) > 0.2 * raw_tar


# ---------------------------------------------------------------- bad arguments

@pytest.mark.parametrize("fn, name", [(activation_reg, "alpha"), (temporal_activation_reg, "beta")])
@pytest.mark.parametrize("coef", [-0.1, -1, float("nan"), float("inf"), "2", True, None])
def test_bad_coefficients(fn, name, coef):
    with pytest.raises(ValueError if type(coef) in (int, float) else TypeError, match=name):
        fn(torch.randn(3, 2, 2), coef)


@pytest.mark.parametrize("fn", [activation_reg, temporal_activation_reg])
@pytest.mark.parametrize("shape", [(5,), (5, 2), (5, 2, 3, 1)])
def test_wrong_rank(fn, shape):
    with pytest.raises(ValueError, match=r"time-first.*3-D"):
        fn(torch.randn(*shape), 1.0)


@pytest.mark.parametrize("fn", [activation_reg, temporal_activation_reg])
def test_not_a_tensor_or_empty(fn):
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn([[[1.0]]], 1.0)
    with pytest.raises(ValueError, match="empty"):
        fn(torch.randn(0, 2, 3), 1.0)


def test_ar_tar_penalty_checks_both_tensors():
    good = torch.randn(4, 2, 3)
    with pytest.raises(ValueError, match="dropped_output"):
        ar_tar_penalty(dropped_output=torch.randn(4, 6), raw_output=good)
    with pytest.raises(ValueError, match="raw_output"):
        ar_tar_penalty(dropped_output=good, raw_output=torch.randn(4, 6))
    with pytest.raises(ValueError, match="same shape"):
        ar_tar_penalty(dropped_output=good, raw_output=torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match="alpha"):
        ar_tar_penalty(dropped_output=good, raw_output=good, alpha=-2)
    with pytest.raises(ValueError, match="beta"):
        ar_tar_penalty(dropped_output=good, raw_output=good, beta=-1)


# ---------------------------------------------------------------- the toy run of the chapter

@pytest.fixture(scope="module")
def tokens():
    g = torch.Generator().manual_seed(0)
    probs = 1.0 / torch.arange(1, 501, dtype=torch.float)          # Zipf-like over 500 word types
    return torch.multinomial(probs, 40_000, replacement=True, generator=g)


def test_toy_lm_data_shapes_and_vocab():
    # ids 5, 5, 5, 7, 7, 2, 9: frequency ranks 5 -> 0, 7 -> 1, then 2 and 9 (one each, by id) -> 2, 3
    tokens = torch.tensor([5, 5, 5, 7, 7, 2, 9] * 16)
    train, valid = toy_lm_data(tokens, vocab=3, n_train=64, n_valid=48)
    assert train.shape == (4, 16) and valid.shape == (6, 8)
    assert train.t().flatten()[:7].tolist() == [0, 0, 0, 1, 1, 2, 2]   # ranks, 9 merged into the "other" id 2
    with pytest.raises(ValueError, match="tokens"):
        toy_lm_data(tokens[:100])


def test_train_toy_lm_alpha_shrinks_beta_smooths(tokens, one_thread):
    train, valid = toy_lm_data(tokens)
    base = train_toy_lm(train, valid, 0, 0, steps=40)
    ar = train_toy_lm(train, valid, 8, 0, steps=40)
    tar = train_toy_lm(train, valid, 0, 8, steps=40)
    assert base["raw"].dim() == 3 and base["raw"].shape[1:] == (8, 64)
    assert ar["magnitude"] < base["magnitude"] / 2
    assert tar["roughness"] < base["roughness"] / 2
    state = torch.get_rng_state()
    again = train_toy_lm(train, valid, 0, 0, steps=40)
    assert again["val_loss"] == base["val_loss"]                   # seeded: a run replays exactly
    assert torch.equal(torch.get_rng_state(), state)               # ... without touching the global generator
