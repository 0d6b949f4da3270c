# wshub: `make serve` runs a node, `make test` runs every check. Both install what they need.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-dev
HOST    ?= 127.0.0.1
PORT    ?= 8000
JS_CLIENT := tests/js/client

.PHONY: serve test check lint format typecheck pytest system-deps screenshots bench soak abuse clean

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
test: $(STAMP) system-deps $(JS_CLIENT)/node_modules/.package-lock.json
	$(VENV)/bin/ruff format --check wshub tests benchmarks examples
	$(VENV)/bin/ruff check wshub tests benchmarks examples
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

# The TypeScript program that tests the npm package wshub/static (tests/test_js_package.py).
$(JS_CLIENT)/node_modules/.package-lock.json: $(JS_CLIENT)/package.json $(JS_CLIENT)/package-lock.json
	cd $(JS_CLIENT) && npm ci --no-audit --no-fund

format: $(STAMP)
	$(VENV)/bin/ruff format wshub tests benchmarks examples
	$(VENV)/bin/ruff check --fix wshub tests benchmarks examples

# wshub side by side with its peers (several minutes): rewrites docs/performance.md and .png.
# BENCH_ARGS="--rounds 1 --only wshub,node-ws" narrows it.
NODE_WS := benchmarks/peers/node_ws
bench: $(STAMP) $(VENV)/.installed-peers $(NODE_WS)/node_modules/.package-lock.json
	$(PY) -m benchmarks.compare --make $(BENCH_ARGS)

$(VENV)/.installed-peers: pyproject.toml | $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench,peers]'
	touch $@

$(NODE_WS)/node_modules/.package-lock.json: $(NODE_WS)/package.json $(NODE_WS)/package-lock.json
	cd $(NODE_WS) && npm ci --no-audit --no-fund

# Retake docs/chat.png and docs/dashboard.png with Playwright and Chromium.
screenshots: $(STAMP) system-deps
	$(PY) scripts/screenshots.py

# 10 minutes of churn against two nodes and Redis: leaks and lost messages (docs/soak.md).
# Not part of `make test`. SOAK_ARGS="--minutes 1 --clients 300" for a quick check.
soak: $(STAMP) system-deps
	$(PY) scripts/soak.py $(SOAK_ARGS)

# Issue 11's abuse scenarios against a real node: RSS and neighbours' latency before, during
# and after each (about 3 minutes; not part of `make test`). ABUSE_ARGS="--only flood".
abuse: $(STAMP)
	$(PY) -m benchmarks.abuse $(ABUSE_ARGS)

clean:
	rm -rf $(VENV) $(NODE_WS)/node_modules $(JS_CLIENT)/node_modules $(JS_CLIENT)/out .mypy_cache .ruff_cache .pytest_cache *.egg-info
