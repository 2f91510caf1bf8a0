"""The life cycle the in-process HTTP fakes share: a threaded server on 127.0.0.1
and a free port, ``url``, ``start``/``stop`` and context-manager use.

A fake subclasses ``HttpFake`` and passes its request handler class; the
server thread is the only one that runs the handler.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

_F = TypeVar("_F", bound="HttpFake")


class JsonHandler(BaseHTTPRequestHandler):
    """JSON in and out; every method goes to ``route(method)``, which a fake defines."""

    def route(self, method: str) -> None:
        raise NotImplementedError

    def reply(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}") if length else {}

    def do_GET(self) -> None:
        self.route("GET")

    def do_POST(self) -> None:
        self.route("POST")

    def do_PUT(self) -> None:
        self.route("PUT")

    def do_PATCH(self) -> None:
        self.route("PATCH")

    def do_DELETE(self) -> None:
        self.route("DELETE")

    def log_message(self, *args: Any) -> None:
        pass


class HttpFake:
    def __init__(self, handler: type[BaseHTTPRequestHandler], name: str) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True, name=name)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self: _F) -> _F:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self: _F) -> _F:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """Applies an RFC 7386 JSON merge patch to ``target`` in place."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = value
