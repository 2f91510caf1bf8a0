"""A job's artifact manifest, as Beam's provision info lists it, turned into plain records.

Pure: no I/O. ``parse_dependencies`` takes the ``ArtifactInformation`` list of
``ProvisionInfo.dependencies`` (or of a ``ResolveArtifacts`` answer) and
returns one ``Artifact`` per entry, or raises ``BadArtifactError`` naming the
entry at fault.

Invariants:
- every ``Artifact.name`` is a safe relative path (no ``..``, not absolute,
  no empty or NUL components): writing ``staged/<name>`` never leaves
  ``staged/``;
- the name is what Beam's container boot would write: the staging role's
  ``staged_name``; for any other role, a name derived from the artifact
  itself (Beam's boot uses a counter and the file's base name; we use a
  prefix of the artifact's identity so that every stage of a job derives the
  same name);
- ``identity`` is the sha256 of the artifact's deterministic serialization
  as the runner gave it. Runners put a per-job staging token in every path
  (``<staging dir>/<job>/...``), so one identity never names two contents; the
  blob store relies on this to skip downloads (see ``blobs.py``);
- ``declared_sha256`` is the content hash from the type payload when the
  runner sent one (Beam's own job servers, 2.61, send none), else ``""``.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import posixpath
from collections.abc import Sequence
from typing import Any

from harness_pool.deps.errors import BadArtifactError

FILE_TYPE = "beam:artifact:type:file:v1"
URL_TYPE = "beam:artifact:type:url:v1"
EMBEDDED_TYPE = "beam:artifact:type:embedded:v1"
STAGING_TO_ROLE = "beam:artifact:role:staging_to:v1"
PIP_REQUIREMENTS_ROLE = "beam:artifact:role:pip_requirements_file:v1"

#: Names the Python SDK's stager gives its files (apache_beam/runners/portability/stager.py).
MAIN_SESSION = "pickled_main_session"
REQUIREMENTS = "requirements.txt"
EXTRA_PACKAGES = "extra_packages.txt"
WORKFLOW = "workflow.tar.gz"
SDK_SOURCES = "dataflow_python_sdk.tar"
SUBMISSION_ENVIRONMENT = "submission_environment_dependencies.txt"


class Role(enum.Enum):
    STAGED = "staged"  # STAGING_TO: a file under a name the job chose
    PIP_REQUIREMENTS = "pip_requirements"  # a requirements file the boot pip-installs
    OTHER = "other"  # any other role: materialized under a derived name, never installed

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class Artifact:
    """One entry of the manifest."""

    index: int
    name: str
    role: Role
    type_urn: str
    identity: str
    declared_sha256: str
    #: The serialized ``ArtifactInformation``, sent back as is in ``GetArtifact``.
    info: bytes
    #: The bytes of an embedded artifact (no RPC needed), else ``None``.
    embedded: bytes | None = None

    def describe(self) -> str:
        return f"artifact #{self.index} '{self.name}'"


def safe_name(name: str, what: str) -> str:
    """``name`` if it is a safe relative path, else a ``BadArtifactError`` naming ``what``."""
    if not name or "\x00" in name or "\\" in name:
        raise BadArtifactError(f"{what}: unusable file name {name!r}")
    if name.startswith("/"):
        raise BadArtifactError(f"{what}: file name {name!r} is absolute; "
                               "staged names must be relative to staged/")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise BadArtifactError(f"{what}: file name {name!r} has an empty, '.' or '..' "
                               "component and could leave staged/")
    return name


def parse_dependencies(dependencies: Sequence[Any]) -> list[Artifact]:
    """``ArtifactInformation`` messages → ``Artifact`` records (see the module invariants)."""
    from apache_beam.portability.api import beam_runner_api_pb2 as rapi

    out: list[Artifact] = []
    for index, dep in enumerate(dependencies):
        info = dep.SerializeToString(deterministic=True)
        identity = hashlib.sha256(info).hexdigest()
        what = f"artifact #{index} (type {dep.type_urn or '?'}, role {dep.role_urn or '?'})"
        declared, embedded, base = "", None, ""
        try:
            if dep.type_urn == FILE_TYPE:
                file_payload = rapi.ArtifactFilePayload.FromString(dep.type_payload)
                declared, base = file_payload.sha256, posixpath.basename(file_payload.path)
            elif dep.type_urn == URL_TYPE:
                url_payload = rapi.ArtifactUrlPayload.FromString(dep.type_payload)
                declared = url_payload.sha256
                base = posixpath.basename(url_payload.url.split("?", 1)[0])
            elif dep.type_urn == EMBEDDED_TYPE:
                embedded = rapi.EmbeddedFilePayload.FromString(dep.type_payload).data
                declared = hashlib.sha256(embedded).hexdigest()
            else:
                raise BadArtifactError(f"{what}: unsupported artifact type; this worker "
                                       f"retrieves {FILE_TYPE}, {URL_TYPE} and {EMBEDDED_TYPE}")
            if dep.role_urn == STAGING_TO_ROLE:
                role = Role.STAGED
                name = rapi.ArtifactStagingToRolePayload.FromString(dep.role_payload).staged_name
            else:
                role = (Role.PIP_REQUIREMENTS if dep.role_urn == PIP_REQUIREMENTS_ROLE
                        else Role.OTHER)
                name = f"{identity[:12]}-{base or 'artifact'}"
        except BadArtifactError:
            raise
        except Exception as exc:  # a payload that does not parse
            raise BadArtifactError(f"{what}: unreadable payload: {exc}") from exc
        if declared and (len(declared) != 64 or not _is_hex(declared)):
            raise BadArtifactError(f"{what}: declared sha256 {declared!r} is not 64 hex digits")
        out.append(Artifact(index=index, name=safe_name(name, what), role=role,
                            type_urn=dep.type_urn, identity=identity,
                            declared_sha256=declared.lower(), info=info, embedded=embedded))
    return out


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True
