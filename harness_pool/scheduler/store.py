"""Durable scheduler state (one JSON document, replaced atomically) and its request inbox.

Only the actor (the run loop holding the Lease or the state file's lock)
writes the state document. Anyone may *submit* a manual request: it goes into
an inbox next to the state, never into the state document itself, so a
request can never overwrite a cycle's progress (no lost update). The actor
reads the inbox, records the requests in the state (saved first), then
``consume``s them from the inbox; a request seen twice (a crash between the
two) is recognised by its id.

``FileStateStore``: the state is written to a temporary file, fsynced,
renamed over the target, and the folder fsynced: a reader (or a restarted
scheduler) sees the old document or the new one, never a torn one. The inbox
is the folder ``<state>.requests/``, one file per request, written the same
way. ``ConfigMapStateStore``: the state is key ``state.json`` of a ConfigMap,
replaced with the ``resourceVersion`` last read; requests are keys
``request.<id>.json`` added by a JSON merge patch. A 409 on the state write is
re-read: if only inbox keys changed, the write is retried on the fresh
version; if ``state.json`` changed, another writer acted and nothing is
overwritten (``PermanentError``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from harness_pool._errors import PermanentError, TemporaryError
from harness_pool.scheduler.backends._boundary import Conflict, NotFound, kube_call
from harness_pool.scheduler.model import CycleState, Request

log = logging.getLogger(__name__)
KEY = "state.json"
REQUEST_PREFIX = "request."


class StateStore(Protocol):
    def load(self) -> CycleState | None: ...

    def save(self, state: CycleState) -> None: ...

    def submit(self, request: Request) -> None:
        """Add a request to the inbox (any process, any time)."""
        ...

    def inbox(self) -> list[Request]:
        """Requests submitted and not yet consumed, oldest first."""
        ...

    def consume(self, ids: list[str]) -> None:
        """Drop requests the saved state has recorded."""
        ...


def _parse_state(text: str, where: str) -> CycleState:
    try:
        return CycleState.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise PermanentError(f"{where} is not a scheduler state: {exc}; refusing to "
                             "overwrite it") from exc


def _parse_request(text: str, where: str) -> Request | None:
    try:
        return Request.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring request %s: not a request (%s)", where, exc)
        return None


def _atomic_write(path: Path, data: str, what: str) -> None:
    folder = path.parent
    tmp = ""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
        with os.fdopen(fd, "w") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = ""
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise PermanentError(f"cannot write {what} {path}: {exc.strerror or exc}") from exc
    finally:
        if tmp:
            Path(tmp).unlink(missing_ok=True)


class FileStateStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.requests = Path(f"{self.path}.requests")

    def load(self) -> CycleState | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PermanentError(f"cannot read state file {self.path}: {exc.strerror}") from exc
        return _parse_state(text, f"state file {self.path}")

    def save(self, state: CycleState) -> None:
        _atomic_write(self.path, json.dumps(state.to_dict(), indent=1, sort_keys=True),
                      "state file")

    def submit(self, request: Request) -> None:
        _atomic_write(self.requests / f"{request.id}.json", json.dumps(request.to_dict()),
                      "request file")

    def inbox(self) -> list[Request]:
        try:
            files = sorted(self.requests.glob("*.json"), key=lambda p: p.stat().st_mtime)
        except OSError:
            return []
        out = []
        for file in files:
            try:
                request = _parse_request(file.read_text(), str(file))
            except OSError:
                continue
            if request is not None:
                out.append(request)
        return out

    def consume(self, ids: list[str]) -> None:
        for request_id in ids:
            (self.requests / f"{request_id}.json").unlink(missing_ok=True)


class ConfigMapStateStore:
    """State in ConfigMap ``name`` (key ``state.json``) through the official client."""

    def __init__(self, core_api: Any, namespace: str, name: str,
                 request_timeout: float = 10.0) -> None:
        self.api = core_api
        self.namespace = namespace
        self.name = name
        self.timeout = request_timeout
        self._version: str | None = None
        self._data: dict[str, str] = {}
        self._ours: str | None = None
        """The state.json text we last read or wrote (None: never read)."""
        self._consumed: set[str] = set()

    @property
    def _where(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name}"

    def _read(self) -> bool:
        try:
            cm = kube_call(f"read {self._where}", self.api.read_namespaced_config_map,
                           self.name, self.namespace, _request_timeout=self.timeout)
        except NotFound:
            self._version, self._data = None, {}
            return False
        self._version = cm.metadata.resource_version
        self._data = dict(cm.data or {})
        return True

    def load(self) -> CycleState | None:
        self._read()
        text = self._data.get(KEY)
        self._ours = text or ""
        return _parse_state(text, self._where) if text else None

    def save(self, state: CycleState) -> None:
        text = json.dumps(state.to_dict(), sort_keys=True)
        if self._ours is None:
            self.load()
        for _ in range(5):
            try:
                self._write(text)
                self._ours = text
                return
            except Conflict as exc:
                self._read()
                if self._data.get(KEY, "") != self._ours:
                    raise PermanentError(f"write {self._where}: another writer changed the "
                                         "scheduler state; not overwriting it (is a second "
                                         "scheduler acting without the Lease?)") from exc
                log.info("%s changed (a request arrived); writing on the fresh version",
                         self._where)
        raise TemporaryError(f"write {self._where}: kept conflicting with request writes")

    def _write(self, text: str) -> None:
        from kubernetes import client

        data = {k: v for k, v in self._data.items()
                if not (k.startswith(REQUEST_PREFIX) and _request_id(k) in self._consumed)}
        data[KEY] = text
        body = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=self.name, resource_version=self._version,
                                         labels={"app.kubernetes.io/managed-by": "harness-pool"}),
            data=data)
        if self._version is None:
            cm = kube_call(f"create {self._where}", self.api.create_namespaced_config_map,
                           self.namespace, body, _request_timeout=self.timeout)
        else:
            cm = kube_call(f"write {self._where}", self.api.replace_namespaced_config_map,
                           self.name, self.namespace, body, _request_timeout=self.timeout)
        self._version = cm.metadata.resource_version
        self._data = dict(cm.data or data)
        self._consumed = {i for i in self._consumed
                          if f"{REQUEST_PREFIX}{i}.json" in self._data}

    def submit(self, request: Request) -> None:
        from kubernetes import client

        key, text = f"{REQUEST_PREFIX}{request.id}.json", json.dumps(request.to_dict())
        try:
            kube_call(f"add a request to {self._where}", self.api.patch_namespaced_config_map,
                      self.name, self.namespace, {"data": {key: text}},
                      _request_timeout=self.timeout)
        except NotFound:  # no state yet: the request is the ConfigMap's first key
            body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name=self.name),
                                      data={key: text})
            kube_call(f"create {self._where}", self.api.create_namespaced_config_map,
                      self.namespace, body, _request_timeout=self.timeout)

    def inbox(self) -> list[Request]:
        known_state = self._ours
        self._read()
        if known_state is not None and self._data.get(KEY, "") != known_state:
            raise PermanentError(f"read {self._where}: another writer changed the scheduler "
                                 "state")
        out = []
        for key in sorted(self._data):
            if key.startswith(REQUEST_PREFIX) and _request_id(key) not in self._consumed:
                request = _parse_request(self._data[key], f"{self._where} key {key}")
                if request is not None:
                    out.append(request)
        return sorted(out, key=lambda r: r.submitted_at)

    def consume(self, ids: list[str]) -> None:
        self._consumed.update(ids)


def _request_id(key: str) -> str:
    return key[len(REQUEST_PREFIX):].removesuffix(".json")
