"""Helpers for the job-dependency tests: packages built once, a runner stand-in for bad input.

``JobPackages`` are real distributions built offline with the venv's setuptools
(``tests/deps/helpers``). ``StandInRunner`` plays the runner's part of a
StartWorker for inputs no real runner sends on purpose (an artifact endpoint
that never answers, a stream cut short): a real gRPC server with a provision
service whose ``ProvisionInfo`` lists the given artifacts and names itself as
control and logging endpoint. ``main_session_job.py`` (written by
``write_main_session_job``) is a pipeline run as ``__main__`` in a child
process, the only way ``--save_main_session`` means anything.
"""

from __future__ import annotations

import dataclasses
import textwrap
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from apache_beam.portability.api import (
    beam_fn_api_pb2,
    beam_fn_api_pb2_grpc,
    beam_provision_api_pb2,
    beam_provision_api_pb2_grpc,
    endpoints_pb2,
)

from tests.deps.helpers import build_sdist, make_wheel


@dataclasses.dataclass(frozen=True)
class JobPackages:
    mypkg: Path  # sdist mypkg 0.1 needing six (which the worker has)
    tiny1: Path  # wheel tinypkg 1.0
    tiny2: Path  # wheel tinypkg 2.0
    reqpkg: Path  # wheel reqpkg 2.0, in a requirements cache directory
    needy: Path  # wheel needing nosuchdep==9.9, which nobody staged
    big: Path  # wheel with 5 MiB of incompressible data (for the full-disk test)
    setup_project: Path  # a directory with setup.py (package wfpkg), for --setup_file


def build_packages(root: Path) -> JobPackages:
    import os

    project = root / "setup-project"
    (project / "wfpkg").mkdir(parents=True)
    (project / "wfpkg" / "__init__.py").write_text('VALUE = "wfpkg-1.0"\n')
    (project / "setup.py").write_text(
        "from setuptools import setup\n"
        "setup(name='wfpkg', version='1.0', packages=['wfpkg'])\n")
    return JobPackages(
        mypkg=build_sdist(root, "mypkg", "0.1", requires=("six",)),
        tiny1=make_wheel(root / "v1", "tinypkg", "1.0"),
        tiny2=make_wheel(root / "v2", "tinypkg", "2.0"),
        reqpkg=make_wheel(root / "req-cache", "reqpkg", "2.0"),
        needy=make_wheel(root / "needy", "needy", "1.0", requires=("nosuchdep==9.9",)),
        big=make_wheel(root / "big", "bigpkg", "1.0", files={"blob.bin": os.urandom(5 << 20)}),
        setup_project=project,
    )


class _Provision(beam_provision_api_pb2_grpc.ProvisionServiceServicer):
    def __init__(self, info: beam_provision_api_pb2.ProvisionInfo) -> None:
        self.info = info

    def GetProvisionInfo(self, request: Any, context: Any) -> Any:
        return beam_provision_api_pb2.GetProvisionInfoResponse(info=self.info)


class StandInRunner:
    """A runner's provision endpoint (and control/logging addresses) on a free port."""

    def __init__(self, dependencies: list[Any], artifact_endpoint: str) -> None:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"
        me = endpoints_pb2.ApiServiceDescriptor(url=self.address)
        info = beam_provision_api_pb2.ProvisionInfo(
            dependencies=dependencies, control_endpoint=me, logging_endpoint=me,
            artifact_endpoint=endpoints_pb2.ApiServiceDescriptor(url=artifact_endpoint))
        beam_provision_api_pb2_grpc.add_ProvisionServiceServicer_to_server(
            _Provision(info), self._server)
        self._server.start()

    def start_worker(self, sidecar: str, worker_id: str, timeout: float = 180.0,
                     params: dict[str, str] | None = None) -> str:
        """One StartWorker at ``sidecar`` for this 'runner'; returns its error ('' if none)."""
        request = beam_fn_api_pb2.StartWorkerRequest(
            worker_id=worker_id, params=params or {},
            provision_endpoint=endpoints_pb2.ApiServiceDescriptor(url=self.address))
        with grpc.insecure_channel(sidecar) as channel:
            stub = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel)
            return str(stub.StartWorker(request, timeout=timeout).error)

    def stop(self) -> None:
        self._server.stop(grace=None).wait(10)


MAIN_SESSION_JOB = textwrap.dedent('''\
    """A pipeline whose DoFn uses a name imported only in __main__ (needs the main session)."""
    import sys

    import apache_beam as beam
    import json as jsonlib  # the name the worker must get from the pickled main session
    from apache_beam.options.pipeline_options import PipelineOptions


    def encode(element):
        return jsonlib.dumps({"n": element})


    def write(line, out=sys.argv[1]):
        with open(out, "a") as f:
            f.write(line + "\\n")


    if __name__ == "__main__":
        with beam.Pipeline(options=PipelineOptions(sys.argv[2:])) as p:
            _ = p | beam.Create([1, 2]) | beam.Map(encode) | beam.Map(write)
    ''')


def write_main_session_job(folder: Path) -> Path:
    path = folder / "main_session_job.py"
    path.write_text(MAIN_SESSION_JOB)
    return path
