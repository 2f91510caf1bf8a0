"""Start a Flink JobManager or TaskManager in the foreground, configured from the environment.

Usage: ``flink-entrypoint jobmanager|taskmanager``. The distribution's
``conf/config.yaml`` is flattened, every ``key: value`` line of the
``FLINK_PROPERTIES`` environment variable is laid over it, and the result goes
to ``$FLINK_CONF_DIR`` (default ``/tmp/flink-conf``) before ``exec``.
"""

import os
import shutil
import sys

import yaml


def flatten(prefix, value, out):
    if isinstance(value, dict):
        for key, sub in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), sub, out)
    else:
        out[prefix] = value


def main():
    role = sys.argv[1] if len(sys.argv) > 1 else "taskmanager"
    if role not in ("jobmanager", "taskmanager"):
        sys.exit(f"flink-entrypoint: unknown role {role!r}; expected jobmanager or taskmanager")
    home = os.environ["FLINK_HOME"]
    conf_dir = os.environ.setdefault("FLINK_CONF_DIR", "/tmp/flink-conf")
    os.environ.setdefault("FLINK_LOG_DIR", "/tmp/flink-log")
    shutil.copytree(os.path.join(home, "conf"), conf_dir, dirs_exist_ok=True)
    with open(os.path.join(home, "conf", "config.yaml")) as f:
        flat = {}
        flatten("", yaml.safe_load(f) or {}, flat)
    for line in os.environ.get("FLINK_PROPERTIES", "").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition(":")
            flat[key.strip()] = yaml.safe_load(value)
    with open(os.path.join(conf_dir, "config.yaml"), "w") as f:
        for key, value in flat.items():
            f.write(f"{key}: {yaml.safe_dump(value, default_flow_style=True).strip()}"
                    .replace("\n...", "") + "\n")
    os.makedirs(os.environ["FLINK_LOG_DIR"], exist_ok=True)
    script = os.path.join(home, "bin", f"{role}.sh")
    os.execv(script, [script, "start-foreground"])


if __name__ == "__main__":
    main()
