# The two quick-start commands of the README: `make demo` and `make test`.
.PHONY: setup system-deps images image demo test test-fast bench protos lint

setup:
	./scripts/setup.sh

# podman, debootstrap, runc and Prometheus (promtool) for the image and monitoring
# tests; installs only what is missing (root, apt-get).
system-deps:
	./scripts/system-deps.sh

# Both harness-pool images (beam, pyflink) with podman, tagged with the Python,
# Beam and PyFlink versions they carry. Cached by content: a second run takes seconds.
image: system-deps
	./scripts/build-image.sh beam
	./scripts/build-image.sh pyflink

# The images the test suite runs: both variants and the Flink TaskManager image of
# the pod test. Built before pytest so no test waits through a cold build.
images: image
	./scripts/build-image.sh taskmanager

demo: setup
	.venv/bin/harness-pool demo

test: setup images
	.venv/bin/python -m pytest tests

# Everything but the suites marked slow (real Flink clusters, images and pods).
test-fast: setup system-deps
	.venv/bin/python -m pytest tests -m "not slow"

bench: setup
	.venv/bin/python -m bench.run_all

protos: setup
	.venv/bin/python -m harness_pool._protos

lint: setup
	.venv/bin/ruff check harness_pool tests bench
	.venv/bin/mypy harness_pool
