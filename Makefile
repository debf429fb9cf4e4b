# Every set-up step lives here, so a fresh clone needs one command for each job:
#   make train   installs the project in .venv, fetches Penn Treebank, trains (CPU: a preset that finishes in minutes)
#   make test    installs the project with its dev tools in .venv, fetches Penn Treebank if it is missing, installs
#                Chromium for the browser tests if it is missing (apt-get), and runs the whole test suite (what CI runs)
#   make test-fast   the same without the notebooks and the tests marked slow (the edit loop, a few minutes: no Sphinx
#                build, no browser, no JupyterLab, no long trainer run on PTB; `make test` runs them all)
#   make docs    builds the documentation site into docs/_build/html (offline, from the notebooks' saved outputs)
#   make serve-docs  builds the site and serves it on http://127.0.0.1:8000 (DOCS_PORT=... for another port)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0: the CPU wheel on machines without CUDA; on a CUDA machine install the CUDA build of torch
# into $(VENV) first (https://pytorch.org/get-started/locally/) and it is kept.
TORCH ?= torch==2.13.0

# Tests and notebooks read Penn Treebank from ../shared/data/ptb when it exists (AWD_EDU_DATA is the data root).
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/ptb/ptb.train.txt),)
export AWD_EDU_DATA ?= $(SHARED_DATA)
endif

.PHONY: install train test test-fast docs serve-docs
DOCS_PORT ?= 8000

$(VENV)/.installed: settings.ini setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

train: install
	$(BIN)/awd-edu data download
	$(BIN)/awd-edu train --preset auto --run-dir runs/main --resume-existing

test: install
	BIN=$(BIN) bash tools/test.sh

test-fast: install
	BIN=$(BIN) bash tools/test.sh --fast

docs: install
	$(BIN)/python tools/docs.py build

serve-docs: docs
	$(BIN)/python tools/docs.py serve --port $(DOCS_PORT)
