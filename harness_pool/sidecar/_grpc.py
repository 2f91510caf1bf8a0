"""Small gRPC helpers shared by the sidecar's servicers."""

from __future__ import annotations

import grpc

from harness_pool._errors import HarnessPoolError

WORKER_ID_HEADER = "worker_id"


def header(context: grpc.ServicerContext, name: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value if isinstance(value, str) else value.decode()
    return None


def require_worker_id(context: grpc.ServicerContext, service: str) -> str:
    """The caller's ``worker_id`` header; aborts INVALID_ARGUMENT when it is missing."""
    value = header(context, WORKER_ID_HEADER)
    if not value:
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{service}: missing '{WORKER_ID_HEADER}' metadata header",
        )
    return value  # type: ignore[return-value]


def status_of(exc: HarnessPoolError) -> grpc.StatusCode:
    """The exact status code an error's ``code`` attribute names, else FAILED_PRECONDITION."""
    name = getattr(exc, "code", "FAILED_PRECONDITION")
    return getattr(grpc.StatusCode, name, grpc.StatusCode.FAILED_PRECONDITION)
