"""Reading the manifests in ``k8s/`` the way kustomize and Flink would, without either.

``kustomize_build(folder)`` follows ``resources:`` of each ``kustomization.yaml``
(the kustomize features ``k8s/`` uses: those, ``namespace:`` and a
``configMapGenerator`` with ``files`` and per-generator ``options``) and returns
the objects ``kubectl apply -k`` would send. ``FLINK_FILES`` are the files Flink
reads itself (pod templates, configuration); they are not applied.
``pod_specs()`` yields every pod spec in either, with where it came from, so
tests can check each sidecar against the sidecar's real command line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
SIDECAR = "harness-pool"
FLINK_MAIN = "flink-main-container"

# Files for Flink (not kubectl): TaskManager pod templates and Flink config.
NATIVE_TEMPLATE = K8S / "flink-native" / "taskmanager-pod-template.yaml"
NATIVE_CONFIG = K8S / "flink-native" / "flink-config.yaml"
FIXED_TEMPLATE = K8S / "fixed-endpoint" / "taskmanager-pod-template.yaml"
ADAPTER_VALUES = K8S / "autoscaling" / "prometheus-adapter-values.yaml"
FLINK_FILES = (NATIVE_TEMPLATE, NATIVE_CONFIG, FIXED_TEMPLATE)
NOT_OBJECTS = (*FLINK_FILES, ADAPTER_VALUES)


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def image_tags() -> dict[str, str]:
    """Tag of each variant as ``scripts/build-image.sh`` names it (``make image``).

    ``<version>-py<X.Y>-beam<A.B>`` and ``...-pyflink<C.D>``: the Python, Beam and
    PyFlink minor versions, here those of this environment (the same pins as the
    image's; tests/k8s/test_image.py reads the built image's own). Short aliases
    ``<version>`` and ``<version>-pyflink`` point at the same images.
    """
    import importlib.metadata
    import sys

    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (flink_pin,) = [d for d in project["optional-dependencies"]["flink"]
                    if d.startswith("apache-flink==")]
    beam = f"harness-pool:{project['version']}-py{sys.version_info[0]}.{sys.version_info[1]}" \
           f"-beam{_minor(importlib.metadata.version('apache-beam'))}"
    return {"beam": beam, "pyflink": f"{beam}-pyflink{_minor(flink_pin.split('==')[1])}",
            "beam-alias": f"harness-pool:{project['version']}",
            "pyflink-alias": f"harness-pool:{project['version']}-pyflink"}


def load_all(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def kustomize_build(folder: Path = K8S, seen: set[Path] | None = None) -> list[dict[str, Any]]:
    """Objects of a kustomization: its resources, recursively, with its namespace set."""
    seen = set() if seen is None else seen
    kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert kust["kind"] == "Kustomization", folder
    unknown = set(kust) - {"apiVersion", "kind", "namespace", "resources", "configMapGenerator"}
    assert not unknown, f"{folder}/kustomization.yaml uses {unknown}; extend kustomize_build"
    objects: list[dict[str, Any]] = []
    for entry in kust.get("resources", []):
        path = (folder / entry).resolve()
        assert path.exists(), f"{folder}/kustomization.yaml: {entry} does not exist"
        seen.add(path)
        if path.is_dir():
            seen.add(path / "kustomization.yaml")
            objects.extend(kustomize_build(path, seen))
        else:
            objects.extend(load_all(path))
    for gen in kust.get("configMapGenerator", []):
        objects.append(_generated_configmap(folder, gen, seen))
    if "namespace" in kust:
        for obj in objects:
            obj.setdefault("metadata", {})["namespace"] = kust["namespace"]
            for subject in obj.get("subjects", []):
                if subject.get("kind") == "ServiceAccount":
                    subject["namespace"] = kust["namespace"]
    return objects


def _generated_configmap(folder: Path, gen: dict[str, Any], seen: set[Path]) -> dict[str, Any]:
    """A ConfigMap as kustomize generates it from ``files`` (name suffix hash disabled)."""
    unknown = set(gen) - {"name", "files", "options"}
    assert not unknown, f"{folder}: configMapGenerator uses {unknown}; extend kustomize_build"
    options = gen.get("options", {})
    assert options.get("disableNameSuffixHash") is True, \
        f"{folder}: configMapGenerator {gen['name']}: names must be stable (disableNameSuffixHash)"
    data = {}
    for entry in gen["files"]:
        path = (folder / entry).resolve()
        assert path.exists(), f"{folder}/kustomization.yaml: {entry} does not exist"
        seen.add(path)
        data[path.name] = path.read_text()
    metadata: dict[str, Any] = {"name": gen["name"]}
    if options.get("labels"):
        metadata["labels"] = dict(options["labels"])
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def referenced_files() -> set[Path]:
    seen: set[Path] = {(K8S / "kustomization.yaml").resolve()}
    kustomize_build(K8S, seen)
    return seen


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    hits = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} objects"
    return hits[0]


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) for every TaskManager pod template, applied or not."""
    for path in (NATIVE_TEMPLATE, FIXED_TEMPLATE):
        (pod,) = load_all(path)
        yield path.relative_to(ROOT).as_posix(), pod["spec"]
    for obj in kustomize_build():
        if obj["kind"] == "FlinkDeployment":
            yield (f"FlinkDeployment/{obj['metadata']['name']}",
                   obj["spec"]["taskManager"]["podTemplate"]["spec"])


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    hits = [c for c in (*spec.get("initContainers", []), *spec.get("containers", []))
            if c["name"] == name]
    assert len(hits) == 1, f"container {name}: {len(hits)} found"
    return hits[0]


def env_of(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def port_named(c: dict[str, Any], name: str) -> int:
    ports = [p["containerPort"] for p in c.get("ports", []) if p.get("name") == name]
    assert len(ports) == 1, f"{c['name']}: port {name!r} declared {len(ports)} times"
    return int(ports[0])
