"""``harness-pool-python``: a fast stand-in for the Python a Flink TaskManager boots.

For every Python operator of every slot, a TaskManager runs
``pyflink-udf-runner.sh``, which runs ``$python -m pyflink.fn_execution.beam.beam_boot
--id=... --provision_endpoint=...`` where ``$python`` is Flink's
``python.executable``. In loopback mode (``PYTHON_LOOPBACK_SERVER_ADDRESS``
set) PyFlink's boot only sends one ``StartWorker`` to that address, yet it
imports PyFlink and Beam first: about a second of CPU per stage, on a pod
whose CPU the stages need.

Set ``python.executable`` to this command instead. Given exactly that boot
invocation with the loopback address set, it sends the same
``StartWorkerRequest`` (``worker_id``, ``provision_endpoint``, and the boot's
environment as ``params``, as PyFlink's boot does) with nothing but ``grpc``
imported, and exits 1 with the sidecar's error if there is one. Any other
invocation is handed unchanged to the real interpreter (``HARNESS_POOL_PYTHON``,
default: this one), so process mode and everything else keep working.

The call has a deadline (``HARNESS_POOL_BOOT_TIMEOUT`` seconds, default 150:
longer than the sidecar's own assign + provision + start timeouts), so a
sidecar that never answers fails the stage instead of hanging it. Environment
entries that are not UTF-8 (a protobuf string cannot carry them) are left out
of ``params`` with a warning naming them, instead of crashing the boot.

The request is encoded by hand (three fields of a stable, public protobuf
message) so that no generated Beam module has to be imported; a test checks
the bytes against Beam's own ``StartWorkerRequest``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

BOOT_MODULE = "pyflink.fn_execution.beam.beam_boot"
START_WORKER = "/org.apache.beam.model.fn_execution.v1.BeamFnExternalWorkerPool/StartWorker"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_start_worker(worker_id: str, provision_endpoint: str,
                        params: dict[str, str]) -> bytes:
    """``StartWorkerRequest{worker_id=1, provision_endpoint=5 {url=1}, params=10 map}``."""
    out = _field(1, worker_id.encode())
    out += _field(5, _field(1, provision_endpoint.encode()))
    for key, value in sorted(params.items()):
        out += _field(10, _field(1, key.encode()) + _field(2, value.encode()))
    return out


def iter_fields(data: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """(number, wire type, payload) of each top-level field of a protobuf message:
    bytes for length-delimited fields, the value for varints. Raises ValueError on
    anything else or on truncated input."""
    i = 0
    while i < len(data):
        key, i = read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 2:
            length, i = read_varint(data, i)
            if i + length > len(data):
                raise ValueError("truncated length-delimited field")
            yield number, wire, data[i:i + length]
            i += length
        elif wire == 0:
            value, i = read_varint(data, i)
            yield number, wire, value
        else:
            raise ValueError(f"unexpected wire type {wire}")


def decode_error(response: bytes) -> str:
    """``StartWorkerResponse.error`` (field 1); unknown fields are skipped."""
    for number, _wire, payload in iter_fields(response):
        if number == 1 and isinstance(payload, bytes):
            return payload.decode(errors="replace")
    return ""


def read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint")
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def parse_boot_args(args: list[str]) -> dict[str, str]:
    """``--id``, ``--provision_endpoint``, ``--semi_persist_dir`` as PyFlink's boot reads them."""
    wanted = {"id": "", "provision_endpoint": "", "semi_persist_dir": "/tmp"}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if not eq and i + 1 < len(args) and not args[i + 1].startswith("--"):
                value, i = args[i + 1], i + 1
            if name in wanted:
                wanted[name] = value
        i += 1
    return wanted


def start_worker(address: str, args: list[str], environ: dict[str, str],
                 timeout: float | None = None) -> str:
    """Sends the boot's StartWorker; returns the sidecar's error text ('' on success)."""
    import grpc

    flags = parse_boot_args(args)
    if not flags["id"] or not flags["provision_endpoint"]:
        return "harness-pool-python: the boot needs --id and --provision_endpoint"
    params = dict(environ, SEMI_PERSISTENT_DIRECTORY=flags["semi_persist_dir"])
    request = encode_start_worker(flags["id"], flags["provision_endpoint"], params)
    try:
        with grpc.insecure_channel(address) as channel:
            call = channel.unary_unary(START_WORKER)
            response = call(request, timeout=timeout)
    except grpc.RpcError as exc:
        return (f"StartWorker on the sidecar at {address} failed for worker {flags['id']}: "
                f"{exc.code().name}: {exc.details()}")
    return decode_error(response)


DEFAULT_TIMEOUT = 150.0


def utf8_environ(environb: dict[bytes, bytes]) -> tuple[dict[str, str], list[str]]:
    """The environment entries that are UTF-8, and the names of those left out."""
    out: dict[str, str] = {}
    skipped = []
    for key, value in environb.items():
        try:
            out[key.decode()] = value.decode()
        except UnicodeDecodeError:
            skipped.append(key.decode(errors="backslashreplace"))
    return out, skipped


def boot_timeout(environ: dict[str, str]) -> float:
    try:
        return float(environ.get("HARNESS_POOL_BOOT_TIMEOUT", DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT


def executable() -> str:
    """Path of the installed ``harness-pool-python`` command (for ``python.executable``)."""
    import shutil

    beside = os.path.join(os.path.dirname(sys.executable), "harness-pool-python")
    found = beside if os.access(beside, os.X_OK) else shutil.which("harness-pool-python")
    if not found:
        raise FileNotFoundError("harness-pool-python is not installed (pip install harness-pool)")
    return found


def main() -> int:
    args = sys.argv[1:]
    address = os.environ.get("PYTHON_LOOPBACK_SERVER_ADDRESS", "")
    if address and args[:2] == ["-m", BOOT_MODULE]:
        environ, skipped = utf8_environ(dict(os.environb))
        if skipped:
            names = ", ".join(n[:60].encode("ascii", "backslashreplace").decode()
                              for n in skipped[:5])
            print(f"harness-pool-python: {len(skipped)} environment entries are not UTF-8 and "
                  f"are not passed to the worker: {names}", file=sys.stderr)
        error = start_worker(address, args[2:], environ, boot_timeout(environ))
        if error:
            print(f"Error starting worker: {error}", file=sys.stderr)
            return 1
        return 0
    python = os.environ.get("HARNESS_POOL_PYTHON") or sys.executable
    os.execv(python, [python, *args])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
