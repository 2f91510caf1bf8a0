# A Flink 2.3 image for the pod end-to-end test (tests/k8s/test_pod_e2e.py):
# the Debian/Python base the harness-pool image uses, Java 17 from Debian, and
# the Flink distribution inside the `apache-flink` wheel from PyPI (so the
# TaskManager's Python boot, pyflink-udf-runner.sh, finds the same PyFlink as
# the sidecar's workers). Built by `scripts/build-image.sh taskmanager`.
#
# `flink-entrypoint jobmanager|taskmanager` writes the configuration to a
# writable folder (base config + FLINK_PROPERTIES, one `key: value` a line, as
# the official Flink images read it) and execs the JVM in the foreground.
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/flink-venv \
 && /opt/flink-venv/bin/pip install --upgrade pip \
 && /opt/flink-venv/bin/pip install --prefer-binary apache-flink==2.3.0
ENV FLINK_HOME=/opt/flink-venv/lib/python3.11/site-packages/pyflink \
    PATH=/opt/flink-venv/bin:$PATH
# Python jobs need flink-python in lib/ (the official images copy it from opt/).
RUN cp "$FLINK_HOME"/opt/flink-python*.jar "$FLINK_HOME"/lib/
COPY flink-entrypoint.py /usr/local/bin/flink-entrypoint
ENTRYPOINT ["/opt/flink-venv/bin/python", "/usr/local/bin/flink-entrypoint"]
# Where the entrypoint writes the configuration; `podman exec ... flink run` reads it too.
ENV FLINK_CONF_DIR=/tmp/flink-conf FLINK_LOG_DIR=/tmp/flink-log
CMD ["taskmanager"]
