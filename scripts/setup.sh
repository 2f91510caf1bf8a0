#!/usr/bin/env bash
# Creates .venv and installs harness-pool with its flink and test extras.
# Idempotent: re-installs only when pyproject.toml changed since the last run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
stamp=.venv/.harness-pool-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet -e '.[flink,test]'
  touch "$stamp"
fi
if ! command -v java >/dev/null 2>&1; then
  echo "setup: java not found; the Flink tests and 'demo --flink' need Java 17 (apt-get install openjdk-17-jre-headless)" >&2
fi
