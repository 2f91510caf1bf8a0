# The two quick-start commands of the README: `make demo` and `make test`.
.PHONY: setup demo test test-fast bench protos lint

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/harness-pool demo

test: setup
	.venv/bin/python -m pytest tests

# Everything but the suites marked slow (real Flink clusters).
test-fast: setup
	.venv/bin/python -m pytest tests -m "not slow"

bench: setup
	.venv/bin/python -m bench.run_all

protos: setup
	.venv/bin/python -m harness_pool._protos

lint: setup
	.venv/bin/ruff check harness_pool tests bench
	.venv/bin/mypy harness_pool
