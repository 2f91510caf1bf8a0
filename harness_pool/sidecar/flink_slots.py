"""``--workers auto``: the pool size from the TaskManager's own Flink configuration.

The sidecar reads ``taskmanager.numberOfTaskSlots`` from the folder the
TaskManager reads (``--flink-conf-dir``, default ``$FLINK_CONF_DIR``; in a pod,
the same ConfigMap mounted in both containers), so pool size and slot count
cannot drift apart:

- ``config.yaml`` (Flink 2.x): standard YAML; keys nested
  (``taskmanager: {numberOfTaskSlots: 4}``) or flat
  (``taskmanager.numberOfTaskSlots: 4``), as Flink flattens them;
- the legacy ``flink-conf.yaml`` (Flink 1.x), read only when there is no
  ``config.yaml``: one ``key: value`` per line, ``#`` comments, last one wins.

A missing folder, file or key, or a value that is not a positive whole number,
is an error naming the file and the key (Flink itself would default to 1 slot
without the key; a pool sized by a default nobody wrote is a surprise, so the
key must be there).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from harness_pool._errors import ConfigError

KEY = "taskmanager.numberOfTaskSlots"
CONFIG_YAML = "config.yaml"
LEGACY = "flink-conf.yaml"


def conf_dir_of(flag: str) -> str:
    """``--flink-conf-dir`` or, when empty, ``$FLINK_CONF_DIR``."""
    return flag or os.environ.get("FLINK_CONF_DIR", "")


def slots_from_flink_conf(conf_dir: str) -> int:
    """The TaskManager's slot count from Flink's configuration folder ``conf_dir``."""
    if not conf_dir:
        raise ConfigError("--workers auto: no Flink configuration folder to read "
                          f"{KEY} from; set --flink-conf-dir or $FLINK_CONF_DIR")
    folder = Path(conf_dir)
    if not folder.is_dir():
        raise ConfigError(f"--workers auto: Flink configuration folder {folder} does not "
                          "exist (--flink-conf-dir or $FLINK_CONF_DIR)")
    path = folder / CONFIG_YAML
    if path.is_file():
        values = _flat_yaml(path)
    elif (folder / LEGACY).is_file():
        path = folder / LEGACY
        values = _legacy(path)
    else:
        raise ConfigError(f"--workers auto: neither {CONFIG_YAML} nor {LEGACY} in {folder}")
    if KEY not in values:
        raise ConfigError(f"--workers auto: {path} has no {KEY} (Flink would use 1 slot; "
                          "set it, or give --workers a number)")
    return _positive(values[KEY], path)


def _flat_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"--workers auto: cannot read {path} as YAML: "
                          f"{' '.join(str(exc).split())}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--workers auto: {path} is not a YAML mapping of Flink options")
    flat: dict[str, Any] = {}
    _flatten(data, "", flat, path)
    return flat


def _flatten(node: dict[Any, Any], prefix: str, into: dict[str, Any], path: Path) -> None:
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            _flatten(value, name + ".", into, path)
            continue
        if name in into and into[name] != value:
            raise ConfigError(f"--workers auto: {path} sets {name} twice (nested and flat) "
                              f"to different values: {into[name]!r} and {value!r}")
        into[name] = value


def _legacy(path: Path) -> dict[str, Any]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--workers auto: cannot read {path}: {exc}") from exc
    values: dict[str, Any] = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        key, sep, value = line.partition(": ")
        if sep and key.strip():
            values[key.strip()] = value.strip()
    return values


def _positive(value: Any, path: Path) -> int:
    text = str(value).strip().strip("'\"")
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise ConfigError(f"--workers auto: {path}: {KEY} is {value!r}; expected a whole "
                          "number of slots >= 1")
    return int(text)
