"""``harness-pool flink-cluster reactive``: a reactive cluster held in the foreground, pods
added and removed by stdin commands, everything reaped on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from harness_pool.flink.distribution import group_members
from tests.flink_fixtures import ARTIFACTS, REACTIVE_JOB

pytestmark = [pytest.mark.slow, pytest.mark.flink]
ROOT = Path(__file__).resolve().parents[2]


def processes_under(folder: Path) -> list[int]:
    """Live processes whose working directory is inside ``folder`` (ours: Flink, sidecars)."""
    found = []
    for cwd in Path("/proc").glob("[0-9]*/cwd"):
        try:
            if Path(os.readlink(cwd)).is_relative_to(folder):
                found.append(int(cwd.parent.name))
        except OSError:
            continue
    return found


def read_until(proc: subprocess.Popen[str], prefix: str, timeout: float = 240.0) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line.rstrip())
        if line.startswith(prefix):
            return line.rstrip()
    raise AssertionError(f"no line starting {prefix!r}; saw {seen} (exit {proc.poll()})")


def test_reactive_cli_adds_and_removes_pods_and_reaps_all_on_sigterm(tmp_path: Path) -> None:
    workdir = tmp_path / "c"
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness_pool", "flink-cluster", "reactive", "--workdir",
         str(workdir), "--job", str(REACTIVE_JOB), "--job-arg", str(tmp_path / "out"),
         "--job-arg", "10", "--slots", "1", "--python", "process"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        cwd=ROOT, start_new_session=True)
    assert proc.stdin is not None
    try:
        url = read_until(proc, "http://127.0.0.1:")
        assert requests.get(f"{url}/overview", timeout=5).json()["taskmanagers"] == 1
        read_until(proc, "commands:")
        proc.stdin.write("add\n")
        proc.stdin.flush()
        assert "TaskManager pid" in read_until(proc, "pod-2 joined")
        assert requests.get(f"{url}/overview", timeout=5).json()["taskmanagers"] == 2
        proc.stdin.write("remove pod-7\nremove pod-2 sigkill\n")
        proc.stdin.flush()
        assert "no running pod 'pod-7'; running: pod-1, pod-2" in read_until(proc, "error:")
        assert read_until(proc, "pod-2 removed").endswith(
            "by sigkill: TaskManager exit -9, sidecar exit None")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/overview", timeout=2)
        assert processes_under(workdir) == [], "processes of the cluster left behind"
        assert group_members(proc.pid) == []
    except BaseException:
        target = ARTIFACTS / f"reactive-cli-{time.strftime('%Y%m%d-%H%M%S')}"
        for logs in [workdir / "log", *workdir.glob("pods/*/log")]:
            if logs.is_dir():
                shutil.copytree(logs, target / logs.parent.name, dirs_exist_ok=True)
        raise
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
