"""Tests of awd_edu.checkpoint: weights that say what they fit, verified checkpoints with the previous
epoch kept, and every damaged file reported by name."""
import json

import pytest
import torch
from safetensors.torch import save_file

from awd_edu.checkpoint import (CheckpointError, checkpoint_dir, load_checkpoint, load_weights, read_metrics,
                                read_pointer, save_checkpoint, save_weights, weights_metadata)
from awd_edu.config import TrainConfig
from awd_edu.data import Vocab
from awd_edu.model import AWDLSTM

CFG = TrainConfig(emb_size=8, hidden_size=16, n_layers=2)
VOCAB = Vocab([f"w{i}" for i in range(50)])
META = weights_metadata(CFG, VOCAB)


def toy(seed=0):
    torch.manual_seed(seed)
    return AWDLSTM(50, 8, 16, 2)


def test_tied_weights_round_trip(tmp_path):
    a, b = toy(0), toy(1)
    load_weights(b, save_weights(a, tmp_path / "w.safetensors", META), expect=META)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert b.decoder.weight is b.encoder.weight


def test_weights_that_do_not_fit_are_refused_by_name(tmp_path):
    path = save_weights(toy(), tmp_path / "w.safetensors", META)
    other = weights_metadata(CFG, Vocab([f"v{i}" for i in range(50)]))
    with pytest.raises(CheckpointError, match="another vocabulary"):
        load_weights(toy(), path, expect=other)
    bigger = CFG.replace(emb_size=16)
    with pytest.raises(CheckpointError, match="another model sizes"):
        load_weights(AWDLSTM(50, 16, 16, 2), path, expect=weights_metadata(bigger, VOCAB))
    with pytest.raises(CheckpointError, match="does not fit"):       # no metadata check: the shapes still catch it
        load_weights(AWDLSTM(50, 16, 16, 2), path)
    bare = tmp_path / "bare.safetensors"
    save_file({"x": torch.zeros(2)}, str(bare))
    with pytest.raises(CheckpointError, match="not written by awd_edu") as e:
        load_weights(toy(), bare, expect=META)
    assert "None" not in str(e.value)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        load_weights(toy(), junk, expect=META)
    with pytest.raises(FileNotFoundError):
        load_weights(toy(), tmp_path / "missing.safetensors")


def save_epochs(run, epochs, model=None):
    for e in epochs:
        save_checkpoint(run, "train", e, model or toy(e), dict(epoch=e), META, finished=e == epochs[-1])


def files(run):
    return sorted(p.name for p in checkpoint_dir(run).iterdir())


def test_the_latest_and_the_previous_epoch_are_kept(tmp_path):
    save_epochs(tmp_path, [1, 2, 3, 4])
    assert files(tmp_path) == ["train-e0003.safetensors", "train-e0003.state.pt", "train-e0004.safetensors",
                               "train-e0004.state.pt", "train-latest.json"]
    pointer = read_pointer(tmp_path, "train")
    assert (pointer["tag"], pointer["previous"], pointer["epoch"], pointer["finished"]) == \
           ("train-e0004", "train-e0003", 4, True)
    state, weights = load_checkpoint(tmp_path, "train")
    assert state == {"epoch": 4} and weights.name == "train-e0004.safetensors"


def test_the_same_epoch_saved_again_keeps_its_previous(tmp_path):
    # a resume from the previous checkpoint writes the latest epoch's tag again
    save_epochs(tmp_path, [1, 2, 3])
    save_epochs(tmp_path, [3])
    assert read_pointer(tmp_path, "train")["previous"] == "train-e0002"
    assert "train-e0002.state.pt" in files(tmp_path)


@pytest.mark.parametrize("damage", ["half", "ten_bytes", "empty", "missing"])
def test_a_damaged_latest_state_names_the_file_and_the_way_out(tmp_path, damage):
    save_epochs(tmp_path, [1, 2, 3])
    state = checkpoint_dir(tmp_path) / "train-e0003.state.pt"
    data = state.read_bytes()
    if damage == "missing":
        state.unlink()
    else:
        state.write_bytes({"half": data[:len(data) // 2], "ten_bytes": data[:10], "empty": b""}[damage])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path, "train")
    msg = str(e.value)
    assert "train-e0003.state.pt" in msg and "--from-previous" in msg and "train-e0002" in msg, msg
    state_prev, weights = load_checkpoint(tmp_path, "train", previous=True)
    assert state_prev == {"epoch": 2} and weights.name == "train-e0002.safetensors"


def test_a_damaged_latest_weights_file_is_reported_too(tmp_path):
    save_epochs(tmp_path, [1, 2])
    (checkpoint_dir(tmp_path) / "train-e0002.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(CheckpointError, match="train-e0002.safetensors.*--from-previous"):
        load_checkpoint(tmp_path, "train")


def test_no_previous_checkpoint_is_said_plainly(tmp_path):
    save_epochs(tmp_path, [1])
    (checkpoint_dir(tmp_path) / "train-e0001.state.pt").write_bytes(b"")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path, "train")
    assert "--from-previous" not in str(e.value)
    with pytest.raises(CheckpointError, match="no checkpoint before epoch 1"):
        load_checkpoint(tmp_path, "train", previous=True)


@pytest.mark.parametrize("text, words", [
    ('{"epoch": 3}', ["train-latest.json", "damaged", "tag"]),
    ("{not json", ["train-latest.json", "not valid JSON"]),
    ("", ["train-latest.json", "not valid JSON"]),
    ('["train-e0003"]', ["train-latest.json", "tag"]),
])
def test_a_damaged_pointer_is_refused_by_name(tmp_path, text, words):
    save_epochs(tmp_path, [1])
    (checkpoint_dir(tmp_path) / "train-latest.json").write_text(text)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path, "train")
    assert all(w in str(e.value) for w in words), str(e.value)


def test_a_missing_checkpoint_says_how_to_start(tmp_path):
    with pytest.raises(FileNotFoundError, match="start it again"):
        load_checkpoint(tmp_path, "train")


def test_a_checkpoint_is_read_back_before_the_pointer_moves(tmp_path, monkeypatch):
    save_epochs(tmp_path, [1])
    import awd_edu.checkpoint as C
    def unreadable(path):
        raise CheckpointError(f"{path} is damaged (simulated)")
    monkeypatch.setattr(C, "_read_state", unreadable)
    with pytest.raises(CheckpointError, match="simulated"):
        save_epochs(tmp_path, [2])
    monkeypatch.undo()
    assert read_pointer(tmp_path, "train")["epoch"] == 1             # still the good one
    assert load_checkpoint(tmp_path, "train")[0] == {"epoch": 1}


def test_a_damaged_metrics_line_is_reported_with_its_line_number(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 1}) + "\n{broken\n")
    with pytest.raises(CheckpointError, match="metrics.jsonl line 2"):
        read_metrics(tmp_path)
