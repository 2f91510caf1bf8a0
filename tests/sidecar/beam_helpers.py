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


class _Gate(beam.DoFn):
    """Writes this worker's pid into ``folder``, then waits until ``folder/release`` exists
    or ``need`` pid files are there (a cross-process barrier), and emits the pid. With
    ``burn`` it waits busy, spending CPU all the time (a CPU-heavy UDF)."""

    def __init__(self, folder: str, need: int = 0, hold: float = 0.0,
                 burn: bool = False) -> None:
        self.folder = folder
        self.need = need
        self.hold = hold
        self.burn = burn

    def process(self, element):
        import os
        import time

        pid = os.getpid()
        with open(os.path.join(self.folder, f"pid-{pid}"), "w") as f:
            f.write(str(pid))
        deadline = time.time() + 60
        while time.time() < deadline:
            if os.path.exists(os.path.join(self.folder, "release")):
                break
            if self.need and len([n for n in os.listdir(self.folder)
                                  if n.startswith("pid-")]) >= self.need:
                break
            if self.burn:
                spent = time.process_time()
                while time.process_time() - spent < 0.02:
                    pass
            else:
                time.sleep(0.02)
        time.sleep(self.hold)
        yield pid


class BackgroundJob:
    """A pipeline running in a thread whose one stage blocks in ``_Gate``."""

    def __init__(self, address: str, folder: str, need: int = 0, runner: str = "fn_api",
                 hold: float = 0.0, burn: bool = False) -> None:
        import threading

        self.folder = folder
        self.error: BaseException | None = None

        def body() -> None:
            def build(p: beam.Pipeline) -> None:
                # The shuffle after the gate gives the gated stage an output, so
                # the runner reads the stage's data stream: Beam's Python runner
                # notices a dead worker there (it does not on the control stream).
                _ = (p | beam.Create([1]) | beam.ParDo(_Gate(folder, need, hold, burn))
                     | beam.Map(lambda pid: (pid, 1)) | beam.GroupByKey())

            try:
                run(address, build, runner)
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=body, daemon=True)
        self.thread.start()

    def wait_started(self, timeout: float = 60.0) -> list[int]:
        """Pids of workers that entered the gate (in this job's folder)."""
        import time

        deadline = time.time() + timeout
        while time.time() < deadline:
            if gate_pids(self.folder):
                return gate_pids(self.folder)
            time.sleep(0.02)
        raise AssertionError("the gated stage never started")

    def release(self) -> None:
        import os

        open(os.path.join(self.folder, "release"), "w").close()

    def join(self, timeout: float = 60.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "pipeline did not finish"


def gate_pids(folder: str) -> list[int]:
    """Pids of the worker processes that entered a ``_Gate`` using ``folder``."""
    import os

    return sorted(int(n[4:]) for n in os.listdir(folder) if n.startswith("pid-"))
