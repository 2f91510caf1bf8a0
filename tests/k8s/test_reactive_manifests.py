"""The reactive application cluster in ``k8s/reactive`` and its HPA in ``k8s/autoscaling``.

Schemas: the objects are part of ``kubectl apply -k k8s/``, so
``test_manifests.py`` validates them against the official Kubernetes schemas
and the PodMonitor against its operator's required fields. Here: the Flink
configuration (every key Flink 2.3 knows, read from the installed distribution,
reactive mode and its settings), the TaskManager pod (the sidecar's flags
through ``harness-pool``'s real parser, ports, probes, shared volumes, grace
period), the JobManager (PythonDriver, Service, HA identity), and the HPA
(scales the TaskManager Deployment on an adapter rule over the sidecars' Python
CPU per slot, never on the busy fraction).

The sidecar's ``--workers=auto`` is resolved by its real parser from the
ConfigMap's own ``config.yaml`` written to a folder (as the pod mounts it), and
must give the slot count; the HPA's series ``harness_pool_worker_cpu_seconds_total``
must be a counter labelled by ``slot`` in the sidecar's real registry.
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness_pool.cli import build_parser
from harness_pool.flink.distribution import PYTHON_DRIVER, pyflink_home
from harness_pool.sidecar.admin_service import LIVENESS_SERVICE, READINESS_SERVICES
from harness_pool.sidecar.cli import settings_from_args
from harness_pool.sidecar.metrics import SidecarMetrics
from tests.k8s import crds
from tests.k8s.manifests import (
    ADAPTER_VALUES,
    K8S,
    NATIVE_TEMPLATE,
    SIDECAR,
    container,
    env_of,
    find,
    kustomize_build,
    load_all,
    port_named,
)

OBJECTS = kustomize_build()
REACTIVE = kustomize_build(K8S / "reactive")
CONFIGMAP = find(OBJECTS, "ConfigMap", "reactive-count-flink-config")
FLINK_CONF = yaml.safe_load(CONFIGMAP["data"]["config.yaml"])
SLOTS = int(FLINK_CONF["taskmanager.numberOfTaskSlots"])
TM = find(OBJECTS, "Deployment", "reactive-count-taskmanager")
JM = find(OBJECTS, "Deployment", "reactive-count-jobmanager")
TM_POD = TM["spec"]["template"]["spec"]
JM_POD = JM["spec"]["template"]["spec"]
TM_MAIN = "taskmanager"
# What a TaskManager needs for its own shutdown before its native sidecar is
# stopped, plus the sidecar's gRPC grace (as in test_manifests.py).
TASKMANAGER_SHUTDOWN_BUDGET = 30
SERVER_STOP_GRACE = 1
# Sidecar metrics the manifests rely on: name -> (type, labels it must carry).
REQUIRED_METRICS = {"harness_pool_worker_cpu_seconds_total": ("counter", {"slot"})}


def sidecar_settings(args: list[str]) -> Any:
    """The sidecar's settings from its real parser, ``--workers=auto`` resolved from the
    ConfigMap's ``config.yaml`` in a folder given as ``$FLINK_CONF_DIR`` (the pod mounts
    it there), exactly as the sidecar resolves it at start-up."""
    ns = build_parser().parse_args(args)
    assert ns.command == "serve", args
    with tempfile.TemporaryDirectory() as conf_dir:
        (Path(conf_dir) / "config.yaml").write_text(CONFIGMAP["data"]["config.yaml"])
        old = os.environ.get("FLINK_CONF_DIR")
        os.environ["FLINK_CONF_DIR"] = conf_dir
        try:
            return settings_from_args(ns).validate()
        finally:
            if old is None:
                del os.environ["FLINK_CONF_DIR"]
            else:
                os.environ["FLINK_CONF_DIR"] = old


def mounts(c: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}


# -- the Flink configuration ------------------------------------------------------------


@cache
def flink_option_keys() -> str:
    """Text of Flink 2.3's configuration classes (where every option key is a literal)."""
    jar = next((pyflink_home() / "lib").glob("flink-dist-*.jar"))
    with zipfile.ZipFile(jar) as z:
        return "\n".join(z.read(n).decode("latin-1") for n in z.namelist()
                         if re.match(r"org/apache/flink/(configuration|streaming/api/"
                                     r"environment|runtime/.*Options)", n) and
                         n.endswith(".class"))


# Families whose options live in flink-dist; kubernetes.*, metrics.reporter.<name>.*
# and python.* come from plugins and jars the pyflink package does not carry.
CHECKED_PREFIXES = ("scheduler-mode", "jobmanager.", "taskmanager.", "execution.",
                    "restart-strategy.", "web.", "rest.", "blob.", "state.", "io.",
                    "high-availability.")


@pytest.mark.parametrize("key", sorted(k for k in FLINK_CONF if k.startswith(CHECKED_PREFIXES)))
def test_flink_knows_every_key(key: str) -> None:
    assert known(key), f"{key}: not an option of Flink 2.3 (renamed?)"


def known(key: str) -> bool:
    """The key is a whole string constant of Flink's option classes (not a prefix of one)."""
    return re.search(re.escape(key) + r"(?![a-z0-9.-])", flink_option_keys()) is not None


def test_reactive_mode_and_its_settings() -> None:
    conf = FLINK_CONF
    assert conf["scheduler-mode"] == "reactive"
    assert conf["execution.checkpointing.interval"], "rescales restore from checkpoints"
    for key in ("jobmanager.adaptive-scheduler.executing.resource-stabilization-timeout",
                "jobmanager.adaptive-scheduler.executing.cooldown-after-rescaling"):
        assert key in conf, key
    # A scale-down is a failover: a finite restart budget would end the job one day.
    assert not (conf["restart-strategy.type"] == "fixed-delay"
                and int(conf.get("restart-strategy.fixed-delay.attempts", 1)) < 2**31 - 1)
    assert conf["kubernetes.namespace"] == yaml.safe_load(
        (K8S / "kustomization.yaml").read_text())["namespace"]
    assert conf["jobmanager.rpc.address"] == find(OBJECTS, "Service",
                                                  "reactive-count-jobmanager")["metadata"]["name"]
    assert "log4j-console.properties" in CONFIGMAP["data"]


@pytest.mark.parametrize("key", [
    "jobmanager.adaptive-scheduler.executing.resource-stabilization-timeout",
    "jobmanager.adaptive-scheduler.executing.cooldown-after-rescaling",
])
def test_the_key_checker_knows_flink_2_keys(key: str) -> None:
    assert known(key)


@pytest.mark.parametrize("key", [
    "jobmanager.adaptive-scheduler.cooldown-after-rescaling",  # never a key: a wrong guess
    "web.refresh",  # a prefix of web.refresh-interval is not a key
    "scheduler-mod",
])
def test_the_key_checker_catches_wrong_keys(key: str) -> None:
    assert not known(key)


# -- the TaskManager pod and its sidecar ----------------------------------------------------


def test_taskmanager_sidecar_flags_ports_probes_agree() -> None:
    side = container(TM_POD, SIDECAR)
    assert side in TM_POD["initContainers"] and side["restartPolicy"] == "Always", \
        "a native sidecar: it outlives TaskManager container restarts"
    assert "--workers=auto" in side["args"], "the pool follows the slot count"
    s = sidecar_settings(side["args"])
    assert s.workers == SLOTS, "--workers=auto resolves to the ConfigMap's slot count"
    assert s.host == "127.0.0.1" and s.flavor == "pyflink"
    assert s.health_port and s.health_host == "0.0.0.0"
    assert port_named(side, "pool-health") == s.health_port
    assert port_named(side, "pool-metrics") == s.metrics_port != 0
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert side[probe]["grpc"]["port"] == s.health_port, probe
    assert side["startupProbe"]["grpc"]["service"] in READINESS_SERVICES
    assert side["livenessProbe"]["grpc"]["service"] == LIVENESS_SERVICE
    need = TASKMANAGER_SHUTDOWN_BUDGET + s.drain_timeout + s.stop_grace + SERVER_STOP_GRACE
    assert TM_POD["terminationGracePeriodSeconds"] >= need


def test_workers_auto_reads_the_mounted_slot_count() -> None:
    side = container(TM_POD, SIDECAR)
    conf_dir = env_of(side)["FLINK_CONF_DIR"]
    volume = {m["name"]: m for m in side["volumeMounts"]}
    (name,) = [n for n, m in volume.items() if m["mountPath"] == conf_dir]
    source = next(v for v in TM_POD["volumes"] if v["name"] == name)
    assert source["configMap"]["name"] == CONFIGMAP["metadata"]["name"]
    assert volume[name].get("readOnly") is True
    assert isinstance(SLOTS, int) and SLOTS >= 1


def test_taskmanager_reaches_its_own_sidecar_and_shares_the_python_files() -> None:
    side, main = container(TM_POD, SIDECAR), container(TM_POD, TM_MAIN)
    s = sidecar_settings(side["args"])
    assert env_of(main)["PYTHON_LOOPBACK_SERVER_ADDRESS"] == f"127.0.0.1:{s.port}"
    tmp = FLINK_CONF["io.tmp.dirs"]
    shared = {n for n, p in mounts(main).items() if p == tmp and mounts(side).get(n) == tmp}
    assert shared, f"io.tmp.dirs {tmp} is not one volume at the same path in both containers"
    assert mounts(main)["flink-config"] == "/opt/flink/conf"
    assert main["args"] == ["taskmanager"]
    assert port_named(main, "rpc") == int(FLINK_CONF["taskmanager.rpc.port"])


def test_reactive_sidecar_is_the_native_one_but_for_the_worker_count() -> None:
    (pod,) = load_all(NATIVE_TEMPLATE)
    native = container(pod["spec"], SIDECAR)
    mine = container(TM_POD, SIDECAR)

    def without_workers(c: dict[str, Any]) -> list[str]:
        return [a for a in c["args"] if not a.startswith("--workers=")]

    assert without_workers(mine) == without_workers(native)
    for key in ("ports", "startupProbe", "readinessProbe", "livenessProbe", "securityContext",
                "image", "restartPolicy"):
        assert mine[key] == native[key], key


def test_sidecar_pods_are_scraped() -> None:
    pm = find(OBJECTS, "PodMonitor", "harness-pool-sidecar")
    labels = TM["spec"]["template"]["metadata"]["labels"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= labels.items()
    flink_pm = find(OBJECTS, "PodMonitor", "reactive-count-flink")
    assert crds.pod_monitor_problems(flink_pm) == []
    for pod_spec, name in ((TM_POD, TM_MAIN), (JM_POD, "jobmanager")):
        assert port_named(container(pod_spec, name), "flink-metrics") == \
            int(FLINK_CONF["metrics.reporter.prom.port"])
    for dep in (TM, JM):
        assert flink_pm["spec"]["selector"]["matchLabels"].items() <= \
            dep["spec"]["template"]["metadata"]["labels"].items()


# -- the JobManager -----------------------------------------------------------------------


def test_jobmanager_runs_the_python_driver_with_ha_identity() -> None:
    (jm,) = JM_POD["containers"]
    args = jm["args"]
    assert args[0] == "standalone-job"
    assert args[args.index("--job-classname") + 1] == PYTHON_DRIVER
    assert args[args.index("-py") + 1].endswith(".py")
    assert args[args.index("--host") + 1] == "$(POD_IP)"
    assert jm["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert JM["spec"]["replicas"] == 1 and JM["spec"]["strategy"]["type"] == "Recreate"
    assert jm["image"] == container(TM_POD, TM_MAIN)["image"], "one image for the job"
    svc = find(OBJECTS, "Service", "reactive-count-jobmanager")
    assert svc["spec"]["selector"].items() <= JM["spec"]["template"]["metadata"]["labels"].items()
    for port in svc["spec"]["ports"]:
        port_named(jm, port["targetPort"])
    for pod_spec in (JM_POD, TM_POD):
        account = pod_spec["serviceAccountName"]
        find(OBJECTS, "ServiceAccount", account)
        binding = find(OBJECTS, "RoleBinding", "reactive-count-ha")
        assert {"kind": "ServiceAccount", "name": account,
                "namespace": JM["metadata"]["namespace"]} in binding["subjects"]
    role = find(OBJECTS, "Role", "reactive-count-ha")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                              "verbs": ["get", "list", "watch", "create", "update", "patch",
                                        "delete"]}]
    assert {o["kind"] for o in REACTIVE} == {"ServiceAccount", "Role", "RoleBinding", "ConfigMap",
                                             "Deployment", "Service", "PodMonitor"}


# -- the HPA and the adapter rule ------------------------------------------------------------

HPA = find(OBJECTS, "HorizontalPodAutoscaler", "reactive-count-taskmanager")
RULES = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]


def _series(query: str) -> set[str]:
    return set(re.findall(r"\b(harness_pool_[a-z_]+)\b", query))


def test_hpa_scales_the_taskmanager_deployment_on_python_cpu_per_slot() -> None:
    target = HPA["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == \
        ("apps/v1", "Deployment", TM["metadata"]["name"])
    (metric,) = HPA["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert name != "harness_pool_busy_fraction", "pinned at 1 in reactive mode"
    (rule,) = [r for r in RULES if r["name"]["as"] == name]
    query = rule["metricsQuery"]
    assert re.search(r"rate\(harness_pool_worker_cpu_seconds_total\{<<\.LabelMatchers>>\}"
                     r"\[\d+m\]\)", query), query
    assert "harness_pool_pool_size" in query, "averaged over the pod's slots (= pool size)"
    assert "by (<<.GroupBy>>)" in query
    assert HPA["spec"]["minReplicas"] >= 1
    assert HPA["spec"]["maxReplicas"] * SLOTS <= 128, "beyond the default max parallelism"
    behavior = HPA["spec"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300, \
        "a rescale's restart looks idle: scale-down must outwait it"


def test_adapter_rules_use_real_sidecar_metrics() -> None:
    registry = SidecarMetrics().registry
    families = {f.name: f for f in registry.collect()}
    exported = set(families) | {f"{n}_total" for n, f in families.items() if f.type == "counter"}
    for rule in RULES:
        for series in _series(rule["seriesQuery"] + rule["metricsQuery"]):
            assert series in exported, f"{series}: not a sidecar metric"
            if series in REQUIRED_METRICS:
                kind, labels = REQUIRED_METRICS[series]
                assert families[series.removesuffix("_total")].type == kind, series
                collector = registry._names_to_collectors.get(series)  # prometheus_client
                assert labels <= set(getattr(collector, "_labelnames", ())), series
        overrides = rule["resources"]["overrides"]
        assert overrides == {"namespace": {"resource": "namespace"},
                             "pod": {"resource": "pod"}}
