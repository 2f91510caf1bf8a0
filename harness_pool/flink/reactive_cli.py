"""The stdin commands of ``harness-pool flink-cluster reactive``: parse, then act.

``parse_command`` is pure (a line to a ``Command`` or a ``ConfigError`` that says
what was expected). ``CommandReader`` reads stdin on its own thread and only
queues; the main thread (``run_pending``) acts on the cluster, so a cluster is
still driven by one thread. Every answer is one line on stdout.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import queue
import sys
import threading
from typing import TextIO

from harness_pool._errors import ConfigError, HarnessPoolError
from harness_pool.flink.pod import Removal
from harness_pool.flink.reactive import ReactiveCluster

log = logging.getLogger(__name__)

USAGE = "commands: add | remove [POD] [sigterm|sigkill] | pods | stop"


class Verb(enum.Enum):
    ADD = "add"
    REMOVE = "remove"
    PODS = "pods"
    STOP = "stop"


@dataclasses.dataclass(frozen=True)
class Command:
    verb: Verb
    pod: str = ""  # remove: empty means the newest running pod
    how: Removal = Removal.SIGTERM


def parse_command(line: str) -> Command | None:
    """One stdin line; None for a blank line; ConfigError naming what is wrong."""
    words = line.split()
    if not words:
        return None
    try:
        verb = Verb(words[0].lower())
    except ValueError as exc:
        raise ConfigError(f"unknown command {words[0]!r}; {USAGE}") from exc
    rest = words[1:]
    if verb is not Verb.REMOVE:
        if rest:
            raise ConfigError(f"{verb.value} takes no arguments; {USAGE}")
        return Command(verb)
    how = Removal.SIGTERM
    pod = ""
    for word in rest:
        try:
            how = Removal(word.lower())
        except ValueError:
            if pod:
                raise ConfigError(f"remove: {word!r} is neither sigterm nor sigkill, and "
                                  f"the pod is already {pod!r}; {USAGE}") from None
            pod = word
    return Command(verb, pod, how)


class CommandReader:
    def __init__(self, cluster: ReactiveCluster, stop: threading.Event,
                 stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self.cluster = cluster
        self.stop = stop
        self._in = stdin or sys.stdin
        self._out = stdout or sys.stdout
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, name="hp-commands", daemon=True)

    def start(self) -> None:
        self._say(USAGE)
        self._thread.start()

    def _read(self) -> None:
        for line in self._in:
            self._queue.put(line)
        log.info("stdin closed: no more commands; SIGTERM or Ctrl-C stops the cluster")

    def run_pending(self) -> None:
        while not self.stop.is_set():
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return
            try:
                command = parse_command(line)
                if command is not None:
                    self._act(command)
            except HarnessPoolError as exc:
                self._say(f"error: {exc}")

    def _act(self, command: Command) -> None:
        cluster = self.cluster
        if command.verb is Verb.ADD:
            pod = cluster.add_pod()
            extra = f", sidecar {pod.sidecar_address}" if pod.sidecar is not None else ""
            self._say(f"{pod.name} joined: TaskManager pid {pod.pids()['taskmanager']}{extra}")
        elif command.verb is Verb.REMOVE:
            live = cluster.live_pods()
            name = command.pod or (live[-1].name if live else "")
            if name not in {p.name for p in live}:
                raise ConfigError(f"remove: no running pod {name!r}; running: "
                                  f"{', '.join(p.name for p in live) or 'none'}")
            pod = cluster.remove_pod(name, command.how)
            self._say(f"{name} removed by {command.how.value}: TaskManager exit "
                      f"{pod.taskmanager_exit}, sidecar exit {pod.sidecar_exit}")
        elif command.verb is Verb.PODS:
            scale = cluster.scale()
            for pod in cluster.pods.values():
                self._say(f"{pod.name} {pod.phase.value} {pod.pids()}")
            self._say(scale.describe())
        else:
            self.stop.set()

    def _say(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()
