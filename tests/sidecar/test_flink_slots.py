"""``--workers auto``: the slot count from real Flink configuration files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness_pool._errors import ConfigError
from harness_pool.cli import build_parser
from harness_pool.flink.distribution import pyflink_home
from harness_pool.sidecar.cli import settings_from_args
from harness_pool.sidecar.flink_slots import slots_from_flink_conf


def conf(tmp_path: Path, name: str, text: str) -> str:
    (tmp_path / name).write_text(text)
    return str(tmp_path)


@pytest.mark.parametrize(("name", "text", "slots"), [
    pytest.param("config.yaml", "taskmanager.numberOfTaskSlots: 4\n", 4, id="flat"),
    pytest.param("config.yaml", "taskmanager:\n  numberOfTaskSlots: 3\n  memory:\n"
                 "    process:\n      size: 1728m\n", 3, id="nested"),
    pytest.param("config.yaml", "taskmanager:\n  memory.process.size: 1g\n"
                 "taskmanager.numberOfTaskSlots: '2'\n", 2, id="mixed-and-quoted"),
    pytest.param("config.yaml", "taskmanager:\n  numberOfTaskSlots: 2\n"
                 "taskmanager.numberOfTaskSlots: 2\n", 2, id="nested-and-flat-agree"),
    pytest.param("flink-conf.yaml", "# legacy\njobmanager.rpc.address: jm\n"
                 "taskmanager.numberOfTaskSlots: 1\n"
                 "taskmanager.numberOfTaskSlots: 6  # last wins\n",
                 6, id="legacy-flink-conf"),
])
def test_slots_from_real_files(tmp_path: Path, name: str, text: str, slots: int) -> None:
    assert slots_from_flink_conf(conf(tmp_path, name, text)) == slots


def test_config_yaml_wins_over_the_legacy_file(tmp_path: Path) -> None:
    conf(tmp_path, "flink-conf.yaml", "taskmanager.numberOfTaskSlots: 9\n")
    assert slots_from_flink_conf(conf(tmp_path, "config.yaml",
                                      "taskmanager.numberOfTaskSlots: 2\n")) == 2


def test_the_distributions_own_config_reads(tmp_path: Path) -> None:
    """Flink 2.3's shipped conf/config.yaml (nested keys) gives its default slot count."""
    shipped = pyflink_home() / "conf" / "config.yaml"
    assert slots_from_flink_conf(conf(tmp_path, "config.yaml", shipped.read_text())) >= 1


@pytest.mark.parametrize(("name", "text", "words"), [
    pytest.param("config.yaml", "jobmanager.rpc.address: jm\n",
                 ["config.yaml", "has no taskmanager.numberOfTaskSlots"], id="key-missing"),
    pytest.param("config.yaml", "taskmanager.numberOfTaskSlots: many\n",
                 ["config.yaml", "taskmanager.numberOfTaskSlots is 'many'"], id="not-a-number"),
    pytest.param("config.yaml", "taskmanager.numberOfTaskSlots: 0\n",
                 ["taskmanager.numberOfTaskSlots is 0", ">= 1"], id="zero"),
    pytest.param("config.yaml", "taskmanager.numberOfTaskSlots: true\n",
                 ["taskmanager.numberOfTaskSlots is True"], id="a-boolean"),
    pytest.param("config.yaml", "taskmanager: [1, 2\n", ["config.yaml", "as YAML"],
                 id="broken-yaml"),
    pytest.param("config.yaml", "- a list\n", ["not a YAML mapping"], id="not-a-mapping"),
    pytest.param("config.yaml", "taskmanager:\n  numberOfTaskSlots: 2\n"
                 "taskmanager.numberOfTaskSlots: 4\n", ["twice", "2", "4"],
                 id="nested-and-flat-disagree"),
    pytest.param("other.yaml", "", ["neither config.yaml nor flink-conf.yaml"], id="no-file"),
])
def test_clear_errors_name_the_file_and_key(tmp_path: Path, name: str, text: str,
                                            words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        slots_from_flink_conf(conf(tmp_path, name, text))
    for word in words:
        assert word in str(info.value), str(info.value)
    assert str(info.value).startswith("--workers auto: ")


def test_no_folder_at_all(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="set --flink-conf-dir or \\$FLINK_CONF_DIR"):
        slots_from_flink_conf("")
    with pytest.raises(ConfigError, match="does not exist"):
        slots_from_flink_conf(str(tmp_path / "absent"))


def _settings(args: list[str]):  # type: ignore[no-untyped-def]
    return settings_from_args(build_parser().parse_args(["serve", *args]))


def test_the_parser_resolves_auto_and_max_processes_follows(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    folder = conf(tmp_path, "config.yaml", "taskmanager.numberOfTaskSlots: 3\n")
    s = _settings(["--workers", "auto", "--flink-conf-dir", folder]).validate()
    assert s.workers == 3 and s.process_cap == 6
    monkeypatch.setenv("FLINK_CONF_DIR", folder)
    assert _settings(["--workers=auto"]).workers == 3
    assert _settings(["--workers", "5"]).workers == 5  # a number stays a number


def test_serve_with_a_bad_config_exits_2_naming_the_file(tmp_path: Path) -> None:
    folder = conf(tmp_path, "config.yaml", "taskmanager.numberOfTaskSlots: lots\n")
    out = subprocess.run([sys.executable, "-m", "harness_pool", "serve", "--port", "0",
                          "--workers", "auto", "--flink-conf-dir", folder],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert str(tmp_path / "config.yaml") in out.stderr and "numberOfTaskSlots" in out.stderr
    bad = subprocess.run([sys.executable, "-m", "harness_pool", "serve", "--workers", "some"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "neither a number of workers nor 'auto'" in bad.stderr
