"""Pure parts of reactive mode: a job's scale, keyed output, pod phases, stdin commands."""

from __future__ import annotations

import pytest

from harness_pool._errors import ConfigError, IllegalTransition
from harness_pool.flink.jobview import JobStatus, job_scale, rescale_history
from harness_pool.flink.keyed_output import count_problems, expected_count, parse
from harness_pool.flink.pod import Pod, PodPhase, PythonWorkers, Removal
from harness_pool.flink.reactive import ReactiveSettings
from harness_pool.flink.reactive_cli import Command, Verb, parse_command


def vertex(name: str, parallelism: int, **tasks: int) -> dict:
    return {"name": name, "parallelism": parallelism, "tasks": tasks}


@pytest.mark.parametrize(("state", "vertices", "at", "expected"), [
    ("RUNNING", [vertex("src", 4, RUNNING=2, FINISHED=2), vertex("count", 4, RUNNING=4)],
     4, True),
    ("RUNNING", [vertex("src", 4, RUNNING=2, DEPLOYING=2), vertex("count", 4, RUNNING=4)],
     4, False),
    ("RUNNING", [vertex("src", 2, RUNNING=2), vertex("count", 4, RUNNING=4)], 4, False),
    ("RUNNING", [vertex("src", 2, RUNNING=2), vertex("count", 2, RUNNING=2)], 4, False),
    ("RESTARTING", [vertex("src", 4, RUNNING=4)], 4, False),
    ("RUNNING", [vertex("src", 2, FINISHED=2)], 2, False),  # nothing runs: not "at" a scale
    ("RUNNING", [], 2, False),
], ids=["source-without-split-finished", "still-deploying", "one-vertex-behind",
        "old-scale", "restarting", "all-finished", "no-vertices"])
def test_job_at_parallelism(state: str, vertices: list, at: int, expected: bool) -> None:
    scale = job_scale({"jid": "j", "state": state, "vertices": vertices})
    assert scale.at(at) is expected, scale.describe()


def test_terminal_states() -> None:
    assert {s for s in JobStatus if s.terminal} == {JobStatus.FAILED, JobStatus.CANCELED,
                                                     JobStatus.FINISHED}


def test_rescale_history_reads_flink_2_3_details() -> None:
    payload = {"items": [{
        "rescaleUuid": "r1", "triggerCause": "NEW_RESOURCE_AVAILABLE",
        "terminalState": "COMPLETED", "startTimestampInMillis": 1000,
        "endTimestampInMillis": 3500,
        "vertices": {"v": {"jobVertexName": "src", "preRescaleParallelism": 2,
                           "postRescaleParallelism": 4}},
        "schedulerStates": [
            {"state": "Restarting", "enterTimestampInMillis": 1000,
             "leaveTimestampInMillis": 3000},
            {"state": "Executing", "enterTimestampInMillis": 3500,
             "leaveTimestampInMillis": None}]}]}
    (r,) = rescale_history(payload)
    assert (r.rescale_id, r.trigger, r.status, r.start_ms, r.end_ms) == \
        ("r1", "NEW_RESOURCE_AVAILABLE", "COMPLETED", 1000, 3500)
    assert r.parallelism == {"src": (2, 4)}
    assert [(p.state, p.seconds) for p in r.phases] == [("Restarting", 2.0), ("Executing", None)]
    assert rescale_history({"unexpected": 1}) == []


def _file(opened: float, subtask: int, lines: list[str], parallelism: int = 2) -> str:
    """A counts file with 8 keys and buckets of 2**4 values (bucket 1 starts at 16)."""
    return f"#open,{opened},100,{subtask},{parallelism},0,8,4\n" + \
        "".join(f"{x}\n" for x in lines)


CLEAN = {
    "a": _file(10.0, 0, ["k0,1,0", "k0,2,8", "k1,1,1", "k0,1,16"]),
    "b": _file(20.0, 1, ["k0,2,8", "k1,2,9", "k0,2,24"], parallelism=4),  # 8: a replay
}


@pytest.mark.parametrize(("files", "bad"), [
    (CLEAN, 0),
    ({**CLEAN, "c": _file(30.0, 0, ["k1,1,9"])}, 1),  # state reset: 9 is k1's 2nd value
    ({**CLEAN, "c": _file(30.0, 0, ["k0,3,8"])}, 1),  # counted twice
    ({"a": _file(10.0, 0, ["k0,1,0", "k0,2,8"]) + "k0,9,1"}, 0),  # torn last line ignored
    ({"a": _file(16.0, 0, ["k5,1,5", "k5,1,21"])}, 0),  # each bucket counts on its own
], ids=["replay", "reset", "double-count", "torn-line", "buckets"])
def test_keyed_output_judgement(files: dict, bad: int) -> None:
    out = parse(files)
    assert out.bad_lines == bad, count_problems(out)
    assert bool(count_problems(out)) is bool(bad)


def test_keyed_output_counts_per_key() -> None:
    out = parse(CLEAN)
    assert out.counts == {"k0": 2 + 2, "k1": 2}
    assert out.records == 7
    assert expected_count(2**40 + 17, keys=8, shift=40) == 3


def test_pod_phase_table_refuses_illegal_moves(tmp_path) -> None:
    pod = Pod("pod-9", tmp_path, 2, PythonWorkers.PROCESS)
    with pytest.raises(IllegalTransition, match="pod pod-9: cannot go from new to running"):
        pod.registered()
    assert not pod.taskmanager_died()
    pod.stop()  # nothing started: stops cleanly
    assert pod.phase is PodPhase.STOPPED and pod.survivors() == []


def test_settings_report_every_problem(tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        ReactiveSettings(job=tmp_path / "missing.py", slots_per_pod=0,
                         start_timeout=0).validate()
    assert len(info.value.problems) == 3
    assert "missing.py is not a file" in str(info.value)


@pytest.mark.parametrize(("line", "expected"), [
    ("add", Command(Verb.ADD)),
    ("  pods \n", Command(Verb.PODS)),
    ("remove", Command(Verb.REMOVE)),
    ("remove pod-2", Command(Verb.REMOVE, "pod-2")),
    ("remove pod-2 SIGKILL", Command(Verb.REMOVE, "pod-2", Removal.SIGKILL)),
    ("remove sigkill", Command(Verb.REMOVE, "", Removal.SIGKILL)),
    ("", None),
    ("stop", Command(Verb.STOP)),
])
def test_reactive_commands(line: str, expected: Command | None) -> None:
    assert parse_command(line) == expected


@pytest.mark.parametrize(("line", "message"), [
    ("scale 4", "unknown command 'scale'"),
    ("add pod-3", "add takes no arguments"),
    ("remove pod-2 pod-3", "neither sigterm nor sigkill"),
])
def test_reactive_commands_refused_with_a_reason(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_command(line)


def test_a_taskmanager_that_dies_on_its_own_is_restarted_in_place(tmp_path) -> None:
    """Real (tiny) processes stand in for the TaskManager script: it dies, it restarts."""
    script = tmp_path / "taskmanager.sh"
    script.write_text("#!/bin/sh\necho \"run $1\" >> \"$FLINK_LOG_DIR/runs.log\"\n"
                      "echo 'Reference count must not be negative.'\nexit 3\n")
    script.chmod(0o755)
    pod = Pod("pod-7", tmp_path / "pod", 1, PythonWorkers.PROCESS)
    conf_template = tmp_path / "conf"
    conf_template.mkdir()
    pod.start_sidecar({}, ready_timeout=1)  # process mode: folders only
    pod.start_taskmanager(script, {"PATH": "/usr/bin:/bin"}, {}, conf_template)
    pod.registered()
    assert pod.taskmanager is not None and pod.taskmanager.wait(10) == 3
    assert pod.taskmanager_died() and pod.log_mentions("Reference count must not be negative")
    assert pod.restart_taskmanager() == 3
    assert pod.phase is PodPhase.STARTING and pod.restarts == [3]
    assert pod.taskmanager.wait(10) == 3
    assert (pod.log_dir / "runs.log").read_text().splitlines() == ["run start-foreground"] * 2
    pod.stop()
    assert pod.phase is PodPhase.STOPPED and pod.survivors() == []
