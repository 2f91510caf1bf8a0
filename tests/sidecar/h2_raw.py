"""A raw HTTP/2 gRPC client that misbehaves on purpose.

``StalledCall`` opens one call and never grants the server any flow-control
window (``SETTINGS_INITIAL_WINDOW_SIZE = 0``, no WINDOW_UPDATE ever): the
server can send headers but no message. It still answers SETTINGS and PING
(so keepalive does not close it): the client of a Watch that never reads.
HPACK is written as literal fields without indexing, which every decoder takes.
"""

from __future__ import annotations

import socket
import struct
import threading

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, PING = 0x0, 0x1, 0x4, 0x6
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
INITIAL_WINDOW_SIZE = 0x4


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload))[1:] + bytes([kind, flags])
            + struct.pack(">I", stream) + payload)


def _literal(text: str) -> bytes:
    data = text.encode()
    assert len(data) < 127
    return bytes([len(data)]) + data


class StalledCall:
    def __init__(self, address: str, path: str, request: bytes = b"") -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.settimeout(None)
        headers = b"".join(b"\x00" + _literal(k) + _literal(v) for k, v in (
            (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", address),
            ("content-type", "application/grpc"), ("te", "trailers")))
        message = b"\x00" + struct.pack(">I", len(request)) + request
        no_window = struct.pack(">HI", INITIAL_WINDOW_SIZE, 0)
        self.sock.sendall(PREFACE + _frame(SETTINGS, 0, 0, no_window)
                          + _frame(HEADERS, END_HEADERS, 1, headers)
                          + _frame(DATA, END_STREAM, 1, message))
        self.closed = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def _pump(self) -> None:
        try:
            while True:
                head = self._read(9)
                kind, flags = head[3], head[4]
                payload = self._read(int.from_bytes(head[:3], "big"))
                if kind == SETTINGS and not flags & ACK:
                    self.sock.sendall(_frame(SETTINGS, ACK, 0, b""))
                elif kind == PING and not flags & ACK:
                    self.sock.sendall(_frame(PING, ACK, 0, payload))
        except (EOFError, OSError):
            self.closed.set()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
