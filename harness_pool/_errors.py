"""The one exception hierarchy of harness-pool.

Foreign errors (``grpc.RpcError``, HTTP errors, ``ApiException``, ``OSError``)
are translated at the boundary that meets them, with ``raise ... from exc``.
``TemporaryError`` may be retried with backoff; ``PermanentError`` may not.
"""

from __future__ import annotations


class HarnessPoolError(Exception):
    """Base of every error harness-pool raises on purpose."""


class ConfigError(HarnessPoolError):
    """Invalid configuration; ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return self.problems[0]
        return "\n".join(f"- {p}" for p in self.problems)


class TemporaryError(HarnessPoolError):
    """A failure that may go away: retry with backoff."""


class PermanentError(HarnessPoolError):
    """A failure that will not go away by retrying."""


class IllegalTransition(PermanentError):
    """A state machine was asked for a transition its table does not allow."""

    def __init__(self, what: str, current: object, wanted: object) -> None:
        super().__init__(f"{what}: cannot go from {current} to {wanted}")
        self.current = current
        self.wanted = wanted


#: Upper bound of any error text the sidecar sends or stores (status, StartWorker errors).
MAX_ERROR_CHARS = 2048


def clip(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    suffix = f"... ({len(text) - limit + 40} more characters)"
    return text[: max(0, limit - len(suffix))] + suffix


def printable(value: str | bytes, limit: int = 120) -> str:
    """A caller-chosen value (an id, a key) safe to put in a log line or an error:
    control and non-ASCII characters escaped, at most about ``limit`` characters."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="backslashreplace")
    shown = value.encode("ascii", errors="backslashreplace").decode("ascii")
    shown = "".join(c if " " <= c <= "~" else f"\\x{ord(c):02x}" for c in shown)
    return shown if len(shown) <= limit else shown[:limit] + f"...({len(value)} chars)"
