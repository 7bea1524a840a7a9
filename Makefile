# The entry point for humans and CI alike. `make demo` and `make test` bootstrap what they need.
UV_RUN := uv run --frozen
export UV_NO_PROGRESS := 1

.PHONY: demo test test-fast lint bootstrap clean

bootstrap:
	@./scripts/bootstrap.sh

demo: bootstrap
	$(UV_RUN) backup-sidecar demo --root ./var

test:
	@./scripts/bootstrap.sh --with-prometheus
	$(UV_RUN) pytest

test-fast: bootstrap
	$(UV_RUN) pytest -m "not slow" -x -q

lint: bootstrap
	$(UV_RUN) ruff check daemon tests bench
	$(UV_RUN) ruff format --check daemon tests bench
	$(UV_RUN) mypy

clean:
	rm -rf .venv var .pytest_cache .mypy_cache .ruff_cache
