"""Tests of awd_edu.hub: a recorded run's weights written in half precision with their metadata, loaded in one call
(from a checkout, or downloaded from a server and checked against the record's SHA-256), and refused when damaged."""
import functools
import http.server
import json
import shutil
import threading

import pytest
import torch

import awd_edu.hub as hub
from awd_edu.checkpoint import CheckpointError, read_metadata
from awd_edu.config import TrainConfig
from awd_edu.data import batchify
from awd_edu.files import sha256_file
from awd_edu.loop import evaluate, perplexity
from awd_edu.model import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def results(tmp_path, monkeypatch, ptb_corpus):
    "A results folder holding a record `tiny-run.json` and its half-precision weights, known as `tiny`."
    folder = tmp_path / "results"
    folder.mkdir()
    config = TrainConfig.from_preset("tiny")
    torch.manual_seed(0)
    model = build_model(config, len(ptb_corpus.vocab))
    sha = hub.save_pretrained(model, folder / "tiny.safetensors", config, ptb_corpus.vocab, "tiny-run.json")
    record = dict(config={**config.to_dict(), "data_dir": None}, test_ppl=None,
                  weights=dict(file="tiny.safetensors", sha256=sha))
    (folder / "tiny-run.json").write_text(json.dumps(record))
    monkeypatch.setitem(hub.PRETRAINED, "tiny", "tiny-run.json")
    monkeypatch.setattr(hub, "_checkout_results", lambda: folder)
    return folder, model


def test_the_weights_are_half_precision_with_the_metadata_and_the_file_hash(results, ptb_corpus):
    folder, _ = results
    meta = read_metadata(folder / "tiny.safetensors")
    assert meta["awd_edu.record"] == "tiny-run.json" and meta["awd_edu.dtype"] == "float16"
    assert meta["awd_edu.vocab_size"] == str(len(ptb_corpus.vocab))
    from safetensors import safe_open
    with safe_open(str(folder / "tiny.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    assert sha256_file(folder / "tiny.safetensors") == json.loads((folder / "tiny-run.json").read_text())[
        "weights"]["sha256"]


def test_pretrained_gives_the_saved_model_rounded_to_half_precision(results, ptb_corpus):
    _, original = results
    model, corpus = hub.pretrained("tiny", corpus=ptb_corpus)
    assert corpus is ptb_corpus and not model.training
    for p, q in zip(model.parameters(), original.parameters()):
        assert p.dtype == torch.float32 and torch.equal(p, q.detach().half().float())
    source = batchify(ptb_corpus.valid[:2_000], 10)
    assert perplexity(evaluate(model, source, 20)) == pytest.approx(perplexity(evaluate(original, source, 20)),
                                                                    rel=5e-3)


def test_a_damaged_weights_file_is_refused_naming_the_fix(results, ptb_corpus):
    folder, _ = results
    data = bytearray((folder / "tiny.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "tiny.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256 differs.*delete it and call pretrained"):
        hub.pretrained("tiny", corpus=ptb_corpus)


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown pretrained model 'nope'; known: ptb-cpu"):
        hub.load_record("nope")


@pytest.fixture
def server(tmp_path):
    "A static file server on 127.0.0.1 for a folder; yields (folder, base URL)."
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def test_without_a_checkout_the_files_are_downloaded_once_and_checked(results, server, tmp_path, monkeypatch,
                                                                       ptb_corpus):
    folder, original = results
    served, url = server
    for name in ("tiny-run.json", "tiny.safetensors"):
        shutil.copy(folder / name, served / name)
    monkeypatch.setattr(hub, "_checkout_results", lambda: tmp_path / "no-checkout")
    monkeypatch.setenv(hub.URL_ENV, url)
    import pooch
    monkeypatch.setattr(pooch, "os_cache", lambda name: tmp_path / "cache")
    model, _ = hub.pretrained("tiny", corpus=ptb_corpus)
    assert torch.equal(next(model.parameters()), next(original.parameters()).detach().half().float())
    assert (tmp_path / "cache" / "pretrained" / "tiny.safetensors").is_file()
    (served / "tiny.safetensors").write_bytes(b"not the weights")          # the server now serves something else
    (tmp_path / "cache" / "pretrained" / "tiny.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="could not be downloaded"):
        hub.pretrained("tiny", corpus=ptb_corpus)


def test_a_missing_file_and_no_server_name_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "_checkout_results", lambda: tmp_path)
    monkeypatch.setenv(hub.URL_ENV, "http://127.0.0.1:9/")                  # nothing listens there
    import pooch
    monkeypatch.setattr(pooch, "os_cache", lambda name: tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="clone the repository, or set AWD_EDU_RESULTS_URL"):
        hub.load_record("ptb-cpu")
