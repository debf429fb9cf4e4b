"""Chapter 00: the from-scratch LSTM cell and ScratchLSTM equal nn.LSTM (float64, 1e-10)."""

import pytest
import torch
from torch import nn

import math

from awd_edu.lstm import LSTMCell, ScratchLSTM, memory_trace, run_gates

TOL = 1e-10


def _loss(y, h, c):
    return y.sin().sum() + (h * c).sum()  # depends on every output and both final states


@pytest.mark.parametrize("layers,batch,seq_len,with_state", [
    (1, 1, 1, False), (1, 1, 6, True), (1, 4, 1, True), (1, 3, 8, False),
    (2, 1, 5, True), (2, 3, 1, False), (3, 4, 7, True), (3, 2, 9, False),
])
def test_scratch_lstm_matches_nn_lstm(layers, batch, seq_len, with_state):
    torch.manual_seed(layers * 100 + batch * 10 + seq_len)
    ref = nn.LSTM(4, 6, num_layers=layers).double()
    ours = ScratchLSTM.from_torch(ref)
    x = torch.randn(seq_len, batch, 4, dtype=torch.float64, requires_grad=True)
    state = tuple(torch.randn(layers, batch, 6, dtype=torch.float64) for _ in range(2)) if with_state else None
    y1, (h1, c1) = ref(x, state)
    y2, (h2, c2) = ours(x, state)
    assert y2.shape == (seq_len, batch, 6) and h2.shape == c2.shape == (layers, batch, 6)
    assert (y1 - y2).abs().max() < TOL
    assert (h1 - h2).abs().max() < TOL and (c1 - c2).abs().max() < TOL
    g_ref = torch.autograd.grad(_loss(y1, h1, c1), [x, *ref.parameters()])
    g_ours = torch.autograd.grad(_loss(y2, h2, c2), [x, *ours.parameters()])
    assert len(g_ref) == len(g_ours) == 1 + 4 * layers
    for a, b in zip(g_ref, g_ours):
        assert (a - b).abs().max() < TOL


def test_gradients_wrt_initial_state_match():
    torch.manual_seed(0)
    ref = nn.LSTM(3, 5, num_layers=2).double()
    ours = ScratchLSTM.from_torch(ref)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    h0 = torch.randn(2, 2, 5, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 2, 5, dtype=torch.float64, requires_grad=True)
    g1 = torch.autograd.grad(_loss(ref(x, (h0, c0))[0], *ref(x, (h0, c0))[1]), [h0, c0])
    g2 = torch.autograd.grad(_loss(ours(x, (h0, c0))[0], *ours(x, (h0, c0))[1]), [h0, c0])
    for a, b in zip(g1, g2):
        assert (a - b).abs().max() < TOL


def test_cell_matches_nn_lstmcell_and_gates_are_the_equations():
    torch.manual_seed(1)
    cell = LSTMCell(5, 7).double()
    ref = nn.LSTMCell(5, 7).double()
    ref.load_state_dict(cell.state_dict())  # identical names and shapes: nn.LSTM's layout
    x, h0, c0 = (torch.randn(3, n, dtype=torch.float64) for n in (5, 7, 7))
    h, c = cell(x, (h0, c0))
    h_ref, c_ref = ref(x, (h0, c0))
    assert (h - h_ref).abs().max() < TOL and (c - c_ref).abs().max() < TOL
    out = cell.gates(x, (h0, c0))
    assert set(out) == {"i", "f", "c_tilde", "o", "c", "h"} and all(v.shape == (3, 7) for v in out.values())
    # gate order i, f, c~, o in nn.LSTM's stacked layout: recompute each gate from its rows
    pre = x @ cell.weight_ih.T + h0 @ cell.weight_hh.T + cell.bias_ih + cell.bias_hh  # (3, 4H)
    i, f, c_tilde, o = pre.chunk(4, dim=1)
    assert torch.allclose(out["i"], torch.sigmoid(i), atol=TOL)
    assert torch.allclose(out["f"], torch.sigmoid(f), atol=TOL)
    assert torch.allclose(out["c_tilde"], torch.tanh(c_tilde), atol=TOL)
    assert torch.allclose(out["o"], torch.sigmoid(o), atol=TOL)
    assert torch.allclose(out["c"], out["f"] * c0 + out["i"] * out["c_tilde"], atol=TOL)
    assert torch.allclose(out["h"], out["o"] * torch.tanh(out["c"]), atol=TOL)


def test_swapped_gate_order_would_be_caught():
    "The equivalence check has teeth: a cell reading the gates in the wrong order does not match nn.LSTMCell."
    torch.manual_seed(2)
    cell = LSTMCell(4, 5).double()
    ref = nn.LSTMCell(4, 5).double()
    ref.load_state_dict(cell.state_dict())
    perm = torch.cat([torch.arange(5, 10), torch.arange(0, 5), torch.arange(10, 20)])  # swap i and f rows
    with torch.no_grad():
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, n).copy_(getattr(cell, n)[perm])
    x = torch.randn(2, 4, dtype=torch.float64)
    state = (torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64))
    assert (cell(x, state)[0] - ref(x, state)[0]).abs().max() > 1e-4


def test_no_state_means_zeros_and_bias_false():
    torch.manual_seed(3)
    ref = nn.LSTM(3, 4, num_layers=2, bias=False).double()
    ours = ScratchLSTM.from_torch(ref)
    assert all(c.bias_ih is None and c.bias_hh is None for c in ours.cells)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    zeros = torch.zeros(2, 2, 4, dtype=torch.float64)
    assert (ours(x)[0] - ref(x)[0]).abs().max() < TOL
    assert torch.equal(ours(x)[0], ours(x, (zeros, zeros))[0])
    assert isinstance(ours.to_torch(), nn.LSTM) and not ours.to_torch().bias


def test_step_with_weight_hh_override():
    torch.manual_seed(4)
    cell = LSTMCell(3, 4).double()
    U = torch.randn(16, 4, dtype=torch.float64)
    x = torch.randn(2, 3, dtype=torch.float64)
    state = (torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64))
    other = LSTMCell(3, 4).double()
    other.load_state_dict(cell.state_dict())
    with torch.no_grad():
        other.weight_hh.copy_(U)
    h1, c1 = cell.step(x, state, weight_hh=U)
    h2, c2 = other.step(x, state)
    assert torch.equal(h1, h2) and torch.equal(c1, c2)
    assert not torch.equal(h1, cell.step(x, state)[0])  # the override is really used


def test_run_gates_matches_nn_lstm():
    torch.manual_seed(5)
    lstm = ScratchLSTM(3, 4).double()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    acts = run_gates(lstm.cells[0], x)
    assert list(acts) == ["i", "f", "c_tilde", "o", "c", "h"] and all(v.shape == (6, 2, 4) for v in acts.values())
    y, (h_n, c_n) = lstm.to_torch()(x)                     # the reference, not our own ScratchLSTM
    assert (acts["h"] - y).abs().max() < TOL and (acts["c"][-1] - c_n[0]).abs().max() < TOL
    with pytest.raises(ValueError, match="seq_len, batch"):
        run_gates(lstm.cells[0], x[0])
    with pytest.raises(ValueError, match="seq_len >= 1"):
        run_gates(lstm.cells[0], x[:0])


@pytest.mark.parametrize("b", [-1.0, 0.0, 3.0, 4.27])
def test_memory_trace_is_one_write_then_pure_decay_by_sigma_b(b):
    c = memory_trace(b, steps=40)
    f = 1 / (1 + math.exp(-b))                            # computed here with math, not with torch
    assert c.shape == (40,) and c.dtype == torch.float64
    assert abs(c[0].item() - 1) < 1e-9                    # the write
    for t in (1, 10, 39):
        assert abs(c[t].item() - f ** t) < 1e-9           # c_{t+1} = f^t c_1, to float64 precision


def test_memory_trace_half_life_for_a_non_integer_bias():
    "A bias that float32 cannot hold exactly still gives the half-life the formula promises."
    f = 0.5 ** (1 / 50)
    c = memory_trace(math.log(f / (1 - f)), steps=51)
    assert abs(c[50].item() - 0.5) < 1e-9
    with pytest.raises(ValueError, match="steps"):
        memory_trace(1.0, steps=0)


def test_to_torch_round_trip_and_unbatched_input():
    torch.manual_seed(6)
    ours = ScratchLSTM(3, 5, num_layers=2).double()
    back = ours.to_torch()
    assert back.num_layers == 2 and back.weight_hh_l1.dtype == torch.float64
    again = ScratchLSTM.from_torch(back)
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), again.parameters()))
    x = torch.randn(6, 3, dtype=torch.float64)  # unbatched (seq_len, features)
    y, (h, c) = ours(x)
    y_ref, (h_ref, c_ref) = back(x)
    assert y.shape == y_ref.shape == (6, 5) and h.shape == h_ref.shape == (2, 5)
    assert (y - y_ref).abs().max() < TOL and (c - c_ref).abs().max() < TOL


def test_from_torch_copies_not_shares():
    ref = nn.LSTM(2, 3)
    ours = ScratchLSTM.from_torch(ref)
    with torch.no_grad():
        ref.weight_hh_l0.add_(1.0)
    assert not torch.equal(ours.cells[0].weight_hh, ref.weight_hh_l0)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="input_size"):
        LSTMCell(0, 3)
    with pytest.raises(TypeError, match="hidden_size"):   # the wrong type: TypeError (awd_edu.checks)
        LSTMCell(3, 2.5)
    with pytest.raises(ValueError, match="num_layers"):
        ScratchLSTM(3, 4, num_layers=0)
    cell = LSTMCell(3, 4)
    with pytest.raises(ValueError, match="batch, input_size=3"):
        cell(torch.randn(2, 5))
    lstm = ScratchLSTM(3, 4)
    with pytest.raises(ValueError, match=r"got shape \(2, 3, 4, 3\)"):
        lstm(torch.randn(2, 3, 4, 3))
    with pytest.raises(ValueError, match="seq_len, batch, 3"):
        lstm(torch.randn(5, 2, 4))
    with pytest.raises(TypeError, match="nn.LSTM"):
        ScratchLSTM.from_torch(nn.GRU(3, 4))
    with pytest.raises(ValueError, match="bidirectional=True"):
        ScratchLSTM.from_torch(nn.LSTM(3, 4, bidirectional=True))
    with pytest.raises(ValueError, match="batch_first=True"):
        ScratchLSTM.from_torch(nn.LSTM(3, 4, batch_first=True))
