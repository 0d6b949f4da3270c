# wshub: `make serve` runs a node, `make test` runs every check. Both install what they need.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-dev
HOST    ?= 127.0.0.1
PORT    ?= 8000

.PHONY: serve test check lint format typecheck pytest system-deps screenshots soak clean

serve: $(STAMP)
	$(VENV)/bin/wshub serve --host $(HOST) --port $(PORT)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# System packages the tests use (real Redis, real Chromium, ...), installed with apt-get when missing.
system-deps:
	@scripts/system-deps.sh redis-server chromium nginx

# Everything CI runs: format, lint, types, tests.
test: $(STAMP) system-deps
	$(VENV)/bin/ruff format --check wshub tests benchmarks
	$(VENV)/bin/ruff check wshub tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

format: $(STAMP)
	$(VENV)/bin/ruff format wshub tests benchmarks
	$(VENV)/bin/ruff check --fix wshub tests benchmarks

# Retake docs/chat.png and docs/dashboard.png with Playwright and Chromium.
screenshots: $(STAMP) system-deps
	$(PY) scripts/screenshots.py

# 10 minutes of churn against two nodes and Redis: leaks and lost messages (docs/soak.md).
# Not part of `make test`. SOAK_ARGS="--minutes 1 --clients 300" for a quick check.
soak: $(STAMP) system-deps
	$(PY) scripts/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
