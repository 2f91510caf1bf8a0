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
