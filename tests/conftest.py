"""Shared fixtures. Tests read Penn Treebank from ../shared/data/ptb when it exists (through AWD_EDU_DATA)."""
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
if not os.environ.get("AWD_EDU_DATA") and (SHARED_DATA / "ptb" / "ptb.train.txt").is_file():
    os.environ["AWD_EDU_DATA"] = str(SHARED_DATA)


def _ptb_folder():
    from awd_edu.data import ptb_dir
    return ptb_dir()


def pytest_collection_modifyitems(items):
    "A browser test is always slow (Chromium, a server, a built site): `make test-fast` (`-m 'not slow'`) leaves it out."
    for item in items:
        if item.get_closest_marker("browser") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def ptb_folder():
    "The folder of the real PTB files; tests that need it fail with the loader's own message if it is missing."
    from awd_edu.data import verify_ptb
    return verify_ptb()


@pytest.fixture(scope="session")
def ptb_corpus(ptb_folder):
    "The real Penn Treebank corpus, loaded once per test session."
    from awd_edu.data import Corpus
    return Corpus(ptb_folder)


@pytest.fixture(scope="module")
def one_thread():
    "One torch thread for a module of tiny models (faster than two threads fighting over a busy CPU); restored after."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


_CORPORA = {}   # resolved PTB folder -> its Corpus, shared by every module that asks for `corpus_once`


@pytest.fixture(scope="module")
def corpus_once(ptb_folder):
    """Every command loads PTB through `load_ptb` (the trainer's and the run directory's readers'): for the module,
    each folder is read once per session and the same Corpus is handed back after. Use it with
    `pytestmark = pytest.mark.usefixtures("corpus_once")` in a module that runs many commands on PTB."""
    import awd_edu.rundir as R
    real = R.load_ptb
    def load_ptb(path=None, download=False):
        key = str(Path(path or ptb_folder).resolve())
        if key not in _CORPORA:
            _CORPORA[key] = real(path, download)
        return _CORPORA[key]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(R, "load_ptb", load_ptb)   # the trainer, load_best and the other readers load through it
        yield
