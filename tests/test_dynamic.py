"""Chapter 09a: dynamic evaluation (awd_edu.dynamic).

Expected values come from hand computations or from a step-by-step reference written out here (score a segment, then
apply the update rule term by term), never from the functions under test. Models are tiny; every test takes well
under a second or two on one thread.
"""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

import awd_edu.dynamic as dyn
from awd_edu.cache import cache_nll, stream_outputs
from awd_edu.data import batchify
from awd_edu.dynamic import (DYNAMIC_DEFAULTS, DYNAMIC_GRID, DYNAMIC_SEARCH, check_dynamic_args, dynamic_outputs, dynamic_update,
                             evaluate_dynamic, gradient_rms, rms_norm, search_dynamic, search_grid)
from awd_edu.model import AWDLSTM

V = 30


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    "Tiny models: one torch thread (conftest's fixture restores the count)."


@pytest.fixture
def toy():
    torch.manual_seed(0)
    return AWDLSTM(V, emb_size=8, hidden_size=12, n_layers=2).eval()


@pytest.fixture
def ms_sqrt(toy):
    g = torch.Generator().manual_seed(1)
    return gradient_rms(toy, batchify(torch.randint(0, V, (4 * 21,), generator=g), 4), bptt=5)


@pytest.fixture
def repeated():
    "A passage of 15 random words, eight times over, at batch 1: (120, 1)."
    g = torch.Generator().manual_seed(2)
    return batchify(torch.randint(0, V, (15,), generator=g).repeat(8), 1)


def nll_of(outputs):
    return torch.cat([F.cross_entropy(lo.double(), y, reduction="none") for lo, _, y in outputs])


def static_nll(model, source, bptt=5):
    return nll_of(stream_outputs(model, source, bptt))


# ---------------------------------------------------------------------------------------------------------------
# Settings and their checks

def test_defaults_and_grid_are_dynamiceval_py_s():
    assert DYNAMIC_DEFAULTS == dict(bptt=5, eta=5e-5, lam=0.002, eps=2e-5, batch_size=100)
    assert DYNAMIC_GRID == dict(etas=(3e-5, 4e-5, 5e-5, 6e-5, 7e-5, 1e-4), lams=(0.001, 0.002, 0.003, 0.005))


def test_the_small_search_grid_holds_the_authors_default_and_only_valid_values():
    assert DYNAMIC_DEFAULTS["eta"] in DYNAMIC_SEARCH["etas"] and DYNAMIC_DEFAULTS["lam"] in DYNAMIC_SEARCH["lams"]
    assert max(DYNAMIC_SEARCH["etas"]) > max(DYNAMIC_GRID["etas"])             # larger steps than the authors' too
    for eta in DYNAMIC_SEARCH["etas"]:
        for lam in DYNAMIC_SEARCH["lams"]:
            check_dynamic_args(eta, lam)
    assert DYNAMIC_SEARCH["tokens"] >= 1000


def test_search_grid_scales_both_lists_by_bptt_over_5():
    assert search_grid(5) == (DYNAMIC_GRID["etas"], DYNAMIC_GRID["lams"])
    etas, lams = search_grid(20)
    assert etas == pytest.approx([4 * x for x in DYNAMIC_GRID["etas"]]) and lams == pytest.approx([0.004, 0.008, 0.012, 0.02])


@pytest.mark.parametrize("kwargs, name, error", [
    (dict(eta=-1e-5), "eta", ValueError), (dict(eta=float("inf")), "eta", ValueError),
    (dict(eta=float("nan")), "eta", ValueError), (dict(eta="1e-5"), "eta", TypeError), (dict(eta=True), "eta", TypeError),
    (dict(lam=-0.1), "lam", ValueError), (dict(lam=1.01), "lam", ValueError), (dict(eps=0.0), "eps", ValueError),
    (dict(eps=-1e-8), "eps", ValueError), (dict(bptt=0), "bptt", ValueError), (dict(bptt=2.5), "bptt", TypeError)])
def test_bad_values_are_refused_by_name(toy, ms_sqrt, repeated, kwargs, name, error):
    "Chapter 00's rule: a wrong type is a TypeError, a bad value a ValueError, each naming the function and argument."
    args = dict(eta=1e-3, lam=0.002, eps=2e-5, bptt=5) | kwargs
    with pytest.raises(error, match=f"^evaluate_dynamic: {name} must be"):
        evaluate_dynamic(toy, repeated, ms_sqrt, **args)
    with pytest.raises(error, match=f"^dynamic_outputs: {name} must be"):
        next(dynamic_outputs(toy, repeated, ms_sqrt, **args))
    grid = dict(etas=(1e-3, args["eta"]), lams=(0.002, args["lam"]), eps=args["eps"], bptt=args["bptt"])
    with pytest.raises(error, match=f"^search_dynamic: {name} must be"):
        search_dynamic(toy, repeated, ms_sqrt, **grid)


def test_check_returns_floats_and_an_int():
    assert check_dynamic_args(0, 1, 1e-8, 3) == (0.0, 1.0, 1e-8, 3)


def test_a_text_not_at_batch_1_and_a_bad_cache_are_refused(toy, ms_sqrt, repeated):
    with pytest.raises(ValueError, match="batchified at batch 1"):
        evaluate_dynamic(toy, batchify(torch.arange(20) % V, 2), ms_sqrt)
    with pytest.raises(ValueError, match="cache must be None or dict"):
        evaluate_dynamic(toy, repeated, ms_sqrt, cache=dict(window=10))
    with pytest.raises(ValueError, match="window must be an int"):
        evaluate_dynamic(toy, repeated, ms_sqrt, cache=dict(window=0, theta=1.0, lambdasm=0.1))


def test_statistics_of_another_model_are_refused(toy, repeated):
    other = AWDLSTM(V, emb_size=8, hidden_size=12, n_layers=3)
    g = torch.Generator().manual_seed(0)
    wrong = gradient_rms(other, batchify(torch.randint(0, V, (40,), generator=g), 4), bptt=5)
    with pytest.raises(ValueError, match="one tensor per parameter.*gradient_rms"):
        evaluate_dynamic(toy, repeated, wrong)




# ---------------------------------------------------------------------------------------------------------------
# The statistics

def test_gradient_rms_is_the_rms_of_the_batch_gradients(toy):
    g = torch.Generator().manual_seed(3)
    train = batchify(torch.randint(0, V, (3 * 17,), generator=g), 3)        # (17, 3): segments 0-4, 5-9, 10-14, 15
    toy.train()
    before = copy.deepcopy(toy.state_dict())
    got = gradient_rms(toy, train, bptt=5)
    assert toy.training and all(torch.equal(v, before[k]) for k, v in toy.state_dict().items())
    toy.eval()
    names, params = zip(*toy.named_parameters())
    squares, hidden = [torch.zeros_like(p) for p in params], toy.init_hidden(3)
    for i in (0, 5, 10, 15):                                                # the last batch has one row
        x, y = train[i:i + 5][: len(train) - 1 - i], train[i + 1:i + 6]
        out = toy(x, [(h.detach(), c.detach()) for h, c in hidden])
        hidden = out.hidden
        loss = F.cross_entropy(out.logits.reshape(-1, V), y.reshape(-1))
        squares = [s + gr ** 2 for s, gr in zip(squares, torch.autograd.grad(loss, params))]
    assert set(got) == set(names) and "decoder.weight" not in got          # tied: counted once, as the embedding
    for n, s in zip(names, squares):
        assert torch.allclose(got[n], (s / 4).sqrt(), rtol=1e-5, atol=1e-12), n


def test_gradient_rms_max_batches_stops_early(toy):
    g = torch.Generator().manual_seed(3)
    train = batchify(torch.randint(0, V, (3 * 40,), generator=g), 3)
    assert all(torch.equal(a, b) for a, b in zip(gradient_rms(toy, train, 5, max_batches=2).values(),
                                                 gradient_rms(toy, train[:11], 5).values()))


@pytest.mark.parametrize("train", [torch.arange(10), torch.zeros(1, 4, dtype=torch.long), torch.zeros(5, 2)])
def test_gradient_rms_refuses_a_text_that_is_not_batchified_ids(toy, train):
    with pytest.raises(ValueError, match="gradient_rms: train must be word ids batchified"):
        gradient_rms(toy, train)


def test_rms_norm_divides_by_the_mean_of_the_tensor_means_and_clips_at_one_over_lambda():
    ms = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([4.0])}           # tensor means 2 and 4: average 3
    assert torch.allclose(rms_norm(ms, 0.0)["a"], torch.tensor([1 / 3, 1.0]))
    assert torch.allclose(rms_norm(ms, 0.5)["b"], torch.tensor([4 / 3]))
    assert torch.equal(rms_norm(ms, 1.0)["b"], torch.tensor([1.0]))          # 4/3 clipped at 1/lambda = 1
    with pytest.raises(ValueError, match="rms_norm: lam must be"):
        rms_norm(ms, 2.0)


# ---------------------------------------------------------------------------------------------------------------
# The update rule

def test_dynamic_update_by_hand():
    theta = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
    theta.grad = torch.tensor([0.5, -1.0, 0.0])
    dynamic_update({"w": theta}, {"w": torch.tensor([0.0, 0.0, 3.0])}, {"w": torch.tensor([0.5, 1.0, 0.0])},
                   {"w": torch.tensor([1.0, 0.5, 0.0])}, eta=0.1, lam=0.2, eps=1e-3)
    assert torch.allclose(theta.detach(), torch.tensor([1 - 0.2 - 0.05 / 0.501, 2 - 0.2 + 0.1 / 1.001, 3.0]))


def reference_losses(model, source, ms_sqrt, eta, lam, eps, bptt):
    "The method written out: score a segment, then theta += lam rms_norm (theta_g - theta) - eta g / (rms + eps)."
    work = copy.deepcopy(model).eval()
    avg = sum(r.mean() for r in ms_sqrt.values()) / len(ms_sqrt)
    theta_g = {n: p.detach().clone() for n, p in work.named_parameters()}
    hidden, losses = work.init_hidden(1), []
    for i in range(0, len(source) - 1, bptt):
        x, y = source[i:i + bptt][: len(source) - 1 - i], source[i + 1:i + 1 + bptt][:, 0]
        out = work(x, [(h.detach(), c.detach()) for h, c in hidden])
        hidden = out.hidden
        losses.append(F.cross_entropy(out.logits[:, 0].double(), y, reduction="none").detach())   # scored first
        work.zero_grad()
        F.cross_entropy(out.logits[:, 0], y).backward()
        with torch.no_grad():
            for n, p in work.named_parameters():
                norm = torch.minimum(ms_sqrt[n] / avg, torch.tensor(1 / lam if lam else math.inf))
                dW = lam * norm * (theta_g[n] - p) - eta * p.grad / (ms_sqrt[n] + eps)   # dynamiceval.py's order
                p.copy_(p + dW)
    return torch.cat(losses)


@pytest.mark.parametrize("eta, lam, bptt", [(3e-3, 0.002, 5), (1e-3, 0.5, 3), (3e-3, 0.0, 7)])
def test_the_losses_are_the_written_out_method_s(toy, ms_sqrt, repeated, eta, lam, bptt):
    got = nll_of(dynamic_outputs(toy, repeated, ms_sqrt, eta, lam, 2e-5, bptt))
    want = reference_losses(toy, repeated, ms_sqrt, eta, lam, 2e-5, bptt)
    assert len(got) == len(repeated) - 1 and torch.allclose(got, want, rtol=0, atol=1e-6)
    assert not torch.allclose(want, static_nll(toy, repeated, bptt), atol=1e-3)   # it did adapt


# ---------------------------------------------------------------------------------------------------------------
# The checks of the chapter

def test_a_segment_is_scored_before_the_model_trains_on_it(toy, ms_sqrt, repeated):
    # The last target of segment 3 (positions 15..19) is source[20]. Changing it may change what the model learns
    # from segment 3, so segment 4 on; segments 0..3 were scored before that and must not move by a bit.
    changed = repeated.clone()
    changed[20, 0] = (changed[20, 0] + 1) % V
    a = [lo for lo, _, _ in dynamic_outputs(toy, repeated, ms_sqrt, eta=3e-3, lam=0.002)]
    b = [lo for lo, _, _ in dynamic_outputs(toy, changed, ms_sqrt, eta=3e-3, lam=0.002)]
    assert all(torch.equal(a[k], b[k]) for k in range(4))
    assert not torch.allclose(a[4], b[4], atol=1e-6)


def test_the_first_segment_is_scored_with_the_trained_weights(toy, ms_sqrt, repeated):
    for eta in (0.0, 3e-3, 10.0):
        first = next(dynamic_outputs(toy, repeated, ms_sqrt, eta=eta, lam=0.002))[0]
        assert torch.allclose(first, toy(repeated[:5]).logits[:, 0], rtol=0, atol=1e-6)


def test_eta_zero_is_the_static_model_and_never_moves_a_weight(toy, ms_sqrt, repeated, monkeypatch):
    theta_g = {n: p.detach().clone() for n, p in toy.named_parameters()}
    unmoved = []

    def watched(params, *args, **kwargs):
        dynamic_update(params, *args, **kwargs)
        unmoved.append(all(torch.equal(p, theta_g[n]) for n, p in params.items()))

    monkeypatch.setattr(dyn, "dynamic_update", watched)
    for lam in (0.0, 0.002, 1.0):
        got = nll_of(dynamic_outputs(toy, repeated, ms_sqrt, eta=0.0, lam=lam))
        assert torch.allclose(got, static_nll(toy, repeated), rtol=0, atol=1e-6)
    assert len(unmoved) == 3 * 24 and all(unmoved)
    r = evaluate_dynamic(toy, repeated, ms_sqrt, eta=0.0, lam=0.002)
    assert r["ppl"] == pytest.approx(math.exp(static_nll(toy, repeated).mean().item()), rel=1e-6)


def test_lambda_one_is_not_the_static_model(toy, ms_sqrt, repeated):
    "The chapter's claim: lambda = 1 pulls a weight back only min(RMS_norm, 1) of the way."
    assert min(r.min().item() for r in rms_norm(ms_sqrt, 1.0).values()) < 1
    got = nll_of(dynamic_outputs(toy, repeated, ms_sqrt, eta=3e-3, lam=1.0))
    assert not torch.allclose(got, static_nll(toy, repeated), atol=1e-4)


def test_the_trained_weights_and_mode_are_untouched(toy, ms_sqrt, repeated):
    toy.train()
    before = copy.deepcopy(toy.state_dict())
    r = evaluate_dynamic(toy, repeated, ms_sqrt, eta=10.0, lam=0.0)          # the copy diverges
    assert r["ppl"] > 1e3
    assert toy.training and all(torch.equal(v, before[k]) for k, v in toy.state_dict().items())


def test_it_adapts_to_a_repeated_passage(toy, ms_sqrt, repeated):
    got = nll_of(dynamic_outputs(toy, repeated, ms_sqrt, eta=3e-3, lam=0.002))
    static = static_nll(toy, repeated)
    assert got[60:].mean() < static[60:].mean() - 0.1


# ---------------------------------------------------------------------------------------------------------------
# evaluate_dynamic and search_dynamic

def test_evaluate_dynamic_counts_every_target_once(toy, ms_sqrt):
    g = torch.Generator().manual_seed(4)
    source = batchify(torch.randint(0, V, (23,), generator=g), 1)          # 22 targets: four segments of 5, one of 2
    r = evaluate_dynamic(toy, source, ms_sqrt, eta=3e-3, lam=0.002)
    want = reference_losses(toy, source, ms_sqrt, 3e-3, 0.002, 2e-5, 5)
    assert r["tokens"] == 22 == len(want) and r["loss"] == pytest.approx(want.mean().item(), abs=1e-6)
    assert r["ppl"] == pytest.approx(math.exp(r["loss"])) and r["seconds"] > 0


def test_dynamic_plus_cache_is_the_cache_on_the_adapted_model_s_outputs(toy, ms_sqrt, repeated):
    cache = dict(window=20, theta=1.0, lambdasm=0.3)
    r = evaluate_dynamic(toy, repeated, ms_sqrt, eta=3e-3, lam=0.002, cache=cache)
    logits, hiddens, targets = (torch.cat(p) for p in zip(*dynamic_outputs(toy, repeated, ms_sqrt, 3e-3, 0.002)))
    assert r["cache_loss"] == pytest.approx(cache_nll(logits, hiddens, targets, **cache).mean().item(), abs=1e-9)
    assert r["loss"] == pytest.approx(F.cross_entropy(logits.double(), targets).item(), abs=1e-9)
    assert r["cache_ppl"] < r["ppl"]                                      # the passage repeats: the cache helps
    off = evaluate_dynamic(toy, repeated, ms_sqrt, eta=3e-3, lam=0.002, cache=dict(cache, lambdasm=0.0))
    assert off["cache_loss"] == pytest.approx(off["loss"], abs=1e-12)


def test_search_picks_the_lowest_loss_and_keeps_what_diverged(toy, ms_sqrt, repeated):
    s = search_dynamic(toy, repeated, ms_sqrt, etas=(0.0, 3e-3, 50.0), lams=(0.0, 0.002))
    assert [(r["lam"], r["eta"]) for r in s["grid"]] == [(0.0, 0.0), (0.0, 3e-3), (0.0, 50.0),
                                                         (0.002, 0.0), (0.002, 3e-3), (0.002, 50.0)]
    for r in s["grid"]:
        want = reference_losses(toy, repeated, ms_sqrt, r["eta"], r["lam"], 2e-5, 5).mean().item()
        assert r["loss"] == pytest.approx(want, abs=1e-6) or (math.isnan(want) and math.isnan(r["loss"])) \
            or r["loss"] > 50
    finite = [r for r in s["grid"] if r["loss"] == r["loss"]]
    assert s["best"]["loss"] == min(r["loss"] for r in finite) and s["best"]["eta"] == 3e-3
    assert s["tokens"] == len(repeated) - 1


def test_a_nan_loss_never_wins_the_search(toy, ms_sqrt, repeated, monkeypatch):
    real = dyn.evaluate_dynamic

    def nan_for_big_eta(model, source, ms, eta, lam, eps, bptt, progress=False):
        r = real(model, source, ms, eta, lam, eps, bptt)
        return dict(r, loss=math.nan, ppl=math.nan) if eta > 1 else r

    monkeypatch.setattr(dyn, "evaluate_dynamic", nan_for_big_eta)
    s = dyn.search_dynamic(toy, repeated, ms_sqrt, etas=(5.0, 3e-3), lams=(0.002,))
    assert s["best"]["eta"] == 3e-3


def test_search_refuses_an_empty_grid(toy, ms_sqrt, repeated):
    with pytest.raises(ValueError, match="search_dynamic: etas and lams must each hold at least one value"):
        search_dynamic(toy, repeated, ms_sqrt, etas=(), lams=(0.002,))


def test_progress_bar_on_request(toy, ms_sqrt, repeated, capsys):
    evaluate_dynamic(toy, repeated, ms_sqrt, eta=3e-3, lam=0.002)
    assert "dynamic eval" not in capsys.readouterr().err
    evaluate_dynamic(toy, repeated, ms_sqrt, eta=3e-3, lam=0.002, progress=True)
    assert "dynamic eval (eta 0.003, lambda 0.002)" in capsys.readouterr().err
