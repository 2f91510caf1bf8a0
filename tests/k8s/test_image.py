"""The images built and run for real with podman (``make image``).

- Tags: ``scripts/build-image.sh`` reads Python, Beam and PyFlink versions from the
  built image itself; they are the tags the manifests in ``k8s/`` use. A second
  build of unchanged content builds nothing.
- The native TaskManager template's sidecar, played by ``podman kube play`` with the
  template's own args, securityContext and volumes (tests/k8s/render.py says what
  podman cannot take as it is): it runs as uid 10001 under tini with a read-only
  root filesystem, writes only the mounted volumes, answers the template's probes
  from outside the pod while its pool port stays inside, and tini reaps orphans
  of user code (a process whose parent exited) instead of leaving zombies.
- Beam's ``--worker_pool`` form: the beam image started with exactly those
  arguments serves a real Beam pipeline (PortableRunner, EXTERNAL environment)
  from the host, like ``apache/beam_python3.x_sdk --worker_pool`` would.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.k8s.helpers import SERVING, free_port, probe, scrape, value, wait_for
from tests.k8s.manifests import NATIVE_TEMPLATE, SIDECAR, image_tags, load_all
from tests.k8s.podman import (
    BUILD_TIMEOUT,
    SCRIPTS,
    Containers,
    built_image,
    exec_in,
    logs,
    podman,
    short,
)
from tests.k8s.render import render
from tests.sidecar.beam_helpers import run

pytestmark = [pytest.mark.slow, pytest.mark.image, pytest.mark.timeout(BUILD_TIMEOUT + 600)]

# Orphans: each child forks a grandchild and exits at once; the grandchild, now
# owned by PID 1, exits 0.2 s later. Without an init that reaps, each stays a zombie.
ORPHANS = """
import os, time
for _ in range(20):
    pid = os.fork()
    if pid == 0:
        if os.fork() == 0:
            time.sleep(0.2)
            os._exit(0)
        os._exit(0)
    os.waitpid(pid, 0)
"""
ZOMBIES = """
import os
n = 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        continue
    n += stat.rsplit(")", 1)[1].split()[0] == "Z"
print(n)
"""


def _word_count(p: beam.Pipeline) -> None:
    """Beam's own transforms only: the container has Beam, not this repository's tests."""
    counts = (p | beam.Create(["a b", "b c", "b"]) | beam.FlatMap(str.split)
              | beam.combiners.Count.PerElement())
    assert_that(counts, equal_to([("a", 1), ("b", 3), ("c", 1)]))


def test_tags_carry_the_versions_the_manifests_name() -> None:
    tags = image_tags()
    assert short(built_image("beam")) == tags["beam"]
    assert short(built_image("pyflink")) == tags["pyflink"]
    for variant, alias in (("beam", "beam-alias"), ("pyflink", "pyflink-alias")):
        ids = {podman("image", "inspect", "--format", "{{.Id}}", f"localhost/{t}").stdout
               for t in (tags[variant], tags[alias])}
        assert len(ids) == 1, f"{tags[alias]} is not {tags[variant]}"
    again = subprocess.run([str(SCRIPTS / "build-image.sh"), "beam"], capture_output=True,
                           text=True, timeout=600, env={**os.environ})
    assert again.returncode == 0 and again.stdout.strip() == built_image("beam")
    assert "building" not in again.stderr, f"unchanged content was rebuilt: {again.stderr}"


@pytest.fixture(scope="module")
def sidecar_pod() -> Iterator[tuple[str, dict[str, int], dict[str, dict[str, object]]]]:
    """The native template's sidecar alone, played by podman (pyflink image)."""
    (template,) = load_all(NATIVE_TEMPLATE)
    names = Containers("sidecar")
    pod_name = names.pod()
    rendered = render(template, pod_name, images={SIDECAR: built_image("pyflink")},
                      keep={SIDECAR}, publish={SIDECAR: ["pool-health", "pool-metrics", 50000]})
    container = f"{pod_name}-{SIDECAR}"
    try:
        podman("kube", "play", "-", input=rendered.yaml(), timeout=300)
        health = f"127.0.0.1:{rendered.host_ports['pool-health']}"
        wait_for(lambda: probe(health, "") == SERVING, 180, "the sidecar warm (readiness)",
                 poll=0.5, detail=lambda: logs(container)[-3000:])
        yield container, rendered.host_ports, rendered.probes[SIDECAR]
    finally:
        names.cleanup()


def test_runs_as_the_template_says_read_only_under_tini(sidecar_pod: tuple) -> None:
    container, _ports, _probes = sidecar_pod
    assert exec_in(container, "id", "-u").stdout.strip() == "10001"
    pid1 = exec_in(container, "cat", "/proc/1/cmdline").stdout.split("\0")
    assert pid1[:3] == ["/usr/bin/tini", "--", "harness-pool"], pid1
    status = exec_in(container, "cat", "/proc/1/status").stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Seccomp"].strip() == "2", "seccompProfile RuntimeDefault: a filter is on"
    assert fields["CapEff"].strip() == "0000000000000000", "capabilities: drop ALL"
    assert fields["NoNewPrivs"].strip() == "1", "allowPrivilegeEscalation: false"
    denied = exec_in(container, "touch", "/opt/harness-pool/x", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    for volume in ("/tmp", "/flink-tmp"):  # the template's emptyDirs stay writable
        exec_in(container, "touch", f"{volume}/written-by-the-test")
    out = json.loads(exec_in(container, "harness-pool", "status", "--json").stdout)
    assert out["flavor"] == "pyflink" and out["target_idle"] == 4
    # the workers forked from a read-only image really run (a stage needs nothing more)
    assert sum(w["state"] == "idle" for w in out["workers"]) == 4, out["workers"]


def test_answers_the_template_probes_from_outside_the_pod(sidecar_pod: tuple) -> None:
    _container, ports, probes = sidecar_pod
    assert set(probes) == {"startupProbe", "readinessProbe", "livenessProbe"}
    for kind, spec in probes.items():
        grpc_probe = spec["grpc"]
        assert grpc_probe["port"] == 50001
        assert probe(f"127.0.0.1:{ports['pool-health']}", grpc_probe.get("service", "")) \
            == SERVING, kind
    # the pool's own port listens on the pod's loopback only: published, it answers nothing
    assert probe(f"127.0.0.1:{ports['harness-pool:50000']}", "", timeout=2) is None
    samples = scrape(ports["pool-metrics"])
    assert value(samples, "harness_pool_pool_size") == 4
    assert value(samples, "harness_pool_workers", state="idle") == 4


def test_tini_reaps_orphans_of_user_code(sidecar_pod: tuple) -> None:
    container, _ports, _probes = sidecar_pod
    exec_in(container, "python", "-c", ORPHANS)

    def zombies() -> int:
        return int(exec_in(container, "python", "-c", ZOMBIES).stdout)

    wait_for(lambda: zombies() == 0, 30, "no zombie left", poll=0.5)


def test_beam_worker_pool_form_serves_a_real_pipeline(tmp_path: Path) -> None:
    """``podman run IMAGE --worker_pool``: the args Beam's SDK container takes.

    On the host network (the runner's Fn API servers listen on the host's loopback);
    HARNESS_POOL_SERVE_ARGS moves the port off 50000, which may be taken on a shared
    machine, and is the documented way to tune the form.
    """
    names = Containers("workerpool")
    container = names.container("pool")
    port, metrics = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    try:
        podman("run", "-d", "--name", container, "--network=host", "--read-only",
               "--tmpfs", "/tmp", "-e",
               f"HARNESS_POOL_SERVE_ARGS=--port {port} --metrics-port {metrics} --workers 2",
               built_image("beam"), "--worker_pool")
        wait_for(lambda: probe(address, "") == SERVING, 180, "the pool warm")
        run(address, _word_count, runner="portable")
        assert value(scrape(metrics), "harness_pool_assignments_total", kind="pooled") >= 1
        text = logs(container)
        assert "Beam --worker_pool form: running harness-pool serve --host 0.0.0.0 --port " \
               "50000" in text, text[-3000:]
        bad = podman("run", "--rm", built_image("beam"), "--worker_pool", "--bogus", check=False)
        assert bad.returncode == 2 and "flag provided but not defined: -bogus" in bad.stderr
    finally:
        names.cleanup()
