"""Chapter 03: the corpus, batching, checksums and the downloader (against real HTTP servers on 127.0.0.1)."""
import io
import shutil
import socket
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from awd_edu.data import (PTB_FILES, PTB_SHA256, ChecksumError, Corpus, DataNotFoundError, DownloadError, make_splits,
                          Vocab, batchify, download_ptb, get_batch, load_ptb, ptb_dir, verify_ptb)
from awd_edu.files import sha256_file
from awd_edu.config import TrainConfig


# ---------------------------------------------------------------------------------------------- the real corpus
def test_ptb_counts(ptb_corpus):
    assert len(ptb_corpus.vocab) == 10_000
    assert len(ptb_corpus.train) == 929_589
    assert len(ptb_corpus.valid) == 73_760
    assert len(ptb_corpus.test) == 82_430
    for split in (ptb_corpus.train, ptb_corpus.valid, ptb_corpus.test):
        assert split.dtype == torch.long and split.dim() == 1
        assert 0 <= int(split.min()) and int(split.max()) < 10_000


def test_ptb_eos_after_every_line(ptb_corpus, ptb_folder):
    lines = (ptb_folder / "ptb.valid.txt").read_text().splitlines()
    eos = ptb_corpus.vocab["<eos>"]
    assert int((ptb_corpus.valid == eos).sum()) == len(lines)
    first = lines[0].split() + ["<eos>"]
    assert ptb_corpus.vocab.decode(ptb_corpus.valid[: len(first)]) == first


def test_vocab_is_a_bijection_in_first_appearance_order(ptb_corpus, ptb_folder):
    v = ptb_corpus.vocab
    assert all(v[v.itos[i]] == i for i in range(len(v)))
    first_words = (ptb_folder / "ptb.train.txt").read_text().split()[:3]
    assert [v[w] for w in dict.fromkeys(first_words)] == list(range(len(dict.fromkeys(first_words))))


# ------------------------------------------------------------------------------------------- small hand-made corpora
def write_corpus(folder, train="a b c\nb c d\n", valid="a b\n", test="d c\n"):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"ptb.{split}.txt").write_text(text, encoding="utf-8")
    return folder


def test_corpus_on_a_tiny_folder(tmp_path):
    c = Corpus(write_corpus(tmp_path))
    assert c.vocab.itos == ["a", "b", "c", "<eos>", "d"]
    assert c.train.tolist() == [0, 1, 2, 3, 1, 2, 4, 3]
    assert c.valid.tolist() == [0, 1, 3] and c.test.tolist() == [4, 2, 3]


def test_corpus_rejects_words_outside_the_training_vocabulary(tmp_path):
    with pytest.raises(ValueError, match="ptb.test.txt.*not in the training vocabulary"):
        Corpus(write_corpus(tmp_path, test="zebra\n"))


def test_missing_folder_and_file_name_the_path_and_both_fixes(tmp_path):
    with pytest.raises(DataNotFoundError) as e:
        Corpus(tmp_path / "nowhere")
    assert "nowhere" in str(e.value) and "awd-edu data download" in str(e.value) and "AWD_EDU_DATA" in str(e.value)
    write_corpus(tmp_path)
    (tmp_path / "ptb.valid.txt").unlink()
    with pytest.raises(DataNotFoundError) as e:
        Corpus(tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "ptb.valid.txt") in msg and "awd-edu data download" in msg and "AWD_EDU_DATA" in msg


def test_empty_and_non_utf8_files_get_clear_errors(tmp_path):
    write_corpus(tmp_path, valid="")
    with pytest.raises(ChecksumError, match=r"ptb.valid.txt is empty"):
        Corpus(tmp_path)
    write_corpus(tmp_path)
    (tmp_path / "ptb.test.txt").write_bytes(b"caf\xe9 au lait\n")
    with pytest.raises(ChecksumError, match=r"ptb.test.txt is not UTF-8 text \(byte 3"):
        Corpus(tmp_path)


# ----------------------------------------------------------------------------------------------------- checksums
def copy_ptb(src, dst):
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for name in PTB_FILES:
        shutil.copy(Path(src) / name, dst / name)
    return dst


def test_verify_accepts_the_real_files(ptb_folder):
    assert verify_ptb(ptb_folder) == ptb_folder
    assert all(sha256_file(ptb_folder / n) == PTB_SHA256[n] for n in PTB_FILES)


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "html"])
def test_verify_rejects_damaged_files_naming_file_and_expected_hash(ptb_folder, tmp_path, damage):
    folder = copy_ptb(ptb_folder, tmp_path / "ptb")
    f = folder / "ptb.valid.txt"
    raw = f.read_bytes()
    if damage == "flip":
        f.write_bytes(raw[:100] + bytes([raw[100] ^ 1]) + raw[101:])
    elif damage == "truncate":
        f.write_bytes(raw[: len(raw) // 2])
    elif damage == "empty":
        f.write_bytes(b"")
    else:
        f.write_bytes(b"<!DOCTYPE html><html><body>404 Not Found</body></html>")
    with pytest.raises(ChecksumError) as e:
        verify_ptb(folder)
    msg = str(e.value)
    assert str(f) in msg
    if damage != "empty":
        assert PTB_SHA256["ptb.valid.txt"] in msg
    if damage == "html":
        assert "HTML page" in msg


def test_load_ptb_verifies_before_reading(ptb_folder, tmp_path):
    folder = copy_ptb(ptb_folder, tmp_path / "ptb")
    with open(folder / "ptb.train.txt", "ab") as f:
        f.write(b"extra words\n")
    with pytest.raises(ChecksumError):
        load_ptb(folder)
    assert isinstance(Corpus(folder), Corpus)  # the plain reader still reads any PTB-style folder


# ---------------------------------------------------------------------------------------------- where data lives
def test_location_rule(monkeypatch, tmp_path):
    monkeypatch.setenv("AWD_EDU_DATA", str(tmp_path / "root"))
    assert ptb_dir() == tmp_path / "root" / "ptb"
    assert ptb_dir(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv("AWD_EDU_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert ptb_dir() == tmp_path / "cache" / "awd_edu" / "ptb"


# ------------------------------------------------------------------------------------------------ batching
@pytest.mark.parametrize("n,bsz", [(26, 4), (100, 1), (101, 10), (7, 7), (1000, 33)])
def test_batchify_lays_out_contiguous_columns_and_trims(n, bsz):
    stream = torch.randint(0, 50, (n,))
    b = batchify(stream, bsz)
    rows = n // bsz
    assert b.shape == (rows, bsz) and b.is_contiguous()
    for j in range(bsz):
        assert torch.equal(b[:, j], stream[j * rows : (j + 1) * rows])


def test_batchify_rejects_bad_input():
    with pytest.raises(ValueError, match="bsz"):
        batchify(torch.arange(10), 0)
    with pytest.raises(ValueError, match="bsz"):
        batchify(torch.arange(10), 11)
    with pytest.raises(ValueError, match="1-D"):
        batchify(torch.zeros(3, 4, dtype=torch.long), 2)


def test_get_batch_targets_are_inputs_shifted_and_never_run_past_the_end():
    source = batchify(torch.arange(200), 5)  # (40, 5)
    covered = []
    i = 0
    while i < len(source) - 1:
        x, y = get_batch(source, i, 7)
        assert x.shape == y.shape and x.shape[1] == 5
        assert torch.equal(y, source[i + 1 : i + 1 + len(x)])
        assert torch.equal(y[:-1], x[1:])
        covered.extend(range(i, i + len(x)))
        i += len(x)
    assert covered == list(range(len(source) - 1))  # every input row once; the last row is only a target
    with pytest.raises(ValueError, match="i must be"):
        get_batch(source, len(source) - 1, 5)
    with pytest.raises(ValueError, match="seq_len"):
        get_batch(source, 0, 0)


# ------------------------------------------------------------------------------------- downloads, for real, on 127.0.0.1
class MirrorHandler(SimpleHTTPRequestHandler):
    """Serves `root/good/...` files as they are; `/html/...` answers an HTML error page with status 200;
    `/broken/...` answers 500; `/truncated/...` announces the full length and stops half-way."""
    requests = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        MirrorHandler.requests.append(self.path)
        if self.path.startswith("/html/"):
            body = b"<!DOCTYPE html><html><body><h1>Service unavailable</h1></body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.startswith("/broken/"):
            self.send_error(500, "Internal Server Error")
        elif self.path.startswith("/truncated/"):
            body = (Path(self.directory) / "good" / Path(self.path).name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
        else:
            super().do_GET()


@pytest.fixture(scope="module")
def mirrors(ptb_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("mirrors")
    copy_ptb(ptb_folder, root / "good")
    corrupt = copy_ptb(ptb_folder, root / "corrupt")
    for name in PTB_FILES:
        raw = (corrupt / name).read_bytes()
        (corrupt / name).write_bytes(raw.replace(b" the ", b" teh ", 1))
    (root / "archive").mkdir()
    with tarfile.open(root / "archive" / "simple-examples.tgz", "w:gz") as tar:
        tar.add(root / "good" / "ptb.train.txt", arcname="./simple-examples/data/ptb.train.txt")
        for name in ("ptb.valid.txt", "ptb.test.txt", "ptb.char.train.txt"):
            src = root / "good" / (name if name != "ptb.char.train.txt" else "ptb.valid.txt")
            tar.add(src, arcname=f"./simple-examples/data/{name}")
        readme = b"not data"
        info = tarfile.TarInfo("./simple-examples/README")
        info.size = len(readme)
        tar.addfile(info, io.BytesIO(readme))

    handler = lambda *a, **k: MirrorHandler(*a, directory=str(root), **k)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    with socket.socket() as s:  # a port with nothing listening: a mirror that is down
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}/data/"
    yield dict(good=f"{base}/good/", corrupt=f"{base}/corrupt/", html=f"{base}/html/", broken=f"{base}/broken/",
               truncated=f"{base}/truncated/", archive=f"{base}/archive/simple-examples.tgz", down=down)
    server.shutdown()


def no_leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir()) == sorted(PTB_FILES)


def test_download_from_a_raw_mirror(mirrors, tmp_path):
    dest = download_ptb(tmp_path / "ptb", mirrors=[mirrors["good"]], progress=False)
    assert verify_ptb(dest) == dest and no_leftovers(dest)


def test_download_from_the_archive(mirrors, tmp_path):
    dest = download_ptb(tmp_path / "ptb", mirrors=[mirrors["archive"]], progress=False)
    assert verify_ptb(dest) == dest and no_leftovers(dest)


def test_bad_mirrors_are_skipped_until_a_good_one(mirrors, tmp_path):
    order = [mirrors[k] for k in ("down", "broken", "html", "corrupt", "truncated", "good")]
    dest = download_ptb(tmp_path / "ptb", mirrors=order, progress=False, timeout=5)
    assert verify_ptb(dest) == dest and no_leftovers(dest)


def test_all_mirrors_failing_lists_each_mirror_and_why(mirrors, tmp_path):
    order = [mirrors[k] for k in ("down", "broken", "html", "corrupt", "truncated")]
    with pytest.raises(DownloadError) as e:
        download_ptb(tmp_path / "ptb", mirrors=order, progress=False, timeout=5)
    msg = str(e.value)
    for url in order:
        assert url in msg
    assert "HTML page" in msg and "500" in msg and "expected " + PTB_SHA256["ptb.train.txt"] in msg
    assert list((tmp_path / "ptb").iterdir()) == []  # nothing half-written was left behind


def test_valid_files_are_skipped_and_a_bad_download_never_replaces_a_file(mirrors, ptb_folder, tmp_path):
    dest = copy_ptb(ptb_folder, tmp_path / "ptb")
    MirrorHandler.requests.clear()
    download_ptb(dest, mirrors=[mirrors["good"]], progress=False)
    assert MirrorHandler.requests == []  # all valid: nothing fetched
    # an altered valid file and only bad mirrors: the error is raised and the file is exactly as it was
    altered = (dest / "ptb.test.txt").read_bytes() + b"my own note\n"
    (dest / "ptb.test.txt").write_bytes(altered)
    with pytest.raises(DownloadError, match="ptb.test.txt"):
        download_ptb(dest, mirrors=[mirrors["corrupt"], mirrors["html"]], progress=False)
    assert (dest / "ptb.test.txt").read_bytes() == altered and no_leftovers(dest)
    # a good mirror then replaces just that file
    before = {n: (dest / n).stat().st_mtime_ns for n in ("ptb.train.txt", "ptb.valid.txt")}
    MirrorHandler.requests.clear()
    download_ptb(dest, mirrors=[mirrors["good"]], progress=False)
    assert MirrorHandler.requests == ["/good/ptb.test.txt"]
    assert verify_ptb(dest) == dest
    assert before == {n: (dest / n).stat().st_mtime_ns for n in before}


def test_tokenize_puts_eos_after_every_line_and_splits_on_any_whitespace():
    from awd_edu.data import EOS, tokenize
    assert tokenize(" a  b\tc \n\nd\n") == ["a", "b", "c", EOS, EOS, "d", EOS]   # an empty line is one <eos>
    assert tokenize("") == [] and tokenize("x") == ["x", EOS]                # a last line without newline too


def _toy_corpus():
    toy = Corpus.__new__(Corpus)   # 40 / 20 / 10 token ids, built by hand
    toy.vocab, toy.train, toy.valid, toy.test = Vocab([f"w{i}" for i in range(9)]), torch.arange(40), torch.arange(20), torch.arange(10)
    return toy


def test_make_splits_lays_out_each_split_at_its_batch_size_after_the_token_limit():
    toy = _toy_corpus()
    cfg = TrainConfig(batch_size=4, eval_batch_size=2, test_batch_size=1, max_train_tokens=16, max_eval_tokens=None)
    splits = make_splits(toy, cfg)
    assert torch.equal(splits["train"], batchify(toy.train[:16], 4))
    assert torch.equal(splits["valid"], batchify(toy.valid, 2)) and torch.equal(splits["test"], batchify(toy.test, 1))


def test_make_splits_refuses_a_split_shorter_than_two_rows_naming_the_setting():
    with pytest.raises(ValueError, match="max_eval_tokens"):
        make_splits(_toy_corpus(), TrainConfig(eval_batch_size=6, max_eval_tokens=11))
    with pytest.raises(ValueError, match="max_train_tokens"):
        make_splits(_toy_corpus(), TrainConfig(batch_size=4, max_train_tokens=7))
