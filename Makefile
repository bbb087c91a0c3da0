# Two entry points for a fresh machine with Python >= 3.11:
#   make run   - create .venv if missing, install the tested set (constraints.txt), run the main job (config/config.yaml)
#   make test  - the same setup, then the test suite
#   make quickstart - the same setup, then two small benchmarks on one seed (about 2 minutes), and their tables
VENV ?= .venv
PYTHON ?= python3
CORES ?= 2
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test setup quickstart clean

setup: $(STAMP)

# torch is installed first and pinned, so pip never resolves a different (CUDA-sized) build for it.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)

quickstart: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/quickstart.yaml
	$(BIN)/plotlib summary results_quickstart

test: $(STAMP)
	MPLCONFIGDIR=$$(mktemp -d) XDG_CACHE_HOME=$$(mktemp -d) $(BIN)/python -m pytest -q

clean:
	rm -rf results .snakemake
