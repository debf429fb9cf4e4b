"""Chapter 02: dropout_mask, LockedDropout and embedded_dropout.

Each defining property is written once as a checker (`check_*`), run on the real implementation, and run on a
deliberately wrong implementation (a mask redrawn at each time step, a missing 1/(1-p), a dropped embedding column
instead of a row, the reference code's padding_idx=-1) to prove the checker would catch that fault.
"""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from awd_edu.dropout import LockedDropout, dropout_mask, embedded_dropout

N_DRAWS = 3000  # forward passes averaged in the expectation checks


def expectation_tol(p, n=N_DRAWS):
    "Five standard deviations of the mean of `n` draws of m/(1-p), relative to |input|."
    return 5 * math.sqrt(p / ((1 - p) * n))


# ---------------------------------------------------------------------------------------------------------------
# Checkers: each raises AssertionError when the property fails.

def check_locked_mask(f, p, T=6, B=4, F_=8, seed=0):
    "Same mask at every step, values exactly {0, 1/(1-p)}, a new mask per call, a separate one per sequence."
    torch.manual_seed(seed)
    ones = torch.ones(T, B, F_, dtype=torch.float64)
    m = f(ones)                                        # (T, B, F): on ones, the output is the mask itself
    assert m.shape == (T, B, F_)
    assert torch.equal(m, m[:1].expand_as(m)), "mask differs between time steps"
    vals = set(m.unique().tolist())
    assert vals <= {0.0, 1 / (1 - p)} and 0.0 in vals, f"mask values {vals}, expected {{0, {1 / (1 - p)}}}"
    assert not torch.equal(f(ones), m), "the mask was not redrawn at the next call"
    assert any(not torch.equal(m[0, 0], m[0, b]) for b in range(1, B)), "one mask shared by the whole batch"
    h = torch.randn(T, B, F_, dtype=torch.float64)
    y = f(h)                                           # on any input: h times the mask
    kept = (y != 0)
    assert torch.equal(kept, kept[:1].expand_as(kept)), "mask differs between time steps"
    assert torch.allclose(y, h * kept / (1 - p), rtol=1e-12, atol=0), "output is not h * m / (1-p)"


def check_expectation(f, x, p, n=N_DRAWS):
    "The mean of `n` calls of f(x) is x within five standard deviations, element by element."
    torch.manual_seed(0)
    mean = sum(f(x).detach() for _ in range(n)) / n
    tol = expectation_tol(p, n) * x.abs()
    assert ((mean - x).abs() <= tol).all(), f"max relative error {((mean - x).abs() / x.abs()).max():.4f} " \
                                            f"> {expectation_tol(p, n):.4f}"


def make_batch(V=10, T=8, B=5, d=6, seed=0):
    "An embedding and a (T, B) batch in which every word type occurs several times."
    torch.manual_seed(seed)
    embed = nn.Embedding(V, d)
    words = torch.arange(V).repeat(T * B // V)[torch.randperm(T * B)].view(T, B)
    return embed, words


def check_whole_rows(f, p, V=10, seed=0):
    "Each position is all zeros or the word's row times 1/(1-p); a word's fate is the same at all its positions."
    embed, words = make_batch(V=V, seed=seed)
    e = f(embed, words, p)
    assert e.shape == (*words.shape, embed.embedding_dim)
    dropped = (e == 0).all(-1)                                        # (T, B)
    assert torch.equal(dropped, (e == 0).any(-1)), "part of a word vector was dropped (a column, not a row)"
    assert torch.allclose(e[~dropped], embed.weight[words[~dropped]] / (1 - p), rtol=1e-6, atol=0), \
        "kept rows are not scaled by 1/(1-p)"
    for w in range(V):
        fate = dropped[words == w]
        assert fate.all() or not fate.any(), f"word {w} dropped at some of its positions only"
    n_dropped = sum(bool(dropped[words == w][0]) for w in range(V))
    assert 0 < n_dropped < V


def check_gradients(f, p, V=10):
    "loss = sum of outputs: row w's gradient is count(w) x its mask value (0 or 1/(1-p)), for every row."
    embed, words = make_batch(V=V)
    for seed in range(200):                            # a draw that keeps the last word, then replay it
        torch.manual_seed(seed)
        if f(embed, words, p)[words == V - 1].abs().sum() > 0:
            break
    torch.manual_seed(seed)
    embed.zero_grad()
    e = f(embed, words, p)
    e.sum().backward()
    kept = ~(e == 0).all(-1)
    b = torch.zeros(V).index_put_((words[kept],), torch.tensor(1 / (1 - p)))
    count = torch.bincount(words.flatten(), minlength=V).float()
    expected = (count * b)[:, None].expand_as(embed.weight)
    assert torch.allclose(embed.weight.grad, expected), f"row gradients {embed.weight.grad[:, 0].tolist()}, " \
                                                        f"expected {expected[:, 0].tolist()}"


# ---------------------------------------------------------------------------------------------------------------
# Wrong implementations the checkers must reject.

class LockedPerStep(nn.Module):
    "Wrong: a new mask at every time step (standard dropout)."
    def __init__(self, p): super().__init__(); self.p = p
    def forward(self, x): return x * dropout_mask(x, x.shape, self.p)

class LockedUnscaled(nn.Module):
    "Wrong: the mask is not scaled by 1/(1-p)."
    def __init__(self, p): super().__init__(); self.p = p
    def forward(self, x): return x * (dropout_mask(x, (1, *x.shape[1:]), self.p) > 0)

class LockedSharedBatch(nn.Module):
    "Wrong: one mask (1, 1, F) shared by every sequence of the batch."
    def __init__(self, p): super().__init__(); self.p = p
    def forward(self, x): return x * dropout_mask(x, (1, 1, x.shape[2]), self.p)

def emb_columns(embed, words, p):
    "Wrong: drops columns (features) of the embedding matrix."
    return F.embedding(words, embed.weight * dropout_mask(embed.weight, (1, embed.embedding_dim), p))

def emb_per_token(embed, words, p):
    "Wrong: drops each token independently, so a word can survive at another position."
    return embed(words) * dropout_mask(embed.weight, (*words.shape, 1), p)

def emb_unscaled(embed, words, p):
    "Wrong: the kept rows are not scaled by 1/(1-p)."
    return F.embedding(words, embed.weight * (dropout_mask(embed.weight, (embed.num_embeddings, 1), p) > 0))

def emb_padding_quirk(embed, words, p):
    "Wrong: the reference code's lookup with padding_idx=-1, which freezes the last row."
    w = embed.weight * dropout_mask(embed.weight, (embed.num_embeddings, 1), p)
    return F.embedding(words, w, padding_idx=embed.num_embeddings - 1)


# ---------------------------------------------------------------------------------------------------------------
# dropout_mask

def test_dropout_mask_values_rate_and_like_x():
    torch.manual_seed(0)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    p, n = 0.3, 200_000
    m = dropout_mask(x, (n,), p)
    assert m.shape == (n,) and m.dtype == torch.float64 and m.device == x.device and not m.requires_grad
    assert set(m.unique().tolist()) == {0.0, 1 / (1 - p)}
    assert abs((m == 0).double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert abs(m.mean().item() - 1) < 5 * math.sqrt(p / ((1 - p) * n))


def test_dropout_mask_broadcast_shape_and_p0():
    x = torch.zeros(1)
    assert dropout_mask(x, (1, 4, 5), 0.5).shape == (1, 4, 5)
    assert torch.equal(dropout_mask(x, (3, 2), 0.0), torch.ones(3, 2))


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5, float("nan"), float("inf")])
def test_dropout_mask_rejects_p_outside_0_1(p):
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\)"):
        dropout_mask(torch.zeros(1), (2,), p)


@pytest.mark.parametrize("p", ["0.5", None, True])
def test_dropout_mask_rejects_non_numbers(p):
    with pytest.raises(TypeError, match="p must be a number"):
        dropout_mask(torch.zeros(1), (2,), p)


# ---------------------------------------------------------------------------------------------------------------
# LockedDropout

@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_locked_same_mask_every_step_and_scaled(p):
    check_locked_mask(LockedDropout(p), p)


def test_locked_mask_shape_is_1_B_F():
    torch.manual_seed(0)
    x = torch.ones(5, 3, 7)
    y = LockedDropout(0.5)(x)
    assert y.shape == x.shape
    assert torch.equal(y, y[:1].expand_as(y))           # x of ones: y is the mask, one (B, F) slice repeated


def test_locked_drop_rate():
    torch.manual_seed(0)
    p = 0.3
    y = LockedDropout(p)(torch.ones(2, 200, 500))
    frac = (y[0] == 0).double().mean().item()
    assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / 100_000)


def test_locked_expectation():
    torch.manual_seed(1)
    p = 0.5
    check_expectation(LockedDropout(p), torch.randn(4, 3, 5, dtype=torch.float64), p)


def test_locked_identity_in_eval_and_p0():
    x = torch.randn(4, 2, 3)
    ld = LockedDropout(0.5).eval()
    assert ld(x) is x
    assert LockedDropout(0.0)(x) is x
    ld.train()
    assert not torch.equal(ld(torch.ones(50, 4, 8)), torch.ones(50, 4, 8))


def test_locked_gradient_is_the_mask():
    torch.manual_seed(0)
    x = torch.randn(5, 2, 4, requires_grad=True)
    y = LockedDropout(0.5)(x)
    y.sum().backward()
    assert torch.allclose(x.grad, (y / x).detach())


@pytest.mark.parametrize("p", [1.0, -0.5, 2])
def test_locked_rejects_bad_p(p):
    with pytest.raises(ValueError, match="LockedDropout: p must be a number in"):
        LockedDropout(p)
    ld = LockedDropout(0.5)
    with pytest.raises(ValueError, match="p must be a number in"):
        ld.p = p                                         # also when changed later
    assert ld.p == 0.5


@pytest.mark.parametrize("shape", [(5,), (5, 4), (2, 3, 4, 5)])
def test_locked_rejects_wrong_rank(shape):
    with pytest.raises(ValueError, match=r"x must be 3-D, \(seq_len, batch, features\).*got shape"):
        LockedDropout(0.5)(torch.randn(shape))


def test_locked_rejects_integer_input():
    with pytest.raises(TypeError, match="floating-point"):
        LockedDropout(0.5)(torch.ones(2, 3, 4, dtype=torch.long))


def test_locked_repr():
    assert "p=0.3" in repr(LockedDropout(0.3))


@pytest.mark.parametrize("wrong, why", [(LockedPerStep, "differs between time steps"),
                                         (LockedUnscaled, "mask values"),
                                         (LockedSharedBatch, "shared by the whole batch")])
def test_locked_checks_catch_wrong_implementations(wrong, why):
    with pytest.raises(AssertionError, match=why):
        check_locked_mask(wrong(0.5), 0.5)


def test_expectation_check_catches_missing_scaling():
    with pytest.raises(AssertionError, match="max relative error"):
        check_expectation(LockedUnscaled(0.5), torch.randn(4, 3, 5, dtype=torch.float64), 0.5)


# ---------------------------------------------------------------------------------------------------------------
# embedded_dropout

@pytest.mark.parametrize("p", [0.1, 0.4, 0.7])
def test_embedded_whole_rows_scaled(p):
    check_whole_rows(embedded_dropout, p)


def test_embedded_one_mask_per_forward():
    embed, words = make_batch()
    torch.manual_seed(0)
    a, b = embedded_dropout(embed, words, 0.5), embedded_dropout(embed, words, 0.5)
    assert not torch.equal((a == 0).all(-1), (b == 0).all(-1))


def test_embedded_drop_rate_over_word_types():
    torch.manual_seed(0)
    V, p = 20_000, 0.2
    embed = nn.Embedding(V, 2)
    e = embedded_dropout(embed, torch.arange(V)[:, None], p)          # every word once: (V, 1, 2)
    frac = (e == 0).all(-1).double().mean().item()
    assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / V)


def test_embedded_shapes():
    embed = nn.Embedding(7, 3)
    assert embedded_dropout(embed, torch.zeros(4, 2, dtype=torch.long), 0.3).shape == (4, 2, 3)
    assert embedded_dropout(embed, torch.zeros(5, dtype=torch.int32), 0.3).shape == (5, 3)


def test_embedded_expectation():
    embed, words = make_batch()
    p = 0.4
    torch.manual_seed(0)
    mean = sum(embedded_dropout(embed, words, p).detach() for _ in range(N_DRAWS)) / N_DRAWS
    plain = embed(words).detach()
    assert ((mean - plain).abs() <= expectation_tol(p) * plain.abs()).all()


def test_embedded_identity_in_eval_and_p0():
    embed, words = make_batch()
    assert torch.equal(embedded_dropout(embed, words, 0.0), embed(words))
    embed.eval()
    assert torch.equal(embedded_dropout(embed, words, 0.5), embed(words))


def test_embedded_does_not_change_the_weight():
    embed, words = make_batch()
    w0 = embed.weight.detach().clone()
    embedded_dropout(embed, words, 0.5)
    with torch.no_grad():
        embedded_dropout(embed, words, 0.5)
    assert torch.equal(embed.weight, w0)


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_embedded_gradients_reach_every_row_including_the_last(p):
    check_gradients(embedded_dropout, p)


def test_embedded_gradients_in_eval_reach_every_row():
    embed, words = make_batch()
    embed.eval()
    embedded_dropout(embed, words, 0.5).sum().backward()
    count = torch.bincount(words.flatten(), minlength=embed.num_embeddings).float()
    assert torch.equal(embed.weight.grad, count[:, None].expand_as(embed.weight))
    assert (embed.weight.grad[-1] != 0).all()


def test_embedded_keeps_a_padding_idx_the_user_set():
    torch.manual_seed(0)
    embed = nn.Embedding(6, 3, padding_idx=0)
    words = torch.tensor([[0, 1], [2, 0]])
    embedded_dropout(embed, words, 0.0).sum().backward()
    assert (embed.weight.grad[0] == 0).all() and (embed.weight.grad[1] != 0).all()


@pytest.mark.parametrize("p", [1.0, -0.1, float("nan")])
def test_embedded_rejects_bad_p(p):
    embed, words = make_batch()
    with pytest.raises(ValueError, match=r"embedded_dropout: p must be a number in \[0, 1\)"):
        embedded_dropout(embed, words, p)
    embed.eval()                                                       # refused in eval mode too
    with pytest.raises(ValueError, match="p must be a number in"):
        embedded_dropout(embed, words, p)


def test_embedded_dropout_has_no_old_dropout_keyword():
    embed, words = make_batch()
    with pytest.raises(TypeError, match="dropout"):
        embedded_dropout(embed, words, dropout=0.5)


def test_embedded_positional_p_does_not_warn():
    "awd_edu.model passes p positionally: no warning there."
    embed, words = make_batch()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        embedded_dropout(embed, words, 0.1)
        embedded_dropout(embed, words, p=0.1)


@pytest.mark.parametrize("words", [torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.bool), [[0, 1]]])
def test_embedded_rejects_non_integer_words(words):
    with pytest.raises(TypeError, match="words must be a tensor of integer word ids"):
        embedded_dropout(nn.Embedding(4, 2), words, 0.1)


@pytest.mark.parametrize("bad", [-1, 4])
def test_embedded_rejects_ids_outside_vocabulary(bad):
    with pytest.raises(ValueError, match=r"words must be ids in \[0, 3\]"):
        embedded_dropout(nn.Embedding(4, 2), torch.tensor([[0, bad]]), 0.1)


def test_embedded_rejects_non_embedding():
    with pytest.raises(TypeError, match="embed must be an nn.Embedding"):
        embedded_dropout(nn.Linear(3, 3), torch.zeros(2, 1, dtype=torch.long), 0.1)


@pytest.mark.parametrize("wrong, why", [(emb_columns, "a column, not a row"),
                                         (emb_per_token, "at some of its positions only"),
                                         (emb_unscaled, "not scaled by 1/")])
def test_row_checks_catch_wrong_implementations(wrong, why):
    with pytest.raises(AssertionError, match=why):
        check_whole_rows(wrong, 0.4)


def test_gradient_check_catches_the_padding_idx_quirk():
    with pytest.raises(AssertionError, match="row gradients"):
        check_gradients(emb_padding_quirk, 0.3)


# ---------------------------------------------------------------------------------------------------------------

# ---- one batch over several processes (chapter 08g, issue #27): `shard = (r, W)`
def test_locked_dropout_alone_draws_exactly_the_mask_of_its_own_batch():
    x = torch.randn(5, 4, 3, dtype=torch.float64)
    torch.manual_seed(7)
    expected = x * dropout_mask(x, (1, 4, 3), 0.5)                     # what LockedDropout drew before shards
    torch.manual_seed(7)
    ld = LockedDropout(0.5)
    assert ld.shard == (0, 1) and torch.equal(ld(x), expected)


@pytest.mark.parametrize("W", [2, 3])
def test_locked_dropout_blocks_of_one_stream_make_the_whole_batch_mask(W):
    x = torch.randn(4, 6, 5, dtype=torch.float64)
    torch.manual_seed(3)
    whole = LockedDropout(0.4)(x)
    k, blocks = 6 // W, []
    for r in range(W):
        ld = LockedDropout(0.4)
        ld.shard = (r, W)
        torch.manual_seed(3)                                           # the same stream in every process
        blocks.append(ld(x[:, r * k:(r + 1) * k]))
    assert torch.equal(torch.cat(blocks, dim=1), whole)


@pytest.mark.parametrize("bad", [(2, 2), (-1, 2), (0, 0), (0.0, 1), (True, 2), [0, 1], (0, 1, 2), None])
def test_locked_dropout_refuses_a_shard_that_is_not_a_rank_of_a_world(bad):
    with pytest.raises(ValueError, match=r"shard must be \(rank, world_size\)"):
        LockedDropout(0.5).shard = bad
