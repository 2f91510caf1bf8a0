"""Why a stage or a worker ended, as sentences for status, logs and alerts.

Pure functions, no I/O: the pool's shell calls them with what it knows (the
stage, the worker's stop reason, its exit code, what the worker reported).
Every sentence names the stage or says what happened to the worker; none is a
fragment of a traceback: a worker reports an exception as one line (type and
message), and ``cause_line`` keeps whatever arrives to one bounded line.
"""

from __future__ import annotations

import re
import signal

from harness_pool._errors import clip

#: Longest cause quoted inside a sentence.
MAX_CAUSE_CHARS = 300

#: The line of a traceback that names the exception: unindented, a dotted name, then ":".
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(:|$)")


def cause_line(text: str, limit: int = MAX_CAUSE_CHARS) -> str:
    """One line of a reported failure: the first non-empty line, whitespace collapsed;
    of a traceback, its (last) exception line. Empty for an empty text."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[0]
    if line.startswith("Traceback"):
        named = [x for x in lines[1:] if _EXCEPTION_LINE.match(x)]
        line = named[-1] if named else lines[-1]
    return clip(" ".join(line.split()), limit)


def exit_phrase(code: int | None) -> str:
    """How a process ended: "exited with code 1", "was killed by SIGKILL (exit code -9)"."""
    if code is None:
        return "is gone (exit code unknown)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name} (exit code {code})"
    return f"exited with code {code}"


def stage_finished(runner_id: str) -> str:
    return f"stage {runner_id} finished: the runner closed the control stream"


def stage_failed(runner_id: str, cause: str, runner_gone_at: str = "") -> str:
    """The harness ended with ``cause``; ``runner_gone_at``: the control endpoint that no
    longer answers, when the sidecar found it gone (the cause is then the runner's end)."""
    if runner_gone_at:
        return (f"stage {runner_id}: the runner's control endpoint {runner_gone_at} went away "
                f"(TaskManager gone?); the harness ended with {cause}")
    return f"stage {runner_id} failed: the SDK harness ended with {cause}"


def stage_start_failed(runner_id: str, cause: str) -> str:
    return f"stage {runner_id}: the SDK harness could not start: {cause}"


def stage_stopped(runner_id: str) -> str:
    return f"stage {runner_id} stopped: the runner sent StopWorker"


def stage_recycled(runner_id: str, pool_id: str) -> str:
    return f"stage {runner_id} stopped: worker {pool_id} was recycled by an operator"


def runner_lost(runner_id: str, endpoint: str, seconds: float, pool_id: str) -> str:
    return (f"stage {runner_id}: the runner's control endpoint {endpoint} went away "
            f"(TaskManager gone?): connections refused for {seconds:.0f} s; worker {pool_id} "
            "recycled")


def stage_exited(runner_id: str, pool_id: str, code: int | None) -> str:
    """The worker's process ended before it reported how the stage ended."""
    if code == 0:
        return (f"stage {runner_id} ended: worker {pool_id} exited with code 0 before "
                "reporting how")
    return f"stage {runner_id} failed: worker {pool_id} {exit_phrase(code)} while serving it"


def worker_ended(before: str, code: int | None, stop_reason: str, stage_detail: str,
                 last_error: str) -> str:
    """Why a worker ended, once it has exited.

    ``before``: its state when its exit was seen; ``stop_reason``: why it was asked
    to stop ("" if it was not); ``stage_detail``: how the stage it served ended ("" if
    it served none); ``last_error``: what went wrong, if anything.
    """
    how = exit_phrase(code)
    if stop_reason:
        return clip(f"stopped ({stop_reason}); it {how}")
    if stage_detail:
        return clip(stage_detail if how in stage_detail else f"{stage_detail}; the worker {how}")
    if before == "spawning":
        return clip(f"died before getting warm: it {how}"
                    + (f" ({last_error})" if last_error else ""))
    return clip(f"ended while {before} without being asked to: it {how}"
                + (f" ({last_error})" if last_error else ""))
