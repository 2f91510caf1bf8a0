"""A fault-injecting HTTP proxy, to put in front of a real peer (the Flink REST API).

It forwards every request to ``upstream`` and can, per request, break the
exchange the way networks and overloaded peers do:

- ``RESET_BEFORE``: the client's connection is reset; the request never arrives.
- ``RESET_AFTER``: the request arrives and is executed; the connection is reset
  instead of answering (the client cannot know whether it happened).
- ``ERROR_500``: a 500 answer without forwarding.
- ``HTML_200``: a 200 answer with an HTML page (a captive proxy, a load balancer's
  error page) without forwarding.
- ``SLOW``: forwarded at once, the answer held back ``delay`` seconds (a client
  with a shorter timeout gives up while the request is executed).
- ``TRUNCATE``: forwarded; the answer's headers promise the whole body, half of
  it is sent, then the connection closes.

Faults come from ``rules`` (method + path pattern, a number of times) and, with
``rate > 0``, at random from a seeded generator, so a run can be repeated.
``forwarded`` records every request that reached the upstream, with the time it
was sent; ``wait_forwarded`` lets a test act (kill the client) at a chosen moment
after a request went out. Threads: one per connection (``ThreadingHTTPServer``);
the lists are guarded by ``lock``.
"""

from __future__ import annotations

import enum
import http.client
import random
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from harness_pool.testing._http import HttpFake

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
              "te", "trailer", "host", "content-length"}
HTML = b"<html><head><title>502 Bad Gateway</title></head><body>upstream hiccup</body></html>"


class Fault(str, enum.Enum):
    RESET_BEFORE = "reset-before"
    RESET_AFTER = "reset-after"
    ERROR_500 = "500"
    HTML_200 = "html-200"
    SLOW = "slow"
    TRUNCATE = "truncate"

    @property
    def forwards(self) -> bool:
        return self in (Fault.RESET_AFTER, Fault.SLOW, Fault.TRUNCATE)


@dataclass
class Rule:
    method: str
    path: str
    """A regular expression matched against the request path (without the query)."""
    fault: Fault
    times: int = 1
    """How many matching requests it applies to (-1: all)."""
    delay: float = 0.0
    """SLOW: how long the answer is held back."""

    def matches(self, method: str, path: str) -> bool:
        return self.times != 0 and method == self.method and re.search(self.path, path) is not None


@dataclass(frozen=True)
class Forwarded:
    method: str
    path: str
    at: float
    """``time.monotonic()`` when the request was sent upstream."""


class FaultProxy(HttpFake):
    def __init__(self, upstream: str, rate: float = 0.0, seed: int = 0,
                 faults: tuple[Fault, ...] = tuple(Fault), slow_delay: float = 3.0,
                 timeout: float = 120.0) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rate, self.random, self.faults = rate, random.Random(seed), faults
        self.slow_delay, self.timeout = slow_delay, timeout
        self.rules: list[Rule] = []
        self.forwarded: list[Forwarded] = []
        self.injected: list[tuple[str, str, Fault]] = []
        self.lock = threading.Lock()
        self._sent = threading.Condition(self.lock)
        super().__init__(self._handler(), "fault-proxy")

    def add(self, rule: Rule) -> Rule:
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()
            self.rate = 0.0

    def wait_forwarded(self, method: str, path: str, since: int = 0,
                       timeout: float = 120.0) -> Forwarded:
        """The first request matching ``method``/``path`` forwarded at index >= ``since``."""
        deadline = time.monotonic() + timeout
        with self._sent:
            while True:
                for sent in self.forwarded[since:]:
                    if sent.method == method and re.search(path, sent.path):
                        return sent
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {method} {path} forwarded within {timeout:.0f} s")
                self._sent.wait(left)

    def _choose(self, method: str, path: str) -> tuple[Fault | None, float]:
        with self.lock:
            for rule in self.rules:
                if rule.matches(method, path):
                    rule.times -= 1 if rule.times > 0 else 0
                    self.injected.append((method, path, rule.fault))
                    return rule.fault, rule.delay
            if self.rate and self.random.random() < self.rate:
                fault = self.random.choice(self.faults)
                self.injected.append((method, path, fault))
                return fault, self.slow_delay
        return None, 0.0

    def _forward(self, method: str, target: str, headers: dict[str, str],
                 body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=self.timeout)
        try:
            with self._sent:
                self.forwarded.append(Forwarded(method, target.split("?", 1)[0],
                                                time.monotonic()))
                self._sent.notify_all()
            conn.request(method, target, body=body or None, headers=headers)
            answer = conn.getresponse()
            return answer.status, answer.reason, answer.getheaders(), answer.read()
        finally:
            conn.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _reset(self) -> None:
                """Abort the connection with a TCP RST (SO_LINGER 0), answer nothing."""
                self.close_connection = True
                try:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.connection.close()
                except OSError:
                    pass
                self.wfile = _Discard()  # type: ignore[assignment]

            def _answer(self, status: int, reason: str, headers: list[tuple[str, str]],
                        body: bytes, send: bytes | None = None) -> None:
                self.send_response(status, reason)
                for key, value in headers:
                    if key.lower() not in HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body if send is None else send)

            def _proxy(self) -> None:
                path = self.path.split("?", 1)[0]
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault, delay = proxy._choose(self.command, path)
                if fault is Fault.RESET_BEFORE:
                    return self._reset()
                if fault is Fault.ERROR_500:
                    return self._answer(500, "Internal Server Error",
                                        [("Content-Type", "application/json")],
                                        b'{"errors": ["injected failure"]}')
                if fault is Fault.HTML_200:
                    return self._answer(200, "OK", [("Content-Type", "text/html")], HTML)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                try:
                    status, reason, got, answer = proxy._forward(self.command, self.path,
                                                                 headers, body)
                except OSError:
                    return self._reset()
                if fault is Fault.RESET_AFTER:
                    return self._reset()
                if fault is Fault.SLOW:
                    time.sleep(delay)
                if fault is Fault.TRUNCATE and len(answer) > 1:
                    return self._answer(status, reason, got, answer, answer[: len(answer) // 2])
                self._answer(status, reason, got, answer)

            def do_GET(self) -> None:
                self._proxy()

            def do_POST(self) -> None:
                self._proxy()

            def do_PATCH(self) -> None:
                self._proxy()

            def do_PUT(self) -> None:
                self._proxy()

            def do_DELETE(self) -> None:
                self._proxy()

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except (BrokenPipeError, ConnectionResetError, OSError):
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


class _Discard:
    closed = True

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
