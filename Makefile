# Two commands a new user needs:  `make demo`  and  `make test`.
# Each creates or updates .venv/ from requirements-dev.lock by itself.
# requirements.lock holds the runtime pins only: the container image installs it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9

.PHONY: demo test lint lock bench bench-web bench-batch bench-stream bench-soak bench-log clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(BIN)/uv: | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Re-installs whenever the lock file or the project metadata changes.
$(VENV)/.installed: requirements-dev.lock pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements-dev.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

demo: $(VENV)/.installed
	$(BIN)/ridecast demo

test: $(VENV)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench
	$(BIN)/mypy

# Re-resolve the pins after editing pyproject.toml: the dev lock first, then the runtime lock
# constrained by it, so a package both hold has the same pin in each.
lock: | $(BIN)/uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 -o requirements-dev.lock -q
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 -c requirements-dev.lock -o requirements.lock -q

bench: bench-web bench-batch bench-stream

bench-web: $(VENV)/.installed
	$(BIN)/python bench/web.py

bench-batch: $(VENV)/.installed
	$(BIN)/python bench/batch.py

bench-stream: $(VENV)/.installed
	$(BIN)/python bench/stream.py

# Not part of `make bench`: ten minutes of steady load (bench/soak.py --help).
bench-soak: $(VENV)/.installed
	$(BIN)/python bench/soak.py

# Not part of `make bench`, as it needs PostgreSQL: the prediction log's writer on SQLite and
# PostgreSQL, and the per-version error query over 1M predictions (bench/prediction_log.py --help).
BENCH_POSTGRES ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
bench-log: $(VENV)/.installed
	$(BIN)/python bench/prediction_log.py --query-rows 1000000 --postgres $(BENCH_POSTGRES)

clean:
	rm -rf .ridecast .pytest_cache .mypy_cache .ruff_cache
