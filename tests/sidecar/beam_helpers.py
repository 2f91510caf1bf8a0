"""Running real Beam pipelines against a sidecar: FnApiRunner and PortableRunner."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability import fn_api_runner, local_job_service, portable_runner
from apache_beam.transforms import environments

RUNNERS = ("fn_api", "portable")


@contextlib.contextmanager
def pipeline(address: str, runner: str = "fn_api", extra: list[str] | None = None
             ) -> Iterator[beam.Pipeline]:
    """A pipeline whose SDK workers come from the sidecar at ``address``; runs on exit."""
    args = ["--environment_type=EXTERNAL", f"--environment_config={address}", *(extra or [])]
    if runner == "fn_api":
        # FnApiRunner ignores --environment_type; it takes the environment directly.
        r = fn_api_runner.FnApiRunner(
            default_environment=environments.ExternalEnvironment(address))
        with beam.Pipeline(runner=r, options=PipelineOptions(args)) as p:
            yield p
        return
    job_service = local_job_service.LocalJobServicer()
    port = job_service.start_grpc_server(0)
    try:
        options = PipelineOptions([f"--job_endpoint=localhost:{port}", *args])
        with beam.Pipeline(runner=portable_runner.PortableRunner(), options=options) as p:
            yield p
    finally:
        job_service.stop()


def run(address: str, build: Callable[[beam.Pipeline], None], runner: str = "fn_api",
        extra: list[str] | None = None) -> None:
    with pipeline(address, runner, extra) as p:
        build(p)
