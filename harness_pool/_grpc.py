"""gRPC seams shared by the sidecar's and the proxy's servicers.

- the ``worker_id`` header name and how to read a header;
- the one mapping from an error's ``code`` attribute to a ``grpc.StatusCode``
  (unknown names map to UNKNOWN: a programming error, not a caller's);
- ``GrpcCaller``: a servicer context seen as the ``Caller`` of a wait (its
  deadline and cancellation), see ``harness_pool.pool.dispatch``;
- ``Watchdog``: one thread that cancels RPCs whose first message (or a pending
  send) is overdue, so a client that opens a stream and never sends (or never
  reads) cannot hold a server thread for longer than a bound;
- ``server_options``: the limits every listener of the sidecar shares.

Threads and locks: ``Watchdog`` owns one daemon thread and one condition; it
calls ``context.cancel()`` outside its lock. Nothing else here keeps state.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from harness_pool._errors import HarnessPoolError, clip

WORKER_ID_HEADER = "worker_id"

T = TypeVar("T")


def header(context: grpc.ServicerContext, name: str = WORKER_ID_HEADER) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value if isinstance(value, str) else value.decode(errors="replace")
    return None


def status_of(exc: HarnessPoolError) -> grpc.StatusCode:
    """The status code an error's ``code`` attribute names; UNKNOWN if it names none."""
    code = getattr(grpc.StatusCode, str(getattr(exc, "code", "UNKNOWN")), None)
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def abort(context: grpc.ServicerContext, exc: HarnessPoolError) -> None:
    """Ends the call with the status ``exc`` names and its (bounded) message; raises."""
    context.abort(status_of(exc), clip(str(exc)))


class GrpcCaller:
    """A servicer context as a ``Caller``: active until cancelled or past its deadline."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context

    def active(self) -> bool:
        return bool(self._context.is_active())

    def remaining(self) -> float | None:
        return self._context.time_remaining()

    def on_end(self, callback: Callable[[], None]) -> None:
        self._context.add_callback(callback)


class Watchdog:
    """Cancels armed RPCs whose time is up. One thread for any number of RPCs."""

    def __init__(self, name: str = "hp-watchdog") -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, Any] = {}
        self._seq = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def arm(self, context: grpc.RpcContext, timeout: float) -> int:
        """Cancels ``context`` after ``timeout`` seconds unless ``disarm`` comes first."""
        ticket = next(self._seq)
        with self._cond:
            self._armed[ticket] = context
            heapq.heappush(self._heap, (time.monotonic() + timeout, ticket))
            self._cond.notify()
        return ticket

    def disarm(self, ticket: int) -> bool:
        """True if the RPC was still armed (not cancelled by the watchdog)."""
        with self._cond:
            return self._armed.pop(ticket, None) is not None

    def first(self, iterator: Iterator[T], context: grpc.RpcContext, timeout: float
              ) -> T | None:
        """The first message of a request stream, or None if the stream ended or no
        message came within ``timeout`` (the RPC is then cancelled)."""
        ticket = self.arm(context, timeout)
        try:
            return next(iterator)
        except (StopIteration, grpc.RpcError):
            return None
        finally:
            self.disarm(ticket)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            due: list[Any] = []
            with self._cond:
                if self._stopped:
                    return
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, ticket = heapq.heappop(self._heap)
                    context = self._armed.pop(ticket, None)
                    if context is not None:
                        due.append(context)
                if not due:
                    wait = self._heap[0][0] - now if self._heap else None
                    self._cond.wait(wait)
                    continue
            for context in due:
                try:
                    context.cancel()
                except Exception:  # a finished call cannot be cancelled
                    pass


def server_options(max_message_bytes: int, keepalive_time: float, keepalive_timeout: float
                   ) -> list[tuple[str, int]]:
    """Limits shared by every listener: message size, keepalive, per-connection streams.

    Keepalive: the server pings an idle connection every ``keepalive_time`` and closes
    it when no answer comes within ``keepalive_timeout`` (a frozen or vanished peer
    releases its streams). Clients may ping every 10 s without data (Beam's channels
    ping every 20 s); a client that pings faster is told to go away.
    """
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", int(keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive_timeout * 1000)),
        # grpc 1.65 times its keepalive pings out with this, not keepalive_timeout_ms
        ("grpc.http2.ping_timeout_ms", int(keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),  # keep pinging a silent stream
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.max_concurrent_streams", 100),
    ]


_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_H2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _host_port(url: str) -> tuple[str, int] | None:
    """(host, port) of a plain ``host:port`` / ``[v6]:port`` endpoint; None otherwise."""
    host, sep, port = url.rpartition(":")
    if not sep or not port.isdigit() or "/" in url:
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def http2_answers(url: str, timeout: float, active: Callable[[], bool] = lambda: True
                  ) -> bool:
    """Whether the server at ``url`` completes an HTTP/2 handshake (sends its SETTINGS)
    within ``timeout``; stops early, False, once ``active()`` turns False.

    A raw socket, not a gRPC channel: grpc-python reports channel readiness by
    polling every 0.2 s, which would add that much to every StartWorker.
    Endpoints that are not ``host:port`` fall back to a gRPC channel.
    """
    target = _host_port(url)
    deadline = time.monotonic() + timeout
    if target is None:
        with grpc.insecure_channel(url) as channel:
            future = grpc.channel_ready_future(channel)
            while time.monotonic() < deadline and active():
                try:
                    future.result(timeout=min(0.25, max(0.0, deadline - time.monotonic())))
                    return True
                except grpc.FutureTimeoutError:
                    continue
            future.cancel()
        return False
    while time.monotonic() < deadline and active():
        try:
            with socket.create_connection(target, timeout=min(1.0, timeout)) as sock:
                sock.sendall(_H2_PREFACE + _H2_EMPTY_SETTINGS)
                while time.monotonic() < deadline and active():
                    sock.settimeout(min(0.25, max(0.001, deadline - time.monotonic())))
                    try:
                        head = sock.recv(9)
                    except TimeoutError:
                        continue
                    return len(head) >= 4 and head[3] == 0x4  # a SETTINGS frame
                return False
        except OSError:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))  # refused: retry
    return False
