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
