"""The one I/O boundary of every backend: HTTP and Kubernetes answers become our errors.

One mapping of status codes for all peers (``status_error``): no status
(transport broke) and 408/425/429/5xx are ``TemporaryError``; 409 is
``Conflict`` (temporary: the peer's object changed under us, re-read and ask
again); 404 is ``NotFound``; any other 4xx is ``PermanentError``. Every
answer's *shape* is checked too: a 200 with HTML, a truncated body or a JSON
document missing a field is a ``TemporaryError`` naming the endpoint and what
was wrong (a proxy or a restarting peer produces those; if it persists, the
step's deadline turns it into a failed step with that message).

Threads: ``HttpApi`` holds a ``requests.Session`` and is used by the run
loop's thread only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import requests

from harness_pool._errors import HarnessPoolError, PermanentError, TemporaryError

log = logging.getLogger(__name__)
T = TypeVar("T")


class NotFound(PermanentError):
    """The peer has no such object (HTTP 404)."""


class NoSuchResourceType(PermanentError):
    """The Kubernetes API server does not serve this resource type (CRD not installed)."""


class Conflict(TemporaryError):
    """The object changed since it was read (HTTP 409): re-read, decide again, retry."""


class AlreadyExists(PermanentError):
    """A create found an object of that name (Kubernetes 409 AlreadyExists)."""


def status_error(status: int | None, what: str, detail: str) -> HarnessPoolError:
    """Our error for an answer with HTTP ``status`` (None: no answer at all)."""
    text = f"{what}: HTTP {status}: {detail[:300]}" if status else f"{what}: {detail[:300]}"
    if status is None or status in (408, 425, 429) or status >= 500:
        return TemporaryError(text)
    if status == 404:
        return NotFound(text)
    if status == 409:
        return Conflict(text)
    return PermanentError(text)


def dig(data: Any, *keys: str | int, what: str) -> Any:
    """``data[k0][k1]...``; a missing key or a wrong type is a TemporaryError naming the path."""
    here = data
    for key in keys:
        try:
            here = here[key]
        except (KeyError, IndexError, TypeError):
            path = ".".join(str(k) for k in keys)
            raise TemporaryError(f"{what}: the answer lacks {path} "
                                 f"(got {_snippet(data)})") from None
    return here


def _snippet(data: Any) -> str:
    text = data if isinstance(data, str) else json.dumps(data, default=str)
    return text[:120] + ("..." if len(text) > 120 else "")


def error_detail(body: Any) -> str:
    """The message of an error document: Flink's ``{"errors": [...]}`` or a ``message``."""
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            texts = [str(e) for e in errors if str(e).strip() not in ("", "Internal server "
                                                                     "error.")]
            return (texts or [str(errors[0])])[0].strip().splitlines()[0]
        if body.get("message"):
            return str(body["message"])
    return _snippet(body)


class Answer:
    """An HTTP answer that arrived whole: status, JSON body (or None), raw text."""

    def __init__(self, status: int, body: Any, text: str) -> None:
        self.status, self.body, self.text = status, body, text


class HttpApi:
    """``requests`` against one base URL, every foreign error translated here."""

    def __init__(self, base: str, peer: str, timeout: float,
                 session: requests.Session | None = None,
                 headers: Callable[[], dict[str, str]] | None = None,
                 detail: Callable[[Any], str] | None = None) -> None:
        self.base, self.peer, self.timeout = base.rstrip("/"), peer, timeout
        self.http = session or requests.Session()
        self._headers = headers or (lambda: {})
        self._detail = detail or error_detail

    def call(self, method: str, path: str, what: str, *, allow: tuple[int, ...] = (),
             timeout: float | None = None, **kwargs: Any) -> Answer:
        """One request; an error status not in ``allow`` raises. The body must be JSON
        (or empty) whenever the status is 2xx."""
        try:
            response = self.http.request(method, self.base + path,
                                         timeout=timeout or self.timeout,
                                         headers=self._headers(), **kwargs)
            raw = response.content  # read it all here: a truncated body fails here
        except (requests.RequestException, OSError) as exc:
            raise TemporaryError(f"{what}: {self.peer} at {self.base} unreachable or the "
                                 f"answer broke off: {type(exc).__name__}") from exc
        except Exception as exc:  # urllib3 errors that requests did not wrap
            if type(exc).__module__.startswith(("urllib3", "http.client")):
                raise TemporaryError(f"{what}: {self.peer} at {self.base}: the answer broke "
                                     f"off: {type(exc).__name__}") from exc
            raise
        status = response.status_code
        text = raw.decode("utf-8", "replace")
        body = _json_or_none(text)
        if status >= 400 and status not in allow:
            detail = self._detail(body) if body is not None else _strip_html(text)
            raise status_error(status, what, detail or response.reason or "")
        if body is None and text.strip() and status < 400:
            ctype = response.headers.get("Content-Type", "?")
            raise TemporaryError(f"{what}: {self.peer} answered {status} with a body that is "
                                 f"not JSON ({ctype}, {len(raw)} bytes: {_snippet(text)})")
        return Answer(status, body if body is not None else {}, text)


def _json_or_none(text: str) -> Any:
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _strip_html(text: str) -> str:
    import re

    return re.sub(r"<[^>]+>", " ", text).strip()[:300]


def kube_call(what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """One Kubernetes API call through the official client, its errors translated."""
    from kubernetes.client.exceptions import ApiException

    try:
        return call(*args, **kwargs)
    except ApiException as exc:
        body = _json_or_none(exc.body or "") if isinstance(exc.body, (str, bytes)) else None
        if isinstance(exc.body, bytes):
            body = _json_or_none(exc.body.decode("utf-8", "replace"))
        message = (body or {}).get("message") if isinstance(body, dict) else None
        reason = (body or {}).get("reason") if isinstance(body, dict) else None
        detail = message or exc.reason or ""
        if exc.status == 404 and isinstance(body, dict) and not body.get("details"):
            raise NoSuchResourceType(f"{what}: the API server does not serve this resource "
                                     f"type ({detail})") from exc
        if exc.status == 409 and reason == "AlreadyExists":
            raise AlreadyExists(f"{what}: {detail}") from exc
        raise status_error(exc.status, what, detail) from exc
    except HarnessPoolError:
        raise
    except (OSError, ValueError) as exc:
        raise TemporaryError(f"{what}: Kubernetes API unreachable or the answer broke off: "
                             f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    except Exception as exc:
        if type(exc).__module__.startswith(("urllib3", "http.client")):
            raise TemporaryError(f"{what}: Kubernetes API unreachable or the answer broke "
                                 f"off: {type(exc).__name__}") from exc
        raise
