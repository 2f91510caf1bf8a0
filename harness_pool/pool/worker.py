"""The pooled worker agent: one process, warm in advance, one assignment, then exit.

Run by the sidecar's supervisor as
``python -m harness_pool.pool.worker --sidecar HOST:PORT --pool-id ID --flavor beam
--token-stdin`` (the spawn secret is the first line of stdin), or forked by the
fork server with the secret in memory.

Life: import Beam (and PyFlink's operations for the ``pyflink`` flavour) →
attach to the sidecar's ``WorkerRegistry.Attach`` (its internal worker port)
with the pool id in the ``worker_id`` header and say Hello with the spawn
secret → wait → on the one Assignment: apply
``params`` (environment, ``PYTHONPATH``, ``_PYTHON_WORKING_DIR``), read
pipeline options from the provision info, set ``WORKER_ID`` to the runner's
id (the Python SDK's state channel reads its header from that variable), build
Beam's SDK harness with ``sdk_worker_main.create_harness`` → Ready → run it
until the runner closes the control stream → Finished → exit.

Threads: the main thread owns the harness; gRPC's own threads carry the
Attach stream, whose outgoing events go through ``_Events``. If the sidecar
goes away while the worker is idle, the worker exits (no orphans); a worker
already serving a stage finishes it first.

Leaving never hangs: when the harness returns, the stage's logging is taken
apart in an order that cannot deadlock (``end_logging``: PyFlink's
print/stdout/stderr redirection undone, Beam's Fn API log handler taken off
the root logger, then closed by a daemon thread joined for at most
``LOG_CLOSE_TIMEOUT``), and the process leaves with ``os._exit`` without
``logging.shutdown`` (which would wait on that handler's lock). A failure is
reported as one line naming the exception's type and message
(``describe_error``), never a traceback; the traceback goes to the local log.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any, NoReturn

_T0 = time.monotonic()

import grpc  # noqa: E402

from harness_pool._errors import clip  # noqa: E402
from harness_pool.pool import jobenv  # noqa: E402
from harness_pool.v1 import pool_pb2, pool_pb2_grpc  # noqa: E402

_LOG = logging.getLogger("harness_pool.worker")

#: Seconds the worker waits for Beam's Fn API log handler to close (flush its queue to
#: the runner's logging service, end its reader thread). Its own ``close()`` waits
#: without a bound; after a vanished runner the reader needs about 0.5 s to give up.
LOG_CLOSE_TIMEOUT = 3.0
#: Longest failure text a worker reports (``describe_error``).
MAX_CAUSE_CHARS = 300


def _import_harness(flavor: str) -> Any:
    """Imports everything a stage will need, so that an assignment costs no imports."""
    # Beam's operations and coders register themselves on import; import the
    # heavy parts now, while warming, rather than when the first bundle arrives.
    import apache_beam.runners.worker.bundle_processor
    import apache_beam.transforms.core  # noqa: F401
    from apache_beam.portability.api import beam_provision_api_pb2, endpoints_pb2  # noqa: F401
    from apache_beam.runners.worker import sdk_worker_main

    if flavor == "pyflink":
        # Registers PyFlink's operations and coders with Beam's bundle processor
        # and patches Beam's state cache the way PyFlink's own boot does.
        from pyflink.fn_execution.beam import beam_sdk_worker_main  # noqa: F401
    return sdk_worker_main


class _Events:
    """The worker's outgoing half of the Attach stream."""

    def __init__(self) -> None:
        self._q: queue.Queue[pool_pb2.WorkerEvent | None] = queue.Queue()

    def send(self, **kwargs: Any) -> None:
        self._q.put(pool_pb2.WorkerEvent(**kwargs))

    def close(self) -> None:
        self._q.put(None)

    def __iter__(self) -> Iterator[pool_pb2.WorkerEvent]:
        while True:
            event = self._q.get()
            if event is None:
                return
            yield event


def _apply_params(params: dict[str, str]) -> None:
    """Applies StartWorkerRequest.params as PyFlink's boot would in this process."""
    if "PYTHONPATH" in params:
        for path in reversed([p for p in params["PYTHONPATH"].split(os.pathsep) if p]):
            sys.path.insert(0, path)
    if params.get("_PYTHON_WORKING_DIR"):
        os.chdir(params["_PYTHON_WORKING_DIR"])
    os.environ.update(params)


def harness_environment(assignment: pool_pb2.Assignment, semi_dir: str) -> dict[str, str]:
    """The environment ``sdk_worker_main.create_harness`` reads, as Beam's boot would set it."""
    from apache_beam.portability.api import beam_provision_api_pb2, endpoints_pb2
    from google.protobuf import json_format, text_format

    info = beam_provision_api_pb2.ProvisionInfo()
    if assignment.provision_info:
        info.ParseFromString(assignment.provision_info)
    control = assignment.control_endpoint or info.control_endpoint.url
    logging_url = assignment.logging_endpoint or info.logging_endpoint.url
    status = assignment.status_endpoint or info.status_endpoint.url
    env = dict(os.environ)
    env.update(
        WORKER_ID=assignment.runner_worker_id,
        PIPELINE_OPTIONS=json_format.MessageToJson(info.pipeline_options)
        if info.HasField("pipeline_options") else "{}",
        # Always the worker's private directory, where prepare() staged the job's files:
        # PyFlink sends /tmp for every worker, which would mix their main sessions.
        SEMI_PERSISTENT_DIRECTORY=semi_dir,
        CONTROL_API_SERVICE_DESCRIPTOR=text_format.MessageToString(
            endpoints_pb2.ApiServiceDescriptor(url=control)
        ),
        RUNNER_CAPABILITIES=" ".join(info.runner_capabilities),
    )
    if logging_url:
        env["LOGGING_API_SERVICE_DESCRIPTOR"] = text_format.MessageToString(
            endpoints_pb2.ApiServiceDescriptor(url=logging_url)
        )
    if status:
        env["STATUS_API_SERVICE_DESCRIPTOR"] = text_format.MessageToString(
            endpoints_pb2.ApiServiceDescriptor(url=status)
        )
    return env


class _PyflinkStdio:
    """PyFlink's print/stdout/stderr redirection to logging, as its boot installs it, and
    its undoing (``close``)."""

    def __init__(self) -> None:
        import builtins
        from functools import partial

        from pyflink.fn_execution.beam import beam_sdk_worker_main as pf

        local = logging.StreamHandler(os.fdopen(os.dup(2), "w", buffering=1))
        for old in logging.getLogger().handlers[:1]:
            local.setFormatter(old.formatter)
            for f in old.filters:
                local.addFilter(f)
        root = logging.getLogger()
        self._print = builtins.print
        sys.stdout.write = partial(pf.print_to_logging, root.info)  # type: ignore[method-assign]
        sys.stderr.write = partial(pf.print_to_logging, root.error)  # type: ignore[method-assign]
        self._custom = pf.CustomPrint(print)
        builtins.print = self._custom.print
        root.handlers = [local]

    def close(self) -> None:
        """Flushes a pending partial line (still to logging), then restores print, stdout
        and stderr: from here on a write to stderr is a write to stderr, not a log record
        that needs a handler's lock."""
        import builtins

        try:
            self._custom.close()
        finally:
            builtins.print = self._print
            for stream in (sys.stdout, sys.stderr):
                vars(stream).pop("write", None)  # the instance attribute set above


def _pyflink_stdio() -> _PyflinkStdio:
    """Routes print/stdout/stderr to logging (hence to the runner) as PyFlink's boot does.

    A local copy of the logs goes to a duplicate of the original stderr, which the
    redirection does not touch. ``close()`` undoes it.
    """
    return _PyflinkStdio()


def end_logging(handler: logging.Handler | None, stdio: _PyflinkStdio | None,
                timeout: float = LOG_CLOSE_TIMEOUT) -> bool:
    """Ends a stage's logging without ever hanging; True when the handler closed in time.

    Beam's ``FnApiLogRecordHandler.close()`` takes the handler's lock and joins its
    reader thread with no timeout; that thread, seeing the logging stream broken (the
    runner gone), prints to stderr. Redirected to logging, that print needs the same
    lock: a deadlock. So: undo the redirection, take the handler off the root logger,
    and only then close it, in a daemon thread joined for at most ``timeout``.
    """
    if stdio is not None:
        stdio.close()
    if handler is None:
        return True
    logging.getLogger().removeHandler(handler)
    closer = threading.Thread(target=handler.close, name="hp-close-fn-log", daemon=True)
    closer.start()
    closer.join(timeout)
    if closer.is_alive():
        _LOG.warning("Beam's Fn API log handler did not close within %.0fs (the runner's "
                     "logging service is gone?); leaving without it", timeout)
        return False
    return True


def describe_error(exc: BaseException, limit: int = MAX_CAUSE_CHARS) -> str:
    """One line naming an exception: its type and the first line of its message (a gRPC
    error: its status code and details), at most ``limit`` characters."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    text = ""
    if isinstance(exc, grpc.RpcError) and callable(code) and callable(details):
        try:
            status = code()
            text = f"gRPC {getattr(status, 'name', status)}: {details()}"
        except Exception:  # a half-built RpcError: fall back to its type and message
            text = ""
    if not text:
        message = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return clip(" ".join(text.split()), limit)


def semi_dir_prefix(runner_worker_id: str) -> str:
    """A temp-dir name prefix from a runner's id: one path component, safe characters."""
    return "harness-pool-" + re.sub(r"[^A-Za-z0-9._-]", "_", runner_worker_id)[:40] + "-"


def serve_assignment(
    sdk_worker_main: Any, assignment: pool_pb2.Assignment, flavor: str, events: _Events
) -> str:
    """Runs the SDK harness for one stage; returns a one-line error, empty on success."""
    semi_dir = tempfile.mkdtemp(prefix=semi_dir_prefix(assignment.runner_worker_id))
    stage_env: jobenv.StageEnvironment | None = None
    stdio: _PyflinkStdio | None = None
    fn_log_handler: logging.Handler | None = None
    try:
        try:
            t0 = time.monotonic()
            # Job dependencies (issue 9): staged, installed once per pod, first on sys.path.
            stage_env = jobenv.prepare_stage(
                assignment, semi_dir,
                lambda n: events.send(preparing=pool_pb2.Preparing(artifacts=n)))
            stage_env.activate()
            _apply_params(dict(assignment.params))
            env = harness_environment(assignment, semi_dir)
            os.environ.update(env)  # the state channel reads WORKER_ID from here
            if flavor == "pyflink":
                stdio = _pyflink_stdio()
            t1 = time.monotonic()
            fn_log_handler, harness, _options = sdk_worker_main.create_harness(env)
            _LOG.info("stage %s: harness connected in %.1f ms (params %.1f ms, harness %.1f ms)",
                      assignment.runner_worker_id, (time.monotonic() - t0) * 1000,
                      (t1 - t0) * 1000, (time.monotonic() - t1) * 1000)
        except Exception as exc:  # report, then exit: the process is spent either way
            kind = jobenv.failure_kind(exc)
            # A dependency error is a whole message written for the user (package, both
            # versions, what to do); anything else is named in one line.
            reason = clip(jobenv.failure_reason(exc)) if kind else describe_error(exc)
            _LOG.error("start failed for stage %s: %s", assignment.runner_worker_id, reason,
                       exc_info=not kind)
            events.send(start_failed=pool_pb2.StartFailed(reason=reason, kind=kind))
            return reason
        events.send(ready=pool_pb2.Ready(prepare=stage_env.report))
        error = ""
        try:
            harness.run()
        except Exception as exc:
            error = describe_error(exc)
            _LOG.error("harness for stage %s failed: %s", assignment.runner_worker_id, error,
                       exc_info=True)
        return error
    finally:
        end_logging(fn_log_handler, stdio)
        if stage_env is not None:
            stage_env.close()  # the environment may be evicted again
        shutil.rmtree(semi_dir, ignore_errors=True)


def run(sidecar: str, pool_id: str, flavor: str, token: str, started_at: float = _T0) -> int:
    """Attach, wait for the one assignment, serve it; returns the exit code.

    ``started_at`` is when this worker's life began (process start, or the
    fork from the fork server), for the warm-up time the sidecar records.
    """
    sdk_worker_main = _import_harness(flavor)  # a no-op after a fork: already imported
    from apache_beam.version import __version__ as beam_version

    channel = grpc.insecure_channel(sidecar)
    prewarm(sdk_worker_main)
    warm = time.monotonic() - started_at
    stub = pool_pb2_grpc.WorkerRegistryStub(channel)
    events = _Events()
    events.send(hello=pool_pb2.Hello(
        pid=os.getpid(), flavor=flavor, warm_seconds=warm, beam_version=beam_version,
        token=token,
    ))
    call = stub.Attach(iter(events), metadata=(("worker_id", pool_id),))
    code = 0
    try:
        assignment = next(call, None)
    except grpc.RpcError as exc:
        _LOG.error("worker %s: sidecar %s refused attach or went away: %s %s", pool_id,
                   sidecar, exc.code(), exc.details())
        return 3
    if assignment is None:
        _LOG.info("worker %s: released by the sidecar without an assignment", pool_id)
        return 0
    _LOG.info("worker %s: serving stage %s", pool_id, assignment.runner_worker_id,
              extra={"pool_id": pool_id, "runner_worker_id": assignment.runner_worker_id})
    error = serve_assignment(sdk_worker_main, assignment, flavor, events)
    events.send(finished=pool_pb2.Finished(error=error))
    events.close()
    try:
        for _ in call:  # let the sidecar see Finished before the stream ends
            pass
    except grpc.RpcError:
        pass
    channel.close()
    code = 1 if error else 0
    return code


def prewarm(sdk_worker_main: Any) -> None:
    """Pays this process's first-call costs while it is idle, not when a stage waits.

    After a fork, Beam's ``create_harness`` costs about three times what it costs on
    a second call (caches, argparse's locale lookups, first-use state; measured in
    bench/bench_soak.py). A dry run (``dry_run=True``: pipeline options parsed, no
    channel, no harness) with default options pays them now; cloudpickle, so that no
    main session is looked for. Its side effects (root log level, runtime options,
    pickler) are set again by the stage's own call; the log level is restored here.
    Never fatal: a failure only costs the speed-up.
    """
    root = logging.getLogger()
    level = root.level
    try:
        sdk_worker_main.create_harness(
            {"PIPELINE_OPTIONS": '{"options": {"pickle_library": "cloudpickle"}}',
             "CONTROL_API_SERVICE_DESCRIPTOR": 'url: "localhost:0"'}, dry_run=True)
    except Exception as exc:
        _LOG.warning("pre-warming Beam's harness set-up failed (stages start a little "
                     "slower): %s", describe_error(exc))
    finally:
        root.setLevel(level)


def _quiet_beam(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not record.name.startswith("apache_beam")


def main(argv: list[str] | None = None) -> NoReturn:
    parser = argparse.ArgumentParser(
        prog="harness-pool worker",
        description="A pooled SDK worker (started by 'harness-pool serve', not by hand).",
    )
    parser.add_argument("--sidecar", required=True, help="HOST:PORT of the sidecar")
    parser.add_argument("--pool-id", required=True, help="this process's pool worker id")
    parser.add_argument("--flavor", choices=("beam", "pyflink"), default="beam")
    parser.add_argument("--token-stdin", action="store_true",
                        help="read the spawn secret from the first line of stdin")
    args = parser.parse_args(argv)
    setup_logging(args.pool_id)
    token = sys.stdin.readline().strip() if args.token_stdin else ""
    exit_now(run(args.sidecar, args.pool_id, args.flavor, token))


def setup_logging(pool_id: str) -> None:
    """The local copy of the logs (the sidecar's stderr), with Beam's own chatter at
    WARNING; everything still travels to the runner's logging service."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s %(levelname)s [{pool_id}] %(name)s: %(message)s"))
    handler.addFilter(_quiet_beam)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def exit_now(code: int) -> NoReturn:
    """Beam's harness leaves non-daemon executor threads behind; the process has
    served its one assignment, so leave without waiting for them.

    Not ``logging.shutdown()``: it takes the lock of every handler ever made, Beam's
    Fn API log handler included, which a stuck close may still hold. Only the root
    logger's handlers (the local copy) are flushed.
    """
    for handler in list(logging.getLogger().handlers):
        try:
            handler.flush()
        except Exception:  # leaving anyway
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
