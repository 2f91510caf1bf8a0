"""Helpers shared by benchmarks (and tests): a minimal runner, process figures.

``MiniRunner`` is the runner side of a stage and nothing more: real gRPC
control and logging servers on a free port. It records when each worker's
Control stream arrives (by ``worker_id`` header) and holds that stream open
until ``release``; ``start_worker`` sends a real StartWorker naming it.
``proc_figures`` reads a process's (and its descendants') RSS, fds, threads.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent import futures
from typing import Any

import grpc
from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc, endpoints_pb2


class MiniRunner:
    """Control and logging servers: records when each worker's Control stream arrives."""

    def __init__(self, threads: int = 64) -> None:
        self.arrived: dict[str, float] = {}
        self._cond = threading.Condition()
        self._released: set[str] = set()
        self._stopped = False
        runner = self

        class Control(beam_fn_api_pb2_grpc.BeamFnControlServicer):
            def Control(self, request_iterator: Any, context: Any) -> Any:
                wid = dict(context.invocation_metadata()).get("worker_id", "")
                with runner._cond:
                    runner.arrived[wid] = time.perf_counter()
                    runner._cond.notify_all()
                    while (wid not in runner._released and not runner._stopped
                           and context.is_active()):
                        runner._cond.wait(0.5)
                return iter(())

        class Logging(beam_fn_api_pb2_grpc.BeamFnLoggingServicer):
            def Logging(self, request_iterator: Any, context: Any) -> Any:
                for _ in request_iterator:
                    pass
                return iter(())

        self.server = grpc.server(futures.ThreadPoolExecutor(threads))
        beam_fn_api_pb2_grpc.add_BeamFnControlServicer_to_server(Control(), self.server)
        beam_fn_api_pb2_grpc.add_BeamFnLoggingServicer_to_server(Logging(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def request(self, worker_id: str, **params: str) -> beam_fn_api_pb2.StartWorkerRequest:
        url = endpoints_pb2.ApiServiceDescriptor(url=self.address)
        return beam_fn_api_pb2.StartWorkerRequest(
            worker_id=worker_id, control_endpoint=url, logging_endpoint=url, params=params)

    def start_worker(self, sidecar: str, worker_id: str, timeout: float = 60.0,
                     **params: str) -> beam_fn_api_pb2.StartWorkerResponse:
        with grpc.insecure_channel(sidecar) as channel:
            stub = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel)
            return stub.StartWorker(self.request(worker_id, **params), timeout=timeout)

    def wait_arrived(self, worker_id: str, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while worker_id not in self.arrived:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def release(self, worker_id: str) -> None:
        """Ends that worker's control stream: the stage is over, the worker exits."""
        with self._cond:
            self._released.add(worker_id)
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self.server.stop(0).wait()


def stop_worker(sidecar: str, worker_id: str, timeout: float = 30.0) -> str:
    with grpc.insecure_channel(sidecar) as channel:
        stub = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel)
        return stub.StopWorker(beam_fn_api_pb2.StopWorkerRequest(worker_id=worker_id),
                               timeout=timeout).error


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), from /proc."""
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        ppid = int(raw[raw.rfind(b")") + 2:].split()[1])
        parents.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def proc_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return ""
    return raw[raw.rfind(b")") + 2:].split()[0].decode()


def proc_figures(pid: int) -> dict[str, int]:
    """RSS (KiB), open fds and threads of ``pid``; processes and zombies below it."""
    figures = {"rss_kib": 0, "fds": 0, "threads": 0}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                figures["rss_kib"] = int(line.split()[1])
            elif line.startswith("Threads:"):
                figures["threads"] = int(line.split()[1])
    figures["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    below = descendants(pid)
    figures["processes"] = len(below)
    figures["zombies"] = sum(1 for p in below if proc_state(p) == "Z")
    return figures
