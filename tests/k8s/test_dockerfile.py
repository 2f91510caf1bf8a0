"""The Dockerfile agrees with the package and the manifests.

The Dockerfile is parsed here (tests/k8s/test_image.py builds and runs it): its entry
point is tini running the package's console script, the extras it can install exist, it
exposes the ports the manifests use, the runtime stage is non-root and has no build
tools, and the image tags in ``k8s/`` name this version. The pyflink variant carries no
Java and drops PyFlink's jars: a worker's imports are checked to work that way.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomllib

from harness_pool.cli import build_parser
from harness_pool.sidecar.settings import SidecarSettings
from tests.k8s.manifests import (
    ROOT,
    SIDECAR,
    container,
    find,
    image_tags,
    kustomize_build,
    pod_specs,
    port_named,
)

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


INSTR = instructions(DOCKERFILE)


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in INSTR:
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def global_args() -> dict[str, str]:
    out = {}
    for word, rest in INSTR:
        if word == "FROM":
            break
        if word == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            out[k] = v.strip('"')
    return out


def exec_form(word: str, stage: list[tuple[str, str]]) -> list[str]:
    import json

    (value,) = [rest for w, rest in stage if w == word]
    parsed = json.loads(value)
    assert isinstance(parsed, list), f"{word} must be exec form (JSON list): signals reach PID 1"
    return parsed


def test_entry_point_is_the_console_script() -> None:
    final = stages()[-1]
    scripts = PYPROJECT["project"]["scripts"]
    # tini is PID 1 (reaps orphans of user code), harness-pool its only child
    assert exec_form("ENTRYPOINT", final) == ["/usr/bin/tini", "--", "harness-pool"]
    assert scripts["harness-pool"] == "harness_pool.cli:main"
    cmd = exec_form("CMD", final)
    args = build_parser().parse_args(cmd)
    assert args.command == "serve" and args.host == "127.0.0.1"
    assert args.health_port and args.health_host == "0.0.0.0" and args.metrics_host == "0.0.0.0"


def test_base_image_is_pinned_and_matches_requires_python() -> None:
    base = global_args()["PYTHON_IMAGE"]
    m = re.fullmatch(r"python:(3)\.(\d+)\.(\d+)-slim-[a-z]+", base)
    assert m, f"base image {base!r}: pin an exact python:X.Y.Z-slim-<debian> tag"
    minor = int(m.group(2))
    spec = PYPROJECT["project"]["requires-python"]
    lo, hi = re.fullmatch(r">=3\.(\d+),<3\.(\d+)", spec).groups()  # type: ignore[union-attr]
    assert int(lo) <= minor < int(hi)
    assert f"python3.{minor}/site-packages" in DOCKERFILE, "pruning path names another Python"
    for stage in stages():
        assert stage[0][1].split()[0] == "${PYTHON_IMAGE}", "every stage uses the pinned base"


def test_multi_stage_runtime_has_no_build_tools_and_runs_as_non_root() -> None:
    build, final = stages()[0], stages()[-1]
    assert len(stages()) >= 2 and " AS " in build[0][1].upper()
    assert any("gcc" in rest for w, rest in build if w == "RUN")
    for word, rest in final:
        assert not (word == "RUN" and re.search(r"apt-get install|gcc|pip install", rest)), rest
    copies = [rest for w, rest in final if w == "COPY"]
    assert copies == ["--from=build /usr/bin/tini-static /usr/bin/tini",
                      "--from=build /opt/harness-pool /opt/harness-pool"]
    # tini is Debian's, installed in the build stage (statically linked: no libraries needed)
    assert any(re.search(r"apt-get install .*\btini\b", rest) for w, rest in build if w == "RUN")
    (user,) = [rest for w, rest in final if w == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    assert [w for w, _ in final].index("USER") > [w for w, _ in final].index("COPY")


def test_extras_build_arg_installs_a_real_extra() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    documented = set(re.findall(r"--build-arg EXTRAS=(\w+)", DOCKERFILE))
    assert documented and documented <= set(extras), documented
    assert "flink" in documented and any(d.startswith("apache-flink")
                                         for d in extras["flink"])
    (install,) = [rest for w, rest in stages()[0] if w == "RUN" and "pip install" in rest
                  and "${EXTRAS" in rest]
    assert '".${EXTRAS:+[$EXTRAS]}"' in install


def _images() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for where, spec in pod_specs():
        c = container(spec, SIDECAR)
        found.setdefault(c["image"], set()).add(where)
    dep = find(kustomize_build(), "Deployment", "harness-pool-scheduler")
    for c in dep["spec"]["template"]["spec"]["containers"]:
        found.setdefault(c["image"], set()).add("scheduler")
    return found


def test_exposed_ports_are_the_ports_the_manifests_use() -> None:
    exposed = {int(p.split("/")[0]) for w, rest in stages()[-1] if w == "EXPOSE"
               for p in rest.split()}
    used = {SidecarSettings().port}
    for _, spec in pod_specs():
        side = container(spec, SIDECAR)
        used |= {port_named(side, "pool-health"), port_named(side, "pool-metrics")}
    dep = find(kustomize_build(), "Deployment", "harness-pool-scheduler")
    used.add(port_named(dep["spec"]["template"]["spec"]["containers"][0], "metrics"))
    assert used == exposed, f"EXPOSE {sorted(exposed)}; manifests use {sorted(used)}"


def test_manifest_images_name_this_version_and_variant() -> None:
    tags = image_tags()
    images = _images()
    for image, where in images.items():
        assert image in tags.values(), f"{image} in {sorted(where)}: not a tag make image gives"
    # The TaskManager pod templates name the versions they carry, not an alias.
    for where, spec in pod_specs():
        image = container(spec, SIDECAR)["image"]
        assert image in (tags["beam"], tags["pyflink"]), f"{where}: {image}"


def test_dockerignore_lets_in_exactly_what_the_build_copies() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied = set()
    for w, rest in stages()[0]:
        if w == "COPY" and not rest.startswith("--from"):
            copied |= set(shlex.split(rest)[:-1])
    assert copied == allowed
    assert all((ROOT / p).exists() for p in copied)


# -- the pyflink variant: no Java, no jars ---------------------------------------------


def _pruned_pyflink(dest: Path) -> Path:
    import pyflink

    src = Path(pyflink.__file__).parent
    # The same folders the Dockerfile removes with PRUNE_FLINK_JARS.
    pruned = re.search(r"rm -rf (lib opt plugins examples) bin/\*\.jar", DOCKERFILE)
    assert pruned, "the Dockerfile's pruning line changed; update this test"
    drop = set(pruned.group(1).split())
    shutil.copytree(src, dest / "pyflink",
                    ignore=lambda d, names: [n for n in names if (Path(d) == src and n in drop)
                                             or n.endswith(".jar") or n == "__pycache__"])
    return dest / "pyflink"


def test_pyflink_worker_imports_without_java_or_flink_jars(tmp_path: Path) -> None:
    pytest.importorskip("pyflink")
    copy = _pruned_pyflink(tmp_path)
    assert not list(copy.rglob("*.jar"))
    code = (
        "import shutil, sys\n"
        "assert shutil.which('java') is None, shutil.which('java')\n"
        "from harness_pool.pool.worker import _import_harness\n"
        "_import_harness('pyflink')\n"
        "import pyflink.fn_execution.beam.beam_operations, pyflink.fn_execution.beam.beam_coders\n"
        "print(sys.modules['pyflink'].__file__)\n"
    )
    env: dict[str, Any] = {k: v for k, v in os.environ.items()
                           if k not in ("JAVA_HOME", "FLINK_HOME", "PYTHONPATH")}
    env["PATH"] = str(tmp_path / "no-java-bin")
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(copy / "__init__.py")
