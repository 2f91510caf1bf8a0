"""A new worker pays Beam's first-call costs while idle, and leaves nothing behind.

Run in a fresh interpreter each: ``prewarm`` changes process-wide state of Beam
(pickler, runtime options) that the stage's own ``create_harness`` sets again.
"""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import logging, sys
from harness_pool.pool import worker
from apache_beam.internal import pickler

sdk = worker._import_harness("beam")
worker.setup_logging("worker-9")
logging.getLogger().setLevel(logging.WARNING)
{body}
"""


def run(body: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT.format(body=body)],
                          capture_output=True, text=True, timeout=120)


def test_prewarm_is_quiet_and_the_stage_sets_its_own_pickler_and_options() -> None:
    done = run(r"""
worker.prewarm(sdk)
assert logging.getLogger().level == logging.WARNING, logging.getLogger().level
assert pickler.desired_pickle_lib.__name__.endswith("cloudpickle_pickler")
print("--prewarmed--", file=sys.stderr, flush=True)
# the stage's own call (dry: no runner here) with the job's options
sdk.create_harness({"PIPELINE_OPTIONS": '{"options": {"pickle_library": "dill", '
                    '"job_name": "mine"}}', "CONTROL_API_SERVICE_DESCRIPTOR": 'url: "x:1"'},
                   dry_run=True)
assert pickler.desired_pickle_lib.__name__.endswith("dill_pickler"), pickler.desired_pickle_lib
from apache_beam.options.value_provider import RuntimeValueProvider
assert RuntimeValueProvider.get_value("job_name", str, "") == "mine"
print("ok")
""")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"
    before, marker, _ = done.stderr.partition("--prewarmed--")
    assert marker and before == "", "pre-warming logged: " + before[-2000:]


def test_a_failing_prewarm_is_a_warning_not_a_dead_worker() -> None:
    done = run(r"""
class Broken:
    def create_harness(self, environment, dry_run=False):
        raise KeyError("CONTROL_API_SERVICE_DESCRIPTOR")
worker.prewarm(Broken())
print("alive")
""")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "alive"
    assert "pre-warming Beam's harness set-up failed" in done.stderr
    assert "KeyError" in done.stderr and "[worker-9]" in done.stderr
