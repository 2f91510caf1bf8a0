"""Leader election with a ``coordination.k8s.io/v1`` Lease: only the holder acts.

``LeaseElector.is_leader(now)`` acquires a free or expired Lease, renews our
own, and answers False while another identity holds a fresh one. Writes carry
the resourceVersion we read, so two candidates racing for an expired Lease
cannot both win: the loser gets 409 and stays a follower.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from harness_pool._errors import TemporaryError

log = logging.getLogger(__name__)


def _ts(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


class LeaseElector:
    def __init__(self, coordination_api: Any, namespace: str, name: str, identity: str,
                 duration: int = 15) -> None:
        self.api = coordination_api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.leading = False

    def is_leader(self, now: float) -> bool:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        stamp = datetime.fromtimestamp(now, tz=timezone.utc)
        try:
            try:
                lease = self.api.read_namespaced_lease(self.name, self.namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                body = client.V1Lease(
                    metadata=client.V1ObjectMeta(name=self.name),
                    spec=client.V1LeaseSpec(holder_identity=self.identity,
                                            lease_duration_seconds=self.duration,
                                            acquire_time=stamp, renew_time=stamp,
                                            lease_transitions=0))
                self.api.create_namespaced_lease(self.namespace, body)
                return self._became(True, "created the lease")
            spec = lease.spec
            holder = spec.holder_identity
            expired = _ts(spec.renew_time) + (spec.lease_duration_seconds or self.duration) < now
            if holder not in (None, "", self.identity) and not expired:
                return self._became(False, f"lease held by {holder}")
            if holder != self.identity:
                spec.lease_transitions = (spec.lease_transitions or 0) + 1
                spec.acquire_time = stamp
            spec.holder_identity = self.identity
            spec.renew_time = stamp
            spec.lease_duration_seconds = self.duration
            self.api.replace_namespaced_lease(self.name, self.namespace, lease)
            return self._became(True, "renewed the lease")
        except ApiException as exc:
            if exc.status == 409:
                return self._became(False, "lost a race for the lease")
            raise TemporaryError(f"lease {self.namespace}/{self.name}: HTTP {exc.status}") \
                from exc

    def _became(self, leading: bool, why: str) -> bool:
        if leading != self.leading:
            log.info("%s %s leadership: %s", self.identity,
                     "took" if leading else "does not hold", why)
        self.leading = leading
        return leading
