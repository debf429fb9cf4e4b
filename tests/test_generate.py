"""Tests of awd_edu.generate: reproducible draws, the temperature's effect, and bad arguments refused."""
import pytest
import torch

from awd_edu.data import Vocab
from awd_edu.generate import format_words, sample_words
from awd_edu.model import AWDLSTM

VOCAB = Vocab(["<eos>", "the", "cat", "sat", "on", "mat", "a", "dog"])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = AWDLSTM(len(VOCAB), 8, 16, 2)
    with torch.no_grad():
        m.decoder.bias.copy_(torch.tensor([0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))   # "the" is far likelier
    return m


def test_a_seed_makes_the_draw_reproducible(model):
    a = sample_words(model, VOCAB, 30, seed=5)
    assert a == sample_words(model, VOCAB, 30, seed=5) and len(a) == 30 and set(a) <= set(VOCAB.itos)
    assert a != sample_words(model, VOCAB, 30, seed=6)


def test_a_low_temperature_picks_the_likeliest_word(model):
    assert set(sample_words(model, VOCAB, 20, temperature=0.01, seed=0)) == {"the"}
    assert len(set(sample_words(model, VOCAB, 200, temperature=5.0, seed=0))) == len(VOCAB)


def test_the_model_mode_is_restored(model):
    model.train()
    sample_words(model, VOCAB, 3, seed=0)
    assert model.training


@pytest.mark.parametrize("kw, words", [
    (dict(n_words=0), "n_words"), (dict(n_words=True), "n_words"), (dict(temperature=0), "temperature"),
    (dict(temperature=float("inf")), "temperature"), (dict(prompt="the Zebra"), "outside the vocabulary"),
])
def test_bad_arguments_are_refused(model, kw, words):
    with pytest.raises(TypeError if True in kw.values() else ValueError, match=words):
        sample_words(model, VOCAB, **{"n_words": 3, **kw})


def test_format_words_puts_one_sentence_per_line():
    assert format_words(["the", "cat", "<eos>", "a", "dog", "<eos>"]) == "the cat\na dog"
