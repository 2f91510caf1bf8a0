"""A TaskManager pod end to end in containers: the native template, played by podman.

One podman pod (one network namespace, as a Kubernetes pod) from
``k8s/flink-native/taskmanager-pod-template.yaml`` (rendered as tests/k8s/render.py
says: the native sidecar becomes a regular container, grpc probes are asked from
the host instead):

- ``harness-pool``: the pyflink image with the template's args, securityContext and
  volumes;
- ``flink-main-container``: a Flink 2.3 TaskManager (tests/k8s/images, Java 17 +
  apache-flink from PyPI) with the template's ``PYTHON_LOOPBACK_SERVER_ADDRESS`` and
  ``/flink-tmp`` volume, configured with ``k8s/flink-native/flink-config.yaml``;
- a JobManager from the same image (in Kubernetes it is a pod of its own).

A PyFlink job submitted in the JobManager runs its Python stages in the sidecar's
workers (its map function sees the sidecar's filesystem; ``harness-pool status
--json`` inside the sidecar lists the stages). While a second job's stages run,
``podman stop`` of the sidecar drains in order: readiness goes NOT_SERVING at
once, the running stages finish (the job succeeds), then the workers stop and
the sidecar exits 0.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import yaml

from tests.k8s.helpers import NOT_SERVING, SERVING, probe, scrape, value, wait_for
from tests.k8s.manifests import NATIVE_CONFIG, NATIVE_TEMPLATE, SIDECAR, load_all
from tests.k8s.podman import (
    BUILD_TIMEOUT,
    Containers,
    built_image,
    exec_in,
    logs,
    podman,
)
from tests.k8s.render import render

pytestmark = [pytest.mark.slow, pytest.mark.image, pytest.mark.flink,
              pytest.mark.timeout(BUILD_TIMEOUT + 900)]

JOBS = NATIVE_TEMPLATE.parents[2] / "tests" / "k8s" / "jobs"
RECORDS = 400


def _flink_properties(conf: dict[str, Any]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in conf.items())


@pytest.fixture(scope="module")
def taskmanager_pod() -> Iterator[dict[str, Any]]:
    (template,) = load_all(NATIVE_TEMPLATE)
    native = yaml.safe_load(NATIVE_CONFIG.read_text())
    slots = native["taskmanager.numberOfTaskSlots"]
    names = Containers("tmpod")
    pod_name = names.pod()
    tm_image = built_image("taskmanager")
    tm_conf = {  # what Flink's native mode sets, plus the template's flink-config.yaml
        "jobmanager.rpc.address": "localhost",
        "taskmanager.numberOfTaskSlots": slots,
        "io.tmp.dirs": native["io.tmp.dirs"],
        "taskmanager.memory.process.size": "1600m",
    }
    jobmanager = {
        "name": "jobmanager", "image": tm_image, "args": ["jobmanager"],
        "env": [{"name": "FLINK_PROPERTIES", "value": _flink_properties({
            "jobmanager.memory.process.size": "1024m", "rest.bind-address": "0.0.0.0",
            "rest.port": 8081})}],
        "ports": [{"name": "rest", "containerPort": 8081}],
        "volumeMounts": [{"name": "jobs", "mountPath": "/jobs", "readOnly": True}],
    }
    rendered = render(
        template, pod_name, images={SIDECAR: built_image("pyflink")},
        main={"image": tm_image, "args": ["taskmanager"],
              "env": [{"name": "FLINK_PROPERTIES", "value": _flink_properties(tm_conf)}]},
        extra_containers=[jobmanager],
        extra_volumes=[{"name": "jobs", "hostPath": {"path": str(JOBS), "type": "Directory"}}],
        publish={SIDECAR: ["pool-health", "pool-metrics"], "jobmanager": ["rest"]},
    )
    ctr = {c["name"]: f"{pod_name}-{c['name']}" for c in rendered.pod["spec"]["containers"]}
    rest = f"http://127.0.0.1:{rendered.host_ports['rest']}"

    def diagnostics() -> str:
        return "\n".join(f"--- {n}\n{logs(c)[-2500:]}" for n, c in ctr.items())

    def slots_up() -> bool:
        try:
            return requests.get(f"{rest}/overview", timeout=2).json().get("slots-total") == slots
        except (requests.RequestException, ValueError):
            return False

    try:
        podman("kube", "play", "-", input=rendered.yaml(), timeout=300)
        health = f"127.0.0.1:{rendered.host_ports['pool-health']}"
        wait_for(lambda: probe(health, "") == SERVING, 240, "the sidecar warm", poll=0.5,
                 detail=diagnostics)
        wait_for(slots_up, 300, f"the TaskManager's {slots} slots at the JobManager", poll=0.5,
                 detail=diagnostics)
        yield {"ctr": ctr, "health": health, "rest": rest, "slots": slots,
               "metrics": rendered.host_ports["pool-metrics"], "probes": rendered.probes,
               "diagnostics": diagnostics}
    finally:
        names.cleanup()


def _run_job(pod: dict[str, Any], seconds: float) -> dict[str, list[Any]]:
    out = exec_in(pod["ctr"]["jobmanager"], "sh", "-c",
                  'exec "$FLINK_HOME/bin/flink" "$@"', "flink", "run", "-m", "localhost:8081",
                  "-py", "/jobs/pod_job.py", str(RECORDS), str(seconds), timeout=600,
                  check=False)
    match = re.search(r"^RESULT (.*)$", out.stdout, re.MULTILINE)
    assert out.returncode == 0 and match, \
        f"flink run exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}\n" \
        f"{pod['diagnostics']()}"
    return dict(json.loads(match.group(1)))


def test_pyflink_stages_are_served_by_the_sidecar(taskmanager_pod: dict[str, Any]) -> None:
    pod = taskmanager_pod
    result = _run_job(pod, seconds=0)
    slots = pod["slots"]
    assert result == {str(k): [RECORDS // slots, True] for k in range(slots)}, \
        "every record counted once, every map call ran in the sidecar's workers"
    status = json.loads(exec_in(pod["ctr"][SIDECAR], "harness-pool", "status", "--json").stdout)
    served = [a for a in status["assignments"] if a["outcome"] == "finished"]
    # one stage per slot: PyFlink runs all Python operators of a slot's tasks in one
    # environment, so each slot's boot asks once (worker ids 1-1 ... 4-1)
    assert len(served) == slots, status["assignments"]
    assert {a["runner_worker_id"] for a in served} == {f"{i}-1" for i in range(1, slots + 1)}
    samples = scrape(pod["metrics"])
    assert value(samples, "harness_pool_assignments_total", kind="pooled") == len(
        status["assignments"])


def test_template_probes_answer(taskmanager_pod: dict[str, Any]) -> None:
    pod = taskmanager_pod
    for kind, spec in pod["probes"][SIDECAR].items():
        assert probe(pod["health"], spec["grpc"].get("service", "")) == SERVING, kind


def test_podman_stop_drains_running_stages_in_order(taskmanager_pod: dict[str, Any]) -> None:
    pod = taskmanager_pod
    sidecar = pod["ctr"][SIDECAR]
    outcome: dict[str, Any] = {}

    def job() -> None:
        try:
            outcome["result"] = _run_job(pod, seconds=8)
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc

    runner = threading.Thread(target=job)
    runner.start()
    try:
        wait_for(lambda: value(scrape(pod["metrics"]), "harness_pool_workers", state="busy")
                 >= pod["slots"], 180, "the job's stages busy in the sidecar", poll=0.5,
                 detail=pod["diagnostics"])
        stopping = threading.Thread(
            target=lambda: outcome.setdefault("stop", podman("stop", "--time", "60", sidecar,
                                                             timeout=120)))
        stopping.start()
        # readiness drops at once, while the stages go on
        wait_for(lambda: probe(pod["health"], "") == NOT_SERVING, 30,
                 "readiness NOT_SERVING after SIGTERM, the health port still answering", poll=0.2)
        stopping.join(timeout=120)
    finally:
        runner.join(timeout=600)
    assert "error" not in outcome, outcome.get("error")
    slots = pod["slots"]
    assert outcome["result"] == {str(k): [RECORDS // slots, True] for k in range(slots)}, \
        "the drained stages finished their work"
    state = podman("inspect", "--format", "{{.State.ExitCode}}", sidecar).stdout.strip()
    text = logs(sidecar)
    assert state == "0", text[-3000:]
    order = ["shutting down: readiness NOT_SERVING", "sidecar stopped"]
    positions = [text.find(line) for line in order]
    assert -1 not in positions and positions == sorted(positions), text[-3000:]
    assert "stages still running after" not in text, "the stages ended within the drain"
