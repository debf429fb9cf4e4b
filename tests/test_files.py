"""Tests of awd_edu.files: writes all or nothing, an append that a failure undoes, a full disk named by its file,
and the one SHA-256 of a file."""
import errno
import hashlib
import os
from pathlib import Path

import pytest

import awd_edu.files as files
from awd_edu.files import atomic_append, atomic_link, atomic_write, atomic_write_text, sha256_file


def test_a_write_that_fails_halfway_leaves_the_old_file(tmp_path):
    target = atomic_write_text(tmp_path / "a.txt", "old")
    def crash(tmp):
        Path(tmp).write_text("ne")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_full_disk_in_a_library_s_own_words_is_enospc_naming_the_target(tmp_path):
    def full(tmp):
        Path(tmp).write_bytes(b"\0" * 10)
        raise RuntimeError('IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')
    with pytest.raises(OSError) as e:
        atomic_write(tmp_path / "sub" / "w.safetensors", full)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "sub" / "w.safetensors")
    assert not list((tmp_path / "sub").iterdir())


def test_an_error_that_is_not_a_full_disk_passes_through(tmp_path):
    def broken(tmp):
        raise ValueError("not serialisable")
    with pytest.raises(ValueError, match="not serialisable"):
        atomic_write(tmp_path / "x.json", broken)
    assert not list(tmp_path.iterdir())


def test_a_link_is_the_same_file_and_a_rewrite_of_one_name_leaves_the_other(tmp_path):
    a = atomic_write_text(tmp_path / "a", "one")
    b = atomic_link(a, tmp_path / "b")
    assert b.read_text() == "one" and os.path.samefile(a, b)
    atomic_write_text(a, "two")
    assert b.read_text() == "one"


def test_a_link_falls_back_to_a_copy(tmp_path, monkeypatch):
    a = atomic_write_text(tmp_path / "a", "one")
    def no_links(src, dst):
        raise OSError(errno.EXDEV, "cross-device link")
    monkeypatch.setattr(files.os, "link", no_links)
    b = atomic_link(a, tmp_path / "b")
    assert b.read_text() == "one" and not os.path.samefile(a, b)


def test_an_append_that_fails_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    log = tmp_path / "log"
    atomic_append(log, b"line 1\n")
    atomic_append(log, b"line 2\n")
    assert log.read_bytes() == b"line 1\nline 2\n"
    real = os.write
    def write(fd, data):
        real(fd, bytes(data)[:3])
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(files.os, "write", write)
    with pytest.raises(OSError) as e:
        atomic_append(log, b"line 3\n")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(log)
    monkeypatch.undo()
    assert log.read_bytes() == b"line 1\nline 2\n"


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, 2 * (1 << 20) + 7])
def test_sha256_of_a_file_is_the_sha256_of_its_bytes(tmp_path, size):
    content = os.urandom(size)
    (tmp_path / "f").write_bytes(content)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(content).hexdigest()
