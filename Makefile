# Two commands do everything on a fresh machine: `make lab` (the student environment: the
# series and JupyterLab) and `make test` (the developer environment: that plus the test tools).
# Windows (no make) and conda: see README.md, "Setting up".
PY_MIN := 3.11
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 \
	|| command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Stamps: written only when an install step has finished, so a .venv without either is
# left over from a set-up that stopped part-way.
STUDENT := $(VENV)/.installed-student
DEVELOPER := $(VENV)/.installed
# Optional: where pip gets torch, e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu for
# the CPU-only build on a Linux machine without a GPU (README: "The torch download").
TORCH_INDEX ?=
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]-*.ipynb))
# nbval: compare only outputs marked with "# NBVAL_CHECK_OUTPUT"; run on this venv's kernel.
NBVAL := --nbval-lax --nbval-current-env --nbval-cell-timeout=600 --nbval-sanitize-with tests/nbval_sanitize.cfg

# The course's tensors are tiny: one thread per process is fastest, and avoids several
# processes (pytest, a kernel, JupyterLab) fighting over the cores during the tests.
test lint unit notebooks run bench book fuzz: export OMP_NUM_THREADS := 1

.PHONY: install install-student venv lab test unit notebooks lint run bench book fuzz clean

# Before anything is created: a Python that is new enough, and no half-built .venv.
# Kept as one shell snippet so that each install step runs it first (tests/test_setup.py
# runs it through `make venv` with fake interpreters).
define ENSURE_VENV
	@if [ -z "$(PYTHON)" ] || ! command -v "$(PYTHON)" >/dev/null 2>&1; then \
		echo "make: no Python to run$(if $(PYTHON), ($(PYTHON) is not a program here)," \
			"(looked for python3.11, python3.12, python3.13 and python3)). This course needs Python" \
			"$(PY_MIN) or newer: install it, or name it with make PYTHON=/path/to/python3.11" \
			"(README: Troubleshooting)." >&2; \
		exit 1; \
	fi
	@found=$$("$(PYTHON)" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); \
	if ! echo "$$found" | awk -F. -v need="$(PY_MIN)" \
			'BEGIN { split(need, n, ".") } { exit !($$1 > n[1] || ($$1 == n[1] && $$2 >= n[2])) }'; then \
		echo "make: $(PYTHON) is Python $${found:-(it did not say which)}, but this course needs" \
			"Python $(PY_MIN) or newer; nothing was installed. Install Python $(PY_MIN)+ and run" \
			"make again, or name it with make PYTHON=/path/to/python3.11 (README: Troubleshooting)." >&2; \
		exit 1; \
	fi
	@if [ -d $(VENV) ] && { { [ ! -f $(STUDENT) ] && [ ! -f $(DEVELOPER) ]; } || \
			! $(BIN)/python -c "" >/dev/null 2>&1; }; then \
		echo "make: $(VENV) is half-built (an earlier set-up stopped part-way) or its Python no" \
			"longer runs: removing it and building it again."; \
		rm -rf $(VENV); \
	fi
	@[ -x $(BIN)/python ] || { echo "$(PYTHON) -m venv $(VENV)"; $(PYTHON) -m venv $(VENV); }
endef

venv:
	$(ENSURE_VENV)

# The student environment: the package, torch, JupyterLab and what the notebooks import.
$(STUDENT): pyproject.toml
	$(ENSURE_VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# Pinned: on the course machines this is a CPU build on local disk; an unpinned torch
	# would download several GB of CUDA libraries.
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e .
	touch $(STUDENT)

# The developer environment: the student one plus the test tools (pytest, hypothesis, nbval,
# ruff, torchdiffeq, playwright).
$(DEVELOPER): $(STUDENT)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(DEVELOPER)

install-student: $(STUDENT)

install: $(DEVELOPER)

# JupyterLab refuses to start as root (containers, classroom VMs) unless told it may.
lab: $(STUDENT)
	$(BIN)/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

test: install lint unit notebooks

lint: install
	$(BIN)/ruff check .

unit: install
	$(BIN)/pytest -q tests

# nbval reads a cell's messages only once the cell has finished, and ZeroMQ drops what is
# beyond its queue (about 2,000 messages): a long training cell whose progress bars redraw
# every 0.1 s (06: 1,428 messages in 65 s, more on a busy machine) can lose the final "idle"
# and fail with "Timeout ... waiting for output". Bars that redraw every 2 s send 222.
notebooks: install
	TQDM_MININTERVAL=2 $(BIN)/pytest -q $(NBVAL) $(NOTEBOOKS)

# Re-execute every notebook in place, top to bottom, so committed outputs are current.
run: install
	for nb in $(NOTEBOOKS); do \
		start=$$(date +%s); $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
			--ExecutePreprocessor.timeout=600 "$$nb" || exit 1; \
		echo "$$nb: $$(( $$(date +%s) - start )) s"; \
	done

# The peers (torchode, jax, diffrax) come from the optional `bench` extra, installed here
# only: the package and `make test` never need them.
bench: install
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/bench_adjoint.py
	$(BIN)/python benchmarks/bench_floor.py

# The long run of the gradient fuzzer (tests/fuzz_gradients.py; about 20 minutes on 2
# cores): every gradient method x problem family x option, against exact answers. It writes
# its summary to tests/fuzz_latest.md; `make unit` runs a bounded version.
fuzz: install
	$(BIN)/python tests/fuzz_gradients.py --examples 5000 --summary tests/fuzz_latest.md

# The executed series as static HTML pages in _build/book/ (open _build/book/index.html).
book: $(STUDENT)
	$(BIN)/python -m neuralode_helpers.book notebooks _build/book

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
