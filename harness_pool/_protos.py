"""Regenerates the Python modules of harness-pool's own gRPC API.

The .proto files live in ``protos/harness_pool/v1``; the generated modules are
committed under ``harness_pool/v1`` so that an installed package needs no
grpcio-tools. ``python -m harness_pool._protos`` rewrites them;
``generate(into)`` writes them somewhere else (the up-to-date test compares).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos"


def proto_files() -> list[Path]:
    return sorted((PROTO_DIR / "harness_pool" / "v1").glob("*.proto"))


def generate(into: Path) -> list[Path]:
    """Compiles every .proto into ``into``; returns the generated files."""
    from grpc_tools import protoc  # build-time only dependency

    into.mkdir(parents=True, exist_ok=True)
    for proto in proto_files():
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={into}",
            f"--pyi_out={into}",
            f"--grpc_python_out={into}",
            str(proto.relative_to(PROTO_DIR)),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto}")
    out = into / "harness_pool" / "v1"
    return sorted(p for p in out.glob("*") if p.suffix in (".py", ".pyi"))


def main() -> int:
    for path in generate(ROOT):
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
