"""manifest.parse_dependencies: Beam's ArtifactInformation → safe, named records."""

from __future__ import annotations

import hashlib

import pytest
from apache_beam.portability.api import beam_runner_api_pb2 as rapi

from harness_pool.deps import manifest as mf
from harness_pool.deps.errors import BadArtifactError

SHA = "ab" * 32


def artifact(type_urn: str = mf.FILE_TYPE, role_urn: str = mf.STAGING_TO_ROLE,
             staged_name: str = "mypkg-0.1.tar.gz", path: str = "/runner/job-1/x-mypkg.tar.gz",
             sha: str = "", data: bytes = b"") -> rapi.ArtifactInformation:
    if type_urn == mf.FILE_TYPE:
        payload = rapi.ArtifactFilePayload(path=path, sha256=sha).SerializeToString()
    elif type_urn == mf.URL_TYPE:
        payload = rapi.ArtifactUrlPayload(url="https://h/p/" + staged_name + "?x=1",
                                          sha256=sha).SerializeToString()
    elif type_urn == mf.EMBEDDED_TYPE:
        payload = rapi.EmbeddedFilePayload(data=data).SerializeToString()
    else:
        payload = b"\x00"
    role = (rapi.ArtifactStagingToRolePayload(staged_name=staged_name).SerializeToString()
            if role_urn == mf.STAGING_TO_ROLE else b"")
    return rapi.ArtifactInformation(type_urn=type_urn, type_payload=payload, role_urn=role_urn,
                                    role_payload=role)


def test_staging_role_names_the_file_and_identity_is_the_message_hash() -> None:
    dep = artifact()
    [parsed] = mf.parse_dependencies([dep])
    assert parsed.name == "mypkg-0.1.tar.gz"
    assert parsed.role is mf.Role.STAGED
    assert parsed.declared_sha256 == ""
    assert parsed.identity == hashlib.sha256(dep.SerializeToString(deterministic=True)).hexdigest()
    assert rapi.ArtifactInformation.FromString(parsed.info) == dep


def test_identity_differs_when_the_runner_path_differs() -> None:
    a, b = mf.parse_dependencies([artifact(path="/s/job-1/f"), artifact(path="/s/job-2/f")])
    assert a.identity != b.identity and a.name == b.name


@pytest.mark.parametrize("sha, declared", [("", ""), (SHA, SHA), (SHA.upper(), SHA)],
                         ids=["none", "lower", "upper-normalized"])
def test_declared_sha256_is_read_from_file_payloads(sha: str, declared: str) -> None:
    [parsed] = mf.parse_dependencies([artifact(sha=sha)])
    assert parsed.declared_sha256 == declared


def test_url_artifact_declares_its_hash() -> None:
    [parsed] = mf.parse_dependencies([artifact(type_urn=mf.URL_TYPE, sha=SHA)])
    assert parsed.declared_sha256 == SHA and parsed.type_urn == mf.URL_TYPE


def test_embedded_artifact_carries_its_bytes_and_their_hash() -> None:
    [parsed] = mf.parse_dependencies([artifact(type_urn=mf.EMBEDDED_TYPE, data=b"hello")])
    assert parsed.embedded == b"hello"
    assert parsed.declared_sha256 == hashlib.sha256(b"hello").hexdigest()


def test_other_roles_get_a_stable_derived_name() -> None:
    dep = artifact(role_urn=mf.PIP_REQUIREMENTS_ROLE, path="/tmp/x/tmp_requirements.txt")
    [first] = mf.parse_dependencies([dep])
    [again] = mf.parse_dependencies([dep])
    assert first.role is mf.Role.PIP_REQUIREMENTS
    assert first.name == again.name == f"{first.identity[:12]}-tmp_requirements.txt"
    [other] = mf.parse_dependencies([artifact(role_urn="beam:artifact:role:go_worker_binary:v1")])
    assert other.role is mf.Role.OTHER


@pytest.mark.parametrize("name, fragment", [
    ("../escape", "'..'"),
    ("a/../../b", "'..'"),
    ("/etc/passwd", "absolute"),
    ("", "unusable"),
    ("a//b", "empty"),
    ("a\\b", "unusable"),
], ids=["dotdot", "nested-dotdot", "absolute", "empty", "empty-component", "backslash"])
def test_unsafe_staged_names_are_refused_naming_the_artifact(name: str, fragment: str) -> None:
    with pytest.raises(BadArtifactError) as err:
        mf.parse_dependencies([artifact(), artifact(staged_name=name)])
    assert "artifact #1" in str(err.value) and fragment in str(err.value)


def test_subdirectories_are_allowed() -> None:
    [parsed] = mf.parse_dependencies([artifact(staged_name="lib/dep.whl")])
    assert parsed.name == "lib/dep.whl"


def test_unknown_type_is_refused_naming_it() -> None:
    with pytest.raises(BadArtifactError, match="artifact #0 .*beam:artifact:type:deferred:v1.*"
                                               "unsupported artifact type"):
        mf.parse_dependencies([artifact(type_urn="beam:artifact:type:deferred:v1")])


def test_malformed_declared_hash_is_refused() -> None:
    with pytest.raises(BadArtifactError, match="not 64 hex digits"):
        mf.parse_dependencies([artifact(sha="xyz")])


def test_unparseable_payload_is_refused() -> None:
    bad = rapi.ArtifactInformation(type_urn=mf.FILE_TYPE, type_payload=b"\xff\xff\xff",
                                   role_urn=mf.STAGING_TO_ROLE)
    with pytest.raises(BadArtifactError, match="unreadable payload"):
        mf.parse_dependencies([bad])
