"""A stand-in for Beam's Python container boot (sdks/python/container/boot.go).

Run as ``python fake_boot.py --id ID --provision_endpoint HOST:PORT``: it calls
GetProvisionInfo with the ``worker_id`` header ``ID`` (the sidecar holds it
until the id has a stage), sets the environment the Beam boot sets, and execs
``apache_beam.runners.worker.sdk_worker_main`` in place of itself (same pid).
Exit code 3 means the provision call failed (the boot loop retries).

``--state-worker-id VALUE`` puts VALUE in WORKER_ID while the harness is given
its id explicitly: the SDK's state channel (whose header comes from WORKER_ID
alone) then carries a header that differs from the pool id, which exercises
the proxy's instruction-id routing.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from apache_beam.portability.api import (
    beam_provision_api_pb2,
    beam_provision_api_pb2_grpc,
    endpoints_pb2,
)
from google.protobuf import json_format, text_format


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--id", required=True)
    parser.add_argument("--provision_endpoint", required=True)
    parser.add_argument("--semi_persist_dir", default="/tmp")
    parser.add_argument("--state-worker-id", default="")
    args = parser.parse_args()
    try:
        with grpc.insecure_channel(args.provision_endpoint) as channel:
            info = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel).GetProvisionInfo(
                beam_provision_api_pb2.GetProvisionInfoRequest(),
                metadata=(("worker_id", args.id),)).info
    except grpc.RpcError as exc:
        print(f"boot {args.id}: GetProvisionInfo: {exc.code().name}: {exc.details()}",
              file=sys.stderr, flush=True)
        return 3
    env = dict(os.environ)
    env["WORKER_ID"] = args.state_worker_id or args.id
    env["PIPELINE_OPTIONS"] = json_format.MessageToJson(info.pipeline_options)
    env["SEMI_PERSISTENT_DIRECTORY"] = args.semi_persist_dir
    env["LOGGING_API_SERVICE_DESCRIPTOR"] = text_format.MessageToString(
        endpoints_pb2.ApiServiceDescriptor(url=info.logging_endpoint.url))
    env["CONTROL_API_SERVICE_DESCRIPTOR"] = text_format.MessageToString(
        endpoints_pb2.ApiServiceDescriptor(url=info.control_endpoint.url))
    if info.status_endpoint.url:
        env["STATUS_API_SERVICE_DESCRIPTOR"] = text_format.MessageToString(
            endpoints_pb2.ApiServiceDescriptor(url=info.status_endpoint.url))
    if info.runner_capabilities:
        env["RUNNER_CAPABILITIES"] = " ".join(info.runner_capabilities)
    sys.stdout.flush()
    argv = [sys.executable, "-m", "apache_beam.runners.worker.sdk_worker_main"]
    if args.state_worker_id:
        # sdk_worker_main hands WORKER_ID to the control and data channels too; give
        # them the real id explicitly so that only the state channel differs.
        argv = [sys.executable, "-c", _OTHER_STATE_ID, args.id]
    os.execve(sys.executable, argv, env)
    return 0


#: Runs sdk_worker_main with the pool id given to the harness explicitly while the
#: process environment's WORKER_ID (read by the state channel) says something else.
_OTHER_STATE_ID = """
import os, sys
from apache_beam.runners.worker import sdk_worker_main
real = sdk_worker_main.create_harness
def create(environment, dry_run=False):
    env = dict(environment); env['WORKER_ID'] = sys.argv[1]
    return real(env, dry_run)
sdk_worker_main.create_harness = create
sdk_worker_main.main(sys.argv[:1])
"""

if __name__ == "__main__":
    sys.exit(main())
