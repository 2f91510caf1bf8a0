"""Cycle file validation: every problem at once, each naming field, value and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness_pool._errors import ConfigError
from harness_pool.scheduler.config import Action, load_cycle, parse_cycle, parse_duration

ROOT = Path(__file__).resolve().parents[2]


def base() -> dict:
    return {
        "name": "nightly",
        "backend": {"type": "flink-rest", "url": "http://127.0.0.1:8081"},
        "state": {"type": "file", "path": "/tmp/x.json"},
        "schedule": {"every": "6h"},
        "jobs": {"streaming": {"python": "s.py"}, "bounded": {"python": "b.py"}},
        "steps": [
            {"action": "suspend", "job": "streaming"},
            {"action": "start", "job": "bounded"},
            {"action": "wait", "job": "bounded", "timeout": "10m"},
            {"action": "resume", "job": "streaming"},
        ],
    }


def problems(doc: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_cycle(doc)
    return info.value.problems


def test_valid_file_loads_typed_values():
    cfg = parse_cycle(base())
    assert [s.action for s in cfg.steps] == [Action.SUSPEND, Action.START, Action.WAIT,
                                             Action.RESUME]
    assert cfg.steps[2].timeout == 600.0
    assert cfg.schedule.every == 6 * 3600
    assert cfg.jobs["streaming"].flink_name == "streaming"


def test_example_cycle_file_is_valid():
    cfg = load_cycle(ROOT / "examples" / "cycle.yaml")
    assert cfg.jobs["streaming"].python.endswith("streaming_count.py")
    assert Path(cfg.jobs["streaming"].python).exists()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(lambda d: d["steps"][1].update(job="bonded"),
                     "steps[1].job: unknown job 'bonded'; known: bounded, streaming",
                     id="unknown-job-in-step"),
        pytest.param(lambda d: d["steps"][2].update(timeout="-5s"),
                     "steps[2].timeout: got '-5s'; expected a non-negative duration",
                     id="negative-duration"),
        pytest.param(lambda d: d.update(schedule={"cron": "61 * * * *"}),
                     "schedule.cron: got '61 * * * *'; expected a cron expression",
                     id="bad-cron"),
        pytest.param(lambda d: d.update(schedule={"cron": "0 * * * *", "timezone": "Mars/Base"}),
                     "schedule.timezone: got 'Mars/Base'", id="bad-timezone"),
        pytest.param(lambda d: d["steps"].append({"action": "explode", "job": "streaming"}),
                     "steps[4].action: got 'explode'; expected one of suspend", id="bad-action"),
        pytest.param(lambda d: d["backend"].update(type="yarn"),
                     "backend.type: got 'yarn'; expected one of flink-rest", id="bad-backend"),
        pytest.param(lambda d: d["steps"].insert(0, {"action": "resume", "job": "bounded"}),
                     "steps[0].job: resume 'bounded' before any suspend", id="resume-first"),
        pytest.param(lambda d: d["jobs"]["bounded"].update(jar="x.jar"),
                     "jobs.bounded: expected exactly one of python or jar", id="two-artifacts"),
        pytest.param(lambda d: d["steps"][0].update(colour="red"),
                     "steps[0].colour: got 'colour'", id="unknown-key"),
        pytest.param(lambda d: d.update(savepoints={"keep": 0}),
                     "savepoints.keep: got 0; expected an integer >= 1", id="keep-zero"),
        pytest.param(lambda d: d["state"].update(lease="l", renew_deadline="20s"),
                     "expected 0 < retry_period < renew_deadline < lease_duration",
                     id="lease-timing"),
        pytest.param(lambda d: d.update(state={"type": "configmap", "configmap": "c"}),
                     "state.lease: missing; with the configmap state store a Lease",
                     id="configmap-without-lease"),
        pytest.param(lambda d: d["backend"].update(token_file="/t"),
                     "backend.token_file: got '/t'; expected nothing: flink-rest takes no",
                     id="token-on-flink-rest"),
        pytest.param(lambda d: d["backend"].update(snapshots="legacy"),
                     "backend.snapshots: got 'legacy'; expected nothing: only flink-operator",
                     id="snapshots-on-flink-rest"),
        pytest.param(lambda d: (d["backend"].update(type="ververica"),
                                d["jobs"]["streaming"].update(resource="s"),
                                d["jobs"]["bounded"].update(resource="b"),
                                d["steps"].append({"action": "rescale", "job": "streaming",
                                                   "parallelism": "free-slots"})),
                     "steps[4].parallelism: got 'free-slots'; expected a number: ververica",
                     id="free-slots-on-ververica"),
    ],
)
def test_each_problem_names_field_value_and_expectation(mutate, expected):
    doc = base()
    mutate(doc)
    found = problems(doc)
    assert any(expected in p for p in found), found


def test_all_problems_are_reported_at_once():
    doc = base()
    doc["steps"][1]["job"] = "bonded"
    doc["steps"][2]["timeout"] = -1
    doc["schedule"] = {"cron": "not a cron"}
    doc["backend"]["url"] = ""
    found = problems(doc)
    assert len(found) == 4, found


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "cycle.yaml"
    path.write_text("name: x\nsteps: [\n  - {action: suspend\n")
    with pytest.raises(ConfigError, match=r"malformed YAML at line \d+"):
        load_cycle(path)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the cycle file"):
        load_cycle(tmp_path / "nope.yaml")


def test_top_level_not_a_mapping():
    assert any("expected a mapping" in p for p in problems(["a", "b"]))


def test_relative_paths_resolve_against_the_file(tmp_path):
    doc = base()
    doc["state"]["path"] = "state.json"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    cfg = load_cycle(tmp_path / "c.yaml")
    assert cfg.state.path == str(tmp_path / "state.json")
    assert cfg.jobs["bounded"].python == str(tmp_path / "b.py")


@pytest.mark.parametrize(("text", "seconds"), [("250ms", 0.25), ("30s", 30), ("10m", 600),
                                               ("6h", 21600), ("1d", 86400), (12, 12.0)],
                         ids=["ms", "s", "m", "h", "d", "number"])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["-1s", "soon", True], ids=["negative", "word", "bool"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)
