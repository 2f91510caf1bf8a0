"""Start the sidecar exactly as each TaskManager pod template would, and probe it.

The sidecar container's ``args`` go through ``harness-pool``'s real parser
and ``settings_from_args``; only the ports are swapped for free ones (every
place the manifest names them: args, the TaskManager's environment, the SDK
containers' endpoint flags). Then the checks a kubelet and a TaskManager would
make: grpc readiness (service "") and liveness ("liveness") on the probe port,
from the pod IP as well as from loopback, and readiness through the address
the TaskManager's PYTHON_LOOPBACK_SERVER_ADDRESS names.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from harness_pool.cli import build_parser
from harness_pool.sidecar.cli import settings_from_args
from harness_pool.sidecar.server import Sidecar
from tests.k8s.helpers import NOT_SERVING, SERVING, free_port, pod_ip, probe, wait_for
from tests.k8s.manifests import (
    FIXED_TEMPLATE,
    FLINK_MAIN,
    NATIVE_TEMPLATE,
    SIDECAR,
    container,
    env_of,
    load_all,
    port_named,
)
from tests.proxy.boots import FAKE_BOOT, boots  # noqa: F401 - the boots fixture
from tests.sidecar_fixtures import stop_all


def _swap_port(text: str, old: int, new: int) -> str:
    return text.replace(f":{old}", f":{new}").replace(f"={old}", f"={new}")


@pytest.fixture
def run_sidecar() -> Iterator[Any]:
    started: list[Sidecar] = []

    def start(args: list[str]) -> Sidecar:
        ns = build_parser().parse_args(args)
        sidecar = Sidecar(settings_from_args(ns))
        started.append(sidecar)
        sidecar.start()
        return sidecar

    try:
        yield start
    finally:
        stop_all(started)


class Ports(NamedTuple):
    main: int
    health: int
    metrics: int


def _template(path: Path) -> tuple[dict[str, Any], Any, Ports]:
    """The pod spec, the sidecar's settings as written, and free ports to run it on."""
    (pod,) = load_all(path)
    side = container(pod["spec"], SIDECAR)
    written = settings_from_args(build_parser().parse_args(side["args"]))
    assert port_named(side, "pool-health") == written.health_port
    return pod["spec"], written, Ports(free_port(), free_port(), free_port())


def _args(spec: dict[str, Any], written: Any, ports: Ports, volumes: Path) -> list[str]:
    """The sidecar's manifest args with its three ports swapped for free ones, and the
    folders its volumes are mounted at moved under ``volumes`` (as a pod would mount
    them: each exists and is empty)."""
    swaps = {f"--port={written.port}": f"--port={ports.main}",
             f"--health-port={written.health_port}": f"--health-port={ports.health}",
             f"--metrics-port={written.metrics_port}": f"--metrics-port={ports.metrics}"}
    side = container(spec, SIDECAR)
    args = [swaps.get(a, a) for a in side["args"]]
    assert len(set(args) - set(side["args"])) == 3, args
    for mount in side.get("volumeMounts", []):
        folder = volumes / mount["name"]
        folder.mkdir()
        args = [a.replace(mount["mountPath"], str(folder)) for a in args]
    return args


def _check_probes(sidecar: Sidecar, spec: dict[str, Any], ports: Ports, ready: bool) -> None:
    side = container(spec, SIDECAR)
    readiness = side["readinessProbe"]["grpc"]["service"]
    liveness = side["livenessProbe"]["grpc"]["service"]
    assert sidecar.address == f"127.0.0.1:{ports.main}", "the pool stays on loopback"
    want = SERVING if ready else NOT_SERVING
    health = f"127.0.0.1:{ports.health}"
    wait_for(lambda: probe(health, readiness) == want, 120,
             f"readiness {'SERVING' if ready else 'NOT_SERVING'}")
    assert probe(health, liveness) == SERVING
    assert probe(f"127.0.0.1:{ports.main}", liveness) == SERVING
    ip = pod_ip()
    if ip:  # the kubelet dials the pod IP: the health port answers there, the pool does not
        assert probe(f"{ip}:{ports.health}", liveness) == SERVING
        assert probe(f"{ip}:{ports.health}", readiness) == want
        assert probe(f"{ip}:{ports.main}", liveness) is None, "the pool answered off loopback"


def test_native_template_sidecar_serves_probes_and_the_taskmanager_address(
        run_sidecar: Any, tmp_path: Path) -> None:
    spec, written, ports = _template(NATIVE_TEMPLATE)
    sidecar = run_sidecar(_args(spec, written, ports, tmp_path))
    _check_probes(sidecar, spec, ports, ready=True)
    # The TaskManager dials what its environment says (port swapped like the args).
    env = env_of(container(spec, FLINK_MAIN))
    tm_address = _swap_port(env["PYTHON_LOOPBACK_SERVER_ADDRESS"], written.port, ports.main)
    assert tm_address == f"127.0.0.1:{ports.main}"
    assert probe(tm_address, "org.apache.beam.model.fn_execution.v1.BeamFnExternalWorkerPool") \
        == SERVING
    assert sidecar.metrics_port == ports.metrics
    assert sidecar.status().flavor == "pyflink"


def test_fixed_endpoint_sidecar_is_ready_once_an_sdk_container_waits(
        run_sidecar: Any, boots: Any, tmp_path: Path) -> None:  # noqa: F811 - pytest fixture
    spec, written, ports = _template(FIXED_TEMPLATE)
    sidecar = run_sidecar(_args(spec, written, ports, tmp_path))
    # No SDK container yet: alive, but nothing can take a stage.
    _check_probes(sidecar, spec, ports, ready=False)
    sdk = next(c for c in spec["initContainers"] if c["name"] != SIDECAR)
    flags = dict(a.lstrip("-").split("=", 1) for a in sdk["args"])
    # The Beam boot contract (tests/proxy/fake_boot.py) with this container's id and
    # provision endpoint; the other endpoints come from ProvisionInfo.
    boots([sys.executable, FAKE_BOOT, "--id", flags["id"], "--provision_endpoint",
           _swap_port(flags["provision_endpoint"], written.port, ports.main)])
    _check_probes(sidecar, spec, ports, ready=True)
