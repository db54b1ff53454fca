# Salon: `make run` starts the server, `make test` runs every check. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/default.toml

.PHONY: run test lint typecheck unit e2e web-build web-test bench-web bench-web-call vectors bench-sframe bench-call bench-chat bench-sfu bench-rekey bench-roster bench-multi bench-network bench-scale clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the project's metadata changes.
.make-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: .make-installed web-build
	$(BIN)/salon serve --config $(CONFIG)

lint: .make-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: .make-installed
	$(BIN)/mypy protocol spaces client sfu rtc

# Python tests in two parts (tests/conftest.py marks them): `unit` the pure core, in seconds;
# `e2e` everything that runs real processes or peers (server, CLI, browsers, coturn, aiortc),
# over E2E_WORKERS pytest-xdist workers (2: CI's cores; the call and browser tests wait on
# CPU-bound media, so more workers than cores make them slow, not faster), a test module per worker at a time (--dist loadfile:
# a module's server and browser stay one). Both print their slowest tests.
E2E_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q

unit: .make-installed
	$(PYTEST) -m "not e2e" --durations=10

e2e: .make-installed
	$(PYTEST) -m e2e -n $(E2E_WORKERS) --dist loadfile --durations=25

# The web client (web/): npm ci from the committed package-lock.json, tsc --strict, node --test.
web/node_modules/.installed: web/package-lock.json web/package.json
	cd web && npm ci --no-audit --no-fund
	touch $@

# The web app's bundle, reproducibly (web/scripts/build.mjs), into the Python package
# (spaces/web_dist, shipped as package data), where `salon serve` serves it from.
web-build: web/node_modules/.installed
	cd web && npm run --silent build

web-test: web/node_modules/.installed
	cd web && npm run --silent typecheck && npm test

# web-build first: the browser tests (tests/test_web*.py) build their own copy too, but a
# broken build should fail here, plainly.
test: lint typecheck web-build unit e2e web-test

# Rewrite protocol/vectors/*.json (known-answer vectors) after a deliberate format change;
# tests/test_vectors.py fails until they match the implementation again.
vectors: .make-installed
	$(BIN)/python tests/vectors_gen.py

bench-sframe: .make-installed
	$(BIN)/python bench/bench_sframe.py

# Also runs bench/bench_rekey.py (rekey after a kick, 5 real calls) for rekey_p95_ms.
bench-sfu: .make-installed
	$(BIN)/python bench/bench_sfu.py

bench-rekey: .make-installed
	$(BIN)/python bench/bench_rekey.py

bench-call: .make-installed
	$(BIN)/python bench/bench_call.py

# One participant of an SFU call on a lossy link (a network namespace, nftables drops; needs
# root): decoded-frame ratio and freezes at 0/2/5/10/20 % UDP loss, SFU retransmission on and
# off in the same run (bench/bench_network.py). Last line JSON.
bench-network: .make-installed
	$(BIN)/python bench/bench_network.py

# Two instances on one PostgreSQL: delivery latency A→B versus A→A (ratio). Last line JSON.
bench-multi: .make-installed
	$(BIN)/python bench/bench_multi.py

# SQLite vs PostgreSQL with 1 and 2 instances, one run: fan-out to 1,000 members, 50 durable
# senders (ratios to a bare asyncpg insert+commit loop and to SQLite), SIGKILL resume of chat
# followers behind a round-robin front. About 3 minutes; `--quick` for a smoke run. Last line JSON.
bench-scale: .make-installed
	$(BIN)/python bench/bench_scale.py

# The web app: invite link → space shown, `salon send` → text in the page (p50/p95, with the
# CLI's figures beside them), bundle size gzip. Last line JSON.
bench-web: .make-installed web-build
	$(BIN)/python bench/web.py

# Calls in the browser (SFU): join click → first remote frame in the page, CPU per browser
# and per CLI participant in a 4-way call, SFrame worker time per frame. Last line JSON.
bench-web-call: .make-installed
	$(BIN)/python bench/web_call.py

bench-chat: .make-installed
	$(BIN)/python bench/bench_chat.py

# A space of 100,000 records vs one of 10: salon members / salon send times and their ratio.
bench-roster: .make-installed
	$(BIN)/python bench/bench_roster.py

clean:
	rm -rf $(VENV) .make-installed .pytest_cache .mypy_cache .ruff_cache .hypothesis
