"""Chapter 01: WeightDrop (DropConnect on weight_hh): the method's claims, its engineering, its errors.

Each property test is also run on deliberately wrong implementations (a mask redrawn at every time step, a mask
without the 1/(1-p) scale) to show it would catch them.
"""
import copy
import io
import warnings

import pytest
import torch
from torch import nn

from awd_edu.lstm import LSTMCell, run_gates
from awd_edu.weight_drop import WeightDrop, weight_drop_mask


# ---- deliberately wrong implementations, for the tests' teeth ----
class PerStepMask(WeightDrop):
    "WRONG: a new mask at every time step (the module is fed one step at a time)."
    def forward(self, x, state=None):
        ys = []
        for x_t in x.split(1):
            y_t, state = super().forward(x_t, state)
            ys.append(y_t)
        return torch.cat(ys), state


class Unscaled(WeightDrop):
    "WRONG: drops entries but does not divide by 1 - p."
    def _mask(self, U):
        return (torch.rand_like(U) >= self.p).to(U.dtype)


def fused_equals_stepwise(wd, x, tol=1e-10):
    "The wrapped 1-layer LSTM's output equals chapter 00's cell run step by step with ONE U~ = (M != 0) U / (1-p)."
    y, _ = wd(x)
    m = wd.module
    cell = LSTMCell(m.input_size, m.hidden_size).to(x.dtype)
    with torch.no_grad():
        for n in ("weight_ih", "bias_ih", "bias_hh"):
            getattr(cell, n).copy_(getattr(m, f"{n}_l0"))
    keep = wd.last_masks["weight_hh_l0"] != 0
    U_tilde = (keep * wd.weight_hh_l0_raw) / (1 - wd.p)
    y_steps = run_gates(cell, x, weight_hh=U_tilde)["h"]
    return bool((y - y_steps).abs().max() < tol)


def mean_mask(wd, x, calls=100):
    masks = []
    for _ in range(calls):
        wd(x)
        masks.append(wd.last_masks["weight_hh_l0"])
    return torch.stack(masks).mean().item()


def _lstm64(seed=0, **kw):
    torch.manual_seed(seed)
    return nn.LSTM(6, 10, **kw).double()


# ---- the mask ----
def test_weight_drop_mask_values_rate_and_generator():
    U = torch.randn(300, 100)
    for p in (0.0, 0.2, 0.5, 0.8):
        M = weight_drop_mask(U, p)
        assert M.shape == U.shape and M.dtype == U.dtype
        assert torch.all((M == 0) | ((M - 1 / (1 - p)).abs() < 1e-6))  # 0 or 1/(1-p), nothing else
        # 30,000 draws: std of the zero fraction <= 0.0029; 0.015 is > 5 std
        assert abs((M == 0).float().mean().item() - p) < 0.015
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(weight_drop_mask(U, 0.5, g1), weight_drop_mask(U, 0.5, g2))
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\)"):
        weight_drop_mask(U, 1.0)


# ---- the method's claims ----
@pytest.mark.parametrize("Module", [nn.LSTM, nn.GRU, nn.RNN])
def test_p0_equals_wrapped_module_exactly(Module):
    torch.manual_seed(0)
    plain = Module(6, 10, num_layers=2).double()
    wd = WeightDrop(copy.deepcopy(plain), ("weight_hh_l0", "weight_hh_l1"), p=0.0)
    x = torch.randn(7, 3, 6, dtype=torch.float64)
    y, h = wd(x)
    y_ref, h_ref = plain(x)
    assert torch.equal(y, y_ref)
    if Module is nn.LSTM:
        assert torch.equal(h[0], h_ref[0]) and torch.equal(h[1], h_ref[1])
    else:
        assert torch.equal(h, h_ref)


@pytest.mark.parametrize("seq_len,batch", [(1, 1), (25, 1), (25, 4)])
def test_same_mask_at_every_time_step(seq_len, batch):
    wd = WeightDrop(_lstm64(1), p=0.5)
    x = torch.randn(seq_len, batch, 6, dtype=torch.float64)
    assert fused_equals_stepwise(wd, x)


def test_stepwise_proof_catches_a_per_step_mask_and_a_missing_scale():
    x = torch.randn(25, 3, 6, dtype=torch.float64)
    assert not fused_equals_stepwise(PerStepMask(_lstm64(1), p=0.5), x)
    assert not fused_equals_stepwise(Unscaled(_lstm64(1), p=0.5), x)


def test_a_new_mask_on_every_call():
    wd = WeightDrop(_lstm64(2), p=0.5)
    x = torch.randn(5, 2, 6, dtype=torch.float64)
    y1, _ = wd(x); M1 = wd.last_masks["weight_hh_l0"]
    y2, _ = wd(x); M2 = wd.last_masks["weight_hh_l0"]
    assert not torch.equal(M1, M2) and not torch.equal(y1, y2)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_empirical_drop_rate_matches_p(p):
    torch.manual_seed(3)
    wd = WeightDrop(nn.LSTM(4, 64), p=p)  # weight_hh: 256 x 64 = 16,384 entries
    wd(torch.randn(3, 2, 4))
    rate = (wd.last_masks["weight_hh_l0"] == 0).float().mean().item()
    assert abs(rate - p) < 0.02  # std sqrt(p(1-p)/16384) <= 0.0039: 0.02 is > 5 std


def test_mask_is_unbiased_and_a_missing_scale_is_caught():
    x = torch.randn(2, 1, 6, dtype=torch.float64)
    torch.manual_seed(4)
    # E[M] = 1: 100 calls x 400 entries, std sqrt(p/(1-p)/40000) = 0.005 at p = 0.5; tolerance 0.03
    assert abs(mean_mask(WeightDrop(_lstm64(4), p=0.5), x) - 1) < 0.03
    assert abs(mean_mask(Unscaled(_lstm64(4), p=0.5), x) - 1) > 0.3


def test_mask_values_are_zero_or_inverse_keep_probability():
    wd = WeightDrop(_lstm64(5), p=0.25)
    wd(torch.randn(3, 2, 6, dtype=torch.float64))
    M = wd.last_masks["weight_hh_l0"]
    assert torch.all((M == 0) | ((M - 1 / 0.75).abs() < 1e-12))


def test_gradients_reach_raw_weights_and_are_zero_where_dropped():
    wd = WeightDrop(_lstm64(6), p=0.5)
    y, (h, c) = wd(torch.randn(6, 3, 6, dtype=torch.float64))
    (y.pow(2).sum() + c.sum()).backward()
    G, M = wd.weight_hh_l0_raw.grad, wd.last_masks["weight_hh_l0"]
    assert G is not None
    assert torch.all(G[M == 0] == 0)
    assert (G[M != 0] != 0).float().mean() > 0.95
    assert wd.module.weight_ih_l0.grad.abs().sum() > 0


def test_gradient_equals_stepwise_gradient():
    "The fused backward through M ⊙ U / (1-p) equals autograd through chapter 00's cell with the same mask."
    wd = WeightDrop(_lstm64(7), p=0.4)
    x = torch.randn(5, 2, 6, dtype=torch.float64)
    y, _ = wd(x)
    g_fused, = torch.autograd.grad(y.sum(), [wd.weight_hh_l0_raw])
    m = wd.module
    cell = LSTMCell(6, 10).double()
    with torch.no_grad():
        for n in ("weight_ih", "bias_ih", "bias_hh"):
            getattr(cell, n).copy_(getattr(m, f"{n}_l0"))
    U = wd.weight_hh_l0_raw.detach().clone().requires_grad_()
    y2 = run_gates(cell, x, weight_hh=U * wd.last_masks["weight_hh_l0"])["h"]
    g_steps, = torch.autograd.grad(y2.sum(), [U])
    assert (g_fused - g_steps).abs().max() < 1e-10


def test_eval_uses_raw_weights_deterministically_over_cycles():
    torch.manual_seed(8)
    plain = nn.LSTM(6, 10, num_layers=2).double()
    wd = WeightDrop(copy.deepcopy(plain), ("weight_hh_l0", "weight_hh_l1"), p=0.6)
    x = torch.randn(7, 2, 6, dtype=torch.float64)
    names = [n for n, _ in wd.named_parameters()]
    n_params = sum(p.numel() for p in wd.parameters())
    for _ in range(4):
        wd.train(); y_train, _ = wd(x)
        wd.eval(); y_eval, _ = wd(x)
        assert torch.equal(y_eval, wd(x)[0])
        assert torch.equal(y_eval, plain(x)[0])
        assert not torch.equal(y_train, y_eval)
        assert [n for n, _ in wd.named_parameters()] == names
        assert sum(p.numel() for p in wd.parameters()) == n_params == sum(p.numel() for p in plain.parameters())
        assert "weight_hh_l0" not in wd.module._parameters and wd.module.weight_hh_l0 is None
    assert wd.last_masks == {}  # the last call was in eval: nothing dropped


def test_multi_layer_drops_each_named_weight_only():
    wd = WeightDrop(_lstm64(9, num_layers=2), ("weight_hh_l0", "weight_hh_l1"), p=0.5)
    wd(torch.randn(4, 2, 6, dtype=torch.float64))
    assert set(wd.last_masks) == {"weight_hh_l0", "weight_hh_l1"}
    assert not torch.equal(wd.last_masks["weight_hh_l0"], wd.last_masks["weight_hh_l1"])
    assert {n for n, _ in wd.named_parameters()} == {
        "weight_hh_l0_raw", "weight_hh_l1_raw", "module.weight_ih_l0", "module.bias_ih_l0", "module.bias_hh_l0",
        "module.weight_ih_l1", "module.bias_ih_l1", "module.bias_hh_l1"}


def test_only_one_layer_dropped_leaves_the_other_untouched():
    plain = _lstm64(10, num_layers=2)
    wd = WeightDrop(copy.deepcopy(plain), ("weight_hh_l1",), p=0.5)
    x = torch.randn(4, 2, 6, dtype=torch.float64)
    _, (h, _) = wd(x)
    _, (h_ref, _) = plain(x)
    assert torch.equal(h[0], h_ref[0]) and not torch.equal(h[1], h_ref[1])


@pytest.mark.parametrize("Module", [nn.GRU, nn.RNN])
def test_gru_and_rnn(Module):
    torch.manual_seed(11)
    plain = Module(6, 10).double()
    wd = WeightDrop(copy.deepcopy(plain), p=0.5)
    x = torch.randn(5, 2, 6, dtype=torch.float64)
    y, _ = wd(x)
    assert not torch.equal(y, plain(x)[0])
    # the dropped weight is what the module used: same as the plain module with U replaced by M ⊙ U
    ref = copy.deepcopy(plain)
    with torch.no_grad():
        ref.weight_hh_l0.mul_(wd.last_masks["weight_hh_l0"])
    assert (y - ref(x)[0]).abs().max() < 1e-12
    y.sum().backward()
    assert torch.all(wd.weight_hh_l0_raw.grad[wd.last_masks["weight_hh_l0"] == 0] == 0)
    wd.eval()
    assert torch.equal(wd(x)[0], plain(x)[0])


# ---- engineering ----
def test_no_warnings_on_any_call():
    wd = WeightDrop(nn.LSTM(6, 10, num_layers=2), ("weight_hh_l0", "weight_hh_l1"), p=0.5)
    x = torch.randn(5, 2, 6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            wd.train(); wd(x)[0].sum().backward()
            wd.eval(); wd(x)
        with torch.no_grad():
            wd.train(); wd(x)
    assert caught == [], [str(w.message) for w in caught]


def test_uses_the_fused_kernel_not_a_python_loop():
    "One call runs one aten::lstm op (the fused kernel), not one op per time step."
    wd = WeightDrop(nn.LSTM(6, 10), p=0.5)
    x = torch.randn(12, 2, 6)
    with torch.profiler.profile() as prof:
        wd(x)
    names = [e.name for e in prof.events()]
    assert names.count("aten::lstm") == 1
    assert names.count("aten::sigmoid") == 0  # no per-step gate computations in Python


def test_forward_never_reflattens_or_moves_parameters():
    "No flatten_parameters() during calls (on a GPU it would re-point the parameters' storage mid-graph)."
    lstm = nn.LSTM(6, 10, num_layers=2)
    wd = WeightDrop(lstm, ("weight_hh_l0", "weight_hh_l1"), p=0.5)
    calls = []
    original = type(lstm).flatten_parameters
    lstm.flatten_parameters = lambda: (calls.append(1), original(lstm))
    ptrs = [p.data_ptr() for p in wd.parameters()]
    x = torch.randn(4, 2, 6)
    y1, _ = wd(x)
    y2, _ = wd(x)                       # a second call before backward
    (y1.sum() + y2.sum()).backward()    # both graphs intact
    assert calls == [] and [p.data_ptr() for p in wd.parameters()] == ptrs
    assert all(p.grad is not None for p in wd.parameters())


def test_state_dict_round_trip_into_fresh_wrapper():
    torch.manual_seed(12)
    wd = WeightDrop(nn.LSTM(6, 10, num_layers=2), ("weight_hh_l0", "weight_hh_l1"), p=0.5)
    wd(torch.randn(3, 2, 6))  # a training call first: nothing of it may leak into the state
    sd = wd.state_dict()
    assert set(sd) == {"weight_hh_l0_raw", "weight_hh_l1_raw", "module.weight_ih_l0", "module.bias_ih_l0",
                       "module.bias_hh_l0", "module.weight_ih_l1", "module.bias_ih_l1", "module.bias_hh_l1"}
    buf = io.BytesIO()
    torch.save(sd, buf); buf.seek(0)
    fresh = WeightDrop(nn.LSTM(6, 10, num_layers=2), ("weight_hh_l0", "weight_hh_l1"), p=0.5)
    fresh.load_state_dict(torch.load(buf))
    x = torch.randn(4, 3, 6)
    wd.eval(); fresh.eval()
    assert torch.equal(wd(x)[0], fresh(x)[0])


def test_whole_module_pickle_and_deepcopy_after_a_training_call():
    wd = WeightDrop(nn.LSTM(6, 10), p=0.5)
    x = torch.randn(3, 2, 6)
    y, _ = wd(x)  # graph still alive
    twin = copy.deepcopy(wd)
    buf = io.BytesIO()
    torch.save(wd, buf); buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    for m in (twin, loaded):
        assert m.weight_hh_l0_raw is not wd.weight_hh_l0_raw
        m.eval(); wd.eval()
        assert torch.equal(m(x)[0], wd(x)[0])
        wd.train()
    y.sum().backward()  # the earlier graph is intact
    assert wd.weight_hh_l0_raw.grad is not None


def test_to_dtype_and_device():
    wd = WeightDrop(nn.LSTM(6, 10), p=0.5)
    wd64 = copy.deepcopy(wd).to(torch.float64)
    assert wd64.weight_hh_l0_raw.dtype == torch.float64 and wd64.module.weight_ih_l0.dtype == torch.float64
    y, _ = wd64(torch.randn(3, 2, 6, dtype=torch.float64))
    assert y.dtype == torch.float64
    wd_cpu = wd.to("cpu")
    assert wd_cpu(torch.randn(3, 2, 6))[0].shape == (3, 2, 10)


def test_no_grad_in_training_and_eval():
    wd = WeightDrop(nn.LSTM(6, 10), p=0.5)
    x = torch.randn(3, 2, 6)
    with torch.no_grad():
        y, _ = wd(x)
        assert not y.requires_grad and "weight_hh_l0" in wd.last_masks
        wd.eval()
        y, _ = wd(x)
        assert not y.requires_grad


def test_optimizer_built_before_wrapping_still_trains_the_raw_weight():
    lstm = nn.LSTM(6, 10)
    opt = torch.optim.SGD(lstm.parameters(), lr=0.1)
    U = lstm.weight_hh_l0
    wd = WeightDrop(lstm, p=0.5)
    assert wd.weight_hh_l0_raw is U
    before = U.detach().clone()
    wd(torch.randn(3, 2, 6))[0].sum().backward()
    opt.step()
    assert not torch.equal(before, wd.weight_hh_l0_raw)


def test_hidden_state_and_keyword_input_pass_through():
    wd = WeightDrop(_lstm64(13), p=0.3)
    x = torch.randn(4, 2, 6, dtype=torch.float64)
    state = (torch.zeros(1, 2, 10, dtype=torch.float64), torch.zeros(1, 2, 10, dtype=torch.float64))
    wd.eval()
    assert torch.equal(wd(x, state)[0], wd(input=x)[0])


def test_batch_first_module():
    torch.manual_seed(14)
    plain = nn.LSTM(6, 10, batch_first=True).double()
    wd = WeightDrop(copy.deepcopy(plain), p=0.0)
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    assert torch.equal(wd(x)[0], plain(x)[0])


# ---- errors ----
@pytest.mark.parametrize("p", [1.0, 1.5, -0.1])
def test_p_out_of_range(p):
    with pytest.raises(ValueError, match=r"WeightDrop: p must be a number in \[0, 1\).*got " + str(p)):
        WeightDrop(nn.LSTM(6, 10), p=p)


@pytest.mark.parametrize("p", ["0.5", True, None])
def test_p_wrong_type(p):
    with pytest.raises(TypeError, match="WeightDrop: p must be a number"):
        WeightDrop(nn.LSTM(6, 10), p=p)


def test_p_setter_validates():
    wd = WeightDrop(nn.LSTM(6, 10), p=0.5)
    wd.p = 0.2
    assert wd.p == 0.2 and "p=0.2" in repr(wd)
    with pytest.raises(ValueError, match="p must be a number in"):
        wd.p = 1.0
    assert wd.p == 0.2


def test_p_is_the_third_positional_argument():
    "model.py and older code pass the probability positionally: it is p."
    wd = WeightDrop(nn.LSTM(6, 10), ("weight_hh_l0",), 0.3)
    assert wd.p == 0.3


# ---- the pre-release name `dropout` is gone (no release shipped it)
def test_the_old_dropout_keyword_and_attribute_are_gone():
    with pytest.raises(TypeError, match="dropout"):
        WeightDrop(nn.LSTM(6, 10), dropout=0.3)
    assert not hasattr(WeightDrop(nn.LSTM(6, 10), p=0.4), "dropout")


def test_p_keyword_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        WeightDrop(nn.LSTM(6, 10), p=0.3).p


def test_unknown_weight_name_lists_the_parameters():
    with pytest.raises(ValueError) as e:
        WeightDrop(nn.LSTM(6, 10), weights=("weight_hh_l1",))
    msg = str(e.value)
    assert "weights" in msg and "weight_hh_l1" in msg
    for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        assert n in msg


def test_other_bad_weights():
    with pytest.raises(ValueError, match="at least one"):
        WeightDrop(nn.LSTM(6, 10), weights=())
    with pytest.raises(ValueError, match="repeated"):
        WeightDrop(nn.LSTM(6, 10), weights=("weight_hh_l0", "weight_hh_l0"))
    with pytest.raises(TypeError, match="module"):
        WeightDrop("not a module")
    wd = WeightDrop(nn.LSTM(6, 10), weights="weight_hh_l0")  # a single name as a str is fine
    assert wd.weights == ("weight_hh_l0",)


@pytest.mark.parametrize("shape", [(6,), (2, 3, 4, 6), (5, 2, 7)])
def test_wrong_input_shape(shape):
    wd = WeightDrop(nn.LSTM(6, 10), p=0.5)
    with pytest.raises(ValueError, match=r"input must be \(seq_len, batch, features\).*input_size = 6"):
        wd(torch.randn(*shape))
    assert wd.module.weight_hh_l0 is None  # nothing half-done left behind


def test_unbatched_input_is_accepted():
    wd = WeightDrop(nn.LSTM(6, 10), p=0.5)
    y, (h, c) = wd(torch.randn(5, 6))
    assert y.shape == (5, 10) and h.shape == (1, 10)


# ---- GPU ----
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_uses_cudnn_without_warnings_and_matches_cpu():
    assert torch.backends.cudnn.is_available() and torch.backends.cudnn.enabled
    torch.manual_seed(15)
    cpu = WeightDrop(nn.LSTM(32, 64, num_layers=2), ("weight_hh_l0", "weight_hh_l1"), p=0.5)
    gpu = copy.deepcopy(cpu).cuda()
    x = torch.randn(20, 4, 32)
    with warnings.catch_warnings(record=True) as caught, torch.profiler.profile() as prof:
        warnings.simplefilter("always")
        for _ in range(3):
            y_gpu, _ = gpu(x.cuda())
            y_gpu.sum().backward()
    assert caught == [], [str(w.message) for w in caught]
    assert any("cudnn_rnn" in e.name for e in prof.events()), "cuDNN was not used"
    plain = copy.deepcopy(cpu.module)  # CPU, with the last GPU call's masks
    for n in cpu.weights:
        setattr(plain, n, getattr(cpu, f"{n}_raw") * gpu.last_masks[n].cpu())
    assert (plain(x)[0] - y_gpu.detach().cpu()).abs().max() < 1e-4
    gpu.eval(); cpu.eval()
    assert (gpu(x.cuda())[0].cpu() - cpu(x)[0]).abs().max() < 1e-4
    assert gpu.last_masks == {}  # eval: nothing dropped
    g = gpu.weight_hh_l0_raw.grad
    assert g is not None and g.is_cuda
