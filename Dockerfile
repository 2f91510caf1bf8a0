# syntax=docker/dockerfile:1
# harness-pool: one image for the sidecar (`serve`), its pooled workers, the
# scheduler (`scheduler run`) and Beam's worker-pool form (`--worker_pool`).
# Build both variants with `make image` (podman; see scripts/build-image.sh), or:
#
#   docker build -t harness-pool:0.1.0-py3.11-beam2.61 .                                        # Beam workers
#   docker build --build-arg EXTRAS=flink -t harness-pool:0.1.0-py3.11-beam2.61-pyflink2.3 .   # PyFlink workers
#
# The pyflink variant installs the `flink` extra (apache-flink) for PyFlink's
# operations in the workers (`serve --flavor pyflink`). It has no Java: the
# workers import only pyflink.fn_execution, which needs none (tests/k8s check
# that), and the Flink jars the wheel carries are removed (PRUNE_FLINK_JARS).
#
# PYTHON_IMAGE: any Debian-based image with python3.11, venv and pip. Where no
# registry can be reached, scripts/build-base.sh builds one with debootstrap.
# tests/k8s/test_dockerfile.py keeps this file in step with pyproject.toml and
# the manifests in k8s/; tests/k8s/test_image.py builds and runs it.

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

# ---- build: a virtualenv with harness-pool and its dependencies
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Build tools live in this stage only: crcmod (Beam) ships no wheel and has a C
# extension; dill and docopt are pure-Python sdists. Everything else is a wheel.
# tini (Debian's, statically linked) is copied into the runtime stage as PID 1.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev tini \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/harness-pool \
 && /opt/harness-pool/bin/pip install --upgrade pip
WORKDIR /src
# Dependencies first, from pyproject.toml alone (an empty package and README stand
# in), so a change of code or docs rebuilds only the small layer after this one.
# EXTRAS is declared here, not above: the layers before it are shared by both variants.
COPY pyproject.toml ./
ARG EXTRAS=""
RUN mkdir harness_pool && touch harness_pool/__init__.py README.md \
 && /opt/harness-pool/bin/pip install --prefer-binary ".${EXTRAS:+[$EXTRAS]}" \
 && /opt/harness-pool/bin/pip uninstall -y harness-pool \
 && rm -rf harness_pool build harness_pool.egg-info README.md
COPY README.md ./
COPY harness_pool ./harness_pool
RUN /opt/harness-pool/bin/pip install --no-deps . \
 && /opt/harness-pool/bin/harness-pool --version
ARG PRUNE_FLINK_JARS=true
RUN if [ "$PRUNE_FLINK_JARS" = "true" ] && [ -d /opt/harness-pool/lib/python3.11/site-packages/pyflink ]; then \
        cd /opt/harness-pool/lib/python3.11/site-packages/pyflink \
        && rm -rf lib opt plugins examples bin/*.jar; \
    fi
# pip stays in the virtualenv: images built FROM this one add the job's Python
# dependencies with it (see docs/kubernetes.md).

# ---- runtime: the virtualenv, tini, a non-root user, nothing else
FROM ${PYTHON_IMAGE}
ARG EXTRAS=""
LABEL org.opencontainers.image.title="harness-pool" \
      org.opencontainers.image.description="Warm, isolated Beam/PyFlink SDK workers for Flink TaskManagers, and savepoint-safe job cycles" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.harness-pool.extras="${EXTRAS}"
RUN groupadd --system --gid 10001 harness \
 && useradd --system --uid 10001 --gid harness --home-dir /home/harness --create-home \
        --shell /usr/sbin/nologin harness
COPY --from=build /usr/bin/tini-static /usr/bin/tini
COPY --from=build /opt/harness-pool /opt/harness-pool
ENV PATH=/opt/harness-pool/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /home/harness
# 50000: the sidecar (StartWorker, Fn API in fixed-endpoint mode), loopback by default.
# 50001: the sidecar's gRPC health only, for Kubernetes probes (serve --health-port 50001).
# 9464: the sidecar's /metrics (serve --metrics-port 9464).
# 9465: the scheduler's /metrics and /healthz (scheduler run --metrics-port 9465).
EXPOSE 50000 50001 9464 9465
# tini is PID 1: it reaps orphans of user code (a DoFn's subprocess nobody waits
# for) and passes SIGTERM to harness-pool alone (no -g), which then drains and
# stops its workers in order. `--worker_pool` as the only argument (Beam's SDK
# container form) runs `serve` with a warm pool on 50000 (harness_pool/compat.py).
ENTRYPOINT ["/usr/bin/tini", "--", "harness-pool"]
CMD ["serve", "--health-port", "50001", "--metrics-port", "9464", "--metrics-host", "0.0.0.0"]
