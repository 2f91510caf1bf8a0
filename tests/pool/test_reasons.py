"""Why stages and workers ended: sentences, never fragments of a traceback."""

from __future__ import annotations

import re

import pytest

from harness_pool.pool import reasons

_WORD = re.compile(r"[A-Za-z]{2,}")


@pytest.mark.parametrize(("text", "line"), [
    pytest.param("", "", id="empty"),
    pytest.param("gRPC UNAVAILABLE: Socket closed", "gRPC UNAVAILABLE: Socket closed",
                 id="one-line"),
    pytest.param("  ValueError:   bad\n  second line", "ValueError: bad", id="first-line"),
    pytest.param('Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
                 "grpc._channel._MultiThreadedRendezvous: <_MultiThreadedRendezvous of RPC\n"
                 "\tstatus = StatusCode.UNAVAILABLE\n>",
                 "grpc._channel._MultiThreadedRendezvous: <_MultiThreadedRendezvous of RPC",
                 id="traceback-keeps-its-exception-line-not-the-lone-bracket"),
    pytest.param("Traceback (most recent call last):\n  File 'x'\n>", ">",
                 id="traceback-without-exception-line"),
])
def test_cause_line(text: str, line: str) -> None:
    assert reasons.cause_line(text) == line


def test_cause_line_is_bounded() -> None:
    assert len(reasons.cause_line("x" * 10_000, limit=100)) <= 100


@pytest.mark.parametrize(("code", "phrase"), [
    (0, "exited with code 0"), (1, "exited with code 1"),
    (-9, "was killed by SIGKILL (exit code -9)"), (-15, "was killed by SIGTERM (exit code -15)"),
    (-99, "was killed by signal 99 (exit code -99)"), (None, "is gone (exit code unknown)"),
])
def test_exit_phrase(code: int | None, phrase: str) -> None:
    assert reasons.exit_phrase(code) == phrase


@pytest.mark.parametrize(("args", "expected"), [
    pytest.param(("busy", -15, "the runner sent StopWorker for stage 1-1", "", ""),
                 "stopped (the runner sent StopWorker for stage 1-1); it was killed by SIGTERM "
                 "(exit code -15)", id="stopped"),
    pytest.param(("busy", 0, "", "stage 1-1 finished: the runner closed the control stream", ""),
                 "stage 1-1 finished: the runner closed the control stream; the worker exited "
                 "with code 0", id="served"),
    pytest.param(("spawning", 1, "", "", "ImportError: no module named apache_beam"),
                 "died before getting warm: it exited with code 1 (ImportError: no module named "
                 "apache_beam)", id="cold-death"),
    pytest.param(("idle", -9, "", "", ""),
                 "ended while idle without being asked to: it was killed by SIGKILL (exit code "
                 "-9)", id="killed-while-idle"),
])
def test_worker_ended(args: tuple, expected: str) -> None:
    assert reasons.worker_ended(*args) == expected


@pytest.mark.parametrize("sentence", [
    reasons.stage_finished("1-1"),
    reasons.stage_failed("1-1", "gRPC UNAVAILABLE: Socket closed"),
    reasons.stage_failed("1-1", ">", runner_gone_at="127.0.0.1:4"),
    reasons.stage_start_failed("1-1", "RuntimeError"),
    reasons.stage_stopped("1-1"),
    reasons.stage_recycled("1-1", "worker-3"),
    reasons.runner_lost("1-1", "127.0.0.1:41234", 3.2, "worker-3"),
    reasons.stage_exited("1-1", "worker-3", 0),
    reasons.stage_exited("1-1", "worker-3", -9),
])
def test_stage_sentences_name_the_stage_and_say_why(sentence: str) -> None:
    assert "stage 1-1" in sentence and len(_WORD.findall(sentence)) >= 4, sentence
    assert "\n" not in sentence


def test_worker_ended_does_not_repeat_the_exit() -> None:
    detail = reasons.stage_exited("1-1", "worker-3", -15)
    assert reasons.worker_ended("busy", -15, "", detail, "") == detail
