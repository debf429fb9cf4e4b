"""NT-ASGD (chapter 07): the non-monotonic trigger, the switch to torch.optim.ASGD, and the averaged-weights swap."""

import pytest
import torch
from torch import nn

from awd_edu.ntasgd import NonMonotonicTrigger, averaged_weights, make_asgd, nonmono_condition, trigger_epoch


# ---- the trigger -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("losses, n, epoch", [
    # n = 5. Epoch 7 is the first with more than 5 earlier epochs; it compares 4.5 with epoch 1 (4.0): fires at 7,
    # however bad epochs 2-6 were. (Epochs 2-6 cannot fire: at most 5 earlier epochs.)
    ([4.0, 9.0, 9.0, 9.0, 9.0, 9.0, 4.5], 5, 7),
    # n = 5. Epoch 7 compares 3.9 with epoch 1 (4.0): no. Epoch 8 compares 3.95 with min(epochs 1-2) = 3.8: yes.
    ([4.0, 3.8, 3.7, 3.6, 3.5, 3.4, 3.9, 3.95], 5, 8),
    # n = 2. Epoch 4 (3.0) vs epoch 1 (3.0): equal is not worse. Epoch 5 (3.1) vs min(epochs 1-2) = 3.0: fires.
    ([3.0, 3.5, 3.2, 3.0, 3.1], 2, 5),
    # n = 3. Epoch 5 (2.0) vs epoch 1 (1.0): fires, although it is better than the four epochs just before.
    ([1.0, 5.0, 4.0, 3.0, 2.0], 3, 5),
    # n = 3. Every epoch from 5 on is a new best: never (epoch 5 vs epoch 1, 6 vs min(1-2), ... all lower).
    ([5.0, 4.0, 3.5, 3.6, 3.4, 3.3, 3.2, 3.1], 3, None),
])
def test_hand_made_histories(losses, n, epoch):
    assert trigger_epoch(losses, n) == epoch
    t = NonMonotonicTrigger(n)
    assert [t.step(v) for v in losses] == [e == epoch for e in range(1, len(losses) + 1)]


def test_never_fires_on_a_decreasing_curve():
    for n in (1, 2, 5, 10):
        assert trigger_epoch([10.0 - 0.01 * e for e in range(100)], n) is None


def test_equal_is_not_worse():
    assert trigger_epoch([3.0] * 30, 5) is None
    assert trigger_epoch([5.0, 9, 9, 9, 9, 9, 5.0], 5) is None


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_earliest_switch_is_epoch_n_plus_2(n):
    # epoch n+2 is the first with more than n earlier epochs; only epoch 1 lies outside the window then
    curve = [5.0] + [100.0] * n + [5.001]
    assert trigger_epoch(curve, n) == n + 2
    # an epoch earlier is impossible however bad the loss: the same spike one epoch sooner never fires on it
    assert trigger_epoch([5.0] + [100.0] * n, n) is None


def test_plateau_fires_on_the_exact_epoch():
    # minimum at epoch 4, then a slow rise: epoch 4 leaves the window of n at epoch 4 + n + 1
    plateau = [6.0, 5.5, 5.2, 5.0] + [5.0 + 0.01 * k for k in range(1, 12)]
    for n in (1, 2, 3, 5, 7):
        assert trigger_epoch(plateau, n) == 4 + n + 1


def test_compares_with_min_before_window_not_last_value():
    # epoch 8 (n=2) compares with min(epochs 1..5) = 1.8: not with the previous epoch (1.9), and a window one
    # shorter would fire at epoch 7, one longer not at 8
    losses = [3.0, 2.0, 1.9, 1.95, 1.8, 1.85, 1.9, 1.82]
    assert trigger_epoch(losses, 2) == 8
    assert nonmono_condition(losses[:7], 1.82, 2) and not nonmono_condition(losses[:7], 1.8, 2)


def test_step_returns_true_once_and_keeps_history():
    t = NonMonotonicTrigger(2)
    out = [t.step(v) for v in [3.0, 2.0, 2.5, 3.5, 2.7, 1.0, 9.0, 9.5]]
    assert out == [False, False, False, True, False, False, False, False]
    assert t.fired and t.fired_at == 4 and t.history == [3.0, 2.0, 2.5, 3.5, 2.7, 1.0, 9.0, 9.5]


def test_history_holds_only_earlier_epochs_when_checking():
    # if the current loss were counted in the history, this curve would fire at epoch 6 instead of 7
    curve = [5.0, 9.0, 9.0, 9.0, 9.0, 9.0, 5.01]
    assert trigger_epoch(curve, 5) == 7
    assert trigger_epoch(curve[:6], 5) is None


def test_accepts_tensors_and_state_dict_roundtrip():
    t = NonMonotonicTrigger(3)
    for v in [4.0, 3.0, 2.0]:
        t.step(torch.tensor(v))
    t2 = NonMonotonicTrigger()
    t2.load_state_dict(t.state_dict())
    assert t2.nonmono == 3 and t2.history == [4.0, 3.0, 2.0] and t2.fired_at is None
    assert [t2.step(v) for v in (2.5, 5.0)] == [False, True] and t2.fired_at == 5


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "5", None])
def test_rejects_bad_nonmono(bad):
    with pytest.raises(ValueError if type(bad) is int else TypeError, match="nonmono"):
        NonMonotonicTrigger(bad)


def test_rejects_nan_loss():
    with pytest.raises(ValueError, match="val_loss"):
        NonMonotonicTrigger(2).step(float("nan"))


# ---- ASGD --------------------------------------------------------------------------------------------------------

def test_make_asgd_arguments():
    p = nn.Parameter(torch.zeros(3))
    opt = make_asgd([p], lr=30.0, weight_decay=1.2e-6)
    assert isinstance(opt, torch.optim.ASGD)
    g = opt.param_groups[0]
    assert (g["lr"], g["t0"], g["lambd"], g["weight_decay"]) == (30.0, 0, 0.0, 1.2e-6)
    with pytest.raises(ValueError, match="lr"):
        make_asgd([p], lr=0.0)
    with pytest.raises(ValueError, match="weight_decay"):
        make_asgd([p], lr=1.0, weight_decay=-1.0)


def _quadratic_run(opt_factory, steps=15, seed=0):
    g = torch.Generator().manual_seed(seed)
    X, y = torch.randn(48, 4, generator=g), torch.randn(48, generator=g)
    w = nn.Parameter(torch.randn(4, generator=g))
    opt = opt_factory([w])
    its, axs = [], []
    for k in range(steps):
        rows = slice(8 * (k % 6), 8 * (k % 6) + 8)
        opt.zero_grad()
        ((X[rows] @ w - y[rows]) ** 2).mean().backward()
        opt.step()
        its.append(w.detach().clone())
        if isinstance(opt, torch.optim.ASGD):
            axs.append(opt.state[w]["ax"].clone())
    return its, axs


def test_ax_is_the_mean_of_iterates_two_to_k():
    its, axs = _quadratic_run(lambda ps: make_asgd(ps, lr=0.1, weight_decay=0.01))
    assert torch.equal(axs[0], its[0])
    for k in range(2, len(its) + 1):
        manual = torch.stack(its[1:k]).mean(0)  # w_2 .. w_k
        assert torch.allclose(axs[k - 1], manual, atol=1e-6), k
    # the naive mean over all iterates is not what ASGD keeps
    assert not torch.allclose(axs[-1], torch.stack(its).mean(0), atol=1e-5)


def test_live_weights_follow_sgd_with_l2_weight_decay():
    its_a, _ = _quadratic_run(lambda ps: make_asgd(ps, lr=0.1, weight_decay=0.05))
    its_s, _ = _quadratic_run(lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.05))
    for a, s in zip(its_a, its_s):
        assert torch.allclose(a, s, atol=1e-6)


def test_lr_change_takes_effect_one_step_late():
    w = nn.Parameter(torch.zeros(1))
    opt = make_asgd([w], lr=1.0)
    moves = []
    for lr in (0.5, 2.0, 3.0):
        opt.param_groups[0]["lr"] = lr
        before = w.item()
        opt.zero_grad(); w.sum().backward(); opt.step()
        moves.append(before - w.item())
    assert moves == [0.5, 0.5, 2.0]


# ---- the averaged-weights swap -----------------------------------------------------------------------------------

def _trained_net(steps=5, seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    opt = make_asgd(net.parameters(), lr=0.3, weight_decay=0.01)
    its = []
    for _ in range(steps):
        opt.zero_grad(); net(torch.randn(16, 4)).pow(2).mean().backward(); opt.step()
        its.append({n: p.detach().clone() for n, p in net.named_parameters()})
    return net, opt, its


def test_evaluation_inside_uses_the_mean_of_the_iterates():
    net, opt, its = _trained_net()
    mean = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    mean.load_state_dict({n: torch.stack([it[n] for it in its[1:]]).mean(0) for n in its[0]})
    x = torch.randn(7, 4)
    with averaged_weights(net, opt) as m:
        assert m is net
        inside = net(x)
        for n, p in net.named_parameters():
            assert torch.equal(p, opt.state[p]["ax"])
    assert torch.allclose(inside, mean(x), atol=1e-6)
    assert not torch.allclose(net(x), mean(x), atol=1e-4)


def test_live_weights_restored_bit_identically():
    net, opt, _ = _trained_net()
    live = {n: p.detach().clone() for n, p in net.named_parameters()}
    ptrs = {n: p.data_ptr() for n, p in net.named_parameters()}
    with averaged_weights(net, opt):
        assert any(not torch.equal(p, live[n]) for n, p in net.named_parameters())
    for n, p in net.named_parameters():
        assert torch.equal(p, live[n]) and p.data_ptr() == ptrs[n]


def test_restored_when_the_block_raises():
    net, opt, _ = _trained_net()
    live = {n: p.detach().clone() for n, p in net.named_parameters()}
    with pytest.raises(KeyError):
        with averaged_weights(net, opt):
            raise KeyError("boom")
    assert all(torch.equal(p, live[n]) for n, p in net.named_parameters())


def test_training_continues_from_live_weights():
    # a step after the block must start from the live weights, exactly as without the block
    net_a, opt_a, _ = _trained_net(seed=3)
    net_b, opt_b, _ = _trained_net(seed=3)
    with averaged_weights(net_a, opt_a):
        pass
    x = torch.randn(16, 4)
    for net, opt in ((net_a, opt_a), (net_b, opt_b)):
        opt.zero_grad(); net(x).pow(2).mean().backward(); opt.step()
    assert all(torch.equal(a, b) for a, b in zip(net_a.parameters(), net_b.parameters()))


def test_noop_for_sgd_and_params_without_state():
    net = nn.Linear(3, 3)
    before = [p.detach().clone() for p in net.parameters()]
    with averaged_weights(net, torch.optim.SGD(net.parameters(), lr=1.0)):
        assert all(torch.equal(p, b) for p, b in zip(net.parameters(), before))
    # a parameter outside the ASGD optimizer keeps its live value inside the block
    net2 = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    opt = make_asgd(net2[0].parameters(), lr=0.5)
    net2(torch.randn(4, 2)).sum().backward(); opt.step()
    frozen = [p.detach().clone() for p in net2[1].parameters()]
    with averaged_weights(net2, opt):
        assert all(torch.equal(p, f) for p, f in zip(net2[1].parameters(), frozen))


def test_tied_parameter_swapped_once_and_storage_kept():
    emb, dec = nn.Embedding(5, 3), nn.Linear(3, 5)
    dec.weight = emb.weight
    model = nn.ModuleDict(dict(emb=emb, dec=dec))
    opt = make_asgd(model.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad(); dec(emb(torch.tensor([1, 2, 3]))).logsumexp(-1).sum().backward(); opt.step()
    live = emb.weight.detach().clone()
    with averaged_weights(model, opt):
        assert dec.weight is emb.weight and torch.equal(emb.weight, opt.state[emb.weight]["ax"])
    assert torch.equal(emb.weight, live)



def test_multi_tensor_path_used_on_gpu_keeps_the_same_mean():
    # on CUDA, torch.optim.ASGD defaults to its foreach (multi-tensor) implementation; check it on CPU
    its, axs = _quadratic_run(lambda ps: torch.optim.ASGD(ps, lr=0.1, t0=0, lambd=0.0, weight_decay=0.01,
                                                          foreach=True))
    for k in range(2, len(its) + 1):
        assert torch.allclose(axs[k - 1], torch.stack(its[1:k]).mean(0), atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_averaged_weights_on_cuda():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).cuda()
    opt = make_asgd(net.parameters(), lr=0.3)
    for _ in range(4):
        opt.zero_grad(); net(torch.randn(16, 4, device="cuda")).pow(2).mean().backward(); opt.step()
    live = [p.detach().clone() for p in net.parameters()]
    with averaged_weights(net, opt):
        assert all(torch.equal(p, opt.state[p]["ax"]) for p in net.parameters())
    assert all(torch.equal(p, l) for p, l in zip(net.parameters(), live))
