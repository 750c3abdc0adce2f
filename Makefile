# Which Pixels Matter? -- every target sets itself up on a fresh machine (Python >= 3.10):
#   make book                  create .venv, install, execute the notebooks, build the HTML
#   make test                  create .venv, install, run the test suite; its browser tests open
#                              the book that `make book` built in Chromium (left out, in one line,
#                              before any `make book`; Chromium is installed where root/sudo can)
#   make book PROFILE=full     the GPU-scale run (more seeds and steps)
#   make book JOBS=2           execute up to 2 notebooks at once, each kernel with
#                              cpu_count // 2 threads (default JOBS=1: one after the other)
#   make html                  rebuild the HTML only, from the notebooks the last `make book` ran
#   make sync                  jupytext --sync every notebook pair, write each notebook's first
#                              cell (the setup cell of _config.yml's release), clear the outputs
#   make save-times            copy the last run's notebook times into results/notebook_times.csv
#   make clean                 remove _build/ (the venv stays; `make distclean` removes it too)

PYTHON      ?= python3
VENV        ?= .venv
# torch is installed first and on its own, so that the install of the package does not pull
# another build: on a CPU-only machine give the CPU wheel, e.g. TORCH="torch==2.13.0".
TORCH       ?= torch==2.13.0
PROFILE     ?= ci
DEVICE      ?= auto
JOBS        ?= 1
BOOK_ARGS   ?=
PYTEST_ARGS ?=

BIN   := $(VENV)/bin
# Re-installs only when pyproject.toml changes (or after `make distclean`).
STAMP := $(VENV)/.pixelweight-installed

.PHONY: book html test sync save-times install clean distclean

book: $(STAMP)
	$(BIN)/python tools/build_book.py --profile "$(PROFILE)" --device "$(DEVICE)" --jobs "$(JOBS)" $(BOOK_ARGS)

html: $(STAMP)
	$(BIN)/python tools/build_book.py --html-only $(BOOK_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

sync: $(STAMP)
	$(BIN)/python tools/build_book.py --sync

save-times: $(STAMP)
	$(BIN)/python tools/build_book.py --save-times

install: $(STAMP)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "$(PYTHON) is Python %d.%d; Python >= 3.10 is needed (make PYTHON=python3.11 ...)" % sys.version_info[:2])'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install "$(TORCH)"
	$(BIN)/python -m pip install -e ".[test,book]"
	touch $@

clean:
	rm -rf _build

distclean: clean
	rm -rf $(VENV)
