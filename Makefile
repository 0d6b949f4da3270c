# wshub: `make serve` runs a node, `make test` runs every check. Both install what they need,
# at the versions in the lock files (requirements/*.txt, `make lock`; docs/development.md).
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
HOST    ?= 127.0.0.1
PORT    ?= 8000

RUNTIME_LOCK := requirements/runtime.txt
DEV_LOCK     := requirements/dev.txt
LOWEST_LOCK  := requirements/lowest.txt
RUNTIME      := $(VENV)/.installed-runtime
STAMP        := $(VENV)/.installed-dev

# The fast path against the lowest dependencies pyproject.toml allows (uvicorn's internals
# above all, which wshub/transport/owned.py and uvicorn_http.py build on; redis-py, whose
# older pool wshub/brokers/redis/link.py works around; FastAPI, whose APIKeyHeader the API key
# dependency subclasses, and whose solve_dependencies channel checks call): a second venv from
# the `lowest` lock, running the tests of the transport, of the Redis broker, of the API key and
# of channel routes. On the same two workers as the whole suite: they wait on sockets and Redis.
LOW_VENV  := .venv-lowest
LOW_PY    := $(LOW_VENV)/bin/python
LOW_STAMP := $(LOW_VENV)/.installed
LOW_TESTS := tests/test_fast_path.py tests/test_delivery.py tests/test_ws_protocol.py \
	tests/test_http_limits.py $(wildcard tests/test_uvicorn*.py tests/test_transport*.py) \
	tests/test_owned_transport.py tests/test_proxy_headers.py \
	tests/test_redis_broker.py tests/test_redis_broker_faults.py tests/test_api_key.py \
	tests/test_channel_routes.py tests/test_channel_validation.py

# `make lock` resolves with uv from its own venv, so it works even while the locks are stale or
# in conflict after a merge. LOCK_ARGS=--upgrade moves every pin to the newest allowed release.
UV_VERSION := 0.13.9
TOOLS      := .venv-tools
UV         := $(TOOLS)/bin/uv
COMPILE     = $(UV) pip compile pyproject.toml --universal --python-version 3.11 \
	--generate-hashes --quiet $(LOCK_ARGS)

SOURCES := wshub tests benchmarks examples

# Most tests wait on real processes and sockets, so two pytest-xdist workers fill the two cores.
# A module stays on one worker (loadfile): its shared server and its timed tests stay together.
# Modules go out longest first (tests/conftest.py), not most tests first (xdist's reorder).
# PARALLEL= runs everything in one process.
PARALLEL ?= -n 2 --dist loadfile --no-loadscope-reorder
JS_CLIENT := tests/js/client
JS_RECIPES := tests/js/recipes

.PHONY: serve test test-fast test-lowest lint typecheck lock format system-deps screenshots \
	bench bench-connections soak abuse clean

serve: $(RUNTIME)
	$(VENV)/bin/wshub serve --host $(HOST) --port $(PORT)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Only what the lock names, with its hashes; then wshub itself, which brings nothing more.
# `pip check` fails when pyproject.toml asks for something the lock lacks (run `make lock`).
$(RUNTIME): $(RUNTIME_LOCK) pyproject.toml | $(PY)
	$(PIP) install --quiet --require-hashes -r $(RUNTIME_LOCK)
	$(PIP) install --quiet --no-deps -e .
	$(PIP) check
	touch $@

$(STAMP): $(DEV_LOCK) pyproject.toml | $(PY)
	$(PIP) install --quiet --require-hashes -r $(DEV_LOCK)
	$(PIP) install --quiet --no-deps -e .
	$(PIP) check
	touch $@

$(LOW_STAMP): $(LOWEST_LOCK) pyproject.toml
	test -x $(LOW_PY) || $(PYTHON) -m venv $(LOW_VENV)
	$(LOW_PY) -m pip install --quiet --upgrade pip
	$(LOW_PY) -m pip install --quiet --require-hashes -r $(LOWEST_LOCK)
	$(LOW_PY) -m pip install --quiet --no-deps -e .
	$(LOW_PY) -m pip check
	touch $@

lock: $(UV)
	$(COMPILE) --extra dev -o $(DEV_LOCK)
	$(COMPILE) -c $(DEV_LOCK) -o $(RUNTIME_LOCK)
	$(COMPILE) --extra dev --resolution lowest-direct -o $(LOWEST_LOCK)

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

# System packages the tests use (real Redis, real Chromium, ...), installed with apt-get when missing.
system-deps:
	@scripts/system-deps.sh redis-server chromium nginx

lint: $(STAMP)
	$(VENV)/bin/ruff format --check $(SOURCES)
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# Everything CI runs: format, lint, types, the whole suite with branch coverage (per module,
# subprocess servers included), then the transport and Redis broker tests on the lowest dependencies.
test: lint typecheck system-deps $(JS_CLIENT)/node_modules/.package-lock.json \
	$(JS_RECIPES)/node_modules/.package-lock.json
	rm -f .coverage .coverage.*
	$(PY) -m pytest -q $(PARALLEL) --cov --cov-report=term
	$(MAKE) --no-print-directory test-lowest

# For iterating: the same checks without coverage and without the tests marked slow.
test-fast: lint typecheck system-deps $(JS_CLIENT)/node_modules/.package-lock.json \
	$(JS_RECIPES)/node_modules/.package-lock.json
	$(PY) -m pytest -q $(PARALLEL) -m "not slow"

test-lowest: $(LOW_STAMP) system-deps
	@# Else `wshub serve` would refuse to start on the lowest uvicorn pyproject.toml allows.
	$(LOW_PY) -c 'import uvicorn, websockets; from wshub.transport.uvicorn_internals import missing_internals as m; \
		print("lowest: uvicorn", uvicorn.__version__, "websockets", websockets.__version__); \
		assert not m(), f"wshub serve would not start: missing {m()}"'
	$(LOW_PY) -m pytest -q -p no:cacheprovider $(PARALLEL) $(LOW_TESTS)

# The TypeScript program that tests the npm package wshub/static (tests/test_js_package.py).
$(JS_CLIENT)/node_modules/.package-lock.json: $(JS_CLIENT)/package.json $(JS_CLIENT)/package-lock.json
	cd $(JS_CLIENT) && npm ci --no-audit --no-fund

# jsonwebtoken, for docs/security.md's Node recipe (tests/test_docs_recipes.py).
$(JS_RECIPES)/node_modules/.package-lock.json: $(JS_RECIPES)/package.json $(JS_RECIPES)/package-lock.json
	cd $(JS_RECIPES) && npm ci --no-audit --no-fund

format: $(STAMP)
	$(VENV)/bin/ruff format $(SOURCES)
	$(VENV)/bin/ruff check --fix $(SOURCES)

# wshub side by side with its peers (several minutes): rewrites docs/performance.md and .png.
# BENCH_ARGS="--rounds 1 --only wshub,node-ws" narrows it.
NODE_WS := benchmarks/peers/node_ws
bench: $(STAMP) $(VENV)/.installed-peers $(NODE_WS)/node_modules/.package-lock.json
	$(PY) -m benchmarks.compare --make $(BENCH_ARGS)

$(VENV)/.installed-peers: pyproject.toml | $(STAMP)
	$(PIP) install --quiet -e '.[dev,bench,peers]'
	touch $@

$(NODE_WS)/node_modules/.package-lock.json: $(NODE_WS)/package.json $(NODE_WS)/package-lock.json
	cd $(NODE_WS) && npm ci --no-audit --no-fund

# 19,000 connections on one process, then 100,000 across --workers 6 on a redis-server it
# starts: RSS per connection, connect rate, rounds of one publication per channel of 100
# (docs/performance.md). Each prints what it needs of the host first and refuses a run that
# cannot fit. A few minutes each and a few GB of RAM, on a quiet machine; not part of `make test`.
bench-connections: $(STAMP) system-deps
	$(PY) -m benchmarks.connections --connections 19000 --workers 1
	$(PY) -m benchmarks.connections --connections 100000 --workers 6

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
	rm -rf $(VENV) $(LOW_VENV) $(TOOLS) $(NODE_WS)/node_modules $(JS_CLIENT)/node_modules \
		$(JS_RECIPES)/node_modules $(JS_CLIENT)/out .mypy_cache .ruff_cache \
		.pytest_cache *.egg-info .coverage .coverage.*
