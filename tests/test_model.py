"""The AWD-LSTM model (chapter 06): sizes, parameter count, tying, dropout on/off, state handling, argument checks."""

import pytest
import torch
from torch import nn

from awd_edu.model import AWDLSTM, AWDLSTMOutput, count_parameters, detach_hidden, layer_sizes, parameter_counts
from awd_edu.weight_drop import WeightDrop


def small(**kw):
    cfg = dict(vocab_size=23, emb_size=6, hidden_size=10, n_layers=3)
    cfg.update(kw)
    return AWDLSTM(**cfg)


def test_ptb_configuration_has_24_221_600_parameters():
    model = AWDLSTM(10_000)
    assert count_parameters(model) == 24_221_600
    # the same count, parameter by parameter, with shared tensors deduplicated by storage
    seen = {}
    for p in model.parameters():
        seen[p.data_ptr()] = p.numel()
    assert sum(seen.values()) == 24_221_600
    assert sum(parameter_counts(10_000).values()) == 24_221_600
    assert [(r.module.input_size, r.module.hidden_size) for r in model.rnns] == [(400, 1150), (1150, 1150), (1150, 400)]


def test_parameter_counts_match_the_model_for_other_sizes():
    for kw in (dict(n_layers=1), dict(n_layers=2, tie_weights=False), dict(n_layers=4, emb_size=7, hidden_size=9)):
        m = small(**kw)
        counts = parameter_counts(23, m.emb_size, m.hidden_size, m.n_layers, m.tie_weights)
        assert count_parameters(m) == sum(counts.values())


def test_defaults_are_the_papers_ptb_command():
    # the README's PTB command of the paper's code: dropouti 0.4 and dropouth 0.25 (its argparse defaults, 0.65 and
    # 0.3, are overridden there), dropout 0.4, dropoute 0.1, wdrop 0.5
    m = AWDLSTM(50)
    assert (m.emb_size, m.hidden_size, m.n_layers) == (400, 1150, 3)
    assert (m.dropout, m.dropouth, m.dropouti, m.dropoute, m.wdrop, m.tie_weights) == (0.4, 0.25, 0.4, 0.1, 0.5, True)
    assert m.input_drop.p == 0.4 and m.hidden_drop.p == 0.25 and m.output_drop.p == 0.4


def test_structure_weightdrop_on_weight_hh_of_one_layer_lstms():
    m = small()
    assert isinstance(m.encoder, nn.Embedding) and isinstance(m.decoder, nn.Linear)
    assert len(m.rnns) == 3
    for rnn in m.rnns:
        assert isinstance(rnn, WeightDrop) and isinstance(rnn.module, nn.LSTM)
        # WeightDrop's probability is `p` (formerly `dropout`, still accepted as an alias)
        assert rnn.module.num_layers == 1 and tuple(rnn.weights) == ("weight_hh_l0",)
        assert getattr(rnn, "p", getattr(rnn, "dropout", None)) == 0.5
        assert rnn.module.dropout == 0


def test_tied_weights_share_storage_and_learn_together():
    m = small()
    assert m.decoder.weight is m.encoder.weight
    assert m.decoder.weight.data_ptr() == m.encoder.weight.data_ptr()
    before = m.encoder.weight.detach().clone()
    opt = torch.optim.SGD(m.decoder.parameters(), lr=1.0)
    m.decoder(torch.randn(3, 6)).logsumexp(-1).sum().backward()
    opt.step()
    assert not torch.equal(m.encoder.weight, before)
    assert torch.equal(m.encoder.weight, m.decoder.weight)


def test_untied_decoder_is_separate():
    m = small(tie_weights=False)
    assert m.decoder.weight is not m.encoder.weight and m.decoder.weight.shape == (23, 10)
    assert m.rnns[-1].module.hidden_size == 10


def test_initialisation():
    torch.manual_seed(0)
    m = AWDLSTM(1000, emb_size=50, hidden_size=60, tie_weights=False)
    for w in (m.encoder.weight, m.decoder.weight):
        assert w.abs().max() <= 0.1 and w.abs().max() > 0.09  # uniform over the whole of [-0.1, 0.1]
    assert torch.all(m.decoder.bias == 0)


def test_output_shapes_and_type():
    m = small()
    x = torch.randint(0, 23, (5, 4))
    out = m(x, m.init_hidden(4))
    assert isinstance(out, AWDLSTMOutput)
    assert out.logits.shape == (5, 4, 23)
    assert [tuple(h.shape) for h, _ in out.hidden] == [(1, 4, 10), (1, 4, 10), (1, 4, 6)]
    assert [tuple(c.shape) for _, c in out.hidden] == [(1, 4, 10), (1, 4, 10), (1, 4, 6)]
    assert [tuple(r.shape) for r in out.raw_outputs] == [(5, 4, 10), (5, 4, 10), (5, 4, 6)]
    assert [tuple(o.shape) for o in out.outputs] == [(5, 4, 10), (5, 4, 10), (5, 4, 6)]
    h0 = m.init_hidden(4)
    assert len(h0) == 3 and all(torch.count_nonzero(t) == 0 for pair in h0 for t in pair)


def test_eval_is_deterministic_and_dropout_free():
    m = small().eval()
    x = torch.randint(0, 23, (6, 3))
    with torch.no_grad():
        a, b = m(x), m(x)
    assert torch.equal(a.logits, b.logits)
    assert all(torch.equal(r, o) for r, o in zip(a.raw_outputs, a.outputs))


def test_training_pass_differs_from_eval():
    torch.manual_seed(0)
    m = small()
    x = torch.randint(0, 23, (6, 3))
    with torch.no_grad():
        ev = m.eval()(x).logits
        tr = m.train()(x)
    assert not torch.allclose(tr.logits, ev)
    assert not torch.equal(tr.raw_outputs[-1], tr.outputs[-1])


def test_all_dropouts_zero_train_equals_eval():
    m = small(dropout=0, dropouth=0, dropouti=0, dropoute=0, wdrop=0)
    x = torch.randint(0, 23, (6, 3))
    with torch.no_grad():
        assert torch.allclose(m.train()(x).logits, m.eval()(x).logits, atol=1e-6)


def test_each_dropout_acts_in_training():
    x = torch.randint(0, 23, (6, 3))
    base = dict(dropout=0, dropouth=0, dropouti=0, dropoute=0, wdrop=0)
    for name in base:
        torch.manual_seed(1)
        m = small(**{**base, name: 0.5})
        with torch.no_grad():
            assert not torch.allclose(m.train()(x).logits, m.eval()(x).logits), name


def test_final_output_dropout_is_locked():
    m = small(dropout=0.5, dropouth=0, dropouti=0, dropoute=0, wdrop=0).train()
    out = m(torch.randint(0, 23, (8, 2)))
    zero = out.outputs[-1] == 0
    assert zero.any() and torch.equal(zero, zero[:1].expand_as(zero))  # same features dropped at every step


def test_one_layer_model():
    m = small(n_layers=1)
    assert m.sizes == [(6, 6)]
    out = m(torch.randint(0, 23, (4, 2)))
    assert out.logits.shape == (4, 2, 23) and len(out.hidden) == 1 and len(out.raw_outputs) == 1
    m2 = small(n_layers=1, tie_weights=False)
    assert m2.sizes == [(6, 10)] and m2(torch.randint(0, 23, (4, 2))).logits.shape == (4, 2, 23)


def test_every_embedding_row_gets_a_gradient():
    # untied, so only the input path feeds the embedding; embedding dropout's masked path runs (p > 0) but drops
    # nothing in practice (the other dropouts are off so no mask can zero a whole path). The reference's padding_idx=-1 would leave the last row at zero.
    V = 13
    m = AWDLSTM(V, emb_size=5, hidden_size=7, n_layers=2, dropout=0, dropouth=0, dropouti=0, dropoute=1e-6,
                tie_weights=False).train()
    words = torch.randperm(V).view(-1, 1)
    m(words).logits.sum().backward()
    assert torch.all(m.encoder.weight.grad.abs().sum(1) > 0)


def test_state_carries_across_batches():
    torch.manual_seed(0)
    m = small().eval()
    seq = torch.randint(0, 23, (9, 2))
    with torch.no_grad():
        whole = m(seq).logits
        a = m(seq[:4])
        b = m(seq[4:], a.hidden)
        fresh = m(seq[4:])
    assert torch.allclose(torch.cat([a.logits, b.logits]), whole, atol=1e-6)
    assert not torch.allclose(b.logits, fresh.logits, atol=1e-4)  # the state matters


def test_detach_hidden_cuts_the_graph():
    m = small(tie_weights=False).eval()  # no dropout: the graph alone decides which rows get a gradient
    w1, w2 = torch.tensor([[1, 2]] * 3), torch.tensor([[3, 4]] * 3)
    for detach in (False, True):
        m.zero_grad()
        h = m(w1).hidden
        if detach:
            h = detach_hidden(h)
        m(w2, h).logits.sum().backward()
        g = m.encoder.weight.grad.abs().sum(1)
        assert bool((g[[1, 2]] > 0).all()) is (not detach)
        assert bool((g[[3, 4]] > 0).all())
        assert torch.count_nonzero(g[[0, 5]]) == 0


def test_detach_hidden_keeps_values_and_structure():
    m = small()
    h = m(torch.randint(0, 23, (3, 2))).hidden
    d = detach_hidden(h)
    assert isinstance(d, list) and all(isinstance(p, tuple) and len(p) == 2 for p in d)
    for (h1, c1), (h2, c2) in zip(h, d):
        assert torch.equal(h1, h2) and torch.equal(c1, c2)
        assert h2.grad_fn is None and not h2.requires_grad and h1.grad_fn is not None
    with pytest.raises(TypeError):
        detach_hidden(3)


@pytest.mark.parametrize("kw", [dict(n_layers=0), dict(n_layers=1.5), dict(vocab_size=0), dict(emb_size=-1),
                                dict(hidden_size=0), dict(dropout=1.0), dict(dropouth=-0.1), dict(dropouti=1.2),
                                dict(dropoute=1), dict(wdrop=1.0)])
def test_invalid_arguments_raise_naming_the_argument(kw):
    args = {"vocab_size": 10, **kw}
    wrong_type = isinstance(next(iter(kw.values())), float) and next(iter(kw)) in ("n_layers", "vocab_size", "emb_size", "hidden_size")
    with pytest.raises(TypeError if wrong_type else ValueError, match=next(iter(kw))):
        AWDLSTM(**args)


@pytest.mark.parametrize("kw", [dict(wdrop=True), dict(dropout="0.4"), dict(dropouti=None)])
def test_probabilities_of_the_wrong_type_raise_type_error(kw):
    with pytest.raises(TypeError, match=next(iter(kw))):
        AWDLSTM(10, **kw)


def test_bad_inputs():
    m = small()
    with pytest.raises(TypeError, match="tie_weights"):
        AWDLSTM(10, tie_weights=1)
    with pytest.raises(ValueError, match="input"):
        m(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="input"):
        m(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="hidden"):
        m(torch.zeros(3, 2, dtype=torch.long), m.init_hidden(2)[:2])


def test_layer_sizes():
    assert layer_sizes(400, 1150, 3) == [(400, 1150), (1150, 1150), (1150, 400)]
    assert layer_sizes(400, 1150, 3, tie_weights=False) == [(400, 1150), (1150, 1150), (1150, 1150)]
    assert layer_sizes(4, 9, 1) == [(4, 4)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_forward_backward():
    m = small().cuda().train()
    h = m.init_hidden(3)
    assert all(t.is_cuda for pair in h for t in pair)
    out = m(torch.randint(0, 23, (5, 3), device="cuda"), h)
    out.logits.sum().backward()
    assert out.logits.is_cuda and m.rnns[0].weight_hh_l0_raw.grad is not None
    with torch.no_grad():
        m.eval()
        a, b = m(torch.arange(6, device="cuda").view(3, 2)), m(torch.arange(6, device="cuda").view(3, 2))
    assert torch.equal(a.logits, b.logits)


def test_build_model_takes_any_object_with_the_config_s_sizes_and_dropouts():
    from types import SimpleNamespace
    from awd_edu.model import build_model
    sizes = SimpleNamespace(emb_size=8, hidden_size=16, n_layers=2, tie_weights=False,
                            dropout=0.1, dropouth=0.2, dropouti=0.3, dropoute=0.05, wdrop=0.4)
    m = build_model(sizes, 30)
    assert (m.vocab_size, m.emb_size, m.hidden_size, m.n_layers, m.tie_weights) == (30, 8, 16, 2, False)
    assert (m.dropout, m.dropouth, m.dropouti, m.dropoute, m.wdrop) == (0.1, 0.2, 0.3, 0.05, 0.4)
    assert m.decoder.weight is not m.encoder.weight


def test_build_model_names_sizes_that_do_not_fit_in_memory(monkeypatch):
    from types import SimpleNamespace
    import awd_edu.model as M
    def no_memory(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: not enough memory")
    monkeypatch.setattr(M, "AWDLSTM", no_memory)
    sizes = SimpleNamespace(emb_size=8, hidden_size=10**7, n_layers=2, tie_weights=True,
                            dropout=0, dropouth=0, dropouti=0, dropoute=0, wdrop=0)
    with pytest.raises(ValueError, match="does not fit in memory.*choose smaller sizes"):
        M.build_model(sizes, 30)
