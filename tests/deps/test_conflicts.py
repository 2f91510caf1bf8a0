"""conflicts: a job environment against what the worker has imported (pure)."""

from __future__ import annotations

import pytest

from harness_pool.deps.conflicts import Conflict, Distribution, find_conflicts, sdk_conflict
from harness_pool.deps.errors import DependencyConflict

WORKER = {"apache-beam": "2.61.0", "protobuf": "5.28.0", "grpcio": "1.65.5", "six": "1.17.0",
          "pyyaml": "6.0.2", "requests": "2.32.3"}
IMPORTED = frozenset({"apache_beam", "google", "grpc", "six", "yaml"})


@pytest.mark.parametrize("provided, expected", [
    ([Distribution("mypkg", "0.1", ("mypkg",))], []),
    ([Distribution("six", "1.17.0", ("six",))], []),
    ([Distribution("requests", "2.31.0", ("requests",))], []),
    ([Distribution("six", "1.16.0", ("six",))],
     [Conflict("six", "1.16.0", "1.17.0", ("six",))]),
    ([Distribution("protobuf", "4.25.3", ())],
     [Conflict("protobuf", "4.25.3", "5.28.0", ())]),
    ([Distribution("pyyaml", "5.4", ("_yaml", "yaml")),
      Distribution("grpcio", "1.60.0", ("grpc",))],
     [Conflict("grpcio", "1.60.0", "1.65.5", ("grpc",)),
      Conflict("pyyaml", "5.4", "6.0.2", ("yaml",))]),
], ids=["new-package", "same-version", "not-imported", "imported-other-version",
        "protected-always", "several-sorted"])
def test_find_conflicts(provided: list[Distribution], expected: list[Conflict]) -> None:
    assert find_conflicts(provided, WORKER, IMPORTED) == expected


def test_conflict_error_names_package_versions_and_what_to_do() -> None:
    [conflict] = find_conflicts([Distribution("protobuf", "4.25.3", ("google",))], WORKER,
                                IMPORTED)
    error = conflict.error("2.61.0")
    assert isinstance(error, DependencyConflict)
    assert (error.package, error.job_version, error.worker_version) == (
        "protobuf", "4.25.3", "5.28.0")
    text = str(error)
    assert text.startswith("job needs protobuf 4.25.3 but this worker's fork server already "
                           "imported protobuf 5.28.0 (modules google); build the job against "
                           "apache-beam==2.61.0 and its protobuf range")
    assert "apache-beam==2.61.0" in text and "python.archives" in text


def test_staged_sdk_of_the_workers_version_is_fine() -> None:
    assert sdk_conflict("2.61.0", "2.61.0", "dataflow_python_sdk.tar") is None


@pytest.mark.parametrize("staged, shown", [("2.60.0", "2.60.0"), ("", "an unknown version")])
def test_staged_sdk_of_another_version_is_refused(staged: str, shown: str) -> None:
    error = sdk_conflict(staged, "2.61.0", "dataflow_python_sdk.tar")
    assert error is not None and error.package == "apache-beam"
    assert f"staged the Beam SDK dataflow_python_sdk.tar ({shown}, --sdk_location)" in str(error)
    assert "runs apache-beam 2.61.0" in str(error)
