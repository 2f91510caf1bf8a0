"""Durable scheduler state: one JSON document, replaced atomically.

``FileStateStore`` writes a temporary file next to the target, fsyncs it,
renames it over the target and fsyncs the folder: a reader (or a restarted
scheduler) sees the old document or the new one, never a torn one. A write
that fails leaves the old file untouched and raises ``PermanentError`` naming
the path. ``ConfigMapStateStore`` keeps the same document in one key of a
ConfigMap and writes with the last resourceVersion it read, so a second writer
is detected (409) instead of silently overwritten.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from harness_pool._errors import PermanentError, TemporaryError
from harness_pool.scheduler.model import CycleState

KEY = "state.json"


class StateStore(Protocol):
    def load(self) -> CycleState | None: ...

    def save(self, state: CycleState) -> None: ...


class FileStateStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> CycleState | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PermanentError(f"cannot read state file {self.path}: {exc.strerror}") from exc
        try:
            return CycleState.from_dict(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentError(f"state file {self.path} is not a scheduler state: {exc}; "
                                 "refusing to overwrite it") from exc

    def save(self, state: CycleState) -> None:
        data = json.dumps(state.to_dict(), indent=1, sort_keys=True)
        folder = self.path.parent
        tmp = ""
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=folder)
            with os.fdopen(fd, "w") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            tmp = ""
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise PermanentError(f"cannot write state file {self.path}: "
                                 f"{exc.strerror or exc}") from exc
        finally:
            if tmp:
                Path(tmp).unlink(missing_ok=True)


class ConfigMapStateStore:
    """State in ConfigMap ``name`` (key ``state.json``) through the official client."""

    def __init__(self, core_api: Any, namespace: str, name: str) -> None:
        self.api = core_api
        self.namespace = namespace
        self.name = name
        self._version: str | None = None

    def load(self) -> CycleState | None:
        from kubernetes.client.exceptions import ApiException

        try:
            cm = self.api.read_namespaced_config_map(self.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                self._version = None
                return None
            raise _translate(exc, f"read ConfigMap {self.namespace}/{self.name}") from exc
        self._version = cm.metadata.resource_version
        text = (cm.data or {}).get(KEY)
        return CycleState.from_dict(json.loads(text)) if text else None

    def save(self, state: CycleState) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        body = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=self.name, resource_version=self._version,
                                         labels={"app.kubernetes.io/managed-by": "harness-pool"}),
            data={KEY: json.dumps(state.to_dict(), sort_keys=True)},
        )
        try:
            if self._version is None:
                cm = self.api.create_namespaced_config_map(self.namespace, body)
            else:
                cm = self.api.replace_namespaced_config_map(self.name, self.namespace, body)
        except ApiException as exc:
            raise _translate(exc, f"write ConfigMap {self.namespace}/{self.name}") from exc
        self._version = cm.metadata.resource_version


def _translate(exc: Any, what: str) -> Exception:
    if exc.status == 409:
        return PermanentError(f"{what}: conflict (another writer changed it); not overwriting")
    if exc.status is None or exc.status >= 500 or exc.status == 429:
        return TemporaryError(f"{what}: HTTP {exc.status} {exc.reason}")
    return PermanentError(f"{what}: HTTP {exc.status} {exc.reason}")
