# Two commands do everything on a fresh machine: `make lab` (the student environment: the
# series and JupyterLab) and `make test` (the developer environment: that plus the test tools).
# Windows (no make) and conda: see README.md, "Setting up". Offline classrooms: `make
# wheelhouse` on a machine with a network, then `make lab WHEELHOUSE=folder` (README: "No
# network in the classroom").
PY_MIN := 3.11
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 \
	|| command -v python3.14 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Stamps: written only when an install step has finished, so a .venv without either is
# left over from a set-up that stopped part-way. Each holds a checksum of what it installed
# (below), so that a changed pyproject.toml reinstalls only when its requirements changed.
STUDENT := $(VENV)/.installed-student
DEVELOPER := $(VENV)/.installed

# torch: the course supports a range and tests both ends: TORCH_NEWEST with `make test`,
# TORCH_OLDEST (with the numpy 1 it needs: numpy 2 needs torch 2.3 or newer) with
# `make test-oldest`. pip takes the newest torch in the range that has a wheel for the
# machine: TORCH_NEWEST on Linux, Windows and Apple silicon with macOS 14 or newer, 2.11 on
# Apple silicon with macOS 11-13, and TORCH_OLDEST, the last release for Intel Macs, there.
TORCH_NEWEST := 2.13.0
TORCH_OLDEST := 2.2.2
NUMPY_OLDEST := 1.26.4
TORCH_RANGE := "torch>=$(TORCH_OLDEST),<=$(TORCH_NEWEST)"
# The machine (stand-ins in tests/test_setup.py set these).
UNAME_S ?= $(shell uname -s)
UNAME_M ?= $(shell uname -m)
# $(call torch_req,PLATFORM): what to install for a platform, given as Darwin-x86_64 (uname)
# or as a pip platform tag (macosx_12_0_x86_64, win_amd64, manylinux_2_28_x86_64, ...). Intel
# Macs also get numpy 1 (pyproject.toml says so with a marker, which `pip download` for
# another platform would not read).
torch_req = $(TORCH_RANGE)$(if $(filter Darwin-x86_64 macosx_%_x86_64,$(1)), "numpy<2")
TORCH_REQ := $(call torch_req,$(UNAME_S)-$(UNAME_M))

# Where pip gets torch. "auto": on Linux without an NVIDIA GPU, PyTorch's CPU-only build
# (about 190 MB) instead of PyPI's CUDA build (about 2.5 GB), when its index answers; the
# default index otherwise. TORCH_INDEX= (empty) always uses the default index; any URL is
# used as given (README: "The torch download").
TORCH_INDEX ?= auto
CPU_INDEX := https://download.pytorch.org/whl/cpu
# The GPU question and the reachability question, as commands (tests replace them).
NVIDIA_SMI ?= nvidia-smi
INDEX_PROBE ?= $(PYTHON) -c "import sys, urllib.request as r; \
	r.urlopen(r.Request(sys.argv[1], method='HEAD'), timeout=10)"
# $(call torch_args,OS,GPU PROBE,REQUIREMENTS): prints pip's arguments for torch, and says on
# stderr which build it chose and why.
define torch_args
index="$(TORCH_INDEX)"; \
if [ "$$index" = auto ]; then \
	index=; \
	if [ "$(1)" = Linux ]; then \
		if $(2) -L >/dev/null 2>&1; then \
			echo "make: an NVIDIA GPU answers: torch with its CUDA libraries (about 2.5 GB)." >&2; \
		elif $(INDEX_PROBE) $(CPU_INDEX)/torch/ >/dev/null 2>&1; then \
			index=$(CPU_INDEX); \
			echo "make: no NVIDIA GPU: the CPU-only torch from $(CPU_INDEX) (about 190 MB;" \
				"make ... TORCH_INDEX= for the default index)." >&2; \
		else \
			echo "make: no NVIDIA GPU, but $(CPU_INDEX) does not answer: torch from pip's" \
				"default index (from PyPI on Linux: the CUDA build, about 2.5 GB)." >&2; \
		fi; \
	fi; \
fi; \
echo $(3) $${index:+--index-url $$index}
endef

# Offline: `make wheelhouse WHEELHOUSE=folder [PLATFORM=tag PYTHON_VERSION=3.x]` downloads
# every wheel the student environment needs for that platform (default: this machine) into
# the folder; `make lab WHEELHOUSE=folder` installs from it alone, with no network.
WHEELHOUSE ?=
PLATFORM ?=
PYTHON_VERSION ?=
WHEEL_PYTHON := $(or $(PYTHON_VERSION),3.11)
WHEEL_TORCH_REQ := $(call torch_req,$(PLATFORM))
# A pip platform tag as uv names the platform, and a macOS tag's version (macosx_12_0_x86_64: 12.0).
uv_platform = $(strip $(if $(filter win_amd64,$(1)),x86_64-pc-windows-msvc) \
	$(if $(filter win_arm64,$(1)),aarch64-pc-windows-msvc) \
	$(if $(filter macosx_%_x86_64,$(1)),x86_64-apple-darwin) \
	$(if $(filter macosx_%_arm64,$(1)),aarch64-apple-darwin) \
	$(if $(filter manylinux%_x86_64,$(1)),x86_64-manylinux_2_28) \
	$(if $(filter manylinux%_aarch64,$(1)),aarch64-manylinux_2_28))
macos_version = $(word 2,$(subst _, ,$(PLATFORM))).$(word 3,$(subst _, ,$(PLATFORM)))
PIP_WHEELHOUSE = --no-index --find-links "$(WHEELHOUSE)"

# The requirements each stamp stands for: pyproject.toml's lists (comments and spaces
# dropped) and the torch chosen above, as a checksum.
reqs_of = $(shell { sed -n '/^$(1) = \[/,/^\]/p' pyproject.toml; echo '$(2)'; } \
	| sed 's/\#.*//' | tr -d ' \n' | cksum)
STUDENT_REQS := $(call reqs_of,dependencies,$(TORCH_REQ))
DEVELOPER_REQS := $(call reqs_of,test,$(STUDENT_REQS))
# A stamp that does not hold today's checksum (or is missing) is out of date.
stale = $(if $(filter-out $(shell cat $(1) 2>/dev/null),$(2))$(filter-out $(2),$(shell cat $(1) 2>/dev/null)),FORCE)

# The oldest supported torch, in its own environment (make test-oldest): the unit tests
# and notebooks 00-03. Its torch has wheels for Python 3.11 and 3.12 only.
OLDEST := .venv-oldest
OLDEST_STAMP := $(OLDEST)/.installed
OLDEST_REQ := torch==$(TORCH_OLDEST) numpy==$(NUMPY_OLDEST)
OLDEST_SKIP := test_browser.py test_setup.py test_packaging.py test_book.py test_lesson_plan.py \
	test_grading.py test_rubrics.py test_student_edition.py
OLDEST_REQS := $(call reqs_of,test,$(call reqs_of,dependencies,$(OLDEST_REQ)))
OLDEST_NOTEBOOKS := $(filter notebooks/00-% notebooks/01-% notebooks/02-% notebooks/03-%,$(sort $(wildcard notebooks/[0-9][0-9]-*.ipynb)))

NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]-*.ipynb))
# nbval: compare only the outputs of cells tagged "nbval-check-output"; run on this venv's kernel.
NBVAL := --nbval-lax --nbval-current-env --nbval-cell-timeout=600 --nbval-sanitize-with tests/nbval_sanitize.cfg

# The course's tensors are tiny: one thread per process is fastest, and avoids several
# processes (pytest, a kernel, JupyterLab) fighting over the cores during the tests.
test lint unit notebooks run bench book student grade fuzz test-oldest: export OMP_NUM_THREADS := 1

.PHONY: install install-student venv lab test unit notebooks lint run bench book student grade fuzz \
	clean wheelhouse torch-choice test-oldest FORCE

# Before anything is created: a Python that is new enough, and no half-built venv.
# Kept as one shell snippet so that each install step runs it first (tests/test_setup.py
# runs it through `make venv` with fake interpreters). $(call ENSURE_VENV,DIR).
define ENSURE_VENV
	@if [ -z "$(PYTHON)" ] || ! command -v "$(PYTHON)" >/dev/null 2>&1; then \
		echo "make: no Python to run$(if $(PYTHON), ($(PYTHON) is not a program here)," \
			"(looked for python3.11, python3.12, python3.13, python3.14 and python3)). This" \
			"course needs Python $(PY_MIN) or newer: install it, or name it with" \
			"make PYTHON=/path/to/python3.11 (README: Troubleshooting)." >&2; \
		exit 1; \
	fi
	@found=$$("$(PYTHON)" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); \
	if ! echo "$$found" | awk -F. -v need="$(PY_MIN)" \
			'BEGIN { split(need, n, ".") } { exit !($$1 > n[1] || ($$1 == n[1] && $$2 >= n[2])) }'; then \
		echo "make: $(PYTHON) is Python $${found:-(it did not say which)}, but this course needs" \
			"Python $(PY_MIN) or newer; nothing was installed. Install Python $(PY_MIN)+ and run" \
			"make again, or name it with make PYTHON=/path/to/python3.11 (README: Troubleshooting)." >&2; \
		exit 1; \
	fi; \
	if [ "$(UNAME_S)-$(UNAME_M)" = Darwin-x86_64 ] && [ "$$found" != 3.11 ] && [ "$$found" != 3.12 ]; then \
		echo "make: $(PYTHON) is Python $$found, but on an Intel Mac the last torch" \
			"($(TORCH_OLDEST)) has wheels for Python 3.11 and 3.12 only; nothing was installed." \
			"Name one with make PYTHON=python3.11 (README: Platforms)." >&2; \
		exit 1; \
	fi
	@if [ -d $(1) ] && { { [ ! -f $(1)/.installed-student ] && [ ! -f $(1)/.installed ]; } || \
			! $(1)/bin/python -c "" >/dev/null 2>&1; }; then \
		echo "make: $(1) is half-built (an earlier set-up stopped part-way) or its Python no" \
			"longer runs: removing it and building it again."; \
		rm -rf $(1); \
	fi
	@[ -x $(1)/bin/python ] || { echo "$(PYTHON) -m venv $(1)"; $(PYTHON) -m venv $(1); }
endef

venv:
	$(call ENSURE_VENV,$(VENV))

# Which torch `make lab` would install here, and from where (nothing is installed).
torch-choice:
	@$(call torch_args,$(UNAME_S),$(NVIDIA_SMI),$(TORCH_REQ))

# The student environment: the package, torch, JupyterLab and what the notebooks import.
# Progress bars stay on: torch alone is 70 MB to 2.5 GB, and a silent pip looks hung.
$(STUDENT): $(call stale,$(STUDENT),$(STUDENT_REQS))
	$(call ENSURE_VENV,$(VENV))
ifneq ($(WHEELHOUSE),)
	$(BIN)/python -m pip install $(PIP_WHEELHOUSE) --quiet --upgrade pip
	$(BIN)/python -m pip install $(PIP_WHEELHOUSE) -e .
else
	$(BIN)/python -m pip install --quiet --upgrade pip
	@args=$$($(call torch_args,$(UNAME_S),$(NVIDIA_SMI),$(TORCH_REQ))) && \
		echo "$(BIN)/python -m pip install --progress-bar on $$args" && \
		$(BIN)/python -m pip install --progress-bar on $$args
	$(BIN)/python -m pip install --progress-bar on -e .
endif
	echo "$(STUDENT_REQS)" > $(STUDENT)

# The developer environment: the student one plus the test tools (pytest, hypothesis, nbval,
# ruff, torchdiffeq, playwright).
$(DEVELOPER): $(STUDENT) $(call stale,$(DEVELOPER),$(DEVELOPER_REQS))
	$(BIN)/python -m pip install --progress-bar on $(if $(WHEELHOUSE),$(PIP_WHEELHOUSE)) -e ".[test]"
	echo "$(DEVELOPER_REQS)" > $(DEVELOPER)

FORCE:

install-student: $(STUDENT)

install: $(DEVELOPER)

# JupyterLab refuses to start as root (containers, classroom VMs) unless told it may.
lab: $(STUDENT)
	$(BIN)/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

# A folder of wheels for a class without a network: every package of the student environment
# for one platform and Python, downloaded through this machine's pip (README: "No network in
# the classroom"). Without PLATFORM: for this machine (a Linux one gets the CPU-only torch when
# PyTorch's index answers). With PLATFORM (win_amd64, macosx_14_0_arm64, macosx_12_0_x86_64,
# manylinux_2_28_x86_64, ...) and PYTHON_VERSION (default 3.11): pip alone would read the
# packages' conditions ("only on Windows", "only on Linux") for this machine, not the target,
# so uv (installed into .venv for this) resolves the set for the target first, and pip
# downloads exactly that list.
wheelhouse:
	@[ -n "$(WHEELHOUSE)" ] || { echo "make: name the folder: make wheelhouse" \
		"WHEELHOUSE=/path/to/folder [PLATFORM=win_amd64 PYTHON_VERSION=3.11]" >&2; exit 1; }
	$(call ENSURE_VENV,$(VENV))
	mkdir -p "$(WHEELHOUSE)"
	$(BIN)/python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))\
		['project']['dependencies'], sep='\n')" > "$(WHEELHOUSE)/requirements.txt"
ifeq ($(PLATFORM),)
	@args=$$($(call torch_args,$(UNAME_S),false,$(TORCH_REQ))) && \
		echo "$(BIN)/python -m pip download --only-binary=:all: --no-deps $$args" && \
		$(BIN)/python -m pip download --progress-bar on --only-binary=:all: \
		--dest "$(WHEELHOUSE)" --no-deps $$args
	$(BIN)/python -m pip download --progress-bar on --only-binary=:all: --dest "$(WHEELHOUSE)" \
		--find-links "$(WHEELHOUSE)" pip "setuptools>=64" $(TORCH_REQ) \
		-r "$(WHEELHOUSE)/requirements.txt"
else
	@[ -n "$(call uv_platform,$(PLATFORM))" ] || { echo "make: PLATFORM=$(PLATFORM) is not one" \
		"of win_amd64, win_arm64, macosx_<version>_x86_64, macosx_<version>_arm64," \
		"manylinux_<version>_x86_64, manylinux_<version>_aarch64." >&2; exit 1; }
	$(BIN)/python -m pip install --quiet uv
	printf '%s\n' pip "setuptools>=64" $(WHEEL_TORCH_REQ) >> "$(WHEELHOUSE)/requirements.txt"
	$(if $(filter macosx_%,$(PLATFORM)),MACOSX_DEPLOYMENT_TARGET=$(macos_version)) \
		$(BIN)/uv pip compile --quiet --only-binary :all: --python-version $(WHEEL_PYTHON) \
		--python-platform $(call uv_platform,$(PLATFORM)) "$(WHEELHOUSE)/requirements.txt" \
		-o "$(WHEELHOUSE)/locked.txt"
	$(BIN)/python -m pip download --progress-bar on --only-binary=:all: --no-deps \
		--platform $(PLATFORM) --python-version $(WHEEL_PYTHON) --implementation cp \
		--dest "$(WHEELHOUSE)" -r "$(WHEELHOUSE)/locked.txt"
endif
	@echo "$(WHEELHOUSE): $$(ls "$(WHEELHOUSE)"/*.whl | wc -l) wheels, $$(du -sh "$(WHEELHOUSE)" | cut -f1)." \
		"On each laptop: make lab WHEELHOUSE=$(WHEELHOUSE) (README: No network in the classroom)."

test: install lint unit notebooks

lint: install
	$(BIN)/ruff check .

unit: install
	$(BIN)/pytest -q tests

# The oldest supported torch (TORCH_OLDEST, numpy 1) in .venv-oldest: the unit tests and
# notebooks 00-03 under nbval. CI runs it after `make test`. Left out, because they test no
# torch code: the browser test (JupyterLab), test_setup/test_packaging (the Makefile and the
# packaging), test_book (HTML export); test_lesson_plan, which re-runs lesson segments of
# notebooks 00-09 (00-03 run here under nbval; 04-09 are beyond this check); and the
# teacher's tools (test_grading, test_rubrics, test_student_edition: notebooks run in
# kernels and worked solutions re-run, whose torch code the unit tests already cover). On Linux, PyPI's torch $(TORCH_OLDEST) needs its CUDA libraries
# to import at all (about 2.6 GB to download); the CPU-only index avoids them.
$(OLDEST_STAMP): $(call stale,$(OLDEST_STAMP),$(OLDEST_REQS))
	$(call ENSURE_VENV,$(OLDEST))
	$(OLDEST)/bin/python -m pip install --quiet --upgrade pip
	@args=$$($(call torch_args,$(UNAME_S),$(NVIDIA_SMI),$(OLDEST_REQ))) && \
		echo "$(OLDEST)/bin/python -m pip install --progress-bar on $$args" && \
		$(OLDEST)/bin/python -m pip install --progress-bar on $$args
	$(OLDEST)/bin/python -m pip install --progress-bar on -e ".[test]" $(OLDEST_REQ)
	echo "$(OLDEST_REQS)" > $(OLDEST_STAMP)

test-oldest: $(OLDEST_STAMP)
	$(OLDEST)/bin/python -c "import numpy, torch; print('torch', torch.__version__, 'numpy', numpy.__version__)"
	$(OLDEST)/bin/pytest -q -p no:cacheprovider $(OLDEST_SKIP:%=--ignore=tests/%) tests
	TQDM_MININTERVAL=2 $(OLDEST)/bin/pytest -q -p no:cacheprovider $(NBVAL) $(OLDEST_NOTEBOOKS)

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
	$(BIN)/python benchmarks/bench_equal_error.py

# The long run of the gradient fuzzer (tests/fuzz_gradients.py; about 20 minutes on 2
# cores): every gradient method x problem family x option, against exact answers. It writes
# its summary to tests/fuzz_latest.md; `make unit` runs a bounded version.
fuzz: install
	$(BIN)/python tests/fuzz_gradients.py --examples 5000 --summary tests/fuzz_latest.md

# The executed series as static HTML pages in _build/book/ (open _build/book/index.html).
book: $(STUDENT)
	$(BIN)/python -m neuralode_helpers.book notebooks _build/book

# The student edition in _build/student/: the notebooks (each `%load solutions/...` replaced by
# a line saying that the teacher holds the key), the package and its book, without the worked
# solutions, the teaching notes or the tests. The repository itself is the teacher's edition.
student: $(STUDENT)
	$(BIN)/python -m neuralode_helpers.edition _build/student

# Grade a folder of submitted notebooks with the exercises' checks: each runs in a fresh kernel
# (15 minutes per notebook, 5 per cell); the table and one feedback file per student go to
# GRADES (default _build/grades). `make grade SUBMISSIONS=folder`.
GRADES ?= _build/grades
grade: $(STUDENT)
	@test -n "$(SUBMISSIONS)" || { echo "make grade SUBMISSIONS=folder (of .ipynb files)" >&2; exit 2; }
	$(BIN)/python -m neuralode_helpers.grading "$(SUBMISSIONS)" --out "$(GRADES)"

clean:
	rm -rf $(VENV) $(OLDEST) .pytest_cache .ruff_cache .hypothesis
