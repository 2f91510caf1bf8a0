"""Required-field checks for the custom resources in ``k8s/`` (no CRD schemas here).

Written from the operators' documentation and validators, not from their
schemas: what the Flink Kubernetes Operator's ``DefaultValidator`` rejects a
``FlinkDeployment`` for, and what the Prometheus Operator's CRDs mark required
for ``PodMonitor``, ``ServiceMonitor`` and ``PrometheusRule`` (whose expressions
``promtool`` checks besides, in test_monitoring.py). Each checker returns every problem
as a sentence (empty list: fine).
"""

from __future__ import annotations

import re
from typing import Any

# spec properties of FlinkDeployment (flink.apache.org/v1beta1) in operator 1.13.
FLINK_SPEC_FIELDS = {"flinkConfiguration", "flinkVersion", "image", "imagePullPolicy", "ingress",
                     "job", "jobManager", "logConfiguration", "mode", "podTemplate",
                     "restartNonce", "serviceAccount", "taskManager"}
FLINK_VERSIONS = {f"v1_{m}" for m in range(13, 21)} | {f"v2_{m}" for m in range(5)}
# The operator owns these; a FlinkDeployment that sets one is rejected.
FORBIDDEN_FLINK_KEYS = {"kubernetes.namespace", "kubernetes.cluster-id",
                        "high-availability.cluster-id"}
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _get(obj: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def flink_deployment_problems(obj: dict[str, Any]) -> list[str]:
    p: list[str] = []
    if obj.get("apiVersion") != "flink.apache.org/v1beta1":
        p.append(f"apiVersion {obj.get('apiVersion')!r}; expected flink.apache.org/v1beta1")
    name = _get(obj, "metadata.name") or ""
    if not _NAME.match(name) or len(name) > 45:
        p.append(f"metadata.name {name!r}: lower case, digits and '-', at most 45 characters")
    spec = obj.get("spec") or {}
    for key in sorted(set(spec) - FLINK_SPEC_FIELDS):
        p.append(f"spec.{key}: not a FlinkDeployment field")
    if spec.get("flinkVersion") not in FLINK_VERSIONS:
        p.append(f"spec.flinkVersion {spec.get('flinkVersion')!r}; expected one of v1_13..v2_4")
    for path in ("image", "serviceAccount", "jobManager.resource.memory",
                 "taskManager.resource.memory"):
        if not _get(spec, path):
            p.append(f"spec.{path}: missing")
    conf = spec.get("flinkConfiguration") or {}
    for key in sorted(FORBIDDEN_FLINK_KEYS & set(conf)):
        p.append(f"spec.flinkConfiguration.{key}: owned by the operator")
    job = spec.get("job")
    if job is not None:
        uri = job.get("jarURI") or ""
        if "://" not in uri:
            p.append(f"spec.job.jarURI {uri!r}: needs a scheme (local://, https://, ...)")
        mode = job.get("upgradeMode", "stateless")
        if mode not in ("stateless", "last-state", "savepoint"):
            p.append(f"spec.job.upgradeMode {mode!r}")
        if job.get("state", "running") not in ("running", "suspended"):
            p.append(f"spec.job.state {job.get('state')!r}; expected running or suspended")
        if mode != "stateless" and not conf.get("state.checkpoints.dir"):
            p.append(f"spec.job.upgradeMode {mode}: needs state.checkpoints.dir")
        if mode == "savepoint" and not conf.get("state.savepoints.dir"):
            p.append("spec.job.upgradeMode savepoint: needs state.savepoints.dir")
        replicas = _get(spec, "taskManager.replicas")
        if replicas is None and not (isinstance(job.get("parallelism"), int)
                                     and job["parallelism"] >= 1):
            p.append("spec.job.parallelism: must be >= 1 (or set taskManager.replicas)")
    template = _get(spec, "taskManager.podTemplate.spec") or {}
    names = [c.get("name") for c in template.get("containers", [])]
    if template and "flink-main-container" not in names:
        p.append("spec.taskManager.podTemplate: the TaskManager container must be named "
                 "flink-main-container")
    return p


def _selector_problems(spec: dict[str, Any]) -> list[str]:
    sel = spec.get("selector")
    if not isinstance(sel, dict) or not (sel.get("matchLabels") or sel.get("matchExpressions")):
        return ["spec.selector: missing or empty (required)"]
    return []


def pod_monitor_problems(obj: dict[str, Any]) -> list[str]:
    p = [] if obj.get("apiVersion") == "monitoring.coreos.com/v1" else [
        f"apiVersion {obj.get('apiVersion')!r}; expected monitoring.coreos.com/v1"]
    spec = obj.get("spec") or {}
    p += _selector_problems(spec)
    endpoints = spec.get("podMetricsEndpoints") or []
    if not endpoints:
        p.append("spec.podMetricsEndpoints: missing (nothing would be scraped)")
    for i, ep in enumerate(endpoints):
        if not (ep.get("port") or ep.get("portNumber")):
            p.append(f"spec.podMetricsEndpoints[{i}]: needs port (a container port name)")
    return p


def service_monitor_problems(obj: dict[str, Any]) -> list[str]:
    p = [] if obj.get("apiVersion") == "monitoring.coreos.com/v1" else [
        f"apiVersion {obj.get('apiVersion')!r}; expected monitoring.coreos.com/v1"]
    spec = obj.get("spec") or {}
    p += _selector_problems(spec)
    endpoints = spec.get("endpoints") or []
    if not endpoints:
        p.append("spec.endpoints: missing (required)")
    for i, ep in enumerate(endpoints):
        if not (ep.get("port") or ep.get("targetPort")):
            p.append(f"spec.endpoints[{i}]: needs port (a Service port name)")
    return p


_RULE_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_RULE_KEYS = {"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"}


def prometheus_rule_problems(obj: dict[str, Any]) -> list[str]:
    """spec.groups[] (unique names) of rules with exactly one of record/alert, and expr."""
    p = [] if obj.get("apiVersion") == "monitoring.coreos.com/v1" else [
        f"apiVersion {obj.get('apiVersion')!r}; expected monitoring.coreos.com/v1"]
    groups = _get(obj, "spec.groups") or []
    if not groups:
        p.append("spec.groups: missing (no rules)")
    names = [g.get("name") for g in groups]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        p.append(f"spec.groups: name {dup!r} used twice")
    for gi, group in enumerate(groups):
        if not group.get("name"):
            p.append(f"spec.groups[{gi}].name: missing")
        for ri, rule in enumerate(group.get("rules") or []):
            where = f"spec.groups[{gi}].rules[{ri}]"
            for key in sorted(set(rule) - _RULE_KEYS):
                p.append(f"{where}.{key}: not a rule field")
            if ("record" in rule) == ("alert" in rule):
                p.append(f"{where}: needs exactly one of record and alert")
            if "record" in rule and not _RULE_NAME.match(str(rule["record"])):
                p.append(f"{where}.record {rule['record']!r}: not a metric name")
            if not str(rule.get("expr", "")).strip():
                p.append(f"{where}.expr: missing")
    return p


CHECKERS = {
    "FlinkDeployment": flink_deployment_problems,
    "PodMonitor": pod_monitor_problems,
    "ServiceMonitor": service_monitor_problems,
    "PrometheusRule": prometheus_rule_problems,
}
