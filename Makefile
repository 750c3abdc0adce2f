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
#   make results CHAPTER=02_recall
#                              train the chapter's runs at PROFILE (default here: full) outside the
#                              book, JOBS processes at a time, records under results/<chapter>/
#                              (commit them: the book takes its verdicts from them)
#   make verify RECORDS=results/02_recall
#                              retrain the runs those records describe and compare every metric
#   make constraints           rewrite constraints.txt from the venv (after an upgrade)
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
# Re-installs only when pyproject.toml or constraints.txt change (or after `make distclean`).
# constraints.txt pins the exact versions of the book's build (Colab keeps its own torch).
STAMP := $(VENV)/.pixelweight-installed
RESULTS_PROFILE ?= full
CHAPTER     ?=
RECORDS     ?=

.PHONY: book html test sync save-times install clean distclean results verify constraints

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

# constraints.txt was frozen under Python 3.11: on another Python the install is unpinned (said).
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	@pins=$$($(BIN)/python -c 'import sys; print("-c constraints.txt" if sys.version_info[:2] == (3, 11) else "")'); \
	if [ -z "$$pins" ]; then echo "note: constraints.txt pins the book's Python 3.11 build; $$($(BIN)/python -V) installs unpinned versions"; fi; \
	set -x; $(BIN)/python -m pip install $$pins "$(TORCH)" && $(BIN)/python -m pip install $$pins -e ".[test,book]"
	touch $@

results: $(STAMP)
	@test -n "$(CHAPTER)" || { echo "make results CHAPTER=<folder under notebooks/>, e.g. CHAPTER=02_recall"; exit 2; }
	$(BIN)/python -m pixelweight.results run "$(CHAPTER)" --profile "$(RESULTS_PROFILE)" --jobs "$(JOBS)" --device "$(DEVICE)"

verify: $(STAMP)
	@test -n "$(RECORDS)" || { echo "make verify RECORDS=<record file or folder>"; exit 2; }
	$(BIN)/python -m pixelweight.results verify $(RECORDS)

constraints: $(STAMP)
	{ sed -n '/^#/p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | sed -E 's/^(torch==[^+]*)\+.*/\1/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf _build

distclean: clean
	rm -rf $(VENV)
