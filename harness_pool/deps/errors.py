"""Errors of job-dependency preparation, in the project's one hierarchy.

Every error here is a ``DependencyError`` (so the worker can turn any of them
into one ``StartWorkerResponse.error``) and also either a ``TemporaryError``
(the same request may succeed later: an endpoint that did not answer, a full
disk, a lock held too long) or a ``PermanentError`` (the job itself is at
fault: a bad manifest, a requirement pip cannot install, a version conflict).
Messages name the endpoint, the artifact, the requirement or the package at
fault and, where there is one, what to do about it.
"""

from __future__ import annotations

from harness_pool._errors import HarnessPoolError, PermanentError, TemporaryError


class DependencyError(HarnessPoolError):
    """Base of every failure to give a stage its job's dependencies."""


class BadArtifactError(DependencyError, PermanentError):
    """The job's artifact manifest cannot be honoured (unknown type, unsafe or clashing name)."""


class ArtifactUnavailableError(DependencyError, TemporaryError):
    """The runner's artifact service did not answer in time, refused, or cut a stream short."""


class ArtifactIntegrityError(DependencyError, PermanentError):
    """An artifact's bytes do not match the sha256 its manifest declares."""


class InstallError(DependencyError, PermanentError):
    """pip could not install the job's packages: names the step, requirement, pip's last line."""

    def __init__(self, message: str, requirement: str = "", pip_line: str = "") -> None:
        super().__init__(message)
        self.requirement = requirement
        self.pip_line = pip_line


class DependencyConflict(DependencyError, PermanentError):
    """The job needs a version of a package other than the one this worker already imported."""

    def __init__(self, message: str, package: str, job_version: str,
                 worker_version: str) -> None:
        super().__init__(message)
        self.package = package
        self.job_version = job_version
        self.worker_version = worker_version


class CacheFullError(DependencyError, TemporaryError):
    """The environment cache's disk is full (ENOSPC) even after evicting what was not in use."""


class CacheBusyError(DependencyError, TemporaryError):
    """A lock of the environment cache was not granted within the wait bound."""


class CacheError(DependencyError, TemporaryError):
    """Any other I/O failure of the environment cache (permissions, a vanished directory)."""
