"""Chapter 09: the neural cache (awd_edu.cache).

Conventions: position t reads x_t, its key is hiddens[t] (the last layer's raw output), its value targets[t] = x_{t+1}.
Position t >= window attends to the stored positions t-window .. t-1 (never to itself); earlier ones use the model.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from awd_edu.cache import (CACHE_PRESETS, NeuralCache, cache_attention, cache_log_p, cache_nll, cache_nll_loop,
                           collect_outputs, evaluate_with_cache, mix_nll, stream_outputs)
from awd_edu.data import batchify
from awd_edu.model import AWDLSTM


def random_stream(T=150, V=20, H=8, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(T, V, generator=g), scale * torch.randn(T, H, generator=g),
            torch.randint(0, V, (T,), generator=g))


def model_nll(logits, targets):
    return F.cross_entropy(logits.double(), targets, reduction="none")


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return AWDLSTM(50, emb_size=8, hidden_size=12, n_layers=2).eval()


# ---------------------------------------------------------------------------------------------------------------
# Presets

def test_presets_are_the_papers():
    assert CACHE_PRESETS == {"ptb": dict(window=500, theta=1.0, lambdasm=0.1),
                             "wikitext2": dict(window=3785, theta=0.662, lambdasm=0.1279)}


# ---------------------------------------------------------------------------------------------------------------
# The loop reference against hand computations (so the reference itself is right)

def test_loop_matches_a_hand_computed_position():
    logits, hiddens, targets = random_stream(T=12, V=5, H=3, seed=4)
    W, theta, lam, t = 4, 0.7, 0.25, 9
    scores = torch.tensor([theta * float(hiddens[t] @ hiddens[i]) for i in range(t - W, t)])
    a = torch.exp(scores.double()) / torch.exp(scores.double()).sum()
    p_cache = sum(float(a[k]) for k, i in enumerate(range(t - W, t)) if targets[i] == targets[t])
    p_model = float(torch.softmax(logits[t].double(), 0)[targets[t]])
    expected = -math.log(lam * p_cache + (1 - lam) * p_model)
    assert cache_nll_loop(logits, hiddens, targets, W, theta, lam)[t].item() == pytest.approx(expected, abs=1e-9)
    assert cache_nll(logits, hiddens, targets, W, theta, lam)[t].item() == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("fn", [cache_nll_loop, cache_nll])
def test_theta_zero_is_a_count_cache(fn):
    logits, hiddens, targets = random_stream(T=80, V=6, seed=1)
    W, lam = 10, 0.4
    inputs = torch.cat([torch.tensor([0]), targets[:-1]])              # x_t (x_0 arbitrary, never stored)
    nll = fn(logits, hiddens, targets, W, 0.0, lam)
    p_model = torch.softmax(logits.double(), -1).gather(1, targets[:, None])[:, 0]
    for t in range(W, 80):
        share = (inputs[t - W + 1:t + 1] == targets[t]).double().mean()  # values x_{t-W+1} .. x_t
        assert nll[t].item() == pytest.approx(-math.log(lam * share + (1 - lam) * p_model[t]), abs=1e-9)


@pytest.mark.parametrize("fn", [cache_nll_loop, cache_nll])
def test_current_position_is_not_in_its_own_memory(fn):
    # window 1, lambda 1: the only stored value is x_t, so the cache is right exactly when x_{t+1} == x_t.
    # Had the current pair (h_t, x_{t+1}) been stored first, every loss would be 0.
    _, hiddens, targets = random_stream(T=200, V=3, seed=2)
    logits = torch.zeros(200, 3)
    nll = fn(logits, hiddens, targets, 1, 1.0, 1.0)[1:]
    repeat = targets[1:] == targets[:-1]
    assert repeat.any() and (~repeat).any()
    assert torch.all(nll[repeat] == 0) and torch.all(torch.isinf(nll[~repeat]))


@pytest.mark.parametrize("fn", [cache_nll_loop, cache_nll])
def test_no_cache_for_the_first_window_positions(fn):
    logits, hiddens, targets = random_stream(T=60, V=4, seed=3)
    W = 25
    nll = fn(logits, hiddens, targets, W, 1.0, 0.5)
    base = model_nll(logits, targets)
    assert torch.allclose(nll[:W], base[:W], atol=1e-12, rtol=0)
    assert not torch.isclose(nll[W], base[W])                          # position W is the first cached one
    assert torch.all(~torch.isclose(nll[W:], base[W:]))


# ---------------------------------------------------------------------------------------------------------------
# The vectorised version equals the loop

@pytest.mark.parametrize("window", [1, 3, 40, 149, 150, 400])
@pytest.mark.parametrize("theta", [0.0, 0.3, 1.0, 3.0])
def test_vectorised_equals_loop(window, theta):
    logits, hiddens, targets = random_stream(T=150, V=12, seed=window)
    for lam in (0.0, 0.1, 0.6, 1.0):
        slow = cache_nll_loop(logits, hiddens, targets, window, theta, lam)
        for chunk in (1, 17, 64, 1000):
            fast = cache_nll(logits, hiddens, targets, window, theta, lam, chunk_size=chunk)
            assert fast.dtype == torch.float64 and fast.shape == (150,)
            assert torch.equal(torch.isinf(fast), torch.isinf(slow))
            ok = torch.isfinite(slow)
            assert torch.allclose(fast[ok], slow[ok], atol=1e-6, rtol=0), (window, theta, lam, chunk)


def test_lambda_zero_is_the_model_exactly():
    logits, hiddens, targets = random_stream(T=120, V=30, seed=5)
    assert torch.equal(cache_nll(logits, hiddens, targets, 10, 1.0, 0.0), model_nll(logits, targets))


def test_neural_cache_carries_memory_across_uneven_chunks():
    logits, hiddens, targets = random_stream(T=140, V=9, seed=6)
    W, theta, lam = 30, 0.8, 0.3
    whole = cache_nll_loop(logits, hiddens, targets, W, theta, lam)
    cache, parts, s = NeuralCache(W, theta, lam), [], 0
    for n in (5, 1, 24, 3, 60, 47):                                    # boundaries before, at and after W
        nll, base = cache.nll(logits[s:s + n], hiddens[s:s + n], targets[s:s + n])
        assert torch.equal(base, model_nll(logits[s:s + n], targets[s:s + n]))
        parts.append(nll); s += n
    assert s == 140 and cache.seen == 140 and len(cache.keys) == W
    assert torch.allclose(torch.cat(parts), whole, atol=1e-9, rtol=0)
    cache.reset()
    assert cache.seen == 0 and cache.keys is None


def test_log_p_cache_is_nan_before_the_window_and_a_log_probability_after():
    _, hiddens, targets = random_stream(T=50, V=5, seed=7)
    lpc = cache_log_p(hiddens, targets, 20, 1.0)
    assert torch.isnan(lpc[:20]).all() and not torch.isnan(lpc[20:]).any()
    assert torch.all(lpc[20:] <= 0)


def test_mix_nll_is_the_mixture():
    log_p_cache = torch.tensor([math.nan, math.log(0.5), -math.inf, 0.0], dtype=torch.float64)
    log_p_model = torch.log(torch.tensor([0.2, 0.1, 0.4, 0.3], dtype=torch.float64))
    nll = mix_nll(log_p_cache, log_p_model, 0.25)
    expected = [-math.log(0.2), -math.log(0.25 * 0.5 + 0.75 * 0.1), -math.log(0.75 * 0.4), -math.log(0.25 + 0.75 * 0.3)]
    assert nll.tolist() == pytest.approx(expected, abs=1e-12)


def test_cache_attention_is_the_loops_attention():
    _, hiddens, targets = random_stream(T=40, V=5, seed=8)
    W, theta, t = 10, 1.3, 33
    a = cache_attention(hiddens, t, W, theta)
    assert a.shape == (W,) and a.sum().item() == pytest.approx(1.0, abs=1e-12)
    p_cache = a[targets[t - W:t] == targets[t]].sum()
    assert p_cache.log().item() == pytest.approx(cache_log_p(hiddens, targets, W, theta)[t].item(), abs=1e-9)
    assert torch.allclose(cache_attention(hiddens, t, W, 0.0), torch.full((W,), 1 / W, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------------------------
# Evaluating a model

def one_pass(model, source):
    "Outputs over the whole text in one forward pass: what windowed evaluation must reproduce."
    return [torch.cat(p) for p in zip(*stream_outputs(model, source, bptt=len(source)))]


@pytest.mark.parametrize("bptt", [7, 35])
def test_evaluate_carries_state_and_memory_across_windows(tiny_model, bptt):
    g = torch.Generator().manual_seed(9)
    source = batchify(torch.randint(0, 50, (300,), generator=g), 1)
    logits, hiddens, targets = one_pass(tiny_model, source)
    W, theta, lam = 60, 2.0, 0.3                                         # window longer than bptt
    expected = cache_nll(logits, hiddens, targets, W, theta, lam)
    r = evaluate_with_cache(tiny_model, source, window=W, theta=theta, lambdasm=lam, bptt=bptt)
    assert set(r) == {"loss", "ppl", "base_loss", "base_ppl"}
    assert r["loss"] == pytest.approx(expected.mean().item(), rel=1e-6)
    assert r["base_loss"] == pytest.approx(model_nll(logits, targets).mean().item(), rel=1e-6)
    assert r["ppl"] == pytest.approx(math.exp(r["loss"])) and r["base_ppl"] == pytest.approx(math.exp(r["base_loss"]))
    # a cache whose memory was emptied at every window would differ
    reset_each_window = torch.cat([cache_nll(logits[i:i + bptt], hiddens[i:i + bptt], targets[i:i + bptt], W, theta, lam)
                                   for i in range(0, len(targets), bptt)])
    assert abs(reset_each_window.mean().item() - r["loss"]) > 1e-3


def test_evaluate_lambda_zero_is_the_models_perplexity(tiny_model):
    g = torch.Generator().manual_seed(10)
    source = batchify(torch.randint(0, 50, (200,), generator=g), 1)
    r = evaluate_with_cache(tiny_model, source, window=30, theta=1.0, lambdasm=0.0, bptt=20)
    assert r["loss"] == r["base_loss"] and r["ppl"] == r["base_ppl"]
    logits, _, targets = one_pass(tiny_model, source)
    assert r["base_loss"] == pytest.approx(model_nll(logits, targets).mean().item(), rel=1e-6)


def test_repeated_text_is_easier_with_the_cache():
    torch.manual_seed(1)
    model = AWDLSTM(1000, emb_size=8, hidden_size=12, n_layers=2)             # untrained: p_model ~ 1/1000
    g = torch.Generator().manual_seed(11)
    source = batchify(torch.randint(0, 1000, (40,), generator=g).repeat(8), 1)  # one passage eight times
    r = evaluate_with_cache(model, source, window=40, theta=1.0, lambdasm=0.5, bptt=35)
    assert r["ppl"] < 0.2 * r["base_ppl"]
    fresh = batchify(torch.randint(0, 1000, (320,), generator=g), 1)           # no repetition: no gain
    s = evaluate_with_cache(model, fresh, window=40, theta=1.0, lambdasm=0.5, bptt=35)
    assert s["ppl"] > 0.9 * s["base_ppl"]


def test_evaluate_restores_the_training_mode(tiny_model):
    source = batchify(torch.arange(60) % 50, 1)
    tiny_model.train()
    try:
        evaluate_with_cache(tiny_model, source, window=10, bptt=16)
        assert tiny_model.training
        a = evaluate_with_cache(tiny_model, source, window=10, bptt=16)     # dropout off: deterministic
        b = evaluate_with_cache(tiny_model, source, window=10, bptt=16)
        assert a == b
    finally:
        tiny_model.eval()
    evaluate_with_cache(tiny_model, source, window=10, bptt=16)
    assert not tiny_model.training


def test_collect_outputs_matches_the_model(tiny_model):
    g = torch.Generator().manual_seed(12)
    source = batchify(torch.randint(0, 50, (90,), generator=g), 1)
    log_p_model, hiddens, targets = collect_outputs(tiny_model, source, bptt=25)
    logits, h1, y1 = one_pass(tiny_model, source)
    assert torch.equal(targets, y1) and hiddens.shape == (89, 8)
    assert torch.allclose(-log_p_model, model_nll(logits, y1), atol=1e-5)
    assert torch.allclose(hiddens, h1.double(), atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_evaluate_on_cuda_matches_cpu(tiny_model):
    g = torch.Generator().manual_seed(13)
    source = batchify(torch.randint(0, 50, (200,), generator=g), 1)
    cpu = evaluate_with_cache(tiny_model, source, window=50, bptt=35)
    gpu_model = AWDLSTM(50, emb_size=8, hidden_size=12, n_layers=2).cuda().eval()
    gpu_model.load_state_dict(tiny_model.state_dict())
    gpu = evaluate_with_cache(gpu_model, source, window=50, bptt=35)
    for k in cpu:
        assert gpu[k] == pytest.approx(cpu[k], rel=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Invalid arguments

BAD = [   # (bad argument, its name, the error chapter 00's rule gives: TypeError for a wrong type)
    (dict(window=0), "window", ValueError), (dict(window=-3), "window", ValueError),
    (dict(window=2.5), "window", TypeError), (dict(window=True), "window", TypeError),
    (dict(theta=-0.1), "theta", ValueError), (dict(theta=math.inf), "theta", ValueError),
    (dict(theta=math.nan), "theta", ValueError), (dict(theta="1"), "theta", TypeError),
    (dict(lambdasm=-0.01), "lambdasm", ValueError), (dict(lambdasm=1.5), "lambdasm", ValueError),
    (dict(lambdasm=math.nan), "lambdasm", ValueError),
]


@pytest.mark.parametrize("bad,name,error", BAD)
def test_bad_cache_args_raise_naming_the_argument(bad, name, error):
    logits, hiddens, targets = random_stream(T=20, V=5, seed=0)
    args = dict(window=5, theta=1.0, lambdasm=0.1, **{})
    args.update(bad)
    value = repr(bad[name])
    for call in (lambda: cache_nll(logits, hiddens, targets, **args),
                 lambda: cache_nll_loop(logits, hiddens, targets, **args),
                 lambda: NeuralCache(**args)):
        with pytest.raises(error, match=name) as e:
            call()
        assert value in str(e.value)


@pytest.mark.parametrize("bad,name,error", BAD)
def test_evaluate_rejects_bad_cache_args(tiny_model, bad, name, error):
    args = dict(window=5, theta=1.0, lambdasm=0.1)
    args.update(bad)
    with pytest.raises(error, match=name):
        evaluate_with_cache(tiny_model, batchify(torch.arange(30) % 50, 1), **args)


@pytest.mark.parametrize("source", [torch.arange(40) % 50,                      # 1-D, not batchified
                                    batchify(torch.arange(40) % 50, 2),         # batch 2
                                    torch.zeros(1, 1, dtype=torch.long)])        # nothing to predict
def test_evaluate_rejects_a_source_not_at_batch_1(tiny_model, source):
    with pytest.raises(ValueError, match=r"source must be .*batch 1.*\(n_steps, 1\)"):
        evaluate_with_cache(tiny_model, source)


def test_evaluate_rejects_float_source_and_bad_bptt(tiny_model):
    with pytest.raises(TypeError, match="torch.long"):
        evaluate_with_cache(tiny_model, torch.zeros(10, 1))
    with pytest.raises(ValueError, match="bptt"):
        evaluate_with_cache(tiny_model, batchify(torch.arange(30) % 50, 1), bptt=0)


def test_stream_shape_errors():
    logits, hiddens, targets = random_stream(T=20, V=5)
    with pytest.raises(ValueError, match="same length"):
        cache_nll(logits, hiddens[:-1], targets, 5, 1.0, 0.1)
    with pytest.raises(ValueError, match=r"hiddens must have shape \(T, H\)"):
        cache_nll(logits, hiddens[None], targets, 5, 1.0, 0.1)
    with pytest.raises(TypeError, match="targets must hold word ids"):
        cache_nll(logits, hiddens, targets.float(), 5, 1.0, 0.1)
    with pytest.raises(ValueError, match="chunk_size"):
        cache_nll(logits, hiddens, targets, 5, 1.0, 0.1, chunk_size=0)
    with pytest.raises(ValueError, match=r"cache_attention: t must be an int in \[5, 19\] \(a position with a full window"):
        cache_attention(hiddens, 3, 5, 1.0)
    with pytest.raises(TypeError, match="cache_attention: t must be an int"):
        cache_attention(hiddens, 7.0, 5, 1.0)
