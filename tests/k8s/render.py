"""A TaskManager pod template rendered for ``podman kube play`` (podman 4.3, Debian 12).

What podman cannot take from the template as it is, and what this changes:

- Native sidecars (``initContainers`` with ``restartPolicy: Always``, Kubernetes
  1.29): podman runs init containers to completion before the others, so the
  sidecar would block the pod forever. They become regular ``containers``, first.
  Start and stop order is therefore not the kubelet's; the tests stop the
  sidecar themselves.
- ``grpc`` probes: podman turns only exec/httpGet/tcpSocket probes into health
  checks. They are removed here and returned (``Rendered.probes``) so the test
  asks the same port and service from outside the pod, as the kubelet would.
- ``flink-main-container`` has no image or command in a template (Flink fills
  them in); the test supplies them, as Flink would.
- ``hostPort`` (on 127.0.0.1) is added to the ports the test must reach from the
  host; everything else (args, env, securityContext, volumes, emptyDir) is the
  template's own.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import yaml

from tests.k8s.helpers import free_port


@dataclasses.dataclass
class Rendered:
    pod: dict[str, Any]
    host_ports: dict[str, int]
    """Container port name (or ``"<container>:<port>"``) -> port on 127.0.0.1."""
    probes: dict[str, dict[str, dict[str, Any]]]
    """Container -> probe kind -> the template's probe (grpc ones, removed from the pod)."""

    def yaml(self) -> str:
        return yaml.safe_dump(self.pod, sort_keys=False)


def render(template: dict[str, Any], name: str, images: dict[str, str],
           main: dict[str, Any] | None = None, extra_containers: list[dict[str, Any]] = (),
           publish: dict[str, list[int | str]] | None = None,
           keep: set[str] | None = None,
           extra_volumes: list[dict[str, Any]] = ()) -> Rendered:
    """The template's Pod, playable by podman.

    ``images``: container name -> image (replaces the template's, e.g. ``localhost/...``).
    ``main``: fields for ``flink-main-container`` (image, args, env added); None drops it.
    ``publish``: container name -> port names or numbers to publish on 127.0.0.1.
    ``keep``: only these containers (default: all).
    ``extra_containers``, ``extra_volumes``: added as given (e.g. a JobManager).
    """
    pod = copy.deepcopy(template)
    pod["metadata"] = {"name": name, "labels": dict(template["metadata"].get("labels", {}))}
    spec = pod["spec"]
    probes: dict[str, dict[str, dict[str, Any]]] = {}
    sidecars = [c for c in spec.pop("initContainers", []) if c.get("restartPolicy") == "Always"]
    containers = []
    for c in [*sidecars, *spec["containers"], *extra_containers]:
        c = copy.deepcopy(c)
        c.pop("restartPolicy", None)
        if keep is not None and c["name"] not in keep:
            continue
        if c["name"] == "flink-main-container":
            if main is None:
                continue
            env = [*c.get("env", []), *main.get("env", [])]
            c.update({k: v for k, v in main.items() if k != "env"})
            c["env"] = env
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if kind in c and "grpc" in c[kind]:
                probes.setdefault(c["name"], {})[kind] = c.pop(kind)
        if c["name"] in images:
            c["image"] = images[c["name"]]
        containers.append(c)
    spec["containers"] = containers
    spec["restartPolicy"] = "Never"
    host_ports: dict[str, int] = {}
    for c in containers:
        for want in (publish or {}).get(c["name"], []):
            ports = c.setdefault("ports", [])
            hit = [p for p in ports if want in (p.get("name"), p["containerPort"])]
            if not hit:
                hit = [{"containerPort": int(want)}]
                ports.append(hit[0])
            port = hit[0]
            port["hostPort"] = free_port()
            port["hostIP"] = "127.0.0.1"
            host_ports[str(port.get("name") or f"{c['name']}:{port['containerPort']}")] = \
                port["hostPort"]
    volumes_used = {m["name"] for c in containers for m in c.get("volumeMounts", [])}
    spec["volumes"] = [v for v in spec.get("volumes", []) if v["name"] in volumes_used]
    spec["volumes"] += list(extra_volumes)
    return Rendered(pod, host_ports, probes)
