# Two commands do everything on a fresh machine: `make lab` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]-*.ipynb))
# nbval: compare only outputs marked with "# NBVAL_CHECK_OUTPUT"; run on this venv's kernel.
NBVAL := --nbval-lax --nbval-current-env --nbval-cell-timeout=600 --nbval-sanitize-with tests/nbval_sanitize.cfg

# The course's tensors are tiny: one thread per process is fastest, and avoids several
# processes (pytest, a kernel, JupyterLab) fighting over the cores during the tests.
test lint unit notebooks run bench book: export OMP_NUM_THREADS := 1

.PHONY: install lab test unit notebooks lint run bench book clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# Pinned: on the course machines this is a CPU build on local disk; an unpinned torch
	# would download several GB of CUDA libraries.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# JupyterLab refuses to start as root (containers, classroom VMs) unless told it may.
lab: install
	$(BIN)/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

test: install lint unit notebooks

lint: install
	$(BIN)/ruff check .

unit: install
	$(BIN)/pytest -q tests

notebooks: install
	$(BIN)/pytest -q $(NBVAL) $(NOTEBOOKS)

# Re-execute every notebook in place, top to bottom, so committed outputs are current.
run: install
	for nb in $(NOTEBOOKS); do \
		start=$$(date +%s); $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
			--ExecutePreprocessor.timeout=600 "$$nb" || exit 1; \
		echo "$$nb: $$(( $$(date +%s) - start )) s"; \
	done

bench: install
	$(BIN)/python benchmarks/bench_adjoint.py

# The executed series as static HTML pages in _build/book/ (open _build/book/index.html).
book: install
	$(BIN)/python -m neuralode_helpers.book notebooks _build/book

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
