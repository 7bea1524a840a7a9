# The entry point for humans and CI alike. `make demo` and `make test` bootstrap what they need.
UV_RUN := uv run --frozen
export UV_NO_PROGRESS := 1
# ruff and the format check over the package, tests and benchmarks; mypy --strict (pyproject says over what).
LINT = $(UV_RUN) ruff check daemon tests bench && $(UV_RUN) ruff format --check daemon tests bench && $(UV_RUN) mypy

.PHONY: demo test test-fast test-reliability lint bootstrap clean bench bench-quick bench-offsite bench-offsite-e2e

bootstrap:
	@./scripts/bootstrap.sh

demo: bootstrap
	$(UV_RUN) backup-sidecar demo --root ./var

# Lint is part of the test command, so CI (which runs `make test` alone) runs it too.
test:
	@./scripts/bootstrap.sh --with-prometheus
	$(LINT)
	$(UV_RUN) pytest --durations=40

# The fault-injection suite alone (make test runs it too).
test-reliability:
	@./scripts/bootstrap.sh --with-prometheus
	$(UV_RUN) pytest tests/reliability

test-fast: bootstrap
	$(UV_RUN) pytest -m "not slow" -x -q

lint: bootstrap
	$(LINT)

# Benchmarks (not tests): 1 GiB takes about half an hour; results go to bench/RESULTS.md.
bench:
	@./bench/bootstrap.sh
	$(UV_RUN) python -m bench.run

bench-quick:
	@./bench/bootstrap.sh
	$(UV_RUN) python -m bench.run --quick --out bench/RESULTS-quick.md

bench-offsite:
	$(UV_RUN) python -m bench.offsite

bench-offsite-e2e:
	$(UV_RUN) python -m bench.offsite_e2e

clean:
	rm -rf .venv var .pytest_cache .mypy_cache .ruff_cache
