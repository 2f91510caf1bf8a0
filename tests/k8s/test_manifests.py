"""The manifests in ``k8s/``: schemas, custom resources, and agreement with the code.

No API server: Kubernetes objects are validated against the official OpenAPI
schemas that ``kubernetes-validate`` ships (the current release and 1.29, the
first with native sidecars on by default); custom resources against
``tests/k8s/crds.py``. Names, ports and numbers that must agree across files
(and with the sidecar's and scheduler's real command lines) are checked here.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from harness_pool.cli import build_parser
from harness_pool.scheduler.config import parse_cycle
from harness_pool.sidecar.admin_service import LIVENESS_SERVICE, READINESS_SERVICES
from harness_pool.sidecar.cli import settings_from_args
from tests.k8s import crds
from tests.k8s.manifests import (
    FIXED_TEMPLATE,
    FLINK_MAIN,
    K8S,
    NATIVE_CONFIG,
    NATIVE_TEMPLATE,
    NOT_OBJECTS,
    ROOT,
    SIDECAR,
    container,
    env_of,
    find,
    image_tags,
    kustomize_build,
    load_all,
    pod_specs,
    port_named,
    referenced_files,
)

VERSIONS = (kubernetes_validate.latest_version(), "1.29.0")
OBJECTS = kustomize_build()
NATIVE_SLOTS = int(yaml.safe_load(NATIVE_CONFIG.read_text())["taskmanager.numberOfTaskSlots"])
# What a TaskManager needs for its own shutdown before the sidecar is stopped
# (native sidecars stop after the main container), plus the gRPC server's 1 s grace.
TASKMANAGER_SHUTDOWN_BUDGET = 30
SERVER_STOP_GRACE = 1


def _id(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def _schema_objects() -> list[tuple[str, dict[str, Any]]]:
    out = [(_id(o), o) for o in OBJECTS if o["kind"] not in crds.CHECKERS]
    for path in (NATIVE_TEMPLATE, FIXED_TEMPLATE):
        out += [(path.relative_to(ROOT).as_posix(), d) for d in load_all(path)]
    for o in OBJECTS:  # the operator's podTemplate is a Pod: validate it as one
        if o["kind"] == "FlinkDeployment":
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "tm"},
                   **o["spec"]["taskManager"]["podTemplate"]}
            out.append((f"{_id(o)}.spec.taskManager.podTemplate", pod))
    return out


SCHEMA_OBJECTS = _schema_objects()


# -- (a) schemas and custom resources ------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("obj", [o for _, o in SCHEMA_OBJECTS],
                         ids=[i for i, _ in SCHEMA_OBJECTS])
def test_object_validates_against_kubernetes_schema(obj: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


def test_schema_validation_rejects_a_misspelt_field() -> None:
    (pod,) = load_all(NATIVE_TEMPLATE)
    pod["spec"]["initContainers"][0]["restartPolicey"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, VERSIONS[0], strict=True)


def test_every_kind_is_checked() -> None:
    kinds = {o["kind"] for o in OBJECTS}
    assert {"FlinkDeployment", "PodMonitor", "ServiceMonitor", "HorizontalPodAutoscaler",
            "Deployment", "Role", "RoleBinding", "ServiceAccount", "ConfigMap",
            "Lease", "Service"} <= kinds
    custom = {o["kind"] for o in OBJECTS if "." in o["apiVersion"].split("/")[0]
              and not o["apiVersion"].endswith(".k8s.io/v1")
              and not o["apiVersion"].startswith(("apps/", "autoscaling/"))}
    assert custom <= set(crds.CHECKERS), f"custom resources without a checker: {custom}"


CUSTOM = [o for o in OBJECTS if o["kind"] in crds.CHECKERS]


@pytest.mark.parametrize("obj", CUSTOM, ids=[_id(o) for o in CUSTOM])
def test_custom_resource_has_the_fields_its_operator_requires(obj: dict[str, Any]) -> None:
    assert crds.CHECKERS[obj["kind"]](obj) == []


@pytest.mark.parametrize(("kind", "path", "expected"), [
    ("FlinkDeployment", "spec.flinkVersion", "spec.flinkVersion"),
    ("FlinkDeployment", "spec.serviceAccount", "spec.serviceAccount: missing"),
    ("FlinkDeployment", "spec.taskManager.resource.memory", "taskManager.resource.memory"),
    ("FlinkDeployment", "spec.flinkConfiguration.state.savepoints.dir", "state.savepoints.dir"),
    ("PodMonitor", "spec.selector", "spec.selector"),
    ("ServiceMonitor", "spec.endpoints", "spec.endpoints"),
], ids=lambda v: str(v))
def test_custom_resource_checks_catch_a_missing_field(kind: str, path: str,
                                                      expected: str) -> None:
    obj = copy.deepcopy(next(o for o in CUSTOM if o["kind"] == kind
                             and o.get("spec", {}).get("job", {}).get("state") != "suspended"))
    parent: Any = obj
    keys = path.split(".")
    if keys[-2:] == ["savepoints", "dir"]:  # a flat Flink key with dots in it
        keys = [*keys[:-3], "state.savepoints.dir"]
    for key in keys[:-1]:
        parent = parent[key]
    del parent[keys[-1]]
    problems = crds.CHECKERS[kind](obj)
    assert any(expected in p for p in problems), problems


# -- the layout: one entry, nothing orphaned -------------------------------------------


def test_every_yaml_file_is_applied_or_read_by_flink() -> None:
    used = referenced_files() | {p.resolve() for p in NOT_OBJECTS}
    orphans = [p.relative_to(ROOT).as_posix() for p in K8S.rglob("*.yaml")
               if p.resolve() not in used]
    assert not orphans, f"manifests nobody applies: {orphans}"


def test_names_are_unique() -> None:
    keys = [(o["kind"], o["metadata"]["name"]) for o in OBJECTS]
    assert len(keys) == len(set(keys))


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kubectl_kustomize_builds_the_same_objects() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], check=True, capture_output=True,
                         text=True, timeout=60).stdout
    theirs = sorted((o["kind"], o["metadata"]["name"], o["metadata"].get("namespace"))
                    for o in yaml.safe_load_all(out) if o)
    ours = sorted((o["kind"], o["metadata"]["name"], o["metadata"].get("namespace"))
                  for o in OBJECTS)
    assert theirs == ours


# -- TaskManager pod templates against the sidecar's real flags --------------------------

PODS = list(pod_specs())


def sidecar_settings(args: list[str]) -> Any:
    ns = build_parser().parse_args(args)
    assert ns.command == "serve", args
    return settings_from_args(ns).validate()


@pytest.mark.parametrize(("where", "spec"), PODS, ids=[w for w, _ in PODS])
def test_sidecar_flags_ports_probes_agree(where: str, spec: dict[str, Any]) -> None:
    side = container(spec, SIDECAR)
    assert side in spec["initContainers"] and side["restartPolicy"] == "Always", \
        "the sidecar is a native sidecar (Flink's TaskManager pods restart nothing)"
    s = sidecar_settings(side["args"])
    assert s.host == "127.0.0.1", "the pool's port stays on loopback (the runner is in the pod)"
    assert s.health_port and s.health_host == "0.0.0.0", \
        "the kubelet's grpc probes dial the pod IP: a health-only port listens there"
    assert port_named(side, "pool-health") == s.health_port
    assert port_named(side, "pool-metrics") == s.metrics_port != 0
    assert s.metrics_host == "0.0.0.0", "Prometheus scrapes the pod IP"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert side[probe]["grpc"]["port"] == s.health_port, probe
    assert side["readinessProbe"]["grpc"]["service"] in READINESS_SERVICES
    assert side["livenessProbe"]["grpc"]["service"] == LIVENESS_SERVICE
    grace = spec["terminationGracePeriodSeconds"]
    need = TASKMANAGER_SHUTDOWN_BUDGET + s.drain_timeout + s.stop_grace + SERVER_STOP_GRACE
    assert grace >= need, f"terminationGracePeriodSeconds {grace} < {need}"
    assert FLINK_MAIN in [c["name"] for c in spec["containers"]]


POOLED = [(w, s) for w, s in PODS if sidecar_settings(container(s, SIDECAR)["args"]).workers]


@pytest.mark.parametrize(("where", "spec"), POOLED, ids=[w for w, _ in POOLED])
def test_pooled_template_points_the_taskmanager_at_the_sidecar(where: str,
                                                               spec: dict[str, Any]) -> None:
    side = container(spec, SIDECAR)
    s = sidecar_settings(side["args"])
    main = container(spec, FLINK_MAIN)
    assert env_of(main)["PYTHON_LOOPBACK_SERVER_ADDRESS"] == f"127.0.0.1:{s.port}"
    assert s.flavor == "pyflink" and side["image"] == image_tags()["pyflink"]
    # readiness gates the TaskManager's start: one warm worker first
    assert side["startupProbe"]["grpc"]["service"] in READINESS_SERVICES
    # the runner's Python files (io.tmp.dirs) are visible to the workers at the same path
    shared = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
    mine = {m["name"]: m["mountPath"] for m in side["volumeMounts"]}
    common = {n: p for n, p in shared.items() if mine.get(n) == p}
    assert common, "no volume shared by the TaskManager and the sidecar"


def test_pool_is_sized_from_the_slot_count() -> None:
    (pod,) = load_all(NATIVE_TEMPLATE)
    assert sidecar_settings(container(pod["spec"], SIDECAR)["args"]).workers == NATIVE_SLOTS
    conf = yaml.safe_load(NATIVE_CONFIG.read_text())
    assert conf["io.tmp.dirs"] in [m["mountPath"] for m in
                                   container(pod["spec"], FLINK_MAIN)["volumeMounts"]]
    assert Path(conf["kubernetes.pod-template-file.taskmanager"]) == \
        NATIVE_TEMPLATE.relative_to(ROOT)
    for obj in OBJECTS:
        if obj["kind"] == "FlinkDeployment":
            spec = obj["spec"]
            slots = int(spec["flinkConfiguration"]["taskmanager.numberOfTaskSlots"])
            side = container(spec["taskManager"]["podTemplate"]["spec"], SIDECAR)
            assert sidecar_settings(side["args"]).workers == slots, _id(obj)
            assert spec["flinkConfiguration"]["io.tmp.dirs"] == conf["io.tmp.dirs"]


def test_operator_sidecars_equal_the_native_one() -> None:
    (pod,) = load_all(NATIVE_TEMPLATE)
    native = container(pod["spec"], SIDECAR)
    for obj in OBJECTS:
        if obj["kind"] == "FlinkDeployment":
            tpl = obj["spec"]["taskManager"]["podTemplate"]
            assert container(tpl["spec"], SIDECAR) == native, _id(obj)
            assert tpl["metadata"]["labels"]["harness-pool/sidecar"] == \
                pod["metadata"]["labels"]["harness-pool/sidecar"]


def test_fixed_endpoint_sdk_containers_match_the_external_ids() -> None:
    (pod,) = load_all(FIXED_TEMPLATE)
    spec = pod["spec"]
    s = sidecar_settings(container(spec, SIDECAR)["args"])
    assert s.workers == 0 and len(s.external_worker_ids) == NATIVE_SLOTS
    sdks = [c for c in spec["initContainers"] if c["name"] != SIDECAR]
    assert spec["initContainers"][0]["name"] == SIDECAR, "sidecar starts first"
    assert spec["initContainers"][0]["startupProbe"]["grpc"]["service"] == LIVENESS_SERVICE, \
        "readiness needs an SDK container, which starts after the sidecar's startup probe"
    ids = []
    for c in sdks:
        assert c["restartPolicy"] == "Always", c["name"]
        flags = dict(a.lstrip("-").split("=", 1) for a in c["args"])
        ids.append(flags.pop("id"))
        assert flags == {f"{e}_endpoint": f"127.0.0.1:{s.port}"
                         for e in ("provision", "logging", "artifact", "control")}, c["name"]
    assert tuple(ids) == s.external_worker_ids


# -- hardening (issue 10): seccomp, non-root read-only containers, bounded emptyDirs ----

HARDENED = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}}


@pytest.mark.parametrize(("where", "spec"), PODS, ids=[w for w, _ in PODS])
def test_pod_templates_are_hardened(where: str, spec: dict[str, Any]) -> None:
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, \
        "pod-level seccomp: every container, the TaskManager's too"
    side = container(spec, SIDECAR)
    assert side["securityContext"] == HARDENED
    # every container we add (the SDK containers of fixed-endpoint mode) is as hardened
    for c in spec.get("initContainers", []):
        assert c.get("securityContext") == side["securityContext"], c["name"]
        mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
        assert "/tmp" in mounts, f"{c['name']}: read-only root needs a writable /tmp"
    for volume in spec["volumes"]:
        if "emptyDir" in volume:
            assert volume["emptyDir"].get("sizeLimit"), f"{where}: {volume['name']} unbounded"


def test_hardened_user_is_the_images_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"USER {HARDENED['runAsUser']}:{HARDENED['runAsGroup']}" in dockerfile


def test_hardening_check_catches_an_unbounded_emptydir() -> None:
    (pod,) = load_all(FIXED_TEMPLATE)
    pod["spec"]["volumes"][0]["emptyDir"] = {}
    with pytest.raises(AssertionError, match="unbounded"):
        test_pod_templates_are_hardened("fixed", pod["spec"])


# -- scheduler ---------------------------------------------------------------------------


def _cycle() -> Any:
    cm = find(OBJECTS, "ConfigMap", "harness-pool-scheduler-cycle")
    return parse_cycle(yaml.safe_load(cm["data"]["cycle.yaml"]), "cycle-configmap.yaml")


def test_example_cycle_loads() -> None:
    cfg = _cycle()
    assert cfg.backend.type == "flink-operator" and cfg.state.type == "configmap"
    assert cfg.backend.namespace == yaml.safe_load(
        (K8S / "kustomization.yaml").read_text())["namespace"]


def test_role_grants_exactly_what_the_cycle_names() -> None:
    cfg = _cycle()
    role = find(OBJECTS, "Role", "harness-pool-scheduler")
    named = {(g, r): rule for rule in role["rules"] if rule.get("resourceNames")
             for g in rule["apiGroups"] for r in rule["resources"]}
    assert set(named) == {("", "configmaps"), ("coordination.k8s.io", "leases"),
                          ("flink.apache.org", "flinkdeployments")}
    assert named[("", "configmaps")]["resourceNames"] == [cfg.state.configmap]
    assert named[("coordination.k8s.io", "leases")]["resourceNames"] == [cfg.state.lease]
    assert set(named[("flink.apache.org", "flinkdeployments")]["resourceNames"]) == \
        {j.resource for j in cfg.jobs.values()}
    # Rules without names only where RBAC cannot name the object (scheduler issue 11):
    # `create` of the Lease (recreated if deleted), and FlinkStateSnapshots, whose names
    # are derived at run time. tests/scheduler/test_rbac.py matches every rule to a call.
    unnamed = {(g, r): set(rule["verbs"]) for rule in role["rules"]
               if not rule.get("resourceNames") for g in rule["apiGroups"]
               for r in rule["resources"]}
    assert unnamed == {("coordination.k8s.io", "leases"): {"create"},
                       ("flink.apache.org", "flinkstatesnapshots"):
                       {"create", "get", "list", "delete"}}
    for rule in role["rules"]:
        assert set(rule["verbs"]) <= {"get", "update", "patch", "create", "list", "delete"}
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"]
    # the objects the scheduler writes exist before it starts
    find(OBJECTS, "ConfigMap", cfg.state.configmap)
    find(OBJECTS, "Lease", cfg.state.lease)
    for job in cfg.jobs.values():
        find(OBJECTS, job.kind, job.resource)


def test_scheduler_deployment_runs_the_cycle_with_its_identity() -> None:
    dep = find(OBJECTS, "Deployment", "harness-pool-scheduler")
    pod = dep["spec"]["template"]["spec"]
    binding = find(OBJECTS, "RoleBinding", "harness-pool-scheduler")
    assert binding["roleRef"]["name"] == "harness-pool-scheduler"
    assert {"kind": "ServiceAccount", "name": pod["serviceAccountName"],
            "namespace": dep["metadata"]["namespace"]} in binding["subjects"]
    find(OBJECTS, "ServiceAccount", pod["serviceAccountName"])
    (c,) = pod["containers"]
    args = build_parser().parse_args(c["args"])
    assert (args.command, args.scheduler_command) == ("scheduler", "run")
    assert args.metrics_port == port_named(c, "metrics")
    # liveness is the loop's heartbeat (/healthz 503 when stuck), on the metrics port
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    mount = next(m for m in c["volumeMounts"] if args.config.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    cm = find(OBJECTS, "ConfigMap", volume["configMap"]["name"])
    assert Path(args.config).name in cm["data"]


# -- monitoring and autoscaling ----------------------------------------------------------


def test_monitors_select_what_exposes_metrics() -> None:
    pm = find(OBJECTS, "PodMonitor", "harness-pool-sidecar")
    for _where, spec in PODS:
        side = container(spec, SIDECAR)
        for ep in pm["spec"]["podMetricsEndpoints"]:
            port_named(side, ep["port"])
    labels = [yaml.safe_load(NATIVE_TEMPLATE.read_text())["metadata"]["labels"]]
    labels += [o["spec"]["taskManager"]["podTemplate"]["metadata"]["labels"]
               for o in OBJECTS if o["kind"] == "FlinkDeployment"]
    for lab in labels:
        assert pm["spec"]["selector"]["matchLabels"].items() <= lab.items()
    sm = find(OBJECTS, "ServiceMonitor", "harness-pool-scheduler")
    svc = find(OBJECTS, "Service", "harness-pool-scheduler")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert {ep["port"] for ep in sm["spec"]["endpoints"]} <= {p["name"] for p in
                                                              svc["spec"]["ports"]}
    dep = find(OBJECTS, "Deployment", "harness-pool-scheduler")
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()


# The HPA and its adapter rules (reactive mode): tests/k8s/test_reactive_manifests.py.


def test_example_cycle_backend_exists() -> None:
    from harness_pool.scheduler.backends import operator

    assert hasattr(operator, "OperatorBackend")
